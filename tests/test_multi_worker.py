"""Several workers and preemption, as separate processes on this machine (loopback only):
two MultiWorkerMirroredStrategy workers from ``TF_CONFIG`` train one run; SIGTERM to a single
process and to one of two workers saves at the step reached, exits with the documented code,
and the same command resumes with no lost step.

Every wait is bounded, and every process a test starts is killed by its own pid at the end.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
import yaml

from effnet_tf.main import EXIT_PREEMPTED
from effnet_tf.storage.run_directory import RunDirectory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_BLOCKS = ["r1_k3_s1_e1_i16_o8_c1", "r1_k3_s2_e2_i8_o16_c1", "r1_k3_s2_e2_i16_o16_se0.25"]
STEPS_PER_EPOCH = 8  # 128 examples / global batch 16

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(tmp_path, model_dir, epochs, **sections):
    config = {
        "model": {"name": None, "blocks": TINY_BLOCKS},
        "data": {"name": "synthetic", "num_classes": 4, "train_examples": 128, "eval_examples": 32},
        "train": {"epochs": epochs, "global_batch_size": 16, "image_size": 48, "warmup_epochs": 0,
                  "randaug_magnitude": 0},
        "progressive": {"mode": "staged", "num_stages": 2, "min_image_size": 32, "bucket_step": 16},
        "eval": {"image_size": 48, "frequency": "end"},
        "export": {"enabled": False},
        "runtime": {"model_dir": str(model_dir), "verbose": 2, "mode": "train", "tensorboard": False},
    }
    for section, values in sections.items():
        config[section].update(values)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _env(tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


class Processes:
    """Started ``effnet-train`` processes with their output collected by a thread each;
    ``stop()`` kills whatever is still running, by pid."""

    def __init__(self):
        self.started = []
        self.lines = {}

    def driver(self, config, tf_config=None):
        process = subprocess.Popen([sys.executable, "-m", "effnet_tf.main", f"--config={config}"], cwd=REPO,
                                   env=_env(tf_config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = self.lines[process.pid] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
        reader.start()
        process.reader = reader
        self.started.append(process)
        return process

    def workers(self, config, count=2):
        cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(count)]}
        return [self.driver(config, {"cluster": cluster, "task": {"type": "worker", "index": i}})
                for i in range(count)]

    def output(self, process):
        return "".join(self.lines[process.pid])

    def wait_for_line(self, process, prefix, timeout):
        """Waits (bounded) until ``process`` printed a line starting with ``prefix``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(line.startswith(prefix) for line in list(self.lines[process.pid])):
                return
            if process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line {prefix!r} within {timeout} s:\n{self.output(process)}")

    def finish(self, process_list, timeout):
        """The outputs of ``process_list`` once all have exited (bounded)."""
        deadline = time.time() + timeout
        for process in process_list:
            process.wait(timeout=max(1.0, deadline - time.time()))
            process.reader.join(timeout=10)
        return [self.output(process) for process in process_list]

    def stop(self):
        for process in self.started:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


@pytest.fixture
def processes():
    started = Processes()
    yield started
    started.stop()


def _worker_lines(output):
    return re.findall(r"^worker (\d)/2: read input pipeline (.*); weights fingerprint (\w+)$", output, re.M)


def _latest_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else None


