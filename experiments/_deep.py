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


def self_duality(CG: np.ndarray, MG: np.ndarray, Zbar: np.ndarray, pi: np.ndarray, *, centre: bool) -> np.ndarray:
  r"""Per-layer NC3, :func:`ufm.deep.self_duality_from_grams` over leading axes (float64): ``CG`` (..., M, K, K),
  ``MG`` (..., M, K, K) (already centred when ``centre``), ``Zbar`` (..., K, K); the cross term is
  :math:`\mathrm{tr}(\bar Z P)` with :math:`P = I - \pi\mathbf 1^\top` when ``centre`` (else ``I``), as in
  :func:`ufm.deep.layer_metrics`."""
  K = Zbar.shape[-1]
  lead = np.shape(CG)[:-3]
  P = np.eye(K) - np.outer(pi, np.ones(K)) if centre else np.eye(K)
  cross = np.trace(np.asarray(Zbar, np.float64) @ P, axis1=-2, axis2=-1).reshape(-1)
  per_layer = jax.vmap(deep.self_duality_from_grams, in_axes=(0, 0, None))  # over the M layers
  with jax.enable_x64(True):
    f = jax.vmap(per_layer)  # over the flattened leading axes
    out = f(jnp.asarray(np.reshape(CG, (-1,) + np.shape(CG)[-3:]), jnp.float64),
            jnp.asarray(np.reshape(MG, (-1,) + np.shape(MG)[-3:]), jnp.float64), jnp.asarray(cross, jnp.float64))
    return np.asarray(out).reshape(lead + np.shape(CG)[-3:-2])


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
