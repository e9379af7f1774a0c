"""Make tests/data/tiny_int8.tflite: a few-KB full-integer int8 model for cross-architecture tests.

The QEMU tests run this model on aarch64 and armv7 and require the same output bytes as on
x86_64, so it exercises the int8 kernels the real detector uses (Conv1D, ReLU, pooling,
Dense, Softmax) without depending on the trained model.  Weights and the calibration data
come from fixed seeds; re-running the script gives an equivalent (not necessarily
byte-identical) file.

Dense layers are quantised per tensor, as the board's runtimes need: TensorFlow >= 2.16
quantises them per channel by default, and tflite-runtime 2.14 (the only release, and the
armv7 runtime) then dereferences a null pointer in gemmlowp for any batch larger than one on
aarch64 and armv7 (seen under QEMU, tests/agent/test_qemu.py).

Committed output: run once, by hand, with TensorFlow installed:

    python tests/data/make_tiny_model.py
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

N_FEATURES = 16
N_CLASSES = 6
OUT = Path(__file__).resolve().parent / "tiny_int8.tflite"


def build_model() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(7)
    inputs = tf.keras.Input(shape=(N_FEATURES,), name="features")
    x = tf.keras.layers.Reshape((N_FEATURES, 1))(inputs)
    x = tf.keras.layers.Conv1D(4, 3, activation="relu")(x)
    x = tf.keras.layers.MaxPooling1D(2)(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(8, activation="relu")(x)
    outputs = tf.keras.layers.Dense(N_CLASSES, activation="softmax", name="scores")(x)
    return tf.keras.Model(inputs, outputs)


def representative_data():
    rng = np.random.default_rng(11)
    for _ in range(64):
        yield [rng.normal(0.0, 2.0, size=(1, N_FEATURES)).astype(np.float32)]


def main() -> None:
    converter = tf.lite.TFLiteConverter.from_keras_model(build_model())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_data
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    OUT.write_bytes(converter.convert())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
