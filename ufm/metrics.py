r"""Neural-collapse metrics: pure functions of arrays, valid under ``jit`` and ``vmap``.

Conventions (``ufm/theory/derivations.md`` §0, §8). ``H`` is ``d x N``, ``labels`` is ``(N,)`` integers in
``[0, K)``, ``W`` is ``K x d``, ``b`` is ``(K,)``; ``K`` is a static Python int. With
:math:`\mu_k` the class means, :math:`\mu_G = \frac1N\sum_i h_i` the (sample-weighted)
global mean and :math:`\tilde M = [\mu_k - \mu_G]_k` (``d x K``):

.. math::
   \Sigma_W = \frac1N\sum_i (h_i - \mu_{y_i})(h_i - \mu_{y_i})^\top,\qquad
   \Sigma_B = \frac1K\sum_k (\mu_k - \mu_G)(\mu_k - \mu_G)^\top,

the unweighted :math:`\Sigma_B` of Papyan et al. (2020) used by every peer codebase
(Zhu, Zhou, Dang, ``rhubarbwu/neural-collapse``). Metrics marked *undefined* return NaN
exactly when the geometry they measure is undefined (for example the angles of zero
vectors); NC1 is never NaN for finite input.

**Input that cannot be measured reads as NaN, never as collapse.** Every metric returns NaN when any of
its floating-point inputs holds a NaN or an infinity (:func:`metric_guard`); a network whose features
diverged scores NaN, not ``nc1 = 0``.

**Scale and offset.** The feature metrics (:func:`nc1`, :func:`nc1_ratio`, :func:`cdnv`) are computed on
:func:`standardise`\ d features: centred at the global mean (two passes) and divided by their largest
absolute entry ``s``. NC1 and the NC1 ratio are invariant to the scale of ``H`` over the whole float range
(no underflow at 1e-160, no overflow at 1e200 in float64) and to a common offset up to the rounding of
the input itself; :func:`cdnv` is rescaled by :math:`s^{2-2e}` afterwards. Decisions of the form "is
this zero?" are relative to the data: on standardised features, a class-mean spread or a within-class
spread below :func:`rounding_floor` (:math:`8\sqrt N\,\mathrm{eps}`) is rounding, i.e. zero. The
degenerate cases have documented values, the same eagerly and under ``jit``:

* every feature equal (``H = c 1 1^T``): NC1 = NC1 ratio = CDNV = 0 (everything has collapsed to one point);
* class means equal but features spread (no separation): NC1 = NC1 ratio = ``inf``, CDNV ``inf``;
* separated means, no within-class spread: 0.

Names follow ``rhubarbwu/neural-collapse`` (the library of Wu & Papyan 2024,
"Linguistic Collapse", arXiv 2405.17767) where it has them; ``tests/test_metrics.py``
pins the values computed by that library on the same arrays (see its docstring).
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.typing
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ufm.problem import Params, ParamsLike, Problem, ProblemLike

__all__ = [
    "FEATURE_METRICS",
    "METRICS",
    "all_finite",
    "bias_relation",
    "check_shapes",
    "metric_guard",
    "rounding_floor",
    "safe_div",
    "standardise",
    "cdnv",
    "class_means",
    "compute",
    "cosines",
    "equiangularity",
    "equinorm",
    "etf_error",
    "gnc2",
    "gnc2_var",
    "max_angle",
    "nc1",
    "nc1_ratio",
    "nc4",
    "of_error",
    "self_duality",
    "self_duality_classwise",
    "self_duality_etf",
    "unc3",
]


def safe_div(num, den):
  """``num / den`` with ``0/0 -> 0`` and ``x/0 -> inf`` for ``x > 0`` (never NaN for finite input)."""
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), jnp.where(num > 0, jnp.inf, 0.0))


def all_finite(*trees) -> jax.Array:
  """True when every floating-point leaf of ``trees`` is finite (a traced boolean, valid under ``jit`` and
  ``vmap``); integer leaves (labels) are not inspected."""
  leaves = [x for x in jax.tree.leaves(trees) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.asarray(True)


def metric_guard(fn: Callable) -> Callable:
  """``fn`` as a metric: every output NaN when any floating-point array argument holds a NaN or an inf, and its
  matrix products at full precision.

  Works under ``jit`` and ``vmap`` (a ``jnp.where`` on the result, no Python branch); integer arguments
  (labels) and Python scalars are not inspected. Products run under ``jax.default_matmul_precision("highest")``:
  on GPUs JAX's default rounds float32 products to TF32 (10-bit mantissa), which puts a fixed simplex-ETF
  classifier's Gram 4e-3 from its closed form; metrics are compared with closed forms, so they never use it.
  """
  @functools.wraps(fn)
  def guarded(*args, **kwargs):
    with jax.default_matmul_precision("highest"):
      out = fn(*args, **kwargs)
    arrays = [a for a in (*args, *kwargs.values()) if hasattr(a, "dtype")]  # arrays only: never a problem's leaves
    finite = all_finite(arrays)
    return jax.tree.map(lambda v: jnp.where(finite, v, jnp.nan), out)
  return guarded


def rounding_floor(N: int, dtype) -> float:
  r""":math:`8\sqrt N\,\mathrm{eps}`: on :func:`standardise`\ d features (largest entry 1) a mean or spread
  below it is the rounding of a sum of ``N`` terms, not a measurement, and counts as zero."""
  return 8.0 * math.sqrt(N) * float(jnp.finfo(dtype).eps)


def standardise(H: Float[Array, "d N"]) -> tuple[jax.Array, jax.Array]:
  r"""``(Hn, s)``: :math:`H_n = (H - \mu_G\mathbf 1^\top)/s` with :math:`\mu_G` the mean column (two passes, so
  a large common offset costs no more digits than the input already lost) and ``s`` the largest absolute entry
  of the centred features (``Hn = 0`` and ``s = 0`` when every column is equal). Every scale-invariant feature
  metric is a function of ``Hn`` alone."""
  Hc = H - jnp.mean(H, axis=1, keepdims=True)
  Hc = Hc - jnp.mean(Hc, axis=1, keepdims=True)
  s = jnp.max(jnp.abs(Hc))
  return Hc / jnp.where(s > 0, s, 1.0), s


def _degenerate(value, separated, spread):
  """``value`` where the class means are separated; else ``inf`` with within-class spread, 0 without."""
  return jnp.where(separated, value, jnp.where(spread, jnp.inf, 0.0))


def _feature_parts(H, labels, K):
  """Standardised features, their class means, within-class residuals and the two "is it zero?" decisions."""
  Hn, s = standardise(H)
  M_dxK, mu_G, n_K = class_means(Hn, labels, K)
  Mc_dxK = M_dxK - mu_G[:, None]
  C_dxN = Hn - M_dxK[:, labels]
  floor = rounding_floor(H.shape[1], H.dtype)
  separated = jnp.max(jnp.linalg.norm(Mc_dxK, axis=0)) > floor
  spread = jnp.max(jnp.abs(C_dxN)) > floor
  return Hn, s, Mc_dxK, C_dxN, n_K, separated, spread


def class_means(H: Float[Array, "d N"], labels: Int[Array, "N"], K: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Class means :math:`\bar H` (``d x K``), global mean :math:`\mu_G` (``d``) and class counts (``K``)."""
  sums_Kxd = jax.ops.segment_sum(H.T, labels, num_segments=K)
  counts_K = jax.ops.segment_sum(jnp.ones_like(labels, H.dtype), labels, num_segments=K)
  return (sums_Kxd / counts_K[:, None]).T, jnp.mean(H, axis=1), counts_K


