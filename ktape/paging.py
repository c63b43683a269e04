"""AIP-158 page tokens: opaque, authenticated, bound to the query that made them.

A token carries the keyset position after the last row served (so page 1,000 costs what
page 1 costs) and a digest of every other request argument; a token presented with a
changed query is rejected (INVALID_ARGUMENT). Tokens are AES-GCM sealed: opaque to
clients (base64 of readable state would invite hand-editing) and tamper-evident.
Replicas of queryd must share the key (`KTAPE_PAGE_TOKEN_SECRET`, or the key file in the
data dir that the first start creates).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ktape.errors import InvalidArgument, PageTokenMismatch

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_VERSION = b"\x01"


class PageTokenError(ValueError):
    """The page token is malformed, forged, expired in format, or for another query."""


def page_size(requested: int) -> int:
    """AIP-158: 0 means the default, oversize is coerced down, negative is an error."""
    if requested < 0:
        raise ValueError("page_size must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def load_key(data_dir: Path) -> bytes:
    """The token key: from KTAPE_PAGE_TOKEN_SECRET, else a key file in the data dir."""
    secret = os.environ.get("KTAPE_PAGE_TOKEN_SECRET")
    if secret:
        return hashlib.sha256(secret.encode()).digest()
    path = data_dir / "page_token.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # atomic "create if absent" between racing replicas
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != 32:
        raise RuntimeError(f"{path} does not hold a 32-byte key")
    return key


def query_digest(method: str, args: Mapping[str, Any]) -> str:
    """A digest of the request arguments other than page_size/page_token."""
    canonical = json.dumps({"m": method, **args}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class PageTokens:
    """Seal and open page tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, digest: str, position: Sequence[Any]) -> str:
        payload = json.dumps({"q": digest, "p": list(position)}, separators=(",", ":")).encode()
        nonce = secrets.token_bytes(12)
        sealed = _VERSION + nonce + self._aead.encrypt(nonce, payload, _VERSION)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, token: str, digest: str) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise PageTokenError("page_token is not a token this service issued") from None
        if len(raw) < 1 + 12 + 16 or raw[:1] != _VERSION:
            raise PageTokenError("page_token is not a token this service issued")
        try:
            payload = self._aead.decrypt(raw[1:13], raw[13:], _VERSION)
        except InvalidTag:
            raise PageTokenError("page_token is not a token this service issued") from None
        data = json.loads(payload)
        if data.get("q") != digest:
            raise PageTokenError("page_token belongs to a different query; "
                                 "keep every argument but page_size unchanged while paging")
        position = data.get("p")
        if not isinstance(position, list):
            raise PageTokenError("page_token is not a token this service issued")
        return position


def checked_page_size(requested: int) -> int:
    """`page_size` of a request, or INVALID_ARGUMENT naming the field (AIP-158, 193)."""
    try:
        return page_size(requested)
    except ValueError as exc:
        raise InvalidArgument.field("page_size", str(exc)) from None


def position_of(tokens: PageTokens, token: str, digest: str) -> list[Any] | None:
    """The position a request's `page_token` carries (None on a first page), or
    INVALID_ARGUMENT when it is forged or belongs to another query."""
    if not token:
        return None
    try:
        return tokens.open(token, digest)
    except PageTokenError as exc:
        raise PageTokenMismatch(str(exc), violations=[], metadata={"field": "page_token"}) from None
