r"""The deep linear UFM: ``M`` bias-free linear layers between the free features and the loss.

Dang, Tran, Osher, Tran-The, Ho, Nguyen (ICML 2023, "Neural Collapse in Deep Linear Networks: From
Balanced to Imbalanced Data", arXiv 2301.00437; ``ufm/theory/derivations.md`` §1.1, the normalisation of their
``synthetic_experiment_*.py``):

.. math::
   f(W_M, \dots, W_1, H, b) = \frac1N \sum_{i=1}^N \ell(W_M\cdots W_1 h_i + b, y_i)
   + \sum_{m=1}^M \frac{\lambda_{W_m}}{2}\|W_m\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
   + \frac{\lambda_b}{2}\|b\|_2^2,

with :math:`\ell_{MSE}(z, y) = \frac12\|z - y\|^2` or softmax cross-entropy, exactly the losses of
:mod:`ufm.objectives`. Shapes: ``H`` is ``d_1 x N``, ``W_m`` is ``d_{m+1} x d_m`` with
``d_{M+1} = K``; ``widths = (d_1, ..., d_M)``. With ``M = 1`` this *is* the plain UFM of
:mod:`ufm.objectives` (same numbers bit for bit, same initialisation from the same key; tested).

A :class:`DeepProblem` plugs into every solver and sweep through the
:class:`ufm.problem.Family` protocol (``value``, ``init``, ``SCALAR_LEAVES``); its parameters are :class:`DeepParams`,
whose ``W`` property is the product classifier :math:`\bar W = W_M\cdots W_1`, so every metric of
:mod:`ufm.metrics` applies to (product classifier, features ``H``). The per-layer metrics of
:data:`DEEP_METRICS` (NC1 of every layer's features, class-mean and classifier Grams of every layer,
balancedness of consecutive layers) are recorded by the same ``trace_metrics`` option. The weight
decays of the layers are one array leaf ``lam_W`` of shape ``(M,)``; sweeping the axis ``lam_W``
sets every layer to the same value.

Closed forms: :mod:`ufm.theory` (the deep linear UFM): ``deep_mse_minimiser``,
``deep_ce_etf``, ``deep_ce_block``; :func:`balanced_factorisation` realises a class-level logit
matrix as parameters of minimal regulariser (used to evaluate those candidates with :meth:`DeepProblem.value`).
"""

from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np
from flax import struct

from ufm import losses
from ufm import metrics as _metrics
from ufm.problem import FamilyBase, check_solve_memory, make_labels
from ufm.validate import cast_checked, check_counts, check_int, check_loss_bias_dtype, check_real

__all__ = [
    "DEEP_METRICS",
    "MAX_DEPTH",
    "DeepParams",
    "DeepProblem",
    "LayeredProblem",
    "balance_errors",
    "balanced_factorisation",
    "centred_gram",
    "classifier_grams",
    "gram_error",
    "layer_features",
    "layer_metrics",
    "make_deep_problem",
    "mean_grams",
    "nc1_layers",
    "product",
    "self_duality_from_grams",
    "self_duality_layers",
]


class DeepParams(NamedTuple):
  """Deep linear UFM parameters: layers ``Ws = (W_1, ..., W_M)`` (``W_m`` is ``d_{m+1} x d_m``), features
  ``H`` (``d_1 x N``) and bias ``b`` (``K``; unused and zero without a bias). ``W`` is the product
  classifier :math:`W_M\\cdots W_1` (``K x d_1``), so the plain metrics of :mod:`ufm.metrics` apply."""
  Ws: tuple
  H: jax.Array
  b: jax.Array

  @property
  def W(self) -> jax.Array:
    """The product classifier :math:`\\bar W = W_M\\cdots W_1`."""
    return product(self.Ws)


def product(Ws) -> jax.Array:
  r""":math:`W_M(W_{M-1}(\cdots W_1))`, evaluated from the classifier side: with ``K`` rows this costs
  :math:`O(K\sum_m d_{m+1}d_m)` instead of :math:`O(\sum_m d_{m+1}d_m N)` when applied to ``H`` afterwards."""
  C = Ws[-1]
  for W in reversed(Ws[:-1]):
    C = C @ W
  return C


