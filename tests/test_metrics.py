"""Metrics: exact values on constructed geometries, a hand-computed case, values of the peer library
(rhubarbwu/neural-collapse, the library of Wu & Papyan 2024) on the same arrays, and invariances."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from helpers import assert_close
from ufm import metrics, theory
from ufm.problem import Params, make_problem

DATA = pathlib.Path(__file__).parent / "data"


def _collapsed(M_dxK, W, counts, noise=0.0, key=None):
  labels = np.repeat(np.arange(len(counts)), counts)
  H = np.asarray(M_dxK)[:, labels]
  if noise:
    H = H + noise * np.asarray(jax.random.normal(key, H.shape))
  return jnp.asarray(H), jnp.asarray(labels), jnp.asarray(W)


@pytest.mark.parametrize("K, d", [(3, 2), (4, 6), (10, 12)])
def test_exact_values_on_a_simplex_etf(K, d, getkey):
  """ufm/theory/derivations.md §0.3 recipe: collapsed ETF features, self-dual classifier, balanced (b = 0)."""
  M = 2.0 * theory.simplex_etf(K, d, key=getkey())
  problem = make_problem((3,) * K, d=d, lam_W=1.0, lam_H=1.0, loss="ce")
  H, _, W = _collapsed(M, 0.7 * M.T, (3,) * K)
  got = metrics.compute(Params(W=W, H=H, b=jnp.zeros(K)), problem)
  pred_targets = theory.balanced_metric_targets(K, etf_W=True, orthogonal_W=False)
  for name, target in pred_targets.items():
    assert_close(got[name], target, "exact", name)
  assert_close(metrics.cosines(M), np.full(K * (K - 1) // 2, -1 / (K - 1)), "exact")
  assert_close(got["bias_relation"], 0.0, "exact")


def test_exact_values_on_an_orthogonal_frame(getkey):
  K, d = 4, 5
  F = 1.5 * theory.orthogonal_frame(K, d, key=getkey())
  problem = make_problem((2,) * K, d=d, lam_W=1.0, lam_H=1.0, loss="mse")
  H, _, W = _collapsed(F, 0.5 * F.T, (2,) * K)
  got = metrics.compute(Params(W=W, H=H, b=jnp.zeros(K)), problem)
  for name, target in theory.balanced_metric_targets(K, etf_W=False, orthogonal_W=True).items():
    assert_close(got[name], target, "exact", name)


def test_hand_computed_non_collapsed_case():
  """d = 1, K = 2: h = (0, 2 | 4, 6). Means 1, 5; mu_G = 3; Sigma_W = 1, Sigma_B = 4.
  NC1 = (1/4)/2; ratio 1/4; CDNV = ((1+1)/2)/16; W = (-1, 1), b = 0: decisions (0,1,1,1), NCC (0,0,1,1) -> 3/4."""
  H, y = jnp.array([[0.0, 2.0, 4.0, 6.0]]), jnp.array([0, 0, 1, 1])
  assert_close(metrics.nc1(H, y, 2), 0.125, "exact")
  assert_close(metrics.nc1_ratio(H, y, 2), 0.25, "exact")
  assert_close(metrics.cdnv(H, y, 2), 1 / 16, "exact")
  assert_close(metrics.cdnv(H, y, 2, dist_exp=2.0), 1 / 256, "exact")
  assert_close(metrics.nc4(jnp.array([[-1.0], [1.0]]), H, jnp.zeros(2), y, 2), 0.75, "exact")
  assert_close(metrics.bias_relation(jnp.array([[-1.0], [1.0]]), H, jnp.array([1.0, 1.0])), math.hypot(-2, 4), "exact")


def test_nc1_is_zero_not_nan_when_everything_collapses_to_zero():
  H, y = jnp.zeros((3, 6)), jnp.array([0, 0, 1, 1, 2, 2])
  assert float(metrics.nc1(H, y, 3)) == 0.0
  assert float(metrics.nc1_ratio(H, y, 3)) == 0.0
  # rank-deficient Sigma_B (all means on a line) with within-class spread off that line: finite, >= 0
  H2 = jnp.array([[0.0, 0.0, 1.0, 1.0, 2.0, 2.0], [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]])
  v = float(metrics.nc1(H2, y, 3))
  assert np.isfinite(v) and v >= 0.0


PEER = json.loads((DATA / "rhubarbwu_values.json").read_text())


@pytest.mark.parametrize("case", ["a", "b", "c"])
def test_values_agree_with_rhubarbwu_neural_collapse(case):
  """Pinned values from rhubarbwu/neural-collapse on tests/data/rhubarbwu_cases.npz (see the JSON's provenance).
  Differences of convention, on purpose: the library has no equinorm/UNC3 reducer (the paper reports
  std/mean with ddof 1, as here); its `interference` std is ddof 0 over pairs (ufm: pass ddof=0)."""
  z = np.load(DATA / "rhubarbwu_cases.npz")
  H, y, W = jnp.asarray(z[f"{case}__H"].T), jnp.asarray(z[f"{case}__labels"]), jnp.asarray(z[f"{case}__W"])
  K = W.shape[0]
  M = metrics.class_means(H, y, K)[0] - jnp.mean(H, axis=1)[:, None]
  want = PEER["cases"][case]
  got = {
      "nc1_pinv": metrics.nc1(H, y, K), "nc1_quot": metrics.nc1_ratio(H, y, K),
      "nc1_cdnv_exp1": metrics.cdnv(H, y, K), "nc1_cdnv_exp2": metrics.cdnv(H, y, K, dist_exp=2.0),
      "norms_cov_ddof1": metrics.equinorm(M), "interfere_cos_triu_std_ddof0": metrics.equiangularity(M, ddof=0),
      "kern_log_avg": metrics.gnc2(M), "kern_log_var": metrics.gnc2_var(M), "nc2_etf_err": metrics.etf_error(M),
      "nc3_dual_err": metrics.self_duality_etf(W, M), "simcos_cov_ddof1": metrics.unc3(W, M),
      "dists_mean": metrics.self_duality_classwise(W, M),
      "nc4_agree_weighted": metrics.nc4(W, H, jnp.zeros(K), y, K),
  }
  for name, value in want.items():
    assert_close(got[name], value, "peer", f"case {case}: {name}")


SHAPES = st.sampled_from([(3, 4, (3, 3, 3)), (4, 2, (2, 3, 4, 2)), (5, 6, (2,) * 5)])
SCALE_INVARIANT = ["nc1", "nc1_ratio", "cdnv", "equinorm_W", "equinorm_M", "equiangularity_W", "equiangularity_M",
                   "max_angle_W", "max_angle_M", "etf_error_W", "etf_error_M", "of_error_W", "of_error_M",
                   "self_duality", "self_duality_etf", "self_duality_classwise", "unc3", "gnc2", "gnc2_var", "nc4"]


def _random_config(shape, seed):
  K, d, counts = shape
  kW, kH, kM, kb = jax.random.split(jax.random.key(seed), 4)
  problem = make_problem(counts, d=d, lam_W=1.0, lam_H=1.0, loss="ce", bias=True)
  means = 3.0 * jax.random.normal(kM, (d, K))
  H = means[:, problem.labels] + jax.random.normal(kH, (d, problem.N))
  return problem, Params(W=jax.random.normal(kW, (K, d)), H=H, b=jax.random.normal(kb, (K,)))


@given(shape=SHAPES, seed=st.integers(0, 2**31 - 1))
def test_metrics_are_invariant_to_rotation_permutation_and_scale(shape, seed):
  problem, params = _random_config(shape, seed)
  base = jax.jit(metrics.compute)(params, problem)
  d, K = problem.d, problem.K
  Q = theory.random_orthonormal(jax.random.key(seed + 1), d, d)
  rot = jax.jit(metrics.compute)(params._replace(W=params.W @ Q.T, H=Q @ params.H), problem)
  for name in metrics.METRICS:  # every metric, bias relation included, is rotation invariant
    np.testing.assert_allclose(rot[name], base[name], rtol=1e-9, atol=1e-12, err_msg=name)
  scaled = jax.jit(metrics.compute)(params._replace(W=2.5 * params.W, H=0.3 * params.H, b=0.75 * params.b), problem)
  for name in SCALE_INVARIANT:
    np.testing.assert_allclose(scaled[name], base[name], rtol=1e-9, atol=1e-12, err_msg=name)
  if len(set(problem.counts)) == 1:  # permuting classes: relabel samples, permute rows of W and b
    perm = np.asarray(jax.random.permutation(jax.random.key(seed + 2), K))
    inv = np.argsort(perm)
    labels = np.asarray(problem.labels)
    order = np.argsort(inv[labels], kind="stable")  # regroup columns by new class
    permuted = Params(W=params.W[perm], H=params.H[:, order], b=params.b[perm])
    pm = jax.jit(metrics.compute)(permuted, problem)
    for name in metrics.METRICS:
      np.testing.assert_allclose(pm[name], base[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_metrics_vmap_equals_loop(getkey):
  problem, _ = _random_config((3, 4, (3, 3, 3)), 0)
  batch = [_random_config((3, 4, (3, 3, 3)), s)[1] for s in range(4)]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *batch)
  vm = jax.vmap(lambda p: metrics.compute(p, problem))(stacked)
  for i, p in enumerate(batch):
    one = metrics.compute(p, problem)
    for name in metrics.METRICS:
      np.testing.assert_allclose(vm[name][i], one[name], rtol=1e-12, atol=1e-14, err_msg=name)


def test_unknown_metric_name_lists_valid_ones():
  problem, params = _random_config((3, 4, (3, 3, 3)), 0)
  with pytest.raises(ValueError, match="unknown metric.*valid names: nc1, nc1_ratio"):
    metrics.compute(params, problem, ("nc9",))


def test_nc1_is_inf_without_class_separation_like_the_ratio_and_cdnv():
  H, y = jnp.array([[1.0, -1.0, 2.0, -2.0, 3.0, -3.0]]), jnp.array([0, 0, 1, 1, 2, 2])  # all means at 0
  for fn in (metrics.nc1, metrics.nc1_ratio, metrics.cdnv):
    assert float(fn(H, y, 3)) == np.inf, fn.__name__


def test_float32_distances_survive_a_large_offset():
  """Distances are formed after centring: an offset of 3000 (unit class separation, noise 1e-2) used to give
  CDNV = inf in float32 through cancellation in |a|^2 + |b|^2 - 2 a.b."""
  K, d = 4, 5
  M = np.asarray(theory.simplex_etf(K, d), np.float64)
  noise = 1e-2 * np.asarray(jax.random.normal(jax.random.key(0), (d, 5 * K)))
  y = np.repeat(np.arange(K), 5)
  H64 = M[:, y] + noise
  exact = float(metrics.cdnv(jnp.asarray(H64), jnp.asarray(y), K))
  H32 = jnp.asarray(H64 + 3000.0, jnp.float32)
  got = float(metrics.cdnv(H32, jnp.asarray(y), K))
  assert abs(got - exact) <= 1e-2 * exact  # float32 spacing at 3000 is 2.4e-4, relative to noise 1e-2
  assert float(metrics.nc4(jnp.asarray(M.T, jnp.float32), H32, jnp.zeros(K, jnp.float32), jnp.asarray(y), K)) > 0


def test_metrics_ignore_b_on_a_bias_free_problem():
  problem, params = _random_config((3, 4, (3, 3, 3)), 0)
  free = make_problem((3, 3, 3), d=4, lam_W=1.0, lam_H=1.0, loss="ce", bias=False)
  a = metrics.compute(params, free)
  b = metrics.compute(params._replace(b=jnp.array([100.0, 0.0, 0.0])), free)
  for name in metrics.METRICS:
    np.testing.assert_allclose(a[name], b[name], err_msg=name)
