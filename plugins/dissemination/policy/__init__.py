"""The policy: country rule sets, data-sharing agreements and focal points, as typed YAML.

Three kinds of file live under ``include/``:

- ``rules/<ISO3>.yaml``: one rule set per country (contextual), with its risk assessment date and
  review interval (temporal) and the indicator combinations that escalate (relational);
- ``organisations/<id>.yaml``: who holds the data; history is judged per organisation;
- ``agreements/<id>.yaml``: what an organisation may receive, on which urgency tier, where to;
- ``focal_points/<id>.yaml``: who receives it, kept apart so that turnover revises no agreement;
- ``focal_points/dtm/<ISO3>.yaml``: DTM's own primary and secondary focal point in the country
  (Table C's other column): who is alerted, and who phones partners their passwords.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting.
Loading collects every problem of every file before failing, and each message names the file and
the field, because the person fixing a policy file is rarely the person who wrote the pipeline.
"""

from .agreements import (
    Agreement,
    LowTier,
    MediumTier,
    Organisation,
    PasswordPlan,
    SftpDestination,
    Tier,
    Tiers,
)
from .base import ColumnName, CountryCode, Identifier, PolicyModel
from .focal_points import DtmFocalPoints, FieldFocalPoint, FocalPoint, FocalPoints, Person
from .intake import IntakeLimits
from .loading import DEFAULT_RULES, Policy, PolicyError, load_policy
from .lookup import NoRuleSet, ruleset_for
from .merging import merge_rules
from .rules import (
    SITE,
    AdditiveGroup,
    CountryRules,
    DefaultRules,
    IndicatorRule,
    Kind,
    RelationalRule,
    RiskAssessment,
    RuleSet,
    SmallCells,
    UrgentSignal,
)
from .snapshot import compiled_policy

__all__ = [
    "DEFAULT_RULES", "SITE", "AdditiveGroup", "Agreement", "ColumnName", "CountryCode",
    "CountryRules", "DefaultRules", "DtmFocalPoints", "FieldFocalPoint", "FocalPoint",
    "FocalPoints", "Identifier", "IndicatorRule", "IntakeLimits", "Kind", "LowTier",
    "MediumTier", "Organisation", "PasswordPlan",
    "Person", "Policy", "PolicyError", "PolicyModel", "RelationalRule", "RiskAssessment",
    "NoRuleSet", "RuleSet", "SftpDestination", "SmallCells", "Tier", "Tiers", "UrgentSignal",
    "compiled_policy", "load_policy", "merge_rules", "ruleset_for",
]
