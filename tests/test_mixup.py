"""Mixup UFM (Fisher, Meng, Papyan 2024, arXiv 2402.06171): the reduced-problem theory, the solvers against it, the
no-mixup limit, and the stochastic objective against the quadrature one (statistics over vmapped seeds).

Section numbers (derivations §x) refer to ufm/theory/derivations.md.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import TOL, assert_close

import ufm
from ufm import mixup, theory

LAMS = np.linspace(0.0, 1.0, 9)  # symmetric about 1/2 and containing 0, 1/2, 1
FIX = dict(K=4, d=6, lam_H=0.1)  # the fixed-ETF input-mixup problem of the solver tests (compiled once)


def _beta_moment(alpha, k):
  """E[lam^k] for lam ~ Beta(alpha, alpha): prod_{j<k} (alpha + j) / (2 alpha + j)."""
  return math.prod((alpha + j) / (2 * alpha + j) for j in range(k))


def _etf(K, d, rho, seed=3):
  return rho * theory.simplex_etf(K, d, key=jax.random.key(seed)).T  # K x d


# ----------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize("alpha", [0.2, 0.5, 1.0, 2.0, 5.0])
def test_beta_quadrature_is_exact_to_degree_2Q_minus_1_and_matches_scipy(alpha):
  from scipy.special import roots_jacobi
  Q = 6
  lam, w = mixup.beta_quadrature(alpha, Q)
  moments = [float(jnp.sum(w * lam**k)) for k in range(2 * Q + 1)]
  expected = [_beta_moment(alpha, k) for k in range(2 * Q + 1)]
  assert_close(moments[:2 * Q], expected[:2 * Q], "exact")
  assert abs(moments[2 * Q] - expected[2 * Q]) > 1e-9  # a Q-node Gauss rule is not exact at degree 2Q
  x, wx = roots_jacobi(Q, alpha - 1, alpha - 1)
  order = np.argsort(np.asarray(lam))
  assert_close(np.asarray(lam)[order], (1 + x) / 2, "peer")
  assert_close(np.asarray(w)[order], wx / wx.sum(), "peer")


def test_beta_quadrature_at_alpha_zero_is_the_no_mixup_measure():
  lam, w = mixup.beta_quadrature(0.0, 5)
  ends = (np.abs(np.asarray(lam)) < 1e-15) | (np.abs(np.asarray(lam) - 1) < 1e-15)
  assert ends.sum() == 2
  assert_close(np.asarray(w)[ends], [0.5, 0.5], "exact")
  assert np.asarray(w)[~ends].max() < 1e-30


# ----------------------------------------------------------------------------- theory


@jax.jit
def _full_objective_grad(H, W, Y, mu):
  """Gradients (columns) of the d-dimensional per-feature problems lam CE(Wh, c) + (1-lam) CE(Wh, c') + mu/2 |h|^2,
  soft labels ``Y`` (K x M), written out independently of ufm.mixup and ufm.theory."""
  def g(h, y):
    return optax.softmax_cross_entropy(W @ h, y) + 0.5 * mu * jnp.sum(h**2)
  return jax.vmap(jax.grad(g), in_axes=(1, 1), out_axes=1)(H, Y)


def _soft_labels(K, c, c2, lam):
  E = np.eye(K)
  return jnp.asarray(lam[None, :] * E[:, c][:, None] + (1 - lam[None, :]) * E[:, c2][:, None])


@pytest.mark.parametrize("K,mu,rho", [(2, 0.1, 1.0), (4, 0.1, 1.0), (10, 0.01, 2.0)])  # K = 4: LAMS, compiled once
def test_reduced_solution_is_the_stationary_point_of_the_full_problem_with_its_symmetries(K, mu, rho):
  f = theory.mixup_optimal_feature(LAMS, K, lam_H=mu, rho=rho)
  W = _etf(K, K + 1, rho)
  c, c2 = 0, 1
  H = f.a[None, :] * W[c][:, None] + f.b[None, :] * W[c2][:, None]
  g = _full_objective_grad(H, W, _soft_labels(K, c, c2, LAMS), mu)
  assert float(jnp.abs(g).max()) <= TOL["mixup_newton"][1]
  Z = W @ H
  assert_close(Z[c], f.logit_c, "mixup_newton")
  assert_close(Z[c2], f.logit_c2, "mixup_newton")
  assert_close(jax.nn.softmax(Z, axis=0)[c], f.prob_c, "mixup_newton")
  assert_close(f.a, f.b[::-1], "mixup_newton")                      # a(lam) = b(1 - lam)
  assert_close(f.logit_c[4] - f.logit_c2[4], 0.0, "mixup_newton")  # on the c/c' boundary at lam = 1/2
  a_star = theory.mixup_same_class_scale(K, lam_H=mu, rho=rho)
  if K == 2:
    assert_close(f.a[-1] - f.b[-1], a_star, "mixup_newton")        # h(1) = a* w_c (with a + b = 0)
    return
  assert_close([f.a[-1], f.b[-1]], [a_star, 0.0], "mixup_newton")   # lam = 1: the same-class solution
  beta = rho**2 * K / (K - 1)
  kappa = beta / mu
  u, v = beta * f.a, beta * f.b
  S = np.exp(u) + np.exp(v) + K - 2
  assert_close(mu * f.a, LAMS - f.prob_c + f.prob_other, "mixup_newton")  # stationarity (derivations §11 B.1)
  assert_close(mu * f.b, 1 - LAMS - f.prob_c2 + f.prob_other, "mixup_newton")
  assert_close((u + v) * S / (kappa * K), np.ones_like(LAMS), "mixup_newton")  # the lam-free curve
  u_half = u[4]
  assert_close(2 * u_half * (2 * np.exp(u_half) + K - 2), kappa * K, "mixup_newton")
  u1 = beta * a_star
  assert_close(u1 * (np.exp(u1) + K - 1), kappa * K, "mixup_newton")


def test_reduced_solution_reproduces_the_independent_float64_profile():
  """Derivations §11 B.2 (K = 4, rho = 1, mu = 0.1): a separate SciPy/Newton computation, printed to 10 digits."""
  lam = np.array([0.1, 0.25, 0.4, 0.5, 1.0, 0.0, 0.6, 0.75, 0.9])  # the shape of LAMS: no new compilation
  f = theory.mixup_optimal_feature(lam, 4, lam_H=0.1)
  np.testing.assert_allclose(f.a[:5], [0.4738065777, 0.9187802995, 1.2175352808, 1.3763224375, 2.0871368173],
                             atol=1e-10)
  np.testing.assert_allclose(f.prob_c[:5], [0.112354, 0.223888, 0.346608, 0.431184, 0.843465], atol=1e-6)


def test_mixup_confidence_tends_to_the_mixing_proportion_when_weakly_regularised():
  """Stationarity gives p_c = lam + p_o - mu a (derivations §11 B.1), so with mu -> 0 (kappa -> inf) the mixup-CE
  confidence tends to max(lam, 1 - lam): calibrated on mixed examples; the interpolated plain-CE features are
  overconfident (K = 4, mu = 1e-3: 0.95 at lam = 1/4)."""
  conf = theory.mixup_confidence(LAMS, 4, lam_H=1e-3)
  assert float(jnp.abs(conf - np.maximum(LAMS, 1 - LAMS)).max()) < 0.01
  plain = theory.mixup_confidence(LAMS, 4, lam_H=1e-3, mixup=False)
  assert float(plain[2]) > 0.95 and float(jnp.abs(plain - np.maximum(LAMS, 1 - LAMS)).max()) > 0.2


def test_mse_mixed_features_are_exactly_linear_in_lambda():
  K, mu, rho = 4, 0.1, 1.5
  W = _etf(K, K + 1, rho)
  H = mixup.mse_mixup_features(W, 0, 1, jnp.asarray(LAMS), mu)
  line = LAMS[None, :] * H[:, -1:] + (1 - LAMS[None, :]) * H[:, :1]
  assert float(jnp.max(jnp.linalg.norm(H - line, axis=0) / jnp.linalg.norm(H, axis=0).max())) <= TOL["mixup_linear"][0]
  f = theory.mixup_optimal_feature(LAMS, K, lam_H=mu, rho=rho, loss="mse")
  assert_close(H, f.a[None, :] * W[0][:, None] + f.b[None, :] * W[1][:, None], "mixup_linear")
  Y = _soft_labels(K, 0, 1, LAMS)
  assert float(jnp.abs(W.T @ (W @ H - Y) + mu * H).max()) <= 1e-14  # the MSE stationarity equation


def test_theory_refuses_bad_arguments_and_vmaps_over_lambda():
  with pytest.raises(ValueError, match="lam = "):
    theory.mixup_optimal_feature(1.5, 4, lam_H=0.1)
  with pytest.raises(ValueError, match="lam_H"):
    theory.mixup_optimal_feature(0.5, 4, lam_H=0.0)
  with pytest.raises(ValueError, match="K = "):
    theory.mixup_confidence(0.5, 1, lam_H=0.1)
  with pytest.raises(ValueError, match="loss"):
    theory.mixup_confidence(0.5, 3, lam_H=0.1, loss="hinge")
  v = jax.vmap(lambda lam: theory.mixup_confidence(lam, 4, lam_H=0.05))(jnp.asarray(LAMS))
  assert_close(v, theory.mixup_confidence(LAMS, 4, lam_H=0.05), "exact")
  # the confidence falls monotonically towards lam = 1/2 (the calibration mechanism)
  assert np.all(np.diff(np.asarray(v)[:5]) < 0) and np.all(np.diff(np.asarray(v)[4:]) > 0)


# ----------------------------------------------------------------------------- solvers against the theory


@pytest.fixture(scope="module")
def fixed_etf_solution():
  p = mixup.make_input_mixup_problem(FIX["K"], d=FIX["d"], lam_H=FIX["lam_H"], lam_grid=LAMS, key=jax.random.key(7))
  sol = ufm.lbfgs_reference(jax.random.key(0), p, ufm.lbfgs_hparams(init_scale=0.1, gtol=1e-12))
  return p, sol


def test_lbfgs_mixed_features_lie_in_the_span_and_match_the_reduced_problem(fixed_etf_solution):
  p, sol = fixed_etf_solution
  assert bool(sol.converged) and not bool(sol.diverged)
  K = p.K
  Hm, lam = mixup.mixed_features(sol.params, p)
  assert_close(lam, LAMS, "exact")
  f = theory.mixup_optimal_feature(lam, K, lam_H=FIX["lam_H"])
  W = p.W0
  for c in range(K):
    for c2 in range(K):
      H = Hm[:, c, c2, :]
      if c == c2:  # same class: h = a* w_c for every lam
        a_star = theory.mixup_same_class_scale(K, lam_H=FIX["lam_H"])
        assert_close(H, a_star * jnp.broadcast_to(W[c][:, None], H.shape), "mixup_reference")
        continue
      x, y, resid = mixup.plane_coordinates(W, c, c2, H)
      assert float(resid.max()) <= TOL["mixup_reference"][0]          # outside span{w_c, w_c'}: < 1e-8 relative
      assert_close(x, f.x, "mixup_reference")
      assert_close(y, f.y, "mixup_reference")
      ab = jnp.linalg.lstsq(jnp.stack([W[c], W[c2]], 1), H)[0]
      assert_close(ab[0], ab[1][::-1], "mixup_reference")              # a(lam) = b(1 - lam)
      Z = W @ H
      gap = (Z[c, 4] - Z[c2, 4]) / jnp.abs(Z[c, 4])
      assert abs(float(gap)) <= TOL["mixup_reference"][0]             # the logit gap at lam = 1/2
      others = np.delete(np.asarray(Z), [c, c2], axis=0)
      assert_close(others, np.broadcast_to(others[:1], others.shape), "mixup_reference")


def test_mse_closed_form_is_the_stationary_point_of_the_input_mixup_objective():
  p = mixup.make_input_mixup_problem(3, d=4, lam_H=0.2, lam_grid=LAMS, loss="mse", key=jax.random.key(2))
  cols = [mixup.mse_mixup_features(p.W0, c, c2, jnp.asarray(LAMS), 0.2) for c, c2 in mixup.class_pairs(3)]
  params = ufm.Params(W=p.W0, H=jnp.concatenate(cols, 1), b=jnp.zeros(3))
  g = _value_and_grad(p, params)[1]
  assert float(jnp.abs(g.H).max()) <= 1e-15 and float(jnp.abs(g.W).max()) == 0.0


# ----------------------------------------------------------------------------- no-mixup limit


def _random_params(key, K, d, N):
  kW, kH, kb = jax.random.split(key, 3)
  return ufm.Params(W=jax.random.normal(kW, (K, d)), H=jax.random.normal(kH, (d, N)), b=jax.random.normal(kb, (K,)))


@jax.jit
def _value_and_grad(problem, params):
  """Value and gradient of a problem class's objective, one compilation per problem structure."""
  return jax.value_and_grad(lambda q: problem.value(q))(params)


_plain_value_and_grad = jax.jit(jax.value_and_grad(ufm.objective))


@pytest.mark.parametrize("loss,bias", [("ce", True), pytest.param("mse", False, marks=pytest.mark.slow)])
def test_lambda_in_0_1_reduces_exactly_to_the_plain_ufm(loss, bias, getkey):
  counts = (2, 3, 2)
  kw = dict(d=4, lam_W=0.03, lam_H=0.02, lam_b=0.05 if bias else 0.0, loss=loss, bias=bias)
  plain = ufm.make_problem(counts, **kw)
  params = _random_params(getkey(), 3, 4, 7)
  f_plain, g_plain = _plain_value_and_grad(params, plain)
  for m in (mixup.make_manifold_mixup_problem(counts, lam_grid=(0.0, 1.0), **kw),
            mixup.make_manifold_mixup_problem(counts, lam_grid=(1.0, 0.0), lam_weights=(2.0, 2.0), **kw)):
    f, g = _value_and_grad(m, params)
    assert_close(f, f_plain, "exact")
    assert_close(g.H, g_plain.H, "exact")
    assert_close(g.W, g_plain.W, "exact")
  m0 = mixup.make_manifold_mixup_problem(counts, alpha=0.0, num_lam=4, **kw)  # Beta(0, 0) = (delta_0 + delta_1)/2
  f0, _ = _value_and_grad(m0, params)
  assert_close(f0, f_plain, "exact")
  assert abs(float(_value_and_grad(m0.replace(alpha=1.0), params)[0] - f_plain)) > 1e-3  # mixing changes it
  inp = mixup.make_input_mixup_problem(3, lam_grid=(0.0, 1.0), fixed_W=False, **kw)
  plain_in, perm = mixup.input_as_plain_problem(inp)
  p_in = _random_params(getkey(), 3, 4, inp.N)
  p_plain = p_in._replace(H=p_in.H[:, perm])
  (f_in, g_in), (f_pl, g_pl) = _value_and_grad(inp, p_in), _plain_value_and_grad(p_plain, plain_in)
  assert_close(f_in, f_pl, "exact")
  assert_close(g_in.H[:, perm], g_pl.H, "exact")
  assert_close(g_in.W, g_pl.W, "exact")


# ----------------------------------------------------------------------------- stochastic vs quadrature


def _z_scores(samples, target):
  """(mean - target) / standard error, per coordinate, for samples with a leading seed axis."""
  S = samples.shape[0]
  return (samples.mean(0) - target) / (samples.std(0, ddof=1) / math.sqrt(S))


def test_sampled_objective_and_gradient_are_unbiased_for_the_quadrature_objective():
  """Statistics over S = 4000 vmapped keys (batch 4): the mean of the mini-batch estimate and of its gradient lie
  within TOL['mixup_sampling_z'] standard errors of the quadrature value and gradient (manifold mixup, lambda ~
  Beta(alpha, alpha) exactly, Q = 24 Gauss nodes: quadrature error << the standard error 1e-2), for alpha = 0.2
  and 2; an estimate drawn with the wrong alpha is detected (the test has power)."""
  zmax = TOL["mixup_sampling_z"][0]
  p = mixup.make_manifold_mixup_problem((2, 2, 2), d=3, lam_W=0.01, lam_H=0.01, alpha=1.0, num_lam=24)
  params = _random_params(jax.random.key(11), 3, 3, 6)
  keys = jax.random.split(jax.random.key(12), 4000)

  def stats(alpha_sample, alpha_quad):
    ps, pq = p.replace(alpha=alpha_sample), p.replace(alpha=alpha_quad)
    vals, grads = jax.vmap(lambda k: jax.value_and_grad(lambda q: ps.sample_value(k, q, 4))(params))(keys)
    g = jax.grad(pq.value)(params)
    return _z_scores(vals, pq.value(params)), _z_scores(grads.H.reshape(len(keys), -1), g.H.ravel())

  stats = jax.jit(stats)
  for alpha in (0.2, 2.0):
    zv, zg = stats(alpha, alpha)
    assert abs(float(zv)) <= zmax and float(jnp.abs(zg).max()) <= zmax, (alpha, zv, jnp.abs(zg).max())
  zv, zg = stats(0.2, 2.0)
  assert max(abs(float(zv)), float(jnp.abs(zg).max())) > zmax


@pytest.mark.slow
def test_input_mixup_sampled_objective_is_unbiased():
  zmax = TOL["mixup_sampling_z"][0]
  p = mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, lam_W=0.01, fixed_W=False, alpha=0.5, num_lam=4)
  params = _random_params(jax.random.key(5), 3, 3, p.N)
  keys = jax.random.split(jax.random.key(6), 4000)
  vals = jax.jit(jax.vmap(lambda k: p.sample_value(k, params, 4)))(keys)
  assert abs(float(_z_scores(vals, _value_and_grad(p, params)[0]))) <= zmax


