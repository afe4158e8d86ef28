"""Answers that can be trusted: metrics on bad features, divergence that is seen, verdicts, and float64 by default."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from helpers import assert_close
from ufm import cli, metrics, solvers, tiled, verdict
from ufm.deep import make_deep_problem
from ufm.problem import Params

K, n, d = 4, 6, 5


def _features(seed=0, spread=1.0, dtype=np.float64):
  """Random class means (d x K) and features around them with the given within-class spread."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(K), n)
  H = rng.normal(size=(d, K))[:, labels] + spread * rng.normal(size=(d, K * n))
  return jnp.asarray(H.astype(dtype)), jnp.asarray(labels)


def _problem_and_params(H):
  p = ufm.make_problem(ufm.balanced_counts(K, n), d=d, lam_W=1e-2, lam_H=1e-2, loss="ce", bias=True)
  rng = np.random.default_rng(1)
  return p, Params(W=jnp.asarray(rng.normal(size=(K, d))), H=H, b=jnp.asarray(rng.normal(size=K)))


# ------------------------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_give_nan_for_every_metric_never_collapse(bad):
  """One NaN or inf in H (or in W) makes every metric NaN: dense, tiled, jitted and the networks' measure."""
  H, _ = _features()
  p, params = _problem_and_params(H.at[2, 5].set(bad))
  for name, v in ufm.metrics.compute(params, p).items():
    assert np.isnan(float(v)), name
  for name, v in jax.jit(ufm.metrics.compute, static_argnames="names")(params, p).items():
    assert np.isnan(float(v)), name
  for name, v in tiled.compute(params, p).items():
    assert np.isnan(float(v)), name
  out = ufm.networks.measure(np.asarray(params.H).T, np.asarray(p.labels))
  assert all(np.isnan(v) for v in out.values()), out
  p, params = _problem_and_params(H)
  bad_W = params._replace(W=params.W.at[0, 0].set(bad))
  for name, v in ufm.metrics.compute(bad_W, p).items():
    assert np.isnan(float(v)), name


@pytest.mark.parametrize("scale", [1e-160, 1e-100, 1e-20, 1e20, 1e100, 1e200])
def test_nc1_is_invariant_to_the_scale_of_the_features_over_the_float64_range(scale):
  """NC1 and the NC1 ratio of s H equal those of H for s from 1e-160 to 1e200 (they used to read 0 or NaN)."""
  H, y = _features()
  for fn in (metrics.nc1, metrics.nc1_ratio, metrics.cdnv):
    assert_close(fn(H * scale, y, K), fn(H, y, K), "scale_invariance", fn.__name__)


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_nc1_is_scale_invariant_in_float32(scale):
  """The same in float32 at 1e-20 and 1e20 (the squares under- and overflow without standardisation)."""
  H, y = _features(dtype=np.float32)
  s = jnp.float32(scale)
  for fn in (metrics.nc1, metrics.nc1_ratio):
    assert_close(fn(H * s, y, K), fn(H, y, K), "scale_invariance_float32", fn.__name__)


def test_nc1_of_near_collapsed_features_survives_a_large_common_offset():
  """A common offset of 1e10 moves NC1 only by the rounding of the input (it moved 2.6e-7 to 2.5e4 before)."""
  H, y = _features(spread=1e-4)
  assert_close(metrics.nc1(H + 1e10, y, K), metrics.nc1(H, y, K), "offset_rounding")
  assert_close(metrics.nc1_ratio(H + 1e10, y, K), metrics.nc1_ratio(H, y, K), "offset_rounding")


