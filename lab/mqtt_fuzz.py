"""Hostile MQTT messages for the agent, reproducible: the fuzzer's cases and their generators (issue #7).

Hostile payloads for each topic the agent subscribes to (its own rule set, the fleet-wide rule set, model
pushes) and for topics it does not expect.  A ``Case`` is one message, made by a generator from a
``random.Random`` and the ``World`` (the fleet's keys and base documents); it survives a change of key, so
the regression corpus (tests/data/mqtt_fuzz_corpus/) stores cases as JSON.

The generators here are the only ones: benchmarks/fuzz_mqtt.py runs a long campaign through them and
tests/agent/fleet/test_mqtt_fuzz.py replays the corpus and runs a property test.  What the agent must
make of each case is checked by lab/mqtt_fuzz_harness.py; configuration files and profiles are fuzzed
by lab/config_fuzz.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.detect.model import Classifier, load_bundle, parse_bundle
from agent.wire import MODEL_MAX_BYTES, MODEL_SCHEMA, RULES_MAX_BYTES
from agent.wire import rules as rs
from agent.wire import topic
from agent.wire.jsonio import canonical_json
from agent.wire.signing import ENVELOPE_SCHEMA, generate_key, key_id, save_keypair
from lab import TEST_DATA

PREFIX, FLEET, DEVICE = "iotguard/v1", "lab", "dev1"
RULES_VERSION = 10  # the agent starts with v10 of both rule sets applied ...
MODEL_VERSION = 5  # ... and model v5 installed, so older versions can be replayed
REASON_LIMIT = 1024  # a reason travels in every ack and status document: it must stay short
KINDS = ("rules-device", "rules-all", "model", "topic")
CORPUS = TEST_DATA / "mqtt_fuzz_corpus"  # regression cases, replayed by the tests


# --- JSON with hostile literals ---------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text spliced in verbatim: what canonical_json refuses to write (NaN, 1e400, "\\ud800", huge ints)."""

    text: str


def render(doc: Any) -> bytes:
    """canonical_json of ``doc`` (same settings), with every Raw replaced by its text."""
    raws: list[str] = []

    def placeholder(value: Any) -> str:  # json calls this for what it cannot serialise itself
        if not isinstance(value, Raw):
            raise TypeError(f"not JSON: {value!r}")
        raws.append(value.text)
        return f"\x00raw{len(raws) - 1}\x00"

    out = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                     default=placeholder).encode()  # fmt: skip
    for i, text in enumerate(raws):  # json escapes the NULs, so the marker cannot occur in real data
        out = out.replace(f'"\\u0000raw{i}\\u0000"'.encode(), text.encode("utf-8", "surrogatepass"))
    return out


NAN, INF, NEG_INF, OVERFLOW = Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400")  # 1e400 parses to inf
HUGE_INT = Raw("9" * 400)  # a valid JSON number no float can hold
LONE_SURROGATE = Raw('"\\ud800"')  # valid JSON escape, not encodable as UTF-8
SCALARS: list[Any] = [None, True, False, 0, -1, 1.5, -0.0, 2**64, "", "x", "\u0000", [], [None], {}, {"k": "v"}]


def same_type(value: Any, types: tuple[type, ...]) -> bool:
    return type(value) in types  # bool is not an int here, as in the agent's checks


def random_json(rng: random.Random, depth: int = 2) -> Any:
    """A random JSON value, small."""
    pick = rng.randrange(9 if depth > 0 else 7)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.randint(-(2**70), 2**70)
    if pick == 3:
        return rng.uniform(-1e9, 1e9)
    if pick == 4:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))
    if pick == 5:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(6)))
    if pick == 6:
        return rng.choice(SCALARS)
    if pick == 7:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {repr(random_json(rng, 0)): random_json(rng, depth - 1) for _ in range(rng.randrange(4))}


def wrong_type(rng: random.Random, allowed: tuple[type, ...]) -> Any:
    """A JSON value of a type the field does not take."""
    while True:
        value = random_json(rng) if rng.random() < 0.5 else rng.choice(SCALARS)
        if not same_type(value, allowed):
            return value


def deep(depth: int, leaf: str = "0") -> Raw:
    return Raw("[" * depth + leaf + "]" * depth)


# --- what the controller would send ----------------------------------------