@struct.dataclass
class LayeredProblem(FamilyBase):
  r"""What the deep families share: the fields, the layer shapes and weight decays, the regulariser and the Gaussian
  initialisation of ``L`` layers ``W_1, ..., W_L`` (``W_l`` is ``d_{l+1} x d_l``, ``d_{L+1} = K``) on free features
  ``H`` (``d_1 x N``). Subclasses (:class:`DeepProblem`, :class:`ufm.relu_deep.ReLUDeepProblem`) set ``FAMILY``,
  ``PARAMS`` (their parameter type: ``(Ws, H, b)``) and define ``logits`` and ``value``.

  Attributes:
    Y: one-hot labels ``K x N`` (columns grouped by class).
    lam_W: the layers' weight decays, shape ``(L,)`` (a scalar after a sweep substitutes one value:
      every layer then uses it).
    lam_H, lam_b: scalar weight decays of ``H`` and ``b``.
    counts: class counts (static).
    widths: ``(d_1, ..., d_L)``; ``d_1`` is the feature dimension ``d`` (static).
    loss: a registered loss (static).
    bias: whether the last layer has a bias ``b`` (static).
  """
  Y: Any
  lam_W: Any
  lam_H: Any
  lam_b: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  widths: tuple[int, ...] = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="mse")
  bias: bool = struct.field(pytree_node=False, default=False)

  PARAMS: ClassVar[type] = NamedTuple

  @property
  def depth(self) -> int:
    """The number of layers (``M`` for the deep linear UFM, ``L`` for the ReLU one)."""
    return len(self.widths)

  @property
  def d(self) -> int:
    """The feature dimension ``d_1``."""
    return self.widths[0]

  @property
  def shapes(self) -> tuple[tuple[int, int], ...]:
    """``((d_2, d_1), ..., (K, d_L))``: the shapes of ``W_1, ..., W_L``."""
    outs = self.widths[1:] + (self.K,)
    return tuple(zip(outs, self.widths))

  def lams(self) -> jax.Array:
    """The layers' weight decays as an ``(L,)`` array (a scalar leaf is broadcast)."""
    return jnp.broadcast_to(jnp.asarray(self.lam_W), (self.depth,))

  def regulariser(self, params) -> jax.Array:
    r""":math:`\sum_l \frac{\lambda_{W_l}}{2}\|W_l\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2 (+ \frac{\lambda_b}{2}\|b\|^2)`,
    summed in the order of :func:`ufm.objectives.regulariser` (so one layer gives the plain UFM's bits)."""
    lam = self.lams()
    r = lam[0] * jnp.sum(params.Ws[0] ** 2)
    for m in range(1, self.depth):
      r = r + lam[m] * jnp.sum(params.Ws[m] ** 2)
    r = 0.5 * (r + self.lam_H * jnp.sum(params.H**2))
    if self.bias:
      r = r + 0.5 * self.lam_b * jnp.sum(params.b**2)
    return r

  def value(self, params) -> jax.Array:
    """The registered loss ``self.loss`` (:mod:`ufm.losses`) of :meth:`logits`, plus :meth:`regulariser`."""
    return losses.mean(self.loss, self.logits(params), self.Y) + self.regulariser(params)

  def init(self, key: jax.Array, init_scale):
    r"""Gaussian initialisation, every entry of every ``W_l`` and of ``H`` :math:`\sim\mathcal N(0, s^2)`, ``b = 0``
    (Dang et al.'s code: ``std = 0.1`` for all). Keys: ``split(key, L + 1)``, the last for ``H``; with
    one layer these are the keys of :func:`ufm.problem.init_params`, so the initial point is the same."""
    keys = jax.random.split(key, self.depth + 1)
    dt = self.dtype
    s = jnp.asarray(init_scale, dt)
    Ws = tuple(s * jax.random.normal(k, shape, dt) for k, shape in zip(keys[:-1], self.shapes))
    H = s * jax.random.normal(keys[-1], (self.d, self.N), dt)
    return self.PARAMS(Ws=Ws, H=H, b=jnp.zeros((self.K,), dt))


@struct.dataclass
class DeepProblem(LayeredProblem):
  """One deep linear UFM instance (objective in the module docstring); fields, shapes, regulariser and
  initialisation of :class:`LayeredProblem`, with ``M = depth`` linear layers, ``loss`` ``"ce"`` or ``"mse"``."""

  FAMILY: ClassVar[str] = "deep"
  SCALAR_LEAVES = ("lam_W", "lam_H", "lam_b")
  PARAMS: ClassVar[type] = DeepParams

  def logits(self, params: DeepParams) -> jax.Array:
    r""":math:`Z = (W_M\cdots W_1)H + b\mathbf 1^\top` (``K x N``; ``b`` only with a bias)."""
    Z_KxN = product(params.Ws) @ params.H
    if self.bias:
      Z_KxN = Z_KxN + params.b[:, None]
    return Z_KxN

  @property
  def METRICS(self) -> dict:
    """Problem-specific trace metrics (:data:`DEEP_METRICS`), looked up by :func:`ufm.metrics.compute`."""
    return DEEP_METRICS


