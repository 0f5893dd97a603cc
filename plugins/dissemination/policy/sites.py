"""``site_registry`` in a rule set: whether sites the registry does not know as they are wait
for review instead of shipping.

No pattern tells a key informant's name typed into ``site_name`` from a site's name, so a
country's rounds are compared with what its coordinators registered (docs/site-registry.md).
On unless a rule set says otherwise; a country turning it off while the default holds loosens
the default, and says why.
"""

from __future__ import annotations

from pydantic import Field

from .base import PolicyModel


class SiteRegistry(PolicyModel):
    """``hold``: a site never registered, or whose Public text differs from its registered
    one, is held out of every package of the round until a coordinator accepts it."""

    hold: bool = True
    loosens_default: str | None = Field(default=None, min_length=1)


def merge_site_registry(default: SiteRegistry | None, country: SiteRegistry | None,
                        code: str) -> tuple[SiteRegistry, list[str], list[str]]:
    """The country's setting over the default's: (effective, problems, loosenings)."""
    base = default or SiteRegistry()
    if country is None:
        return base, [], []
    if base.hold and not country.hold:
        if country.loosens_default is None:
            return country, ["site_registry.hold: false loosens rules/default.yaml (sites "
                             "never reviewed would ship); set loosens_default: <reason>"], []
        return country, [], [f"{code}: site_registry.hold true -> false "
                              f"({country.loosens_default})"]
    return country, [], []
