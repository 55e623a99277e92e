"""Runs notebooks/*.ipynb end to end in a fresh kernel with tiny settings and checks their results.

Each notebook's first code cell is tagged ``parameters``; the test appends its own assignments to
that cell (as papermill does), executes the notebook with nbclient in a temporary directory and
fails on the first cell that raises. The kernel is started from a kernel spec written to the
temporary directory that runs *this* interpreter (``sys.executable``) and imports this checkout,
so the test needs no kernel installed or registered anywhere (a fresh ``pip install -e .[test]``
venv is enough) and cannot pick up another environment's ``python3`` kernel.
"""
import json
import os
import re
import sys
import time
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest
from jupyter_client.kernelspec import KernelSpecManager  # installed with nbclient
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError

pytestmark = pytest.mark.slow  # run by the README command and CI; skipped by -m "not slow"

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNEL_NAME = "effnet-tf-test"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
TINY_BLOCKS = ["r1_k3_s1_e1_i16_o8_c1", "r1_k3_s2_e2_i8_o16_c1", "r1_k3_s2_e2_i16_o16_se0.25"]


def _kernel_manager(directory: Path) -> AsyncKernelManager:
    """A kernel manager whose only kernel spec runs this interpreter with this checkout first on the path."""
    spec_dir = directory / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "effnet_tf tests",
        "language": "python",
        # Agg: figures render off-screen; nothing needs a display.
        "env": {"MPLBACKEND": "Agg", "PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "2",
                "IPYTHONDIR": str(directory / "ipython")},  # no IPython profile written to $HOME
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(directory / "kernels")])
    # The connection file lives in the temporary directory too (no Jupyter runtime dir needed).
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs,
                              connection_file=str(directory / "kernel-connection.json"))


def _parameters_cell(notebook):
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    return tagged[0]


