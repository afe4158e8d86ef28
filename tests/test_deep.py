"""Deep linear UFM (Dang et al. 2023, arXiv 2301.00437; Garrod & Keating 2024, arXiv 2410.23169).

Closed forms of ``ufm.theory`` (deep section) against float64 L-BFGS, their identities, depth 1 against
the plain UFM, and the documented counterexamples: Dang et al.'s "largest root" (their code's
``compute_x``) is not the global minimiser for ``M >= 2`` when ``rho_M <= b/n_k <= phi_max``; their
Theorem A.1 (the ETF is the global CE minimiser at every depth) fails for ``K >= 4, M >= 3``.
"""

import math

import hypothesis.strategies as st
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, rel_error
from hypothesis import given, settings

import ufm
from ufm import deep, theory


def _problem(counts, M, lam_W, lam_H, *, loss="mse", bias=False, width=6):
  return deep.make_deep_problem(counts, widths=(width,) * M, lam_W=lam_W, lam_H=lam_H, loss=loss, bias=bias)


_layer_metrics = jax.jit(lambda params, p: deep.layer_metrics(params, p, centred=False))


def _lam_H_for_ratio(ratio, n_k, N, M, lam_W):
  """lam_H such that b / n_k = ratio (b = M N lam_bar (N lam_H)^{1/M}, lam_W equal on all layers)."""
  return (ratio * n_k / (M * N * lam_W)) ** M / N


# ---------------------------------------------------------------------------- depth 1 is the plain UFM


@pytest.mark.parametrize("loss, bias", [("ce", True), pytest.param("mse", False, marks=pytest.mark.slow)])
def test_depth_one_reproduces_the_plain_ufm_bit_for_bit(loss, bias):
  counts = (5, 3, 2)
  p = ufm.make_problem(counts, d=4, lam_W=1e-3, lam_H=2e-3, loss=loss, bias=bias)
  q = deep.make_deep_problem(counts, widths=(4,), lam_W=1e-3, lam_H=2e-3, loss=loss, bias=bias)
  hp = ufm.gd_hparams(0.1, momentum=0.9)
  kw = dict(num_steps=60, log_every=20, trace_metrics=("nc1",))
  a = ufm.gradient_descent(jax.random.key(3), p, hp, **kw)
  b = ufm.gradient_descent(jax.random.key(3), q, hp, **kw)
  np.testing.assert_array_equal(a.params.W, b.params.Ws[0])
  np.testing.assert_array_equal(a.params.H, b.params.H)
  np.testing.assert_array_equal(a.trace.objective, b.trace.objective)
  for k in kw["trace_metrics"]:
    np.testing.assert_array_equal(a.trace.metrics[k], b.trace.metrics[k])
  assert float(ufm.objective(a.params, p)) == float(q.value(b.params))


@pytest.mark.slow
def test_depth_one_closed_forms_are_the_plain_ones():
  for bias in (False, True):
    a = theory.mse_minimiser((20, 10, 5, 5), 1e-3, 2e-3, bias=bias)
    b = theory.deep_mse_minimiser((20, 10, 5, 5), 1e-3, 2e-3, M=1, bias=bias)
    for f in ("objective", "gram_W", "gram_M", "logits_M", "b"):
      assert_close(getattr(b, f), getattr(a, f), "exact", f)
  lams = jnp.asarray([1e-3, 2e-2, 0.3])  # alive, alive, collapsed (K sqrt(n lam^2) = 1.2 >= 1)
  etf = jax.vmap(lambda lam: theory.deep_ce_etf(4, 1, 1, lam, lam).objective)(lams)
  assert_close(etf, theory.ce_balanced(4, 1, lams, lams).objective, "exact")
  q = deep.make_deep_problem((6,) * 4, widths=(5,), lam_W=1e-3, lam_H=2e-3, loss="mse", bias=True)
  p = ufm.make_problem((6,) * 4, d=5, lam_W=1e-3, lam_H=2e-3, loss="mse", bias=True)
  pd, pp = theory.predict(q), theory.predict(p)
  assert pd.geometry == pp.geometry == "simplex ETF"
  assert_close([pd.objective, pd.norm_W_sq, pd.norm_H_sq], [pp.objective, pp.norm_W_sq, pp.norm_H_sq], "exact")
  assert pd.metrics.keys() == pp.metrics.keys()
  assert_close([pd.metrics[k] for k in pp.metrics], list(pp.metrics.values()), "exact")


