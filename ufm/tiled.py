r"""The NC metric set of :mod:`ufm.metrics` for many classes (``K`` up to 50 000), in memory linear in ``K``.

The metrics of :mod:`ufm.metrics` build ``K x K`` matrices (pairwise distances, cosines, Gram matrices)
and ``K x N`` logits; at the vocabulary sizes of language models (Wu & Papyan 2024, "Linguistic
Collapse", arXiv 2405.17767: ``K`` ~ 50 000 classes, ``K >> d``, Zipf-distributed counts) those do not
fit. Here every pairwise reduction runs over **row blocks** of ``block`` classes with ``lax.map``:
each step forms a ``block x K`` tile, reduces it to a scalar, and drops it, so the peak temporary
memory is :math:`O(\text{block}\cdot K + dK + dN)` instead of :math:`O(K^2)`; the decisions of
:func:`nc4` run over blocks of samples (:math:`O(K\cdot\text{block})`). Metrics that are already
linear (NC1 through the ``d x K`` SVD, NC1 ratio, equinorm, NC3, UNC3, the norms) call
:mod:`ufm.metrics` directly.

Every function returns the value of its namesake in :mod:`ufm.metrics` (same normalisation, same
``ddof``; tested to the rounding of a different summation order). Spreads over pairs are computed in
two passes (the mean in closed form or by a first tiled pass, then the sum of squared deviations), and
normalised Gram errors as :math:`\sum_{ij}(G_{ij}/\|G\|_F - E_{ij})^2` with :math:`\|G\|_F` from a
``d x d`` product, so that nothing is lost to cancellation at a collapse (where the values are ~1e-16).

:func:`compute` mirrors :func:`ufm.metrics.compute` (the names of :data:`ufm.metrics.METRICS`);
:func:`zipf_counts` builds Zipf-like class counts.
"""

import functools
import math

import jax
import numpy as np
from flax import struct
import jax.numpy as jnp
import jax.typing
from jaxtyping import Array, Float, Int

from ufm import metrics as _m
from ufm.problem import ClassStructure, Params, ProblemLike
from ufm.validate import check_counts, check_int, check_real

__all__ = ["ClassLabels", "DEFAULT_BLOCK", "TILED", "cdnv", "compute", "equiangularity", "etf_error", "gnc2",
           "gnc2_var", "max_angle", "nc4", "of_error", "self_duality_etf", "zipf_counts"]

#: Default tile height (classes per row block, or samples per block for NC4).
DEFAULT_BLOCK = 128

#: The names of :data:`ufm.metrics.METRICS` computed here in tiles; the others call :mod:`ufm.metrics` directly.
TILED = ("cdnv", "equiangularity_W", "equiangularity_M", "max_angle_W", "max_angle_M", "etf_error_W", "etf_error_M",
         "of_error_W", "of_error_M", "self_duality_etf", "gnc2", "gnc2_var", "nc4")


def zipf_counts(K, *, n_max, a=1.0) -> tuple[int, ...]:
  r"""Zipf-like class counts :math:`n_k = \max(1, \lfloor n_{\max}\,(k+1)^{-a}\rfloor)`, ``k = 0..K-1``
  (Zipf's law for word frequencies, exponent ``a`` ~ 1; the class imbalance of next-token prediction in
  Wu & Papyan 2024, arXiv 2405.17767)."""
  K = check_int("K", K, lo=2)
  n_max = check_int("n_max", n_max, lo=1)
  a = float(check_real("a", a, lo=0.0))
  return tuple(max(1, math.floor(n_max * (k + 1) ** (-a) + 1e-9)) for k in range(K))


@struct.dataclass
class ClassLabels(ClassStructure):
  """What the metrics need of a problem (``K``, ``N``, ``labels``, ``bias``), without the dense ``K x N`` one-hot
  ``Y`` that :class:`ufm.problem.Problem` stores (at ``K = 50 000`` and ``N = 64 000`` that alone is 26 GB).
  Pass it to :func:`compute` in place of a problem to measure given ``W``, ``H`` (e.g. features of a real model)."""
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  bias: bool = struct.field(pytree_node=False, default=False)

  @staticmethod
  def make(counts, *, bias: bool = False) -> "ClassLabels":
    """Validated :class:`ClassLabels` for per-class counts (``K >= 2``, each ``>= 1``)."""
    return ClassLabels(counts=check_counts(counts), bias=bool(bias))

  @property
  def labels(self) -> jax.Array:
    """Integer labels ``(N,)``, class-major."""
    return jnp.asarray(np.repeat(np.arange(self.K), self.counts))