def execute_notebook(name: str, parameters: dict, directory: Path):
    """Executes ``notebooks/<name>`` with ``parameters`` injected; returns (notebook, stdout text, seconds)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = _parameters_cell(notebook)
    unknown = [k for k in parameters if not re.search(rf"^{k}\s*=", cell.source, re.MULTILINE)]
    assert not unknown, f"{name}: {unknown} are not parameters of the notebook"
    cell.source += "\n\n# Injected by tests/test_notebooks.py\n" + "\n".join(
        f"{key} = {value!r}" for key, value in parameters.items())
    workdir = directory / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(
        notebook, km=_kernel_manager(directory), timeout=600,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    try:
        # cleanup_kc: shut the kernel down afterwards although the test, not nbclient, made its manager.
        client.execute(cleanup_kc=True)
    except CellExecutionError as error:  # the failing cell's source and traceback, without colour codes
        pytest.fail(f"{name}: a cell failed\n{ANSI_ESCAPE.sub('', str(error))}", pytrace=False)
    seconds = time.perf_counter() - start
    print(f"{name}: executed in {seconds:.1f} s")
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    stdout = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream" and o.name == "stdout")
    return notebook, stdout, seconds


@pytest.mark.parametrize("name", ["finetune.ipynb", "progressive_learning.ipynb"])
def test_committed_notebooks_are_clean_and_parameterized(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), \
        f"{name} is committed with outputs: clear them (Jupyter: Edit > Clear All Outputs)"
    assert code[0] is _parameters_cell(notebook), "the parameters cell must be the first code cell"
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert sum(c.cell_type == "markdown" for c in notebook.cells) >= 5


@pytest.mark.parametrize("name", ["finetune.ipynb", "progressive_learning.ipynb"])
def test_notebook_links_point_at_files_in_the_repository(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert links, "the notebook links to no docs"
    missing = [t for t in links if not (NOTEBOOKS / t.split("#")[0]).resolve().exists()]
    assert not missing, f"{name} links to missing files: {missing}"
    for link in (t for t in links if "#" in t):
        path, anchor = link.split("#")
        headings = re.findall(r"^#+\s+(.+?)\s*$", (NOTEBOOKS / path).read_text(encoding="utf-8"), re.MULTILINE)
        # GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
        slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in slugs, f"{name}: no heading for #{anchor} in {path}; it has {sorted(slugs)}"


def test_finetune_notebook(tmp_path):
    num_images = 5
    _, out, _ = execute_notebook("finetune.ipynb", dict(
        DATASET="synthetic", MODEL_NAME="efficientnetv2-b0", WIDTH=0.25, DEPTH=0.25, IMAGE_SIZE=48,
        EPOCHS=2, STEPS_PER_EPOCH=10, BATCH_SIZE=16, SYNTHETIC_CLASSES=4, SYNTHETIC_EXAMPLES=256,
        RANDAUG_MAGNITUDE=5.0, EXPORT_DIR="exports/finetune", NUM_SERVING_IMAGES=num_images,
    ), tmp_path)

    accuracy = re.search(r"^Final validation accuracy: (\d\.\d{4}) \(loss (\d+\.\d+)", out, re.MULTILINE)
    assert accuracy, out
    assert 0.0 <= float(accuracy.group(1)) <= 1.0 and np.isfinite(float(accuracy.group(2)))
    # fit ran the requested epochs and steps.
    assert "Epoch 2/2" in out and "10/10" in out
    # Two-phase fine-tuning: the head alone (its kernel and bias), then the last 2 blocks too.
    assert "Phase 1: the head alone (2 trainable weights)" in out
    phase2 = re.search(r"Phase 2: the last 2 blocks too \((\d+) trainable weights, learning rate x0.1\)", out)
    assert phase2 and int(phase2.group(1)) > 2, out
    assert f"serving_default: {num_images} JPEG images -> {num_images} predictions" in out
    assert f"predict_pixels: {num_images} predictions" in out

    # The exported SavedModel, checked here independently of the notebook: it serves any JPEG
    # with the synthetic source's class names.
    import tensorflow as tf

    from effnet_tf.data import SHAPES

    served = tf.saved_model.load(str(tmp_path / "work" / "exports" / "finetune"))
    image = tf.cast(tf.random.stateless_uniform([70, 90, 3], [1, 2], maxval=256, dtype=tf.int32), tf.uint8)
    response = served.signatures["serving_default"](image_bytes=tf.stack([tf.io.encode_jpeg(image)] * 2))
    probabilities = response["probabilities"].numpy()
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    labels = {label.decode() for label in response["top_k_labels"].numpy().ravel()}
    assert labels == set(SHAPES[:4])


def test_progressive_learning_notebook(tmp_path):
    model_dir = tmp_path / "run"
    _, out, _ = execute_notebook("progressive_learning.ipynb", dict(
        VARIANT="efficientnetv2-m",  # M's mixup grows from 0 to 0.2: mixed samples are drawn too
        SAMPLES_PER_STAGE=4, DATASET="synthetic", MODEL_NAME=None, BLOCKS=TINY_BLOCKS, WIDTH=None, DEPTH=None,
        MIN_IMAGE_SIZE=32, IMAGE_SIZE=64, BUCKET_STEP=16, TRAIN_STAGES=3, EPOCHS=3, STEPS_PER_EPOCH=5,
        BATCH_SIZE=16, MODEL_DIR=str(model_dir),
    ), tmp_path)

    # The driver's stage lines: three stages at 32, 48 and 64 px.
    stage_sizes = [int(s) for s in re.findall(r"^Stage \d+/3: .*\| image size (\d+) \|", out, re.MULTILINE)]
    assert stage_sizes == [32, 48, 64], out
    compiled = re.search(r"^Compiled train functions: (\d+) for (\d+) distinct image sizes \[([\d, ]+)\]", out,
                         re.MULTILINE)
    assert compiled, out
    assert int(compiled.group(1)) == int(compiled.group(2)) == 3
    assert [int(s) for s in compiled.group(3).split(",")] == [32, 48, 64]

    # The run's own log, read independently: each epoch at its stage's size, and a train
    # function compiled only when a new size appears.
    with open(model_dir / "progress.jsonl") as handle:
        epochs = [r for r in map(json.loads, handle) if r["event"] == "epoch"]
    assert [r["image_size"] for r in epochs] == [32, 48, 64]
    assert [r["train_functions"] for r in epochs] == [1, 2, 3]
    assert [r["steps"] for r in epochs] == [5, 5, 5]


def test_notebook_utils_draw_the_given_values_and_reject_bad_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    from effnet_tf import notebook_utils

    stages = [{"image_size": s, "randaug_magnitude": m, "mixup_alpha": 0.0, "dropout_rate": 0.1}
              for s, m in ((128, 5.0), (128, 5.0), (192, 7.5))]
    fig = notebook_utils.plot_schedule({"staged": stages})
    size_line = fig.axes[0].lines[0]
    # One post-step per epoch, the last value held to the end of the last epoch.
    assert list(size_line.get_xdata()) == [0, 1, 2, 3]
    assert list(size_line.get_ydata()) == [128, 128, 192, 192]
    assert list(fig.axes[1].lines[0].get_ydata()) == [5.0, 5.0, 7.5, 7.5]
    plt.close(fig)

    pixels = tf.constant([[[[0.4, 254.6, 300.0]]], [[[-3.0, 127.5, 12.0]]]], tf.bfloat16)
    np.testing.assert_array_equal(notebook_utils.to_uint8(pixels).ravel(), [0, 255, 255, 0, 128, 12])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\].*\(8, 8, 3\)"):
        notebook_utils.show_image_grid(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="'accuracy'.*'loss'"):
        notebook_utils.plot_history({"loss": [1.0, 0.5]}, ("loss", "accuracy"))
