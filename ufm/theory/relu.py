r"""The deep UFM with ReLU layers: the best deep-neural-collapse (DNC) configuration and its objective.

Súkeník, Mondelli, Lampert (NeurIPS 2023, arXiv 2305.13165): for binary classification (``K = 2``) every global
minimiser of the MSE DUFM (:mod:`ufm.relu_deep`) is DNC. Súkeník, Mondelli, Lampert (NeurIPS 2024, arXiv
2405.14468): beyond two layers or two classes DNC stops being optimal (a low-rank bias of the multi-layer
regulariser). The DNC value is the deep linear UFM's orthogonal-frame value (derivations §14), so
:func:`predict_relu_dnc` reports it, and :func:`ufm.verdict.verdict` calls a solve below it "below theory": a
solution better than DNC. :func:`relu_lowrank` is the value of an explicit low-rank configuration built on the
triangular graph (strongly regular; derivations §15), below DNC for ``L >= 4``.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory._onedim import global_min_1d
from ufm.theory.prediction import NoClosedFormError, Prediction, register_prediction
from ufm.validate import check_int

__all__ = ["ReLUDNC", "ReLULowRank", "lowrank_constant", "predict_relu_dnc", "relu_dnc", "relu_lowrank"]


class ReLUDNC(NamedTuple):
  r"""The best DNC configuration: class-level output scale ``z`` (:math:`W_L\bar H_L = zI_K`), ``objective``, and
  :math:`\Lambda_n = (n\lambda_H\prod_l\lambda_{W_l})^{1/(L+1)}`."""
  z: jax.Array
  objective: jax.Array
  Lam: jax.Array


def relu_dnc(K: int, n, L: int, lam_W, lam_H) -> ReLUDNC:
  r"""The best DNC configuration of the balanced MSE DUFM with ``L`` layers (derivations §14; the DNC family of
  Súkeník et al. 2023, arXiv 2305.13165, and 2024, arXiv 2405.14468): minimises over :math:`z \ge 0`

  .. math:: F_{DNC}(z) = \tfrac12(z - 1)^2 + \tfrac{K(L+1)}{2}\Lambda_n z^{2/(L+1)},\qquad
     \Lambda_n = (n\lambda_H\textstyle\prod_l\lambda_{W_l})^{1/(L+1)}

  (each of the ``K`` orthogonal directions is a product of ``L + 1`` factors balanced by AM-GM; every ReLU acts on
  non-negative features). ``lam_W``: a scalar or ``L`` values. ``z = 0`` (the zero solution, value 1/2) is always a
  local minimum for ``L >= 2``; a grid and bisection find the global one on ``[0, 1]``."""
  K = check_int("K", K, lo=2)
  L = check_int("L", L, lo=1)
  dt = jnp.result_type(float)
  lam = jnp.broadcast_to(jnp.asarray(lam_W, dt), (L,))
  Lam = jnp.exp((jnp.log(jnp.asarray(n, dt) * jnp.asarray(lam_H, dt)) + jnp.sum(jnp.log(lam))) / (L + 1))
  z, f = _relu_dnc_1d(Lam, K=K, L=L)
  return ReLUDNC(z=z, objective=f, Lam=Lam)


def _relu_dnc_1d_impl(Lam, *, K, L):
  q = 2.0 / (L + 1)
  return global_min_1d(lambda z: 0.5 * (z - 1) ** 2 + 0.5 * K * (L + 1) * Lam * z**q, hi=1.0)


_relu_dnc_1d = jax.jit(_relu_dnc_1d_impl, static_argnames=("K", "L"))


class ReLULowRank(NamedTuple):
  r"""The low-rank configuration of :func:`relu_lowrank`: ``blocks`` blocks of :math:`r(r-1)/2` classes (the
  triangular graph :math:`T(r)`) with output scale ``z`` (:math:`W_L\bar H_L = zI` on them), the other classes DNC
  with output scale ``z_rest``; ``objective``; ``kappa``, the blocks' regulariser per class relative to DNC's
  (:math:`C_{r,L}^{1/(L+1)}/K_r`: below DNC iff ``kappa < 1``); and :math:`\Lambda_n` as :class:`ReLUDNC`."""
  z: jax.Array
  z_rest: jax.Array
  objective: jax.Array
  kappa: jax.Array
  Lam: jax.Array
  r: int
  blocks: int


def lowrank_constant(r: int, L: int) -> float:
  r"""The weight-decay-free constant :math:`C_{r,L}` of one :math:`T(r)` block (derivations §15): the product of the
  squared norms of its ``L + 1`` unit factors, so that the block's regulariser is
  :math:`\frac{L+1}2\Lambda_nC_{r,L}^{1/(L+1)}z^{2/(L+1)}` (DNC's, per class: :math:`\frac{L+1}2\Lambda_nz^{2/(L+1)}`).
  With :math:`K_r = r(r-1)/2`, :math:`\nu_r = \sqrt{2(r-1)} + (r-1)\sqrt{r-2}` (the nuclear norm of the incidence
  matrix of the complete graph :math:`K_r`) and :math:`\mu_r = (r-1)(r-2) + (r-1)|r-4|/2` (that of
  :math:`P^\top P - J`):

  .. math:: C_{r,2} = \mu_r^2K_r, \qquad C_{r,L} = \nu_r^2\,r^{L-3}\,\tfrac{rK_r}4\,K_r\quad(L \ge 3).

  Raises ValueError for ``r < 4`` or ``L < 2``."""
  r = check_int("r", r, lo=4)
  L = check_int("L", L, lo=2)
  Kr = r * (r - 1) // 2
  if L == 2:
    mu = (r - 1) * (r - 2) + (r - 1) * abs(r - 4) / 2
    return mu**2 * Kr
  nu = math.sqrt(2 * (r - 1)) + (r - 1) * math.sqrt(r - 2)
  return nu**2 * r ** (L - 3) * (r * Kr / 4) * Kr


def relu_lowrank(K: int, n, L: int, lam_W, lam_H, r: int | None = None) -> ReLULowRank:
  r"""The objective of the explicit low-rank configuration of the balanced MSE DUFM (derivations §15;
  :func:`ufm.relu_lowrank.lowrank_params` builds it), optimised over its output scales.

  The classes are split into ``blocks = K // K_r`` blocks of :math:`K_r = r(r-1)/2` classes, the edges of the
  complete graph on ``r`` vertices, and the remaining classes. In a block (``L >= 3``; at ``L = 2`` the free
  :math:`H_1` and :math:`W_1` factor the last ReLU's input directly) the class means of layers :math:`2, \dots, L-1`
  are :math:`sP` (:math:`P` the ``r x K_r`` incidence matrix: class :math:`\{i,j\}` is
  :math:`e_i + e_j \ge 0`, rank ``r``), the last ReLU's input is :math:`s'(P^\top P - J)` (1 on the diagonal, 0 for
  classes sharing a vertex, -1 for disjoint ones: :math:`I - A`, ``A`` the adjacency of the complement of the
  triangular graph :math:`T(r)`, both strongly regular), so the ReLU returns :math:`s'I` and :math:`W_L` finishes as
  in DNC; the other classes are DNC. Each block is a product of ``L + 1`` factors balanced by AM-GM, so with
  :math:`g(\kappa) = \min_{z \ge 0} \tfrac12(z-1)^2 + \kappa\tfrac{K(L+1)}2\Lambda_nz^{2/(L+1)}`
  (:func:`relu_dnc`'s function, whose :math:`g(1)` is the DNC value)

  .. math:: F_{LR} = \tfrac{bK_r}K\,g(\kappa) + \bigl(1 - \tfrac{bK_r}K\bigr)\,g(1), \qquad
     \kappa = C_{r,L}^{1/(L+1)}/K_r

  (:func:`lowrank_constant`). ``kappa < 1`` (so :math:`F_{LR} < F_{DNC}` whenever DNC's scale is non-zero) for
  ``L >= 4`` and every ``r >= 4``; ``kappa > 1`` at ``L = 3``; at ``L = 2``, ``kappa = 1`` for ``r = 4`` (a tie)
  and ``> 1`` beyond. ``r`` defaults to the largest with :math:`K_r \le K`.

  This is the kind of low-rank, strongly-regular-graph solution that Súkeník, Mondelli, Lampert (NeurIPS 2024,
  arXiv 2405.14468) compare with DNC; the construction and its value are derived here (their full text, theorem
  and normalisation could not be checked; derivations §15).

  Raises ValueError (naming the parameter) for ``K < 6``, ``L < 2``, ``r < 4`` or :math:`K_r > K`."""
  K = check_int("K", K, lo=6)
  L = check_int("L", L, lo=2)
  if r is None:
    r = max(q for q in range(4, K + 2) if q * (q - 1) // 2 <= K)
  r = check_int("r", r, lo=4)
  Kr = r * (r - 1) // 2
  if Kr > K:
    raise ValueError(f"r = {r} needs r(r-1)/2 = {Kr} classes, more than K = {K}; allowed: r(r-1)/2 <= K")
  blocks = K // Kr
  kappa = lowrank_constant(r, L) ** (1.0 / (L + 1)) / Kr
  dt = jnp.result_type(float)
  lam = jnp.broadcast_to(jnp.asarray(lam_W, dt), (L,))
  Lam = jnp.exp((jnp.log(jnp.asarray(n, dt) * jnp.asarray(lam_H, dt)) + jnp.sum(jnp.log(lam))) / (L + 1))
  z, g = _relu_dnc_1d(kappa * Lam, K=K, L=L)
  z_rest, g1 = _relu_dnc_1d(Lam, K=K, L=L)
  frac = blocks * Kr / K
  return ReLULowRank(z=z, z_rest=z_rest, objective=frac * g + (1 - frac) * g1, kappa=jnp.asarray(kappa, dt), Lam=Lam,
                     r=r, blocks=blocks)


@register_prediction("relu_deep", "mse")
def predict_relu_dnc(problem) -> Prediction:
  r"""The best DNC configuration of a balanced :class:`ufm.relu_deep.ReLUDeepProblem` with MSE and every width
  ``>= K`` (:func:`relu_dnc`): the global minimum for ``K = 2`` (Súkeník et al. 2023, arXiv 2305.13165), only an
  upper bound on it otherwise (Súkeník et al. 2024, arXiv 2405.14468). Raises :class:`NoClosedFormError` for
  imbalanced counts, narrower widths or a zero weight decay."""
  K, L = problem.K, problem.depth
  lam = np.asarray(problem.lams(), np.float64)
  lam_H = float(np.asarray(problem.lam_H))
  if np.any(lam <= 0) or lam_H <= 0:
    raise NoClosedFormError("a DNC value needs every lam_W > 0 and lam_H > 0")
  if not problem.balanced:
    raise NoClosedFormError(f"counts = {problem.counts}: the DNC value is for balanced counts")
  if min(problem.widths) < K:
    raise NoClosedFormError(f"widths = {problem.widths}: DNC needs every width >= K = {K}")
  n = problem.counts[0]
  sol = relu_dnc(K, n, L, lam, lam_H)
  z, f, Lam = float(sol.z), float(sol.objective), float(sol.Lam)
  root = z ** (1.0 / (L + 1))
  a_H = math.sqrt(Lam / (n * lam_H)) * root  # per-sample feature norm of H_1
  a_L = math.sqrt(Lam / lam[-1]) * root
  I = np.eye(K)
  src = ("Súkeník, Mondelli, Lampert 2023 (arXiv 2305.13165; global for K = 2) / 2024 (arXiv 2405.14468; "
         "not global beyond two layers or two classes); DNC value derived in ufm.theory.relu_dnc")
  return Prediction(geometry="DNC (orthogonal frames)" if z > 0 else "zero", source=src, objective=f,
                    norm_W_sq=float(sum(K * Lam / l * root**2 for l in lam)) if z > 0 else 0.0,
                    norm_H_sq=problem.N * a_H**2, norm_b=0.0, gram_W=a_L**2 * I, gram_M=a_H**2 * I,
                    logits_M=z * I, b=np.zeros(K),
                    metrics={"nc1": 0.0, "nc1_last": 0.0, "mean_rank_last": float(K), "output_rank": float(K)}
                    if z > 0 else {})