# ---------------------------------------------------------------------------- properties


@settings(max_examples=4)
@given(M=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16), loss=st.sampled_from(["ce", "mse"]))
def test_objective_is_invariant_under_inserting_Q_Qt_between_layers(M, seed, loss):
  q = _problem((3, 2, 2), M, [1e-2, 2e-2, 3e-2][:M], 5e-3, loss=loss, bias=True)
  params = q.init(jax.random.key(seed), 0.7)._replace(b=jnp.asarray([0.1, -0.2, 0.3]))
  keys = jax.random.split(jax.random.key(seed + 1), M)
  Qs = [theory.random_orthonormal(k, q.d, q.d) for k in keys]  # Q_m between W_{m-1} (or H) and W_m
  Ws = tuple(W @ Q for W, Q in zip(params.Ws, Qs))
  Ws = tuple(Qs[m + 1].T @ Ws[m] if m + 1 < M else Ws[m] for m in range(M))
  rotated = params._replace(Ws=Ws, H=Qs[0].T @ params.H)
  assert_close(q.value(rotated), q.value(params), "exact")
  assert_close(rotated.W @ rotated.H, params.W @ params.H, "exact")


@settings(max_examples=10)
@given(M=st.sampled_from([1, 2, 3, 6]), n_k=st.integers(1, 400), extra=st.integers(0, 2000),
       log_lam=st.floats(-7.0, -1.0), log_r=st.floats(-1.0, 1.0))
def test_root_solver_agrees_with_brute_force_minimisation(M, n_k, extra, log_lam, log_r):
  """Per class: g(z) = (z - sigma)^2/(2N) + (M+1)/2 Lam z^{2/(M+1)}, sigma^2 = n_k, on a grid of 10^5 points of
  [0, sigma] (brute force, no root) against z = sigma x^M/(x^M+1) with x from deep_x (bisection); and Dang et
  al.'s x-form objective equals the z-form at the solution."""
  N = n_k + extra
  lam_W, lam_H = 10.0**log_lam, 10.0 ** (log_lam + log_r)
  sigma = math.sqrt(n_k)
  Lam = (lam_H * lam_W**M) ** (1 / (M + 1))
  g = lambda z: (z - sigma) ** 2 / (2 * N) + 0.5 * (M + 1) * Lam * z ** (2 / (M + 1))
  grid = np.linspace(0.0, sigma, 100_001)
  z_bf = grid[np.argmin(g(grid))]
  ratio = float(theory.deep_b(N, M, lam_W, lam_H)) / n_k
  x = float(theory.deep_x(ratio, M))
  z = sigma * x**M / (x**M + 1)
  assert g(z) <= g(z_bf) + 1e-15 * max(1.0, abs(g(z_bf)))
  if abs(g(0.0) - g(max(z, z_bf))) > 1e-9:  # a near-tie of 0 and the root makes the argmin ill-posed
    assert abs(z - z_bf) <= 2e-5 * sigma
  assert_close(g(z), n_k * float(theory.deep_class_objective(x, ratio, M)) / (2 * N), "exact")


def test_threshold_ratio_is_where_zero_and_the_root_tie_and_below_the_existence_ratio():
  for M in (1, 2, 3, 6):
    rho = theory.deep_threshold_ratio(M)
    xp = float(theory.deep_largest_root(rho, M))
    assert_close(theory.deep_class_objective(xp, rho, M), 1.0, "exact")
    if M > 1:
      assert_close(xp**M, M - 1, "exact")
      grid = np.linspace(1e-6, 10, 200_001)
      assert_close(theory.deep_existence_ratio(M), np.max(np.asarray(theory.deep_phi(grid, M))), "brute_force_grid")
      assert rho < theory.deep_existence_ratio(M)
    ratios = rho * np.asarray([0.9, 0.999999, 1.000001, 1.1])
    x = np.asarray(theory.deep_x(ratios, M))
    assert (x[:2] > 0).all() and (x[2:] == 0).all()
  assert math.isnan(float(theory.deep_largest_root(theory.deep_existence_ratio(3) * 1.01, 3)))


