"""The site registry: each site's Public text and admin codes as coordinators accepted
them, and which sites each organisation already holds.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "cli": ("register",),
    "sites": ("columns_of", "read_master_list",),
    "store": ("Held", "held_for_page", "held_line", "hold_out", "load_master",),
})
