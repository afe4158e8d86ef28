r"""Pairwise kernel statistics, NC5, the dot-product UNC3 and per-class NCC agreement.

These are the metrics the peer library ``rhubarbwu/neural-collapse`` (Wu & Papyan 2024, "Linguistic Collapse", arXiv
2405.17767) has and :mod:`ufm.metrics` lacked. Pure functions of arrays, valid under ``jit`` and ``vmap``, NaN when
an input holds a NaN or an inf (:func:`ufm.metrics.metric_guard`). Class means are ``d x K`` columns, as in
:mod:`ufm.metrics`.

Pairwise reductions (:func:`pair_mean_var`) run over the ``K(K-1)/2`` pairs ``i < j`` either on the dense ``K x K``
grid (``block=None``) or over row blocks of ``block`` classes with ``lax.map`` (memory ``O(block K)``, for ``K`` in
the tens of thousands); the variance is a second pass around the mean (no cancellation).
"""

import jax
import jax.numpy as jnp
import jax.typing
from jaxtyping import Array, Float, Int

from ufm.metrics import metric_guard
from ufm.validate import check_int

__all__ = ["KERNELS", "kernel_stats", "nc5", "ncc_agreement", "pair_mean_var", "unc3_dot"]

#: The kernels of :func:`kernel_stats` (Liu et al. 2023, arXiv 2303.06484; rhubarbwu ``kernels.py``).
KERNELS = ("log", "dist", "riesz")


