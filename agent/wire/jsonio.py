"""Canonical JSON out, bounded JSON in.

Everything that crosses the network or sits in a state file is JSON.  What we
write is canonical (one byte string per value, so a signature over it is
stable); what we read is untrusted, so ``load_json`` bounds its size and
nesting and says in plain words why a document was refused.  Kept apart from
``signing`` so that reading rule files does not load the crypto library.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_BYTES = 8 * 1024 * 1024  # a model bundle is tens of KB; rule sets at most 1 MiB
DEFAULT_MAX_DEPTH = 16  # our documents nest 4 levels; anything far deeper is hostile



def canonical_json(obj: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def json_depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, iteratively (a hostile document must not recurse us)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in value)
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(data: bytes | str, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse untrusted JSON with bounds on size and nesting; ValueError with the reason otherwise."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise ValueError(f"document too large: {len(raw)} bytes > limit {max_bytes}")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nesting too deep (limit {max_depth})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if json_depth(obj) > max_depth:
        raise ValueError(f"nesting too deep (limit {max_depth})")
    return obj
