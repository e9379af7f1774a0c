"""The model stage: load a model bundle and classify feature rows with an int8 TFLite interpreter.

A bundle is a JSON file beside a ``.tflite`` file (DESIGN 6).  Bundles of schema 2 hold a model that
outputs logits, turned into probabilities here (after the protocol restriction); schema 1 models output
softmax probabilities and are still read.  It is refused,
with a message saying why, when its schema, feature schema, labels or the
model's sha256 do not match.  The interpreter comes from whichever runtime is
installed: ai-edge-litert, else tflite-runtime, else TensorFlow (or the one
named explicitly), so the board never needs TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.preprocess import GRID_SHAPE, Preprocessor, repeated_rows
from agent.detect.protocol_classes import restrict_scores
from agent.features.columns import FEATURE_SCHEMA
from agent.util import hash_words

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = "iotguard.model-bundle/2"  # what convert writes: the model outputs logits
# Bundle schemas this agent reads -> what their model outputs.  An agent that reads only schema 1 refuses a
# schema 2 bundle instead of taking its logits for probabilities.
READ_SCHEMAS = {"iotguard.model-bundle/1": "probabilities", BUNDLE_SCHEMA: "logits"}
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "model" / "default.json"  # agent/model/
# Rows per interpreter call: the interpreter's tensors and the preprocessing temporaries scale with it.
INFER_BATCH = 1024
# Packets of one flood or one steady stream mostly reach the model with the same int8 input: within a span of
# this many packets each distinct input runs once (a row's output depends on that row alone: int8 arithmetic).
DISTINCT_SPAN = 8192
RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
_RUNTIME_MODULES = {  # runtime -> (module, attribute path of its Interpreter class)
    "ai-edge-litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite-runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
}


class BundleError(Exception):
    """The model bundle is unusable; the message says why."""


def restrict_logits(logits: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities from the model's logits: a softmax over the classes ``allowed`` (None: all; see
    agent.detect.protocol_classes), 0 for the rest (a row allowing nothing: benign).  The same as
    ``restrict_scores`` of the full softmax, without its rounding: an int8 softmax output has steps of 1/256,
    and the allowed classes of a row can all round to 0."""
    z = np.asarray(logits, dtype=np.float64)
    if allowed is not None:
        allowed = np.array(allowed, dtype=bool)
        allowed[~allowed.any(axis=1), 0] = True
        z = np.where(allowed, z, -np.inf)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def load_interpreter_class(runtime: str = "auto"):
    """(runtime name, Interpreter class) for the named runtime, or the first installed one."""
    names = RUNTIMES if runtime == "auto" else (runtime,)
    errors = []
    for name in names:
        if name not in _RUNTIME_MODULES:
            raise BundleError(f"unknown TFLite runtime {name!r} (choose from {', '.join(RUNTIMES)} or auto)")
        module_name, attribute = _RUNTIME_MODULES[name]
        try:
            found = importlib.import_module(module_name)
            for part in attribute.split("."):
                found = getattr(found, part)
            return name, found
        except Exception as exc:  # ImportError, or numpy ABI errors inside the wheel
            errors.append(f"{name}: {exc}")
    raise BundleError("no TFLite runtime could be loaded (" + "; ".join(errors) + "); install ai-edge-litert or tflite-runtime")


def installed_runtimes() -> list[str]:
    """Runtimes whose package is installed (found without importing it: TensorFlow's import is slow)."""
    import importlib.util

    return [name for name in RUNTIMES if importlib.util.find_spec(_RUNTIME_MODULES[name][0].split(".")[0]) is not None]


@dataclass
class QuantParams:
    scale: float
    zero_point: int


@dataclass
class Bundle:
    meta: dict  # the bundle's JSON without its preprocessing table, which lives in ``preprocessor``
    tflite: bytes
    preprocessor: Preprocessor
    input_q: QuantParams
    output_q: QuantParams
    path: Path | None = None

    @property
    def output(self) -> str:
        """What the model outputs: "logits" or "probabilities" (softmax)."""
        return READ_SCHEMAS[self.meta["schema"]]

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    def full_meta(self) -> dict:
        """The metadata as written to disk, preprocessing table included."""
        return {**self.meta, "preprocessing": self.preprocessor.to_json()}


