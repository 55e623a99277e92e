"""``effnet-train`` / ``python -m effnet_tf.main``: train, evaluate or export an EfficientNet.

Examples::

    effnet-train --config=configs/demo.yaml                     # the README's main job (CPU)
    effnet-train --config=configs/imagenet_efficientnetv2_s.yaml --tpu=my-tpu \\
        --model_dir=gs://bucket/runs/v2s --params_override='data.name=tfrecord:gs://bucket/imagenet'
    effnet-train --model=efficientnetv2-b0 --params_override='train.epochs=30,data.name=tfds:cifar10' \\
        --model_dir=runs/cifar
    effnet-train --mode=eval --config=configs/demo.yaml --model_dir=runs/demo

Configuration: dataclass defaults, then the ``--config`` YAML files in order, then
``--params_override``, then the explicit flags below. The resolved config is written to
``<model_dir>/config.yaml`` before training starts.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, List, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from effnet_tf import config as config_lib  # noqa: E402
from effnet_tf.config.schema import MODES, PRECISIONS, STRATEGIES  # noqa: E402
from effnet_tf.run.failures import (  # noqa: E402,F401  (the exit codes are part of this CLI)
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_NON_FINITE,
    EXIT_PREEMPTED,
    describe,
)
from effnet_tf.storage.run_directory import RunDirectory  # noqa: E402

FLAGS = flags.FLAGS

VERBOSE_ENV = "EFFNET_VERBOSE"  # set to 1: failures print their traceback too (as --verbose)


def define_flags() -> None:
    """Defines the driver's flags (idempotent)."""
    if "params_override" in FLAGS:
        return
    flags.DEFINE_enum("mode", None, list(MODES), "What to run (default: runtime.mode, train_and_eval).")
    flags.DEFINE_string("model", None, "Registry name of the variant, e.g. efficientnetv2-s (model.name).")
    flags.DEFINE_string("blocks", None, "Comma-separated block strings of a custom architecture (model.blocks).")
    flags.DEFINE_float("width", None, "Width coefficient (model.width).")
    flags.DEFINE_float("depth", None, "Depth coefficient (model.depth).")
    flags.DEFINE_multi_string("config", [], "YAML config file(s); later files override earlier ones. "
                              "Repeat the flag or separate with commas.")
    flags.DEFINE_string("params_override", "", "Comma-separated dotted overrides, e.g. "
                        "'train.epochs=30,data.name=tfds:cifar10'.")
    flags.DEFINE_string("model_dir", None, "Checkpoints, logs, config and export; local or gs:// (runtime.model_dir).")
    flags.DEFINE_string("data_dir", None, "Data directory, local or gs:// (data.data_dir).")
    flags.DEFINE_string("tpu", None, "TPU name, 'local' or grpc://host:port (runtime.tpu).")
    flags.DEFINE_enum("strategy", None, list(STRATEGIES), "tf.distribute strategy; auto-detected when omitted.")
    flags.DEFINE_enum("precision", None, list(PRECISIONS), "Dtype policy; bfloat16 on TPU by default.")
    flags.DEFINE_string("export_dir", None, "Where --mode=export (and the end of training) writes (export.dir).")
    flags.DEFINE_boolean("overwrite", None, "--mode=export: replace an existing export_dir (export.overwrite).")
    flags.DEFINE_integer("steps_per_loop", None, "Train steps per host call (Keras steps_per_execution).")
    flags.DEFINE_boolean("verbose", False, f"On a failure, print the traceback too (or set {VERBOSE_ENV}=1).")


def _config_files(values: Sequence[str]) -> List[str]:
    files: List[str] = []
    for value in values or []:
        files.extend(part.strip() for part in value.split(",") if part.strip())
    return files


