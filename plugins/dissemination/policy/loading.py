"""Loading every policy file under include/ and cross-checking them, every problem at once."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Hashable, Iterable
from datetime import date
from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from ..classification import Urgency
from ..errors import PermanentError
from .agreement_checks import _check_agreement, _check_organisation
from .agreements import Agreement, Organisation
from .base import CountryCode, Identifier, PolicyModel
from .focal_points import DtmFocalPoints, FocalPoints
from .holders import holder_groups, shared_people
from .intake import IntakeLimits
from .merging import merge_rules
from .rules import CountryRules, DefaultRules, RuleSet
from .yamlsafety import alias_problem, described

# --- the whole policy --------------------------------------------------------------------------


class Policy(PolicyModel):
    rulesets: dict[CountryCode, RuleSet]
    organisations: dict[Identifier, Organisation]
    agreements: dict[Identifier, Agreement]
    focal_points: dict[Identifier, FocalPoints]
    dtm: dict[CountryCode, DtmFocalPoints]
    intake: IntakeLimits = IntakeLimits()
    sources: dict[str, str] = Field(default_factory=dict)  # "agreement:<id>" -> file, for messages
    # SHA-256 over every policy file's path and bytes: a plan pins it, later steps compare.
    content_sha256: str = ""
    # Organisation id -> its holder's (itself unless declared one holder with others).
    holders: dict[str, str] = Field(default_factory=dict)

    def organisation_name(self, agreement: Agreement) -> str:
        return self.organisations[agreement.organisation].name

    def holder(self, organisation: str) -> str:
        """Whose holdings ``organisation``'s deliveries add to: its own, or those of the
        organisations it is declared one holder with (``same_holder_as``)."""
        return self.holders.get(organisation, organisation)

    def agreements_of(self, organisation: str) -> list[str]:
        """Ids of every agreement the organisation's holder holds, in any country."""
        holder = self.holder(organisation)
        return sorted(a.id for a in self.agreements.values()
                      if self.holder(a.organisation) == holder)

    def alert_to(self, *countries: str) -> tuple[str, ...]:
        """E-mail of DTM's focal point on duty in each country, once each: who an alert goes to."""
        return tuple(dict.fromkeys(self.dtm[c].on_duty().email for c in sorted(countries)))

    def agreements_for(self, country: str, urgency: Urgency) -> list[Agreement]:
        return sorted(
            (a for a in self.agreements.values() if a.covers(country, urgency)),
            key=lambda a: a.id,
        )


DEFAULT_RULES = "default"  # include/rules/default.yaml


