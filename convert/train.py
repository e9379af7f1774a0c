"""Train the compact CNN with Keras (build time only; needs tensorflow-cpu).

The network sees each packet's features as a grid of 5 decay rates x 23
statistics (``agent.detect.preprocess``) and convolves across the decay rates, so the
same filters compare fast and slow views of a stream.  About 10k parameters:
small enough for a 20 KB int8 model on a Pi Zero.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from agent.capture.packets import LABELS
from agent.detect.preprocess import GRID_SHAPE, Preprocessor

log = logging.getLogger(__name__)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def set_determinism(seed: int) -> None:
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


def build_model(filters: int = 24, hidden: int = 32):
    """Features grid in, six class logits out (the int8 model)."""
    tf = _tf()
    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=GRID_SHAPE, name="features")
    x = layers.Conv1D(filters, 2, activation="relu", name="conv_rates_1")(inputs)
    x = layers.Conv1D(filters, 2, activation="relu", name="conv_rates_2")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hidden, activation="relu")(x)
    # Logits, not probabilities: the agent restricts them to the classes the header allows and takes the softmax
    # in float (agent.detect.model.restrict_logits).  An int8 softmax output has steps of 1/256, and the
    # restriction after it rescales that rounding: it cost 1.3 points of test accuracy against 0.1 for logits.
    outputs = layers.Dense(len(LABELS), name="logits")(x)
    return tf.keras.Model(inputs, outputs, name="iotguard_cnn")


@dataclass
class Trained:
    model: object  # keras.Model
    preprocessor: Preprocessor
    seconds: float
    epochs: int


def class_weights(y: np.ndarray) -> dict[int, float]:
    counts = np.bincount(y, minlength=len(LABELS)).astype(float)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts[present].sum() / (present.sum() * counts[present])
    return {i: float(w[i]) for i in range(len(LABELS))}


RAW_LOSS_WEIGHT = 0.3


def restricted_training_model(base):
    """``base`` with a second input, the classes each row's protocol allows: its scores restricted to those
    and rescaled, as the agent does on the board.  The network then need not tell apart what the features
    cannot (a UDP flood from an ACK flood of the same sizes) and the header tells for sure.  The raw
    scores keep a smaller loss of their own: restricted alone, the network may park its mass on classes
    the header rules out, and rows without a header (N-BaIoT CSVs: every class allowed) would see it.
    Only ``base`` (features in, six logits out) becomes the int8 model; the softmax is the agent's."""
    tf = _tf()

    class Restrict(tf.keras.layers.Layer):
        def call(self, scores, allowed):
            kept = scores * allowed
            return kept / (tf.keras.ops.sum(kept, axis=1, keepdims=True) + 1e-7)

    features = tf.keras.Input(shape=GRID_SHAPE, name="features")
    allowed = tf.keras.Input(shape=(len(LABELS),), name="allowed")
    raw = tf.keras.layers.Softmax(name="raw")(base(features))
    restricted = Restrict(name="restricted")(raw, allowed)
    model = tf.keras.Model([features, allowed], {"restricted": restricted, "raw": raw})
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=2e-3),
        loss={"restricted": "sparse_categorical_crossentropy", "raw": "sparse_categorical_crossentropy"},
        loss_weights={"restricted": 1.0, "raw": RAW_LOSS_WEIGHT},
        metrics={"restricted": ["accuracy"]},
    )
    return model


def train_cnn(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    seed: int = 1,
    epochs: int = 40,
    batch_size: int = 512,
    verbose: int = 2,
    allowed_train: np.ndarray | None = None,
    allowed_val: np.ndarray | None = None,
) -> Trained:
    """``allowed_*``: (n, 6) the classes each row's protocol allows (None: all)."""
    tf = _tf()
    set_determinism(seed)
    pre = Preprocessor.fit(X_train)
    xt, xv = pre.transform(X_train), pre.transform(X_val)
    at = np.ones((len(xt), len(LABELS)), np.float32) if allowed_train is None else allowed_train.astype(np.float32)
    av = np.ones((len(xv), len(LABELS)), np.float32) if allowed_val is None else allowed_val.astype(np.float32)
    model = build_model()
    trainer = restricted_training_model(model)
    # Stop on validation accuracy, not loss: validation captures draw attack options the training ones did not,
    # and a few confidently wrong captures make the loss climb while the accuracy still improves.
    stop = tf.keras.callbacks.EarlyStopping(monitor="val_restricted_accuracy", mode="max", patience=5, restore_best_weights=True)
    start = time.perf_counter()
    weights = class_weights(y_train)
    history = trainer.fit(
        [xt, at],
        {"restricted": y_train, "raw": y_train},
        validation_data=([xv, av], {"restricted": y_val, "raw": y_val}),
        epochs=epochs,
        batch_size=batch_size,
        sample_weight=np.array([weights[i] for i in range(len(LABELS))])[y_train],
        callbacks=[stop],
        shuffle=True,
        verbose=verbose,  # Keras' own progress display: one line per epoch
    )
    seconds = time.perf_counter() - start
    return Trained(model=model, preprocessor=pre, seconds=seconds, epochs=len(history.history["loss"]))
