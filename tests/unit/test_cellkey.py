"""Cell-key perturbation (issue 32): consistent noise per set of sites, bounded, unbiased.

The differencing tests replay the shape of findings 1 and 2: an area total shown before and
after one site drops out. Subtracting the perturbed totals must give noise, not the site.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dissemination.disclosure.cellkey import (
    KEY_RANGE,
    bound,
    cell_key,
    distribution,
    perturb,
    perturb_cells,
    perturbation_table,
    site_keys,
)

REPO = Path(__file__).resolve().parents[2]
TABLES = [perturbation_table(), perturbation_table(d=2, v=1.0, js=0),
          perturbation_table(d=2, v=1.0, js=1), perturbation_table(d=4, v=3.0, js=2, cap=12)]
SITES = [f"NGA-BO-{n:04d}" for n in range(71)]

counts = st.integers(min_value=0, max_value=500)
keys = st.integers(min_value=0, max_value=KEY_RANGE - 1)


def _mean_variance(dist: dict[int, float]) -> tuple[float, float]:
    mean = sum(step * p for step, p in dist.items())
    return mean, sum((step - mean) ** 2 * p for step, p in dist.items())


def test_same_sites_same_value_across_calls_orders_and_processes():
    sites = SITES[:22]
    first = perturb_cells([22], [sites], b"dtm-secret", perturbation_table())
    again = perturb_cells([22, 22], [reversed(sites), sites + sites[:3]], b"dtm-secret",
                          perturbation_table())
    assert again == first * 2
    code = ("from dissemination.disclosure.cellkey import perturb_cells, perturbation_table\n"
            f"print(perturb_cells([22], [{sites!r}], b'dtm-secret', perturbation_table())[0])")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONPATH": str(REPO / "plugins"),
                                            "PYTHONHASHSEED": "random"})
    assert int(other.stdout) == first[0]


def test_keys_depend_on_the_secret_and_country_and_are_32_bit():
    one, two = site_keys(b"secret-1", SITES), site_keys(b"secret-2", SITES)
    assert all(0 <= k < KEY_RANGE for k in one.values())
    assert sum(one[s] != two[s] for s in SITES) == len(SITES)
    assert site_keys(b"secret-1", SITES, country="SSD") != one
    assert site_keys(b"secret-1", SITES) == one
    with pytest.raises(ValueError):
        site_keys(b"", SITES)


def test_cell_key_is_the_sum_modulo_and_overlapping_cells_differ_by_the_dropped_site():
    k = site_keys(b"s", SITES)
    before = cell_key(k[s] for s in SITES)
    after = cell_key(k[s] for s in SITES[1:])
    assert before == sum(k.values()) % KEY_RANGE
    assert (before - after) % KEY_RANGE == k[SITES[0]]


@pytest.mark.parametrize("table", TABLES, ids=lambda t: f"D{t.d}V{t.v}js{t.js}")
@settings(max_examples=200, deadline=None)
@given(count=counts, key=keys)
def test_zero_stays_zero_positive_stays_above_js_and_noise_is_bounded(table, count, key):
    shown = perturb(count, key, table)
    if count == 0:
        assert shown == 0
    else:
        assert shown > table.js
    assert abs(shown - count) <= table.d == bound(table)


@pytest.mark.parametrize("table", TABLES, ids=lambda t: f"D{t.d}V{t.v}js{t.js}")
def test_rows_are_distributions_unbiased_with_the_stated_variance(table):
    for count in range(table.cap + 3):
        dist = distribution(table, count)
        assert sum(dist.values()) == pytest.approx(1.0)
        mean, variance = _mean_variance(dist)
        if count > table.js:
            assert mean == 0  # exactly: whole buckets repaired to mean 0
        down = count - max(table.js + 1, count - table.d)
        if count >= table.cap:
            assert variance == pytest.approx(table.v, abs=0.1)
            assert min(dist) == -table.d and max(dist) == table.d
        elif count > table.js:
            assert variance == pytest.approx(min(table.v, down * table.d / 2), abs=0.1)


def test_default_parameters_are_those_the_decision_record_states():
    table = perturbation_table()
    assert (table.d, table.v, table.js, table.cap, table.buckets) == (3, 2.0, 1, 5, 256)
    assert distribution(table, 2) == {0: 1.0}
    assert set(distribution(table, 1)) == {1, 2, 3}


@pytest.mark.parametrize("count", [1, 3, 4, 37])
def test_noise_over_uniform_keys_has_the_table_distribution(count):
    table = perturbation_table()
    sample = [int(k) for k in np.random.default_rng(7).integers(0, KEY_RANGE, 40_000,
                                                                 dtype="uint64")]
    seen: dict[int, int] = {}
    for key in sample:
        step = perturb(count, key, table) - count
        seen[step] = seen.get(step, 0) + 1
    expected = distribution(table, count)
    assert set(seen) == set(expected)
    for step, p in expected.items():
        assert seen[step] / len(sample) == pytest.approx(p, abs=0.01)


def _recovered(before: tuple[int, list[str]], after: tuple[int, list[str]],
               secret: bytes) -> int:
    shown = perturb_cells([before[0], after[0]], [before[1], after[1]], secret,
                          perturbation_table())
    return shown[0] - shown[1]


def test_finding_1_a_state_count_before_and_after_one_site_drops_out():
    military = SITES[:22]  # Borno: 22 sites with the military, then 21 without the duplicate
    secrets = [f"secret-{n}".encode() for n in range(400)]
    recovered = [_recovered((22, military), (21, military[1:]), s) for s in secrets]
    wrong = sum(r != 1 for r in recovered) / len(recovered)
    assert wrong > 0.6, wrong
    assert len(set(recovered)) >= 5


def test_finding_2_a_total_across_rounds_minus_the_visible_sites():
    values = dict(zip(SITES[:6], [2, 9, 8, 7, 6, 5], strict=True))
    secrets = [f"round-{n}".encode() for n in range(400)]
    recovered = [_recovered((sum(values.values()), SITES[:6]), (35, SITES[1:6]), s)
                 for s in secrets]
    assert sum(r != values[SITES[0]] for r in recovered) / len(recovered) > 0.6


def test_the_same_unchanged_cell_shown_twice_gives_nothing_more():
    for n in range(50):
        secret = f"pool-{n}".encode()
        first, second = perturb_cells([37, 37], [SITES[:6], SITES[:6]], secret,
                                      perturbation_table())
        assert first == second


def test_mismatched_inputs_and_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        perturb_cells([1, 2], [SITES[:1]], b"s", perturbation_table())
    with pytest.raises(ValueError):
        perturb(-1, 0, perturbation_table())
    with pytest.raises(ValueError):
        perturbation_table(d=2, v=4.0)
    with pytest.raises(ValueError):
        perturbation_table(d=2, js=1, cap=3)
