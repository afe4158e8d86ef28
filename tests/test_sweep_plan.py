"""The sweep planner: planned sweeps equal the one-program sweep, memory-budget chunking, sharding.

Every comparison is against ``plan="plain"``, the nested-``vmap`` program of the unplanned sweep, in float64
with :data:`ufm.testing.TOL` ``["plan"]`` (measured: bitwise on this CPU).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import ufm
from ufm import sweep as sw
from ufm.testing import tol

ROOT = Path(__file__).resolve().parents[1]


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a.solution), jax.tree.leaves(b.solution), strict=True):
    assert np.shape(x) == np.shape(y)
    np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), equal_nan=True, **tol("plan"))


@pytest.fixture(scope="module")
def gd_case():
  p = ufm.make_problem(ufm.balanced_counts(3, 2), d=4, lam_W=1e-2, lam_H=2e-2, loss="mse", bias=True)
  hp = ufm.gd_hparams(0.5, momentum=0.5)
  kw = dict(num_steps=40, log_every=10)
  axes = {"lam_W": [1e-2, 3e-2, 5e-2], "seed": [0, 1, 2, 3, 4]}  # 15 configurations: padding is exercised
  return p, hp, kw, axes, sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan="plain", **kw)


def test_planned_and_budgeted_sweeps_equal_the_plain_sweep(gd_case):
  """15 configurations in batches of 4, 4 calls (the last one padded); then the same calls chosen by the planner
  from a memory budget that holds one batch (the compiled program is reused)."""
  p, hp, kw, axes, plain = gd_case
  r = sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=dict(batch=4, chunk=4), **kw)
  assert r.plan[:4] == (1, 4, 4, False) and r.plan.source == "user"
  assert r.solution.objective.shape == (3, 5) and r.solution.trace.objective.shape == (3, 5, 4)
  _assert_same(r, plain)
  before = sw._program.mapped._cache_size()  # new axis values are arguments: no retrace
  sw.sweep(ufm.gradient_descent, p, hp, axes={"lam_W": [2e-2, 4e-2, 6e-2], "seed": [5, 6, 7, 8, 9]},
           plan=dict(batch=4, chunk=4), **kw)
  assert sw._program.mapped._cache_size() == before
  roomy = sw.plan_sweep(ufm.gradient_descent, p, hp, axes=axes, plan=dict(batch=4), memory_budget=60_000, **kw)
  assert roomy.bytes_per_config > 0 and roomy.budget == 60_000  # estimated from the compiled program
  assert roomy.chunk == 16  # everything fits: one call of 15 configurations (padded to 4 batches)
  budget = roomy.batch * roomy.bytes_per_config + 100  # room for one batch per call
  r = sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=dict(batch=4), memory_budget=budget, **kw)
  assert r.plan.chunk == r.plan.batch == 4 and r.plan.budget == budget
  _assert_same(r, plain)
  with pytest.raises(ValueError, match="memory_budget = 100 bytes is too small"):
    sw.plan_sweep(ufm.gradient_descent, p, hp, axes=axes, plan=dict(batch=4), memory_budget=100, **kw)


@pytest.mark.slow
def test_planned_resumable_sweep_equals_the_plain_sweep(gd_case):
  """chunk_steps (time chunks, checkpoints, progress) composed with a plan: init, advance, finish all planned."""
  p, hp, kw, axes, plain = gd_case
  for plan in (dict(batch=2, chunk=4), dict(memory_budget=20_000)):
    budget = plan.pop("memory_budget", None)
    r = sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=plan or "auto", memory_budget=budget, chunk_steps=20,
                 progress=True, **kw)
    assert not r.plan.plain
    _assert_same(r, plain)


@pytest.mark.slow
def test_a_sweep_of_1e5_configurations_runs_in_budgeted_calls():
  """10^5 configurations under a 4 MB budget: the planner splits them into calls; the numbers equal one program."""
  p = ufm.make_problem(ufm.balanced_counts(2, 1), d=1, lam_W=1e-2, lam_H=1e-2, loss="mse")
  hp = ufm.gd_hparams(0.1)
  axes = {"lam_H": np.linspace(0.0, 0.1, 100), "seed": np.arange(1000)}
  kw = dict(num_steps=4, log_every=2)
  r = sw.sweep(ufm.gradient_descent, p, hp, axes=axes, memory_budget=4_000_000, **kw)
  per_call = r.plan.chunk * r.plan.devices
  assert 1 < -(-100_000 // per_call) and r.solution.params.H.shape == (100, 1000, 1, 2)
  _assert_same(r, sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan="plain", **kw))


@pytest.mark.slow
def test_planned_sweep_of_another_problem_class_and_of_lbfgs():
  """The planner and executor only use the problem protocol: a VicinityProblem (axis ``beta``) and L-BFGS."""
  from ufm import vicinity
  counts = ufm.balanced_counts(3, 2)
  H0 = vicinity.noisy_collapsed_features(jax.random.key(1), counts, 3, within=0.1)
  vp = vicinity.make_vicinity_problem(H0, counts, lam_W=0.1, lam_H=0.1, beta=1.0)
  axes = {"beta": [0.5, 1.0, 2.0], "seed": [0, 1]}
  kw = dict(max_steps=60)
  plain = sw.sweep(ufm.lbfgs_reference, vp, ufm.lbfgs_hparams(), axes=axes, plan="plain", **kw)
  r = sw.sweep(ufm.lbfgs_reference, vp, ufm.lbfgs_hparams(), axes=axes, plan=sw.SweepPlan(devices=1, batch=2, chunk=4),
               **kw)
  assert r.plan.chunk == 4 and np.isfinite(np.asarray(r.solution.objective)).all()
  _assert_same(r, plain)


def test_bad_plans_are_refused_before_compiling(gd_case):
  p, hp, kw, axes, _ = gd_case
  bad = [("fast", "plan = 'fast': allowed"), (dict(batch=0), "plan batch = 0 is out of range"),
         (dict(devices=len(jax.devices()) + 1), "plan devices = .* out of range"),
         (dict(batch=4, chunk=6), "chunk = 6 is not a multiple of batch = 4"),
         (dict(width=3), "unknown keys \\['width'\\]"), (3, "plan = 3: allowed")]
  for plan, match in bad:
    with pytest.raises(ValueError, match=match):
      sw.sweep(ufm.gradient_descent, p, hp, axes=axes, plan=plan, **kw)
  with pytest.raises(ValueError, match="memory_budget = 0 is out of range"):
    sw.sweep(ufm.gradient_descent, p, hp, axes=axes, memory_budget=0, **kw)


def test_small_sweeps_stay_one_program():
  p = ufm.make_problem(ufm.balanced_counts(2, 2), d=2, lam_W=1e-2, lam_H=1e-2, loss="ce")
  small = sw.plan_sweep(ufm.gradient_descent, p, ufm.gd_hparams(0.1), axes={"seed": [0, 1, 2]}, num_steps=10,
                        log_every=10)
  assert small.plain and small.source == "plain" and (small.devices, small.batch) == (1, 3)


@pytest.mark.slow
def test_large_cpu_sweeps_calibrate_once():
  p = ufm.make_problem(ufm.balanced_counts(2, 2), d=2, lam_W=1e-2, lam_H=1e-2, loss="ce")
  hp = ufm.gd_hparams(0.1)
  sw.plan._CALIBRATION.clear()
  big = dict(axes={"seed": np.arange(12)}, num_steps=10**9, log_every=10**9)  # planned only, never run
  first = sw.plan_sweep(ufm.gradient_descent, p, hp, **big)
  again = sw.plan_sweep(ufm.gradient_descent, p, hp, **big)
  if jax.devices()[0].platform == "cpu" and len(jax.devices()) == 1:  # the default suite
    assert first.source == "calibrated" and again.source == "cached" and first.batch == again.batch
    assert first.batch in (1, 2, 4, 8) and first.chunk % first.batch == 0
  else:  # an accelerator (or several host devices): every configuration of a device in one batch
    assert first.source == again.source == "heuristic" and first.batch * first.devices >= 12


_SHARDED = r"""
import json, os, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import ufm
from ufm import sweep as sw
assert len(jax.devices()) == 2, jax.devices()
p = ufm.make_problem(ufm.balanced_counts(3, 2), d=4, lam_W=1e-2, lam_H=2e-2, loss="ce", bias=False)
hp = ufm.gd_hparams(0.5, momentum=0.5)
kw = dict(axes={"lam_W": [1e-2, 3e-2, 5e-2], "seed": [0, 1, 2]}, num_steps=40, log_every=10)
plain = sw.sweep(ufm.gradient_descent, p, hp, plan="plain", **kw)
two = sw.sweep(ufm.gradient_descent, p, hp, plan=dict(devices=2, batch=2), **kw)
auto = sw.plan_sweep(ufm.gradient_descent, p, hp, **kw)
def diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0.0))
             for x, y in zip(jax.tree.leaves(a.solution), jax.tree.leaves(b.solution), strict=True))
json.dump(dict(devices=[two.plan.devices, auto.devices], two_vs_plain=diff(two, plain),
               shape=list(np.shape(two.solution.objective))), sys.stdout)
"""


def test_sharded_sweep_over_two_host_devices_equals_the_unsharded_sweep():
  """Two forced host devices (set before JAX starts, hence a subprocess): the sharded sweep (9 configurations,
  batches of 2: 3 batches per device, one padded) equals the one-device plain sweep to TOL["plan"] (measured:
  bitwise); the automatic plan shards over both devices."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(ROOT),
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads(out.stdout.strip().splitlines()[-1])
  assert res["devices"] == [2, 2] and res["shape"] == [3, 3]
  assert res["two_vs_plain"] <= tol("plan")["atol"]