@dataclass
class World:
    """The fleet around the agent: the trusted controller key, an untrusted one, the base documents."""

    key: Any  # Ed25519PrivateKey the agent trusts
    stranger: Any  # a key it does not
    public_key: Path
    model_meta: dict
    model_tflite: bytes
    meta_json: str = ""  # model_meta as JSON: json.loads makes a fresh copy 5x faster than deepcopy

    def __post_init__(self) -> None:
        self.meta_json = json.dumps(self.model_meta)

    @classmethod
    def create(cls, folder: Path) -> World:
        key = generate_key()
        save_keypair(key, folder / "controller.key", folder / "controller.pub")
        meta, tflite = small_bundle()
        return cls(key, generate_key(), folder / "controller.pub", meta, tflite)

    # topics
    def topic(self, kind: str) -> bytes:
        device = {"rules-device": DEVICE, "rules-all": rs.ALL_DEVICES, "model": DEVICE}[kind]
        return topic(PREFIX, FLEET, device, "model" if kind == "model" else "rules").encode()

    # envelopes
    def envelope(self, body: bytes, key: Any = None) -> dict[str, str]:
        """What agent.wire.signing.sign makes, over exact body bytes (which may hold hostile literals)."""
        key = key or self.key
        return {
            "schema": ENVELOPE_SCHEMA,
            "key_id": key_id(key.public_key()),
            "payload": base64.b64encode(body).decode(),
            "signature": base64.b64encode(key.sign(body)).decode(),
        }

    def signed(self, body: bytes, key: Any = None) -> bytes:
        return canonical_json(self.envelope(body, key))

    # rule sets
    @staticmethod
    def target(kind: str) -> str:
        return DEVICE if kind == "rules-device" else rs.ALL_DEVICES

    @staticmethod
    def rule(i: int, rng: random.Random | None = None) -> dict[str, Any]:
        rng = rng or random.Random(i)
        source = rng.choice([f"203.0.113.{i % 256}", f"198.51.{i % 256}.0/24", f"2001:db8::{i:x}", "2001:db8:1::/48"])
        proto, dport = rng.choice([(None, None), ("tcp", 23), ("udp", None), ("icmp", None), ("tcp", 2323)])
        expires = rng.choice([None, 4102444800.0, 4102444800])  # 2100-01-01
        return {"id": f"r{i}", "source": source, "proto": proto, "dport": dport, "action": "drop",
                "expires": expires, "reason": "fuzz"}  # fmt: skip

    def ruleset(self, kind: str, version: int, rules: list | None = None) -> dict[str, Any]:
        return {"schema": rs.SCHEMA, "fleet": FLEET, "target": self.target(kind), "version": version,
                "issued_at": 1700000000, "rules": [self.rule(i) for i in range(3)] if rules is None else rules}  # fmt: skip

    # model pushes
    def model_push(self, version: int) -> dict[str, Any]:
        return {"schema": MODEL_SCHEMA, "version": version, "bundle": json.loads(self.meta_json),
                "tflite_b64": base64.b64encode(self.model_tflite).decode(),
                "sha256": hashlib.sha256(self.model_tflite).hexdigest()}  # fmt: skip


def small_bundle() -> tuple[dict, bytes]:
    """The shipped bundle with every 16th quantile knot and its self-test re-derived for them.

    Still a valid bundle (same model, a coarser preprocessing, a self-test it
    passes), 8 times smaller: signing and checking a push takes ~1.5 ms instead of ~12.
    """
    bundle = load_bundle()
    meta = bundle.full_meta()
    pre = meta["preprocessing"]
    keep = [sorted(set(range(0, len(x), 16)) | {len(x) - 1}) for x in pre["knots_x"]]
    pre["knots_x"] = [[x[i] for i in k] for x, k in zip(pre["knots_x"], keep)]
    pre["knots_y"] = [[y[i] for i in k] for y, k in zip(pre["knots_y"], keep)]
    small = parse_bundle(meta, bundle.tflite)
    features = np.asarray(meta["self_test"]["features"], dtype=np.float64)
    meta["self_test"]["int8"] = Classifier(small, batch_size=8).predict_int8(features).astype(int).tolist()
    return meta, bundle.tflite


# --- one hostile message, reproducible --------------------------------------


@dataclass
class Case:
    """A message for the agent.  Exactly one of raw / body / patch says what is sent.

    ``body``: signed with the trusted key and sent in a well-formed envelope.
    ``patch``: dotted paths over the base model push (values may be {"$raw": text}
    or {"$delete": true}), then signed.  Both survive a change of key, so the
    regression corpus holds them instead of the signed bytes.
    """

    kind: str
    category: str
    expect: str = "rejected"  # or "ignored"
    topic: bytes | None = None  # None: the kind's own topic
    raw: bytes | None = None
    body: bytes | None = None
    patch: dict[str, Any] | None = None
    model_version: int = MODEL_VERSION + 1
    reason: str = ""  # (corpus) text the rejection reason must contain
    note: str = ""  # (corpus) what this case found

    def topic_for(self, world: World) -> bytes:
        return world.topic(self.kind) if self.topic is None else self.topic

    def payload(self, world: World) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.body is not None:
            return world.signed(self.body)
        if self.patch is not None:
            return world.signed(patched_push(world, self.model_version, self.patch))
        raise ValueError("a case needs raw, body or patch")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "category": self.category, "expect": self.expect}
        if self.topic is not None:
            doc["topic_b64"] = base64.b64encode(self.topic).decode()
        if self.raw is not None:
            doc["raw_b64"] = base64.b64encode(self.raw).decode()
        if self.body is not None:
            doc["signed_body"] = self.body.decode("utf-8", "surrogateescape")
        if self.patch is not None:
            doc.update(model_patch=self.patch, model_version=self.model_version)
        if self.reason:
            doc["reason"] = self.reason
        if self.note:
            doc["note"] = self.note
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Case:
        return cls(
            kind=doc["kind"], category=doc["category"], expect=doc.get("expect", "rejected"),
            topic=base64.b64decode(doc["topic_b64"]) if "topic_b64" in doc else None,
            raw=base64.b64decode(doc["raw_b64"]) if "raw_b64" in doc else None,
            body=doc["signed_body"].encode("utf-8", "surrogateescape") if "signed_body" in doc else None,
            patch=doc.get("model_patch"), model_version=doc.get("model_version", MODEL_VERSION + 1),
            reason=doc.get("reason", ""), note=doc.get("note", ""),
        )  # fmt: skip