@pytest.mark.slow
def test_averaged_sgd_matches_the_quadrature_minimiser_within_the_polyak_juditsky_error():
  """Averaged SGD over T - t0 steps with batch B (32 vmapped seeds) against the L-BFGS minimiser of the quadrature
  objective (fixed ETF classifier: strongly convex in H). Polyak & Juditsky (1992): E||H_bar - H*||^2 ->
  tr(A^-1 Sigma A^-1) / (T - t0), A the Hessian, Sigma the covariance of the mini-batch gradient at H*, both
  computed here. With eta = 0.1 the O(eta) bias of constant steps is ~10% (measured ratio 1.17 at eta = 0.2, 1.9 at
  0.5); the mean over 32 seeds has a standard error ~0.1 of the prediction. Bound: ratio in [0.5, 1.6]."""
  p = mixup.make_manifold_mixup_problem((2, 2, 2), d=2, lam_W=0.0, lam_H=0.05, alpha=1.0, num_lam=16, fixed_W=True,
                                        rho=2.0)
  ref = ufm.lbfgs_reference(jax.random.key(0), p, ufm.lbfgs_hparams(init_scale=0.1, gtol=1e-13))
  assert bool(ref.converged)
  Hs = ref.params.H
  A = jax.hessian(lambda H: p.value(ref.params._replace(H=H)))(Hs).reshape(Hs.size, Hs.size)
  B, T, t0 = 4, 20_000, 5_000
  keys = jax.random.split(jax.random.key(5), 40_000)
  G = jax.vmap(lambda k: jax.grad(lambda H: p.sample_value(k, ref.params._replace(H=H), 1))(Hs).ravel())(keys)
  Ainv = np.linalg.inv(np.asarray(A))
  predicted = np.trace(Ainv @ (np.cov(np.asarray(G).T) / B) @ Ainv) / (T - t0)
  res = ufm.sweep.sweep(mixup.mixup_sgd, p, ufm.gd_hparams(0.1, init_scale=0.1), axes={"seed": np.arange(32)},
                        num_steps=T, log_every=T // 4, batch_size=B, average_from=t0)
  err = np.sum((np.asarray(res.solution.params.H) - np.asarray(Hs)[None]) ** 2, axis=(1, 2))
  assert 0.5 <= err.mean() / predicted <= 1.6, err.mean() / predicted


# ----------------------------------------------------------------------------- solvers, sweeps, validation


@pytest.mark.slow  # two SGD programs (~8 s of compilation); mixup_sgd runs in the default suite via the smoke configs
def test_sweep_vmaps_mixup_sgd_over_alpha_and_seeds_like_a_loop_without_retracing():
  """Input mixup with a learned classifier (its quadrature weights, hence SGD, depend on alpha)."""
  p = mixup.make_input_mixup_problem(2, d=2, lam_H=0.05, lam_W=0.01, fixed_W=False, alpha=1.0, num_lam=3)
  hp = ufm.gd_hparams(0.2, init_scale=0.1)
  kw = dict(num_steps=40, log_every=20, batch_size=4)
  res = ufm.sweep.sweep(mixup.mixup_sgd, p, hp, axes={"alpha": [0.2, 2.0], "seed": [0, 1]}, **kw)
  assert res.axes == ("alpha", "seed") and res.solution.objective.shape == (2, 2)
  assert res.solution.trace.objective.shape == (2, 2, 2) and not bool(res.solution.diverged.any())
  one = mixup.mixup_sgd(jax.random.key(1), p.replace(alpha=2.0), hp, **kw)
  assert_close(res.sel(alpha=2.0, seed=1).params.H, one.params.H, "exact")
  assert_close(res.sel(alpha=2.0, seed=1).trace.objective, one.trace.objective, "exact")
  n = mixup.mixup_sgd._cache_size()
  mixup.mixup_sgd(jax.random.key(1), p.replace(alpha=0.7), hp, **kw)
  assert mixup.mixup_sgd._cache_size() == n  # a new alpha is a new value, not a new program
  assert float(jnp.abs(res.solution.params.H[0] - res.solution.params.H[1]).max()) > 1e-6  # alpha matters


@pytest.mark.slow
def test_chunked_sweeps_and_the_core_solvers_run_mixup_problems():
  p = mixup.make_manifold_mixup_problem((2, 2), d=2, lam_W=0.01, lam_H=0.01, alpha=1.0, num_lam=4)
  hp = ufm.gd_hparams(0.2, init_scale=0.1)
  kw = dict(num_steps=40, log_every=20, batch_size=4)
  res = ufm.sweep.sweep(mixup.mixup_sgd, p, hp, axes={"alpha": [0.2, 2.0], "seed": [0, 1]}, **kw)
  chunked = ufm.sweep.sweep(mixup.mixup_sgd, p, hp, axes={"alpha": [0.2, 2.0], "seed": [0, 1]}, chunk_steps=20, **kw)
  assert_close(chunked.solution.params.H, res.solution.params.H, "exact")
  gd = ufm.sweep.sweep(ufm.gradient_descent, p, hp, axes={"alpha": [0.2, 2.0]}, num_steps=40, log_every=20)
  assert np.all(np.diff(np.asarray(gd.solution.trace.objective), axis=-1) < 0)
  lb = ufm.sweep.sweep(ufm.lbfgs_reference, p, ufm.lbfgs_hparams(), axes={"alpha": [0.2, 2.0]})
  assert bool(lb.solution.converged.all())
  assert np.all(np.asarray(lb.solution.objective) <= np.asarray(gd.solution.objective) + 1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: mixup.make_input_mixup_problem(1, d=3, lam_H=0.1), "K = 1"),
    (lambda: mixup.make_input_mixup_problem(4, d=2, lam_H=0.1), "d = 2"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=-0.1), "lam_H"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, alpha=-1.0), "alpha"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, num_lam=0), "num_lam"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, lam_grid=(0.5, 1.2)), "lam_grid"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, lam_grid=(0.5,), lam_weights=(1.0, 1.0)),
     "lam_weights"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, loss="hinge"), "loss"),
    (lambda: mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, rho=0.0), "rho"),
    (lambda: mixup.make_manifold_mixup_problem((2, 2), d=3, lam_W=0.1, lam_H=0.1, lam_b=0.1), "lam_b"),
    (lambda: mixup.make_manifold_mixup_problem((2, 0), d=3, lam_W=0.1, lam_H=0.1), "counts"),
    (lambda: mixup.input_as_plain_problem(mixup.make_input_mixup_problem(3, d=3, lam_H=0.1, fixed_W=False)),
     "lam_grid"),
    (lambda: mixup.beta_quadrature(1.0, 0), "num_nodes"),
    (lambda: mixup.mixup_sgd(jax.random.key(0), mixup.make_input_mixup_problem(3, d=3, lam_H=0.1),
                             ufm.gd_hparams(0.1), num_steps=10, log_every=3), "num_steps"),
    (lambda: mixup.mixup_sgd(jax.random.key(0), mixup.make_input_mixup_problem(3, d=3, lam_H=0.1),
                             ufm.gd_hparams(0.1), num_steps=10, log_every=5, batch_size=0), "batch_size"),
])
def test_bad_arguments_raise_value_errors_naming_the_parameter(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_float32_problems_stay_float32():
  assert mixup.beta_quadrature(jnp.float32(0.5), 3)[0].dtype == jnp.float32
  p = mixup.make_input_mixup_problem(2, d=2, lam_H=0.05, lam_W=0.01, fixed_W=False, lam_grid=(0.0, 0.5, 1.0),
                                     dtype=jnp.float32)
  params = p.init(jax.random.key(0), 0.1)
  f, g = _value_and_grad(p, params)
  assert params.H.dtype == jnp.float32 and f.dtype == jnp.float32 and g.H.dtype == jnp.float32
