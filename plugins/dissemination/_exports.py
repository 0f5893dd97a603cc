"""Package roots that declare their names without importing them: a name loads on first use.

Every package's ``__init__`` lists its public names (``__all__``) and the module each lives in.
Loading a root therefore costs nothing: DAG files and the Dissemination page import roots without
pulling pandas, Great Expectations or paramiko, and packages that use each other (the ledger and
the site registry, delivery and packaging) never import in a circle. This is the Scientific
Python lazy-loading pattern (SPEC 1), written out in a few lines instead of a dependency.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, modules: Mapping[str, tuple[str, ...]]
                 ) -> tuple[Callable[[str], object], list[str]]:
    """``(__getattr__, __all__)`` for ``package``: ``modules`` maps a submodule to its names."""
    where: dict[str, str] = {}
    for module, names in modules.items():
        for name in names:
            if where.setdefault(name, module) != module:
                raise ImportError(f"{package}: {name} is exported from both {where[name]} and "
                                  f"{module}")

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__, sorted(where)