def _centred_means(H, labels, K):
  M_dxK, mu_G, _ = class_means(H, labels, K)
  return M_dxK - mu_G[:, None]


def _normalise_columns(X):
  return X / jnp.linalg.norm(X, axis=0, keepdims=True)


def _pairs(K: int):
  return jnp.triu_indices(K, k=1)


@metric_guard
def nc1(H: Float[Array, "d N"], labels: Int[Array, "N"], K: int) -> jax.typing.ArrayLike:
  r"""NC1 = :math:`\frac1K \mathrm{tr}(\Sigma_W \Sigma_B^+)` (Papyan et al. 2020, arXiv 2008.08186, Fig. 6).

  Computed on :func:`standardise`\ d features, in the eigenbasis of :math:`\Sigma_B`: with
  :math:`\tilde M = U S V^\top`,
  :math:`\mathrm{tr}(\Sigma_W\Sigma_B^+) = \sum_{j:\,\lambda_j > \epsilon} u_j^\top\Sigma_W u_j/\lambda_j`,
  :math:`\lambda_j = s_j^2/K`, keeping :math:`\lambda_j > \max(d, K)\,\mathrm{eps}\,\lambda_{\max}`
  (the relative cutoff ``jnp.linalg.pinv`` applies to the ``d x K`` matrix :math:`\tilde M`).
  Every term is :math:`\ge 0`, so NC1 is never negative; NaN exactly when the input is not finite.
  Without class separation (centred means below :func:`rounding_floor`) it is ``inf`` if the features
  spread within classes and 0 if everything has collapsed to one point, consistent with :func:`nc1_ratio`
  and :func:`cdnv`. Invariant to the scale of ``H`` and to a common offset (see the module docstring).
  Cost :math:`O(dK^2 + dKN)`; no ``d x d`` inverse.
  """
  d, N = H.shape
  _, _, Mc_dxK, C_dxN, _, separated, spread = _feature_parts(H, labels, K)
  U, s, _ = jnp.linalg.svd(Mc_dxK, full_matrices=False)
  lam_B = s**2 / K
  keep = lam_B > max(d, K) * jnp.finfo(H.dtype).eps * jnp.max(lam_B)
  w = jnp.sum((U.T @ C_dxN) ** 2, axis=1) / N
  value = jnp.sum(jnp.where(keep, w / jnp.where(keep, lam_B, 1.0), 0.0)) / K
  return _degenerate(value, separated, spread)


