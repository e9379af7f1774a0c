"""Signed envelopes: round trip, canonical JSON, and every way a tampered or foreign envelope is refused."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.wire.jsonio import canonical_json, load_json
from agent.wire.signing import (
    ENVELOPE_SCHEMA,
    SignatureError,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    open_envelope,
    save_keypair,
    sign,
    trusted_keys,
)

DOC = {"schema": "iotguard.ruleset/1", "b": [1, 2.5, None, True], "a": {"ü": "ß"}, "version": 3}


@pytest.fixture(scope="module")
def key():
    return generate_key()


@pytest.fixture(scope="module")
def trusted(key):
    return trusted_keys([key.public_key()])


def _reencode(envelope: dict, **changes) -> bytes:
    return json.dumps({**envelope, **changes}).encode()


def test_round_trip_from_bytes_and_dict(key, trusted):
    envelope = sign(DOC, key)
    assert envelope["schema"] == ENVELOPE_SCHEMA and envelope["key_id"] == key_id(key.public_key())
    assert open_envelope(canonical_json(envelope), trusted) == DOC
    assert open_envelope(envelope, trusted) == DOC
    assert base64.b64decode(envelope["payload"]) == canonical_json(DOC)


def test_canonical_json_is_independent_of_key_order_and_exact():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'
    assert canonical_json({"x": "é"}) == '{"x":"é"}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_tampered_payload_is_refused(key, trusted):
    envelope = sign(DOC, key)
    forged = canonical_json({**DOC, "version": 4})
    with pytest.raises(SignatureError, match="bad signature"):
        open_envelope(_reencode(envelope, payload=base64.b64encode(forged).decode()), trusted)


def test_tampered_signature_is_refused(key, trusted):
    envelope = sign(DOC, key)
    sig = bytearray(base64.b64decode(envelope["signature"]))
    sig[0] ^= 1
    with pytest.raises(SignatureError, match="bad signature"):
        open_envelope(_reencode(envelope, signature=base64.b64encode(bytes(sig)).decode()), trusted)


def test_unknown_key_and_borrowed_key_id_are_refused(key, trusted):
    other = generate_key()
    with pytest.raises(SignatureError, match="unknown key"):
        open_envelope(sign(DOC, other), trusted)
    # An attacker who copies the trusted key id still cannot produce a valid signature.
    with pytest.raises(SignatureError, match="bad signature"):
        open_envelope({**sign(DOC, other), "key_id": key_id(key.public_key())}, trusted)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"not json", "malformed JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(DOC).encode(), "unsigned or unknown envelope schema"),
        (json.dumps({"schema": ENVELOPE_SCHEMA, "key_id": "x"}).encode(), "missing or not strings: payload, signature"),
        (json.dumps({"schema": ENVELOPE_SCHEMA, "key_id": "x", "payload": 1, "signature": "a"}).encode(), "payload"),
        (b"[" * 10000 + b"]" * 10000, "nesting too deep"),
        (b"x" * (9 * 1024 * 1024), "too large"),
    ],
)
def test_malformed_envelopes_get_a_reason(trusted, data, reason):
    with pytest.raises(SignatureError, match=reason):
        open_envelope(data, trusted)


def test_bad_base64_and_extra_fields(key, trusted):
    envelope = sign(DOC, key)
    with pytest.raises(SignatureError, match="payload is not valid base64"):
        open_envelope({**envelope, "payload": "@@@"}, trusted)
    with pytest.raises(SignatureError, match="unexpected envelope field"):
        open_envelope({**envelope, "note": "hi"}, trusted)


def test_signed_but_hostile_payload_is_still_bounded(key, trusted):
    deep: object = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(SignatureError, match="nesting too deep"):
        open_envelope(sign({"x": deep}, key), trusted)
    with pytest.raises(SignatureError, match="payload too large"):
        open_envelope(sign({"x": "a" * 2000}, key), trusted, max_bytes=1000)
    with pytest.raises(SignatureError, match="payload is not a JSON object"):
        envelope = sign({"x": 1}, key)
        body = canonical_json([1])
        envelope["payload"] = base64.b64encode(body).decode()
        envelope["signature"] = base64.b64encode(key.sign(body)).decode()
        open_envelope(envelope, trusted)


def test_load_json_rejects_nan_literals():
    with pytest.raises(ValueError, match="NaN is not valid JSON"):
        load_json(b'{"x": NaN}')


def test_key_files_round_trip_and_private_key_is_0600(tmp_path, key):
    save_keypair(key, tmp_path / "k", tmp_path / "k.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert key_id(load_private_key(tmp_path / "k").public_key()) == key_id(key.public_key())
    assert key_id(load_public_key(tmp_path / "k.pub")) == key_id(key.public_key())


def test_non_ed25519_keys_are_refused(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "ec.pub").write_bytes(
        ec_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not an Ed25519 private key"):
        load_private_key(tmp_path / "ec.key")
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        load_public_key(tmp_path / "ec.pub")