def test_degenerate_features_have_their_documented_values_eagerly_and_under_jit():
  """H = constant: 0 (one point); equal class means with spread: inf; separated collapsed classes: ~0."""
  _, y = _features()
  rng = np.random.default_rng(3)
  X = rng.normal(size=(d, n))
  same_means = jnp.asarray(np.repeat(X, K, axis=1))  # column i is X[:, i // K]: every class holds the same n points
  y_same = jnp.asarray(np.tile(np.arange(K), n))
  M = rng.normal(size=(d, K))
  cases = [(jnp.full((d, K * n), 3.7), y, 0.0), (same_means, y_same, np.inf)]
  for fn in (metrics.nc1, metrics.nc1_ratio, metrics.cdnv):
    jitted = jax.jit(fn, static_argnums=2)
    for H, labels, expected in cases:
      assert float(fn(H, labels, K)) == expected, (fn.__name__, expected)
      assert float(jitted(H, labels, K)) == expected, (fn.__name__, expected, "jit")
    collapsed = jnp.asarray(M[:, np.asarray(y)])
    assert 0.0 <= float(fn(collapsed, y, K)) < 1e-28, fn.__name__


# ------------------------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("optimizer, lr", [("sgd", 100.0), ("adam", 1000.0)])
def test_a_blow_up_is_flagged_diverged_not_only_an_overflow(optimizer, lr):
  """CE with lr = 100 (to 8e113 before) and Adam with lr = 1000 (1.1 to 6.7e6): diverged, stopped before the
  bound DIVERGENCE_RATIO x f(start); a sane learning rate is not flagged."""
  p = ufm.make_problem(ufm.balanced_counts(4, 5), d=6, lam_W=5e-3, lam_H=5e-3, loss="ce")
  sol = ufm.gradient_descent(jax.random.key(0), p, ufm.gd_hparams(lr), optimizer=optimizer, num_steps=200,
                             log_every=10)
  f0 = float(p.value(p.init(jax.random.key(0), 0.1)))
  assert bool(sol.diverged) and not bool(sol.converged)
  assert float(sol.objective) <= solvers.DIVERGENCE_RATIO * f0
  assert verdict.verdict(sol, p).status == "diverged"
  ok = ufm.gradient_descent(jax.random.key(0), p, ufm.gd_hparams(0.5, momentum=0.9), num_steps=2000, log_every=100)
  assert not bool(ok.diverged)


# ------------------------------------------------------------------------------------------- verdicts

def _held_out():
  """The deep MSE-UFM whose single L-BFGS starts end at a local minimum (0.2506 vs the optimum 0.1259)."""
  return make_deep_problem((6, 6, 6), widths=(4, 4), lam_W=0.02, lam_H=0.01, loss="mse", bias=False)


def test_multistart_finds_the_global_optimum_where_one_start_is_local():
  """Seeds 0-7 of the held-out deep problem: some single starts are "local" with the gap stated; the best of 8
  vmapped starts is "global"."""
  p = _held_out()
  hp = ufm.lbfgs_hparams(init_scale=0.1)
  ms = verdict.multistart(ufm.lbfgs_reference, jax.random.key(0), p, hp, restarts=8, max_steps=3000)
  statuses = []
  keys = jax.random.split(jax.random.key(0), 8)
  for i in range(8):
    sol = ufm.lbfgs_reference(keys[i], p, hp, max_steps=3000)
    assert_close(sol.objective, ms.objectives[i], "reference", f"start {i}")  # the vmapped starts are these solves
    statuses.append(verdict.verdict(sol, p))
  local = [v for v in statuses if v.status == "local"]
  assert local and all(v.gap > 0.5 and "above the global optimum" in v.message for v in local)
  best = verdict.verdict(ms.best, p)
  assert best.status == "global" and ms.spread > 0.1, best
  assert_close(ms.best.objective, ufm.theory.predict(p).objective, "reference")


