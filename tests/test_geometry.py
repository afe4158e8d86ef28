"""Reference geometries for K > d + 1 and fixed classifiers: closed forms of constructed configurations (regular
polygons, cross-polytope, simplex ETF), the multi-restart solvers against them, and the defining property of every
fixed classifier (equal norms, stated angles, sparsity), exactly."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

from ufm import geometry, metrics, theory


@jax.jit
def _config_values(X):
  """Every quantity with a closed form in theory.*_metrics, for the unit, zero-mean columns of X."""
  return dict(gnc2=metrics.gnc2(X), gnc2_var=metrics.gnc2_var(X), cos_mean=jnp.mean(metrics.cosines(X)),
              cos_var=metrics.equiangularity(X, ddof=0) ** 2, max_angle=metrics.max_angle(X),
              etf_error=metrics.etf_error(X), equinorm=metrics.equinorm(X), log_energy=geometry.log_energy(X),
              riesz_1=geometry.riesz_energy(X, 1.0), riesz_2=geometry.riesz_energy(X, 2.0))


CONFIGS = {  # name -> (configuration d x K, closed-form metrics, closed-form energy s -> E_s)
    "polygon5": (lambda: theory.regular_polygon(5), lambda: theory.regular_polygon_metrics(5),
                 lambda s: theory.riesz_energy_regular_polygon(5, s)),
    "polygon7": (lambda: theory.regular_polygon(7), lambda: theory.regular_polygon_metrics(7),
                 lambda s: theory.riesz_energy_regular_polygon(7, s)),
    "orthoplex3": (lambda: theory.cross_polytope(3), lambda: theory.cross_polytope_metrics(3),
                   lambda s: theory.riesz_energy_cross_polytope(3, s)),
    "etf5": (lambda: theory.simplex_etf(5), lambda: theory.simplex_metrics(5),
             lambda s: theory.riesz_energy_simplex(5, s)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_metrics_of_constructed_configurations_equal_their_closed_forms(name):
  make, closed, energy = CONFIGS[name]
  X, cf = make(), closed()
  v = _config_values(X)
  for field in cf._fields:
    if field != "one_vs_rest":
      assert_close(v[field], getattr(cf, field), "closed_form_metric", field)
  assert_close(v["equinorm"], 0.0, "closed_form_metric")
  for s, key in ((0.0, "log_energy"), (1.0, "riesz_1"), (2.0, "riesz_2")):
    assert_close(v[key], energy(s), "closed_form_metric", key)
  assert_close(geometry.one_vs_rest_distances(X), np.full(X.shape[1], cf.one_vs_rest), "closed_form_metric")


def test_polygon_closed_forms_agree_with_their_own_identities():
  """-log K/(K-1) is the mean of -log(2 sin(pi j/K)); the K = 3 polygon is the simplex ETF; K = 4 is the orthoplex."""
  for K in (3, 5, 8):
    assert_close(theory.regular_polygon_metrics(K).gnc2, np.mean(-np.log(2 * np.sin(np.pi * np.arange(1, K) / K))),
                 "exact")
  assert_close(np.asarray(theory.regular_polygon_metrics(3)), np.asarray(theory.simplex_metrics(3)), "exact")
  assert_close(np.asarray(theory.regular_polygon_metrics(4)), np.asarray(theory.cross_polytope_metrics(2)), "exact")


@pytest.mark.slow
def test_minimal_log_energy_in_d2_is_the_regular_polygon(getkey):
  K = 5
  r = geometry.minimal_energy(getkey(), K, 2, s=0.0, num_restarts=3, num_steps=800)
  assert r.values.shape == (3,) and float(r.spread) >= 0
  assert_close(r.value, theory.riesz_energy_regular_polygon(K, 0.0), "riemannian")
  assert_close(geometry.angular_gaps(r.X), np.full(K, 2 * math.pi / K), "polygon_gaps")


@pytest.mark.slow
@pytest.mark.parametrize("K, d, s, expected", [
    (6, 3, 1.0, lambda: theory.riesz_energy_cross_polytope(3, 1.0)),  # Thomson N = 6: the octahedron
    (4, 3, 1.0, lambda: theory.riesz_energy_simplex(4, 1.0)),          # Thomson N = 4: the tetrahedron
    (8, 4, 0.0, lambda: theory.riesz_energy_cross_polytope(4, 0.0)),   # log energy, K = 2d = 8 in d = 4
    (7, 2, 2.0, lambda: theory.riesz_energy_regular_polygon(7, 2.0))])
def test_minimal_energy_reaches_known_minimisers(K, d, s, expected, getkey):
  r = geometry.minimal_energy(getkey(), K, d, s=s, num_restarts=4, num_steps=3000)
  assert_close(r.value, expected(), "riemannian")


@pytest.mark.slow
@pytest.mark.parametrize("K, d, expected, tol", [
    (5, 2, lambda: theory.regular_polygon_metrics(5).one_vs_rest, 1e-9),
    (7, 2, lambda: theory.regular_polygon_metrics(7).one_vs_rest, 1e-9),
    (4, 3, lambda: theory.simplex_metrics(4).one_vs_rest, 1e-9),
    # K = 2d: the cross-polytope's rho = 1 is a non-smooth maximum (the hull of the others contains 0); the soft-min
    # ascent stops at 0.9994 (its bias), the steepest-ascent polish that follows gets to 1.4e-5 below it (measured).
    (6, 3, lambda: theory.cross_polytope_metrics(3).one_vs_rest, 2e-4)])
def test_softmax_code_reaches_known_codes(K, d, expected, tol, getkey):
  r = geometry.softmax_code(getkey(), K, d, num_restarts=4, num_steps=1500)
  assert float(r.value) <= expected() + 1e-12  # rho is evaluated by FISTA from above; never beats the optimum
  assert float(r.value) >= expected() - tol


# ------------------------------------------------------------------------------ fixed classifiers


def _unit_norms(W):
  assert_close(jnp.linalg.norm(W, axis=1), np.ones(W.shape[0]), "closed_form_metric")


@pytest.mark.parametrize("K, d", [(5, 9)])  # d > K - 1: the d-simplex is padded; d = K - 1 is in the ETF closed forms
def test_etf_and_d_simplex_have_equal_norms_and_cosines_minus_one_over_k_minus_one(K, d):
  for W in (geometry.fixed_classifier("etf", K, d), geometry.fixed_classifier("d_simplex", K, d)):
    assert W.shape == (K, d)
    _unit_norms(W)
    assert_close(W @ W.T, theory.etf_gram(K), "closed_form_metric")
  D = np.asarray(geometry.d_simplex(K, d))
  assert np.all(D[:, K - 1:] == 0)  # padded with zero coordinates beyond R^{K-1}
  # Pernici et al.'s coordinates: the first K-1 vertices are the shifted, scaled coordinate axes, so the
  # difference of two of them is a multiple of e_i - e_j.
  for i, j in ((0, 1), (1, K - 2)):
    diff = D[i] - D[j]
    nz = np.flatnonzero(np.abs(diff) > 1e-14)
    assert list(nz) == [i, j] and math.isclose(diff[i], -diff[j], rel_tol=1e-14)


def test_orthoplex_vertices_are_plus_minus_coordinate_axes():
  W = np.asarray(geometry.orthoplex(6))
  assert W.shape == (6, 3)
  _unit_norms(W)
  np.testing.assert_array_equal(W @ W.T, np.kron(np.eye(3), [[1, -1], [-1, 1]]))
  assert geometry.orthoplex(5).shape == (5, 3)


def test_ebv_are_unit_and_nearly_orthogonal_within_alpha(getkey):
  K, d, alpha = 12, 6, 0.35  # K > d; the Welch bound is sqrt(6/66) = 0.30
  r = geometry.equiangular_basis_vectors(getkey(), K, d, alpha=alpha)
  assert bool(r.reached)
  _unit_norms(r.W)
  C = np.abs(np.asarray(r.W @ r.W.T))[~np.eye(K, dtype=bool)]
  assert C.max() <= alpha and math.isclose(C.max(), float(r.max_abs_cos), rel_tol=1e-14)
  with pytest.raises(ValueError, match="Welch bound"):
    geometry.equiangular_basis_vectors(getkey(), K, d, alpha=0.2)


def test_sparse_etf_has_the_exact_sparsity_pattern_and_equal_norms(getkey):
  K, d, sparsity = 6, 10, 0.5
  r = geometry.sparse_etf(getkey(), K, d, sparsity=sparsity, num_steps=300)
  W, mask = np.asarray(r.W), np.asarray(r.mask)
  assert (~mask).sum() == math.floor(sparsity * K * d)
  assert np.all(W[~mask] == 0)
  _unit_norms(W)
  C = (W @ W.T)[~np.eye(K, dtype=bool)]
  assert math.isclose(C.max(), float(r.max_cos), rel_tol=1e-12, abs_tol=1e-15)
  with pytest.raises(ValueError, match="d = 3"):
    geometry.sparse_etf(getkey(), K, 3)


def test_alignment_of_features_placed_on_their_classifiers():
  W = geometry.fixed_classifier("d_simplex", 4, 3)
  labels = jnp.repeat(jnp.arange(4), 2)
  al = jax.jit(geometry.classifier_alignment, static_argnames="K")(W, 2.0 * W.T[:, labels], labels, K=4)
  assert_close([al["cos_mean"], al["cos_min"], al["sample_cos_min"], al["accuracy"], al["nc1_ratio"]],
               [1, 1, 1, 1, 0], "closed_form_metric")
  assert_close(al["margin"], 1 + 1 / 3, "closed_form_metric")


@pytest.mark.parametrize("call, match", [
    (lambda: geometry.fixed_classifier("nope", 3, 2), "unknown fixed classifier"),
    (lambda: geometry.fixed_classifier("ebv", 3, 2), "key"),
    (lambda: geometry.d_simplex(5, 3), "d = 3"),
    (lambda: geometry.orthoplex(7, 3), "d = 3"),
    (lambda: geometry.minimal_energy(jax.random.key(0), 1, 3), "K = 1"),
    (lambda: geometry.minimal_energy(jax.random.key(0), 4, 3, s=-1.0), "s = -1"),
    (lambda: geometry.softmax_code(jax.random.key(0), 4, 3, num_restarts=0), "num_restarts"),
    (lambda: geometry.fixed_classifier("etf", 5, 3), "d = 3")])
def test_bad_input_is_refused_before_compilation(call, match):
  with pytest.raises(ValueError, match=match):
    call()
