r"""The spherical UFM's claims.

Any ``K`` and ``d`` (Lu & Steinerberger 2022, arXiv 2012.08465; Jiang et al. 2024,
arXiv 2310.05351), and the closed-form metrics of the constructed configurations (regular polygon,
cross-polytope, simplex ETF; derivations §5.7). The learned geometries are checked with float64 L-BFGS on the
scale-invariant unconstrained form (:func:`ufm.spherical.make_spherical_problem` with ``constrained=False``), whose
minimisers, normalised, are those of the spherical problem.

* ``spherical_simplex_k_eq_d_plus_1`` (holds): ``K = d + 1``: the simplex ETF, features on their classifiers,
  objective :math:`\log(1 + (K-1)e^{-K/((K-1)\tau)})` at every temperature.
* ``spherical_polygon_d2`` (holds): ``d = 2``, any ``K``: the regular ``K``-gon (sorted angular gaps
  :math:`2\pi/K`), features on their classifiers, the polygon's objective.
* ``spherical_cross_polytope_k_2d`` (holds): ``K = 2d``, ``d`` in {3, 4}: the cross-polytope (each row of the Gram:
  one -1, one 1, zeros), features on their classifiers, its objective. (``K = 4, d = 2`` is the square, checked by
  ``spherical_polygon_d2``.) Temperatures are drawn from [0.2, 0.6] here and [0.2, 1] for the simplex and the
  polygon: on the bare scale-invariant form L-BFGS collapsed the norms below 0.3 (``|grad| = 9e3`` at ``tau = 0.2``)
  and, in 200-example runs, at ``tau = 0.32`` and ``0.73`` too; the gauge term of
  :meth:`ufm.spherical.SphericalProblem.scale_penalty` keeps them at 1 (checked at ``tau`` in [0.1, 0.3]: 40
  examples each, largest residual 7.8e-7 of the 1e-6 bound at ``tau`` near 0.1, hence 0.2 as the lower end).
* ``configuration_metrics`` (holds): GNC2 (hyperspherical uniformity) and its variance, the cosine mean and variance,
  the max-angle and ETF errors, Riesz and log energies of the three constructions equal their closed forms.

Softmax codes and minimal-energy configurations beyond these three constructions have no closed form: their
solvers (:func:`ufm.geometry.softmax_code`, :func:`ufm.geometry.minimal_energy`) are checked against known
configurations in ``tests/test_geometry.py``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

from ufm import geometry, metrics, spherical, theory
from ufm.claims.core import Claim
from ufm.testing import rel_error, sphere_specs

__all__ = ["CLAIMS"]

_LU = "Lu & Steinerberger 2022 (arXiv 2012.08465)"
_JIANG = "Jiang et al. 2024 (arXiv 2310.05351)"


def normalised(problem, sol):
  """``(W, H)`` on the sphere (unit rows / columns) as float64 NumPy arrays."""
  P = spherical.normalise(jax.tree.map(jnp.asarray, sol.params), problem)
  return np.asarray(P.W, np.float64), np.asarray(P.H, np.float64)


def _collapsed_check(problem, sol, G_target, *, sort_rows=False):
  W, H = normalised(problem, sol)
  G = W @ W.T
  Y = np.asarray(problem.Y, np.float64)
  got, want = (np.sort(G, axis=1), np.sort(G_target, axis=1)) if sort_rows else (G, G_target)
  return {"gram_W": rel_error(got, want, "reference_metric"),
          "features_on_classifiers": rel_error(H, W.T @ Y, "reference_metric"),
          "objective": rel_error(float(sol.objective), float(theory.spherical_ce_collapsed(jnp.asarray(G_target),
                                                                                          float(problem.tau))))}


_TOLS = {"gram_W": "reference_metric", "features_on_classifiers": "reference_metric", "objective": "reference"}


def _simplex_check(problem, sol, th):
  K, tau = problem.K, float(problem.tau)
  out = _collapsed_check(problem, sol, np.asarray(theory.etf_gram(K)))
  out["closed_form"] = rel_error(float(sol.objective), math.log(1 + (K - 1) * math.exp(-K / ((K - 1) * tau))))
  return out


SPHERICAL_SIMPLEX = Claim(
    name="spherical_simplex_k_eq_d_plus_1",
    source=_LU + ", Thm. (K <= d + 1)",
    paper=_LU,
    statement="Balanced spherical CE-UFM with K = d + 1, any temperature tau: the unit classifiers form a simplex "
              "ETF, every feature equals its class's classifier, and f* = log(1 + (K-1) exp(-K/((K-1) tau))).",
    problems=sphere_specs(K=(3, 4, 5), n=(1, 2), d_of_K=lambda K: K - 1, tau=(0.2, 1.0)),
    theory=lambda problem: None, check=_simplex_check,
    tolerances={**_TOLS, "closed_form": "reference"},
)


def _polygon_check(problem, sol, th):
  K = problem.K
  X = np.asarray(theory.regular_polygon(K), np.float64)
  out = _collapsed_check(problem, sol, X.T @ X, sort_rows=True)
  W, _ = normalised(problem, sol)
  out["angular_gaps"] = rel_error(np.asarray(geometry.angular_gaps(jnp.asarray(W.T))), np.full(K, 2 * math.pi / K),
                                  "reference_metric")
  return out


SPHERICAL_POLYGON = Claim(
    name="spherical_polygon_d2",
    source=_JIANG + "; the d = 2 case derived in derivations §5.7",
    paper=_JIANG,
    statement="Balanced spherical CE-UFM in d = 2 with any K >= 3: the unit classifiers form the regular K-gon "
              "(angular gaps 2 pi/K), every feature equals its class's classifier, and f* is the polygon's value.",
    problems=sphere_specs(K=(4, 5, 6, 7), n=(1, 2), d=(2,), tau=(0.2, 1.0)),
    theory=lambda problem: None, check=_polygon_check,
    tolerances={**_TOLS, "angular_gaps": "reference_metric"},
)


def _cross_check(problem, sol, th):
  X = np.asarray(theory.cross_polytope(problem.d), np.float64)
  return _collapsed_check(problem, sol, X.T @ X, sort_rows=True)


SPHERICAL_CROSS_POLYTOPE = Claim(
    name="spherical_cross_polytope_k_2d",
    source=_JIANG + " (softmax codes); Alcala et al. 2026 (arXiv 2603.20587), orthoplex regime",
    paper=_JIANG,
    statement="Balanced spherical CE-UFM with K = 2d: the unit classifiers form the cross-polytope (+-e_i up to a "
              "rotation), every feature equals its class's classifier, and f* is the cross-polytope's value.",
    problems=sphere_specs(K=(6, 8), n=(1, 2), d_of_K=lambda K: K // 2, tau=(0.2, 0.6)),  # K = 4: spherical_polygon_d2
    theory=lambda problem: None, check=_cross_check, tolerances=_TOLS,
)


@jax.jit
def _config_values(X):
  return dict(gnc2=metrics.gnc2(X), gnc2_var=metrics.gnc2_var(X), cos_mean=jnp.mean(metrics.cosines(X)),
              cos_var=metrics.equiangularity(X, ddof=0) ** 2, max_angle=metrics.max_angle(X),
              etf_error=metrics.etf_error(X), equinorm=metrics.equinorm(X), log_energy=geometry.log_energy(X),
              riesz_1=geometry.riesz_energy(X, 1.0), riesz_2=geometry.riesz_energy(X, 2.0))


def _configurations(K, d):
  """The constructions that exist for ``(K, d)``: name -> (d x K points, closed-form metrics, energy s -> E_s)."""
  out = {}
  if d == 2 and K >= 3:
    out["polygon"] = (theory.regular_polygon(K), theory.regular_polygon_metrics(K),
                      lambda s: theory.riesz_energy_regular_polygon(K, s))
  if K == 2 * d:
    out["cross_polytope"] = (theory.cross_polytope(d), theory.cross_polytope_metrics(d),
                             lambda s: theory.riesz_energy_cross_polytope(d, s))
  if K == d + 1:
    out["simplex"] = (theory.simplex_etf(K), theory.simplex_metrics(K), lambda s: theory.riesz_energy_simplex(K, s))
  return out


def _metrics_check(problem, sol, th):
  worst = {"metrics": 0.0, "energies": 0.0}
  configs = _configurations(problem.K, problem.d)
  if not configs:
    raise ValueError(f"no constructed configuration for K = {problem.K}, d = {problem.d}")
  for X, cf, energy in configs.values():
    v = _config_values(jnp.asarray(X))
    for field in cf._fields:
      if field != "one_vs_rest":
        worst["metrics"] = max(worst["metrics"], rel_error(v[field], getattr(cf, field), "closed_form_metric"))
    worst["metrics"] = max(worst["metrics"], rel_error(v["equinorm"], 0.0, "closed_form_metric"))
    for s, key in ((0.0, "log_energy"), (1.0, "riesz_1"), (2.0, "riesz_2")):
      worst["energies"] = max(worst["energies"], rel_error(v[key], energy(s), "closed_form_metric"))
  return worst


CONFIGURATION_METRICS = Claim(
    name="configuration_metrics",
    source="derived in ufm.theory (sphere: regular polygon, cross-polytope, simplex; derivations §5.7); GNC2 of "
           "Liu et al. 2023 (arXiv 2303.06484)",
    paper="derived in ufm.theory",
    statement="The regular K-gon (d = 2), the cross-polytope (K = 2d) and the simplex ETF (K = d + 1): GNC2 and its "
              "variance, the cosine mean and variance, the max-angle and ETF errors, equinorm and the log and "
              "Riesz (s = 1, 2) energies computed from the points equal their closed forms.",
    problems=st.one_of(sphere_specs(K=(3, 4, 5, 6, 7, 8), n=(1,), d=(2,)),
                       sphere_specs(K=(4, 6, 8, 10), n=(1,), d_of_K=lambda K: K // 2),
                       sphere_specs(K=(3, 4, 5, 6, 8), n=(1,), d_of_K=lambda K: K - 1)),
    theory=lambda problem: None, check=_metrics_check, solver="none",
    tolerances={"metrics": "closed_form_metric", "energies": "closed_form_metric"},
)

#: The spherical UFM's claims.
CLAIMS = (SPHERICAL_SIMPLEX, SPHERICAL_POLYGON, SPHERICAL_CROSS_POLYTOPE, CONFIGURATION_METRICS)