def test_verdict_statuses():
  """not converged, below theory (a wrong optimum passed in), no closed form, global."""
  p = ufm.make_problem(ufm.balanced_counts(3, 2), d=3, lam_W=1e-2, lam_H=1e-2, loss="mse")
  sol = ufm.lbfgs_reference(jax.random.key(0), p, ufm.lbfgs_hparams())
  assert verdict.verdict(sol, p).status == "global"
  assert verdict.verdict(sol, p, optimum=float(sol.objective) * 1.5).status == "below theory"
  short = ufm.lbfgs_reference(jax.random.key(0), p, ufm.lbfgs_hparams(), max_steps=1)
  assert verdict.verdict(short, p).status == "not converged"
  narrow = ufm.make_problem(ufm.balanced_counts(4, 2), d=2, lam_W=1e-2, lam_H=1e-2, loss="ce")  # d < K - 1
  with pytest.raises(ufm.theory.NoClosedFormError):
    ufm.theory.predict(narrow)
  v = verdict.verdict(ufm.lbfgs_reference(jax.random.key(0), narrow, ufm.lbfgs_hparams()), narrow)
  assert v.status == "no closed form" and np.isnan(v.gap) and np.isnan(v.optimum)


# ------------------------------------------------------------------------------------------- the CLI

def test_cli_solve_is_float64_by_default_and_gives_a_verdict(capsys):
  """The held-out command of the trust review, with the CLI's defaults: float64, 8 starts for depth 2, global."""
  argv = ["solve", "--loss", "mse", "--no-bias", "--depth", "2", "--counts", "6,6,6", "--d", "4", "--lam-W", "0.02",
          "--lam-H", "0.01", "--solver", "lbfgs", "--json"]
  assert cli.main(argv) == 0
  rec = json.loads(capsys.readouterr().out)
  assert rec["config"]["dtype"] == "float64" and rec["verdict"] == "global" and rec["starts"]["restarts"] == 8
  assert cli.main(argv[:-1] + ["--restarts", "1", "--seed", "2"]) == 0
  table = capsys.readouterr().out
  assert "verdict: local" in table and "above the global optimum" in table


def test_a_float32_reference_solve_warns_and_says_how_to_switch():
  with pytest.warns(UserWarning, match="enable float64"):
    solvers.lbfgs_hparams(dtype="float32")
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    solvers.lbfgs_hparams(dtype="float64")


# ------------------------------------------------------------------------------------------- stored results

def test_tampered_or_incomplete_results_are_refused_in_one_line(tmp_path, capsys):
  """A value changed in results.npz (same shapes) fails its checksum; results without a variable the plot reads
  exit 2 with one line instead of a KeyError traceback."""
  from experiments import __main__ as experiments_cli
  from experiments import runner
  argv = ["run", "bias_mse_gram", "--smoke", "--out", str(tmp_path), "--no-progress"]
  assert experiments_cli.main(argv) == 0
  capsys.readouterr()
  run_dir = next(p for p in (tmp_path / "bias_mse_gram").iterdir() if p.is_dir() and "." not in p.name)
  ds = runner.load_results(run_dir)
  name = next(v for v in ds.data_vars if ds[v].dtype.kind == "f")
  with np.load(run_dir / "results.npz", allow_pickle=False) as z:
    arrays = {k: z[k].copy() for k in z.files}
  arrays[f"variables/{name}"] = arrays[f"variables/{name}"] * 1.001  # same shape and dtype, other values
  np.savez(run_dir / "results.npz", **arrays)
  with pytest.raises(runner.ResultsError, match="checksum"):
    runner.load_results(run_dir)
  # results that load (schema and checksum rewritten) but lack a variable the plot reads
  runner.save_results(ds.drop_vars(list(ds.data_vars)[:3]), run_dir)
  assert experiments_cli.main(["plot", "bias_mse_gram", "--smoke", "--out", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "do not fit experiments.bias_mse_gram.plot" in err[0] and "--recompute" in err[0], err


def test_wrong_shapes_to_compute_are_named():
  """A transposed H, a transposed W or a wrong b: ValueError naming the array and the expected shape."""
  H, _ = _features()
  p, params = _problem_and_params(H)
  for bad, match in ((params._replace(H=params.H.T), r"H has shape \(24, 5\).*transposed"),
                     (params._replace(W=params.W.T), r"W has shape \(5, 4\).*transposed"),
                     (params._replace(b=params.b[:2]), r"b has shape \(2,\)")):
    with pytest.raises(ValueError, match=match):
      ufm.metrics.compute(bad, p)
