"""The resumed-run recipe in docs/progressive_learning.md: with TF_XLA_FLAGS naming a persistent
cache, a second process loads the XLA program the first one compiled (TF 2.21 reads the flag
when its eager context starts, so it belongs in the launch environment, not in a running
process). TF's own log says whether a program came from the cache."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # run by the README command and CI; skipped by -m "not slow"

_COMPILE_ONCE = """
import tensorflow as tf

@tf.function(jit_compile=True)
def step(x, w):
    return tf.reduce_sum(tf.nn.relu(tf.matmul(x, w)))

print("result", float(step(tf.ones([4, 8]), tf.fill([8, 3], 0.5))), flush=True)
"""


def test_a_second_process_loads_the_program_the_first_compiled(tmp_path):
    cache = tmp_path / "xla_cache"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE="device_executable_persistor=2",
               TF_XLA_FLAGS=f"--tf_xla_persistent_cache_directory={cache}")

    def run():
        done = subprocess.run([sys.executable, "-c", _COMPILE_ONCE], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "result 48.0" in done.stdout  # 4 x 3 entries of 8 x 0.5
        return done.stderr

    first = run()
    entries = os.listdir(cache)
    assert len(entries) == 1 and entries[0].endswith("XLA_CPU_JIT.pb"), entries
    assert "Loading cached entry" not in first
    second = run()
    assert "Loading cached entry for:" in second
    assert os.listdir(cache) == entries  # loaded, not compiled and written again
