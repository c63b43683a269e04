"""Signed download URLs: a genuine URL verifies until its expiry and not after; any
change to the name, the expiry or the MAC is refused, and the refusal says why; the
generated key is private and the same for every process that starts at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from ktape.config import load_settings
from ktape.datasets import signing
from ktape.datasets.names import BadName
from ktape.datasets.signing import Verdict, expiry, signed_path, signing_key, verify

KEY = bytes(range(32))
NAME = "book_changes/2026-12-01/KXBTC-26DEC01-T100000.parquet"
ROOT = Path(__file__).resolve().parents[4]


def _parts(path: str) -> tuple[str, str, str]:
    split = urlsplit(path)
    query = parse_qs(split.query)
    return unquote(split.path.removeprefix("/v1/files/")), query["expires"][0], query["sig"][0]


def test_signed_path_shape_and_mac():
    path = signed_path(KEY, NAME, 1_800_000_000)
    assert path.startswith(f"/v1/files/{NAME}?expires=1800000000&sig=")
    name, expires, sig = _parts(path)
    assert name == NAME and expires == "1800000000"
    # An independent computation of the documented MAC: HMAC-SHA256, base64url, no padding.
    expected = hmac.new(KEY, b"ktape.datasets.url.v1\0" + NAME.encode() + b"\0" + b"1800000000",
                        hashlib.sha256).digest()
    assert sig == base64.urlsafe_b64encode(expected).rstrip(b"=").decode()
    assert "=" not in sig and len(sig) == 43


def test_genuine_url_is_valid_until_its_expiry_and_expired_after():
    now = 1_800_000_000.0
    _, expires, sig = _parts(signed_path(KEY, NAME, expiry(now)))
    assert int(expires) == now + 24 * 3600
    assert verify(KEY, NAME, expires, sig, now) is Verdict.VALID
    assert verify(KEY, NAME, expires, sig, now + 24 * 3600 - 1).ok
    assert verify(KEY, NAME, expires, sig, now + 24 * 3600) is Verdict.EXPIRED
    assert verify(KEY, NAME, int(expires), sig, now) is Verdict.VALID  # an int expiry too


@pytest.mark.parametrize(("change", "verdict"), [
    ({"name": NAME.replace("KXBTC", "KXETH")}, Verdict.FORGED),
    ({"name": NAME.replace(".parquet", ".csv.gz")}, Verdict.FORGED),
    ({"expires": "1900000000"}, Verdict.FORGED),  # a later expiry needs a new signature
    ({"key": b"\x01" * 32}, Verdict.FORGED),
    ({"sig": "A" * 43}, Verdict.FORGED),
    ({"sig": None}, Verdict.MISSING),
    ({"expires": None}, Verdict.MISSING),
    ({"sig": ""}, Verdict.MISSING),
    ({"expires": "18e8"}, Verdict.MALFORMED),
    ({"expires": "-1"}, Verdict.MALFORMED),
    ({"expires": "1" * 40}, Verdict.MALFORMED),
    ({"sig": "not base64 at all!"}, Verdict.MALFORMED),
    ({"sig": "AAAA"}, Verdict.MALFORMED),  # decodes, but not 32 bytes
])
def test_any_change_is_refused_with_its_reason(change, verdict):
    _, expires, sig = _parts(signed_path(KEY, NAME, 1_800_000_000))
    args = {"key": KEY, "name": NAME, "expires": expires, "sig": sig, **change}
    assert verify(args["key"], args["name"], args["expires"], args["sig"], 1_700_000_000) is verdict


def test_an_expired_forgery_is_forged_not_expired():
    """The MAC is checked first: a tampered URL never passes as a merely stale one."""
    _, _, sig = _parts(signed_path(KEY, NAME, 1_800_000_000))
    assert verify(KEY, NAME, "1700000000", sig, 1_750_000_000) is Verdict.FORGED


def test_a_second_spelling_of_the_mac_is_refused():
    """base64 decoders skip junk characters; a MAC with junk appended is not the same URL."""
    _, expires, sig = _parts(signed_path(KEY, NAME, 1_800_000_000))
    assert verify(KEY, NAME, expires, sig + "$", 1_700_000_000) is Verdict.MALFORMED


def test_only_dataset_names_can_be_signed():
    for bad in ("manifests/2026-12-01.json", "../etc/passwd", "book_changes/2026-12-01/../x.parquet"):
        with pytest.raises(BadName):
            signed_path(KEY, bad, 1_800_000_000)


def test_configured_key_is_used_and_no_file_is_made(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path),
                              "KTAPE_DATASETS_SIGNING_KEY": "a-long-shared-secret-for-tests"})
    key = signing_key(settings)
    assert key == hashlib.sha256(b"a-long-shared-secret-for-tests").digest()
    assert not settings.datasets_signing_key_path.exists()


def test_generated_key_is_private_and_stable(tmp_path):
    settings = load_settings({"KTAPE_DATA_DIR": str(tmp_path / "data")})
    first = signing_key(settings)
    path = settings.datasets_signing_key_path
    assert path == tmp_path / "data" / "datasets-signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 32 and path.read_bytes() == first
    assert signing_key(settings) == first  # read back, not remade
    assert [p.name for p in path.parent.iterdir()] == ["datasets-signing.key"]  # no temp left


def test_losing_the_creation_race_uses_the_winners_key(tmp_path, monkeypatch):
    """Another process publishes its key between our "not there" and our link."""
    path = tmp_path / "datasets-signing.key"
    winner = b"W" * 32
    real_token_bytes = signing.secrets.token_bytes

    def token_bytes_while_another_process_wins(n: int) -> bytes:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, winner)
        os.close(fd)
        return real_token_bytes(n)

    monkeypatch.setattr(signing.secrets, "token_bytes", token_bytes_while_another_process_wins)
    assert signing.load_or_create_key(path) == winner
    assert path.read_bytes() == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets-signing.key"]


def test_processes_starting_at_once_share_one_key(tmp_path):
    go = tmp_path / "go"
    script = ("import sys, time; from pathlib import Path\n"
              "from ktape.datasets.signing import load_or_create_key\n"
              "go = Path(sys.argv[1])\n"
              "while not go.exists(): time.sleep(0.0005)\n"
              "print(load_or_create_key(Path(sys.argv[2])).hex())\n")
    key_path = tmp_path / "data" / "datasets-signing.key"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(go), str(key_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    try:
        time.sleep(1.0)  # let every interpreter start and spin on the go file
        go.touch()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    keys = {out.strip() for out, _ in outputs}
    assert keys == {key_path.read_bytes().hex()}
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "datasets-signing.key"
    path.write_bytes(b"k" * 32)
    path.chmod(0o644)
    with pytest.raises(RuntimeError, match="chmod 600"):
        signing.load_or_create_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(RuntimeError, match="32-byte"):
        signing.load_or_create_key(path)
