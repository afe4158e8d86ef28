r"""Perturbation analysis of the vicinity UFM: the collapsed base point, the linearised map, the contraction.

Tirer, Huang & Niles-Weed (2023, arXiv 2210.16658), in the paper's normalisation (:mod:`ufm.vicinity`). Sections
cited as "derivations §x" are in ``ufm/theory/derivations.md`` (§3 the model, §10 the theorem checked in float64).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory.frames import orthogonal_frame
from ufm.theory.prediction import NoClosedFormError
from ufm.validate import check_int

__all__ = [
    "VicinityBasePoint",
    "VicinityMap",
    "contraction_map",
    "vicinity_base_point",
    "vicinity_linearised_map",
]

class VicinityBasePoint(NamedTuple):
  """The collapsed minimiser of the ``beta = 0`` vicinity problem: ``W0`` (``K x d``), ``H0`` (``d x N``),
  the squared norms ``a2 = ||w_k||^2`` and ``b2 = ||hbar_k||^2``, ``c = sqrt(lam_H lam_W)`` and the value."""
  W0: jax.Array
  H0: jax.Array
  a2: float
  b2: float
  c: float
  objective: float


def vicinity_base_point(K: int, n: int, d: int, lam_W, lam_H, *, key: jax.Array | None = None,
                        dtype=None) -> VicinityBasePoint:
  r"""Global minimiser of the balanced, bias-free MSE vicinity UFM at :math:`\beta = 0` (paper
  normalisation, :mod:`ufm.vicinity`): an orthogonal frame repeated ``n`` times,

  .. math::
     \bar H_0 = b\,Q,\quad W_0 = a\,Q^\top,\quad b^2 = \sqrt{\lambda_W/\lambda_H} - \lambda_W,\quad
     a^2 = \sqrt{\lambda_H/\lambda_W} - \lambda_H,\quad W_0\bar H_0 = (1 - c) I_K,\quad
     f^\star = c - c^2/2,

  with :math:`c = \sqrt{\lambda_H\lambda_W} < 1` and :math:`Q^\top Q = I_K` (``d >= K``); the zero
  solution when :math:`c \ge 1`. It is a fixed point of :math:`H_0 \mapsto H^\star(H_0)` for every
  :math:`\beta` (Tirer, Huang, Niles-Weed 2023, arXiv 2210.16658, near-collapse setting; derived and
  checked in derivations §10.1).
  """
  check_int("K", K, lo=2)
  if d < K:
    raise NoClosedFormError(f"d = {d} is out of range for the orthogonal-frame base point of K = {K}; "
                            f"allowed range: d >= K = {K}")
  lam_W, lam_H = float(lam_W), float(lam_H)
  if lam_W <= 0 or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W}, lam_H = {lam_H}: allowed range: both > 0")
  c = math.sqrt(lam_H * lam_W)
  b2 = max(0.0, math.sqrt(lam_W / lam_H) - lam_W)
  a2 = max(0.0, math.sqrt(lam_H / lam_W) - lam_H)
  Q = orthogonal_frame(K, d, key=key, dtype=dtype)
  Hbar = math.sqrt(b2) * Q
  labels = np.repeat(np.arange(K), n)
  f = c - c * c / 2 if c < 1 else 0.5
  return VicinityBasePoint(W0=math.sqrt(a2) * Q.T, H0=Hbar[:, labels], a2=a2, b2=b2, c=c, objective=f)


class VicinityMap(NamedTuple):
  r"""Singular values of the class blocks of :math:`F = dH^\star/dH_0` at the base point (exact, and the
  paper's first-order forms), with the within-class eigenvalues and the class-mean factor ``gamma``."""
  smax_kk: float
  smin_kk: float
  smax_cross: float
  smin_kk_first_order: float
  smax_cross_first_order: float
  within_row: float
  within_null: float
  gamma: float


def vicinity_linearised_map(lam_W, lam_H, beta) -> VicinityMap:
  r"""The near-collapse theorem of Tirer, Huang & Niles-Weed (2023, arXiv 2210.16658), exactly.

  At the base point of :func:`vicinity_base_point` (``d > K``, ``n >= 2``, :math:`c = \sqrt{\lambda_H
  \lambda_W} < 1`), the ``(dn) x (dn)`` class blocks of :math:`F = \beta(\beta I + Kn\nabla^2 L_0(H_0))^{-1}`
  have

  .. math::
     \sigma_{\max}(F_{kk}) = 1,\quad
     \sigma_{\min}(F_{kk}) = \frac{\beta}{\beta + \sqrt{\lambda_H/\lambda_W}}
       \;\big[\approx 1 - \beta^{-1}\sqrt{\lambda_H/\lambda_W}\big],\quad
     \sigma_{\max}(F_{k\tilde k}) = \frac{2\lambda_H(1-c)}{\beta + 4\lambda_H(1-c)}
       \;\big[\approx 2\beta^{-1}\lambda_H(1 - c)\big],

  the bracketed first-order forms being the paper's statements (error :math:`O(\beta^{-2})`).
  The within-class map :math:`A = \beta(W_0^\top W_0 + (\lambda_H + \beta)I)^{-1}` has eigenvalues
  ``within_row`` on the row space of ``W0`` and ``within_null`` on its null space; the class-mean map
  scales the symmetric in-span part by :math:`\gamma = \beta/(\beta + 4\lambda_H(1 - c))`
  (derived and checked in float64 in derivations §10.2).
  """
  lam_W, lam_H, beta = float(lam_W), float(lam_H), float(beta)
  if lam_W <= 0 or lam_H <= 0 or beta <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W}, lam_H = {lam_H}, beta = {beta}: allowed range: all > 0")
  c = math.sqrt(lam_H * lam_W)
  if c >= 1:
    raise NoClosedFormError(f"sqrt(lam_H lam_W) = {c:g} >= 1: the base point is 0; allowed: lam_H lam_W < 1")
  r = math.sqrt(lam_H / lam_W)
  g = 4 * lam_H * (1 - c)
  return VicinityMap(smax_kk=1.0, smin_kk=beta / (beta + r), smax_cross=2 * lam_H * (1 - c) / (beta + g),
                     smin_kk_first_order=1 - r / beta, smax_cross_first_order=2 * lam_H * (1 - c) / beta,
                     within_row=beta / (beta + r), within_null=beta / (beta + lam_H), gamma=beta / (beta + g))


def contraction_map(W: jax.Array, lam_H, beta) -> jax.Array:
  r"""The within-class contraction :math:`A = \beta(W^\top W + (\lambda_H + \beta)I)^{-1}` (``d x d``):
  at any minimiser ``(W*, H*)`` of the MSE vicinity problem, :math:`\Sigma_W(H^\star) = A\,\Sigma_W(H_0)\,A`
  with ``A`` built from ``W*`` (Y is constant within a class), so :math:`0 \prec A \preceq
  \frac{\beta}{\beta + \lambda_H} I` and :math:`\mathrm{tr}\,\Sigma_W(H^\star) \le \mathrm{tr}\,\Sigma_W(H_0)`
  (Tirer et al. 2023; the ``lambda_H`` term derived in derivations §10.5, correcting §3.3)."""
  d = W.shape[1]
  return beta * jnp.linalg.inv(W.T @ W + (lam_H + beta) * jnp.eye(d, dtype=W.dtype))