def patched_push(world: World, version: int, patch: dict[str, Any]) -> bytes:
    """The base model push with ``patch`` applied, as the bytes to sign."""
    doc = world.model_push(version)
    for path, value in patch.items():
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if isinstance(value, dict) and value.get("$delete"):
            del node[key]
        else:
            node[key] = Raw(value["$raw"]) if isinstance(value, dict) and "$raw" in value else value
    return render(doc)


# --- generators: envelope level (every signed topic) ------------------------


def base_envelope(world: World, kind: str, rng: random.Random) -> tuple[dict, bytes]:
    """A genuine envelope the agent must refuse anyway (an old version), so that no mutation can make it acceptable."""
    if kind == "model":
        body = render(world.model_push(rng.randint(1, MODEL_VERSION)))
    else:
        body = render(world.ruleset(kind, rng.randint(1, RULES_VERSION - 1)))
    return world.envelope(body), body


def limit(kind: str) -> int:
    return MODEL_MAX_BYTES if kind == "model" else RULES_MAX_BYTES


def gen_random_bytes(rng: random.Random, world: World, kind: str) -> Case:
    size = rng.choice([1, 2, 3, 7, 64, 1000, 5000])
    return Case(kind, "random bytes", raw=rng.randbytes(size))


BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf", b"\x80"]


def gen_invalid_utf8(rng: random.Random, world: World, kind: str) -> Case:
    text = canonical_json(base_envelope(world, kind, rng)[0])
    pos = rng.randrange(len(text) + 1)
    return Case(kind, "invalid UTF-8", raw=text[:pos] + rng.choice(BAD_UTF8) + text[pos:])


def gen_json_syntax(rng: random.Random, world: World, kind: str) -> Case:
    """Mutated JSON text: truncated, a character deleted, inserted or replaced, or not JSON at all."""
    text = bytearray(canonical_json(base_envelope(world, kind, rng)[0]))
    how = rng.randrange(5)
    pos = rng.randrange(len(text))
    if how == 0:
        text = text[:pos]
    elif how == 1:
        del text[pos]
    elif how == 2:
        text.insert(pos, ord(rng.choice('{}[]",:\\ 0e-tfn')))
    elif how == 3:
        text[pos] = ord(rng.choice(string.printable))
    else:
        text = bytearray(rng.choice([b"NaN", b"Infinity", b"-Infinity", b"{'a': 1}", b"{\"a\":}", b"\x00", b"{}{}",
                                     b"\xef\xbb\xbf{}", b"[1,]", b'{"a":1,}', b"tru", b"01"]))  # fmt: skip
    return Case(kind, "malformed JSON", raw=bytes(text))


def gen_not_an_object(rng: random.Random, world: World, kind: str) -> Case:
    value = wrong_type(rng, (dict,))
    return Case(kind, "envelope not an object", raw=render(value))


ENVELOPE_TYPES = {"schema": (str,), "key_id": (str,), "payload": (str,), "signature": (str,)}


def gen_envelope_fields(rng: random.Random, world: World, kind: str) -> Case:
    """An envelope field of the wrong type, missing, or an extra field; or another schema."""
    env: dict[str, Any] = dict(base_envelope(world, kind, rng)[0])
    field_name = rng.choice(list(ENVELOPE_TYPES))
    how = rng.randrange(4)
    if how == 0:
        env[field_name] = wrong_type(rng, ENVELOPE_TYPES[field_name])
        category = "envelope field of wrong type"
    elif how == 1:
        del env[field_name]
        category = "envelope field missing"
    elif how == 2:
        env[rng.choice(["extra", "key", "Payload", "signature2", ""])] = random_json(rng)
        category = "envelope extra field"
    else:
        env["schema"] = rng.choice(["", "iotguard.signed/2", "IOTGUARD.SIGNED/1", "iotguard.signed/1 ", rs.SCHEMA])
        category = "envelope schema"
    return Case(kind, category, raw=render(env))