@settings(max_examples=4)
@given(M=st.sampled_from([1, 2, 3]), counts=st.lists(st.integers(1, 300), min_size=3, max_size=3),
       bias=st.booleans())
def test_predicted_thresholds_are_monotone_in_lam(M, counts, bias):
  """The set of surviving directions shrinks as lam = lam_W = lam_H grows, each leaving at its
  deep_collapse_lambda, which increases with the class count (bias-free: classes collapse smallest first)."""
  lams = np.geomspace(1e-6, 1.0, 61)
  alive = np.asarray(jax.vmap(lambda lam: theory.deep_mse_minimiser(counts, lam, lam, M=M, bias=bias).alive)(lams))
  n_alive = alive.sum(1)
  assert (np.diff(n_alive) <= 0).all()
  thr = np.asarray(theory.deep_collapse_lambda(counts, M, bias=bias))
  assert (np.diff(thr) <= 1e-15 * thr.max()).all()  # descending with the target's singular values
  at = jax.vmap(lambda lam: theory.deep_mse_minimiser(counts, lam, lam, M=M, bias=bias).alive)(
      jnp.concatenate([thr * (1 - 1e-6), thr * (1 + 1e-6)]))
  for i, t in enumerate(thr):
    if t > 0:
      assert bool(at[i, i]) and not bool(at[len(thr) + i, i])
  if not bias:
    order = np.argsort(-np.asarray(counts), kind="stable")
    assert_close(np.sort(thr), np.sort(np.asarray(theory.deep_collapse_lambda(np.asarray(counts)[order], M))), "exact")


# ---------------------------------------------------------------------------- closed forms vs L-BFGS

# Imbalanced bias-free, M = 2: the two small classes (n = 2) are placed by lam_H at b/n_k = ratio.
_COUNTS, _M, _LAM_W = (8, 4, 2, 2), 2, 1e-2
_RATIOS = {"alive": 0.3, "at": theory.deep_threshold_ratio(2), "across": 0.55, "window": 0.62}


def _sweep_ratios():
  N = sum(_COUNTS)
  lam_Hs = [_lam_H_for_ratio(r, _COUNTS[-1], N, _M, _LAM_W) for r in _RATIOS.values()]
  q = _problem(_COUNTS, _M, _LAM_W, lam_Hs[0], width=5)
  res = ufm.sweep.sweep(ufm.lbfgs_reference, q, ufm.lbfgs_hparams(init_scale=1.0, gtol=1e-11),
                        axes={"lam_H": lam_Hs, "seed": np.arange(3)}, max_steps=4000)
  best = np.argmin(np.asarray(res.solution.objective), axis=1)  # for M >= 2, 0 is a local minimum of each class:
  sol = jax.tree.map(lambda a: a[np.arange(len(lam_Hs)), best], res.solution)  # a start can end there
  return q, lam_Hs, res._replace(solution=sol, axes=("lam_H",))


@pytest.fixture(scope="module")
def ratio_sweep():
  return _sweep_ratios()