def test_two_workers_train_one_run(tmp_path, processes):
    model_dir = tmp_path / "run"
    config = _config(tmp_path, model_dir, epochs=2, export={"enabled": True, "formats": ["saved_model"]},
                     runtime={"mode": "train_and_eval"})
    outputs = processes.finish(processes.workers(config), timeout=300)
    for index, output in enumerate(outputs):
        assert processes.started[index].returncode == 0, output
    lines = [_worker_lines(output) for output in outputs]
    assert [line[0][0] for line in lines] == ["0", "1"], outputs
    # Each worker read its own input pipeline (as the strategy assigned them) ...
    assert [line[0][1] for line in lines] == ["0 of 2", "1 of 2"]
    # ... and the replicas stayed in sync: identical weights (BN statistics included) on both.
    assert lines[0][0][2] == lines[1][0][2]
    # One writer: one config, one run_start/run_end, one export, no temporary leftovers.
    run = RunDirectory(str(model_dir))
    records = run.read_progress()
    assert [r["event"] for r in records].count("run_start") == 1
    end = [r for r in records if r["event"] == "run_end"]
    assert len(end) == 1 and end[0]["global_step"] == 2 * STEPS_PER_EPOCH and 0 <= end[0]["eval_top1"] <= 1
    assert records[0]["workers"] == 2 and records[0]["replicas"] == 2
    assert os.path.exists(run.config_file)
    assert os.path.exists(os.path.join(run.export, "saved_model", "saved_model.pb"))
    assert sorted(os.listdir(model_dir)) == ["checkpoints", "config.yaml", "export", "progress.jsonl"]
    assert "Done: 2 epochs" in outputs[0] and "Done:" not in outputs[1]  # the chief's console summary
    assert _latest_step(str(model_dir)) == 2 * STEPS_PER_EPOCH


def test_workers_read_disjoint_training_examples():
    """What each worker's pipeline id selects: disjoint records covering the split once."""
    from effnet_tf.data import get_source

    source = get_source("synthetic", num_classes=4, train_examples=128, validation_examples=32)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        records = source.records("train", input_context=context, shuffle=True, seed=3)
        seen.append({int(r["index"]) for r in records.as_numpy_iterator()})
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(128))


def _check_index_intact(model_dir):
    """Every checkpoint the index lists can be read."""
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    for path in state.all_model_checkpoint_paths:
        tf.train.load_checkpoint(path).get_variable_to_shape_map()
    return list(state.all_model_checkpoint_paths)


def test_sigterm_saves_the_step_reached_and_the_rerun_loses_none(tmp_path, processes):
    model_dir = tmp_path / "run"
    epochs = 4
    config = _config(tmp_path, model_dir, epochs=epochs)
    process = processes.driver(config)
    processes.wait_for_line(process, "Stage 2/2", timeout=180)  # mid-run, in the second stage
    time.sleep(1.0)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # a second one while saving changes nothing
    output = processes.finish([process], timeout=60)[0]
    seconds = time.time() - sent
    assert process.returncode == EXIT_PREEMPTED, output
    step = int(re.search(r"stopped at global step (\d+)", output).group(1))
    assert seconds < 20 and "SIGTERM received again" in output and "Traceback" not in output
    assert 2 * STEPS_PER_EPOCH < step < epochs * STEPS_PER_EPOCH
    assert _latest_step(str(model_dir)) == step  # the checkpoint is at the step reached
    assert any(p.endswith(f"ckpt-{step}") for p in _check_index_intact(str(model_dir)))
    first = RunDirectory(str(model_dir)).read_progress()
    assert not any(r["event"] == "run_end" for r in first)
    trained_before = sum(r["steps"] for r in first if r["event"] == "epoch")

    rerun = processes.driver(config)
    output = processes.finish([rerun], timeout=300)[0]
    assert rerun.returncode == 0, output
    records = RunDirectory(str(model_dir)).read_progress()[len(first):]
    assert records[0]["event"] == "run_start" and records[0]["global_step"] == step  # nothing lost
    epochs_after = [r for r in records if r["event"] == "epoch"]
    assert epochs_after[0]["epoch"] == step // STEPS_PER_EPOCH + 1
    assert epochs_after[0]["steps"] == STEPS_PER_EPOCH - step % STEPS_PER_EPOCH
    assert records[-1]["event"] == "run_end" and records[-1]["global_step"] == epochs * STEPS_PER_EPOCH
    # Steps run across both processes: the completed epochs, the preempted epoch's part, the rest.
    interrupted = step % STEPS_PER_EPOCH
    assert trained_before + interrupted + sum(r["steps"] for r in epochs_after) == epochs * STEPS_PER_EPOCH


