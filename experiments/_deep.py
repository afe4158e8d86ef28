"""Helpers shared by the deep-linear-UFM experiments: layer metrics from traced Grams, padding."""

import jax
import jax.numpy as jnp
import numpy as np

from ufm import deep, theory


def target_gram(K: int, *, centred: bool) -> np.ndarray:
  """The NC2 target: the simplex ETF ``I - 11^T/K`` (centred means, with a bias or CE) or the orthogonal frame ``I``."""
  return np.eye(K) - 1.0 / K if centred else np.eye(K)


def _leading(fn, core: int):
  """``fn`` of ``core``-dimensional arrays mapped over any leading axes of its first argument (jax.vmap, once per
  leading axis), evaluated in float64 whatever the caller's precision; a NumPy array back."""
  def mapped(x, *rest):
    with jax.enable_x64(True):
      x = jnp.asarray(x, jnp.float64)
      rest = [jnp.asarray(r, jnp.float64) for r in rest]
      f = fn
      for _ in range(x.ndim - core):
        f = jax.vmap(f, in_axes=(0,) + (None,) * len(rest))
      return np.asarray(f(x, *rest))
  return mapped


#: :func:`ufm.deep.gram_error` ``(G, T)`` over the leading axes of ``G`` (``T`` one ``K x K`` target).
gram_errors = _leading(deep.gram_error, 2)
#: :func:`ufm.deep.centred_gram` ``(G, pi)`` over the leading axes of ``G``.
centred = _leading(deep.centred_gram, 2)


def logit_frame_error(Zbar: np.ndarray, *, centred: bool) -> np.ndarray:
  r"""Dang et al. (2023)'s NC3 (their ``compute_NC3_ETF_WH`` / ``compute_NC3_Identity_WH``): the distance of the
  normalised class-mean logits :math:`\bar Z = \bar W\bar H` (``K x K``, last two axes; any leading axes) to the
  normalised target, :math:`\|\bar ZP/\|\bar ZP\|_F - P/\|P\|_F\|_F` with :math:`P = I - \mathbf 1\mathbf 1^\top/K`
  (means centred, the simplex ETF) when ``centred``, else :math:`\|\bar Z/\|\bar Z\|_F - I/\sqrt K\|_F` (the
  orthogonal frame). A difference of unit-norm matrices: no cancellation floor. Balanced classes (the centring
  by the global mean is :math:`P`)."""
  Z = np.asarray(Zbar, np.float64)
  K = Z.shape[-1]
  T = np.eye(K) - 1.0 / K if centred else np.eye(K)
  if centred:
    Z = Z @ T
  unit = lambda A: A / np.linalg.norm(A, axis=(-2, -1), keepdims=True)
  return np.linalg.norm(unit(Z) - T / np.linalg.norm(T), axis=(-2, -1))


def pad(a: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
  """``a`` padded with NaN to ``size`` along ``axis`` (layers of shallower networks)."""
  a = np.asarray(a, np.float64)
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, size - a.shape[axis])
  return np.pad(a, widths, constant_values=np.nan)


def predicted_layer_grams(problem) -> dict:
  """Per-layer Grams of the predicted minimiser (``ufm.theory.predict``), realised by
  :func:`ufm.deep.balanced_factorisation` of its class-level logits: ``mean_grams`` (uncentred),
  ``classifier_grams``."""
  pred = theory.predict(problem)
  params = deep.balanced_factorisation(pred.logits_M, problem)
  return {"mean_grams": np.asarray(deep.mean_grams(params, problem)),
          "classifier_grams": np.asarray(deep.classifier_grams(params, problem)), "prediction": pred}
