"""The Keras internals effnet_tf relies on: all present in the installed Keras, and used only
through ``effnet_tf/keras_internals.py``, so a Keras upgrade means reading one module."""
import os
import re

import keras

from effnet_tf import keras_internals

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "effnet_tf")


def test_every_internal_we_use_exists_in_this_keras():
    missing = keras_internals.missing_internals()
    assert not missing, (f"Keras {keras.__version__} lacks internals effnet_tf uses (checked on "
                         f"{keras_internals.KERAS_CHECKED}): {'; '.join(missing)}. See effnet_tf/keras_internals.py.")


def test_a_removed_internal_is_named(monkeypatch):
    owner = next(c for c in keras.Model.__mro__ if "_symbolic_build" in c.__dict__)  # Keras' Trainer
    monkeypatch.delattr(owner, "_symbolic_build")
    missing = keras_internals.missing_internals()
    assert len(missing) == 1 and missing[0].startswith("Model._symbolic_build (builds the compiled loss")


def test_only_the_internals_module_touches_them():
    """The private names (and the factories we replace) appear in one module; the EMA
    optimizers' override of Keras' EMA update is the one definition elsewhere."""
    names = [name for _, name, _ in keras_internals.INTERNALS if name.startswith("_") or name.startswith("make_")]
    names += ["__internal__", "MOMENT_SLOTS"]
    pattern = re.compile("|".join(re.escape(name) for name in names))
    found = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py") or name == "keras_internals.py":
                continue
            path = os.path.join(root, name)
            for number, line in enumerate(open(path, encoding="utf-8"), 1):
                if pattern.search(line) and "def _update_model_variables_moving_average" not in line:
                    found.setdefault(os.path.relpath(path, PACKAGE), []).append(number)
    assert not found, f"Keras internals used outside effnet_tf/keras_internals.py: {found}"
