"""KalshiSigner: RSA-PSS or Ed25519, the type read from the PEM (PROTOCOL.md §2)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ingestd.kalshi.auth import KalshiSigner


def _pem(key, path):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def test_rsa_and_ed25519_keys_sign_the_string_kalshi_verifies(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    for key, kind in ((rsa_key, "rsa"), (ed_key, "ed25519")):
        signer = KalshiSigner.from_pem_file("k", _pem(key, tmp_path / f"{kind}.pem"))
        assert signer.key_type == kind
        headers = signer.headers("get", "/trade-api/v2/markets?limit=5", now_ms=1_763_990_000_123)
        assert headers["KALSHI-ACCESS-TIMESTAMP"] == "1763990000123"
        message = b"1763990000123GET/trade-api/v2/markets"  # no query string
        signature = base64.b64decode(headers["KALSHI-ACCESS-SIGNATURE"])
        if kind == "rsa":
            key.public_key().verify(signature, message, padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
        else:
            key.public_key().verify(signature, message)


def test_another_key_type_is_refused_with_its_name(tmp_path):
    path = _pem(ec.generate_private_key(ec.SECP256R1()), tmp_path / "ec.pem")
    with pytest.raises(ValueError, match="ECPrivateKey; Kalshi keys are RSA or Ed25519"):
        KalshiSigner.from_pem_file("k", path)