#: Deepest deep linear UFM accepted: each layer is a Python-level factor of the traced program (compile time grows
#: with the depth; 10^6 layers hang in tracing); the literature's deep UFMs have at most tens of layers.
MAX_DEPTH = 256


def make_deep_problem(counts, *, lam_W, lam_H, lam_b=0.0, widths=None, d=None, depth=None, loss="mse",
                      bias=False, dtype=None) -> DeepProblem:
  """Builds and validates a :class:`DeepProblem` (errors name the parameter and the allowed range).

  Args:
    counts: class counts, ``K >= 2`` integers ``>= 1``.
    lam_W: the layers' weight decays ``>= 0``: a scalar (every layer) or a sequence of length ``M``.
    lam_H, lam_b: ``>= 0`` scalars (``lam_b = 0`` without a bias).
    widths: ``(d_1, ..., d_M)``, integers ``>= 1``; or give ``d`` and ``depth`` (``widths = (d,) * depth``).
    loss: ``"mse"`` or ``"ce"``; bias: whether the last layer has a bias.
    dtype: floating dtype (default: JAX's default float).
  """
  counts = check_counts(counts)
  if widths is None:
    if d is None or depth is None:
      raise ValueError("give widths = (d_1, ..., d_M), or d and depth; allowed: integers >= 1")
    widths = (check_int("d", d, lo=1),) * check_int("depth", depth, lo=1, hi=MAX_DEPTH)
  elif d is not None or depth is not None:
    raise ValueError("give either widths or (d, depth), not both")
  if not isinstance(widths, (list, tuple, np.ndarray)) or len(widths) < 1:
    raise ValueError(f"widths = {widths!r}: allowed: a non-empty sequence of integers >= 1 (one per layer)")
  if len(widths) > MAX_DEPTH:
    raise ValueError(f"depth = len(widths) = {len(widths)} is out of range; allowed range: 1 <= depth <= {MAX_DEPTH}")
  widths = tuple(check_int(f"widths[{m}]", w, lo=1) for m, w in enumerate(np.asarray(widths).tolist()))
  M = len(widths)
  dtype = check_loss_bias_dtype(loss, bias, dtype)
  check_solve_memory(len(counts), sum(counts), widths[0], dtype, widths=widths + (len(counts),))
  lw = check_real("lam_W", lam_W, lo=0.0)
  if lw.ndim > 1 or (lw.ndim == 1 and lw.shape[0] != M):
    raise ValueError(f"lam_W has shape {lw.shape}; allowed: a scalar or one value per layer, shape ({M},)")
  lw = np.broadcast_to(lw, (M,))
  lh, lb = (check_real(k, v, lo=0.0) for k, v in (("lam_H", lam_H), ("lam_b", lam_b)))
  for k, v in (("lam_H", lh), ("lam_b", lb)):
    if v.ndim:
      raise ValueError(f"{k} has shape {v.shape}; allowed: a scalar (vmap or sweep for a batch)")
  if not bias and lb != 0:
    raise ValueError(f"lam_b = {float(lb)!r} has no effect without a bias; allowed: lam_b = 0 when bias=False")
  return DeepProblem(Y=make_labels(counts, dtype), lam_W=cast_checked("lam_W", lw, dtype),
                     lam_H=cast_checked("lam_H", lh, dtype), lam_b=cast_checked("lam_b", lb, dtype),
                     counts=counts, widths=widths, loss=loss, bias=bool(bias))


# ----------------------------------------------------------------------------- per-layer metrics


def layer_features(params: DeepParams) -> list:
  r"""The features entering each layer and the logits: :math:`H_1 = H`, :math:`H_{m+1} = W_m H_m`
  (``m = 1..M``; :math:`H_{M+1} = W_M\cdots W_1 H`, the bias-free logits). ``M + 1`` arrays."""
  out = [params.H]
  for W in params.Ws:
    out.append(W @ out[-1])
  return out


