"""Disclosure control: aggregate, redact, suppress small cells, and protect them jointly
across everything a partner holds (``engine`` names the steps and their modules); and cell-key
perturbation of area counts, built and not yet wired in (decision 0009).
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "cellkey": ("BUCKETS", "KEY_RANGE", "PerturbationTable", "bound", "bounds_by_count",
                "cell_key", "distribution", "perturb", "perturb_cells", "perturbation_table",
                "site_keys",),
    "content": ("SITES", "SUPPRESSED", "Content", "OutputColumn", "UndeclaredValue",),
    "engine": ("Shared", "build_content", "build_contents", "rebuild",),
    "explanation": ("explain", "explanation_lines",),
    "pooling": ("NoSharedDecision", "shared_decisions",),
    "redaction": ("REDACTED", "redact",),
    "shown": ("NotAsDelivered", "Shown", "delivered", "partial_of", "shown",),
    "versions": ("Delivered", "DeliveredMismatch", "blanks",),
})
