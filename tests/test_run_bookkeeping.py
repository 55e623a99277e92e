"""A run's bookkeeping under damage and divergence: a damaged checkpoint index never restarts a run
from step 0 over its checkpoints, a diverged run is never "Done", and the documented fix (a lower
learning rate, the same command) works from what the message names.

The CLI runs in this process on the tiny network and data of ``test_failures``.
"""
import json
import os

from test_failures import BASE, SYNTHETIC, copy_of, digest, run_cli, trained  # noqa: F401 (fixture)

EVERY_STEP = "runtime.checkpoint_every_steps=1,export.enabled=false"


def _effnet_lines(err):
    return [line for line in err.splitlines() if line.startswith("effnet-train: ")]


def _records(model_dir, event):
    with open(os.path.join(model_dir, "progress.jsonl")) as handle:
        return [r for r in map(json.loads, handle) if r.get("event") == event]


def _damage_index(model_dir, how):
    index = os.path.join(model_dir, "checkpoints", "checkpoint")
    if how == "missing":
        os.remove(index)
    else:
        with open(index, "w") as handle:
            handle.write("model_checkpoint_path: {{{ not a checkpoint state")


def test_a_damaged_or_missing_index_resumes_from_the_newest_checkpoint_on_disk(trained, tmp_path):
    for how in ("damaged", "missing"):
        run = copy_of(trained, tmp_path, how)
        before = {k: v for k, v in digest(run / "checkpoints").items() if k.startswith("ckpt-")}
        _damage_index(run, how)
        os.makedirs(run / "checkpoints" / "ckpt-9_temp")  # what a kill -9 during a save leaves
        code, out, err = run_cli("--params_override=train.epochs=3,export.enabled=false", f"--model_dir={run}")
        assert code == 0, out + err
        assert f"the checkpoint index {run}/checkpoints/checkpoint is {how}" in out + err
        assert "Resuming from" in out and "ckpt-8" in out  # not from step 0
        assert not os.path.exists(run / "checkpoints" / "ckpt-9_temp")
        (start,) = [r for r in _records(run, "run_start") if r["resumed_from"]][-1:]
        assert start["global_step"] == 8
        # The earlier run's checkpoints were resumed from, never rewritten (rotation may remove old ones).
        after = digest(run / "checkpoints")
        assert all(after[k] == v for k, v in before.items() if k in after)
        assert _records(run, "run_end")[-1]["global_step"] == 12


def test_divergence_stops_with_exit_3_and_the_documented_fix_works(tmp_path):
    run = tmp_path / "run"
    diverge = f"--params_override={BASE},{SYNTHETIC},{EVERY_STEP},train.optimizer=adam,train.base_learning_rate=1e6"
    code, out, err = run_cli(diverge, f"--model_dir={run}")
    assert code == 3, out + err
    (line,) = _effnet_lines(err)
    assert "diverged" in line and "moved to" in line and "lower train.base_learning_rate" in line
    assert "Done" not in out
    moved = [d for d in os.listdir(run / "checkpoints") if d.startswith("diverged-step-")]
    assert moved and os.listdir(run / "checkpoints" / moved[0])  # kept, not deleted
    assert _records(run, "diverged")
    # The fix as the message says: a lower learning rate, the same command.
    fixed = diverge.replace("train.base_learning_rate=1e6", "train.base_learning_rate=0.01")
    code, out, err = run_cli(fixed, f"--model_dir={run}")
    assert code == 0, out + err
    end = _records(run, "run_end")[-1]
    assert end["global_step"] == 8 and end["eval_loss"] < 10
    assert os.listdir(run / "checkpoints" / moved[0])


def test_a_diverged_eval_is_never_done(tmp_path):
    # RMSProp at base LR 100: the training loss stays below the divergence limit, the weights grow,
    # and the final eval loss explodes (measured 4e5).
    run = tmp_path / "run"
    code, out, err = run_cli(
        f"--params_override={BASE},{SYNTHETIC},{EVERY_STEP},train.optimizer=rmsprop,train.base_learning_rate=100,"
        "eval.frequency=end", f"--model_dir={run}")
    assert code == 3, out + err
    (line,) = _effnet_lines(err)
    assert "diverged" in line and "base_learning_rate" in line
    assert "Done" not in out and not _records(run, "run_end")