def flag_overrides(flag_values=FLAGS) -> List[tuple]:
    """``(dotted_key, value)`` for every explicit flag that maps onto a config key."""
    fv = flag_values
    pairs = []
    if fv.mode is not None:
        pairs.append(("runtime.mode", fv.mode))
    if fv.model is not None:
        pairs.append(("model.name", fv.model))
    if fv.blocks is not None:
        pairs.append(("model.blocks", [b.strip() for b in fv.blocks.split(",") if b.strip()]))
        if fv.model is None:
            pairs.append(("model.name", None))
    for flag, key in (("width", "model.width"), ("depth", "model.depth"), ("model_dir", "runtime.model_dir"),
                      ("data_dir", "data.data_dir"), ("tpu", "runtime.tpu"), ("strategy", "runtime.strategy"),
                      ("precision", "runtime.precision"), ("steps_per_loop", "runtime.steps_per_loop"),
                      ("export_dir", "export.dir"), ("overwrite", "export.overwrite")):
        value = getattr(fv, flag)
        if value is not None:
            pairs.append((key, value))
    return pairs


def build_config(flag_values=FLAGS) -> config_lib.ExperimentConfig:
    """Defaults -> YAML files -> --params_override -> explicit flags (types checked; the values
    are validated once, after resolution, by ``make_plan``).

    Without ``--config``, an existing ``<model_dir>/config.yaml`` (the resolved config a run wrote)
    is the YAML file: ``effnet-train --mode=export --model_dir=DIR`` needs nothing else.
    """
    files = _config_files(flag_values.config)
    if not files and flag_values.model_dir:
        written = RunDirectory(flag_values.model_dir).config_file
        if tf.io.gfile.exists(written):
            files = [written]
    config = config_lib.load_yaml_files(files)
    config_lib.apply_override_string(config, flag_values.params_override)
    config_lib.apply_overrides(config, flag_overrides(flag_values), source="command-line flags")
    return config


def run_experiment(flag_values=FLAGS) -> Dict[str, Any]:
    """Runs ``runtime.mode`` of the flags' config; returns the driver's results. ``--mode=export``
    needs no strategy, training data or training components: it restores and exports the run."""
    config = build_config(flag_values)
    if config.runtime.mode == "export":
        from effnet_tf.run.restore import export_run_directory

        return {"saved_model": export_run_directory(config)}
    from effnet_tf.run.driver import Driver

    return Driver(config).run()


def _fail(code: int, message: str) -> None:
    print(f"effnet-train: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def parse_flags(argv: Sequence[str]) -> List[str]:
    """absl's flag parsing, with a bad flag reported on one line (and the closest flag named)."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        import difflib

        names = [f.name for f in FLAGS.get_flags_for_module(__name__)]
        unknown = re.search(r"Unknown command line flag '([^']+)'", str(error))
        close = difflib.get_close_matches(unknown.group(1), names, n=1) if unknown else []
        hint = f" Did you mean --{close[0]}?" if close else ""
        _fail(EXIT_BAD_INPUT, f"error: {error}.{hint} Flags: effnet-train --helpshort; config keys: docs/configs.md.")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        _fail(EXIT_BAD_INPUT, f"error: unexpected positional argument(s) {' '.join(argv[1:])!r}: every "
                              "setting is a --flag or a config key (--mode=train, --params_override='train.epochs=3').")
    if not FLAGS["verbosity"].present:  # keep the console to the progress bar and our summary
        absl_logging.set_verbosity(absl_logging.WARNING)
    verbose = FLAGS.verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0")
    try:
        run_experiment(FLAGS)
    except (Exception, KeyboardInterrupt) as error:  # one line per failure; the traceback on request
        if isinstance(error, KeyboardInterrupt):
            if sys.stdout.isatty():  # end the progress bar's line, so the message gets its own
                print(file=sys.stdout, flush=True)
            _fail(130, "interrupted (Ctrl-C); the latest checkpoint is kept: run the same command to resume.")
        code, message = describe(error)
        if verbose:
            import traceback

            traceback.print_exc()
        from effnet_tf.training.preemption import abandoned_work_running

        if abandoned_work_running():  # an export abandoned on SIGTERM: do not wait for its thread
            print(f"effnet-train: {message}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(code)
        _fail(code, message)


def run() -> None:
    """Console-script entry point (``effnet-train``)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


define_flags()

if __name__ == "__main__":
    run()
