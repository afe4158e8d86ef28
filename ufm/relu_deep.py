r"""The deep unconstrained features model with ReLU layers (DUFM).

Súkeník, Mondelli, Lampert (NeurIPS 2023, "Deep Neural Collapse Is Provably Optimal for the Deep Unconstrained
Features Model", arXiv 2305.13165; NeurIPS 2024, "Neural Collapse versus Low-rank Bias: Is Deep Neural Collapse
Really Optimal?", arXiv 2405.14468): free features :math:`H_1` (``d_1 x N``), ``L`` bias-free layers with a ReLU
:math:`\sigma` between consecutive ones, weight decay on every layer, MSE:

.. math::
   H_{l+1} = \sigma(W_l H_l)\ (l = 1, \dots, L-1), \qquad
   f = \frac1{2N}\|W_L H_L - Y\|_F^2 + \sum_{l=1}^L \frac{\lambda_{W_l}}{2}\|W_l\|_F^2 + \frac{\lambda_H}{2}\|H_1\|_F^2

(ufm's normalisation, as :mod:`ufm.deep`; the loss may be any registered one, the closed forms are for MSE).
``W_l`` is ``d_{l+1} x d_l`` with ``d_{L+1} = K``. With ``L = 1`` this is the plain UFM.

Deep neural collapse (DNC): every layer's features collapse to their class means, which form an orthogonal frame
(non-negative after each ReLU), and each :math:`W_l` maps one frame to the next. :func:`ufm.theory.relu_dnc` gives
the best DNC objective; a solve below it is a solution that is not DNC (the low-rank solutions of the 2024 paper).
:func:`class_mean_singular_values` measures the rank of every layer's class means.
"""

from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm import metrics as _metrics
from ufm.deep import MAX_DEPTH, LayeredProblem
from ufm.problem import check_solve_memory, make_labels
from ufm.validate import cast_checked, check_counts, check_int, check_loss_bias_dtype, check_real

__all__ = ["RELU_METRICS", "ReLUDeepProblem", "ReLUParams", "class_mean_singular_values", "dnc_params",
           "layer_features", "make_relu_problem"]


class ReLUParams(NamedTuple):
  """DUFM parameters: layers ``Ws = (W_1, ..., W_L)``, free features ``H`` (:math:`H_1`, ``d_1 x N``), and ``b``
  (``K``; unused, zero: the DUFM is bias-free)."""
  Ws: tuple
  H: jax.Array
  b: jax.Array


def layer_features(params: ReLUParams) -> list:
  r"""``[H_1, H_2, ..., H_L]``: the free features and the post-ReLU features :math:`H_{l+1} = \sigma(W_lH_l)`."""
  Hs = [params.H]
  for W in params.Ws[:-1]:
    Hs.append(jax.nn.relu(W @ Hs[-1]))
  return Hs


@struct.dataclass
class ReLUDeepProblem(LayeredProblem):
  """One DUFM instance (objective in the module docstring): the fields, shapes, regulariser and initialisation of
  :class:`ufm.deep.LayeredProblem` (as :class:`ufm.deep.DeepProblem`: same keys, same initial point), with a ReLU
  between consecutive layers. ``lam_W`` has shape ``(L,)``; ``lam_b`` is 0 and ``bias`` False (the DUFM is
  bias-free; kept for the protocol)."""

  FAMILY: ClassVar[str] = "relu_deep"
  SCALAR_LEAVES: ClassVar[tuple[str, ...]] = ("lam_W", "lam_H")
  PARAMS: ClassVar[type] = ReLUParams

  def logits(self, params: ReLUParams) -> jax.Array:
    """:math:`W_L H_L` (``K x N``)."""
    return params.Ws[-1] @ layer_features(params)[-1]

  @property
  def METRICS(self) -> dict:
    """The DUFM's metrics (:data:`RELU_METRICS`), looked up by ``trace_metrics`` and the command line."""
    return RELU_METRICS


def make_relu_problem(counts, *, lam_W, lam_H, widths=None, d=None, depth=None, loss="mse",
                      dtype=None) -> ReLUDeepProblem:
  """Builds and validates a :class:`ReLUDeepProblem` (bias-free).

  Args:
    counts: class counts, ``K >= 2`` integers ``>= 1``.
    lam_W: the layers' weight decays ``>= 0``: a scalar (every layer) or one per layer.
    lam_H: ``>= 0``, the decay of ``H_1``.
    widths: ``(d_1, ..., d_L)``, integers ``>= 1``; or ``d`` and ``depth``.
    loss: a registered loss (the closed forms are for ``"mse"``).

  Raises:
    ValueError: naming the parameter and the allowed range.
  """
  counts = check_counts(counts)
  if widths is None:
    if d is None or depth is None:
      raise ValueError("give widths = (d_1, ..., d_L), or d and depth; allowed: integers >= 1")
    widths = (check_int("d", d, lo=1),) * check_int("depth", depth, lo=1, hi=MAX_DEPTH)
  elif d is not None or depth is not None:
    raise ValueError("give either widths or (d, depth), not both")
  if not isinstance(widths, (list, tuple, np.ndarray)) or not 1 <= len(widths) <= MAX_DEPTH:
    raise ValueError(f"widths = {widths!r}: allowed: a sequence of 1 to {MAX_DEPTH} integers >= 1 (one per layer)")
  widths = tuple(check_int(f"widths[{l}]", w, lo=1) for l, w in enumerate(np.asarray(widths).tolist()))
  L = len(widths)
  dtype = check_loss_bias_dtype(loss, False, dtype)
  check_solve_memory(len(counts), sum(counts), widths[0], dtype, widths=widths + (len(counts),))
  lw = check_real("lam_W", lam_W, lo=0.0)
  if lw.ndim > 1 or (lw.ndim == 1 and lw.shape[0] != L):
    raise ValueError(f"lam_W has shape {lw.shape}; allowed: a scalar or one value per layer, shape ({L},)")
  lh = check_real("lam_H", lam_H, lo=0.0)
  if lh.ndim:
    raise ValueError(f"lam_H has shape {lh.shape}; allowed: a scalar (vmap or sweep for a batch)")
  return ReLUDeepProblem(Y=make_labels(counts, dtype), lam_W=cast_checked("lam_W", np.broadcast_to(lw, (L,)), dtype),
                         lam_H=cast_checked("lam_H", lh, dtype), lam_b=jnp.zeros((), dtype), counts=counts,
                         widths=widths, loss=loss)


