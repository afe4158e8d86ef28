r"""NC metrics of features that arrive in batches: two passes, float64 accumulation, memory independent of ``N``.

Features of real models do not fit in memory at once (``N`` in the millions, ``d`` in the thousands). The
:class:`Accumulator` reads them twice, in batches of rows (``B x d``, any order, any batch size):

1. **Means** (:meth:`Accumulator.add_means`): per-class sums and counts and the global sum, in float64; a class
   absent from one batch is simply not updated.
2. **Spread** (:meth:`Accumulator.add_spread`): with the class means of pass 1 fixed, the within-class residuals
   :math:`c_i = h_i - \mu_{y_i}` projected on the left singular vectors :math:`U` of the centred means (what NC1
   needs, see :func:`ufm.metrics.nc1`), their squared norm per class (``tr Sigma_W``, the CDNV variances), the
   largest absolute centred entry (the scale of :func:`ufm.metrics.standardise`) and, given a classifier, the
   classifier / nearest-class-centre agreement (NC4).

:meth:`Accumulator.result` then returns the same numbers as :func:`ufm.metrics.compute` on the whole array (to the
rounding of a different summation order; tested): ``nc1``, ``nc1_ratio``, ``cdnv``, ``nc4`` and ``bias_relation``
from the passes, and every metric of the class means and the classifier (``etf_error_M``, ``equinorm_W``,
``self_duality``, ``gnc2``, ...) from :func:`ufm.metrics.compute`'s own functions on ``M`` and ``W``. Classes
absent from the whole data set are left out: the metrics are over the present classes, and the result says
which (``present``, ``absent``). Memory: :math:`O(Kd + d^2)` besides one batch.

:meth:`Accumulator.summary` returns instead the canonical summary of :mod:`ufm.canonical` under the accumulator's
:class:`ufm.conventions.Conventions` (NC1-NC5 and their variants, over the present classes).

The zero decisions follow :mod:`ufm.metrics`: a spread or a mean below :func:`ufm.metrics.rounding_floor` times the
largest centred entry is rounding. Every metric is NaN when a batch holds a NaN or an inf.
"""

import math
from typing import Any

import numpy as np

__all__ = ["Accumulator", "STREAMED", "measure_batches"]

#: Metrics the two passes compute themselves (the rest come from the means and the classifier).
STREAMED = ("nc1", "nc1_ratio", "cdnv", "nc4", "bias_relation", "norm_H_sq")


def _segment_add(target, index, values) -> None:
  """``target[index[i]] += values[i]`` for every row ``i`` (as ``np.add.at``, which is ~50x slower): the rows sorted by
  index and summed per run with ``np.add.reduceat``."""
  if index.size == 0:
    return
  order = np.argsort(index, kind="stable")
  idx = index[order]
  starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
  target[idx[starts]] += np.add.reduceat(values[order], starts, axis=0)


