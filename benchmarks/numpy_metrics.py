r"""The NC metric set of :data:`ufm.metrics.METRICS` written the way peer codebases compute it: NumPy, one class
at a time, explicit covariance matrices and a pseudo-inverse (Papyan et al. 2020, arXiv 2008.08186; Zhu et al.
2021, arXiv 2105.02375; Dang et al. 2023). The baseline of benchmark case 3 (same formulas, same values).

Conventions as :mod:`ufm.metrics`: ``H`` is ``d x N``, ``W`` is ``K x d``, ``labels`` integers in ``[0, K)``.
"""

import numpy as np

__all__ = ["numpy_metric_set"]


def _equinorm(X):
  n = np.linalg.norm(X, axis=0)
  return np.std(n, ddof=1) / np.mean(n)


def _cos(X):
  Xn = X / np.linalg.norm(X, axis=0, keepdims=True)
  i, j = np.triu_indices(X.shape[1], k=1)
  return (Xn.T @ Xn)[i, j]


def _gram_error(G, T):
  return np.linalg.norm(G / np.linalg.norm(G) - T)


def _log_inv_dist(M):
  Mn = M / np.linalg.norm(M, axis=0, keepdims=True)
  sq = np.sum(Mn**2, axis=0)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Mn.T @ Mn, 0.0)
  i, j = np.triu_indices(M.shape[1], k=1)
  return -0.5 * np.log(d2[i, j])


def numpy_metric_set(W: np.ndarray, H: np.ndarray, b: np.ndarray, labels: np.ndarray, K: int,
                     bias: bool) -> dict[str, float]:
  r"""Every metric of :data:`ufm.metrics.METRICS`, in NumPy. NC1 is
  :math:`\frac1K\mathrm{tr}(\Sigma_W\Sigma_B^+)` with the ``d x d`` covariances and ``np.linalg.pinv``
  (relative cutoff ``max(d, K) eps``, the cutoff :func:`ufm.metrics.nc1` applies), as the peers compute it."""
  d, N = H.shape
  b = b if bias else np.zeros_like(b)
  M = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)  # class means, one class at a time
  counts = np.bincount(labels, minlength=K)
  mu_G = H.mean(axis=1)
  Mc = M - mu_G[:, None]
  C = H - M[:, labels]
  Sigma_W = C @ C.T / N
  Sigma_B = Mc @ Mc.T / K
  eps = np.finfo(H.dtype).eps
  nc1 = np.trace(Sigma_W @ np.linalg.pinv(Sigma_B, rcond=max(d, K) * eps, hermitian=True)) / K
  var = np.array([np.sum(C[:, labels == k] ** 2) / counts[k] for k in range(K)])
  sq = np.sum(Mc**2, axis=0)
  dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Mc.T @ Mc, 0.0)
  i, j = np.triu_indices(K, k=1)
  ddof = 1 if K > 2 else 0
  E = (np.eye(K) - 1.0 / K) / np.sqrt(K - 1.0)
  cW, cM = _cos(W.T), _cos(Mc)
  Wn = W.T / np.linalg.norm(W.T, axis=0, keepdims=True)
  Mn = Mc / np.linalg.norm(Mc, axis=0, keepdims=True)
  cos_dual = np.sum(Wn * Mn, axis=0)
  lid = _log_inv_dist(Mc)
  clf = np.argmax(W @ H + b[:, None], axis=0)
  Hc = H - mu_G[:, None]
  ncc = np.argmin(np.sum(Mc**2, axis=0)[:, None] - 2 * Mc.T @ Hc, axis=0)
  return {
      "nc1": nc1,
      "nc1_ratio": np.trace(Sigma_W) / np.trace(Sigma_B),
      "cdnv": np.mean((var[i] + var[j]) / 2 / dist2[i, j]),
      "equinorm_W": _equinorm(W.T),
      "equinorm_M": _equinorm(Mc),
      "equiangularity_W": np.std(cW, ddof=ddof),
      "equiangularity_M": np.std(cM, ddof=ddof),
      "max_angle_W": np.mean(np.abs(cW + 1.0 / (K - 1))),
      "max_angle_M": np.mean(np.abs(cM + 1.0 / (K - 1))),
      "etf_error_W": _gram_error(W @ W.T, E),
      "etf_error_M": _gram_error(Mc.T @ Mc, E),
      "of_error_W": _gram_error(W @ W.T, np.eye(K) / np.sqrt(K)),
      "of_error_M": _gram_error(M.T @ M, np.eye(K) / np.sqrt(K)),
      "self_duality": np.linalg.norm(W.T / np.linalg.norm(W) - Mc / np.linalg.norm(Mc)),
      "self_duality_etf": _gram_error(W @ Mc, E),
      "self_duality_classwise": np.mean(np.linalg.norm(Wn - Mn, axis=0)),
      "unc3": np.std(cos_dual, ddof=1) / np.mean(cos_dual),
      "gnc2": np.mean(lid),
      "gnc2_var": np.var(lid),
      "nc4": np.mean(clf == ncc),
      "bias_relation": np.linalg.norm(W @ mu_G + b),
      "norm_W_sq": np.sum(W**2),
      "norm_H_sq": np.sum(H**2),
      "norm_b": np.linalg.norm(b) if bias else 0.0,
  }
