"""One person, two organisations: who really holds what a focal point receives.

Disclosure is judged per organisation, over everything it holds. A person who is a focal point
of two organisations (the same e-mail, phone or SFTP folder) holds what both receive, so the
combinations the rules forbid could reach them split across the two. The loader refuses that,
naming both files, unless the organisations are declared one holder (``same_holder_as``), and
then everything either holds is judged together.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from .agreements import Agreement, Organisation, SftpDestination
from .focal_points import FocalPoint, FocalPoints

#: Phones compare on their last nine digits: "+234 803 000 0001" and "0803 000 0001" are one
#: line, written with and without the country code.
PHONE_DIGITS = 9


def holder_groups(organisations: Mapping[str, Organisation], sources: Mapping[str, str]
            ) -> tuple[dict[str, str], list[str]]:
    """Organisation id -> its holder's id (the first id of those declared one holder with it,
    directly or through others), and the problems of the declarations."""
    parent = {o: o for o in organisations}

    def root(o: str) -> str:
        while parent[o] != o:
            o = parent[o]
        return o

    problems = []
    for org in organisations.values():
        for i, other in enumerate(org.same_holder_as):
            if other not in organisations:
                problems.append(f"{sources[f'organisation:{org.id}']}: same_holder_as.{i}: no "
                                f"file organisations/{other}.yaml")
                continue
            a, b = sorted((root(org.id), root(other)))
            parent[b] = a
    return {o: root(o) for o in organisations}, problems


def _where(destination: SftpDestination) -> str:
    return f"{destination.sftp_conn_id}:{destination.remote_dir.strip('/')}"


def _contacts(person: FocalPoint) -> Iterator[tuple[str, str]]:
    yield "e-mail", person.email.strip().casefold()
    yield "phone", re.sub(r"\D", "", person.mobile)[-PHONE_DIGITS:]
    if person.destination is not None:
        yield "SFTP destination", _where(person.destination)


def _receivers(agreements: Mapping[str, Agreement], focal_points: Mapping[str, FocalPoints],
               sources: Mapping[str, str]) -> Iterator[tuple[str, str, str, str, str]]:
    """(what, contact, organisation, file, role) of everyone and everywhere packages go."""
    for people in focal_points.values():
        where = sources[f"focal_points:{people.id}"]
        roles = [("primary", people.primary), ("secondary", people.secondary),
                 *((f"field.{i}", p) for i, p in enumerate(people.field))]
        for role, person in roles:
            for what, contact in _contacts(person):
                yield what, contact, people.organisation, where, role
    for agreement in agreements.values():
        yield ("SFTP destination", _where(agreement.destination), agreement.organisation,
               sources[f"agreement:{agreement.id}"], "destination")


def shared_people(agreements: Mapping[str, Agreement], focal_points: Mapping[str, FocalPoints],
                  sources: Mapping[str, str], holder_of: Mapping[str, str]) -> list[str]:
    """A problem per pair of entries where one contact receives for two holders. The contact
    itself is never quoted: it is a person's e-mail or phone."""
    first: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {}
    pairs: dict[tuple[str, ...], list[str]] = {}
    for what, contact, organisation, where, role in _receivers(agreements, focal_points,
                                                               sources):
        holder = holder_of.get(organisation, organisation)
        seen = first.setdefault((what, contact), {})
        if holder in seen or not contact:
            continue
        for other_org, other_where, other_role in seen.values():
            key = (where, role, organisation, other_where, other_role, other_org)
            pairs.setdefault(key, []).append(what)
        seen[holder] = (organisation, where, role)
    return [f"{a_where}: {a_role}: the same {' and '.join(dict.fromkeys(whats))} as {b_role} "
            f"in {b_where}, of organisation {b_org!r} where this one is of {a_org!r}: one "
            f"person or folder of two organisations would receive what each may not "
            f"combine; give each its own, or declare them one holder (same_holder_as in "
            f"organisations/{a_org}.yaml)"
            for (a_where, a_role, a_org, b_where, b_role, b_org), whats in pairs.items()]
