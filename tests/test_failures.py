"""Every failure of ``effnet-train`` ends in one line that names the culprit, with the documented
exit code, no traceback (unless --verbose), and nothing existing changed.

The CLI's own entry (flag parsing, ``main``) runs in this process on tiny models and data the
test writes; the cases are a table. docs/troubleshooting.md lists the same messages.
"""
import hashlib
import io
import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from effnet_tf import main as cli

BLOCKS = "[r1_k3_s1_e1_i16_o8_c1,r1_k3_s2_e2_i8_o16_c1]"  # total stride 4
BASE = (f"model.name=null,model.blocks={BLOCKS},train.epochs=2,train.global_batch_size=8,train.image_size=32,"
        "eval.image_size=32,train.warmup_epochs=0,train.randaug_magnitude=0,runtime.tensorboard=false,"
        "runtime.verbose=2,export.formats=[saved_model],export.report=false,eval.frequency=end,runtime.seed=1")
SYNTHETIC = "data.name=synthetic,data.num_classes=2,data.train_examples=32,data.eval_examples=16"


def run_cli(*args):
    """``effnet-train ARGS`` in this process: (exit code, stdout, stderr)."""
    import contextlib

    cli.FLAGS.unparse_flags()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(cli.parse_flags(["effnet-train", *args]))
        except SystemExit as stop:
            code = stop.code
    cli.FLAGS.unparse_flags()
    return code, out.getvalue(), err.getvalue()


def digest(directory):
    """md5 of every file below ``directory`` (what must not change)."""
    result = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, directory)] = hashlib.md5(handle.read()).hexdigest()
    return result


def _image(rng, fmt):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 2-class image folder and TFRecord shards (labels 1..2) written here."""
    import tensorflow as tf

    from effnet_tf.data.tfrecord_source import write_example

    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / "folder" / label).mkdir(parents=True)
        for i in range(8):
            (root / "folder" / label / f"{i}.jpg").write_bytes(_image(rng, "JPEG"))
    (root / "tfr").mkdir()
    for name, count in (("train-00000-of-00002", 16), ("train-00001-of-00002", 16), ("validation-00000-of-00001", 8)):
        with tf.io.TFRecordWriter(str(root / "tfr" / name)) as writer:
            for i in range(count):
                write_example(writer, _image(rng, "JPEG"), 1 + i % 2)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run (checkpoints at steps 4 and 8, an export) to copy into the cases."""
    model_dir = tmp_path_factory.mktemp("trained") / "run"
    code, out, err = run_cli(f"--params_override={BASE},{SYNTHETIC},runtime.checkpoint_every_steps=2",
                             f"--model_dir={model_dir}")
    assert code == 0, out + err
    return model_dir


def copy_of(source, tmp_path, name):
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def _tfrecord(data, tmp_path, damage=None, offset=1):
    directory = copy_of(data / "tfr", tmp_path, "tfr")
    if damage:
        damage(directory)
    return (f"--params_override={BASE},data.name=tfrecord:{directory},data.num_classes=2,data.label_offset={offset},"
            "train.steps_per_epoch=4")


def _garbage(directory):
    for name in ("train-00000-of-00002", "train-00001-of-00002"):
        (directory / name).write_bytes(np.random.default_rng(1).bytes(5000))


def _truncate(directory):
    shard = directory / "train-00001-of-00002"
    shard.write_bytes(shard.read_bytes()[:7000])


def _folder(data, tmp_path, corrupt=(), extra=""):
    directory = copy_of(data / "folder", tmp_path, "folder")
    for name in corrupt:
        (directory / name).write_bytes(b"\xff\xd8\xff" + bytes(200))
    return f"--params_override={BASE},data.name=folder:{directory}{extra}"


ALL_IMAGES = [f"{label}/{i}.jpg" for label in ("cat", "dog") for i in range(8)]

