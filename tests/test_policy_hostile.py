"""Policy files as an adversary or a hurried coordinator writes them: nested aliases, one person
in two organisations, a collection date made Secret, a country retuning what it inherits. Each
is refused (or reported) by ``python -m dissemination check`` naming the file and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from dissemination.__main__ import main
from dissemination.dap import DapError, import_dap

#: Six levels of ten: a million "lol"s from nine lines (the "billion laughs", scaled down so
#: that today's main prints its megabytes rather than running out of memory).
ALIAS_BOMB = "\n".join(
    ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)])


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _check(include: Path, capsys) -> tuple[int, str, str]:
    code = main(["check", "--include", str(include)])
    out, err = capsys.readouterr()
    return code, out, err


# --- item 12: aliases -------------------------------------------------------------------------


def test_nested_aliases_are_refused_in_a_few_lines_naming_file_and_line(include, capsys):
    path = include / "rules" / "NGA.yaml"
    text = path.read_text()
    path.write_text(text.replace('version: "2026.11"', ALIAS_BOMB + "\nversion: *l6", 1))
    code, _, err = _check(include, capsys)
    assert code == 1
    assert len(err) < 2_000, f"{len(err)} characters of error"
    assert f"{path}: line 4: YAML anchors and aliases" in err and "lol" not in err


def test_an_invalid_value_is_described_never_quoted(include, capsys):
    """A focal point's mobile is a value too: the error says what kind of value is wrong."""
    path = include / "focal_points" / "unicef-nga.yaml"
    _edit(path, 'mobile: "+234 803 000 0001"', 'mobile: "Musa Bello, call 0803 555 1234 now"')
    code, _, err = _check(include, capsys)
    assert code == 1 and f"{path}: primary.mobile" in err
    assert "a text of 34 character(s)" in err and "Musa" not in err and "555" not in err


def test_the_dap_import_refuses_a_rule_file_with_aliases(include, tmp_path):
    path = include / "rules" / "NGA.yaml"
    text = path.read_text()
    path.write_text(text.replace('version: "2026.11"', ALIAS_BOMB + "\nversion: *l6", 1))
    dap = tmp_path / "dap.csv"
    dap.write_text("Indicator,Dissemination Category\nprimary_need,Monthly\n")
    with pytest.raises(DapError) as exc:
        import_dap(include, "NGA", dap, write=True, today=None)
    assert len(str(exc.value)) < 500 and f"{path}: line 4: YAML anchors" in str(exc.value)
    assert path.read_text().startswith(text[:20])


# --- item 17: a Secret collection date ---------------------------------------------------------


def test_a_secret_collection_date_is_refused_at_check(include, capsys):
    """It passed ``check``, then every round was blocked as having no collection date."""
    path = include / "rules" / "NGA.yaml"
    _edit(path, "indicators:\n", "indicators:\n  collected_on: {classification: secret}\n")
    code, _, err = _check(include, capsys)
    assert code == 1
    assert f"{path}: collection_date: 'collected_on' is Secret" in err
    assert "dropped unread" in err and "every round would be blocked" in err


# --- item 7: one person, two organisations ----------------------------------------------------


def test_one_sftp_folder_for_two_organisations_is_refused_naming_both_files(include, capsys):
    """The Protection Sector's packages would land in UNICEF's folder: whoever reads it holds
    what both organisations receive, judged apart."""
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "sftp_conn_id: sftp_protection_cluster_nga\n  remote_dir: "
                "protection-cluster-nga/incoming", "sftp_conn_id: sftp_unicef_nga\n  remote_dir: "
                "/unicef-nga/incoming/")
    code, _, err = _check(include, capsys)
    assert code == 1
    (line,) = [line for line in err.splitlines() if "same SFTP destination" in line]
    assert line.strip().startswith(f"{include / 'agreements'}/")
    assert str(path) in line and str(include / "agreements" / "unicef-nga.yaml") in line
    assert "'unicef'" in line and "'protection-sector-nga'" in line
    assert "declare them one holder (same_holder_as in organisations/" in line


def test_one_holder_declared_lets_the_shared_folder_load(include, capsys):
    path = include / "agreements" / "protection-cluster-nga.yaml"
    _edit(path, "sftp_conn_id: sftp_protection_cluster_nga\n  remote_dir: "
                "protection-cluster-nga/incoming", "sftp_conn_id: sftp_unicef_nga\n  remote_dir: "
                "unicef-nga/incoming")
    org = include / "organisations" / "unicef.yaml"
    org.write_text(org.read_text() + "same_holder_as: [protection-sector-nga]\n")
    code, out, err = _check(include, capsys)
    assert code == 0, err
    bad = include / "organisations" / "protection-sector-nga.yaml"
    bad.write_text(bad.read_text() + "same_holder_as: [protection-sector-ng]\n")
    code, _, err = _check(include, capsys)
    assert code == 1 and f"{bad}: same_holder_as.0: no file organisations/protection-sector-ng" \
        ".yaml" in err