def test_lbfgs_meets_the_deep_closed_form_around_the_threshold(ratio_sweep):
  """M = 2, counts (8, 4, 2, 2), bias-free: the small classes well alive, exactly at the threshold b/n = rho_2,
  just across it, and in Dang et al.'s window. The objective matches; Grams and singular values equal the
  nearest member of the set of global minimisers within TOL['deep_reference'] (away from the threshold that
  set is one point; at it, the small classes' block of every Gram is f^2 times any projection, see
  theory.deep_mse_nearest_minimiser); every layer is balanced and collapsed."""
  q, lam_Hs, res = ratio_sweep
  for i, (name, ratio) in enumerate(_RATIOS.items()):
    p = q.replace(lam_H=jnp.asarray(lam_Hs[i]))
    sol = jax.tree.map(lambda a: a[i], res.solution)
    assert bool(sol.converged), name
    th = theory.deep_mse_minimiser(_COUNTS, _LAM_W, lam_Hs[i], M=_M, bias=False)
    assert_close(float(th.ratio[-1]), ratio, "exact")
    assert np.asarray(th.tied).tolist() == ([False, False, True, True] if name == "at" else [False] * 4), name
    assert rel_error(sol.objective, th.objective, "deep_reference") <= 1e-7, name
    lm = _layer_metrics(sol.params, p)
    near = theory.deep_mse_nearest_minimiser(lm["mean_grams"], lm["classifier_grams"], _COUNTS, _LAM_W, lam_Hs[i],
                                             M=_M, bias=False)
    assert_close(near.objective, th.objective, "exact")
    assert rel_error(lm["mean_grams"], near.mean_grams, "deep_reference") <= 1e-7, name
    assert rel_error(lm["classifier_grams"], near.classifier_grams, "deep_reference") <= 1e-7, name
    for m, A in enumerate((sol.params.H,) + sol.params.Ws):
      sv = np.linalg.svd(np.asarray(A), compute_uv=False)[:4]
      assert rel_error(np.sort(sv), np.sort(np.asarray(near.factor_singular_values[m])), "deep_reference") <= 1e-7
    assert float(jnp.max(lm["balance"])) <= 1e-6 and float(jnp.max(lm["nc1"])) <= 1e-12, name


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_at_the_threshold_every_projection_of_the_tied_block_is_a_global_minimiser(rank):
  """At b/n_k = rho_2 for the two small classes of (8, 4, 2, 2), M = 2: logits with the tied block z_+ * Pi for
  a projection Pi of rank 0, 1 (a random direction) or 2 have the same objective, evaluated exactly at their
  balanced factorisations, and the nearest-member map returns the point it is given."""
  lam_H = _lam_H_for_ratio(theory.deep_threshold_ratio(_M), _COUNTS[-1], sum(_COUNTS), _M, _LAM_W)
  q = _problem(_COUNTS, _M, _LAM_W, lam_H, width=5)
  th = theory.deep_mse_minimiser(_COUNTS, _LAM_W, lam_H, M=_M, bias=False)
  live = theory.deep_mse_minimiser(_COUNTS, _LAM_W, lam_H, M=_M, bias=False, rule="largest")
  u = np.asarray(jax.random.normal(jax.random.key(rank), (2, 2)))
  Q = np.linalg.qr(u)[0][:, :rank]
  G = np.array(th.mean_grams)
  Gc = np.array(th.classifier_grams)
  G[:, 2:, 2:] = np.asarray(live.mean_grams)[:, 2:3, 2:3] * (Q @ Q.T)  # bias-free, equal counts: class basis
  Gc[:, 2:, 2:] = np.asarray(live.classifier_grams)[:, 2:3, 2:3] * (Q @ Q.T)
  near = theory.deep_mse_nearest_minimiser(G, Gc, _COUNTS, _LAM_W, lam_H, M=_M, bias=False)
  assert_close(near.mean_grams, G, "exact")
  assert_close(near.classifier_grams, Gc, "exact")
  assert int(np.sum(np.asarray(near.alive))) == 2 + rank
  f = float(q.value(deep.balanced_factorisation(near.logits_M, q)))
  assert_close(f, th.objective, "exact")


def test_counterexample_dang_largest_root_is_not_the_global_minimiser(ratio_sweep):
  """DOCUMENTED COUNTEREXAMPLE to Dang et al.'s code (``compute_x`` takes the largest root): for M = 2 and
  b/n_k = 0.62 in (rho_2, phi_max) = (0.5, 0.6495) the largest root x_+ = 1.41 exists, but zero is the
  global minimiser. Evaluated exactly (the objective at both constructions) and reached by L-BFGS."""
  q, lam_Hs, res = ratio_sweep
  i = list(_RATIOS).index("window")
  p = q.replace(lam_H=jnp.asarray(lam_Hs[i]))
  ours = theory.deep_mse_minimiser(_COUNTS, _LAM_W, lam_Hs[i], M=_M, bias=False)
  dang = theory.deep_mse_minimiser(_COUNTS, _LAM_W, lam_Hs[i], M=_M, bias=False, rule="largest")
  assert np.asarray(ours.alive).tolist() == [True, True, False, False]
  assert np.asarray(dang.alive).all()
  f_ours = float(p.value(deep.balanced_factorisation(ours.logits_M, p)))
  f_dang = float(p.value(deep.balanced_factorisation(dang.logits_M, p)))
  assert_close([f_ours, f_dang], [ours.objective, dang.objective], "exact")
  assert f_dang - f_ours > 1e-4 * f_ours
  assert rel_error(res.solution.objective[i], ours.objective, "deep_reference") <= 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("M", [1, 2, 3, 4])