def gen_unknown_key(rng: random.Random, world: World, kind: str) -> Case:
    env = base_envelope(world, kind, rng)[0]
    if rng.random() < 0.5:
        env = world.envelope(base64.b64decode(env["payload"]), world.stranger)  # a real signature, not our key
    else:
        env["key_id"] = rng.choice([rng.randbytes(8).hex(), "", "x" * 1000, key_id(world.key.public_key()).upper()])
    return Case(kind, "unknown key id", raw=canonical_json(env))


def gen_bad_base64(rng: random.Random, world: World, kind: str) -> Case:
    env = base_envelope(world, kind, rng)[0]
    name = rng.choice(["payload", "signature"])
    value = env[name]
    pos = rng.randrange(len(value) + 1)
    how = rng.randrange(4)
    if how == 0:
        value = value[:pos] + rng.choice("!*.-_ \n\u00e9\u0000=") + value[pos:]
    elif how == 1:
        value = value.rstrip("=") + "=" * rng.choice([1, 3, 5]) if value.endswith("=") else value + "="
    elif how == 2:
        value = value[: len(value) - rng.randint(1, 3)]
    else:
        value = value.replace("+", "-").replace("/", "_") + "-_"
    env[name] = value
    return Case(kind, "bad base64", raw=canonical_json(env))


def gen_bad_signature(rng: random.Random, world: World, kind: str) -> Case:
    """Our key id, but a signature that does not verify: another key's, a flipped bit, tampered payload."""
    env, body = base_envelope(world, kind, rng)
    how = rng.randrange(3)
    if how == 0:
        env["signature"] = world.envelope(body, world.stranger)["signature"]
    elif how == 1:
        sig = bytearray(base64.b64decode(env["signature"]))
        sig[rng.randrange(len(sig))] ^= 1 << rng.randrange(8)
        env["signature"] = base64.b64encode(bytes(sig)).decode()
    else:
        tampered = bytearray(body)
        tampered[rng.randrange(len(tampered))] ^= 1 << rng.randrange(8)
        env["payload"] = base64.b64encode(bytes(tampered)).decode()
    return Case(kind, "bad signature", raw=canonical_json(env))


def gen_truncated_signature(rng: random.Random, world: World, kind: str) -> Case:
    env = base_envelope(world, kind, rng)[0]
    sig = base64.b64decode(env["signature"])
    sig = sig[: rng.randrange(len(sig))] if rng.random() < 0.8 else sig + rng.randbytes(rng.randint(1, 64))
    env["signature"] = base64.b64encode(sig).decode()
    return Case(kind, "truncated signature", raw=canonical_json(env))


