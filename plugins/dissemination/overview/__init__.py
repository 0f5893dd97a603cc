"""Where dissemination stands, per country and agreement: the Dissemination page's model.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "page": ("LedgerView", "build_overview", "countries_of",),
})