class Accumulator:
  """Two-pass accumulator of NC statistics (module docstring). Feed every batch to :meth:`add_means`, then every
  batch again to :meth:`add_spread`, then call :meth:`result`.

  Args:
    K: the number of classes (labels in ``0..K-1``; classes may be absent).
    d: the feature dimension.
    W, b: the classifier (``K x d``) and its bias (``K``), optional: with ``W``, NC4 and the classifier metrics.
    conventions: a :class:`ufm.conventions.Conventions` or a preset name, for :meth:`summary` (the canonical
      summary of :mod:`ufm.canonical`); :meth:`result` keeps :mod:`ufm.metrics`' own conventions.
  """

  def __init__(self, K: int, d: int, W=None, b=None, conventions="ufm"):
    from ufm import conventions as conv_mod
    from ufm.validate import check_int
    self.K, self.d = check_int("K", K, lo=2), check_int("d", d, lo=1)
    self.conventions = conv_mod.get(conventions)
    self.W = None if W is None else np.asarray(W, np.float64)
    self.b = None if b is None else np.asarray(b, np.float64)
    if self.W is not None and self.W.shape != (self.K, self.d):
      raise ValueError(f"W has shape {self.W.shape}; allowed: (K, d) = ({self.K}, {self.d})")
    if self.b is not None and (self.W is None or self.b.shape != (self.K,)):
      raise ValueError(f"b has shape {self.b.shape}; allowed: (K,) = ({self.K},), with W")
    self.sums = np.zeros((self.K, self.d))
    self.counts = np.zeros(self.K, np.int64)
    self.finite = True
    self._pass2: dict[str, Any] | None = None

  # ------------------------------------------------------------------ inputs

  def _batch(self, features, labels) -> tuple[np.ndarray, np.ndarray]:
    H = np.asarray(features, np.float64)
    y = np.asarray(labels)
    if H.ndim != 2 or H.shape[1] != self.d:
      hint = " (transposed? one row per sample)" if H.ndim == 2 and H.shape[0] == self.d else ""
      raise ValueError(f"features has shape {H.shape}; allowed: (B, d) = (B, {self.d}){hint}")
    if y.ndim != 1 or y.shape[0] != H.shape[0] or y.dtype.kind not in "iu":
      raise ValueError(f"labels has shape {y.shape} and dtype {y.dtype}; allowed: ({H.shape[0]},) integers")
    if y.size and (y.min() < 0 or y.max() >= self.K):
      raise ValueError(f"labels hold {int(y.min())}..{int(y.max())}; allowed: integers in [0, K) = [0, {self.K})")
    if not np.all(np.isfinite(H)):
      self.finite = False
    return H, y

  def add_means(self, features, labels) -> None:
    """Pass 1: one batch of rows ``features`` (``B x d``) with integer ``labels`` (``B``)."""
    if self._pass2 is not None:
      raise ValueError("add_means after add_spread: the means are fixed once the second pass has begun")
    H, y = self._batch(features, labels)
    _segment_add(self.sums, y, H)
    self.counts += np.bincount(y, minlength=self.K)

  def _freeze(self) -> dict:
    present = np.flatnonzero(self.counts > 0)
    if present.size < 2:
      raise ValueError(f"{present.size} class(es) present after the first pass; allowed: at least 2 (add_means "
                       "every batch first)")
    M = self.sums[present] / self.counts[present, None]  # K' x d
    N = int(self.counts.sum())
    mu = self.sums.sum(0) / N
    Mc = M - mu
    if np.all(np.isfinite(Mc)):
      U, s, _ = np.linalg.svd(Mc.T, full_matrices=False)  # d x K'
    else:  # a non-finite batch: every metric will be NaN; keep the shapes
      U, s = np.zeros((self.d, min(self.d, present.size))), np.zeros(min(self.d, present.size))
    Uc, lamc = self._convention_basis(M, self.counts[present], mu)
    return dict(present=present, M=M, mu=mu, Mc=Mc, U=U, s=s, N=N, index=np.full(self.K, -1),
                proj=np.zeros(U.shape[1]), var=np.zeros(present.size), max_abs=0.0, agree=0.0, norm_H_sq=0.0,
                Uc=Uc, lamc=lamc, projc=np.zeros((present.size, Uc.shape[1])),
                agree_K=np.zeros(present.size))

  def _convention_basis(self, M, counts, mu):
    """Eigenpairs of the convention's Sigma_B (ufm.canonical.between) on the means centred at the sample mean."""
    import jax
    import jax.numpy as jnp

    from ufm import canonical
    Mr = M - mu
    if not np.all(np.isfinite(Mr)):
      r = min(self.d, M.shape[0])
      return np.zeros((self.d, r)), np.zeros(r)
    with jax.enable_x64(True):
      _, U, lam = canonical.between(jnp.asarray(Mr), jnp.asarray(counts, jnp.float64),
                                    canonical.numeric(self.conventions))
      return np.asarray(U), np.asarray(lam)

  def add_spread(self, features, labels) -> None:
    """Pass 2: the same batches again (any order, any batching)."""
    if self._pass2 is None:
      self._pass2 = self._freeze()
      self._pass2["index"][self._pass2["present"]] = np.arange(self._pass2["present"].size)
    st = self._pass2
    H, y = self._batch(features, labels)
    if np.any(self.counts[y] == 0):
      raise ValueError("add_spread met a class that add_means never saw; feed the same batches to both passes")
    j = st["index"][y]
    C = H - st["M"][j]
    st["proj"] += np.sum((C @ st["U"]) ** 2, axis=0)
    _segment_add(st["projc"], j, (C @ st["Uc"]) ** 2)
    st["var"] += np.bincount(j, weights=np.sum(C**2, axis=1), minlength=st["present"].size)
    st["max_abs"] = max(st["max_abs"], float(np.max(np.abs(H - st["mu"]), initial=0.0)))
    st["norm_H_sq"] += float(np.sum(H**2))
    if self.W is not None:
      Wp = self.W[st["present"]]
      bp = np.zeros(st["present"].size) if self.b is None else self.b[st["present"]]
      clf = np.argmax(H @ Wp.T + bp, axis=1)
      sq = np.sum(st["Mc"] ** 2, axis=1)
      ncc = np.argmin(sq[None, :] - 2 * (H - st["mu"]) @ st["Mc"].T, axis=1)
      st["agree"] += float(np.sum(clf == ncc))
      if self.conventions.nc4_bias or self.b is None:
        clf_c = clf
      else:
        clf_c = np.argmax(H @ Wp.T, axis=1)
      st["agree_K"] += np.bincount(j, weights=(clf_c == ncc).astype(np.float64), minlength=st["present"].size)

  # ------------------------------------------------------------------ results

  def result(self, names=None) -> dict:
    r"""The metrics (default: every one of :data:`ufm.metrics.METRICS` the inputs allow) as floats, plus
    ``present`` and ``absent`` (lists of classes) and ``N``."""
    import jax
    import jax.numpy as jnp

    from ufm import metrics
    if self._pass2 is None:
      raise ValueError("no second pass: call add_spread on every batch after add_means")
    st = self._pass2
    present, N = st["present"], st["N"]
    Kp = present.size
    allowed = metrics.FEATURE_METRICS if self.W is None else tuple(metrics.METRICS)
    names = allowed if names is None else tuple(names)
    unknown = [n for n in names if n not in allowed]
    if unknown:
      raise ValueError(f"unknown or unavailable metric(s) {unknown}; valid names: {', '.join(allowed)}")
    out: dict[str, Any] = {}
    s = st["max_abs"]  # the scale of ufm.metrics.standardise: decisions relative to it
    floor = metrics.rounding_floor(N, jnp.float64) * s
    separated = bool(np.max(np.linalg.norm(st["Mc"], axis=1), initial=0.0) > floor)
    spread = bool(np.sum(st["var"]) > 0 and math.sqrt(np.max(st["var"] / self.counts[present])) > floor)
    lam_B = st["s"] ** 2 / Kp
    keep = lam_B > max(self.d, Kp) * np.finfo(np.float64).eps * np.max(lam_B, initial=0.0)
    nc1 = float(np.sum(np.where(keep, st["proj"] / N / np.where(keep, lam_B, 1.0), 0.0)) / Kp)
    tr_W, tr_B = float(np.sum(st["var"])) / N, float(np.sum(st["Mc"] ** 2)) / Kp
    degenerate = math.inf if spread else 0.0
    streamed = {"nc1": nc1 if separated else degenerate,
                "nc1_ratio": tr_W / tr_B if separated else degenerate,
                "norm_H_sq": st["norm_H_sq"]}
    var_K = st["var"] / self.counts[present]
    sq = np.sum(st["Mc"] ** 2, axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * st["Mc"] @ st["Mc"].T, 0.0)
    i, j = np.triu_indices(Kp, 1)
    streamed["cdnv"] = float(np.mean(np.asarray(metrics.cdnv_pairs(var_K[i], var_K[j], dist2[i, j], 1.0, floor))))
    if self.W is not None:
      streamed["nc4"] = st["agree"] / N
      bvec = np.zeros(self.K) if self.b is None else self.b
      streamed["bias_relation"] = float(np.linalg.norm(self.W @ st["mu"] + bvec))
    # the metrics of the means and the classifier: ufm.metrics' own, on a stand-in with one sample per present class
    rest = [n for n in names if n not in STREAMED]
    if rest:
      Wp = np.zeros((Kp, self.d)) if self.W is None else self.W[present]
      bp = np.zeros(Kp) if self.b is None else self.b[present]
      with jax.enable_x64(True):
        out.update(_mean_metrics(jnp.asarray(Wp), jnp.asarray(bp), st["M"], st["Mc"], rest))
    out.update({k: v for k, v in streamed.items() if k in names})
    if not self.finite:
      out = {k: math.nan for k in out}
    out = {k: out[k] for k in names}
    out.update(present=present.tolist(), absent=np.flatnonzero(self.counts == 0).tolist(), N=N)
    return out


  def summary(self, ood_mean=None) -> dict:
    r"""The canonical summary of :mod:`ufm.canonical` under this accumulator's conventions, over the present
    classes (the same numbers as :func:`ufm.canonical.summary` on the whole array, to rounding), plus
    ``present``, ``absent``, ``N`` and ``conventions``. ``ood_mean``: the global mean of out-of-distribution
    features (``d``), for NC5."""
    import jax
    import jax.numpy as jnp

    from ufm import canonical
    if self._pass2 is None:
      raise ValueError("no second pass: call add_spread on every batch after add_means")
    st = self._pass2
    present = st["present"]
    s = st["max_abs"]
    sc = s if s > 0 else 1.0
    with jax.enable_x64(True):
      stats = canonical.Stats(
          M=jnp.asarray(st["Mc"] / sc), counts=jnp.asarray(self.counts[present], jnp.float64),
          m0=jnp.asarray(st["mu"]), s=jnp.asarray(s), ss=jnp.asarray(st["var"] / sc**2), U=jnp.asarray(st["Uc"]),
          lam=jnp.asarray(st["lamc"] / sc**2), proj=jnp.asarray(st["projc"] / sc**2), agree=jnp.asarray(st["agree_K"]))
      W = b = None
      if self.W is not None:
        W = jnp.asarray(self.W[present])
        b = jnp.zeros(present.size) if self.b is None else jnp.asarray(self.b[present])
      mu_ood = None if ood_mean is None else jnp.asarray(np.asarray(ood_mean, np.float64))
      if mu_ood is not None and mu_ood.shape != (self.d,):
        raise ValueError(f"ood_mean has shape {mu_ood.shape}; allowed: (d,) = ({self.d},)")
      out = canonical.from_stats(stats, self.conventions, W, b, mu_ood)
      finite = self.finite and (mu_ood is None or bool(jnp.all(jnp.isfinite(mu_ood))))
      res = {k: (float(v) if finite else math.nan) for k, v in out.items() if k != "nc4_per_class"}
      if "nc4_per_class" in out:
        res["nc4_per_class"] = [float(v) if finite else math.nan for v in np.asarray(out["nc4_per_class"])]
    res.update(present=present.tolist(), absent=np.flatnonzero(self.counts == 0).tolist(), N=st["N"],
               conventions=self.conventions.name)
    return res


