"""Is the built-in synthetic task learnable? Trains small models on it for a fixed time.

Trains on the synthetic source's train split (8192 examples, 10 classes, rendered at 160 px,
random-resized crop + flip to 64 px) for ``--seconds`` of wall time per model, then reports
top-1 accuracy on the (disjoint) 1024-example validation split. Prints a table; the numbers
go to BENCHMARKS.md ("Input pipeline").

Usage: python benchmarks/synthetic_learnability.py [--models cnn,effnet] [--seconds 120]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from effnet_tf import data  # noqa: E402


def small_cnn(num_classes):
    layers = [keras.Input((None, None, 3)), keras.layers.Rescaling(1 / 255.0)]
    for filters in (16, 32, 64, 128):
        layers += [keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
                   keras.layers.BatchNormalization(), keras.layers.ReLU(),
                   keras.layers.MaxPooling2D()]
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_classes)]
    return keras.Sequential(layers, name="small_cnn")


def effnet(num_classes):
    import effnet_tf
    return effnet_tf.build_model("efficientnetv2-b0", num_classes=num_classes, width=0.25,
                                 depth=0.5, classifier_activation=None, dropout_rate=0.1,
                                 drop_connect_rate=0.0)


class StopAfter(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.start, self.batches = seconds, None, 0

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cnn,effnet")
    parser.add_argument("--seconds", type=float, default=120.0, help="training wall time")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--randaug", type=float, default=0.0, help="RandAugment magnitude")
    args = parser.parse_args(argv)
    source = data.get_source("synthetic", num_classes=10, seed=0)
    builders = {"cnn": small_cnn, "effnet": effnet}
    print(f"| model | params | train s | images seen | val top-1 |\n|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        model = builders[name](source.num_classes)
        model.compile(optimizer=keras.optimizers.Adam(2e-3),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        train = data.build_dataset(source, "train", image_size=args.size,
                                   global_batch_size=args.batch, seed=0,
                                   randaug_magnitude=args.randaug,
                                   randaug_layers=2 if args.randaug else 0)
        val = data.build_dataset(source, "validation", image_size=args.size,
                                 global_batch_size=args.batch, training=False)
        steps = 8192 // args.batch
        stop = StopAfter(args.seconds)
        start = time.perf_counter()
        model.fit(train, epochs=1000, steps_per_epoch=steps, verbose=0, callbacks=[stop])
        seconds = time.perf_counter() - start
        seen = stop.batches * args.batch
        _, accuracy = model.evaluate(val, verbose=0)
        print(f"| {model.name} | {model.count_params():,} | {seconds:.0f} | {seen:,} | "
              f"{accuracy:.3f} |", flush=True)


if __name__ == "__main__":
    main()
