"""The ledger on SQLite (embedded default) and on the machine's real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from builders import delivery_record as _record

from dissemination.ledger.migrations import open_upgraded
from dissemination.ledger.records import DeliveryRecord


def test_record_then_find(sql_engine):
    ledger = open_upgraded(sql_engine)
    assert ledger.find("unicef-nga", "NGA-R001-partial", "medium", "a" * 64) is None
    ledger.record(_record())
    found = ledger.find("unicef-nga", "NGA-R001-partial", "medium", "a" * 64)
    assert found is not None and found.remote_path == "in/p.zip" and found.row_count == 10
    assert found.delivered_at.replace(tzinfo=UTC) == _record().delivered_at.replace(
        tzinfo=UTC)


def test_the_same_delivery_is_recorded_once(sql_engine):
    ledger = open_upgraded(sql_engine)
    first = ledger.record(_record())
    again = ledger.record(_record(run_id="run-2", package_sha256="c" * 64))
    assert again.run_id == first.run_id == "run-1"
    assert len(ledger.all()) == 1


def test_new_content_or_other_agreement_is_a_new_delivery(sql_engine):
    ledger = open_upgraded(sql_engine)
    ledger.record(_record())
    ledger.record(_record(content_sha256="d" * 64))  # corrected re-export of the round
    ledger.record(_record(agreement_id="protection-cluster-nga"))
    assert len(ledger.all()) == 3


def test_holdings_per_organisation_id_level_and_round(sql_engine):
    ledger = open_upgraded(sql_engine)
    ledger.initialise("fresh start: test", datetime(2026, 11, 1, tzinfo=UTC))
    ledger.record(_record(organisation_id="unicef"))
    ledger.record(_record(
        round_id="NGA-R002-partial", level="admin1",
        columns=DeliveryRecord.columns_json([
            {"name": "feeling_of_safety=none", "source": "feeling_of_safety",
             "classification": "public", "rule": "r"},
            {"name": "sites", "source": "", "classification": "public", "rule": "r"}])))
    # Same display name, another organisation: not UNICEF's history.
    ledger.record(_record(agreement_id="other", organisation_id="other", content_sha256="e" * 64))
    # A renamed UNICEF: still UNICEF's history (keyed by id, never by name).
    ledger.record(_record(agreement_id="unicef-ssd-2", organisation="UNICEF (renamed)",
                          organisation_id="unicef", round_id="NGA-R003-partial",
                          content_sha256="f" * 64))
    held = {(h.indicator, h.level, h.round_id)
            for h in ledger.holdings("unicef", ["unicef-nga"], "NGA")}
    assert held == {("site_id", "site", "NGA-R001-partial"),
                    ("feeling_of_safety", "admin1", "NGA-R002-partial"),
                    ("site_id", "site", "NGA-R003-partial")}
    assert ledger.holdings("unicef", ["unicef-nga"], "SSD") == []


def test_a_ledger_without_its_marker_stops_planning(sql_engine):
    """New or wiped: its empty history would let every cross-delivery check pass silently."""
    import pytest

    from dissemination.ledger.records import LedgerNotInitialised

    ledger = open_upgraded(sql_engine)
    with pytest.raises(LedgerNotInitialised, match="ledger init .* --fresh-start"):
        ledger.holdings("unicef", ["unicef-nga"], "NGA")
    ledger.record(_record())  # rows alone (e.g. restored without the marker) do not count
    with pytest.raises(LedgerNotInitialised):
        ledger.holdings("unicef", ["unicef-nga"], "NGA")
    assert ledger.initialise("fresh start: adopted", datetime(2026, 11, 1, tzinfo=UTC))
    assert not ledger.initialise("again", datetime(2026, 11, 2, tzinfo=UTC))
    how, _ = ledger.initialised()
    assert how == "fresh start: adopted (1 earlier deliveries adopted)"
    assert [h.indicator for h in ledger.holdings("unicef", ["unicef-nga"], "NGA")] == ["site_id"]


def test_rotation_notices_are_pending_until_sent(sql_engine):
    ledger = open_upgraded(sql_engine)
    now = datetime(2026, 11, 21, tzinfo=UTC)
    ledger.record_rotation("unicef-nga", "package_password_unicef_nga", now, "Aisha Bello")
    ledger.record_rotation("unicef-ssd", "package_password_unicef_ssd", now, "Achol Deng")
    pending = ledger.unnotified_rotations()
    assert [a for _, a in pending] == ["unicef-nga", "unicef-ssd"]
    ledger.mark_rotation_notified(pending[0][0], now)
    assert [a for _, a in ledger.unnotified_rotations()] == ["unicef-ssd"]
    assert ledger.last_rotation("unicef-nga") == now


def test_alerts_are_raised_once(sql_engine):
    ledger = open_upgraded(sql_engine)
    now = datetime(2026, 11, 21, tzinfo=UTC)
    assert ledger.alert_once("missed", "NGA-R001/unicef-nga", now) is True
    assert ledger.alert_once("missed", "NGA-R001/unicef-nga", now) is False
    assert ledger.alert_once("at_risk", "NGA-R001/unicef-nga", now) is True
