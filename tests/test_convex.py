"""The convex reference of the imbalanced CE-UFM (ufm.convex): certificates, agreement with L-BFGS on the full
non-convex problem, the balanced closed form, SELI (ufm/theory/derivations.md §5.6, §9.3) and minority collapse
(§5.5, §9.4)."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from helpers import assert_close
from ufm import convex

KKT_TOL = 1e-8  # the required bound on the dimensionless KKT residual (the solver stops at 1e-11)


def _lbfgs(counts, lam, lam_b, bias, d, key, max_steps=4000):
  p = ufm.make_problem(counts, d=d, lam_W=lam, lam_H=lam, lam_b=lam_b, bias=bias)
  return p, ufm.lbfgs_reference(key, p, ufm.lbfgs_hparams(gtol=1e-11), max_steps=max_steps)


# ------------------------------------------------------------------------------------------ input checks

@pytest.mark.parametrize("kwargs, match", [
    (dict(counts=(3, 0, 2)), r"counts .* out of range; allowed range: > 0"),
    (dict(counts=(3,)), r"counts has shape \(1,\); allowed: \(\.\.\., K\) with K >= 2"),
    (dict(counts=(3, np.nan)), "counts .* not finite"),
    (dict(lam_W=0.0), r"lam_W = 0.0 is out of range; allowed range: > 0"),
    (dict(lam_H=-1e-3), "lam_H .* out of range"),
    (dict(lam_b=0.1, bias=False), "lam_b .* no effect without a bias"),
    (dict(lam_b=-0.1), "lam_b .* out of range"),
    (dict(bias="yes"), "bias = 'yes' is not a boolean"),
    (dict(max_iters=0), "max_iters = 0 is out of range"),
    (dict(max_iters=2.5), "max_iters = 2.5 is out of range"),
    (dict(lam_W=np.ones(3), lam_H=np.ones(2)), "broadcast"),
])
def test_bad_input_raises_value_error_naming_the_parameter(kwargs, match):
  args = dict(counts=(3, 2), lam_W=1e-2, lam_H=1e-2, lam_b=0.0, bias=True) | kwargs
  with pytest.raises(ValueError, match=match):
    convex.ce_convex(args.pop("counts"), args.pop("lam_W"), args.pop("lam_H"), **args)


def test_bad_hparams_and_minority_index_raise():
  with pytest.raises(ValueError, match="rank_rtol"):
    convex.convex_hparams(rank_rtol=1.0)
  with pytest.raises(ValueError, match="K_A = 3 is out of range"):
    convex.minority_stats(jnp.ones((4, 2)), 3)


def test_iteration_cap_is_reported_not_nan():
  sol = convex.ce_convex((10, 10, 2, 2), 1e-3, 1e-3, bias=False, max_iters=2)
  assert not bool(sol.converged) and not bool(sol.diverged)
  assert np.isfinite(float(sol.objective)) and np.isfinite(float(sol.kkt)) and int(sol.num_steps) == 2


# ------------------------------------------------------------------------------------------ certificates

@hypothesis.given(seed=st.integers(0, 2**31 - 1), K=st.sampled_from([4]), bias=st.booleans(),
                  log_lam=st.floats(-4.5, -1.5), log_lam_b=st.floats(-3, 0))
@hypothesis.settings(max_examples=12)  # K fixed: each K compiles once per bias setting (budget)
def test_kkt_certificate_on_random_imbalanced_problems(seed, K, bias, log_lam, log_lam_b):
  rng = np.random.default_rng(seed)
  counts = rng.integers(1, 30, size=K).astype(float) + rng.uniform(0, 1, size=K)  # real counts are allowed
  lam_b = 10**log_lam_b if bias and seed % 2 else 0.0
  sol = convex.ce_convex(counts, 10**log_lam, 10**log_lam * rng.uniform(0.5, 2), lam_b, bias=bias)
  assert bool(sol.converged) and not bool(sol.diverged), (sol.kkt, sol.num_steps)
  for r in (sol.kkt, sol.subgrad_range, sol.subgrad_cross, sol.subgrad_excess):
    assert float(r) <= KKT_TOL, (sol.kkt, sol.subgrad_range, sol.subgrad_cross, sol.subgrad_excess)


@pytest.mark.parametrize("counts, lam, lam_b, bias", [
    ((12, 7, 4, 1), 3e-3, 0.05, True),
    pytest.param((10, 10, 2, 2), 1e-3, 0.0, False, marks=pytest.mark.slow),
    pytest.param((10, 10, 2, 2), 1e-3, 0.0, True, marks=pytest.mark.slow),
    pytest.param((6, 5, 1), 1e-2, 0.0, True, marks=pytest.mark.slow),
    pytest.param((8, 3, 3, 1), 3e-4, 0.0, False, marks=pytest.mark.slow),
])
def test_convex_minimum_meets_nonconvex_lbfgs(counts, lam, lam_b, bias, getkey):
  """f(L-BFGS) >= min F always (the reduction is a lower bound); equal to 1e-8 relative (here: ~1e-14)."""
  sol = convex.ce_convex(counts, lam, lam, lam_b, bias=bias)
  assert bool(sol.converged)
  d = len(counts)
  p, ref = _lbfgs(counts, lam, lam_b, bias, d, getkey())
  assert bool(ref.converged)
  gap = (float(ref.objective) - float(sol.objective)) / abs(float(sol.objective))
  assert -1e-12 <= gap <= 1e-8, gap
  # the convex solution, mapped back to (W, H, b), is a stationary point of the full objective with that value
  params = convex.ufm_params(sol, p)
  assert_close(ufm.objective(params, p), sol.objective, "exact")
  g = jax.grad(ufm.objective)(params, p)
  g = g if bias else g._replace(b=jnp.zeros_like(g.b))
  assert float(jnp.sqrt(sum(jnp.sum(x**2) for x in g))) <= 1e-8
  # the Grams of the two solutions agree (the minimiser is unique up to rotation here)
  GW = convex.classifier_gram(sol.X, lam, lam)
  assert_close(ref.params.W @ ref.params.W.T, GW, "reference_metric")
  assert int(sol.rank) <= d


@pytest.mark.parametrize("bias, lam_b", [(False, 0.0), (True, 0.0), (True, 0.1)])
def test_balanced_counts_reduce_to_the_closed_form(bias, lam_b):
  K, n = 4, 5
  lams = np.geomspace(1e-4, 0.2, 9)  # crosses the collapse threshold K sqrt(n) lam = 1 at lam = 0.11
  sol = convex.ce_convex((n,) * K, lams, lams, lam_b, bias=bias)
  cf = ufm.theory.ce_balanced(K, n, lams, lams)
  assert bool(jnp.all(sol.converged))
  assert_close(sol.objective, cf.objective, "reference")
  GW = jax.vmap(convex.classifier_gram)(sol.X, lams, lams)
  assert_close(jnp.diagonal(GW, axis1=1, axis2=2), np.broadcast_to(np.asarray(cf.norm_w_sq)[:, None], (9, K)),
               "reference_metric")
  alive = np.asarray(cf.norm_w_sq) > 0
  ETF = ufm.theory.etf_gram(K)
  for G, on in zip(GW, alive):
    if on:
      assert_close(G / jnp.trace(G) * K, ETF, "reference_metric")
  np.testing.assert_array_equal(np.asarray(sol.rank), np.where(alive, K - 1, 0))


def test_batched_solve_equals_one_at_a_time_and_depends_on_lam_W_lam_H_only():
  counts = np.array([[10, 10, 2, 2], [9, 5, 3, 1]], float)
  lams = np.array([1e-3, 1e-2])
  batch = convex.ce_convex(counts[:, None, :], lams[None, :], lams[None, :], bias=False)
  for i in range(2):
    for j in range(2):
      one = convex.ce_convex(counts[i], lams[j], lams[j], bias=False)
      assert_close(batch.X[i, j], one.X, "reference")
      assert_close(batch.objective[i, j], one.objective, "exact")
  # the convex problem sees mu = sqrt(lam_W lam_H) only: X and the objective are the same at lam_W/lam_H = 4
  skew = convex.ce_convex(counts[0], 2e-3, 0.5e-3, bias=False)
  assert_close(skew.X, batch.X[0, 0], "reference")


def test_convex_reference_sweeps_like_a_solver():
  p = ufm.make_problem((10, 10, 2, 2), d=4, lam_W=1e-3, lam_H=1e-3, bias=True)
  lam_Ws = np.array([1e-3, 4e-3])
  res = ufm.sweep.sweep(convex.convex_reference, p, convex.convex_hparams(), axes={"lam_W": lam_Ws})
  direct = convex.ce_convex((10, 10, 2, 2), lam_Ws, 1e-3, bias=True)
  assert_close(res.solution.objective, direct.objective, "exact")
  assert res.solution.X.shape == (2, 4, 4)


# ------------------------------------------------------------------------------------------ SELI

def test_seli_grams_are_the_simplex_etf_when_balanced():
  GW, GH = convex.seli_grams(jnp.full((5,), 7.0))
  ETF = ufm.theory.etf_gram(5)
  assert_close(GW, ETF / jnp.linalg.norm(ETF), "exact")
  assert_close(GH, ETF / jnp.linalg.norm(ETF), "exact")


def test_seli_grams_match_the_sel_matrix_svd():
  """(ẐẐ^T)^{1/2} and the class-mean block of (Ẑ^TẐ)^{1/2} from the N-column SEL matrix Ẑ = (I - 11^T/K) Y."""
  counts = (5, 3, 2, 1)
  Y = ufm.make_labels(counts)
  K = len(counts)
  Zhat = (jnp.eye(K) - 1.0 / K) @ Y
  U, s, Vt = jnp.linalg.svd(Zhat, full_matrices=False)
  GW = (U * s[None, :]) @ U.T
  GHfull = (Vt.T * s[None, :]) @ Vt
  first = np.cumsum((0,) + counts[:-1])
  GH = GHfull[np.ix_(first, first)]  # one sample per class: the class-mean Gram (features collapse)
  TW, TH = convex.seli_grams(jnp.asarray(counts, float))
  assert_close(GW / jnp.linalg.norm(GW), TW, "exact")
  assert_close(GH / jnp.linalg.norm(GH), TH, "exact")


def test_seli_depends_on_the_ratios_only_and_has_no_minority_collapse():
  """Derivations §5.6: the SELI angles depend on the imbalance ratio only (scaling all counts changes nothing), and
  the minority classifiers of SELI are distinct (no minority collapse in the lam -> 0 limit; found: their cosine
  is 0.561 at R = 100 for K_A = K_B = 2)."""
  n = jnp.asarray((10.0, 10.0, 2.0, 2.0))
  for a, b in zip(convex.seli_grams(n), convex.seli_grams(7.0 * n)):
    assert_close(a, b, "exact")
  GW, _ = convex.seli_grams(jnp.asarray((100.0, 100.0, 1.0, 1.0)))  # R = 100
  cos = GW[2, 3] / jnp.sqrt(GW[2, 2] * GW[3, 3])
  assert abs(float(cos) - 0.5607) < 1e-4, cos  # distinct (cos < 1) even at R = 100


def test_distance_to_seli_decreases_monotonically_as_lam_goes_to_zero_step_imbalance():
  """Bias-free STEP imbalance (Thrampoulidis et al. 2022, Thm. 2 / Prop. 2). Found: strictly decreasing along
  lam = 1e-1 ... 1e-7, slowly (about 1/log(1/lam)); the derivations §5.6 table (one L-BFGS run) is reproduced."""
  counts = jnp.asarray((10, 10, 2, 2), float)
  lams = np.geomspace(1e-1, 1e-7, 13)
  sol = convex.ce_convex(counts, lams, lams, bias=False)
  assert bool(jnp.all(sol.converged))
  TW, TH = convex.seli_grams(counts)
  dW = np.asarray([convex.gram_distance(convex.classifier_gram(X, l, l), TW) for X, l in zip(sol.X, lams)])
  dH = np.asarray([convex.gram_distance(convex.feature_mean_gram(X, counts, l, l), TH) for X, l in zip(sol.X, lams)])
  assert np.all(np.diff(dW) < 0) and np.all(np.diff(dH) < 0), (dW, dH)
  # derivations §5.6 table (lam = 1e-2, 1e-3, 1e-4; 3 digits)
  np.testing.assert_allclose(dW[[2, 4, 6]], [0.133, 0.083, 0.062], atol=6e-4)
  np.testing.assert_allclose(dH[[2, 4, 6]], [0.204, 0.127, 0.094], atol=6e-4)
  assert dW[-1] < 0.04 and dH[-1] < 0.06
  # Prop. 2 (logits align with the SEL matrix): the class-level logits Z tend to A = I - 11^T/K, also slowly
  A = jnp.eye(4) - 0.25
  dZ = np.asarray([convex.gram_distance(Z, A) for Z in sol.Z])
  assert np.all(np.diff(dZ[1:]) < 0) and dZ[-1] < 0.05, dZ


@pytest.mark.parametrize("counts", [(10, 5, 2, 2), (10, 7, 4, 1), (10, 2, 2, 2)])
def test_distance_to_seli_decreases_for_other_imbalance_profiles_without_bias(counts):
  """Beyond the proved STEP case (long-tailed, irregular, one majority class): also strictly decreasing."""
  counts = jnp.asarray(counts, float)
  lams = np.geomspace(1e-2, 1e-7, 6)
  sol = convex.ce_convex(counts, lams, lams, bias=False)
  TW, _ = convex.seli_grams(counts)
  dW = np.asarray([convex.gram_distance(convex.classifier_gram(X, l, l), TW) for X, l in zip(sol.X, lams)])
  assert np.all(np.diff(dW) < 0) and dW[-1] < 0.05, dW


def test_with_an_unregularised_bias_the_limit_is_not_seli():
  """Found: with a free bias the distance to SELI does not go to 0 for STEP imbalance; it levels off
  (about 0.12 for W W^T and 0.56 for the class means at lam = 1e-7)."""
  counts = jnp.asarray((10, 10, 2, 2), float)
  lams = np.array([1e-5, 1e-6, 1e-7])
  sol = convex.ce_convex(counts, lams, lams, bias=True)
  TW, TH = convex.seli_grams(counts)
  dW = [float(convex.gram_distance(convex.classifier_gram(X, l, l), TW)) for X, l in zip(sol.X, lams)]
  dH = [float(convex.gram_distance(convex.feature_mean_gram(X, counts, l, l), TH)) for X, l in zip(sol.X, lams)]
  assert min(dW) > 0.1 and min(dH) > 0.5, (dW, dH)


# ------------------------------------------------------------------------------------------ minority collapse

def _minority(R, lam, *, K_A=5, K_B=5, n_B=100.0, bias=False, lam_b=0.0):
  counts = np.concatenate([np.full((np.size(R), K_A), 1.0) * (n_B * np.atleast_1d(R))[:, None],
                           np.full((np.size(R), K_B), n_B)], axis=1)
  sol = convex.ce_convex(counts, lam, lam, lam_b, bias=bias)
  W = jax.vmap(convex.classifier_factor, in_axes=(0, None, None))(sol.X, lam, lam)
  return sol, jax.vmap(lambda w: convex.minority_stats(w, K_A))(W)


def test_minority_classifiers_cosine_increases_to_one_and_they_coincide_at_a_finite_ratio():
  """Fang et al. 2021 (Thm. 5 proves only the limit; Finding 2 is numerical). Bias-free, K_A = K_B = 5, n_B = 100,
  lam = 1e-3. Found by the convex reference: cos(w_k, w_k') rises monotonically from -1/(K-1) and reaches 1
  *exactly* at a finite ratio (R in (16, 25]): the minority rows of X coincide (relative spread ~1e-15 while the
  minority norm is still O(1)); at larger R the minority classifiers vanish (w_k = 0)."""
  Rs = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 25.0, 30.0])
  sol, s = _minority(Rs, 1e-3)
  assert bool(jnp.all(sol.converged))
  cos, spread, norm = map(np.asarray, (s["cos_minor"], s["spread_minor"], s["norm_minor"]))
  assert abs(cos[0] + 1 / 9) < 1e-8
  assert np.all(np.diff(cos[:5]) > 0) and cos[4] < 0.9
  assert spread[4] > 0.1  # distinct at R = 16
  assert np.all(spread[5:] < 1e-6) and np.all(norm[5:] > 0.1), (spread, norm)  # coincide, non-zero
  assert np.all(np.asarray(sol.rank)[5:] == 5)  # the coincidence is a rank drop 9 -> K_A = 5, not a near miss


def test_coincidence_is_exact_not_a_near_miss():
  """At a coincident point the minority rows agree to rounding (~1e-15) at every KKT tolerance from 1e-7 to 1e-11:
  the singular-value thresholding makes the rank drop exactly, so the coincidence is not a slow approach."""
  spreads = []
  for tol in (1e-7, 1e-9, 1e-11):
    counts = np.r_[np.full(5, 2500.0), np.full(5, 100.0)]
    sol = convex.ce_convex(counts, 1e-3, 1e-3, bias=False, hparams=convex.convex_hparams(tol=tol))
    spreads.append(float(convex.minority_stats(convex.classifier_factor(sol.X, 1e-3, 1e-3), 5)["spread_minor"]))
  assert max(spreads) < 1e-12, spreads


@pytest.mark.slow
def test_minority_collapse_point_is_the_global_minimum_of_the_nonconvex_problem(getkey):
  """Counts scale out: (c n_k, mu / sqrt(c)) is the same convex problem. So a coincident point at small N
  (n_A = 100, n_B = 4, lam = 5e-3: same as n_B = 100, lam = 1e-3, R = 25) is checked with L-BFGS on the full UFM."""
  counts = (100,) * 5 + (4,) * 5
  sol = convex.ce_convex(counts, 5e-3, 5e-3, bias=False)
  p, ref = _lbfgs(counts, 5e-3, 0.0, False, 10, getkey(), max_steps=6000)
  gap = (float(ref.objective) - float(sol.objective)) / abs(float(sol.objective))
  assert -1e-12 <= gap <= 1e-8, gap
  s_ref = convex.minority_stats(ref.params.W, 5)
  assert float(s_ref["cos_minor"]) > 1 - 1e-6
