"""Agreements from a template, as a global deployment has them: a policy folder's agreement
copied for another organisation, with its own focal points, password Variable and remote
folder kept apart. The benchmarks grow the tests' policy to 1,000 agreements this way; the tests
make organisations alike with it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from ..policy.yamlsafety import alias_problem


def copy_agreement(include: Path, original: str, ident: str, organisation: str,
                   name: str) -> None:
    """Write agreement ``ident`` of a new organisation (``organisation``, shown as ``name``) into
    the policy folder ``include``: agreement ``original``'s tiers and destination, its focal
    points under the new id, and a password Variable of its own."""
    agreement = _read(include / "agreements" / f"{original}.yaml")
    people = _read(include / "focal_points" / f"{agreement['focal_points']}.yaml")
    agreement.update(id=ident, organisation=organisation, focal_points=ident)
    agreement["password"]["variable"] = f"package_password_{ident.replace('-', '_')}"
    people.update(organisation=organisation, **({"id": ident} if "id" in people else {}))
    # Another organisation's people and folders: one person of two organisations is refused.
    agreement["destination"]["remote_dir"] = f"{ident}/incoming"
    persons = [("primary", people["primary"]), ("secondary", people["secondary"]),
               *((f"field{i}", p) for i, p in enumerate(people.get("field") or ()))]
    for role, person in persons:
        local, _, domain = person["email"].partition("@")
        digits = int(hashlib.sha256(f"{ident}/{role}".encode()).hexdigest(), 16) % 10**9
        person.update(email=f"{local}.{ident}@{domain}", mobile=f"+999 {digits:09d}")
        if person.get("destination"):
            person["destination"]["remote_dir"] = f"{ident}/{role}"
    (include / "organisations" / f"{organisation}.yaml").write_text(
        yaml.safe_dump({"id": organisation, "name": name}))
    (include / "agreements" / f"{ident}.yaml").write_text(yaml.safe_dump(agreement))
    (include / "focal_points" / f"{ident}.yaml").write_text(yaml.safe_dump(people))


def _read(path: Path) -> dict:
    """A policy file as the loader would read it: no anchors or aliases to expand."""
    text = path.read_text(encoding="utf-8")
    if problem := alias_problem(text):
        raise ValueError(f"{path}: {problem}")
    return yaml.safe_load(text)