def test_sigterm_to_one_of_two_workers_stops_both_and_both_resume(tmp_path, processes):
    model_dir = tmp_path / "run"
    epochs = 4
    config = _config(tmp_path, model_dir, epochs=epochs)
    workers = processes.workers(config)
    processes.wait_for_line(workers[0], "Stage 2/2", timeout=240)
    time.sleep(1.0)
    workers[1].send_signal(signal.SIGTERM)
    outputs = processes.finish(workers, timeout=90)
    assert [w.returncode for w in workers] == [EXIT_PREEMPTED] * 2, outputs
    steps = [int(re.search(r"stopped at global step (\d+)", o).group(1)) for o in outputs]
    assert steps[0] == steps[1] and _latest_step(str(model_dir)) == steps[0]
    assert "received by another worker" in outputs[0] and "SIGTERM received:" in outputs[1]
    assert not [name for name in os.listdir(model_dir) if "tmp" in name]  # worker 1's save was deleted
    _check_index_intact(str(model_dir))

    restarted = processes.workers(config)
    outputs = processes.finish(restarted, timeout=300)
    assert [w.returncode for w in restarted] == [0, 0], outputs
    assert f"Resuming from {model_dir}/checkpoints/ckpt-{steps[0]}" in outputs[0]
    lines = [_worker_lines(o)[0] for o in outputs]
    assert lines[0][2] == lines[1][2]
    end = RunDirectory(str(model_dir)).read_progress()[-1]
    assert end["event"] == "run_end" and end["global_step"] == epochs * STEPS_PER_EPOCH


def test_sigterm_during_the_final_export_abandons_it_and_the_rerun_only_exports(tmp_path, processes):
    model_dir = tmp_path / "run"
    config = _config(tmp_path, model_dir, epochs=1, progressive={"mode": "none"},
                     export={"enabled": True, "formats": ["saved_model", "keras", "tflite"]})
    process = processes.driver(config)
    processes.wait_for_line(process, "Exporting ", timeout=180)
    time.sleep(0.5)
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    output = processes.finish([process], timeout=60)[0]
    seconds = time.time() - sent
    assert process.returncode == EXIT_PREEMPTED, output
    assert seconds < 5, (seconds, output)
    assert "abandoning the export" in output and "nothing was written to" in output, output
    assert "Traceback" not in output
    assert sorted(os.listdir(model_dir)) == ["checkpoints", "config.yaml", "progress.jsonl"]  # no export, no lock
    assert _latest_step(str(model_dir)) == STEPS_PER_EPOCH

    rerun = processes.driver(config)
    output = processes.finish([rerun], timeout=300)[0]
    assert rerun.returncode == 0, output
    assert "Training already complete" in output and "Epoch " not in output, output
    assert sorted(os.listdir(model_dir / "export")) == [
        "metadata.json", "model.keras", "model_dynamic_range.tflite", "model_float32.tflite", "saved_model"]


def test_a_second_trainer_started_on_a_running_run_stops_and_the_first_goes_on(tmp_path, processes):
    model_dir = tmp_path / "run"
    config = _config(tmp_path, model_dir, epochs=500)  # runs until the test stops it
    first = processes.driver(config)
    processes.wait_for_line(first, "Epoch 1/500", timeout=180)
    second = processes.driver(config)
    output = processes.finish([second], timeout=180)[0]
    assert second.returncode == 2, output
    line = [line for line in output.splitlines() if line.startswith("effnet-train: ")]
    assert len(line) == 1 and "in use by another training run" in line[0], output
    assert f"pid {first.pid}" in line[0] and f"host {socket.gethostname()}" in line[0], line
    assert first.poll() is None  # the first goes on
    first.send_signal(signal.SIGTERM)
    output = processes.finish([first], timeout=60)[0]
    assert first.returncode == EXIT_PREEMPTED, output
    runs = [r for r in RunDirectory(str(model_dir)).read_progress() if r["event"] == "run_start"]
    assert len(runs) == 1 and not os.path.exists(model_dir / "run.lock")  # released on the way out
