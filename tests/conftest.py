"""Test configuration: float64, strict rank promotion, a hypothesis profile, a seeded key fixture."""

import os

# Same seed, same numbers on accelerators too: XLA's GPU reductions (scatter-adds, some convolutions) are otherwise
# free to change their order between runs. Read when the backend starts, so set before any array is made.
if "--xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()

# The suite compiles afresh (timings stay comparable, nothing is written to the user's cache); the cache's own test
# runs its processes with a directory of its own.
os.environ.setdefault("UFM_COMPILATION_CACHE", "0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# float32 products at full precision on GPUs and TPUs (JAX's default there is TF32 / bf16 passes, 1e-3 relative);
# the tests compare float32 solves with closed forms. No effect on CPUs.
jax.config.update("jax_default_matmul_precision", "highest")

import hypothesis  # noqa: E402
import pytest  # noqa: E402

# deadline=None: the first example of a shape includes its compilation (seconds), which no deadline should count.
hypothesis.settings.register_profile("ufm", deadline=None, max_examples=25, derandomize=True)
hypothesis.settings.register_profile("ufm-random", deadline=None, max_examples=100)
hypothesis.settings.load_profile(os.environ.get("UFM_HYPOTHESIS_PROFILE", "ufm"))

SEED = int(os.environ.get("UFM_TEST_SEED", "0"))


@pytest.fixture
def getkey():
  """Fresh keys from a fixed seed (set UFM_TEST_SEED to randomise locally; the seed is in failure reports)."""
  key = jax.random.key(SEED)
  count = 0

  def _next():
    nonlocal count
    count += 1
    return jax.random.fold_in(key, count)
  return _next


def pytest_report_header(config):
  return f"ufm: UFM_TEST_SEED={SEED}, x64={jax.config.jax_enable_x64}, backend={jax.default_backend()}"
