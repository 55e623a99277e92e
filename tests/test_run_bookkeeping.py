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


# One run per directory ---------------------------------------------------------------------------

def _lock_file(directory, **holder):
    path = directory / "run.lock"
    path.write_text(json.dumps(holder) if holder else "{ half-written")
    return path


def _ended_pid():
    """The pid of a process of this host that has ended."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=30)
    return process.pid


def _lock_cases():
    import socket
    import time

    host, now = socket.gethostname(), time.time()
    # (id, holder fields or None for an unreadable file, lock-file age in s, taken over?, needles)
    return [
        ("live process of this host", dict(host=host, pid=1, started=now - 60, heartbeat=now), 0, False,
         [f"host {host}", "pid 1", "started 20", "in use by another training run"]),
        ("ended process of this host", dict(host=host, pid="ENDED", started=now - 60, heartbeat=now), 0, True,
         ["has ended"]),
        ("another host, recent heartbeat", dict(host="tpu-vm-7", pid=4242, started=now - 60, heartbeat=now - 20),
         0, False, ["host tpu-vm-7", "pid 4242"]),
        ("another host, silent", dict(host="tpu-vm-7", pid=4242, started=now - 900, heartbeat=now - 600), 0, True,
         ["no heartbeat for 600 s", "host tpu-vm-7"]),
        ("unreadable, fresh", None, 0, False, ["an unknown process"]),
        ("unreadable, old", None, 600, True, ["unreadable lock file"]),
    ]


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    import pytest

    from effnet_tf.storage.run_lock import RunLock, RunLockedError

    for name, holder, age, taken, needles in _lock_cases():
        directory = tmp_path / name.replace(" ", "_").replace(",", "")
        directory.mkdir()
        if holder and holder["pid"] == "ENDED":
            holder["pid"] = _ended_pid()
        path = _lock_file(directory, **(holder or {}))
        if age:
            os.utime(path, (path.stat().st_atime - age, path.stat().st_mtime - age))
        said = []
        lock = RunLock(str(directory), say=said.append)
        if taken:
            with lock:
                record = json.loads(path.read_text())
                assert record["pid"] == os.getpid(), name
                assert len(said) == 1 and "Taking over the stale run lock" in said[0], (name, said)
                for needle in needles:
                    assert needle in said[0], (name, needle, said)
            assert not path.exists(), name  # released
        else:
            before = path.read_text()
            with pytest.raises(RunLockedError) as raised:
                lock.acquire()
            message = str(raised.value)
            assert "\n" not in message and str(path) in message, message
            for needle in needles:
                assert needle in message, (name, needle, message)
            assert path.read_text() == before and not said, name  # untouched


def test_run_lock_is_exclusive_reentrant_and_beats(tmp_path):
    import time

    from effnet_tf.storage.run_lock import RunLock

    path = tmp_path / "run.lock"
    lock = RunLock(str(tmp_path), heartbeat_s=0.05)
    with lock:
        first = json.loads(path.read_text())
        assert first["pid"] == os.getpid() and first["host"] and first["started"] <= first["heartbeat"]
        time.sleep(0.4)
        assert json.loads(path.read_text())["heartbeat"] > first["heartbeat"]  # the heartbeat thread
        with RunLock(str(tmp_path)):  # this same process again: re-entrant
            pass
        assert path.exists()  # the inner release leaves the outer's lock
        with lock:
            pass
        assert path.exists()
    assert not path.exists()


def test_a_second_trainer_on_a_locked_run_stops_naming_the_holder(trained, tmp_path):
    """The CLI end (a live holder of this host: pid 1). Nothing in the run changes."""
    import socket

    run = copy_of(trained, tmp_path, "run")
    _lock_file(run, host=socket.gethostname(), pid=1, started=1.7e9, heartbeat=__import__("time").time())
    before = digest(run)
    code, out, err = run_cli("--params_override=train.epochs=3", f"--model_dir={run}")
    assert code == 2, out + err
    lines = _effnet_lines(err)
    assert len(lines) == 1 and "is in use by another training run" in lines[0] and "pid 1" in lines[0], err
    assert digest(run) == before
    assert not (trained / "run.lock").exists()  # a finished run leaves no lock


# Read-only use -------------------------------------------------------------------------------------

def test_eval_and_export_work_on_a_run_directory_they_cannot_write(trained, tmp_path, monkeypatch):
    """chmod makes the copy read-only; as root (where chmod does not bite) every write of the
    storage layer below the run raises EACCES as a read-only mount would."""
    import errno
    import stat

    from effnet_tf.storage import paths

    run = copy_of(trained, tmp_path, "run")
    before = digest(run)
    if os.geteuid() == 0:
        for name in ("append_line", "write_text", "makedirs", "remove", "rename"):
            original = getattr(paths, name)

            def refused(path, *args, _original=original, **kwargs):
                if str(path).startswith(str(run)):
                    raise PermissionError(errno.EACCES, "Permission denied", str(path))
                return _original(path, *args, **kwargs)

            monkeypatch.setattr(paths, name, refused)
    else:
        for root, dirs, files in os.walk(run):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), stat.S_IREAD | (stat.S_IEXEC if name in dirs else 0))
        os.chmod(run, stat.S_IREAD | stat.S_IEXEC)
    try:
        code, out, err = run_cli("--mode=eval", f"--model_dir={run}")
        assert code == 0, out + err
        assert "Eval of" in out and "top-1" in out
        warning = [line for line in out.splitlines() if line.startswith("effnet-train: warning:")]
        assert len(warning) == 1 and "progress.jsonl" in warning[0] and "skipped" in warning[0], out
        code, out, err = run_cli("--mode=export", f"--model_dir={run}", f"--export_dir={tmp_path}/served")
        assert code == 0, out + err
        assert (tmp_path / "served" / "saved_model" / "saved_model.pb").exists()
        code, out, err = run_cli("--params_override=train.epochs=3", f"--model_dir={run}")
        line = _effnet_lines(err)[0]  # training needs to write: it stops up front, naming the directory
        assert code == 2 and str(run) in line and "Permission denied" in line, err
    finally:
        os.chmod(run, 0o755)
        for root, dirs, files in os.walk(run):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o755)
    assert digest(run) == before
