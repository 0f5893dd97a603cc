"""A seeded, deterministic DTM-like site assessment round, for the demo, tests and benchmarks.

The shape follows a DTM Mobility Tracking site assessment: one row per displacement site with
admin codes, GPS, population counts, protection indicators (unaccompanied children, feelings of
safety, presence of armed actors), needs, free text, and key-informant details that are Secret.
``enumerator_id`` is deliberately covered by no rule: it must be treated as Secret.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from .source import RoundMeta

#: (admin1 pcode, admin1 name, [(admin2 pcode, admin2 name, lat, lon)])
_ADMIN = {
    "NGA": [
        ("NG008", "Borno", [("NG008001", "Maiduguri", 11.83, 13.15), ("NG008013", "Jere", 11.88,
          13.24), ("NG008010", "Gwoza", 11.08, 13.69), ("NG008003", "Bama", 11.52, 13.69)]),
        ("NG002", "Adamawa", [("NG002016", "Mubi North", 10.27, 13.26), ("NG002019", "Yola South",
          9.21, 12.48)]),
        ("NG036", "Yobe", [("NG036004", "Damaturu", 11.75, 11.96), ("NG036012", "Potiskum",
          11.71, 11.08)]),
    ],
    "SSD": [
        ("SS01", "Central Equatoria", [("SS0101", "Juba", 4.85, 31.58), ("SS0104", "Yei", 4.09,
          30.68)]),
        ("SS07", "Unity", [("SS0705", "Rubkona", 9.27, 29.79), ("SS0707", "Leer", 8.30, 30.14)]),
        ("SS08", "Upper Nile", [("SS0801", "Malakal", 9.53, 31.66)]),
    ],
}

FEELINGS_OF_SAFETY = ["all_feel_safe", "most_feel_safe", "some_feel_safe", "none_feel_safe"]
NEEDS = ["food", "shelter", "water", "health", "protection", "education", "nfi"]
_GIVEN = ["Amina", "Musa", "Fatima", "Ibrahim", "Hauwa", "John", "Mary", "Peter", "Grace", "Deng"]
_FAMILY = ["Bello", "Abubakar", "Okafor", "Garba", "Lual", "Wani", "Nyok", "Adamu", "Mohammed"]
_COMMENTS = [
    "Access road flooded since last week.",
    "New arrivals from the border area reported by the camp chairman.",
    "Water point broken, women walk 2 hours.",
    "Call the chairman on {phone} for follow-up.",
    "",
    "Site management committee active.",
]


def generate_round(
    country: str = "NGA",
    round_number: int = 1,
    n_sites: int = 300,
    *,
    seed: int = 7,
    status: str = "partial",
    collected_at: datetime | None = None,
    collection_days: int = 3,
) -> tuple[RoundMeta, pd.DataFrame]:
    """Return the round's metadata and its site table. Same arguments, same bytes.

    Sites are assessed over ``collection_days`` days from ``collected_at`` (the start of the
    collection, from which urgent windows run).
    """
    if country not in _ADMIN:
        raise ValueError(f"no synthetic geography for country {country!r}; have {sorted(_ADMIN)}")
    rng = np.random.default_rng([seed, round_number, n_sites])
    collected_at = collected_at or datetime(2026, 11, 1, 8, 0, tzinfo=UTC) + timedelta(
        days=30 * (round_number - 1)
    )
    round_id = f"{country}-R{round_number:03d}-{status}"
    areas = [(a1, n1, a2, n2, lat, lon) for a1, n1, l2 in _ADMIN[country] for a2, n2, lat, lon in l2]
    pick = rng.integers(0, len(areas), n_sites)
    area = [areas[i] for i in pick]

    households = rng.integers(1, 2500, n_sites)
    individuals = households * rng.integers(1, 8, n_sites)
    female = np.round(individuals * rng.uniform(0.4, 0.65, n_sites)).astype(int)
    # Most sites have no or few unaccompanied children; a few have many (heavy tail).
    unaccompanied = np.where(rng.random(n_sites) < 0.55, 0, rng.geometric(0.15, n_sites))
    separated = np.where(rng.random(n_sites) < 0.5, 0, rng.geometric(0.2, n_sites))
    military = rng.random(n_sites) < 0.3
    safety_weights = np.where(military[:, None], [0.1, 0.2, 0.4, 0.3], [0.4, 0.35, 0.2, 0.05])
    safety = [FEELINGS_OF_SAFETY[rng.choice(4, p=w)] for w in safety_weights]
    phones = [f"+234 80{rng.integers(10_000_000, 99_999_999)}" for _ in range(n_sites)]
    comments = [
        _COMMENTS[i].format(phone=phones[k]) for k, i in enumerate(rng.integers(0, len(_COMMENTS),
                                                                                n_sites))
    ]

    df = pd.DataFrame(
        {
            "round_id": round_id,
            "site_id": [f"{country}-S{i:05d}" for i in range(1, n_sites + 1)],
            "site_name": [f"{a[3]} site {i}" for i, a in enumerate(area, 1)],
            "admin1_pcode": [a[0] for a in area],
            "admin1_name": [a[1] for a in area],
            "admin2_pcode": [a[2] for a in area],
            "admin2_name": [a[3] for a in area],
            "latitude": np.round([a[4] for a in area] + rng.normal(0, 0.05, n_sites), 5),
            "longitude": np.round([a[5] for a in area] + rng.normal(0, 0.05, n_sites), 5),
            "collected_on": (collected_at
                             + pd.to_timedelta(rng.integers(0, collection_days, n_sites), "D"))
            .strftime("%Y-%m-%d"),
            "idp_households": households,
            "idp_individuals": individuals,
            "idp_female": female,
            "idp_male": individuals - female,
            "unaccompanied_children": unaccompanied,
            "separated_children": separated,
            "feeling_of_safety": safety,
            "armed_actors_military": np.where(military, "yes", "no"),
            "primary_need": rng.choice(NEEDS, n_sites),
            "enumerator_comments": comments,
            "ki_name": [f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}" for _ in range(n_sites)],
            "ki_phone": phones,
            "enumerator_id": [f"E{n:03d}" for n in rng.integers(1, 40, n_sites)],
        }
    )
    return RoundMeta(round_id, country, status, collected_at), df
