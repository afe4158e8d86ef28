r"""The ``K > d + 1`` regime and the spherical UFM: Riesz energies and metrics of constructed configurations.

Closed forms for the configurations of :mod:`ufm.theory.frames` (regular polygons, the cross-polytope, the simplex
ETF on the sphere) and the spherical CE objective at a collapsed configuration (Lu & Steinerberger 2022,
arXiv 2012.08465; Jiang et al. 2024, arXiv 2310.05351; ``ufm/theory/derivations.md`` §5.7, cited as
"derivations §x"). They are the expected side of the tests of :mod:`ufm.geometry`, :mod:`ufm.spherical` and
:mod:`ufm.tiled`.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.validate import check_int

__all__ = [
    "ConfigurationMetrics",
    "cross_polytope_metrics",
    "regular_polygon_metrics",
    "riesz_energy_cross_polytope",
    "riesz_energy_regular_polygon",
    "riesz_energy_simplex",
    "simplex_metrics",
    "spherical_ce_collapsed",
]

def _polygon_chords(K: int) -> np.ndarray:
  """Chord lengths 2 sin(pi j / K), j = 1..K-1: the distance classes of the regular K-gon (K ordered pairs each)."""
  return 2 * np.sin(np.pi * np.arange(1, K) / K)


def riesz_energy_regular_polygon(K: int, s: float) -> float:
  r"""Energy of the regular ``K``-gon: :math:`E_s = \frac K2\sum_{j=1}^{K-1}(2\sin\frac{\pi j}K)^{-s}` for ``s > 0``,
  and :math:`E_0 = \sum_{i<j}\log\frac1{\|x_i - x_j\|} = -\frac K2\log K` (from
  :math:`\prod_{j=1}^{K-1}|1 - \omega^j| = K`, :math:`\omega = e^{2\pi i/K}`)."""
  check_int("K", K, lo=3)
  if s == 0:
    return -0.5 * K * math.log(K)
  return 0.5 * K * float(np.sum(_polygon_chords(K) ** (-float(s))))


def riesz_energy_cross_polytope(d: int, s: float) -> float:
  r"""Energy of the ``2d``-point cross-polytope: ``d`` antipodal pairs at distance 2 and ``2d(d-1)`` pairs at
  :math:`\sqrt2`: :math:`E_s = d\,2^{-s} + 2d(d-1)\,2^{-s/2}`, :math:`E_0 = -d\log 2 - d(d-1)\log 2`."""
  check_int("d", d, lo=1)
  if s == 0:
    return -d * math.log(2) - d * (d - 1) * math.log(2)
  return d * 2.0 ** (-s) + 2 * d * (d - 1) * 2.0 ** (-s / 2)


def riesz_energy_simplex(K: int, s: float) -> float:
  r"""Energy of the simplex ETF (all :math:`\binom K2` distances :math:`\sqrt{2K/(K-1)}`)."""
  check_int("K", K, lo=2)
  P, r = K * (K - 1) / 2, math.sqrt(2 * K / (K - 1))
  return -P * math.log(r) if s == 0 else P * r ** (-float(s))


class ConfigurationMetrics(NamedTuple):
  """Closed-form metric values of a constructed configuration of unit class means with zero mean (the NC
  metrics of :mod:`ufm.metrics` on the centred means): GNC2 (mean over pairs of :math:`\\log(1/\\|\\hat\\mu_c -
  \\hat\\mu_{c'}\\|)`), its population variance over pairs, the mean and population variance of the pairwise
  cosines, :math:`\\mathrm{avg}|\\cos + 1/(K-1)|` (``max_angle``), the ETF error of the Gram matrix and the
  one-vs-rest distance :math:`\\rho` (equal for every class)."""
  gnc2: float
  gnc2_var: float
  cos_mean: float
  cos_var: float
  max_angle: float
  etf_error: float
  one_vs_rest: float


def regular_polygon_metrics(K: int) -> ConfigurationMetrics:
  r"""Metrics of the regular ``K``-gon (``K >= 3``). Each distance class :math:`j = 1..K-1` (chord
  :math:`2\sin(\pi j/K)`, cosine :math:`\cos(2\pi j/K)`) is met by the same number of pairs, so pair averages are
  averages over ``j``: GNC2 :math:`= -\log K/(K-1)`; :math:`\overline{\cos} = -1/(K-1)`;
  :math:`\overline{\cos^2} = (K/2 - 1)/(K-1)`; the Gram matrix is circulant of rank 2 with
  :math:`\|G\|_F^2 = K^2/2`, :math:`\langle G, E\rangle = K/\sqrt{K-1}`, so the ETF error is
  :math:`\sqrt{2 - 2\sqrt{2/(K-1)}}`; :math:`\rho = 1 - \cos(2\pi/K)` (the distance from a vertex to the chord
  joining its neighbours)."""
  check_int("K", K, lo=3)
  L = -np.log(_polygon_chords(K))
  c = np.cos(2 * np.pi * np.arange(1, K) / K)
  mean_c = -1.0 / (K - 1)
  return ConfigurationMetrics(gnc2=-math.log(K) / (K - 1), gnc2_var=float(np.mean(L**2) - np.mean(L) ** 2),
                              cos_mean=mean_c, cos_var=(K / 2 - 1) / (K - 1) - mean_c**2,
                              max_angle=float(np.mean(np.abs(c - mean_c))),
                              etf_error=math.sqrt(max(2 - 2 * math.sqrt(2 / (K - 1)), 0.0)),
                              one_vs_rest=1 - math.cos(2 * math.pi / K))


def cross_polytope_metrics(d: int) -> ConfigurationMetrics:
  r"""Metrics of the cross-polytope, ``K = 2d`` (``d >= 2``): of the :math:`P = d(2d-1)` pairs, ``d`` are antipodal
  (cosine -1, :math:`\log(1/2)`) and the rest orthogonal (0, :math:`\log(1/\sqrt2)`), so with :math:`p = d/P = 1/(K-1)`:
  GNC2 :math:`= -\frac{1+p}{2}\log 2`, variance :math:`p(1-p)(\frac12\log 2)^2`; :math:`\overline{\cos} = -p`,
  variance :math:`p(1-p)`; ``max_angle`` :math:`= p(1-p) + (1-p)p = 2p(1-p)`; :math:`\|G\|_F^2 = 2K`,
  :math:`\langle G, E\rangle = K/\sqrt{K-1}`, ETF error :math:`\sqrt{2 - 2\sqrt{K/(2(K-1))}}`; :math:`\rho = 1`
  (the hull of the other vertices contains 0 and has no point with a positive coordinate along the vertex)."""
  check_int("d", d, lo=2)
  K = 2 * d
  p = 1.0 / (K - 1)
  h = 0.5 * math.log(2)
  return ConfigurationMetrics(gnc2=-(1 + p) * h, gnc2_var=p * (1 - p) * h**2, cos_mean=-p, cos_var=p * (1 - p),
                              max_angle=2 * p * (1 - p), etf_error=math.sqrt(2 - 2 * math.sqrt(K / (2 * (K - 1)))),
                              one_vs_rest=1.0)


def simplex_metrics(K: int) -> ConfigurationMetrics:
  r"""Metrics of the simplex ETF: every pair at cosine :math:`-1/(K-1)` and distance :math:`\sqrt{2K/(K-1)}`, so
  GNC2 :math:`= -\frac12\log\frac{2K}{K-1}` with zero variance (derivations §0.3), ETF error 0, and
  :math:`\rho = K/(K-1)` (the distance from a vertex to the centroid :math:`-x_k/(K-1)` of the opposite facet)."""
  check_int("K", K, lo=3)
  return ConfigurationMetrics(gnc2=-0.5 * math.log(2 * K / (K - 1)), gnc2_var=0.0, cos_mean=-1.0 / (K - 1),
                              cos_var=0.0, max_angle=0.0, etf_error=0.0, one_vs_rest=K / (K - 1))


def spherical_ce_collapsed(G: jax.Array, tau) -> jax.Array:
  r"""The spherical CE-UFM objective (balanced) at a collapsed configuration with features equal to their unit
  classifiers, :math:`h_i = w_{y_i}`: :math:`\frac1K\sum_k\log\sum_j\exp\big((G_{kj} - G_{kk})/\tau\big)` with
  :math:`G = WW^\top`. For the simplex ETF: :math:`\log\big(1 + (K-1)e^{-K/((K-1)\tau)}\big)` (Lu & Steinerberger
  2022, arXiv 2012.08465; Jiang et al. 2024, arXiv 2310.05351, eq. (3))."""
  Gd = jnp.diagonal(G)
  return jnp.mean(jax.nn.logsumexp((G - Gd[:, None]) / tau, axis=1))