def gen_huge(rng: random.Random, world: World, kind: str) -> Case:
    """Just over the size limit: a padded envelope, or plain filler."""
    size = limit(kind) + rng.choice([1, 1000, 1 << 20])
    if rng.random() < 0.5:
        env = base_envelope(world, kind, rng)[0]
        pad = size - len(canonical_json(env)) - 12
        env["pad"] = "x" * max(pad, 1)
        return Case(kind, "huge envelope", raw=canonical_json(env))
    return Case(kind, "huge envelope", raw=b"[" + b"0," * (size // 2) + b"0]")


def gen_deep_envelope(rng: random.Random, world: World, kind: str) -> Case:
    """Nesting over the envelope's depth limit, and deep enough for Python's recursion limit."""
    depth = rng.choice([5, 6, 50, 999, 1001, 5000, 100_000])
    if rng.random() < 0.5:
        return Case(kind, "deep envelope", raw=render(deep(depth)))
    env: dict[str, Any] = dict(base_envelope(world, kind, rng)[0])
    env[rng.choice(["payload", "extra"])] = deep(depth, '{"a":1}')
    return Case(kind, "deep envelope", raw=render(env))


def gen_empty(rng: random.Random, world: World, kind: str) -> Case:
    # An empty retained message clears the rule set topic (nothing to apply, by design); a model push needs content.
    return Case(kind, "empty payload", raw=b"", expect="ignored" if kind != "model" else "rejected")


# --- generators: signed rule sets ---------------------------------------------

BAD_CIDRS = [
    "", " ", "10.0.0.1/8", "300.1.1.1", "1.2.3.4/33", "1.2.3.4/-1", "1.2.3", "01.2.3.4", "1.2.3.4/", "/24", "::/129",
    "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n", "1.2.3.4\x00", "0x7f.0.0.1", "1.2.3.4/24/24", "localhost", "*", "any",
    "1.2.3.4/255.255.0.0", "::ffff:1.2.3.4/200", "2001:db8::1/64", "2001:db8:::1", "\u0661.2.3.4", "1.2.3.4-1.2.3.5",
    "fe80::1%eth0", "fe80::1%eth0/128", "fe80::%a\nflush ruleset", '2001:db8::%"}', "1.2.3.4%eth0",
]  # fmt: skip
BAD_TIMES = [-1, -1e-300, -1e308, -(2**63), NAN, INF, NEG_INF, OVERFLOW, HUGE_INT, Raw("-" + "9" * 400), Raw("-1e400")]
BAD_TEXT = ["", "x" * (rs.MAX_TEXT + 1), "\u00e9" * (rs.MAX_TEXT + 1), LONE_SURROGATE]
BAD_NAMES = ["", "a/b", "+", "#", "x" * 65, "la b", "lab\u0000", "lab\n", "\u00e9", LONE_SURROGATE]

# field -> (types it takes, values of those types it refuses)
RULESET_SPEC: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "schema": ((str,), ["", "iotguard.ruleset/2", "iotguard.ruleset/1 ", "IOTGUARD.RULESET/1", ENVELOPE_SCHEMA]),
    "fleet": ((str,), ["other", *BAD_NAMES]),
    "target": ((str,), ["dev2", *BAD_NAMES]),
    "version": ((int,), [0, -1, -(2**63), 2**53 + 1, 10**30, HUGE_INT, Raw("11.0"), Raw("1.1e1")]),
    "issued_at": ((int, float), BAD_TIMES),
    "rules": ((list,), [[None], [1], [[]], ["r1"], [True]]),
}
RULE_SPEC: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "id": ((str,), BAD_TEXT),
    "source": ((str,), BAD_CIDRS),
    "proto": ((str, type(None)), ["", "TCP", "sctp", "tcp ", "6", "any", LONE_SURROGATE]),
    "dport": ((int, type(None)), [-1, 65536, 2**64, HUGE_INT, Raw("23.0")]),
    "action": ((str,), ["", "DROP", "accept", "reject", "drop ", "block"]),
    "expires": ((int, float, type(None)), BAD_TIMES),
    "reason": ((str,), [BAD_TEXT[1], BAD_TEXT[2], LONE_SURROGATE]),
}


def new_version(rng: random.Random) -> int:
    return rng.choice([RULES_VERSION + 1, rng.randint(RULES_VERSION + 1, 2**53)])


def signed_rules(kind: str, category: str, doc: Any) -> Case:
    return Case(kind, category, body=render(doc))


def gen_ruleset_field(rng: random.Random, world: World, kind: str) -> Case:
    """One top-level field of the wrong type, with a refused value, missing, or an unknown field added."""
    doc = world.ruleset(kind, new_version(rng))
    name = rng.choice(list(RULESET_SPEC))
    types, bad = RULESET_SPEC[name]
    how = rng.randrange(4)
    if how == 0:
        doc[name], category = wrong_type(rng, types), "rule set field of wrong type"
    elif how == 1:
        doc[name], category = rng.choice(bad), "rule set field with bad value"
    elif how == 2:
        del doc[name]
        category = "rule set field missing"
    else:
        doc[rng.choice(["extra", "Version", "rule", "signature", "\u0000"])] = random_json(rng)
        category = "rule set extra field"
    return signed_rules(kind, category, doc)


def gen_rule_field(rng: random.Random, world: World, kind: str) -> Case:
    """One field of one rule of the wrong type, with a refused value, missing or extra; or a rule that is no object."""
    doc = world.ruleset(kind, new_version(rng))
    i = rng.randrange(len(doc["rules"]))
    name = rng.choice(list(RULE_SPEC))
    types, bad = RULE_SPEC[name]
    how = rng.randrange(5)
    if how == 0:
        doc["rules"][i][name], category = wrong_type(rng, types), "rule field of wrong type"
    elif how == 1:
        doc["rules"][i][name], category = rng.choice(bad), "rule field with bad value"
    elif how == 2:
        del doc["rules"][i][name]
        category = "rule field missing"
    elif how == 3:
        doc["rules"][i][rng.choice(["extra", "ID", "port", "to", ""])] = random_json(rng)
        category = "rule extra field"
    else:
        doc["rules"][i], category = wrong_type(rng, (dict,)), "rule not an object"
    return signed_rules(kind, category, doc)


def gen_bad_cidr(rng: random.Random, world: World, kind: str) -> Case:
    doc = world.ruleset(kind, new_version(rng))
    bad = rng.choice(BAD_CIDRS) if rng.random() < 0.7 else f"fe80::{rng.randrange(1 << 16):x}%{random_json(rng, 0)}"
    doc["rules"][rng.randrange(3)]["source"] = bad
    return signed_rules(kind, "bad CIDR", doc)