@metric_guard
def nc1_ratio(H: Float[Array, "d N"], labels: Int[Array, "N"], K: int) -> jax.typing.ArrayLike:
  r""":math:`\mathrm{tr}\,\Sigma_W / \mathrm{tr}\,\Sigma_B` (Tirer, Huang, Niles-Weed 2023, arXiv 2210.16658;
  rhubarbwu ``covariance_ratio``), on :func:`standardise`\ d features; degenerate cases as :func:`nc1`."""
  _, _, Mc_dxK, C_dxN, _, separated, spread = _feature_parts(H, labels, K)
  tr_W = jnp.sum(C_dxN**2) / H.shape[1]
  tr_B = jnp.sum(Mc_dxK**2) / K
  return _degenerate(tr_W / jnp.where(separated, tr_B, 1.0), separated, spread)


def class_variances(C_dxN: jax.Array, labels: jax.Array, n_K: jax.Array, K: int) -> jax.Array:
  r"""Per-class variances :math:`\sigma_c^2 = \frac1{n_c}\sum_{i: y_i = c}\|c_i\|^2` of residuals ``C``
  (features minus their class mean)."""
  return jax.ops.segment_sum(jnp.sum(C_dxN**2, axis=0), labels, num_segments=K) / n_K


def cdnv_pairs(var_i, var_j, dist2_ij, dist_exp, floor):
  r"""Per-pair CDNV terms :math:`(\sigma_i^2 + \sigma_j^2)/(2 d_{ij}^{2e})` on standardised features: a pair
  whose squared distance is below ``floor**2`` has coincident means (``inf``, or 0 when both variances are
  below ``floor**2`` too)."""
  apart = dist2_ij > floor**2
  var = (var_i + var_j) / 2
  return jnp.where(apart, var / jnp.where(apart, dist2_ij, 1.0) ** dist_exp,
                   jnp.where(var > floor**2, jnp.inf, 0.0))


def rescale_cdnv(value, s, dist_exp):
  r"""The CDNV of the original features from that of the standardised ones: :math:`s^{2-2e}` times it."""
  if dist_exp == 1:
    return value
  return jnp.where(s > 0, value * s ** (2.0 - 2.0 * dist_exp), value)


