"""Disclosure control: aggregate, redact, suppress small cells, and protect them jointly
across everything a partner holds (the engine the next redesign replaces); and cell-key
perturbation of area counts, the redesign's first block, not yet wired in.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "cellkey": ("BUCKETS", "KEY_RANGE", "PerturbationTable", "bound", "bounds_by_count",
                "cell_key", "distribution", "perturb", "perturb_cells", "perturbation_table",
                "site_keys",),
    "engine": ("Content", "Delivered", "build_contents", "explain", "explanation_lines",),
    "shown": ("NotAsDelivered", "Shown", "delivered", "partial_of", "shown",),
})
