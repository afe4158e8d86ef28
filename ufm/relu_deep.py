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

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm import losses
from ufm.deep import MAX_DEPTH
from ufm.problem import FamilyBase, check_solve_memory, make_labels
from ufm.validate import cast_checked, check_counts, check_int, check_loss_bias_dtype, check_real

__all__ = ["ReLUDeepProblem", "ReLUParams", "class_mean_singular_values", "dnc_params", "layer_features",
           "make_relu_problem"]


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
class ReLUDeepProblem(FamilyBase):
  """One DUFM instance (objective in the module docstring).

  Attributes:
    Y: one-hot labels ``K x N``. lam_W: the layers' weight decays, shape ``(L,)``. lam_H: the decay of ``H_1``.
    lam_b: 0 (no bias; kept for the protocol). counts, widths ``(d_1, ..., d_L)``, loss: static.
  """
  Y: Any
  lam_W: Any
  lam_H: Any
  lam_b: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  widths: tuple[int, ...] = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="mse")
  bias: bool = struct.field(pytree_node=False, default=False)

  FAMILY: ClassVar[str] = "relu_deep"
  SCALAR_LEAVES: ClassVar[tuple[str, ...]] = ("lam_W", "lam_H")

  @property
  def depth(self) -> int:
    """``L``, the number of layers."""
    return len(self.widths)

  @property
  def d(self) -> int:
    return self.widths[0]

  @property
  def shapes(self) -> tuple[tuple[int, int], ...]:
    outs = self.widths[1:] + (self.K,)
    return tuple(zip(outs, self.widths))

  def lams(self) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(self.lam_W), (self.depth,))

  def logits(self, params: ReLUParams) -> jax.Array:
    """:math:`W_L H_L` (``K x N``)."""
    return params.Ws[-1] @ layer_features(params)[-1]

  def value(self, params: ReLUParams) -> jax.Array:
    """The objective of the module docstring."""
    lam = self.lams()
    r = sum(lam[l] * jnp.sum(W**2) for l, W in enumerate(params.Ws))
    r = 0.5 * (r + self.lam_H * jnp.sum(params.H**2))
    return losses.mean(self.loss, self.logits(params), self.Y) + r

  def init(self, key: jax.Array, init_scale) -> ReLUParams:
    r"""Every entry of every ``W_l`` and of ``H_1`` :math:`\sim\mathcal N(0, s^2)`; keys ``split(key, L + 1)``, the
    last for ``H_1`` (as :meth:`ufm.deep.DeepProblem.init`)."""
    keys = jax.random.split(key, self.depth + 1)
    dt = self.dtype
    s = jnp.asarray(init_scale, dt)
    Ws = tuple(s * jax.random.normal(k, shape, dt) for k, shape in zip(keys[:-1], self.shapes))
    return ReLUParams(Ws=Ws, H=s * jax.random.normal(keys[-1], (self.d, self.N), dt), b=jnp.zeros((self.K,), dt))


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


def _block(rows: int, cols: int, K: int) -> np.ndarray:
  """``rows x cols`` with :math:`I_K` in the leading block and zeros elsewhere."""
  m = np.zeros((rows, cols))
  m[:K, :K] = np.eye(K)
  return m
