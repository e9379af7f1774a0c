"""Ed25519 keys and signed envelopes.

Everything the controller pushes to a board (rule sets, models) travels inside
an envelope::

    {"schema": "iotguard.signed/1", "key_id": "<16 hex>",
     "payload": "<base64 of the canonical JSON bytes>",
     "signature": "<base64 Ed25519 signature of those bytes>"}

The signature covers the exact payload bytes, so the board never has to
re-serialise anything to check it.  ``open_envelope`` is the only way in: it
bounds the size and nesting of what it parses, checks the key and signature,
and raises ``SignatureError`` with a reason a human can act on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.wire.jsonio import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, canonical_json, load_json

log = logging.getLogger(__name__)

ENVELOPE_SCHEMA = "iotguard.signed/1"
ENVELOPE_FIELDS = ("schema", "key_id", "payload", "signature")

TrustedKeys = Mapping[str, Ed25519PublicKey]


class SignatureError(ValueError):
    """An envelope was refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- keys --------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short name of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_keypair(private_key: Ed25519PrivateKey, private_path: Path, public_path: Path) -> None:
    """Write the private key (mode 0600) and the public key as PEM."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path = Path(private_path)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    Path(public_path).write_bytes(pub)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")
    return key


def trusted_keys(public_keys: list[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """The mapping ``open_envelope`` wants: key id -> public key."""
    return {key_id(k): k for k in public_keys}


# --- envelopes ---------------------------------------------------------------


def sign(payload: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, str]:
    """Wrap a JSON document in a signed envelope."""
    body = canonical_json(payload)
    return {
        "schema": ENVELOPE_SCHEMA,
        "key_id": key_id(private_key.public_key()),
        "payload": base64.b64encode(body).decode("ascii"),
        "signature": base64.b64encode(private_key.sign(body)).decode("ascii"),
    }


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SignatureError(f"{what} is not valid base64") from None


def open_envelope(
    data: bytes | str | Mapping[str, Any],
    keys: TrustedKeys,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Any]:
    """Check an envelope and return its payload document; SignatureError(reason) otherwise.

    ``max_bytes``/``max_depth`` bound both the envelope and the payload inside.
    """
    if isinstance(data, Mapping):
        envelope: Any = dict(data)
    else:
        try:
            envelope = load_json(data, max_bytes, max_depth=4)
        except ValueError as exc:
            raise SignatureError(f"envelope: {exc}") from None
    if not isinstance(envelope, dict):
        raise SignatureError("envelope is not a JSON object")
    if envelope.get("schema") != ENVELOPE_SCHEMA:
        raise SignatureError(f"unsigned or unknown envelope schema {envelope.get('schema')!r} (want {ENVELOPE_SCHEMA!r})")
    missing = [f for f in ENVELOPE_FIELDS if not isinstance(envelope.get(f), str)]
    if missing:
        raise SignatureError(f"envelope field(s) missing or not strings: {', '.join(missing)}")
    extra = sorted(set(envelope) - set(ENVELOPE_FIELDS))
    if extra:
        raise SignatureError(f"unexpected envelope field(s): {', '.join(extra)}")
    public_key = keys.get(envelope["key_id"])
    if public_key is None:
        raise SignatureError(f"signed by unknown key {envelope['key_id']!r}")
    body = _b64(envelope["payload"], "payload")
    signature = _b64(envelope["signature"], "signature")
    if len(body) > max_bytes:
        raise SignatureError(f"payload too large: {len(body)} bytes > limit {max_bytes}")
    try:
        public_key.verify(signature, body)
    except InvalidSignature:
        raise SignatureError(f"bad signature (key {envelope['key_id']})") from None
    try:
        payload = load_json(body, max_bytes, max_depth)
    except ValueError as exc:
        raise SignatureError(f"payload: {exc}") from None
    if not isinstance(payload, dict):
        raise SignatureError("payload is not a JSON object")
    return payload