def nc1_layers(params: DeepParams, problem: DeepProblem) -> jax.Array:
  r"""NC1 :math:`\frac1K\mathrm{tr}(\Sigma_W\Sigma_B^+)` (:func:`ufm.metrics.nc1`) of every :math:`H_m`,
  ``m = 1..M+1`` (Dang et al. 2023's synthetic-experiment code tracks it for ``H``). Shape ``(M+1,)``."""
  return jnp.stack([_metrics.nc1(Hm, problem.labels, problem.K) for Hm in layer_features(params)])


def mean_grams(params: DeepParams, problem: DeepProblem) -> jax.Array:
  r"""Gram matrices :math:`\bar H_m^\top\bar H_m` of the *uncentred* class means of every :math:`H_m`
  (``m = 1..M+1``), shape ``(M+1, K, K)``. Computed from the means of ``H`` only, since
  :math:`\bar H_{m+1} = W_m\bar H_m` (linear layers). Centred Grams follow by :func:`centred_gram`."""
  Hbar = _metrics.class_means(params.H, problem.labels, problem.K)[0]
  grams = [Hbar.T @ Hbar]
  for W in params.Ws:
    Hbar = W @ Hbar
    grams.append(Hbar.T @ Hbar)
  return jnp.stack(grams)


def classifier_grams(params: DeepParams, problem: DeepProblem) -> jax.Array:
  r"""Gram matrices :math:`C_mC_m^\top` of the partial classifiers :math:`C_m = W_M\cdots W_m` (the map from
  layer ``m``'s features to the logits; :math:`C_1 = \bar W`), ``m = 1..M``, shape ``(M, K, K)``. Dang et
  al.'s code evaluates NC2 on these products (``W_list``)."""
  C = params.Ws[-1]
  grams = [C @ C.T]
  for W in reversed(params.Ws[:-1]):
    C = C @ W
    grams.append(C @ C.T)
  return jnp.stack(grams[::-1])


def balance_errors(params: DeepParams, problem: DeepProblem) -> jax.Array:
  r"""Alignment of consecutive layers: with :math:`W_0 := H`, :math:`\lambda_0 := \lambda_H`,

  .. math:: e_m = \frac{\|\lambda_{m+1}W_{m+1}^\top W_{m+1} - \lambda_m W_mW_m^\top\|_F}
                       {\|\lambda_m W_mW_m^\top\|_F}, \qquad m = 0, \dots, M-1.

  At *every* critical point of the regularised objective :math:`e_m = 0` (derived: the gradient
  conditions give :math:`\nabla_{W_m}f\,W_m^\top - W_{m+1}^\top\nabla_{W_{m+1}}f = \lambda_mW_mW_m^\top -
  \lambda_{m+1}W_{m+1}^\top W_{m+1}`, whose left side vanishes); then the right singular spaces of
  :math:`W_{m+1}` equal the left ones of :math:`W_m` (Dang et al.'s alignment across layers). Shape ``(M,)``."""
  lam = problem.lams()
  prev = problem.lam_H * params.H @ params.H.T
  errs = []
  for m, W in enumerate(params.Ws):
    nxt = lam[m] * W.T @ W
    errs.append(jnp.linalg.norm(nxt - prev) / jnp.linalg.norm(prev))
    prev = lam[m] * W @ W.T
  return jnp.stack(errs)


def _logit_means(params: DeepParams, problem: DeepProblem) -> jax.Array:
  r""":math:`\bar Z = \bar W\bar H` (``K x K``, column ``k`` the mean logits of class ``k``, bias-free)."""
  return product(params.Ws) @ _metrics.class_means(params.H, problem.labels, problem.K)[0]


