"""API keys `kt_<env>_<id>_<secret>`: generated, parsed and verified; only hashes stored.

The id is public (listed, logged); the secret is 32 random bytes shown once and stored as
its SHA-256. Verification compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

ENVS = ("dev", "prod")
_KEY_RE = re.compile(r"^kt_(dev|prod)_([0-9a-f]{12})_([0-9a-f]{64})$")


class MalformedKey(ValueError):
    """Not a ktape key (wrong prefix, env, id or secret shape)."""


@dataclass(frozen=True)
class NewKey:
    key_id: str
    env: str
    secret_sha256: str
    full: str  # shown once, never stored

    @property
    def prefix(self) -> str:
        return f"kt_{self.env}_{self.key_id}"


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key(env: str) -> NewKey:
    if env not in ENVS:
        raise ValueError(f"env must be one of {ENVS}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_hex(32)
    return NewKey(key_id, env, secret_digest(secret), f"kt_{env}_{key_id}_{secret}")


def parse_key(full: str) -> tuple[str, str, str]:
    """`kt_<env>_<id>_<secret>` -> (env, key_id, secret)."""
    match = _KEY_RE.match(full.strip())
    if not match:
        raise MalformedKey("not a ktape API key (expected kt_<env>_<id>_<secret>)")
    return match.group(1), match.group(2), match.group(3)


def secret_matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(secret_digest(secret), stored_sha256)
