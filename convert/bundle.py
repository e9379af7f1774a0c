"""Write a model bundle (DESIGN 6): ``NAME.tflite`` plus ``NAME.json`` with everything the board needs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from agent.capture.packets import LABELS
from agent.detect.model import BUNDLE_SCHEMA, Bundle, parse_bundle
from agent.detect.preprocess import Preprocessor
from agent.features.columns import FEATURE_SCHEMA
from agent.util import write_atomically


def bundle_metadata(
    tflite: bytes,
    name: str,
    preprocessor: Preprocessor,
    quantization: dict,
    data_digest: str,
    metrics: dict,
    training: dict,
) -> dict:
    sha = hashlib.sha256(tflite).hexdigest()
    return {
        "schema": BUNDLE_SCHEMA,
        "version": f"{name}-{sha[:12]}",
        "feature_schema": FEATURE_SCHEMA,
        "labels": list(LABELS),
        "model_file": f"{name}.tflite",
        "model_sha256": sha,
        "model_bytes": len(tflite),
        "preprocessing": preprocessor.to_json(),
        "quantization": quantization,
        "training_data_sha256": data_digest,
        "training": training,
        "metrics": metrics,
    }


def write_bundle(directory: Path, name: str, tflite: bytes, meta: dict) -> Bundle:
    """Validate, then write the model first and the JSON last (the JSON names the model)."""
    bundle = parse_bundle(meta, tflite)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / f"{name}.tflite", tflite, mode=0o644)
    write_atomically(directory / f"{name}.json", (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode(), mode=0o644)
    return bundle