class PolicyError(PermanentError, ValueError):
    """Every problem found in the policy files, one ``file: field: message`` line each."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the policy files:\n  "
            + "\n  ".join(self.problems)
        )


def _construct_mapping(loader, node: yaml.MappingNode, deep: bool = False):
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # `? [a, b]: x`: Python cannot key a dict on it
            raise yaml.constructor.ConstructorError(
                None, None, f"a {type(key).__name__} cannot be a key", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {str(key)[:60]!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


# YAML 1.2 booleans: only true/false. YAML 1.1 also reads yes/no/on/off as booleans, which would
# turn a declared value such as `values: [yes, no]` into [True, False] without a word.
_BOOL = "tag:yaml.org,2002:bool"


def unique_key_loader(base: type) -> type:
    """A safe loader on ``base``'s parser that refuses duplicate keys (YAML silently keeps the
    last of two equal keys; a policy file must not) and reads only true/false as booleans."""
    loader = type("UniqueKeyLoader", (base,), {})
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return loader


#: On libyaml's parser when PyYAML has it: 11x faster on a large policy (constructors and
#: resolvers stay in Python, so files read the same); else the pure-Python parser.
_UniqueKeyLoader = unique_key_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<file>"


def _load_file(path: Path, model: type[PolicyModel], problems: list[str]):
    try:
        text = path.read_text(encoding="utf-8")
        if problem := alias_problem(text):
            problems.append(f"{path}: {problem}")
            return None
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problems.append(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}")
        return None
    except ValueError as exc:  # PyYAML's date constructor: `valid_until: 2027-02-30`
        problems.append(f"{path}: not valid YAML: a value cannot be read ({exc})")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot be read: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            shown = "input" in err and err["type"] not in (
                "missing", "extra_forbidden", "value_error")
            value = f" (got {described(err['input'], err['type'])})" if shown else ""
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {_format_loc(err['loc'])}: {message}{value}")
        return None


def load_policy(include_dir: Path | str, *, today: date | None = None) -> Policy:
    """Load and cross-check every policy file under ``include_dir``.

    ``today`` turns on the checks that depend on the calendar (expired agreements). The DAGs pass
    the run's logical date, ``check`` passes the current date.
    """
    root = Path(include_dir)
    problems: list[str] = []
    sources: dict[str, str] = {}
    broken: set[str] = set()  # "<folder>/<stem>" of files that failed: no cascade of errors
    organisations, agreements, focal_points = _load_identified(root, problems, sources, broken)
    rulesets = _load_rulesets(root / "rules", problems, sources, broken)
    dtm = _load_dtm(root / "focal_points" / "dtm", rulesets, problems, sources)
    intake_path = root / "intake.yaml"
    intake = _load_file(intake_path, IntakeLimits, problems) if intake_path.exists() else None
    problems += _shared_passwords(agreements, sources)
    for agreement in agreements.values():
        problems.extend(
            _check_agreement(agreement, sources[f"agreement:{agreement.id}"], rulesets,
                             focal_points, today, broken)
        )
        problems.extend(_check_organisation(agreement, sources[f"agreement:{agreement.id}"],
                                            organisations, focal_points, broken))
    holder_of, holder_problems = holder_groups(organisations, sources)
    problems += holder_problems + shared_people(agreements, focal_points, sources, holder_of)
    if problems:
        raise PolicyError(problems)
    return Policy(
        rulesets=rulesets, organisations=organisations, agreements=agreements,
        focal_points=focal_points, dtm=dtm, intake=intake or IntakeLimits(), sources=sources,
        content_sha256=policy_sha256(root), holders=holder_of,
    )


def _load_identified(root: Path, problems: list[str], sources: dict[str, str], broken: set[str],
                     ) -> tuple[dict[str, Organisation], dict[str, Agreement],
                                dict[str, FocalPoints]]:
    """Organisations, agreements and focal points, each file named after the id it declares.

    Other files refer to these by id, so a file whose name and id differ would be found by one
    name and describe another.
    """
    organisations: dict[str, Organisation] = {}
    agreements: dict[str, Agreement] = {}
    focal_points: dict[str, FocalPoints] = {}
    for kind, folder, model, target in (
        ("organisation", "organisations", Organisation, organisations),
        ("agreement", "agreements", Agreement, agreements),
        ("focal_points", "focal_points", FocalPoints, focal_points),
    ):
        directory = root / folder
        if not directory.is_dir():
            problems.append(f"{directory}: folder missing")
            continue
        for path in sorted(directory.glob("*.y*ml")):
            obj = _load_file(path, model, problems)
            if obj is None:
                broken.add(f"{folder}/{path.stem}")
                continue
            if path.stem != obj.id:
                problems.append(f"{path}: id: {obj.id!r} must match the file name {path.stem!r}")
                continue
            target[obj.id] = obj
            sources[f"{kind}:{obj.id}"] = str(path)
    return organisations, agreements, focal_points


def _load_default_rules(rules_dir: Path, problems: list[str], broken: set[str]):
    """The default rules every country's rules are merged onto, or None if absent or broken.

    A broken default marks itself broken so no country's merge repeats its problems.
    """
    default_path = rules_dir / f"{DEFAULT_RULES}.yaml"
    if not default_path.exists():
        return None
    default = _load_file(default_path, DefaultRules, problems)
    if default is None:
        broken.add(f"rules/{DEFAULT_RULES}")
    return default


def _load_rulesets(rules_dir: Path, problems: list[str], sources: dict[str, str],
                   broken: set[str]) -> dict[str, RuleSet]:
    """Each country's rules merged onto the default, one rule set per country file.

    A country whose merge fails is marked broken, so agreements naming it are not reported twice.
    """
    default = _load_default_rules(rules_dir, problems, broken)
    if not rules_dir.is_dir():
        problems.append(f"{rules_dir}: folder missing")
        return {}
    rulesets: dict[str, RuleSet] = {}
    for path in sorted(rules_dir.glob("*.y*ml")):
        if path.stem == DEFAULT_RULES:
            continue
        country = _load_file(path, CountryRules, problems)
        if country is None or f"rules/{DEFAULT_RULES}" in broken:
            broken.add(f"rules/{path.stem}")
            continue
        if path.stem != country.country:
            problems.append(f"{path}: country: {country.country!r} must match the file name "
                            f"{path.stem!r}")
            continue
        ruleset = _merged_ruleset(path, default, country, problems, broken)
        if ruleset is not None:
            rulesets[country.country] = ruleset
            sources[f"rules:{country.country}"] = str(path)
    return rulesets


def _merged_ruleset(path: Path, default, country: CountryRules, problems: list[str],
                    broken: set[str]) -> RuleSet | None:
    """One country's rules merged onto the default and validated as a whole rule set.

    A rule set with merge problems is still returned (and marked broken): agreements are checked
    against it, so their own faults are reported in the same run.
    """
    fields, merge_problems = merge_rules(default, country)
    problems.extend(f"{path}: {p}" for p in merge_problems)
    try:
        ruleset = RuleSet(**fields)
    except ValidationError as exc:
        problems.extend(f"{path}: {_format_loc(e['loc']) + ': ' if e['loc'] else ''}"
                        f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        broken.add(f"rules/{path.stem}")
        return None
    if merge_problems:
        broken.add(f"rules/{path.stem}")
    return ruleset


def _load_dtm(dtm_dir: Path, rulesets: dict[str, RuleSet], problems: list[str],
              sources: dict[str, str]) -> dict[str, DtmFocalPoints]:
    """DTM's focal points per country, and one file for every country with rules.

    Without them nobody is alerted and nobody phones partners their passwords.
    """
    dtm: dict[str, DtmFocalPoints] = {}
    for path in sorted(dtm_dir.glob("*.y*ml")):
        people = _load_file(path, DtmFocalPoints, problems)
        if people is not None and path.stem != people.country:
            problems.append(f"{path}: country: {people.country!r} must match the file name "
                            f"{path.stem!r}")
        elif people is not None:
            dtm[people.country] = people
            sources[f"dtm:{people.country}"] = str(path)
    for country in sorted(set(rulesets) - set(dtm)):
        if not (dtm_dir / f"{country}.yaml").exists():
            problems.append(f"{sources[f'rules:{country}']}: no DTM focal points for {country}: "
                            f"add {dtm_dir / country}.yaml (who is alerted, who phones "
                            "partners their passwords)")
    return dtm


def _shared_passwords(agreements: dict[str, Agreement], sources: dict[str, str]) -> list[str]:
    """One password per agreement: a Variable two agreements share is a problem of each.

    A shared Variable is one secret two partners hold, and rotating it for one (rotation is per
    agreement) locks the other out untold.
    """
    holders: dict[str, list[str]] = {}
    for agreement in agreements.values():
        holders.setdefault(agreement.password.variable, []).append(agreement.id)
    problems = []
    for variable, ids in holders.items():
        if len(ids) > 1:
            problems.extend(f"{sources[f'agreement:{i}']}: password.variable: {variable!r} is "
                            f"also the password of {', '.join(o for o in ids if o != i)}: one "
                            "Variable per agreement" for i in ids)
    return problems


def policy_sha256(include_dir: Path | str) -> str:
    """One hash over every policy file (relative path and bytes), in a stable order.

    Every task of a run calls this (``compiled_policy``), so the walk is ``os.walk``: 30x
    cheaper than ``Path.rglob`` over 3,000 files. The order is pathlib's (by path parts)."""
    root = str(include_dir)
    found = []
    for folder, _, names in os.walk(root):
        for name in fnmatch.filter(names, "*.y*ml"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append(tuple(os.path.relpath(path, root).split(os.sep)))
    digest = hashlib.sha256()
    for parts in sorted(found):
        digest.update("/".join(parts).encode() + b"\0")
        with open(os.path.join(root, *parts), "rb") as f:
            digest.update(f.read() + b"\0")
    return digest.hexdigest()