def parse_bundle(meta: dict, tflite: bytes, path: Path | None = None) -> Bundle:
    """Validate bundle metadata against the model bytes; raises BundleError with the reason."""
    where = f" ({path})" if path else ""
    if not isinstance(meta, dict):
        raise BundleError(f"bundle metadata must be a JSON object{where}")
    if not isinstance(meta.get("schema"), str) or meta["schema"] not in READ_SCHEMAS:  # a list is no dict key
        raise BundleError(f"bundle schema is {meta.get('schema')!r}, this agent reads {' or '.join(map(repr, READ_SCHEMAS))}{where}")
    if meta.get("feature_schema") != FEATURE_SCHEMA:
        raise BundleError(
            f"bundle was trained on features {meta.get('feature_schema')!r}, this agent computes {FEATURE_SCHEMA!r}{where}"
        )
    labels = meta.get("labels")
    if not isinstance(labels, list) or tuple(labels) != LABELS:
        raise BundleError(f"bundle labels {meta.get('labels')!r} differ from {list(LABELS)!r}{where}")
    digest = hashlib.sha256(tflite).hexdigest()
    if meta.get("model_sha256") != digest:
        raise BundleError(f"model sha256 {digest} does not match the bundle's {meta.get('model_sha256')!r}{where}")
    try:
        pre = Preprocessor.from_json(meta["preprocessing"])
        q = meta["quantization"]
        input_q, output_q = _quant_params(q["input"], "input"), _quant_params(q["output"], "output")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # whatever malformed JSON raises
        raise BundleError(f"bundle metadata is incomplete or malformed: {exc}{where}") from exc
    # Thirty thousand knot values as Python floats would cost the board a megabyte: keep the arrays only.
    meta = {k: v for k, v in meta.items() if k != "preprocessing"}
    return Bundle(meta=meta, tflite=tflite, preprocessor=pre, input_q=input_q, output_q=output_q, path=path)