def gen_bad_expiry(rng: random.Random, world: World, kind: str) -> Case:
    doc = world.ruleset(kind, new_version(rng))
    if rng.random() < 0.8:
        doc["rules"][rng.randrange(3)]["expires"] = rng.choice(BAD_TIMES)
    else:
        doc["issued_at"] = rng.choice(BAD_TIMES)
    return signed_rules(kind, "bad expiry or issue time", doc)


def gen_port_without_protocol(rng: random.Random, world: World, kind: str) -> Case:
    doc = world.ruleset(kind, new_version(rng))
    doc["rules"][0].update(proto=rng.choice([None, "icmp"]), dport=rng.randint(0, 65535))
    return signed_rules(kind, "port without tcp/udp", doc)


def gen_duplicate_ids(rng: random.Random, world: World, kind: str) -> Case:
    doc = world.ruleset(kind, new_version(rng))
    doc["rules"].append({**world.rule(99, rng), "id": doc["rules"][rng.randrange(3)]["id"]})
    return signed_rules(kind, "duplicate rule ids", doc)


def gen_wrong_target(rng: random.Random, world: World, kind: str) -> Case:
    doc = world.ruleset(kind, new_version(rng))
    other = rs.ALL_DEVICES if kind == "rules-device" else DEVICE
    doc["target"] = rng.choice([other, "dev2", "dev10", DEVICE + "x"])
    return signed_rules(kind, "wrong target", doc)


def gen_wrong_fleet(rng: random.Random, world: World, kind: str) -> Case:
    doc = world.ruleset(kind, new_version(rng))
    doc["fleet"] = rng.choice(["prod", "LAB", "lab2", "la"])
    return signed_rules(kind, "wrong fleet", doc)


def gen_too_many_rules(rng: random.Random, world: World, kind: str) -> Case:
    rules = [{**world.rule(i, rng), "id": f"r{i}"} for i in range(rs.MAX_RULES + rng.choice([1, 2, 100]))]
    return signed_rules(kind, "too many rules", world.ruleset(kind, new_version(rng), rules))


def gen_signed_too_large(rng: random.Random, world: World, kind: str) -> Case:
    """Under the envelope limit but over the rule set's own MAX_BYTES once decoded."""
    rules = [{**world.rule(i, rng), "id": f"r{i}-" + "x" * 200, "reason": "y" * rs.MAX_TEXT} for i in range(2400)]
    return signed_rules(kind, "signed rule set too large", world.ruleset(kind, new_version(rng), rules))


def gen_signed_not_ruleset(rng: random.Random, world: World, kind: str) -> Case:
    """A valid signature over something that is no rule set: not JSON, not UTF-8, not an object, too deep."""
    how = rng.randrange(5)
    if how == 0:
        return Case(kind, "signed non-JSON", body=rng.choice([b"", b"{", b"NaN", b"{\"a\": NaN}", rng.randbytes(40)]))
    if how == 1:
        return Case(kind, "signed non-JSON", body=b'{"schema": "' + rng.choice(BAD_UTF8) + b'"}')
    if how == 2:
        return Case(kind, "signed non-object", body=render(wrong_type(rng, (dict,))))
    doc = world.ruleset(kind, new_version(rng))
    depth = rng.choice([rs.MAX_DEPTH, 20, 999, 1001, 100_000])
    doc["rules"] = deep(depth) if how == 3 else [{**doc["rules"][0], "reason": deep(depth)}]
    return signed_rules(kind, "signed deep rule set", doc)


def gen_replay(rng: random.Random, world: World, kind: str) -> Case:
    """Valid and signed, but not newer: an older version, or the current version with other rules."""
    if rng.random() < 0.6:
        return signed_rules(kind, "replayed older version", world.ruleset(kind, rng.randint(1, RULES_VERSION - 1)))
    doc = world.ruleset(kind, RULES_VERSION, [world.rule(i, rng) for i in range(rng.randint(0, 5), 8)])
    return signed_rules(kind, "same version, other rules", doc)


def gen_redelivered(rng: random.Random, world: World, kind: str) -> Case:
    # The retained copy of the applied rule set again (a reconnect): quietly ignored, by design.
    return Case(kind, "redelivered applied rule set", expect="ignored", body=render(world.ruleset(kind, RULES_VERSION)))


# --- generators: signed model pushes ----------------------------------------