@pytest.mark.parametrize("counts", [(5, 5, 5, 5), (12, 6, 3, 3)])
@pytest.mark.parametrize("bias", [False, True])
def test_lbfgs_meets_the_deep_closed_form_grid(M, counts, bias):
  """Depth 1-4, balanced and imbalanced, bias-free and with an unregularised bias, unequal layer decays. The best
  of 4 starts: for M >= 2 single starts can end at spurious local minima (measured: (12, 6, 3, 3) bias-free M = 3
  and with bias M = 4 from one start at scale 0.3 stopped at 4.1x and 4.6x the global objective, |grad| <= 1e-11)."""
  lam = [2e-3, 1e-3, 3e-3, 1.5e-3][:M]
  p = _problem(counts, M, lam, 1e-3, bias=bias, width=5)
  res = ufm.sweep.sweep(ufm.lbfgs_reference, p, ufm.lbfgs_hparams(init_scale=1.0, gtol=1e-11),
                        axes={"seed": np.arange(4)}, max_steps=20000)
  sol = jax.tree.map(lambda a: a[int(np.argmin(np.asarray(res.solution.objective)))], res.solution)
  assert bool(sol.converged)
  th = theory.deep_mse_minimiser(counts, lam, 1e-3, M=M, bias=bias)
  assert rel_error(sol.objective, th.objective, "deep_reference") <= 1e-7
  lm = deep.layer_metrics(sol.params, p, centred=False)
  assert rel_error(lm["mean_grams"], th.mean_grams, "deep_reference") <= 1e-7
  assert rel_error(lm["classifier_grams"], th.classifier_grams, "deep_reference") <= 1e-7
  if bias:
    assert rel_error(sol.params.b, th.b, "deep_reference") <= 1e-7
  pred = theory.predict(p)
  assert rel_error(pred.gram_W, np.asarray(sol.params.W @ sol.params.W.T), "deep_reference") <= 1e-7


# ---------------------------------------------------------------------------- CE: ETF vs low rank


@pytest.mark.parametrize("K, M", [(4, 3), (6, 2), pytest.param(4, 4, marks=pytest.mark.slow),
                                  pytest.param(6, 3, marks=pytest.mark.slow), pytest.param(8, 2, marks=pytest.mark.slow)])
def test_ce_block_construction_beats_the_best_etf_in_theorem_1_range(K, M):
  """Garrod & Keating Thm. 1 (K >= 4, M >= 3 or K >= 6, M = 2): the rank-K/2 block construction is strictly
  lower than every ETF configuration (float64), refuting Dang et al.'s Thm. A.1 for these depths. Both
  values are checked against the full objective at explicit parameters (balanced_factorisation), and the ETF
  is a critical point of the full objective (gradient ~ 0)."""
  n, lam = 2, 1e-3
  etf, blk = theory.deep_ce_etf(K, n, M, lam, lam), theory.deep_ce_block(K, n, M, lam, lam)
  assert float(blk.objective) < float(etf.objective) * (1 - 1e-3)
  p = _problem((n,) * K, M, lam, lam, loss="ce", width=K)
  for cand in (etf, blk):
    params = deep.balanced_factorisation(cand.Zbar, p)
    assert_close(p.value(params), cand.objective, "exact")
    g = jax.grad(p.value)(params)
    gn = math.sqrt(sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(g)))
    assert gn <= 1e-9  # both 1-D optima are critical points of the full objective
  # the small-lambda limit ratio (ufm/theory/derivations.md §11 A.1): F_blk / F_ETF -> (K/2) 2^{2/(M+1)} / (K-1) < 1
  tiny = [theory.deep_ce_block(K, n, M, 1e-12, 1e-12).objective / theory.deep_ce_etf(K, n, M, 1e-12, 1e-12).objective]
  assert abs(float(tiny[0]) - (K / 2) * 2 ** (2 / (M + 1)) / (K - 1)) < 0.05


