"""Full-integer int8 quantisation of the trained CNN (int8 input and output)."""

from __future__ import annotations

import numpy as np

from .train import _tf


def representative_sample(x: np.ndarray, y: np.ndarray, per_class: int = 300, seed: int = 0) -> np.ndarray:
    """Preprocessed rows from every class, so the int8 ranges cover attacks and benign traffic alike."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        picks.append(rng.choice(idx, min(per_class, len(idx)), replace=False))
    return x[np.sort(np.concatenate(picks))]


def to_int8_tflite(model, representative: np.ndarray) -> bytes:
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def samples():
        for row in representative:
            yield [row[None, ...].astype(np.float32)]

    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # tflite-runtime 2.14 (the armv7 runtime) crashes in gemmlowp on per-channel Dense layers with
    # batches above 1 (seen under QEMU for aarch64 and armv7); per-tensor Dense runs everywhere.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    return converter.convert()


def quant_params(tflite: bytes) -> dict:
    """Input and output (scale, zero point) as the converter chose them."""
    tf = _tf()
    interpreter = tf.lite.Interpreter(model_content=tflite)
    inp = interpreter.get_input_details()[0]["quantization"]
    out = interpreter.get_output_details()[0]["quantization"]
    return {
        "input": {"scale": float(inp[0]), "zero_point": int(inp[1])},
        "output": {"scale": float(out[0]), "zero_point": int(out[1])},
    }