PUSH_SPEC: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "schema": ((str,), ["", "iotguard.model-push/2", rs.SCHEMA, "iotguard.model-bundle/1"]),
    "version": ((int,), [0, -1, -(2**63), *range(1, MODEL_VERSION + 1), Raw("6.0"), HUGE_INT]),
    "bundle": ((dict,), [{}, {"schema": "iotguard.model-bundle/1"}]),
    "tflite_b64": ((str,), ["", "!!!!", "TFL3", "\u00e9", "AAAA=", "AA=A"]),
    "sha256": ((str,), ["", "0" * 64, "z" * 64, "0" * 1000, LONE_SURROGATE]),
}
# Dotted bundle paths -> (types taken, refused values).  Scales and zero points must be real int8 parameters.
BUNDLE_SPEC: dict[str, tuple[tuple[type, ...], list[Any]]] = {
    "schema": ((str,), ["", "iotguard.model-bundle/0", "iotguard.model-bundle/3"]),
    "feature_schema": ((str,), ["", "nbaiot-115/2"]),
    "labels": ((list,), [[], ["benign"], ["benign", "mirai_ack", "mirai_scan", "mirai_syn", "mirai_udpplain", "mirai_udp"]]),
    "model_sha256": ((str,), ["", "0" * 64]),
    "preprocessing": ((dict,), [{}, {"kind": "capped_quantile"}]),
    "preprocessing.kind": ((str,), ["", "quantile"]),
    "preprocessing.order": ((list,), [[], list(range(114)), [0] * 115]),
    "preprocessing.caps": ((list,), [[], ["x"] * 115]),
    "preprocessing.knots_x": ((list,), [[], [[1.0, 0.0]] * 115]),
    "preprocessing.knots_y": ((list,), [[], [[2.0]] * 115]),
    "quantization": ((dict,), [{}, {"input": {}}]),
    "quantization.input.scale": ((int, float), [0, -0.0078, OVERFLOW, NEG_INF]),
    "quantization.input.zero_point": ((int,), [128, -129, 10**30]),
    "quantization.output.scale": ((int, float), [0, -0.00390625, -1, OVERFLOW, NEG_INF]),
    "quantization.output.zero_point": ((int,), [128, -129, 10**30]),
    "self_test": ((dict,), [{}, {"features": []}, {"features": [], "int8": []}]),
    "self_test.features": ((list,), [[], [[0.0] * 114], [["x"] * 115]]),
    "self_test.int8": ((list,), [[], [[0] * 5], [[1, 0, 0, 0, 0, 0]] * 2]),
}


def gen_push_field(rng: random.Random, world: World, kind: str) -> Case:
    """A push field of the wrong type, with a refused value, missing, or an unknown field added."""
    name = rng.choice(list(PUSH_SPEC))
    how = rng.randrange(4)
    if how < 3:
        value, category = bad_field(rng, PUSH_SPEC[name], how, "push")
    else:
        name, value, category = rng.choice(["extra", "Version", "model", "bundle_b64"]), random_json(rng), "push extra field"
    return Case(kind, category, patch={name: to_patch(value)})


def bad_field(rng: random.Random, spec: tuple[tuple[type, ...], list[Any]], how: int, what: str) -> tuple[Any, str]:
    """(value, category) for a field given as (accepted types, refused values): ``how`` 0 a value of the wrong
    type, 1 a refused value, 2 the field deleted."""
    types, bad = spec
    if how == 0:
        return wrong_type(rng, types), f"{what} field of wrong type"
    if how == 1:
        return rng.choice(bad), f"{what} field with bad value"
    return {"$delete": True}, f"{what} field missing"


def to_patch(value: Any) -> Any:
    return {"$raw": value.text} if isinstance(value, Raw) else value


def gen_sha_mismatch(rng: random.Random, world: World, kind: str) -> Case:
    digest = hashlib.sha256(world.model_tflite).hexdigest()
    where = rng.choice(["sha256", "bundle.model_sha256", "both"])
    other = rng.choice([rng.randbytes(32).hex(), digest[:-1] + ("0" if digest[-1] != "0" else "1"), digest[:63], digest + "0"])
    patch = {p: other for p in (["sha256", "bundle.model_sha256"] if where == "both" else [where])}
    return Case(kind, "sha256 mismatch", patch=patch)


def gen_tflite_garbage(rng: random.Random, world: World, kind: str) -> Case:
    """Model bytes that are no usable model, with both sha256 fields matching them."""
    model = world.model_tflite
    how = rng.randrange(4)
    if how == 0:
        data = rng.randbytes(rng.choice([0, 4, 100, 5000]))
    elif how == 1:
        data = model[: rng.randrange(len(model))]  # truncated
    elif how == 2:
        data = bytes(len(model))  # zeros
    else:
        data = model[:4] + b"XXXX" + model[8:]  # the flatbuffer identifier (TFL3) changed
    digest = hashlib.sha256(data).hexdigest()
    patch = {"tflite_b64": base64.b64encode(data).decode(), "sha256": digest, "bundle.model_sha256": digest}
    return Case(kind, "garbage model bytes", patch=patch)


def gen_bundle_field(rng: random.Random, world: World, kind: str) -> Case:
    """A bundle metadata field (quantization and self-test included) of the wrong type, refused, or missing."""
    path = rng.choice(list(BUNDLE_SPEC))
    how = rng.randrange(3)
    value, category = bad_field(rng, BUNDLE_SPEC[path], how, "bundle")
    if path.startswith("quantization.") and how != 2:
        category = "bad quantization"
    return Case(kind, category, patch={f"bundle.{path}": to_patch(value)})


