"""Helpers shared by the deep-linear-UFM experiments: layer metrics from traced Grams, padding."""

import numpy as np

from ufm import deep, theory


def target_gram(K: int, *, centred: bool) -> np.ndarray:
  """The NC2 target: the simplex ETF ``I - 11^T/K`` (centred means, with a bias or CE) or the orthogonal frame ``I``."""
  return np.eye(K) - 1.0 / K if centred else np.eye(K)


def gram_errors(G: np.ndarray, T: np.ndarray) -> np.ndarray:
  """``|| G/||G|| - T/||T|| ||_F`` over the last two axes (:func:`ufm.deep.gram_error` in NumPy, any leading axes)."""
  n = np.linalg.norm(G, axis=(-2, -1), keepdims=True)
  return np.linalg.norm(G / np.where(n > 0, n, 1.0) - T / np.linalg.norm(T), axis=(-2, -1))


def centred(G: np.ndarray, pi: np.ndarray) -> np.ndarray:
  """:func:`ufm.deep.centred_gram` over leading axes."""
  K = G.shape[-1]
  P = np.eye(K) - np.outer(pi, np.ones(K))
  return P.T @ G @ P


def self_duality(CG: np.ndarray, MG: np.ndarray, Zbar: np.ndarray, pi: np.ndarray, *, centre: bool) -> np.ndarray:
  """Per-layer NC3 (:func:`ufm.deep.self_duality_from_grams`): ``CG`` (..., M, K, K), ``MG`` (..., M, K, K) (already
  centred when ``centre``), ``Zbar`` (..., K, K)."""
  K = Zbar.shape[-1]
  P = np.eye(K) - np.outer(pi, np.ones(K)) if centre else np.eye(K)
  cross = np.trace(Zbar @ P, axis1=-2, axis2=-1)[..., None]
  c = np.sqrt(np.trace(CG, axis1=-2, axis2=-1) * np.trace(MG, axis1=-2, axis2=-1))
  return np.sqrt(np.maximum(2 - 2 * cross / np.where(c > 0, c, 1.0), 0.0))


def pad(a: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
  """``a`` padded with NaN to ``size`` along ``axis`` (layers of shallower networks)."""
  a = np.asarray(a, np.float64)
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, size - a.shape[axis])
  return np.pad(a, widths, constant_values=np.nan)


def predicted_layer_grams(problem) -> dict:
  """Per-layer Grams of the predicted minimiser (``ufm.theory.predict``), realised by
  :func:`ufm.deep.balanced_factorisation` of its class-level logits: ``mean_grams`` (uncentred), ``classifier_grams``."""
  pred = theory.predict(problem)
  params = deep.balanced_factorisation(pred.logits_M, problem)
  return {"mean_grams": np.asarray(deep.mean_grams(params, problem)),
          "classifier_grams": np.asarray(deep.classifier_grams(params, problem)), "prediction": pred}