@pytest.mark.slow
def test_ce_etf_is_lower_at_depth_one_and_the_k4_m2_crossover():
  for K in (4, 6, 8):
    for lam in (1e-4, 1e-3, 1e-2):
      assert float(theory.deep_ce_etf(K, 2, 1, lam, lam).objective) < float(theory.deep_ce_block(K, 2, 1, lam, lam).objective)
  # K = 4, M = 2 (outside Thm. 1): the ETF wins below lam n^{1/3} = 1.176e-2, the block above
  # (ufm/theory/derivations.md §11 A.3)
  d = lambda lam: float(theory.deep_ce_etf(4, 2, 2, lam, lam).objective - theory.deep_ce_block(4, 2, 2, lam, lam).objective)
  crossover = 1.17605e-2 / 2 ** (1 / 3)
  assert d(0.99 * crossover) < 0 < d(1.01 * crossover)


@pytest.mark.slow
@pytest.mark.parametrize("K, M, lam", [(3, 1, 1e-3), (4, 1, 1e-3), (4, 3, 1e-3), (6, 2, 1e-3)])
def test_ce_multistart_lbfgs(K, M, lam):
  """M = 1: every start reaches the ETF (global). K = 4, M = 3 and K = 6, M = 2: the best start reaches the
  block value, below the ETF, and the ETF is a critical point with a PSD Hessian (G&K Thm. 4)."""
  n = 2
  p = _problem((n,) * K, M, lam, lam, loss="ce", width=K)
  res = ufm.sweep.sweep(ufm.lbfgs_reference, p, ufm.lbfgs_hparams(init_scale=1.0, gtol=1e-10),
                        axes={"seed": np.arange(12)}, max_steps=20000)
  etf = float(theory.deep_ce_etf(K, n, M, lam, lam).objective)
  f = np.asarray(res.solution.objective)
  if M == 1:
    assert rel_error(f, np.full_like(f, etf), "deep_reference") <= 1e-7
  else:
    blk = float(theory.deep_ce_block(K, n, M, lam, lam).objective)
    assert f.min() <= blk * (1 + 1e-9) < etf
    params = deep.balanced_factorisation(theory.deep_ce_etf(K, n, M, lam, lam).Zbar, p)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    eig = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda v: p.value(unravel(v)))(flat)))
    assert eig.min() >= -1e-8 * eig.max()  # the ETF is a critical point with a PSD Hessian (G&K Thm. 4)


# ---------------------------------------------------------------------------- predict, metrics, validation


def test_predict_selects_the_deep_target():
  q = _problem((5,) * 4, 3, 1e-3, 1e-3)
  assert theory.predict(q).geometry == "orthogonal frame"
  assert theory.predict(q.replace(bias=True)).geometry == "simplex ETF"
  assert theory.predict(_problem((8, 4, 2, 2), 3, 1e-3, 1e-3)).geometry == "general orthogonal frame"
  ce = theory.predict(_problem((2,) * 4, 3, 1e-3, 1e-3, loss="ce", width=4))
  assert ce.geometry == "rank-K/2 blocks" and "not a proven" in ce.source
  assert theory.predict(_problem((2,) * 4, 2, 1e-3, 1e-3, loss="ce", width=4)).geometry == "simplex ETF"
  with pytest.raises(theory.NoClosedFormError, match="widths"):
    theory.predict(_problem((5,) * 4, 2, 1e-3, 1e-3, width=3))
  with pytest.raises(theory.NoClosedFormError, match="imbalanced"):
    theory.predict(_problem((4, 2), 2, 1e-3, 1e-3, loss="ce"))


