"""Kalshi request signing (PROTOCOL.md §2): RSA-PSS over timestamp + METHOD + path."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class KalshiSigner:
    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey) -> None:
        self.key_id = key_id
        self.private_key = private_key

    @classmethod
    def from_pem_file(cls, key_id: str, path: Path) -> KalshiSigner:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: Kalshi keys are RSA")
        return cls(key_id, key)

    def headers(self, method: str, path: str, now_ms: int | None = None) -> dict[str, str]:
        """The three KALSHI-ACCESS-* headers; `path` excludes host and query string."""
        stamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
        message = f"{stamp}{method.upper()}{path.split('?', 1)[0]}".encode()
        signature = self.private_key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256())
        return {"KALSHI-ACCESS-KEY": self.key_id, "KALSHI-ACCESS-TIMESTAMP": stamp,
                "KALSHI-ACCESS-SIGNATURE": base64.b64encode(signature).decode()}