def _row_blocks(K: int, block: int):
  nb = -(-K // block)
  return nb, jnp.arange(block)


def _pair_sum(tile_fn, K: int, block: int, *, upper: bool = True) -> jax.Array:
  r""":math:`\sum_{i<j} t_{ij}` (``upper``) or :math:`\sum_{i,j} t_{ij}` over ``K`` classes, where ``tile_fn(rows)``
  returns the ``block x K`` tile :math:`t_{\text{rows},:}` for row indices ``rows`` (clipped to ``K - 1``;
  padded rows are masked out). ``lax.map`` over the row blocks: one tile alive at a time."""
  nb, offs = _row_blocks(K, block)
  cols = jnp.arange(K)

  def body(r):
    rows = r * block + offs
    tile = tile_fn(jnp.minimum(rows, K - 1))
    valid = rows[:, None] < K
    if upper:
      valid = valid & (rows[:, None] < cols[None, :])
    return jnp.sum(jnp.where(valid, tile, 0.0))

  return jnp.sum(jax.lax.map(body, jnp.arange(nb)))


def _num_pairs(K: int) -> int:
  return K * (K - 1) // 2


def _check_block(block) -> int:
  return check_int("block", block, lo=1)


@_m.metric_guard
def cdnv(H: Float[Array, "d N"], labels: Int[Array, "N"], K: int, *, dist_exp: float = 1.0,
         block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.cdnv`: :math:`\frac{2}{K(K-1)}\sum_{c<c'}\frac{\sigma_c^2 + \sigma_{c'}^2}
  {2\|\mu_c - \mu_{c'}\|^{2e}}` (Galanti et al. 2021, arXiv 2112.15121), on standardised features with the
  same decisions and rescaling (:func:`ufm.metrics.standardise`, :func:`ufm.metrics.cdnv_pairs`)."""
  Hn, s = _m.standardise(H)
  M_dxK, mu_G, n_K = _m.class_means(Hn, labels, K)
  var_K = _m.class_variances(Hn - M_dxK[:, labels], labels, n_K, K)
  Mc = M_dxK - mu_G[:, None]
  sq = jnp.sum(Mc**2, axis=0)
  floor = _m.rounding_floor(H.shape[1], H.dtype)

  def tile(rows):
    dist2 = jnp.maximum(sq[rows][:, None] + sq[None, :] - 2 * Mc[:, rows].T @ Mc, 0.0)
    return _m.cdnv_pairs(var_K[rows][:, None], var_K[None, :], dist2, dist_exp, floor)

  return _m.rescale_cdnv(_pair_sum(tile, K, block) / _num_pairs(K), s, dist_exp)


def _unit(X):
  return X / jnp.linalg.norm(X, axis=0, keepdims=True)


def _cos_mean(Xn, K):
  """Mean pairwise cosine of unit columns in closed form: (||sum_k x_k||^2 - sum_k ||x_k||^2) / (K(K-1))."""
  s = jnp.sum(Xn, axis=1)
  return (jnp.sum(s**2) - jnp.sum(Xn**2)) / (K * (K - 1))


@_m.metric_guard
def equiangularity(X_dxK: Float[Array, "d K"], *, ddof: int = 1, block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.equiangularity`: :math:`\mathrm{std}_{c<c'}\cos(x_c, x_{c'})` with ``ddof``
  (two passes: the mean in closed form, then the tiled sum of squared deviations)."""
  K = X_dxK.shape[1]
  Xn = _unit(X_dxK)
  mean = _cos_mean(Xn, K)
  ss = _pair_sum(lambda rows: (Xn[:, rows].T @ Xn - mean) ** 2, K, block)
  return jnp.sqrt(ss / (_num_pairs(K) - ddof))


@_m.metric_guard
def max_angle(X_dxK: Float[Array, "d K"], *, block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.max_angle`: :math:`\mathrm{avg}_{c<c'}|\cos(x_c, x_{c'}) + \frac1{K-1}|`."""
  K = X_dxK.shape[1]
  Xn = _unit(X_dxK)
  return _pair_sum(lambda rows: jnp.abs(Xn[:, rows].T @ Xn + 1.0 / (K - 1)), K, block) / _num_pairs(K)


def _gram_target_error(A_dxK, B_dxK, target, block):
  r""":math:`\|A^\top B/\|A^\top B\|_F - T\|_F` over tiles; the normalisation
  :math:`\|A^\top B\|_F^2 = \mathrm{tr}(AA^\top\,BB^\top)` from ``d x d`` products. ``target(rows)`` gives the
  ``block x K`` tile of ``T``."""
  K = A_dxK.shape[1]
  norm = jnp.sqrt(jnp.sum((A_dxK @ A_dxK.T) * (B_dxK @ B_dxK.T)))
  ss = _pair_sum(lambda rows: (A_dxK[:, rows].T @ B_dxK / norm - target(rows)) ** 2, K, block, upper=False)
  return jnp.sqrt(ss)


def _etf_tile(K, dtype):
  cols = jnp.arange(K)
  return lambda rows: ((rows[:, None] == cols[None, :]).astype(dtype) - 1.0 / K) / jnp.sqrt(K - 1.0)


@_m.metric_guard
def etf_error(X_dxK: Float[Array, "d K"], *, block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.etf_error`:
  :math:`\|X^\top X/\|X^\top X\|_F - (I - \frac1K\mathbf 1\mathbf 1^\top)/\sqrt{K-1}\|_F`."""
  K = X_dxK.shape[1]
  return _gram_target_error(X_dxK, X_dxK, _etf_tile(K, X_dxK.dtype), block)


@_m.metric_guard
def of_error(X_dxK: Float[Array, "d K"], *, block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.of_error`: :math:`\|X^\top X/\|X^\top X\|_F - I_K/\sqrt K\|_F`."""
  K = X_dxK.shape[1]
  cols = jnp.arange(K)
  eye = lambda rows: (rows[:, None] == cols[None, :]).astype(X_dxK.dtype) / jnp.sqrt(1.0 * K)
  return _gram_target_error(X_dxK, X_dxK, eye, block)


@_m.metric_guard
def self_duality_etf(W: Float[Array, "K d"], M_dxK: Float[Array, "d K"], *,
                     block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.self_duality_etf`:
  :math:`\|W\tilde M/\|W\tilde M\|_F - (I - \frac1K\mathbf 1\mathbf 1^\top)/\sqrt{K-1}\|_F`."""
  K = W.shape[0]
  return _gram_target_error(W.T, M_dxK, _etf_tile(K, W.dtype), block)


def _log_inverse_tile(Mn, sq):
  def tile(rows):
    dist2 = jnp.maximum(sq[rows][:, None] + sq[None, :] - 2 * Mn[:, rows].T @ Mn, 0.0)
    return -0.5 * jnp.log(dist2)
  return tile


@_m.metric_guard
def gnc2(M_dxK: Float[Array, "d K"], *, block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.gnc2`: :math:`\mathrm{avg}_{c<c'}\log(1/\|\hat\mu_c - \hat\mu_{c'}\|)` (GNC2; Liu et al.
  2023, arXiv 2303.06484; Wu & Papyan 2024)."""
  K = M_dxK.shape[1]
  Mn = _unit(M_dxK)
  return _pair_sum(_log_inverse_tile(Mn, jnp.sum(Mn**2, axis=0)), K, block) / _num_pairs(K)


@_m.metric_guard
def gnc2_var(M_dxK: Float[Array, "d K"], *, block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  """Tiled :func:`ufm.metrics.gnc2_var`: the population variance over pairs of the GNC2 log kernel (two passes)."""
  K = M_dxK.shape[1]
  Mn = _unit(M_dxK)
  tile = _log_inverse_tile(Mn, jnp.sum(Mn**2, axis=0))
  mean = _pair_sum(tile, K, block) / _num_pairs(K)
  return _pair_sum(lambda rows: (tile(rows) - mean) ** 2, K, block) / _num_pairs(K)


@_m.metric_guard
def nc4(W: Float[Array, "K d"], H: Float[Array, "d N"], b: Float[Array, "K"], labels: Int[Array, "N"], K: int, *,
        block: int = DEFAULT_BLOCK) -> jax.typing.ArrayLike:
  r"""Tiled :func:`ufm.metrics.nc4`: the fraction of samples where :math:`\arg\max_k(Wh_i + b)_k` equals the
  nearest-centre decision, over blocks of ``block`` samples (memory :math:`O(K\cdot\text{block})`)."""
  d, N = H.shape
  M_dxK, mu_G, _ = _m.class_means(H, labels, K)
  Mc = M_dxK - mu_G[:, None]
  sqM = jnp.sum(Mc**2, axis=0)
  nb, offs = _row_blocks(N, block)

  def body(r):
    idx = r * block + offs
    Hb = H[:, jnp.minimum(idx, N - 1)]
    clf = jnp.argmax(W @ Hb + b[:, None], axis=0)
    ncc = jnp.argmin(sqM[:, None] - 2 * Mc.T @ (Hb - mu_G[:, None]), axis=0)
    return jnp.sum(jnp.where(idx < N, (clf == ncc).astype(H.dtype), 0.0))

  return jnp.sum(jax.lax.map(body, jnp.arange(nb))) / N


# Metric name -> how it is computed here: ("linear", fn of (params, problem)) calls ufm.metrics; the others are tiled.
def _tiled_metric(name: str, params: Params, problem: ProblemLike, block: int):
  W, H, K, y = params.W, params.H, problem.K, problem.labels
  b = params.b if problem.bias else jnp.zeros_like(params.b)
  ddof = 1 if K > 2 else 0
  centred = lambda: _m.class_means(H, y, K)[0] - jnp.mean(H, axis=1)[:, None]
  if name == "cdnv":
    return cdnv(H, y, K, block=block)
  if name in ("equiangularity_W", "equiangularity_M"):
    return equiangularity(W.T if name.endswith("W") else centred(), ddof=ddof, block=block)
  if name in ("max_angle_W", "max_angle_M"):
    return max_angle(W.T if name.endswith("W") else centred(), block=block)
  if name in ("etf_error_W", "etf_error_M"):
    return etf_error(W.T if name.endswith("W") else centred(), block=block)
  if name == "of_error_W":
    return of_error(W.T, block=block)
  if name == "of_error_M":
    return of_error(_m.class_means(H, y, K)[0], block=block)
  if name == "self_duality_etf":
    return self_duality_etf(W, centred(), block=block)
  if name == "gnc2":
    return gnc2(centred(), block=block)
  if name == "gnc2_var":
    return gnc2_var(centred(), block=block)
  if name == "nc4":
    return nc4(W, H, b, y, K, block=block)
  return _m.METRICS[name](params, problem)  # linear in K already (NC1 via the d x K SVD, norms, NC3, UNC3, ...)


def compute(params: Params, problem: ProblemLike, names=None, *, block: int = DEFAULT_BLOCK) -> dict[str, jax.Array]:
  """The metrics ``names`` (default: all of :data:`ufm.metrics.METRICS`) in memory linear in ``K``; the same
  values as :func:`ufm.metrics.compute`. Jit it with ``block`` static (``jax.jit(compute, static_argnames=...)``)
  or call it inside a jitted function.

  Raises ``ValueError`` listing the valid names for an unknown one, or for ``block < 1``.
  """
  names = tuple(_m.METRICS) if names is None else tuple(names)
  unknown = [n for n in names if n not in _m.METRICS]
  if unknown:
    raise ValueError(f"unknown metric(s) {unknown}; valid names: {', '.join(_m.METRICS)}")
  block = _check_block(block)
  return _compute(params, problem, names=names, block=block)


@functools.partial(jax.jit, static_argnames=("names", "block"))
def _compute(params, problem, *, names, block):
  finite = _m.all_finite(params)
  # as ufm.metrics.compute: every metric NaN when any parameter is not finite (not only those that read it)
  return {n: jnp.where(finite, _tiled_metric(n, params, problem, block), jnp.nan) for n in names}