def self_duality_layers(params: DeepParams, problem: DeepProblem) -> jax.Array:
  r"""Per-layer NC3 :math:`\|C_m^\top/\|C_m\|_F - \tilde H_m/\|\tilde H_m\|_F\|_F`, ``m = 1..M``, computed from the
  matrices themselves: the partial classifier :math:`C_m = W_M\cdots W_m` against layer ``m``'s class means
  :math:`\tilde H_m = \bar H_m(I - \pi\mathbf 1^\top)` (centred, :math:`\pi = (n_k/N)_k`) when the problem has a bias
  or the CE loss (the simplex-ETF cases), :math:`\tilde H_m = \bar H_m` for bias-free MSE (the orthogonal frame).

  The same number as :func:`self_duality_from_grams` (Papyan et al. 2020's self-duality per layer), without its
  cancellation: :math:`\sqrt{2 - 2\cos}` loses every digit of a distance below :math:`\sqrt{\epsilon}` (about
  3e-4 in float32, 1.5e-8 in float64), this difference of unit-norm matrices only those below :math:`\epsilon`.
  Shape ``(M,)``."""
  Hbar = _metrics.class_means(params.H, problem.labels, problem.K)[0]
  if problem.bias or problem.loss == "ce":
    pi = jnp.asarray(problem.counts, Hbar.dtype) / problem.N
    Hbar = Hbar - (Hbar @ pi)[:, None]
  means = [Hbar]
  for W in params.Ws[:-1]:
    means.append(W @ means[-1])
  C = params.Ws[-1]
  classifiers = [C]
  for W in reversed(params.Ws[:-1]):
    C = C @ W
    classifiers.append(C)
  unit = lambda A: A / jnp.linalg.norm(A)
  return jnp.stack([jnp.linalg.norm(unit(Cm.T) - unit(Hm)) for Cm, Hm in zip(classifiers[::-1], means)])


#: Problem-specific trace metrics of a :class:`DeepProblem` (``trace_metrics=("nc1_layers", ...)``); each
#: returns an array with a layer axis. ``logit_means`` is :math:`\bar W\bar H` (``K x K``).
DEEP_METRICS = {
    "nc1_layers": nc1_layers,
    "mean_grams": mean_grams,
    "classifier_grams": classifier_grams,
    "balance_errors": balance_errors,
    "logit_means": _logit_means,
    "self_duality_layers": self_duality_layers,
}


def centred_gram(G: jax.typing.ArrayLike, pi: jax.typing.ArrayLike) -> jax.Array:
  r"""The Gram of the centred means from the uncentred Gram: with :math:`\mu_G = \bar H\pi`
  (:math:`\pi = (n_k/N)_k`), :math:`(\bar H - \mu_G\mathbf 1^\top)^\top(\bar H - \mu_G\mathbf 1^\top)
  = (I - \mathbf 1\pi^\top)G(I - \pi\mathbf 1^\top)`."""
  K = G.shape[-1]
  P = jnp.eye(K, dtype=G.dtype) - jnp.outer(pi, jnp.ones((K,), G.dtype))
  return P.T @ G @ P


def gram_error(G: jax.typing.ArrayLike, T: jax.typing.ArrayLike) -> jax.Array:
  r""":math:`\|G/\|G\|_F - T/\|T\|_F\|_F`: the NC2 distance of a Gram to a target Gram (the ETF
  :math:`I - \frac1K\mathbf 1\mathbf 1^\top`, the orthogonal frame :math:`I`, or a general orthogonal frame
  :math:`\mathrm{diag}(\cdot)`; derivations §0.2, Dang et al.'s ``compute_NC2_W``)."""
  return jnp.linalg.norm(G / jnp.linalg.norm(G) - T / jnp.linalg.norm(T))


def self_duality_from_grams(C_gram: jax.typing.ArrayLike, M_gram: jax.typing.ArrayLike,
                            cross_trace: jax.typing.ArrayLike) -> jax.Array:
  r"""NC3 :math:`\|C^\top/\|C\|_F - \bar H/\|\bar H\|_F\|_F = \sqrt{2 - 2\,\mathrm{tr}(C\bar H)/(\|C\|_F\|\bar H\|_F)}`
  (Papyan et al. 2020's self-duality, per layer: classifier :math:`C_m` against layer ``m``'s means), from
  :math:`CC^\top`, :math:`\bar H^\top\bar H` and :math:`\mathrm{tr}(C\bar H)`. Note :math:`C_m\bar H_m = \bar Z`
  for every ``m``: the Zhu et al. form :math:`\|C_m\bar H_m/\|\cdot\| - E\|` (Dang et al.'s ``NC3_ETF_WH``
  per layer) is therefore the same number at every layer."""
  c = jnp.sqrt(jnp.trace(C_gram) * jnp.trace(M_gram))
  return jnp.sqrt(jnp.maximum(2.0 - 2.0 * cross_trace / c, 0.0))


