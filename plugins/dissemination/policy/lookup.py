"""The country's rule set for a round, or why there is none."""

from __future__ import annotations

from ..errors import PermanentError
from .loading import Policy


class NoRuleSet(PermanentError, LookupError):
    """A round of a country without a rule file: nothing of it may be classified, so none leaves."""


def ruleset_for(policy: Policy, country: str):
    """The country's rule set; ``NoRuleSet`` naming the file to add when it has none."""
    ruleset = policy.rulesets.get(country)
    if ruleset is None:
        raise NoRuleSet(f"no rule set for country {country}: add include/rules/{country}.yaml")
    return ruleset