def gen_self_test_fails(rng: random.Random, world: World, kind: str) -> Case:
    """The expected output of one self-test row names another class."""
    rows = world.model_meta["self_test"]["int8"]
    i = rng.randrange(len(rows))
    row = [-128] * len(rows[i])
    row[(int(np.argmax(rows[i])) + rng.randint(1, len(row) - 1)) % len(row)] = 127
    return Case(kind, "self-test fails", patch={f"bundle.self_test.int8.{i}": row})


def gen_model_replay(rng: random.Random, world: World, kind: str) -> Case:
    return Case(kind, "replayed older model", patch={}, model_version=rng.randint(1, MODEL_VERSION))


# --- generators: topics the agent does not expect ----------------------------


def gen_foreign_topic(rng: random.Random, world: World, kind: str) -> Case:
    """Valid signed rule sets and models on topics that are not ours; random topic names; non-UTF-8 names."""
    good = [topic(PREFIX, FLEET, DEVICE, k) for k in ("alerts", "status", "rules/ack")] + [
        topic(PREFIX, FLEET, "dev2", "rules"), topic(PREFIX, "prod", DEVICE, "rules"), topic(PREFIX, "prod", "all", "rules"),
        topic("iotguard/v2", FLEET, DEVICE, "rules"), f"{PREFIX}/{FLEET}/{DEVICE}/rules/", f"{PREFIX}/{FLEET}/{DEVICE}/Rules",
        f"{PREFIX}/{FLEET}/{DEVICE}/model/x", f"/{PREFIX}/{FLEET}/{DEVICE}/rules", "$SYS/broker/uptime", "#", "+", "",
    ]  # fmt: skip
    how = rng.randrange(3)
    if how == 0:
        name = rng.choice(good).encode()
    elif how == 1:
        name = "".join(rng.choice(string.printable + "\u00e9/#+") for _ in range(rng.randrange(40))).encode()
    else:
        name = world.topic(rng.choice(["rules-device", "rules-all", "model"]))
        pos = rng.randrange(len(name) + 1)
        name = name[:pos] + rng.choice(BAD_UTF8) + name[pos:]
    if rng.random() < 0.5:
        payload = world.signed(render(world.ruleset("rules-all", RULES_VERSION + 1)))
    elif rng.random() < 0.5:
        payload = world.signed(render(world.model_push(MODEL_VERSION + 1)))
    else:
        payload = rng.randbytes(rng.randrange(100))
    return Case("topic", "unexpected topic", expect="ignored", topic=name, raw=payload)


# kind -> category generator -> weight.  Heavy ones (big payloads, interpreters) get small weights.
Generator = Callable[[random.Random, World, str], Case]
ENVELOPE: dict[Generator, float] = {
    gen_random_bytes: 4, gen_invalid_utf8: 3, gen_json_syntax: 6, gen_not_an_object: 2, gen_envelope_fields: 6,
    gen_unknown_key: 3, gen_bad_base64: 4, gen_bad_signature: 4, gen_truncated_signature: 3, gen_huge: 0.02,
    gen_deep_envelope: 1, gen_empty: 0.5,
}  # fmt: skip
RULES: dict[Generator, float] = {
    **ENVELOPE, gen_ruleset_field: 10, gen_rule_field: 14, gen_bad_cidr: 6, gen_bad_expiry: 5,
    gen_port_without_protocol: 1, gen_duplicate_ids: 1, gen_wrong_target: 2, gen_wrong_fleet: 1,
    gen_too_many_rules: 0.05, gen_signed_too_large: 0.03, gen_signed_not_ruleset: 3, gen_replay: 3, gen_redelivered: 1,
}  # fmt: skip
MODEL: dict[Generator, float] = {
    **ENVELOPE, gen_push_field: 12, gen_sha_mismatch: 4, gen_tflite_garbage: 2, gen_bundle_field: 16,
    gen_self_test_fails: 3, gen_model_replay: 2,
}  # fmt: skip
GENERATORS: dict[str, dict[Generator, float]] = {
    "rules-device": RULES, "rules-all": RULES, "model": MODEL, "topic": {gen_foreign_topic: 1},
}  # fmt: skip
# Generators cheap enough for a property test (no multi-megabyte payloads, no recursion-limit documents).
HEAVY = {gen_huge, gen_too_many_rules, gen_signed_too_large}


def cases(kind: str, count: int, rng: random.Random, world: World) -> Iterator[Case]:
    gens = list(GENERATORS[kind])
    weights = [GENERATORS[kind][g] for g in gens]
    for _ in range(count):
        yield rng.choices(gens, weights)[0](rng, world, kind)