def layer_metrics(params: DeepParams, problem: DeepProblem, *, centred: bool) -> dict:
  r"""Per-layer NC2/NC3 in one dictionary (for final iterates; vmappable):

  * ``nc1``: :func:`nc1_layers` (``M+1``);
  * ``mean_grams``, ``classifier_grams``: as :func:`mean_grams` (centred with ``centred``) and
    :func:`classifier_grams`;
  * ``nc3``: :func:`self_duality_from_grams` of :math:`C_m` and layer ``m``'s (centred) means, ``m = 1..M``;
  * ``balance``: :func:`balance_errors`.
  """
  pi = jnp.asarray(problem.counts, params.H.dtype) / problem.N
  MG = mean_grams(params, problem)
  if centred:
    MG = jax.vmap(centred_gram, in_axes=(0, None))(MG, pi)
  CG = classifier_grams(params, problem)
  Zbar = _logit_means(params, problem)
  K = problem.K
  eye = jnp.eye(K, dtype=Zbar.dtype)
  P = eye - jnp.outer(pi, jnp.ones((K,), Zbar.dtype)) if centred else eye
  cross = jnp.trace(Zbar @ P)
  nc3 = jax.vmap(self_duality_from_grams, in_axes=(0, 0, None))(CG, MG[:-1], cross)
  return {"nc1": nc1_layers(params, problem), "mean_grams": MG, "classifier_grams": CG, "nc3": nc3,
          "balance": balance_errors(params, problem)}


# ----------------------------------------------------------------------------- constructions


def balanced_factorisation(Zbar: jax.typing.ArrayLike, problem: DeepProblem) -> DeepParams:
  r"""Parameters realising the class-level logits ``Zbar`` (``K x K``, column ``k`` the logits of every sample
  of class ``k``) with the smallest regulariser: NC1 (:math:`h_{k,i} = \bar h_k`) and the balanced SVD
  factorisation of :math:`Z = \bar Z\,\mathrm{blockdiag}(\mathbf 1_{n_k}^\top) = U\Sigma V^\top`,

  .. math:: H = \sqrt{\Lambda/\lambda_H}\,Q_1\Sigma^{1/(M+1)}V^\top,\quad
            W_m = \sqrt{\Lambda/\lambda_m}\,Q_{m+1}\Sigma^{1/(M+1)}Q_m^\top,\quad
            W_M = \sqrt{\Lambda/\lambda_M}\,U\Sigma^{1/(M+1)}Q_M^\top,

  :math:`\Lambda = (\lambda_H\prod_m\lambda_m)^{1/(M+1)}`, :math:`Q_m` the first ``K`` coordinate axes of
  :math:`\mathbb R^{d_m}` (needs every ``d_m >= K``). Its regulariser is
  :math:`\frac{M+1}{2}\Lambda\sum_i\sigma_i(Z)^{2/(M+1)}`, the minimum over factorisations (AM–GM on the
  singular values; derivations §11 A.1). Bias zero. Used to evaluate the candidates of ``ufm.theory``.
  """
  K, M = problem.K, problem.depth
  if min(problem.widths) < K:
    raise ValueError(f"widths = {problem.widths}: allowed: every width >= K = {K} for this construction")
  dt = problem.dtype
  lam = problem.lams().astype(dt)
  lam_H = jnp.asarray(problem.lam_H, dt)
  Lam = jnp.exp((jnp.log(lam_H) + jnp.sum(jnp.log(lam))) / (M + 1))
  # Z = Zbar E with E (K x N) the class indicator; SVD through Zbar D^{1/2} (D = diag(n_k)).
  sqrt_n = jnp.sqrt(jnp.asarray(problem.counts, dt))
  U, s, Vt = jnp.linalg.svd(jnp.asarray(Zbar, dt) * sqrt_n[None, :])
  s = jnp.where(s > K * jnp.finfo(dt).eps * s[0], s, 0.0)  # round-off singular values are exact zeros
  r = s ** (1.0 / (M + 1))
  VN = (Vt / sqrt_n[None, :])[:, problem.labels]  # K x N, orthonormal rows: V^T of Z
  eye = lambda d: jnp.eye(d, K, dtype=dt)
  H = jnp.sqrt(Lam / lam_H) * eye(problem.widths[0]) @ (r[:, None] * VN)
  Ws = []
  for m, (d_out, d_in) in enumerate(problem.shapes):
    left = U if m == M - 1 else eye(d_out)
    Ws.append(jnp.sqrt(Lam / lam[m]) * (left * r[None, :]) @ eye(d_in).T)
  return DeepParams(Ws=tuple(Ws), H=H, b=jnp.zeros((K,), dt))