@metric_guard
def cdnv(H: Float[Array, "d N"], labels: Int[Array, "N"], K: int, *, dist_exp: float = 1.0) -> jax.typing.ArrayLike:
  r"""Class-distance normalised variance (Galanti et al. 2021, arXiv 2112.15121), averaged over pairs.

  .. math:: \frac{2}{K(K-1)}\sum_{c<c'} \frac{\sigma_c^2 + \sigma_{c'}^2}{2\|\mu_c - \mu_{c'}\|^{2e}},
     \qquad \sigma_c^2 = \frac{1}{n_c}\sum_{i: y_i = c}\|h_i - \mu_c\|^2,

  ``e = dist_exp``: 1 is Galanti et al.'s CDNV and rhubarbwu's default; Wu & Papyan (2024)
  report ``e = 2``. A pair with coincident means contributes ``inf`` (``0`` if both
  variances are 0), decided on standardised features (:func:`cdnv_pairs`). Matches rhubarbwu
  ``class_dist_norm_vars`` averaged by ``symm_reduce``.
  """
  _, s, Mc_dxK, C_dxN, n_K, _, _ = _feature_parts(H, labels, K)
  var_K = class_variances(C_dxN, labels, n_K, K)
  sq = jnp.sum(Mc_dxK**2, axis=0)
  dist2_KxK = jnp.maximum(sq[:, None] + sq[None, :] - 2 * Mc_dxK.T @ Mc_dxK, 0.0)
  i, j = _pairs(K)
  floor = rounding_floor(H.shape[1], H.dtype)
  return rescale_cdnv(jnp.mean(cdnv_pairs(var_K[i], var_K[j], dist2_KxK[i, j], dist_exp, floor)), s, dist_exp)


@metric_guard
def equinorm(X_dxK: Float[Array, "d K"], *, ddof: int = 1) -> jax.typing.ArrayLike:
  r"""Coefficient of variation of the column norms, :math:`\mathrm{std}_k\|x_k\| / \mathrm{mean}_k\|x_k\|`
  (Papyan et al. 2020, Fig. 2), with the sample std (``ddof = 1``) of their code's ``torch.std``.
  Use ``W.T`` for classifiers and centred means for features."""
  norms = jnp.linalg.norm(X_dxK, axis=0)
  return jnp.std(norms, ddof=ddof) / jnp.mean(norms)