def class_mean_singular_values(params: ReLUParams, problem: ReLUDeepProblem) -> list:
  r"""Singular values (descending) of every layer's class-mean matrix :math:`\bar H_l` (``d_l x K``), ``l = 1..L``,
  and of the class-level outputs :math:`W_L\bar H_L` (last entry): the numerical rank of DNC is ``K`` at every
  layer; the low-rank solutions of Súkeník et al. 2024 (arXiv 2405.14468) have fewer."""
  Yn = problem.Y / jnp.asarray(problem.counts, problem.dtype)[:, None]
  means = [H @ Yn.T for H in layer_features(params)]
  means.append(params.Ws[-1] @ means[-1])
  return [jnp.linalg.svd(M, compute_uv=False) for M in means]


def dnc_params(problem: ReLUDeepProblem, z: float) -> ReLUParams:
  r"""The balanced DNC configuration with output :math:`W_L\bar H_L = zI_K` (orthogonal frames, non-negative
  between layers, so every ReLU acts as the identity): class means :math:`a_l e_k` in the first ``K`` coordinates,
  :math:`W_l = (a_{l+1}/a_l)\,[I_K\ 0]` blocks, factor scales from the AM-GM balance
  :math:`a_l^2\lambda_{W_l} = n a_1^2\lambda_H` (derivations §14). Needs every width ``>= K``."""
  K, L = problem.K, problem.depth
  if min(problem.widths) < K:
    raise ValueError(f"widths = {problem.widths}: the DNC construction needs every width >= K = {K}")
  n = problem.counts[0]
  lam = np.asarray(problem.lams(), np.float64)
  lam_H = float(problem.lam_H)
  Lam = np.exp((np.log(n * lam_H) + np.sum(np.log(lam))) / (L + 1))
  # singular value of factor j: s_j = sqrt(Lam / lam_j) z^(1/(L+1)); factor 0 is H_1 (per sample: sqrt(n) h)
  root = z ** (1.0 / (L + 1))
  s_H = np.sqrt(Lam / (n * lam_H)) * root  # per-sample feature norm
  s_W = np.sqrt(Lam / lam) * root
  dt = problem.dtype
  outs = problem.widths[1:] + (K,)
  Ws = tuple(jnp.asarray(s_W[l] * _block(outs[l], problem.widths[l], K), dt) for l in range(L))
  E = np.eye(problem.widths[0], K)
  H = jnp.asarray(s_H * E @ np.asarray(problem.Y), dt)
  return ReLUParams(Ws=Ws, H=H, b=jnp.zeros((K,), dt))


def _mean_rank(params: ReLUParams, problem: ReLUDeepProblem, layer: int) -> jax.Array:
  """Numerical rank of the class means of ``H_layer`` (0-based; ``-1``: the class-level outputs): singular values
  above ``1e-6`` times the largest."""
  s = class_mean_singular_values(params, problem)[layer]
  return jnp.sum(s > 1e-6 * jnp.max(s))


#: DUFM metrics by name, ``(params, problem) -> scalar``: NC1 (:func:`ufm.metrics.nc1`,
#: :math:`\frac1K\mathrm{tr}(\Sigma_W\Sigma_B^+)`) of the free features :math:`H_1` and of the last layer's
#: :math:`H_L`, and the numerical rank of the class means of :math:`H_L` and of the outputs :math:`W_L\bar H_L`
#: (``K`` at DNC; lower at the low-rank solutions of Súkeník et al. 2024, arXiv 2405.14468).
RELU_METRICS = {
    "nc1": lambda params, p: _metrics.nc1(params.H, p.labels, p.K),
    "nc1_last": lambda params, p: _metrics.nc1(layer_features(params)[-1], p.labels, p.K),
    "mean_rank_last": lambda params, p: _mean_rank(params, p, p.depth - 1),
    "output_rank": lambda params, p: _mean_rank(params, p, -1),
}


def _block(rows: int, cols: int, K: int) -> np.ndarray:
  """``rows x cols`` with :math:`I_K` in the leading block and zeros elsewhere."""
  m = np.zeros((rows, cols))
  m[:K, :K] = np.eye(K)
  return m
