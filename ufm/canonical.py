r"""One canonical summary of neural collapse, NC1-NC5 and the bias relation, under named conventions.

:func:`summary` measures features ``H`` (``N x d``, one row per sample, the layout of :mod:`ufm.streaming` and
:func:`ufm.networks.measure`) with integer ``labels`` and, optionally, the classifier ``W`` (``K x d``), its bias
``b`` and an out-of-distribution set (for NC5), under a :class:`ufm.conventions.Conventions` (or a preset name).
It is a thin layer over sufficient statistics (:class:`Stats`: class means and counts, the within-class scatter
projected on the eigenvectors of :math:`\Sigma_B`, per-class scatter and NCC agreement), so the in-memory path
(:func:`stats`), the streaming path (:class:`ufm.streaming.Accumulator`) and the tiled path (``block``: pairwise
reductions over row blocks, memory ``O(block K)``) give the same numbers through :func:`from_stats`.

Names (values in the units of the input; every centred quantity :math:`\tilde\mu_k = \mu_k - \mu_G` with the
convention's :math:`\mu_G`):

* ``nc1`` (the convention's variant) and, whatever the convention, ``nc1_pinv``
  :math:`\mathrm{tr}(\Sigma_W\Sigma_B^\dagger)`, ``nc1_rank`` (inverse on the top ``K - 1`` eigenpairs; both divided
  by ``K`` when ``nc1_over_K``), ``nc1_ratio`` :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B`; ``cdnv`` (Galanti et
  al. 2021, arXiv 2112.15121, exponent and variance estimator from the convention);
* ``nc2``: the simplex-ETF error of the centred means (Zhu et al. 2021; rhubarbwu ``simplex_etf_error``);
  ``nc2_W`` of the classifier rows (what Zhu et al.'s code calls NC2); ``equinorm_M/W`` (CoV of the norms),
  ``equiangularity_M/W`` (std of the pairwise cosines) and ``max_angle_M/W`` (mean :math:`|\cos + 1/(K-1)|`, the
  notebook's "coherence"): Papyan et al. 2020, Figs. 2-4;
* ``kernel_{log,dist,riesz}_{mean,var}`` (:func:`ufm.kernels.kernel_stats`; the peer's "GNC2" is ``kernel_log_var``);
* ``nc3`` (the convention's variant), ``nc3_duality`` :math:`\|W^\top/\|W\|_F - \tilde M/\|\tilde M\|_F\|_F`,
  ``nc3_etf`` :math:`\|W\tilde M/\|W\tilde M\|_F - E\|_F`, ``nc3_classwise`` (mean
  :math:`\|\hat w_k - \hat\mu_k\|`), ``unc3`` (CoV of :math:`\cos(w_k, \tilde\mu_k)`), ``unc3_dot`` (the peer's
  UNC3: variance of :math:`w_k\cdot\tilde\mu_k`);
* ``nc4`` (the convention's variant), ``nc4_samples`` / ``nc4_classes`` (agreement over samples / mean of the
  per-class rates, bias per convention), ``nc4_per_class`` (a list); ``bias_relation``
  :math:`\|W\mu_G + b\|_2` (what Zhu et al. and Zhou et al. call NC4);
* ``nc5`` (:func:`ufm.kernels.nc5`) with an OOD set.

Every value is NaN when an input holds a NaN or an inf. Degenerate cases as :mod:`ufm.metrics`: without class
separation NC1 is ``inf`` (0 if nothing spreads either), decided relative to the largest centred entry.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm import conventions as _conv
from ufm import kernels, metrics, tiled

__all__ = ["SCALARS", "Stats", "between", "from_stats", "numeric", "select", "stats", "summary", "variants"]

#: The scalar names of a summary, in print order (``nc4_per_class`` is a list; ``nc5`` needs an OOD set).
SCALARS = ("nc1", "nc1_pinv", "nc1_rank", "nc1_ratio", "cdnv", "nc2", "nc2_W", "equinorm_M", "equinorm_W",
           "equiangularity_M", "equiangularity_W", "max_angle_M", "max_angle_W", "kernel_log_mean", "kernel_log_var",
           "kernel_dist_mean", "kernel_dist_var", "kernel_riesz_mean", "kernel_riesz_var", "nc3", "nc3_duality",
           "nc3_etf", "nc3_classwise", "unc3", "unc3_dot", "nc4", "nc4_samples", "nc4_classes", "bias_relation", "nc5")
_NEEDS_W = ("nc2_W", "equinorm_W", "equiangularity_W", "max_angle_W", "nc3", "nc3_duality", "nc3_etf",
            "nc3_classwise", "unc3", "unc3_dot", "nc4", "nc4_samples", "nc4_classes", "bias_relation")


class Stats(NamedTuple):
  r"""Sufficient statistics of features for :func:`from_stats`, in standardised coordinates
  :math:`h' = (h - m_0)/s` (:math:`m_0` the sample mean, :math:`s` the largest centred absolute entry):
  ``M`` class means (``K x d``), ``counts`` (``K``), ``m0`` (``d``), ``s``, ``ss`` per-class
  :math:`\sum_{y_i = k}\|h'_i - \mu'_k\|^2`, ``U`` (``d x r``) and ``lam`` (``r``) the eigenpairs of
  :math:`\Sigma_B` (:func:`between`), ``proj`` (``K x r``) per-class :math:`\sum_{y_i = k}(u_j\cdot(h'_i - \mu'_k))^2`,
  ``agree`` (``K``) per-class NCC agreement counts (zeros without a classifier)."""
  M: jax.Array
  counts: jax.Array
  m0: jax.Array
  s: jax.Array
  ss: jax.Array
  U: jax.Array
  lam: jax.Array
  proj: jax.Array
  agree: jax.Array


def numeric(conv) -> dict:
  """The choices of ``conv`` that enter the arithmetic, as numbers (traced under ``jit``: one compiled program
  serves every convention); the others select among the variants afterwards (:func:`select`)."""
  return {"gm_samples": float(conv.global_mean == "samples"), "sB_classes": float(conv.sigma_B == "classes"),
          "sW_samples": float(conv.sigma_W == "samples"), "sW_ddof": float(conv.sigma_W_ddof),
          "equinorm_ddof": float(conv.equinorm_ddof), "angle_ddof": float(conv.equiangularity_ddof),
          "cdnv_e": float(conv.cdnv_dist_exp), "cdnv_ddof": float(conv.cdnv_ddof), "nc4_bias": float(conv.nc4_bias),
          "unc3_ddof": float(conv.unc3_ddof)}


def select(out: dict, conv, K: int) -> dict:
  """``out`` with ``nc1``, ``nc1_pinv``, ``nc1_rank`` (divided by ``K`` when ``nc1_over_K``), ``nc3`` and ``nc4``
  set by ``conv`` from the variants :func:`variants` computed on ``K`` classes."""
  out = dict(out)
  over = K if conv.nc1_over_K else 1
  out["nc1_pinv"], out["nc1_rank"] = out["nc1_pinv"] / over, out["nc1_rank"] / over
  out["nc1"] = out[{"pinv": "nc1_pinv", "lstsq": "nc1_pinv", "rank": "nc1_rank", "ratio": "nc1_ratio"}[conv.nc1]]
  if "nc3_duality" in out:
    out["nc3"] = out["nc3_duality"] ** (2 if conv.nc3_squared else 1) if conv.nc3 == "duality" else out["nc3_etf"]
    rate = out["nc4_samples"] if conv.nc4_weighting == "samples" else out["nc4_classes"]
    out["nc4"] = rate if conv.nc4_report == "agreement" else 1.0 - rate
  return out


def _global_mean(M_Kxd, counts, nu):
  N = jnp.sum(counts)
  return jnp.where(nu["gm_samples"] > 0, counts @ M_Kxd / N, jnp.mean(M_Kxd, axis=0))


def _weights_B(counts, nu):
  K = counts.shape[0]
  return jnp.where(nu["sB_classes"] > 0, jnp.full((K,), 1.0 / K, counts.dtype), counts / jnp.sum(counts))


def between(M_Kxd, counts, nu):
  r"""``(g, U, lam)``: the global mean :math:`\mu_G` of the convention (sample-weighted or the mean of the class
  means), and the eigenpairs of :math:`\Sigma_B = \sum_k w_k\tilde\mu_k\tilde\mu_k^\top` from the SVD of the
  ``d x K`` matrix :math:`[\sqrt{w_k}\tilde\mu_k]` (no ``d x d`` matrix is formed)."""
  g, w = _global_mean(M_Kxd, counts, nu), _weights_B(counts, nu)
  U, sv, _ = jnp.linalg.svd(((M_Kxd - g[None, :]) * jnp.sqrt(w)[:, None]).T, full_matrices=False)
  return g, U, sv**2


def stats(H_Nxd, labels, K: int, nu, W=None, b=None) -> Stats:
  """:class:`Stats` of the whole array (every class present) under the numbers ``nu`` of :func:`numeric` (valid
  under ``jit``/``vmap``)."""
  m0 = jnp.mean(H_Nxd, axis=0)
  Hc = H_Nxd - m0[None, :]
  Hc = Hc - jnp.mean(Hc, axis=0, keepdims=True)  # two passes: a large offset costs no more digits than the input
  s = jnp.max(jnp.abs(Hc))
  Hn = Hc / jnp.where(s > 0, s, 1.0)
  counts = jax.ops.segment_sum(jnp.ones_like(labels, H_Nxd.dtype), labels, num_segments=K)
  M = jax.ops.segment_sum(Hn, labels, num_segments=K) / counts[:, None]
  _, U, lam = between(M, counts, nu)
  C = Hn - M[labels]
  ss = jax.ops.segment_sum(jnp.sum(C**2, axis=1), labels, num_segments=K)
  proj = jax.ops.segment_sum((C @ U) ** 2, labels, num_segments=K)
  if W is None:
    agree = jnp.zeros(K, H_Nxd.dtype)
  else:  # classifier logits W h + b = s W h' + (W m0 + b): the same decisions in standardised coordinates
    bias = W @ m0 + nu["nc4_bias"] * b
    scale = jnp.where(s > 0, s, 1.0)
    agree = kernels.agreements(W, bias / scale, Hn, M, labels, K)
  return Stats(M, counts, m0, s, ss, U, lam, proj, agree)


def _cosine_stats(X_Kxd, K, ddof, block):
  ddof = ddof if K > 2 else 0.0  # one pair (K = 2): the population std, as ufm.metrics.compute
  Xn = X_Kxd / jnp.linalg.norm(X_Kxd, axis=1, keepdims=True)
  tile = lambda rows: Xn[rows] @ Xn.T
  _, var = kernels.pair_mean_var(tile, K, block=block, ddof=ddof)
  max_angle, _ = kernels.pair_mean_var(lambda rows: jnp.abs(tile(rows) + 1.0 / (K - 1)), K, block=block, var=False)
  return jnp.sqrt(var), max_angle


def _etf(A_Kxd, B_Kxd, block):
  K = A_Kxd.shape[0]
  if block is not None:
    return tiled.self_duality_etf(A_Kxd, B_Kxd.T, block=block)
  G = A_Kxd @ B_Kxd.T
  E = (jnp.eye(K, dtype=G.dtype) - 1.0 / K) / jnp.sqrt(K - 1.0)
  return jnp.linalg.norm(G / jnp.linalg.norm(G) - E)


def _var(x, ddof):
  return jnp.sum((x - jnp.mean(x)) ** 2) / (x.shape[0] - ddof)


def _cov(x, ddof):
  return jnp.sqrt(_var(x, ddof)) / jnp.mean(x)


def from_stats(st: Stats, conv, W=None, b=None, mu_ood=None, *, block=None) -> dict:
  """The summary (module docstring) from :class:`Stats` under the :class:`ufm.conventions.Conventions` ``conv``
  (pure: valid under ``jit`` and ``vmap``)."""
  return select(_variants(st, numeric(conv), W, b, mu_ood, block=block), conv, st.M.shape[0])


def variants(st: Stats, nu, W=None, b=None, mu_ood=None, *, block=None) -> dict:
  """Every variant of the summary under the numbers ``nu`` (:func:`numeric`); :func:`select` finishes it."""
  M, counts, s = st.M, st.counts, st.s
  K, d = M.shape
  N = jnp.sum(counts)
  dtype = M.dtype
  g = _global_mean(M, counts, nu)
  Mc = M - g[None, :]
  wB, dd = _weights_B(counts, nu), nu["sW_ddof"]
  wW = jnp.where(nu["sW_samples"] > 0, jnp.full((K,), 1.0, dtype) / (N - dd * K), 1.0 / (K * (counts - dd)))
  floor = 8.0 * jnp.sqrt(N) * jnp.finfo(dtype).eps  # ufm.metrics.rounding_floor, with N traced
  separated = jnp.max(jnp.linalg.norm(Mc, axis=1)) > floor
  spread = jnp.sqrt(jnp.max(st.ss / counts)) > floor
  degenerate = lambda v: jnp.where(separated, v, jnp.where(spread, jnp.inf, 0.0))
  lam, proj_w = st.lam, wW @ st.proj  # u_j^T Sigma_W u_j
  keep = lam > max(d, K) * jnp.finfo(dtype).eps * jnp.max(lam)
  terms = jnp.where(keep, proj_w / jnp.where(keep, lam, 1.0), 0.0)
  out = {"nc1_pinv": degenerate(jnp.sum(terms)),
         "nc1_rank": degenerate(jnp.sum(jnp.where(jnp.arange(lam.shape[0]) < K - 1, terms, 0.0))),
         "nc1_ratio": degenerate(jnp.sum(wW * st.ss) / jnp.where(separated, jnp.sum(wB * jnp.sum(Mc**2, 1)), 1.0))}
  var_K = st.ss / (counts - nu["cdnv_ddof"])
  sq = jnp.sum(Mc**2, axis=1)

  def cdnv_tile(rows):
    dist2 = jnp.maximum(sq[rows][:, None] + sq[None, :] - 2 * Mc[rows] @ Mc.T, 0.0)
    return metrics.cdnv_pairs(var_K[rows][:, None], var_K[None, :], dist2, nu["cdnv_e"], floor)

  cdnv = kernels.pair_mean_var(cdnv_tile, K, block=block, var=False)[0]
  out["cdnv"] = jnp.where(s > 0, cdnv * jnp.where(s > 0, s, 1.0) ** (2.0 - 2.0 * nu["cdnv_e"]), cdnv)
  out["nc2"] = _etf(Mc, Mc, block)
  out["equinorm_M"] = _cov(jnp.linalg.norm(Mc, axis=1), nu["equinorm_ddof"])
  out["equiangularity_M"], out["max_angle_M"] = _cosine_stats(Mc, K, nu["angle_ddof"], block)
  for kern in kernels.KERNELS:
    out[f"kernel_{kern}_mean"], out[f"kernel_{kern}_var"] = kernels.kernel_stats(Mc.T, kern, block=block)
  if W is not None:
    b = jnp.zeros(K, dtype) if b is None else b
    out["nc2_W"] = _etf(W, W, block)
    out["equinorm_W"] = _cov(jnp.linalg.norm(W, axis=1), nu["equinorm_ddof"])
    out["equiangularity_W"], out["max_angle_W"] = _cosine_stats(W, K, nu["angle_ddof"], block)
    out["nc3_duality"] = metrics.self_duality(W, Mc.T)
    out["nc3_etf"] = _etf(W, Mc, block)
    out["nc3_classwise"] = metrics.self_duality_classwise(W, Mc.T)
    cos = jnp.sum(W * Mc, axis=1) / (jnp.linalg.norm(W, axis=1) * jnp.linalg.norm(Mc, axis=1))
    out["unc3"] = _cov(cos, nu["unc3_ddof"])
    out["unc3_dot"] = _var(jnp.sum(W * Mc, axis=1), nu["unc3_ddof"]) * s**2
    per_class = st.agree / counts
    out["nc4_samples"], out["nc4_classes"] = jnp.sum(st.agree) / N, jnp.mean(per_class)
    out["nc4_per_class"] = per_class
    out["bias_relation"] = jnp.linalg.norm(W @ (st.m0 + s * g) + b)
  if mu_ood is not None:
    out["nc5"] = kernels.nc5((st.m0[None, :] + s * M).T, mu_ood)
  return out


_variants = jax.jit(variants, static_argnames=("block",))


@functools.partial(jax.jit, static_argnames=("K", "block"))
def _dense(H, labels, W, b, H_ood, labels_ood, nu, *, K, block):
  st = stats(H, labels, K, nu, W, b)
  mu_ood = None
  if H_ood is not None:
    mu_ood = jnp.mean(H_ood, axis=0)
    if labels_ood is not None:  # under class_means: the mean of the OOD class means
      n = jax.ops.segment_sum(jnp.ones_like(labels_ood, H_ood.dtype), labels_ood, num_segments=H_ood.shape[0])
      sums = jax.ops.segment_sum(H_ood, labels_ood, num_segments=H_ood.shape[0])
      present = n > 0
      class_mean = jnp.sum(jnp.where(present[:, None], sums / jnp.where(present, n, 1.0)[:, None], 0.0), 0)
      mu_ood = jnp.where(nu["gm_samples"] > 0, mu_ood, class_mean / jnp.sum(present))
  out = variants(st, nu, W, b, mu_ood, block=block)
  finite = metrics.all_finite([x for x in (H, W, b, H_ood) if x is not None])
  return jax.tree.map(lambda v: jnp.where(finite, v, jnp.nan), out)


def _rows(name, X, d=None):
  X = jnp.asarray(X)
  if X.ndim != 2 or (d is not None and X.shape[1] != d):
    hint = " (transposed? one row per sample)" if X.ndim == 2 and d is not None and X.shape[0] == d else ""
    raise ValueError(f"{name} has shape {tuple(X.shape)}; allowed: (N, d){'' if d is None else f' = (N, {d})'}{hint}")
  return X


def summary(H, labels, K=None, *, W=None, b=None, conventions="ufm", H_ood=None, labels_ood=None,
            block=None) -> dict:
  r"""The canonical NC summary (module docstring) of features ``H`` (``N x d`` rows) with integer ``labels``
  (``N``) in memory, under ``conventions`` (a :class:`ufm.conventions.Conventions` or a preset name). ``W``
  (``K x d``) and ``b`` (``K``) add the classifier metrics; ``H_ood`` (rows, optional ``labels_ood``) adds NC5, with
  the OOD global mean by the convention (the mean of the OOD class means under ``class_means`` when labelled).
  ``block``: pairwise reductions over row blocks of ``block`` classes (the tiled path, memory ``O(block K)``).
  Every class in ``0..K-1`` must be present (:class:`ufm.streaming.Accumulator` measures over the present ones).
  Returns floats (and the list ``nc4_per_class``) plus ``conventions`` (the preset's name). Float64 input is
  measured in float64 whether or not ``jax_enable_x64`` is set."""
  conv = _conv.get(conventions)
  if getattr(H, "dtype", None) == np.float64 or (not hasattr(H, "dtype") and np.asarray(H).dtype == np.float64):
    with jax.enable_x64(True):
      return _summary(H, labels, K, W, b, conv, H_ood, labels_ood, block)
  return _summary(H, labels, K, W, b, conv, H_ood, labels_ood, block)


def _summary(H, labels, K, W, b, conv, H_ood, labels_ood, block):
  H = _rows("H", H)
  y = np.asarray(labels)
  if y.ndim != 1 or y.shape[0] != H.shape[0] or y.dtype.kind not in "iu":
    hint = " (transposed? one row per sample)" if H.shape[1] == y.shape[0] and y.ndim == 1 else ""
    raise ValueError(f"labels has shape {y.shape} and dtype {y.dtype}; allowed: ({H.shape[0]},) integers{hint}")
  if K is None:  # W's rows, unless W looks transposed (then its shape check below says so)
    K = int(W.shape[0]) if W is not None and np.ndim(W) == 2 and np.shape(W)[1] == H.shape[1] else int(y.max()) + 1
  if isinstance(K, bool) or not isinstance(K, int) or K < 2:
    raise ValueError(f"K = {K!r}; allowed: an integer >= 2")
  if y.min() < 0 or y.max() >= K:
    raise ValueError(f"labels hold {int(y.min())}..{int(y.max())}; allowed: integers in [0, K) = [0, {K})")
  absent = np.flatnonzero(np.bincount(y, minlength=K) == 0)
  if absent.size:
    raise ValueError(f"labels: class(es) {absent.tolist()} absent; allowed: every class of 0..K-1 present "
                     "(ufm.streaming.Accumulator measures over the present classes)")
  d = H.shape[1]
  if W is not None:
    W = jnp.asarray(W, H.dtype)
    if W.shape != (K, d):
      hint = " (transposed? W is K x d)" if W.shape == (d, K) else ""
      raise ValueError(f"W has shape {tuple(W.shape)}; allowed: (K, d) = ({K}, {d}){hint}")
    b = jnp.zeros(K, H.dtype) if b is None else jnp.asarray(b, H.dtype)
    if b.shape != (K,):
      raise ValueError(f"b has shape {tuple(b.shape)}; allowed: (K,) = ({K},)")
  elif b is not None:
    raise ValueError("b: given without W; allowed: b with W, or neither")
  if H_ood is not None:
    H_ood = _rows("H_ood", jnp.asarray(H_ood, H.dtype), d)
    if labels_ood is not None:
      labels_ood = np.asarray(labels_ood)
      if labels_ood.shape != (H_ood.shape[0],) or labels_ood.dtype.kind not in "iu" or labels_ood.min() < 0:
        raise ValueError(f"labels_ood has shape {labels_ood.shape}; allowed: ({H_ood.shape[0]},) integers >= 0")
      labels_ood = jnp.asarray(labels_ood)
  if block is not None:
    block = int(block) if not isinstance(block, bool) and isinstance(block, (int, np.integer)) and block >= 1 else -1
    if block < 1:
      raise ValueError("block: allowed: None or an integer >= 1")
  with jax.default_matmul_precision("highest"):
    out = _dense(H, jnp.asarray(y), W, b, H_ood, labels_ood, numeric(conv), K=K, block=block)
  out = select({k: np.asarray(v) for k, v in out.items()}, conv, K)
  res = {k: float(v) for k, v in out.items() if k != "nc4_per_class"}
  if "nc4_per_class" in out:
    res["nc4_per_class"] = [float(v) for v in np.asarray(out["nc4_per_class"])]
  res["conventions"] = conv.name
  return res
