"""Signed download URLs: `/v1/files/{name}?expires={unix_seconds}&sig={base64url HMAC}`.

Why signed URLs rather than the API key on the download: a URL is what a buyer hands to
curl, a browser or a download manager (none of which sends our bearer key, and a
resumed download must not be charged again), and it names exactly one file for a
bounded time. queryd signs a URL when `CreateDatasetDownload` is paid for; datasetd
checks it on every request without asking anyone, so the two share nothing but a key.

The MAC is HMAC-SHA256 over a context string, the name and the expiry, compared in
constant time. `verify` says *why* a URL is refused (missing, malformed, forged,
expired) so the log can tell a stale bookmark from tampering; the client sees one 403.

The key is `KTAPE_DATASETS_SIGNING_KEY` when set (required once queryd and datasetd run
on different hosts), else 32 random bytes in `<data_dir>/datasets-signing.key`, made on
first use by whichever process gets there first; every other process reads that file.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path
from urllib.parse import quote

from ktape.config import Settings
from ktape.datasets.names import FileName

URL_PREFIX = "/v1/files/"
DEFAULT_LIFETIME_SECS = 24 * 3600  # CONTRACT.md: a URL works for 24 h
KEY_BYTES = 32
_CONTEXT = b"ktape.datasets.url.v1"
_MAC_BYTES = hashlib.sha256().digest_size
_MAX_EXPIRES_DIGITS = 12  # far beyond any real expiry; bounds what int() is asked to parse


class Verdict(enum.StrEnum):
    """The outcome of checking a URL's signature; the value is the log's `reason`."""

    VALID = "valid"
    MISSING = "missing_signature"  # no `expires` or no `sig` at all
    MALFORMED = "malformed_signature"  # not an integer expiry or not a 32-byte base64url MAC
    FORGED = "forged_signature"  # well formed, but not made with our key for this name
    EXPIRED = "expired"  # genuine, and past its expiry

    @property
    def ok(self) -> bool:
        return self is Verdict.VALID


def signing_key(settings: Settings) -> bytes:
    """The URL-signing key every issuer and checker of this deployment shares."""
    if settings.datasets_signing_key is not None:
        # Hashed so a configured passphrase and a generated key are the same kind of thing.
        return hashlib.sha256(settings.datasets_signing_key.reveal().encode()).digest()
    return load_or_create_key(settings.datasets_signing_key_path)


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (32 random bytes, mode 0600) if it does not exist yet.

    Race-safe across processes: the key is written whole to a private temp file
    (mkstemp: O_EXCL, mode 0600) and published with link(2), which, like O_EXCL on the
    final name, fails when the name exists; so exactly one process's key wins and no
    reader ever sees a half-written file (an O_EXCL create of the final name would let
    a second process read it empty). A loser discards its key and reads the winner's.
    """
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process published its key first: use that one
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    with open(path, "rb") as src:
        mode = os.fstat(src.fileno()).st_mode
        key = src.read()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RuntimeError(f"{path} is readable by others (mode {stat.filemode(mode)}): "
                           f"`chmod 600 {path}`, or set KTAPE_DATASETS_SIGNING_KEY")
    if len(key) != KEY_BYTES:
        raise RuntimeError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key: "
                           "remove it to make a new one (URLs signed with the old key stop working)")
    return key


def _mac(key: bytes, name: str, expires: int) -> bytes:
    # NUL-separated and the expiry all digits, so no other (name, expires) pair gives
    # the same message.
    return hmac.new(key, b"\0".join((_CONTEXT, name.encode(), str(expires).encode())),
                    hashlib.sha256).digest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def signature(key: bytes, name: str, expires_unix: int) -> str:
    """The `sig` query value for `name` valid until `expires_unix` (base64url, no padding)."""
    return _b64url(_mac(key, name, expires_unix))


def expiry(now_unix: float, lifetime_secs: int = DEFAULT_LIFETIME_SECS) -> int:
    """The `expires` of a URL issued at `now_unix` (whole seconds, rounded down)."""
    return int(now_unix) + lifetime_secs


def signed_path(key: bytes, name: str, expires_unix: int) -> str:
    """`/v1/files/{name}?expires=...&sig=...` for a dataset file name (relative to the edge:
    the issuer prefixes its public base URL). Raises `BadName` for anything that is not a
    dataset file name, so nothing else can ever be signed."""
    FileName.parse(name)
    if expires_unix < 0:
        raise ValueError(f"expires {expires_unix} is before 1970")
    return (f"{URL_PREFIX}{quote(name, safe='/')}?expires={expires_unix}"
            f"&sig={signature(key, name, expires_unix)}")


def verify(key: bytes, name: str, expires: str | int | None, sig: str | None,
           now_unix: float) -> Verdict:
    """Whether `sig` is our signature of `name` until `expires`, and whether that is past.

    `expires` and `sig` are the raw query values (None when absent). The signature is
    checked before the expiry, so EXPIRED always means a genuine URL that ran out; a URL
    is valid while `now_unix < expires`.
    """
    if expires is None or sig is None or expires == "" or sig == "":
        return Verdict.MISSING
    if isinstance(expires, str):
        if not (expires.isascii() and expires.isdigit()) or len(expires) > _MAX_EXPIRES_DIGITS:
            return Verdict.MALFORMED
        expires = int(expires)
    if expires < 0 or "\0" in name:
        return Verdict.MALFORMED
    try:
        given = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (binascii.Error, ValueError):
        return Verdict.MALFORMED
    if len(given) != _MAC_BYTES or _b64url(given) != sig:  # one spelling per MAC
        return Verdict.MALFORMED
    if not hmac.compare_digest(_mac(key, name, expires), given):
        return Verdict.FORGED
    if now_unix >= expires:
        return Verdict.EXPIRED
    return Verdict.VALID
