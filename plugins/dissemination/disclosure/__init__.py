"""Disclosure control: aggregate, redact, suppress small cells, and protect them jointly
across everything a partner holds (the engine the next redesign replaces).
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "engine": ("Content", "Delivered", "build_contents", "explain", "explanation_lines",),
    "shown": ("NotAsDelivered", "Shown", "delivered", "partial_of", "shown",),
})
