"""Kalshi request signatures (PROTOCOL.md §2), verified as Kalshi does.

String to sign: timestamp_ms + METHOD + path (no query); RSASSA-PSS, SHA-256, MGF1
SHA-256, salt length 32 for an RSA key, plain Ed25519 for an Ed25519 key (the key type
comes from the public-key PEM); base64 (standard, padded). A timestamp outside ±SKEW_MS
of our clock is rejected (Kalshi's window is undocumented; we choose 5 minutes).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

SKEW_MS = 5 * 60 * 1000


class SignatureVerifier:
    def __init__(self, public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> None:
        self.public_key = public_key

    @classmethod
    def from_pem(cls, path: Path) -> SignatureVerifier:
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, (rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
            raise ValueError(f"{path}: not an RSA or Ed25519 public key")
        return cls(key)

    def check(self, headers: Mapping[str, str], method: str, path: str,
              now_ms: int | None = None) -> str | None:
        """None when valid, else the reason (for the 401 body and the log)."""
        key_id = headers.get("KALSHI-ACCESS-KEY") or headers.get("kalshi-access-key")
        stamp = headers.get("KALSHI-ACCESS-TIMESTAMP") or headers.get("kalshi-access-timestamp")
        signature = headers.get("KALSHI-ACCESS-SIGNATURE") or headers.get(
            "kalshi-access-signature")
        if not key_id or not stamp or not signature:
            return "missing authentication headers"
        try:
            stamp_ms = int(stamp)
        except ValueError:
            return "bad timestamp"
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if abs(now_ms - stamp_ms) > SKEW_MS:
            return "stale timestamp"
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return "bad signature encoding"
        message = f"{stamp}{method.upper()}{path.split('?', 1)[0]}".encode()
        try:
            if isinstance(self.public_key, ed25519.Ed25519PublicKey):
                self.public_key.verify(raw, message)
            else:
                self.public_key.verify(
                    raw, message,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                    hashes.SHA256(),
                )
        except InvalidSignature:
            return "invalid signature"
        return None