def pair_mean_var(tile_fn, K: int, *, block=None, ddof=0, var: bool = True):
  r"""``(mean, var)`` of :math:`t_{ij}` over the pairs :math:`i < j` of ``K`` classes, where ``tile_fn(rows)``
  returns the rows ``rows`` of the ``K x K`` grid :math:`t` (``len(rows) x K``). ``var`` with ``ddof`` (the
  divisor is :math:`P - \mathrm{ddof}`, :math:`P = K(K-1)/2`), computed around the mean in a second pass;
  ``var=False`` skips it (``var`` is then ``None``). ``block=None``: one dense ``K x K`` tile."""
  P = K * (K - 1) // 2
  cols = jnp.arange(K)
  if block is None:
    rows_all = jnp.arange(K)
    grid = tile_fn(rows_all)
    mask = rows_all[:, None] < cols[None, :]
    mean = jnp.sum(jnp.where(mask, grid, 0.0)) / P
    if not var:
      return mean, None
    return mean, jnp.sum(jnp.where(mask, (grid - mean) ** 2, 0.0)) / (P - ddof)
  block = check_int("block", block, lo=1)
  nb, offs = -(-K // block), jnp.arange(block)

  def reduce(fn):
    def body(r):
      rows = r * block + offs
      tile = tile_fn(jnp.minimum(rows, K - 1))
      mask = (rows[:, None] < K) & (rows[:, None] < cols[None, :])
      return jnp.sum(jnp.where(mask, fn(tile), 0.0))
    return jnp.sum(jax.lax.map(body, jnp.arange(nb)))

  mean = reduce(lambda t: t) / P
  if not var:
    return mean, None
  return mean, reduce(lambda t: (t - mean) ** 2) / (P - ddof)


def _unit_columns(X_dxK):
  return X_dxK / jnp.linalg.norm(X_dxK, axis=0, keepdims=True)


def kernel_tile(Mn_dxK, kernel: str):
  r"""``tile_fn`` for :func:`pair_mean_var`: the kernel of the pairwise distances :math:`\delta_{ij}` of the
  (already normalised) columns: ``"dist"`` :math:`\delta`, ``"log"`` :math:`\log(1/\delta)`, ``"riesz"``
  :math:`\mathrm{sign}(S)\,\delta^{-S}` with :math:`S = d - 2`."""
  d = Mn_dxK.shape[0]
  sq = jnp.sum(Mn_dxK**2, axis=0)
  S = d - 2

  def tile(rows):
    dist2 = jnp.maximum(sq[rows][:, None] + sq[None, :] - 2 * Mn_dxK[:, rows].T @ Mn_dxK, 0.0)
    if kernel == "dist":
      return jnp.sqrt(dist2)
    if kernel == "log":
      return -0.5 * jnp.log(dist2)
    return (1.0 if S >= 0 else -1.0) * dist2 ** (-S / 2)
  return tile


@metric_guard
def kernel_stats(M_dxK: Float[Array, "d K"], kernel: str = "log", *, block=None):
  r"""``(mean, var)`` over the pairs ``i < j`` of a kernel of the distances between the normalised columns
  :math:`\hat\mu_k = \tilde\mu_k/\|\tilde\mu_k\|` (pass centred class means), population variance (ddof 0):

  * ``"log"``: :math:`\log\|\hat\mu_i - \hat\mu_j\|^{-1}`, the hyperspherical-uniformity kernel of GNC2 (Liu et al.
    2023, arXiv 2303.06484; ufm's ``gnc2`` is the mean and ``gnc2_var`` the variance; the peer library's "GNC2" is
    the variance);
  * ``"dist"``: :math:`\|\hat\mu_i - \hat\mu_j\|` (rhubarbwu ``dist_kernel``);
  * ``"riesz"``: :math:`\mathrm{sign}(S)\|\hat\mu_i - \hat\mu_j\|^{-S}`, :math:`S = d - 2` (rhubarbwu ``riesz_kernel``).

  Matches rhubarbwu ``kernel_stats`` (which adds machine epsilon to the norms: a relative difference of about
  1e-16). A simplex ETF has variance 0 for every kernel.
  """
  if kernel not in KERNELS:
    raise ValueError(f"kernel = {kernel!r}; allowed: {', '.join(map(repr, KERNELS))}")
  K = M_dxK.shape[1]
  mean, var = pair_mean_var(kernel_tile(_unit_columns(M_dxK), kernel), K, block=block)
  return mean, var


@metric_guard
def nc5(M_dxK: Float[Array, "d K"], mu_ood: Float[Array, "d"]) -> jax.typing.ArrayLike:
  r"""NC5, ID/OOD orthogonality (Ammar et al. 2024, arXiv 2310.06823):
  :math:`\frac1K\sum_k|\cos(\mu_k, \mu_G^{\rm ood})|`, the class means ``M_dxK`` of the training (in-distribution)
  features against the global mean of out-of-distribution features. Uncentred means, as rhubarbwu
  ``orthogonality_deviation(means, mG_ood)``; 0 when every class mean is orthogonal to the OOD mean."""
  cos = (M_dxK.T @ mu_ood) / (jnp.linalg.norm(M_dxK, axis=0) * jnp.linalg.norm(mu_ood))
  return jnp.mean(jnp.abs(cos))


@metric_guard
def unc3_dot(W: Float[Array, "K d"], M_dxK: Float[Array, "d K"], *, ddof: int = 1) -> jax.typing.ArrayLike:
  r"""The peer library's UNC3 ("uniform duality"): the variance over classes (``ddof`` 1, as ``torch.var``) of the
  products :math:`w_k\cdot\tilde\mu_k` (rhubarbwu ``similarities(W, means, mG).var()``; Wu & Papyan 2024). Not
  ufm's :func:`ufm.metrics.unc3`, which is the CoV of the cosines :math:`\cos(w_k, \tilde\mu_k)`. Scales as
  :math:`\|W\|^2\|\tilde M\|^2`."""
  return jnp.var(jnp.sum(W * M_dxK.T, axis=1), ddof=ddof)


def agreements(W, b, H_Nxd, M_Kxd, labels, K: int, *, block: int = 4096):
  r"""Per-class counts of samples whose classifier decision :math:`\arg\max_k (Wh + b)_k` equals the
  nearest-class-centre decision :math:`\arg\min_k\|h - \mu_k\|` (``K``; the classes are the rows of ``M_Kxd``),
  over blocks of ``block`` samples (memory ``O(K block)``). Labels outside ``[0, K)`` are not counted."""
  N = H_Nxd.shape[0]
  sq = jnp.sum(M_Kxd**2, axis=1)

  def count(Hb, yb):
    clf = jnp.argmax(Hb @ W.T + b[None, :], axis=1)
    ncc = jnp.argmin(sq[None, :] - 2 * Hb @ M_Kxd.T, axis=1)
    return jax.ops.segment_sum((clf == ncc).astype(H_Nxd.dtype), yb, num_segments=K)

  if N <= block:
    return count(H_Nxd, labels)
  nb = -(-N // block)
  pad = nb * block - N
  Hp = jnp.concatenate([H_Nxd, jnp.zeros((pad, H_Nxd.shape[1]), H_Nxd.dtype)])
  yp = jnp.concatenate([labels, jnp.full((pad,), K, labels.dtype)])  # out of range: dropped
  return jnp.sum(jax.lax.map(lambda i: count(jax.lax.dynamic_slice_in_dim(Hp, i * block, block),
                                             jax.lax.dynamic_slice_in_dim(yp, i * block, block)),
                             jnp.arange(nb)), axis=0)


@metric_guard
def ncc_agreement(W: Float[Array, "K d"], H: Float[Array, "d N"], b: Float[Array, "K"], labels: Int[Array, "N"],
                  K: int, *, weighted: bool = True) -> jax.typing.ArrayLike:
  r"""NC4 as an agreement rate between the classifier :math:`\arg\max_k (Wh_i + b)_k` and the nearest class centre
  :math:`\arg\min_k\|h_i - \mu_k\|` (Papyan et al. 2020, Fig. 7): over samples (``weighted``, the fraction of
  agreeing samples, :func:`ufm.metrics.nc4`) or the unweighted mean over classes of the per-class rates
  (rhubarbwu ``clf_ncc_agreement(weighted=False)``). Pass ``b = 0`` for rhubarbwu's bias-free decisions."""
  K = check_int("K", K, lo=2)
  Hr = H.T
  counts = jax.ops.segment_sum(jnp.ones_like(labels, H.dtype), labels, num_segments=K)
  M = jax.ops.segment_sum(Hr, labels, num_segments=K) / counts[:, None]
  mu = jnp.mean(Hr, axis=0)
  # centred: no cancellation at large offsets
  a = agreements(W, b + W @ mu, Hr - mu[None, :], M - mu[None, :], labels, K)
  return jnp.sum(a) / jnp.sum(counts) if weighted else jnp.mean(a / counts)
