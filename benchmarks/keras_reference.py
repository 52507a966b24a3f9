"""The Keras notebook's training pipeline, as the reference that `bench_train.py keras` measures pneumo against.

Runs under any Python that has TensorFlow (a separate environment is fine: `bench_train.py`
starts it as a subprocess, so the two frameworks never share a thread pool). It prints one
JSON line: {"images_per_s": ..., "steps": ..., "tensorflow": ...}.

The pipeline is the notebook's: file paths -> tf.data map(decode JPEG, 3 channels, float,
resize to 180x180) with AUTOTUNE -> batch 16 -> prefetch, the separable-convolution CNN,
Adam 1e-3, binary cross-entropy with class weights, and accuracy/precision/recall as metrics.
Images are decoded in every step, as the notebook's first epoch does; with `--cache`, the
dataset is cached in memory as the notebook's `prepare_for_training` does, and the second
epoch, which reads the cache, is timed.

    python benchmarks/keras_reference.py --data ../shared/data --steps 60 [--cache]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_model(size: int):
    """The notebook's network, as it wrote it."""
    import tensorflow as tf

    layers = tf.keras.layers

    def conv_block(filters: int):
        return tf.keras.Sequential(
            [
                layers.SeparableConv2D(filters, 3, activation="relu", padding="same"),
                layers.SeparableConv2D(filters, 3, activation="relu", padding="same"),
                layers.BatchNormalization(),
                layers.MaxPool2D(),
            ]
        )

    def dense_block(units: int, dropout: float):
        return tf.keras.Sequential([layers.Dense(units, activation="relu"), layers.BatchNormalization(), layers.Dropout(dropout)])

    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(size, size, 3)),
            layers.Conv2D(16, 3, activation="relu", padding="same"),
            layers.Conv2D(16, 3, activation="relu", padding="same"),
            layers.MaxPool2D(),
            conv_block(32),
            conv_block(64),
            conv_block(128),
            layers.Dropout(0.2),
            conv_block(256),
            layers.Dropout(0.2),
            layers.Flatten(),
            dense_block(512, 0.7),
            dense_block(128, 0.5),
            dense_block(64, 0.3),
            layers.Dense(1, activation="sigmoid"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the data folder (with chest_xray/train)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps, after 10 warm-up steps")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=180)
    parser.add_argument("--cache", action="store_true", help="cache the decoded images and time the second epoch")
    args = parser.parse_args()

    import tensorflow as tf

    train = args.data / "chest_xray" / "train"
    files = sorted(str(p) for p in train.glob("*/*.jpeg"))
    random.Random(0).shuffle(files)
    labels = [1 if "/PNEUMONIA/" in f else 0 for f in files]
    n_pos = sum(labels)
    weights = {0: len(labels) / (2 * (len(labels) - n_pos)), 1: len(labels) / (2 * n_pos)}

    def process(path, label):
        image = tf.image.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.convert_image_dtype(image, tf.float32)
        return tf.image.resize(image, [args.size, args.size]), label

    warmup = 10
    n = (warmup + args.steps) * args.batch
    ds = tf.data.Dataset.from_tensor_slices((files[:n], labels[:n])).map(process, num_parallel_calls=tf.data.AUTOTUNE)
    if args.cache:
        ds = ds.cache()
    ds = ds.batch(args.batch).prefetch(tf.data.AUTOTUNE)

    model = build_model(args.size)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        metrics=["binary_accuracy", tf.keras.metrics.Precision(name="precision"), tf.keras.metrics.Recall(name="recall")],
    )

    class Clock(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.times.append(time.perf_counter())

    clock = Clock()
    epochs = 2 if args.cache else 1
    model.fit(ds, epochs=epochs, class_weight=weights, callbacks=[clock], verbose=0)
    steps_per_epoch = len(clock.times) // epochs
    # from the end of the last warm-up step (of the timed epoch) to the end of its last step
    timed = clock.times[(epochs - 1) * steps_per_epoch + warmup - 1 :]
    steps = len(timed) - 1
    print(
        json.dumps(
            {"images_per_s": steps * args.batch / (timed[-1] - timed[0]), "steps": steps, "cache": args.cache, "tensorflow": tf.__version__}
        )
    )


if __name__ == "__main__":
    main()
