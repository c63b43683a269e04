"""Kalshi request signing (PROTOCOL.md §2): timestamp + METHOD + path, signed with the
account's key — RSA-PSS (SHA-256, MGF1 SHA-256, salt 32) for an RSA key, plain Ed25519
for an Ed25519 key (production recorders sign with both since 2026; the type is read
from the PEM, and the log says which one is used)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from ktape.log import get_logger

log = get_logger(__name__)

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class KalshiSigner:
    def __init__(self, key_id: str, private_key: PrivateKey) -> None:
        if not isinstance(private_key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise TypeError("Kalshi keys are RSA or Ed25519")
        self.key_id = key_id
        self.private_key = private_key

    @property
    def key_type(self) -> str:
        return "ed25519" if isinstance(self.private_key, ed25519.Ed25519PrivateKey) else "rsa"

    @classmethod
    def from_pem_file(cls, key_id: str, path: Path) -> KalshiSigner:
        """Read an RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8) private key PEM."""
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
            raise ValueError(f"{path}: an {type(key).__name__}; Kalshi keys are RSA or Ed25519")
        signer = cls(key_id, key)
        log.info("kalshi.key_loaded", key_type=signer.key_type, key_id=key_id)
        return signer

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return self.private_key.sign(message)
        return self.private_key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256())

    def headers(self, method: str, path: str, now_ms: int | None = None) -> dict[str, str]:
        """The three KALSHI-ACCESS-* headers; `path` excludes host and query string."""
        stamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
        message = f"{stamp}{method.upper()}{path.split('?', 1)[0]}".encode()
        return {"KALSHI-ACCESS-KEY": self.key_id, "KALSHI-ACCESS-TIMESTAMP": stamp,
                "KALSHI-ACCESS-SIGNATURE": base64.b64encode(self.sign(message)).decode()}