@metric_guard
def cosines(X_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  """Cosines of the ``K(K-1)/2`` column pairs ``c < c'`` (rhubarbwu ``interference``). Undefined for zero columns."""
  Xn = _normalise_columns(X_dxK)
  i, j = _pairs(X_dxK.shape[1])
  return (Xn.T @ Xn)[i, j]


@metric_guard
def equiangularity(X_dxK: Float[Array, "d K"], *, ddof: int = 1) -> jax.typing.ArrayLike:
  r""":math:`\mathrm{std}_{c<c'}\cos(x_c, x_{c'})` over the ``K(K-1)/2`` pairs (Papyan et al. 2020, Fig. 3,
  ``ddof = 1`` as their ``torch.std``; ``ddof = 0`` is the population std that Wu & Papyan take of
  rhubarbwu's interference grid on normalised means). With ``K = 2`` (one pair) use ``ddof = 0``."""
  return jnp.std(cosines(X_dxK), ddof=ddof)


@metric_guard
def max_angle(X_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r""":math:`\mathrm{avg}_{c<c'}|\cos(x_c, x_{c'}) + \frac{1}{K-1}|` (Papyan et al. 2020, Fig. 4)."""
  K = X_dxK.shape[1]
  return jnp.mean(jnp.abs(cosines(X_dxK) + 1.0 / (K - 1)))


def _gram_error(G, T_unit):
  return jnp.linalg.norm(G / jnp.linalg.norm(G) - T_unit)


@metric_guard
def etf_error(X_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r""":math:`\|X^\top X/\|X^\top X\|_F - (I - \frac1K\mathbf 1\mathbf 1^\top)/\sqrt{K-1}\|_F`
  (Zhu et al. 2021, NC2; rhubarbwu ``simplex_etf_error``). Scale invariant."""
  K = X_dxK.shape[1]
  E = (jnp.eye(K, dtype=X_dxK.dtype) - 1.0 / K) / jnp.sqrt(K - 1.0)
  return _gram_error(X_dxK.T @ X_dxK, E)


@metric_guard
def of_error(X_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r""":math:`\|X^\top X/\|X^\top X\|_F - I_K/\sqrt K\|_F`, the orthogonal-frame error (Dang et al. 2023,
  ``compute_NC2_Identity_W``; Tirer & Bruna 2022). Use *uncentred* means for the bias-free MSE-UFM."""
  K = X_dxK.shape[1]
  return _gram_error(X_dxK.T @ X_dxK, jnp.eye(K, dtype=X_dxK.dtype) / jnp.sqrt(1.0 * K))


@metric_guard
def self_duality(W: Float[Array, "K d"], M_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r"""NC3, :math:`\|W^\top/\|W\|_F - \tilde M/\|\tilde M\|_F\|_F` (Papyan et al. 2020, Fig. 5)."""
  return jnp.linalg.norm(W.T / jnp.linalg.norm(W) - M_dxK / jnp.linalg.norm(M_dxK))


@metric_guard
def self_duality_etf(W: Float[Array, "K d"], M_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r"""NC3 in Zhu et al.'s form,
  :math:`\|W\tilde M/\|W\tilde M\|_F - (I - \frac1K\mathbf 1\mathbf 1^\top)/\sqrt{K-1}\|_F`
  (Zhu et al. 2021, arXiv 2105.02375, Sec. 4; rhubarbwu ``self_duality_error``)."""
  K = W.shape[0]
  E = (jnp.eye(K, dtype=W.dtype) - 1.0 / K) / jnp.sqrt(K - 1.0)
  return _gram_error(W @ M_dxK, E)


@metric_guard
def self_duality_classwise(W: Float[Array, "K d"], M_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r""":math:`\mathrm{avg}_k \|w_k/\|w_k\| - \tilde\mu_k/\|\tilde\mu_k\|\|` (rhubarbwu ``distance_norms``)."""
  return jnp.mean(jnp.linalg.norm(_normalise_columns(W.T) - _normalise_columns(M_dxK), axis=0))


@metric_guard
def unc3(W: Float[Array, "K d"], M_dxK: Float[Array, "d K"], *, ddof: int = 1) -> jax.typing.ArrayLike:
  r"""Uniform duality (Wu & Papyan 2024, UNC3): CoV over classes of :math:`\cos(w_k, \tilde\mu_k)`
  std (``ddof = 1``, as the paper's ``.var()``) over mean, of rhubarbwu ``similarities(cos=True)``."""
  cos = jnp.sum(_normalise_columns(W.T) * _normalise_columns(M_dxK), axis=0)
  return jnp.std(cos, ddof=ddof) / jnp.mean(cos)


def _log_inverse_distances(M_dxK):
  Mn = _normalise_columns(M_dxK)
  sq = jnp.sum(Mn**2, axis=0)
  dist2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * Mn.T @ Mn, 0.0)
  i, j = _pairs(M_dxK.shape[1])
  return -0.5 * jnp.log(dist2[i, j])


@metric_guard
def gnc2(M_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  r"""Hyperspherical uniformity (GNC2; Liu et al. 2023, arXiv 2303.06484; Wu & Papyan 2024):
  :math:`\mathrm{avg}_{c<c'}\log(1/\|\hat\mu_c - \hat\mu_{c'}\|)` on normalised centred means.
  A simplex ETF gives :math:`-\frac12\log\frac{2K}{K-1}` (the minimum over configurations)."""
  return jnp.mean(_log_inverse_distances(M_dxK))


@metric_guard
def gnc2_var(M_dxK: Float[Array, "d K"]) -> jax.typing.ArrayLike:
  """Population variance over pairs of the GNC2 log kernel (rhubarbwu ``kernel_stats``; 0 for a simplex ETF)."""
  return jnp.var(_log_inverse_distances(M_dxK))


#: Columns per block in :func:`nc4` (its memory is O(K x block), not O(K x N)).
_NC4_BLOCK = 4096


@metric_guard
def nc4(W: Float[Array, "K d"], H: Float[Array, "d N"], b: Float[Array, "K"], labels: Int[Array, "N"],
        K: int) -> jax.typing.ArrayLike:
  r"""NC4: fraction of samples whose classifier decision :math:`\arg\max_k (Wh_i + b)_k` equals the
  nearest-class-centre decision :math:`\arg\min_k\|h_i - \mu_k\|` (Papyan et al. 2020, Fig. 7).
  Evaluated in blocks of columns, so memory is O(dN + K x block), never K x N."""
  M_dxK, mu_G, _ = class_means(H, labels, K)
  Mc_dxK = M_dxK - mu_G[:, None]  # centred: no cancellation at large offsets
  sq_K = jnp.sum(Mc_dxK**2, axis=0)

  def agreements(H_dxB):  # a block of columns: the K x B logits and distances never exceed K x _NC4_BLOCK
    clf = jnp.argmax(W @ H_dxB + b[:, None], axis=0)
    dist2_KxB = sq_K[:, None] - 2 * Mc_dxK.T @ (H_dxB - mu_G[:, None])
    return jnp.sum((clf == jnp.argmin(dist2_KxB, axis=0)).astype(H.dtype))

  d, N = H.shape
  full = N // _NC4_BLOCK
  count = jnp.zeros((), H.dtype)
  if full:
    count = jax.lax.fori_loop(0, full, lambda i, c: c + agreements(
        jax.lax.dynamic_slice(H, (0, i * _NC4_BLOCK), (d, _NC4_BLOCK))), count)
  if N % _NC4_BLOCK:
    count = count + agreements(H[:, full * _NC4_BLOCK:])
  return count / N  # counts are integers: exact, as the mean of the 0/1 agreements


@metric_guard
def bias_relation(W: Float[Array, "K d"], H: Float[Array, "d N"], b: Float[Array, "K"]) -> jax.typing.ArrayLike:
  r""":math:`\|W\mu_G + b\|_2`, the bias relation that Zhu et al. (2021) and Zhou et al. (2022) call NC4
  (not to be confused with :func:`nc4`). At the CE optimum with :math:`\lambda_b > 0` it is 0."""
  return jnp.linalg.norm(W @ jnp.mean(H, axis=1) + b)


def _norm_W_sq(params: ParamsLike, problem: ProblemLike) -> jax.Array:
  r""":math:`\|W\|_F^2` (Zhu et al. 2021, Thm. 3.1 fixes it at the minimiser; see :func:`ufm.theory.predict`)."""
  return jnp.sum(params.W**2)


def _norm_H_sq(params: ParamsLike, problem: ProblemLike) -> jax.Array:
  r""":math:`\|H\|_F^2` (fixed at the minimiser; see :func:`ufm.theory.predict`)."""
  return jnp.sum(params.H**2)


def _norm_b(params: ParamsLike, problem: ProblemLike) -> jax.Array:
  r""":math:`\|b\|_2` (0 for a problem without a bias)."""
  return jnp.linalg.norm(params.b) if problem.bias else jnp.zeros((), params.b.dtype)


def _on_problem(fn_kind: str, fn: Callable, pairwise_std: bool = False) -> Callable[[Params, Problem], jax.Array]:
  def metric(params: ParamsLike, problem: ProblemLike) -> jax.typing.ArrayLike:
    W, H, K = params.W, params.H, problem.K
    # The labels are a constant of the program; without the barrier XLA constant-folds every class count
    # (a scatter over N) at compile time, seconds per metric at N = 1e5. Same numbers, computed at run time.
    y = jax.lax.optimization_barrier(problem.labels)
    b = params.b if problem.bias else jnp.zeros_like(params.b)  # the objective ignores b without a bias
    kw = {"ddof": 1 if K > 2 else 0} if pairwise_std else {}  # one pair when K = 2
    if fn_kind == "features":
      return fn(H, y, K)
    if fn_kind == "W":
      return fn(W.T, **kw)
    if fn_kind == "M":
      return fn(_centred_means(H, y, K), **kw)
    if fn_kind == "M_uncentred":
      return fn(class_means(H, y, K)[0])
    if fn_kind == "WM":
      return fn(W, _centred_means(H, y, K))
    if fn_kind == "nc4":
      return fn(W, H, b, y, K)
    return fn(W, H, b)
  metric.__name__ = fn.__name__
  metric.__doc__ = fn.__doc__
  return _params_guard(metric)


def _params_guard(metric: Callable) -> Callable:
  """``metric(params, problem)``, NaN when any leaf of ``params`` is not finite (the problem's own leaves, such as
  an infinite vicinity radius, are not inspected)."""
  @functools.wraps(metric)
  def guarded(params, problem):
    return jnp.where(all_finite(params), metric(params, problem), jnp.nan)
  return guarded


#: Metric name -> ``(params, problem) -> scalar``. ``_W`` acts on the rows of ``W``, ``_M`` on the
#: centred class means (``of_error_M`` on the uncentred ones).
METRICS: dict[str, Callable[[Params, Problem], jax.Array]] = {
    "nc1": _on_problem("features", nc1),
    "nc1_ratio": _on_problem("features", nc1_ratio),
    "cdnv": _on_problem("features", cdnv),
    "equinorm_W": _on_problem("W", equinorm),
    "equinorm_M": _on_problem("M", equinorm),
    "equiangularity_W": _on_problem("W", equiangularity, pairwise_std=True),
    "equiangularity_M": _on_problem("M", equiangularity, pairwise_std=True),
    "max_angle_W": _on_problem("W", max_angle),
    "max_angle_M": _on_problem("M", max_angle),
    "etf_error_W": _on_problem("W", etf_error),
    "etf_error_M": _on_problem("M", etf_error),
    "of_error_W": _on_problem("W", of_error),
    "of_error_M": _on_problem("M_uncentred", of_error),
    "self_duality": _on_problem("WM", self_duality),
    "self_duality_etf": _on_problem("WM", self_duality_etf),
    "self_duality_classwise": _on_problem("WM", self_duality_classwise),
    "unc3": _on_problem("WM", unc3),
    "gnc2": _on_problem("M", gnc2),
    "gnc2_var": _on_problem("M", gnc2_var),
    "nc4": _on_problem("nc4", nc4),
    "bias_relation": _on_problem("bias", bias_relation),
    "norm_W_sq": _params_guard(_norm_W_sq),
    "norm_H_sq": _params_guard(_norm_H_sq),
    "norm_b": _params_guard(_norm_b),
}


def check_shapes(params: ParamsLike, problem: ProblemLike) -> None:
  """``ValueError`` naming the array whose shape does not fit ``problem``: ``W`` ``(K, d)``, ``H`` ``(d, N)``, ``b``
  ``(K,)`` (a transposed ``H`` is named as such). Deep and other families with their own parameters pass."""
  if not all(hasattr(params, a) for a in ("W", "H", "b")) or not hasattr(problem, "d"):
    return
  W, H, b = (getattr(params, a) for a in ("W", "H", "b"))
  if getattr(W, "ndim", 2) != 2 or getattr(H, "ndim", 2) != 2 or not all(hasattr(x, "shape") for x in (W, H, b)):
    return  # a batched (vmapped) or deep parameter set: its family checks it
  K, N, d = problem.K, problem.N, problem.d
  if H.shape != (d, N):
    hint = " (transposed? H is d x N)" if H.shape == (N, d) else ""
    raise ValueError(f"H has shape {tuple(H.shape)}; allowed: (d, N) = ({d}, {N}) for this problem{hint}")
  if W.shape != (K, d):
    hint = " (transposed? W is K x d)" if W.shape == (d, K) else ""
    raise ValueError(f"W has shape {tuple(W.shape)}; allowed: (K, d) = ({K}, {d}) for this problem{hint}")
  if b.shape != (K,):
    raise ValueError(f"b has shape {tuple(b.shape)}; allowed: (K,) = ({K},) for this problem")


#: The metrics of :data:`METRICS` that depend on the features only (no classifier): a hidden layer's, or features
#: measured without their classifier.
FEATURE_METRICS = ("nc1", "nc1_ratio", "cdnv", "equinorm_M", "equiangularity_M", "max_angle_M", "etf_error_M",
                   "of_error_M", "gnc2", "gnc2_var", "norm_H_sq")


def compute(params: ParamsLike, problem: ProblemLike, names=None) -> dict[str, jax.Array]:
  """Evaluates the metrics ``names`` (default: all of :data:`METRICS`) on ``params``.

  A problem class may add metrics of its own as a ``METRICS`` attribute (name -> ``(params, problem) ->
  array``), e.g. the per-layer metrics of :class:`ufm.deep.DeepProblem`; they are valid names for that
  problem only (the default stays :data:`METRICS`). Raises ``ValueError`` listing the valid names for an
  unknown one.
  """
  table = {**METRICS, **getattr(problem, "METRICS", {})}
  names = tuple(METRICS) if names is None else tuple(names)
  unknown = [n for n in names if n not in table]
  if unknown:
    raise ValueError(f"unknown metric(s) {unknown}; valid names: {', '.join(table)}")
  check_shapes(params, problem)
  return {n: table[n](params, problem) for n in names}