def _quant_params(q: dict, which: str) -> QuantParams:
    """int8 quantisation parameters: a finite positive scale and a zero point in -128..127.

    Checked here because the self-test cannot: it compares raw int8 outputs, so an
    output scale of 0 or -1 passes it and then zeroes or inverts every confidence.
    """
    scale, zero_point = q["scale"], q["zero_point"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{which} scale must be a finite positive number, got {scale!r}")
    if isinstance(zero_point, bool) or not isinstance(zero_point, int) or not -128 <= zero_point <= 127:
        raise ValueError(f"{which} zero point must be an integer in -128..127, got {zero_point!r}")
    return QuantParams(float(scale), zero_point)


def load_bundle(path: str | Path = DEFAULT_BUNDLE) -> Bundle:
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"model bundle {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"model bundle {path} is not valid JSON: {exc}") from None
    model_file = path.with_name(str(meta.get("model_file", "")))
    if not meta.get("model_file") or not model_file.is_file():
        raise BundleError(f"model file {model_file} named by {path} not found")
    return parse_bundle(meta, model_file.read_bytes(), path)


def distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(first, inverse)`` with ``rows[first][inverse] == rows``: the distinct rows of an (m, k) int8 array.

    Rows are grouped by a 64-bit hash of their bytes, and every row is then compared with its group's first
    row: after a hash collision (or with no repeats at all) every row stands for itself (``inverse`` None).
    """
    m, k = rows.shape
    padded = np.zeros((m, -(-k // 8) * 8), dtype=np.uint8)
    padded[:, :k] = rows.view(np.uint8)
    words = padded.view(np.uint64)
    _, first, inverse = np.unique(hash_words(7, *words.T), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(first) == m or not np.array_equal(rows[first][inverse], rows):
        return np.arange(m), None
    return first, inverse


class Classifier:
    """int8 TFLite inference in fixed-size batches: ``predict_scores`` / ``predict``."""

    def __init__(self, bundle: Bundle, runtime: str = "auto", batch_size: int = INFER_BATCH, num_threads: int = 1) -> None:
        self.bundle = bundle
        self.runtime, interpreter_class = load_interpreter_class(runtime)
        self.batch_size = batch_size
        try:
            self.interpreter = interpreter_class(model_content=bundle.tflite, num_threads=num_threads)
        except TypeError:  # older runtimes without num_threads
            self.interpreter = interpreter_class(model_content=bundle.tflite)
        inp = self.interpreter.get_input_details()[0]
        if inp["dtype"] != np.int8 or tuple(inp["shape"][1:]) != GRID_SHAPE:
            raise BundleError(f"model input must be int8 of shape (batch, {GRID_SHAPE}), got {inp['dtype']} {inp['shape']}")
        self.interpreter.resize_tensor_input(inp["index"], [batch_size, *GRID_SHAPE])
        self.interpreter.allocate_tensors()
        self._in = inp["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]
        self.distinct = True  # run each distinct input row once per span (False: every row, for the tests)
        log.info("model %s on %s (batch %d)", bundle.version, self.runtime, batch_size)

    def quantize(self, features: np.ndarray) -> np.ndarray:
        """Raw (n, 115) features -> int8 model inputs (n, 5, 23)."""
        q = self.bundle.input_q
        return self.bundle.preprocessor.quantize(features, q.scale, q.zero_point)

    def predict_int8(self, features: np.ndarray) -> np.ndarray:
        """Raw int8 outputs (n, 6), exactly as the interpreter returns them (logits or probabilities, see
        ``Bundle.output``; ``scores_from_int8`` makes probabilities of either)."""
        n = len(features)
        out = np.empty((n, len(LABELS)), dtype=np.int8)
        width = int(np.prod(GRID_SHAPE))
        rows = np.empty((min(n, DISTINCT_SPAN), width), dtype=np.int8)
        for lo in range(0, n, DISTINCT_SPAN):
            span_features = features[lo : lo + DISTINCT_SPAN]
            # Runs of rows alike once capped (a spoofed flood's) are preprocessed once, then every distinct input.
            runs, run_of = (repeated_rows(span_features, self.bundle.preprocessor.caps) if self.distinct
                            else (None, None))  # fmt: skip
            todo = span_features if run_of is None else span_features[runs]
            span = rows[: len(todo)]
            # Preprocess one inference batch at a time: bounded temporaries however large the input.
            for at in range(0, len(span), self.batch_size):
                part = self.quantize(todo[at : at + self.batch_size])
                span[at : at + len(part)] = part.reshape(len(part), width)
            first, inverse = distinct_rows(span) if self.distinct else (np.arange(len(span)), None)
            results = self._invoke(span[first])
            results = results if inverse is None else results[inverse]
            out[lo : lo + len(span_features)] = results if run_of is None else results[run_of]
        return out

    def _invoke(self, rows: np.ndarray) -> np.ndarray:
        """The interpreter over (m, 115) int8 input rows, in fixed-size batches: raw int8 outputs (m, 6)."""
        out = np.empty((len(rows), len(LABELS)), dtype=np.int8)
        full = np.zeros((self.batch_size, *GRID_SHAPE), dtype=np.int8)
        for lo in range(0, len(rows), self.batch_size):
            chunk = rows[lo : lo + self.batch_size]
            full[: len(chunk)] = chunk.reshape(-1, *GRID_SHAPE)
            full[len(chunk) :] = 0
            self.interpreter.set_tensor(self._in, full)
            self.interpreter.invoke()
            out[lo : lo + len(chunk)] = self.interpreter.get_tensor(self._out)[: len(chunk)]
        return out

    def dequantize(self, int8_out: np.ndarray) -> np.ndarray:
        """The model's int8 outputs as floats: logits or probabilities, as ``Bundle.output`` says."""
        q = self.bundle.output_q
        return (int8_out.astype(np.float32) - q.zero_point) * q.scale

    def scores_from_int8(self, int8_out: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (n, 6) from ``predict_int8``'s outputs; with ``allowed`` ((n, 6) bool, see
        agent.detect.protocol_classes) restricted to the classes each row's protocol allows (summing to 1)."""
        out = self.dequantize(int8_out)
        if self.bundle.output == "logits":
            return restrict_logits(out, allowed)
        return out if allowed is None else restrict_scores(out, allowed)

    def predict_scores(self, features: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities (n, 6); with ``allowed`` ((n, 6) bool, see agent.detect.protocol_classes) restricted to
        the classes each row's protocol allows."""
        return self.scores_from_int8(self.predict_int8(features), allowed)

    def predict(self, features: np.ndarray, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(label index, confidence) per row."""
        scores = self.predict_scores(features, allowed)
        return scores.argmax(axis=1), scores.max(axis=1)

    def self_test(self) -> SelfTest | None:
        """Run the bundle's self-test rows (int8 outputs recorded on the build machine) on this runtime;
        None when the bundle carries none.  The board and the build machine must agree on every label."""
        test = self.bundle.meta.get("self_test")
        if not test:
            return None
        got = self.predict_int8(np.asarray(test["features"], dtype=np.float64)).astype(int)
        want = np.asarray(test["int8"], dtype=int)
        return SelfTest(len(got), bool((got.argmax(axis=1) == want.argmax(axis=1)).all()), int(np.abs(got - want).max()))


@dataclass(frozen=True)
class SelfTest:
    rows: int
    same_labels: bool  # every row gets the label it got on the build machine
    worst_step: int  # largest difference of an int8 output, in quantisation steps