def _mean_metrics(W, b, M, Mc, names) -> dict:
  """Metrics of the class means (``M``, ``K' x d``; ``Mc`` centred at the sample-weighted global mean, as
  :mod:`ufm.metrics` centres) and of the classifier ``W`` (``K' x d``) and bias ``b``, by :mod:`ufm.metrics`' own
  functions (the same ``ddof`` rule as :func:`ufm.metrics.compute`: 1, or 0 for two classes)."""
  import jax.numpy as jnp

  from ufm import metrics
  Mt, Mct = jnp.asarray(M.T), jnp.asarray(Mc.T)  # d x K'
  kw = {"ddof": 1 if Mc.shape[0] > 2 else 0}
  table = {
      "equinorm_W": lambda: metrics.equinorm(W.T), "equinorm_M": lambda: metrics.equinorm(Mct),
      "equiangularity_W": lambda: metrics.equiangularity(W.T, **kw),
      "equiangularity_M": lambda: metrics.equiangularity(Mct, **kw),
      "max_angle_W": lambda: metrics.max_angle(W.T), "max_angle_M": lambda: metrics.max_angle(Mct),
      "etf_error_W": lambda: metrics.etf_error(W.T), "etf_error_M": lambda: metrics.etf_error(Mct),
      "of_error_W": lambda: metrics.of_error(W.T), "of_error_M": lambda: metrics.of_error(Mt),
      "self_duality": lambda: metrics.self_duality(W, Mct),
      "self_duality_etf": lambda: metrics.self_duality_etf(W, Mct),
      "self_duality_classwise": lambda: metrics.self_duality_classwise(W, Mct),
      "unc3": lambda: metrics.unc3(W, Mct),
      "gnc2": lambda: metrics.gnc2(Mct), "gnc2_var": lambda: metrics.gnc2_var(Mct),
      "norm_W_sq": lambda: jnp.sum(W**2), "norm_b": lambda: jnp.linalg.norm(b),
  }
  return {n: float(table[n]()) for n in names}


def measure_batches(batches, K: int, d: int, W=None, b=None, names=None) -> dict:
  """:class:`Accumulator` over ``batches``, a callable returning a fresh iterable of ``(features B x d, labels B)``
  each time it is called (it is called twice, once per pass)."""
  acc = Accumulator(K, d, W=W, b=b)
  for H, y in batches():
    acc.add_means(H, y)
  for H, y in batches():
    acc.add_spread(H, y)
  return acc.result(names)
