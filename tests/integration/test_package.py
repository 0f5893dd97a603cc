"""Packages: AES-256 zips that standard tools open, with a manifest and no Secret column."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from dissemination.classification import Urgency
from dissemination.classify.sensitivity import classify_round, select_for_agreement
from dissemination.disclosure import build_content
from dissemination.package.archive import (
    Issue,
    WeakPassword,
    build_package,
    open_package,
)

PASSWORD = "correct-horse-battery-staple-42"


@pytest.fixture
def unicef_package(policy, round_nga, tmp_path):
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    created = datetime(2026, 11, 2, tzinfo=UTC)
    content = build_content(df, selection, ruleset)
    return build_package(content, meta, selection, ruleset, agreement, tmp_path, PASSWORD,
                         Issue(created))


def test_package_round_trip(unicef_package, policy, round_nga):
    meta, df = round_nga
    manifest, data = open_package(unicef_package.path, PASSWORD)
    expected = list(policy.agreements["unicef-nga"].tiers.medium.indicators)
    assert list(data.columns) == [c for c in df.columns if c in expected]
    assert len(data) == len(df) == manifest["row_count"]
    assert manifest["round"]["id"] == meta.round_id
    assert manifest["rules"] == {"country": "NGA", "version": "2026.11",
                                 "default_version": "2026.2",
                                 "risk_assessment_date": "2026-10-15", "review_due": "2027-04-13",
                                 "small_cell_threshold": 3}
    assert manifest["level"] == "site" and manifest["warnings"] == []
    assert [c["name"] for c in manifest["columns"]] == list(data.columns)
    assert manifest["data_sha256"] == unicef_package.content_sha256
    assert {e["column"] for e in manifest["explanation"]} == set(df.columns)
    assert data["unaccompanied_children"].tolist() == df["unaccompanied_children"].tolist()


def test_no_secret_value_and_no_password_in_the_package(unicef_package, round_nga):
    _, df = round_nga
    manifest, data = open_package(unicef_package.path, PASSWORD)
    for column in ("ki_name", "ki_phone", "enumerator_comments", "enumerator_id"):
        assert column not in data.columns
    text = data.to_csv() + json.dumps(manifest)
    assert not any(phone in text for phone in df["ki_phone"])
    raw = unicef_package.path.read_bytes()
    assert PASSWORD.encode() not in raw
    assert b"unaccompanied_children" not in raw  # encrypted: no plaintext column names


def test_wrong_password_is_refused(unicef_package):
    with pytest.raises(RuntimeError, match="(?i)bad password"):
        open_package(unicef_package.path, "not-the-password-at-all")


@pytest.mark.integration
def test_7zip_opens_the_package(unicef_package, tmp_path):
    seven = shutil.which("7z")
    assert seven, "7z (p7zip-full) is required: partners open packages with it"
    out = tmp_path / "x"
    subprocess.run([seven, "x", f"-p{PASSWORD}", f"-o{out}", str(unicef_package.path)],
                   check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    header = (out / "data.csv").read_text().splitlines()[0]
    assert header.replace('"', "").split(",") == [c["name"] for c in manifest["columns"]]
    failed = subprocess.run([seven, "t", "-pwrong-password-here", str(unicef_package.path)],
                            capture_output=True)
    assert failed.returncode != 0


def test_weak_password_is_refused_without_echoing_it(policy, round_nga, tmp_path):
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    with pytest.raises(WeakPassword) as exc:
        build_package(build_content(df, selection, ruleset), meta, selection, ruleset, agreement,
                      tmp_path, "short-pw", Issue(datetime.now(UTC)))
    assert "short-pw" not in str(exc.value)
    assert "package_password_unicef_nga" in str(exc.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("weak, said", [
    ("a" * 16, "fewer than 12 different characters"),
    ("1234567890123456", "fewer than 12 different characters"),
    (" " * 8 + "Zq7#mK2$pL9&", "holds whitespace"),
])
def test_a_guessable_password_is_refused_whatever_its_length(policy, round_nga, tmp_path, weak,
                                                             said):
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    with pytest.raises(WeakPassword, match=said) as exc:
        build_package(build_content(df, selection, ruleset), meta, selection, ruleset, agreement,
                      tmp_path, weak, Issue(datetime.now(UTC)))
    assert weak not in str(exc.value) and not list(tmp_path.iterdir())


@pytest.mark.parametrize("typed", ["abcdefghijklmnop", "Password12345678", "Unicef2026Nigeria!"])
def test_a_typed_password_a_cracker_guesses_is_refused(policy, round_nga, tmp_path, typed):
    """Each passed the length and variety checks; zxcvbn, told the agreement's own words,
    estimates each below 10^14 guesses. The message holds neither the password nor zxcvbn's
    feedback (which quotes it)."""
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    with pytest.raises(WeakPassword, match="guessable: zxcvbn scores it") as exc:
        build_package(build_content(df, selection, ruleset), meta, selection, ruleset, agreement,
                      tmp_path, typed, Issue(datetime.now(UTC)))
    message = str(exc.value).lower()
    assert typed.lower() not in message and "package_password_unicef_nga" in message
    assert not any(part in message for part in ("abcdef", "password1", "2026nigeria"))
    assert not list(tmp_path.iterdir())


def test_generated_passwords_pass_the_strength_check(policy, round_nga, tmp_path):
    """The rotation's generator must never make a password the packager then refuses."""
    from dissemination.package.archive import known_words, password_weakness
    from dissemination.runs.passwords import new_password

    agreement = policy.agreements["unicef-nga"]
    assert [w for w in (password_weakness(new_password(), known_words(agreement))
                        for _ in range(200)) if w] == []
    meta, df = round_nga
    ruleset = policy.rulesets["NGA"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    password = new_password()
    package = build_package(build_content(df, selection, ruleset), meta, selection, ruleset,
                            agreement, tmp_path, password, Issue(datetime.now(UTC)))
    assert open_package(package.path, password)[0]["agreement"]["id"] == "unicef-nga"


def test_a_package_s_name_holds_no_focal_point_and_no_hash_of_its_data(policy, round_nga,
                                                                       tmp_path):
    """Names carried the field focal point's name and 48 bits of the CSV's SHA-256: read by
    whoever lists the folder or reads the notice, they told who holds which sites and let
    a guess of the data be confirmed. Now: the zip's own hash, unique per package (focal
    points whose names read alike, in Arabic script or spelled alike, included)."""
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    content = build_content(df, selection, ruleset)
    who = ["primary", "field:\u0641\u0627\u0637\u0645\u0629",
           "field:\u0639\u0627\u0626\u0634\u0629", "field:Musa Ibrahim", "field:Musa-Ibrahim"]
    packages = [build_package(content, meta, selection, ruleset, agreement, tmp_path, PASSWORD,
                              Issue(datetime(2026, 11, 2, tzinfo=UTC), recipient=r))
                for r in who]
    names = [p.name for p in packages]
    assert len(set(names)) == len(who) == len(list(tmp_path.glob("*.zip")))
    for package, recipient in zip(packages, who, strict=True):
        assert package.content_sha256 == packages[0].content_sha256  # the same data in each
        assert package.name == (f"NGA-R001-partial_unicef-nga_medium_"
                                f"{hashlib.sha256(package.path.read_bytes()).hexdigest()[:16]}.zip")
        assert not _shares_hex(package.name, package.content_sha256)
        assert not {"musa", "ibrahim", "field"} & set(re.split(r"[^a-z]+", package.name.lower()))
        assert open_package(package.path, PASSWORD)[0]["recipient"] == recipient  # inside


def _shares_hex(text: str, digest: str, width: int = 8) -> bool:
    """Whether ``text`` holds any ``width`` hex digits in a row of ``digest`` (32 bits)."""
    return any(digest[i:i + width] in text.lower() for i in range(len(digest) - width + 1))


def test_a_package_is_readable_by_its_owner_only(unicef_package):
    assert unicef_package.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("workers", [1, 3])
def test_blocks_deflated_on_a_pool_make_one_stream_any_unzip_reads(workers):
    """An inline start, then blocks: the same writes give the same stream whatever the pool's
    size; zlib reads it whole, and no more than ``ahead`` blocks ever wait in memory."""
    import random
    import zlib

    rng = random.Random(7)
    words = [b"site", b"Maiduguri", b"12", b"IDP", b"camp", b"\n", b",", b"0", b"Borno"]
    data = b"".join(rng.choice(words) for _ in range(60_000))  # ~250 KB, 60 blocks of 4 KB
    stream, waiting = _deflated(data, workers, writes=1)
    reader = zlib.decompressobj(-15)
    assert reader.decompress(stream) == data and reader.eof and not reader.unused_data
    assert max(waiting) <= 2
    one = zlib.compressobj(5, zlib.DEFLATED, -15)
    assert len(stream) < 1.05 * len(one.compress(data) + one.flush())  # blocks primed: no loss
    assert stream == _deflated(data, 1, writes=1)[0]
    assert zlib.decompress(_deflated(data, workers, writes=2)[0], -15) == data  # other writes


def _deflated(data: bytes, workers: int, writes: int) -> tuple[bytes, list[int]]:
    """``data`` through a BlockDeflater in uneven writes (a CSV writer's), pattern ``writes``;
    the stream, and how many blocks waited after each write."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from dissemination.package.archive import BlockDeflater

    rng, out, waiting, start = random.Random(writes), [], [], 0
    with ThreadPoolExecutor(workers) as pool:
        deflater = BlockDeflater(lambda: pool, block=4096, inline=20_000, ahead=2)
        while start < len(data):
            size = rng.randrange(1, 9000)
            out.append(deflater.compress(data[start:start + size]))
            waiting.append(len(deflater.pending))
            start += size
        out.append(deflater.flush())
    return b"".join(out), waiting


@pytest.mark.integration
def test_a_package_of_many_deflate_blocks_opens_in_7zip(policy, round_nga, tmp_path,
                                                          monkeypatch):
    from dissemination.package import archive as package

    monkeypatch.setattr(package, "DEFLATE_INLINE", 4096)  # the 200-site CSV (23 KB): 4 KB inline
    monkeypatch.setattr(package, "DEFLATE_BLOCK", 1024)
    monkeypatch.setattr(package, "CSV_BATCH_ROWS", 16)  # many writes, through a reused buffer
    blocks, deflate_block = [], package._deflate_block
    monkeypatch.setattr(package, "_deflate_block",
                        lambda *args: blocks.append(1) or deflate_block(*args))
    meta, df = round_nga
    ruleset, agreement = policy.rulesets["NGA"], policy.agreements["unicef-nga"]
    selection = select_for_agreement(classify_round(df.columns, ruleset), ruleset, agreement,
                                     Urgency.MEDIUM)
    content = build_content(df, selection, ruleset)
    built = build_package(content, meta, selection, ruleset, agreement, tmp_path / "p", PASSWORD,
                          Issue(datetime(2026, 11, 2, tzinfo=UTC)))
    out = tmp_path / "out"
    subprocess.run([shutil.which("7z"), "x", f"-p{PASSWORD}", f"-o{out}", str(built.path)],
                   check=True, capture_output=True)
    csv = (out / "data.csv").read_bytes()
    assert len(csv) > 20 * 1024 and len(blocks) >= 8  # a block per write of 16 rows, or more
    assert hashlib.sha256(csv).hexdigest() == built.content_sha256