def test_layer_metrics_on_the_closed_form_point():
  """At the balanced factorisation of the predicted logits: NC1 = 0 at every layer, balancedness 0, the
  per-layer Grams equal the predicted ones, and the per-layer NC3 of a bias-free orthogonal frame is 0."""
  M = 3
  for counts in ((6, 3, 2, 2), (4, 4, 4, 4)):
    q = _problem(counts, M, [1e-3, 2e-3, 3e-3], 1e-3, width=5)
    th = theory.deep_mse_minimiser(counts, [1e-3, 2e-3, 3e-3], 1e-3, M=M, bias=False)
    params = deep.balanced_factorisation(th.logits_M, q)
    lm = deep.layer_metrics(params, q, centred=False)
    assert_close(lm["mean_grams"], th.mean_grams, "exact")
    assert_close(lm["classifier_grams"], th.classifier_grams, "exact")
    assert float(jnp.max(lm["nc1"])) <= 1e-20 and float(jnp.max(lm["balance"])) <= 1e-12
    assert_close(q.value(params), th.objective, "exact")
  assert float(jnp.max(lm["nc3"])) <= 1e-7  # balanced: C_m^T ∝ Hbar_m (sqrt of a round-off-sized difference)


def test_self_duality_layers_is_the_gram_form_without_its_rounding_floor():
  """The per-layer NC3 from the matrices equals sqrt(2 - 2 cos) from the Grams at a generic point (centred for CE,
  uncentred for bias-free MSE), and at an exactly self-dual point (balanced closed form) it is round-off sized
  where the Gram form floors near sqrt(eps) ~ 1e-8."""
  M = 3
  for loss, centred in (("mse", False), ("ce", True)):
    q = _problem((4, 3, 2, 2), M, [1e-3, 2e-3, 3e-3], 1e-3, loss=loss, width=5)
    params = q.init(jax.random.key(1), 1.0)
    assert_close(deep.self_duality_layers(params, q), deep.layer_metrics(params, q, centred=centred)["nc3"], "exact")
  q = _problem((4, 4, 4, 4), M, [1e-3, 2e-3, 3e-3], 1e-3, width=5)
  th = theory.deep_mse_minimiser((4, 4, 4, 4), [1e-3, 2e-3, 3e-3], 1e-3, M=M, bias=False)
  params = deep.balanced_factorisation(th.logits_M, q)
  assert_close(deep.self_duality_layers(params, q), jnp.zeros(M), "exact")


@pytest.mark.slow
def test_gradient_descent_traces_the_per_layer_metrics():
  M = 3
  q = _problem((6, 3, 2, 2), M, [1e-3, 2e-3, 3e-3], 1e-3, width=5)
  sol = ufm.gradient_descent(jax.random.key(0), q, ufm.gd_hparams(0.05, momentum=0.9), num_steps=20, log_every=10,
                             trace_metrics=("nc1_layers", "mean_grams", "classifier_grams", "balance_errors", "nc1",
                                            "self_duality_layers"))
  assert sol.trace.metrics["nc1_layers"].shape == (2, M + 1)  # the trace records the per-layer metrics
  assert sol.trace.metrics["mean_grams"].shape == (2, M + 1, 4, 4)
  assert sol.trace.metrics["classifier_grams"].shape == (2, M, 4, 4)
  assert sol.trace.metrics["balance_errors"].shape == (2, M)
  assert sol.trace.metrics["self_duality_layers"].shape == (2, M)


def test_bad_input_raises_before_compilation():
  with pytest.raises(ValueError, match="widths"):
    deep.make_deep_problem((2, 2), widths=(3, 0), lam_W=1e-3, lam_H=1e-3)
  with pytest.raises(ValueError, match="lam_W"):
    deep.make_deep_problem((2, 2), widths=(3, 3), lam_W=[1e-3] * 3, lam_H=1e-3)
  with pytest.raises(ValueError, match="lam_W"):
    deep.make_deep_problem((2, 2), d=3, depth=2, lam_W=-1.0, lam_H=1e-3)
  with pytest.raises(ValueError, match="lam_b"):
    deep.make_deep_problem((2, 2), d=3, depth=2, lam_W=1e-3, lam_H=1e-3, lam_b=0.1)
  with pytest.raises(ValueError, match="depth"):
    deep.make_deep_problem((2, 2), d=3, depth=0, lam_W=1e-3, lam_H=1e-3)
  with pytest.raises(ValueError, match="unknown metric"):
    ufm.metrics.compute(ufm.init_params(jax.random.key(0), ufm.make_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1), 0.1),
                        ufm.make_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1), ("nc1_layers",))
  with pytest.raises(ValueError, match="even"):
    theory.deep_ce_block(5, 2, 3, 1e-3, 1e-3)
