"""Spherical temperature-scaled UFM (Jiang et al. 2024, arXiv 2310.05351; Lu & Steinerberger 2022): the learned
geometry against the closed forms of ufm.theory (regular polygons, simplex ETF, cross-polytope)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import ufm
from ufm import geometry, spherical, theory


def _gd(problem, *, lr=0.5, steps=2000, key=0):
  hp = ufm.gd_hparams(lr, momentum=0.9)
  return ufm.gradient_descent(jax.random.key(key), problem, hp, num_steps=steps, log_every=steps)


@pytest.mark.parametrize("K", [4, 5, 7])
def test_d2_learned_classifiers_form_a_regular_polygon(K):
  """ufm/theory/derivations.md §5.7: d = 2, every K: the classifier is the regular K-gon (sorted gaps 2 pi / K
  within 1e-3); the features collapse onto their classifiers and the objective is the closed form at the polygon."""
  tau = 0.5
  p = spherical.make_spherical_problem(ufm.balanced_counts(K, 1), d=2, tau=tau)
  sol = _gd(p)
  assert not bool(sol.diverged)
  W = sol.params.W
  assert_close(jnp.linalg.norm(W, axis=1), np.ones(K), "exact")  # the retraction keeps W on the sphere
  assert_close(geometry.angular_gaps(W.T), np.full(K, 2 * math.pi / K), "polygon_gaps")
  assert_close(sol.params.H, W.T @ p.Y, "polygon_gaps")
  G_polygon = theory.regular_polygon(K).T @ theory.regular_polygon(K)
  assert_close(sol.objective, theory.spherical_ce_collapsed(G_polygon, tau), "riemannian")


@pytest.mark.slow
@pytest.mark.parametrize("d", [3, 4])
def test_k_equals_2d_gives_the_cross_polytope(d):
  """K = 2d (d = 3, 4): the learned classifier is the cross-polytope (Gram entries -1 once per row, else 0), the
  softmax code and minimal-energy configuration there (Jiang et al. 2024; Alcala et al. 2026, arXiv 2603.20587,
  orthoplex regime). Checked with the float64 L-BFGS reference on the scale-invariant form."""
  K, tau = 2 * d, 0.2
  p = spherical.make_spherical_problem(ufm.balanced_counts(K, 2), d=d, tau=tau, constrained=False)
  sol = ufm.lbfgs_reference(jax.random.key(1), p, ufm.lbfgs_hparams())
  P = spherical.normalise(sol.params, p)
  G = np.asarray(P.W @ P.W.T)
  X = theory.cross_polytope(d)
  # Grams to TOL["reference_metric"]: at tau = 0.2 the objective is ~1e-4 and its curvature small, so |grad| <= 1e-10
  # pins the iterate to ~1e-8 (measured 5e-9 for d = 4).
  assert_close(np.sort(G, axis=1), np.sort(np.asarray(X.T @ X), axis=1), "reference_metric")
  assert_close(P.H, P.W.T @ p.Y, "reference_metric")
  assert_close(sol.objective, theory.spherical_ce_collapsed(X.T @ X, tau), "reference")


@pytest.mark.slow
@pytest.mark.parametrize("K", [5, 7])
def test_lbfgs_on_the_scale_invariant_form_reaches_the_polygon_to_reference_precision(K):
  tau = 0.5
  p = spherical.make_spherical_problem(ufm.balanced_counts(K, 2), d=2, tau=tau, constrained=False)
  sol = ufm.lbfgs_reference(jax.random.key(0), p, ufm.lbfgs_hparams())
  P = spherical.normalise(sol.params, p)
  assert_close(geometry.angular_gaps(P.W.T), np.full(K, 2 * math.pi / K), "reference")
  G_polygon = theory.regular_polygon(K).T @ theory.regular_polygon(K)
  assert_close(sol.objective, theory.spherical_ce_collapsed(G_polygon, tau), "reference")


@pytest.mark.slow
def test_fixed_classifier_is_never_moved_and_features_align_with_it(getkey):
  """A fixed classifier (the orthoplex, K = 2d > d + 1): W stays exactly W_fixed, and each feature converges to its
  classifier (a symmetric code: every w_k is the feature direction with the largest margin for class k)."""
  K, d = 6, 3
  W0 = geometry.fixed_classifier("orthoplex", K, d)
  p = spherical.make_spherical_problem(ufm.balanced_counts(K, 2), d=d, tau=0.5, W_fixed=W0)
  sol = _gd(p, steps=1000)
  np.testing.assert_array_equal(np.asarray(sol.params.W), np.asarray(W0))
  al = geometry.classifier_alignment(sol.params.W, sol.params.H, p.labels, K)
  assert_close([al["cos_min"], al["sample_cos_min"], al["accuracy"]], [1.0, 1.0, 1.0], "riemannian")


def test_objective_is_scale_invariant_and_its_gradient_is_tangent():
  p = spherical.make_spherical_problem(ufm.balanced_counts(5, 3), d=3, tau=0.3)
  rng = np.random.default_rng(0)
  params = ufm.Params(W=jnp.asarray(rng.normal(size=(5, 3))), H=jnp.asarray(rng.normal(size=(3, 15))), b=jnp.zeros(5))
  params = spherical.normalise(params, p)
  scaled = params._replace(W=3.0 * params.W, H=0.5 * params.H)
  value = jax.jit(type(p).value)
  assert_close(value(p, scaled), value(p, params), "exact")
  g = jax.jit(jax.grad(type(p).value, argnums=1))(p, params)
  assert_close(jnp.sum(g.W * params.W, axis=1), np.zeros(5), "exact")
  assert_close(jnp.sum(g.H * params.H, axis=0), np.zeros(15), "exact")


def test_k_equals_d_plus_one_recovers_the_simplex_etf_at_every_tau_and_seed():
  """Lu & Steinerberger (2022): K <= d + 1 gives the simplex ETF with features equal to classifiers, objective
  log(1 + (K-1) exp(-K/((K-1) tau))). K = 3 = d + 1 in d = 2, swept over tau (a sweep axis) and seeds."""
  K, d, taus = 3, 2, [0.5, 1.0]
  p = spherical.make_spherical_problem(ufm.balanced_counts(K, 2), d=d, tau=1.0)
  res = ufm.sweep.sweep(ufm.gradient_descent, p, ufm.gd_hparams(0.5, momentum=0.9),
                        axes={"tau": taus, "seed": [0, 1]}, num_steps=1000, log_every=1000)
  assert res.solution.objective.shape == (2, 2)
  W, H = res.solution.params.W, res.solution.params.H
  for i, tau in enumerate(taus):
    assert_close(res.solution.objective[i], np.full(2, math.log(1 + (K - 1) * math.exp(-K / ((K - 1) * tau)))),
                 "riemannian")
    for s in range(2):
      assert_close(W[i, s] @ W[i, s].T, theory.etf_gram(K), "riemannian")
      assert_close(H[i, s], W[i, s].T @ p.Y, "riemannian")


@pytest.mark.parametrize("kwargs, match", [
    (dict(d=2, tau=0.0), "tau"), (dict(d=1, tau=1.0), "d = 1"), (dict(d=2, tau=float("nan")), "tau"),
    (dict(d=2, tau=1.0, W_fixed=np.zeros((3, 2))), "W_fixed"), (dict(d=2, tau=1.0, W_fixed=np.ones((2, 2))), "W_fixed"),
    (dict(d=2, tau=1.0, constrained=1), "constrained")])
def test_bad_input_is_refused_before_compilation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    spherical.make_spherical_problem(ufm.balanced_counts(3, 2), **kwargs)