# (id, build(data, trained, tmp_path) -> args, exit code, needles in the one error line)
CASES = [
    ("unknown key", lambda d, t, p: ["--params_override=train.epoch=3", f"--model_dir={p}/run"], 2,
     ["'train.epoch'", "train.epochs"]),
    ("wrong type", lambda d, t, p: ["--params_override=train.epochs=abc", f"--model_dir={p}/run"], 2,
     ["train.epochs", "expects int", "'abc'"]),
    ("section given a scalar", lambda d, t, p: [f"--config={_write(p, 'c.yaml', 'train: 5')}"], 2,
     ["section 'train'", "must be a mapping"]),
    ("invalid YAML", lambda d, t, p: [f"--config={_write(p, 'c.yaml', 'train: [1, 2')}"], 2,
     ["not valid YAML at line 1, column 13", "expected ',' or ']'"]),
    ("missing config file", lambda d, t, p: [f"--config={p}/none.yaml"], 2, ["none.yaml", "does not exist"]),
    ("positional argument", lambda d, t, p: ["train"], 2, ["positional argument", "'train'"]),
    ("unknown flag", lambda d, t, p: ["--model_dri=x"], 2, ["model_dri", "Did you mean --model_dir?"]),
    ("image size below the stride", lambda d, t, p: [
        f"--params_override={BASE},{SYNTHETIC},train.image_size=3,eval.image_size=3", f"--model_dir={p}/run"], 2,
     ["train.image_size=3", "total stride 4"]),
    ("unknown split", lambda d, t, p: [
        f"--params_override={BASE},{SYNTHETIC},data.eval_split=test", f"--model_dir={p}/run"], 2,
     ["unknown split 'test'"]),
    ("no model_dir", lambda d, t, p: [f"--params_override={BASE},{SYNTHETIC}"], 2, ["--model_dir", "required"]),
    ("model_dir is a file", lambda d, t, p: [
        f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={_write(p, 'run', 'x')}"], 2, ["is a file"]),
    ("model_dir inside a file", lambda d, t, p: [
        f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={_write(p, 'f', 'x')}/run"], 2,
     ["cannot create model_dir", "not a directory"]),
    ("corrupt image", lambda d, t, p: [_folder(d, p, corrupt=["cat/3.jpg"]), f"--model_dir={p}/run"], 2,
     ["corrupt image in", "cat/3.jpg", "data.skip_corrupt=true"]),
    ("every image corrupt, skipping", lambda d, t, p: [
        _folder(d, p, corrupt=ALL_IMAGES, extra=",data.skip_corrupt=true"), f"--model_dir={p}/run"], 2,
     ["no usable record in a whole pass over folder:", "split 'train'"]),
    ("garbage TFRecord shards", lambda d, t, p: [_tfrecord(d, p, _garbage), f"--model_dir={p}/run"], 2,
     ["unreadable record in", "train-00000-of-00002: record 0", "Is this even a TFRecord file?"]),
    ("truncated TFRecord shard", lambda d, t, p: [_tfrecord(d, p, _truncate), f"--model_dir={p}/run"], 2,
     ["unreadable record in", "train-00001-of-00002: record"]),
    ("label out of range", lambda d, t, p: [_tfrecord(d, p, offset=0), f"--model_dir={p}/run"], 2,
     ["label 2 outside [0, num_classes) = [0, 2)", "train-0000", "data.label_offset"]),
    ("eval checkpoint missing", lambda d, t, p: [
        "--mode=eval", f"--params_override={BASE},{SYNTHETIC},eval.checkpoint={p}/ckpt-3", f"--model_dir={p}/run"], 2,
     ["eval.checkpoint", "ckpt-3.index"]),
    ("export without a checkpoint", lambda d, t, p: [
        "--mode=export", f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={p}/run"], 2, ["no checkpoint in"]),
    ("export target exists", lambda d, t, p: ["--mode=export", f"--model_dir={copy_of(t, p, 'run')}"], 2,
     ["already exists", "--overwrite"]),
    ("another architecture", lambda d, t, p: [
        "--width=0.75", "--params_override=train.epochs=3", f"--model_dir={copy_of(t, p, 'run')}"], 2,
     ["holds checkpoints of another model", "model.width 1.0 -> 0.75"]),
    ("another number of classes", lambda d, t, p: [
        "--params_override=train.epochs=3,data.num_classes=3", f"--model_dir={copy_of(t, p, 'run')}"], 2,
     ["model.num_classes=2", "has 3 classes"]),
    ("config file with a duplicate key", lambda d, t, p: [
        f"--config={_write(p, 'dup.yaml', 'train:' + chr(10) + '  epochs: 3' + chr(10) + '  epochs: 5' + chr(10))}",
        f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={p}/run"], 2,
     ["dup.yaml", "duplicate key 'epochs'", "line 3", "first at line 2"]),
    ("config file that is not UTF-8", lambda d, t, p: [
        f"--config={_write_bytes(p, 'latin1.yaml', 'train:' + chr(10) + '  epochs: 3  # café' + chr(10))}",
        f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={p}/run"], 2,
     ["latin1.yaml", "is not UTF-8", "0xe9", "line 2"]),
    ("non-finite loss", lambda d, t, p: [
        f"--params_override={BASE},{SYNTHETIC},train.base_learning_rate=1e30,train.optimizer=sgd",
        f"--model_dir={p}/run"], 3, ["Training loss is nan", "base_learning_rate"]),
]


def _write_bytes(directory, name, text):
    path = directory / name
    path.write_bytes(text.encode("latin-1"))
    return path


def _write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, build, code, needles", CASES, ids=[c[0] for c in CASES])
def test_failure_is_one_line_naming_the_culprit(name, build, code, needles, data, trained, tmp_path):
    args = build(data, trained, tmp_path)
    model_dir = next((a.split("=", 1)[1] for a in args if a.startswith("--model_dir=")), None)
    before = digest(model_dir) if model_dir and os.path.isdir(model_dir) else None
    returned, out, err = run_cli(*args)
    assert returned == code, out + err
    lines = [line for line in err.splitlines() if line.startswith("effnet-train: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in out + err
    if before is not None:  # nothing that existed was changed
        after = digest(model_dir)
        assert {k: v for k, v in after.items() if k in before} == before


def test_verbose_keeps_the_traceback_and_a_failed_run_has_its_own_code(tmp_path, monkeypatch):
    from effnet_tf.run import driver

    def broken(self):
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr(driver.Driver, "run", broken)
    args = [f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={tmp_path}/run"]
    code, out, err = run_cli(*args)
    assert code == cli.EXIT_FAILED == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "effnet-train: the run failed: RuntimeError: the accelerator fell over (rerun with --verbose for the traceback)")
    code, out, err = run_cli("--verbose", *args)
    assert code == 1 and "Traceback" in err and "the accelerator fell over" in err.splitlines()[-1]


def test_ctrl_c_message_starts_its_own_line_after_a_progress_bar(tmp_path, monkeypatch):
    import contextlib

    from effnet_tf.run import driver

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def interrupted(self):
        print("3/10 [=====>........] - ETA: 4s - loss: 1.2", end="", flush=True)  # Keras' bar, no newline
        raise KeyboardInterrupt

    monkeypatch.setattr(driver.Driver, "run", interrupted)
    terminal = Terminal()
    cli.FLAGS.unparse_flags()
    with contextlib.redirect_stdout(terminal), contextlib.redirect_stderr(terminal), pytest.raises(SystemExit) as stop:
        cli.main(cli.parse_flags(["effnet-train", f"--params_override={BASE},{SYNTHETIC}", f"--model_dir={tmp_path}/r"]))
    cli.FLAGS.unparse_flags()
    assert stop.value.code == 130
    lines = terminal.getvalue().splitlines()
    assert lines[-2].startswith("3/10 [") and lines[-1].startswith("effnet-train: interrupted (Ctrl-C)"), lines


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(trained, tmp_path):
    model_dir = copy_of(trained, tmp_path, "run")
    checkpoints = model_dir / "checkpoints"
    data_file = next(checkpoints.glob("ckpt-8.data-*"))
    data_file.write_bytes(b"garbage!" * 64)
    code, out, err = run_cli("--params_override=train.epochs=3", f"--model_dir={model_dir}")
    assert code == 0, out + err
    warning = [line for line in out.splitlines() if line.startswith("effnet-train: warning:")]
    assert len(warning) == 1 and "ckpt-8" in warning[0] and "restored the older" in warning[0]
    assert "ckpt-6" in warning[0] and "nothing was deleted" in warning[0]
    assert "Resuming from" in out and "global step 6" in out
    assert "Done: 3 epochs, 12 steps" in out


def test_clean_run_prints_no_keras_warning_and_heads_every_epoch(data, tmp_path):
    """A folder source (unknown eval size) once printed Keras' "input ran out of data"; the
    first stage's epochs had no header. Two stages, three epochs here."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(
            _folder(data, tmp_path, extra=",train.epochs=3,progressive.mode=staged,progressive.num_stages=2,"
                                          "progressive.min_image_size=16,progressive.bucket_step=16"),
            f"--model_dir={tmp_path}/run")
    assert code == 0, out + err
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    assert "ran out of data" not in out + err
    assert [line for line in out.splitlines() if line.startswith("Epoch ")] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]


def test_a_later_export_removes_what_a_killed_one_left(trained, tmp_path):
    model_dir = copy_of(trained, tmp_path, "run")
    leftover = model_dir / "export.tmp-0123456789ab"
    (leftover / "saved_model").mkdir(parents=True)
    code, out, err = run_cli("--mode=export", "--overwrite", f"--model_dir={model_dir}")
    assert code == 0, out + err
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoints", "config.yaml", "export", "progress.jsonl"]


def test_troubleshooting_page_lists_the_messages():
    text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                             "troubleshooting.md"), encoding="utf-8").read()
    for stem in ("holds checkpoints of another model", "no usable record in a whole pass", "unreadable record in",
                 "corrupt image in", "is smaller than the network's total stride", "restored the older",
                 "is a file, not a directory", "unexpected positional argument", "Unknown command line flag",
                 "the run failed:", "the training data ran out", "outside [0, num_classes)", "preempted: SIGTERM"):
        assert stem in text, stem
    for code in (cli.EXIT_FAILED, cli.EXIT_BAD_INPUT, cli.EXIT_NON_FINITE, cli.EXIT_PREEMPTED):
        assert f"| {code} |" in text, code
