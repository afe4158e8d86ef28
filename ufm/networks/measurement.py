r"""Neural-collapse measurements of trained networks, and their comparison with the UFM's predicted geometry.

:func:`measure` computes every NC metric of :data:`ufm.metrics.METRICS` on anyone's features (``N x d``), labels
and classifier; :func:`compare_with_ufm` builds the UFM problem with the network's ``K``, ``n_k`` and weight decays
and returns :func:`ufm.theory.predict`'s geometry (or, for imbalanced CE, the convex reference
:func:`ufm.convex.ce_convex`) beside the network's: Grams, norms and every NC metric. Training to 100% train
accuracy and beyond is the terminal phase of Papyan, Han & Donoho (2020, arXiv 2008.08186).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ufm import convex, metrics, theory
from ufm.problem import Params, make_problem
from ufm.validate import check_loss, check_real

__all__ = ["LAYER_METRICS", "Comparison", "compare_with_ufm", "measure"]

#: Metrics of :data:`ufm.metrics.METRICS` that depend on the features only (measured on every hidden layer).
LAYER_METRICS = metrics.FEATURE_METRICS


@functools.partial(jax.jit, static_argnames=("names",), compiler_options={"xla_backend_optimization_level": 0})
def _compute(params: Params, problem, names):
  """:func:`ufm.metrics.compute`, jitted at optimisation level 0 (a program that runs once compiles fast)."""
  return metrics.compute(params, problem, names)


def measure(features: ArrayLike, labels: ArrayLike, W: ArrayLike | None = None, b: ArrayLike | None = None, *,
            names=None) -> dict[str, float]:
  r"""Every NC metric of :data:`ufm.metrics.METRICS` on anyone's features, as floats.

  ``features`` are the penultimate features as rows (``N x d``, one per sample, any order), ``labels`` the
  integer classes ``0..K-1`` (every class present), ``W`` the classifier (``K x d``, logits ``W h + b``) and
  ``b`` its bias. Without ``W`` only the feature metrics :data:`LAYER_METRICS` are computed (so it also
  measures a hidden layer). The samples are sorted class-major (stably) and handed to
  :func:`ufm.metrics.compute` (normalisations: see :mod:`ufm.metrics`). Runs eagerly; not for use under jit.
  """
  H = np.asarray(features)
  y = np.asarray(labels)
  if H.ndim != 2:
    raise ValueError(f"features has shape {H.shape}; allowed: (N, d), one row per sample")
  if y.ndim != 1 or y.shape[0] != H.shape[0] or y.dtype.kind not in "iu":
    raise ValueError(f"labels has shape {y.shape} and dtype {y.dtype}; allowed: (N,) = ({H.shape[0]},) integers")
  if y.size == 0 or y.min() < 0:
    raise ValueError("labels: allowed: integer classes 0..K-1, at least one sample")
  K = int(y.max()) + 1 if W is None else int(np.shape(W)[0])
  counts = np.bincount(y, minlength=K)
  if K < 2 or np.any(counts == 0) or y.max() >= K:
    raise ValueError(f"labels cover classes {sorted(set(y.tolist()))[:12]}...; allowed: every class 0..K-1 = "
                     f"0..{K - 1} present (K = W.shape[0] when W is given), K >= 2")
  d = H.shape[1]
  if W is not None and np.shape(W) != (K, d):
    raise ValueError(f"W has shape {np.shape(W)}; allowed: (K, d) = ({K}, {d})")
  if b is not None and np.shape(b) != (K,):
    raise ValueError(f"b has shape {np.shape(b)}; allowed: (K,) = ({K},)")
  dt = jax.dtypes.canonicalize_dtype(H.dtype if H.dtype.kind == "f" else np.float64)  # float32 unless x64
  order = np.argsort(y, kind="stable")
  problem = make_problem(tuple(int(c) for c in counts), d=d, lam_W=0.0, lam_H=0.0, bias=b is not None, dtype=dt)
  Wj = jnp.zeros((K, d), dt) if W is None else jnp.asarray(W, dt)
  bj = jnp.zeros((K,), dt) if b is None else jnp.asarray(b, dt)
  names = (LAYER_METRICS if W is None else tuple(metrics.METRICS)) if names is None else tuple(names)
  out = _compute(Params(W=Wj, H=jnp.asarray(H[order].T, dt), b=bj), problem, names)
  return {k: float(v) for k, v in out.items()}


class Comparison(NamedTuple):
  """The network's measured geometry beside the UFM's prediction for the same ``K``, ``n_k`` and weight decays.

  Attributes:
    geometry, source: the predicted geometry and its source.
    lam_W, lam_H: the weight decays of the matching UFM; ``lam_H_from``: ``"given"`` or ``"balance"``.
    gram_W, pred_gram_W: :math:`WW^\\top` (``K x K``).
    gram_M, pred_gram_M: the class-mean Gram, centred (:math:`\\tilde M^\\top\\tilde M`) with a bias, uncentred
      (:math:`\\bar H^\\top\\bar H`) without.
    norms_W, pred_norms_W: the classifier row norms :math:`\\|w_k\\|` (``K``).
    norm_W_sq, pred_norm_W_sq, norm_H_sq, pred_norm_H_sq: :math:`\\|W\\|_F^2` and :math:`\\|H\\|_F^2` (``H``
      centred with a bias).
    gram_W_distance, gram_M_distance: Frobenius distance of the normalised Grams
      (:func:`ufm.convex.gram_distance`).
    metrics, pred_metrics: the NC metrics (``names``) measured, and on the predicted minimiser (both with
      ``norm_H_sq``, centred with a bias).
  """
  geometry: str
  source: str
  lam_W: float
  lam_H: float
  lam_H_from: str
  gram_W: np.ndarray
  pred_gram_W: np.ndarray
  gram_M: np.ndarray
  pred_gram_M: np.ndarray
  norms_W: np.ndarray
  pred_norms_W: np.ndarray
  norm_W_sq: float
  pred_norm_W_sq: float
  norm_H_sq: float
  pred_norm_H_sq: float
  gram_W_distance: float
  gram_M_distance: float
  metrics: dict
  pred_metrics: dict


def _joint_factor(gram_W, gram_M, logits_M):
  """``W`` (``K x 2K``) and ``Hbar`` (``2K x K``) with ``WW^T``, ``Hbar^T Hbar``, ``W Hbar`` the given Grams:
  a square root of the joint PSD Gram of ``[W^T, Hbar]``."""
  K = gram_W.shape[0]
  G = np.block([[gram_W, logits_M], [logits_M.T, gram_M]])
  w, V = np.linalg.eigh(0.5 * (G + G.T))
  w = np.where(w > 64 * np.finfo(np.float64).eps * np.max(np.abs(w)), w, 0.0)  # rounding noise of zeros -> 0
  F = (V * np.sqrt(w)[None, :]).T  # F^T F = G
  return F[:, :K].T, F[:, K:]


def compare_with_ufm(W: ArrayLike, features: ArrayLike, b: ArrayLike | None, counts, *, loss: str, lam_W,
                     lam_H=None, names=None) -> Comparison:
  r"""The UFM's predicted geometry for the network's ``K``, ``n_k`` and weight decays, beside the measured one.

  Builds ``ufm.make_problem(counts, d=2K, lam_W, lam_H, loss, bias=b is not None)`` (``lam_b = 0``: the
  network's classifier bias is not decayed) and takes its global minimiser from :func:`ufm.theory.predict`
  (balanced CE: simplex ETF, Zhu et al. 2021 Thm. 3.1; MSE: orthogonal frame / general orthogonal frame without
  bias, Tirer & Bruna 2022, Dang et al. 2023; ETF with a bias, Zhou et al. 2022), or for imbalanced CE from the
  convex reference :func:`ufm.convex.ce_convex` (whose limits are minority collapse, Fang et al. 2021, and SELI,
  Thrampoulidis et al. 2022). The prediction's metrics are computed by :mod:`ufm.metrics` on a minimiser rebuilt
  from its Grams (``d = 2K``; every metric is rotation invariant).

  *Effective feature decay.* The network has no free features, so ``lam_H`` is not a knob of it unless an
  explicit feature decay was trained with. ``lam_H=None`` takes the value that satisfies the UFM's balance
  identity at the network's own ``(W, H)``: every stationary point of the UFM has
  :math:`\lambda_W\|W\|_F^2 = \lambda_H\|H\|_F^2` (from :math:`W^\top\nabla_W f = \nabla_H f\, H^\top`, whose
  loss terms are both :math:`\frac1N\mathrm{tr}(W^\top G H^\top)`), so
  :math:`\lambda_H^{\mathrm{eff}} = \lambda_W\|W\|_F^2/\|H\|_F^2` (``H`` centred when there is a bias: with a
  free bias the UFM's features have zero mean). The predicted norms are then a genuine test: the UFM fixes
  :math:`\|W\|_F^2` from the loss at that ratio.

  Args:
    W: the trained classifier ``K x d``.
    features: penultimate training features ``N x d``, rows class-major with ``counts`` (as
      :class:`ufm.data.Dataset` holds them).
    b: the classifier bias, or ``None`` for a bias-free classifier.
    counts: the training counts ``n_k``.
    loss: a loss of :mod:`ufm.losses` (``"ce"``, ``"mse"``; the prediction exists where
      :func:`ufm.theory.predict` has one).
    lam_W: the classifier's weight decay ``> 0``; ``lam_H``: ``> 0`` or ``None`` (balance estimate).
    names: the NC metrics to compare (default: all of :data:`ufm.metrics.METRICS`).

  Raises:
    ValueError: bad shapes or decays; :class:`ufm.theory.NoClosedFormError` where no prediction exists.
  """
  W = np.asarray(W, np.float64)
  Hn = np.asarray(features, np.float64)
  counts = tuple(int(c) for c in counts)
  K, N = len(counts), sum(counts)
  if W.ndim != 2 or W.shape[0] != K or Hn.shape != (N, W.shape[1]):
    raise ValueError(f"W {W.shape}, features {Hn.shape}, counts (K = {K}, N = {N}); allowed: W (K, d), "
                     "features (N, d)")
  bias = b is not None
  loss = check_loss(loss)
  lam_W = float(check_real("lam_W", lam_W, lo=0.0, lo_open=True))
  labels = np.repeat(np.arange(K), counts)
  H = Hn.T
  Hc = H - H.mean(axis=1, keepdims=True) if bias else H
  lam_H_from = "given"
  if lam_H is None:
    lam_H, lam_H_from = lam_W * float(np.sum(W**2)) / float(np.sum(Hc**2)), "balance"
  lam_H = float(check_real("lam_H", lam_H, lo=0.0, lo_open=True))
  f64 = jax.dtypes.canonicalize_dtype(np.float64)  # float64 under jax_enable_x64 (recommended), else float32
  problem = make_problem(counts, d=2 * K, lam_W=lam_W, lam_H=lam_H, loss=loss, bias=bias, dtype=f64)
  if loss == "ce" and len(set(counts)) > 1:  # imbalanced CE: no closed form; the convex reference (CE only)
    sol = jax.tree.map(lambda x: np.asarray(x, np.float64),
                       convex.ce_convex(np.asarray(counts, np.float64), lam_W, lam_H, bias=bias, dtype=f64))
    if not bool(sol.converged):
      raise theory.NoClosedFormError(f"the convex reference did not converge (kkt = {float(sol.kkt):.2g})")
    pred_gram_W = np.asarray(convex.classifier_gram(sol.X, lam_W, lam_H))
    pred_gram_M = np.asarray(convex.feature_mean_gram(sol.X, np.asarray(counts, np.float64), lam_W, lam_H))
    logits_M, pred_b = np.asarray(sol.Z), np.asarray(sol.b)
    geometry = "imbalanced CE (convex reference)"
    source = "ufm.convex.ce_convex: convex reformulation of the CE-UFM (Hong & Ling 2023 form)"
  else:
    p = theory.predict(problem)
    pred_gram_W, pred_gram_M, logits_M = (np.asarray(x, np.float64) for x in (p.gram_W, p.gram_M, p.logits_M))
    pred_b = np.nan_to_num(np.asarray(p.b, np.float64))
    geometry, source = p.geometry, p.source
  Wp, Hbar = _joint_factor(pred_gram_W, pred_gram_M, logits_M)
  d = W.shape[1]
  if d > 2 * K:  # zero-pad the minimiser to the network's width: one compiled metrics program measures both
    Wp, Hbar = np.pad(Wp, ((0, 0), (0, d - 2 * K))), np.pad(Hbar, ((0, d - 2 * K), (0, 0)))
  Y = np.eye(K)[:, labels]
  names = tuple(metrics.METRICS) if names is None else tuple(names)
  pp = Params(W=jnp.asarray(Wp, f64), H=jnp.asarray(Hbar @ Y, f64), b=jnp.asarray(pred_b, f64))
  if Wp.shape[1] != problem.d:  # the metrics check H against the problem's d: measure at the padded width
    problem = make_problem(counts, d=Wp.shape[1], lam_W=lam_W, lam_H=lam_H, loss=loss, bias=bias, dtype=f64)
  pred_metrics = {k: float(v) for k, v in _compute(pp, problem, names).items()}
  pred_H = Hbar @ Y - (Hbar @ Y).mean(1, keepdims=True) if bias else Hbar @ Y
  pred_metrics["norm_H_sq"] = float(np.sum(pred_H**2))
  Mbar = np.stack([H[:, labels == k].mean(axis=1) for k in range(K)], axis=1)
  M = Mbar - H.mean(axis=1, keepdims=True) if bias else Mbar
  pred_M = Hbar - (Hbar @ Y).mean(axis=1, keepdims=True) if bias else Hbar
  gram_W, gram_M = W @ W.T, M.T @ M
  pg_M = pred_M.T @ pred_M
  measured = measure(Hn, labels, W, None if b is None else np.asarray(b, np.float64), names=names)
  measured["norm_H_sq"] = float(np.sum(Hc**2))
  dist = lambda G, T: float(np.linalg.norm(G / np.linalg.norm(G) - T / np.linalg.norm(T)))  # convex.gram_distance
  return Comparison(geometry=geometry, source=source, lam_W=lam_W, lam_H=lam_H, lam_H_from=lam_H_from,
                    gram_W=gram_W, pred_gram_W=pred_gram_W, gram_M=gram_M, pred_gram_M=pg_M,
                    norms_W=np.linalg.norm(W, axis=1), pred_norms_W=np.sqrt(np.maximum(np.diag(pred_gram_W), 0.0)),
                    norm_W_sq=float(np.sum(W**2)), pred_norm_W_sq=float(np.trace(pred_gram_W)),
                    norm_H_sq=measured["norm_H_sq"], pred_norm_H_sq=pred_metrics["norm_H_sq"],
                    gram_W_distance=dist(gram_W, pred_gram_W), gram_M_distance=dist(gram_M, pg_M),
                    metrics=measured, pred_metrics=pred_metrics)
