r"""The prediction interface: :class:`Prediction`, :class:`NoClosedFormError`, and :func:`predict` with its registry.

:func:`predict` looks up the closed form of a concrete problem by ``(problem.FAMILY, problem.loss)`` in a registry
that the family modules of :mod:`ufm.theory` fill when they are imported (:func:`register_prediction`); a pair with
no entry raises :class:`NoClosedFormError` listing the pairs that have one. A loss registered at runtime in
:mod:`ufm.losses` therefore gets that error, never another loss's closed form.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = [
    "NoClosedFormError",
    "Prediction",
    "balanced_metric_targets",
    "closed_forms",
    "predict",
    "register_prediction",
]


class NoClosedFormError(ValueError):
  """Raised by :func:`predict` (and the constructors) when no closed form applies."""


class Prediction(NamedTuple):
  """What :func:`predict` returns; ``nan`` marks a quantity the theory leaves undetermined.

  Attributes:
    geometry: ``"simplex ETF"``, ``"orthogonal frame"``, ``"general orthogonal frame"``,
      ``"ETF + mean direction"`` or ``"zero"``.
    source: paper and theorem.
    objective, norm_W_sq, norm_H_sq, norm_b: predicted values.
    gram_W, gram_M, logits_M: :math:`WW^\top`, :math:`\bar H^\top\bar H`, :math:`W\bar H` (``K x K``).
    b: predicted bias (``nan`` entries where only ``b ∝ 1`` is known).
    metrics: NC metric name -> value that the closed form fixes exactly (see
      :mod:`ufm.metrics`; metrics it does not fix are absent).
  """
  geometry: str
  source: str
  objective: float
  norm_W_sq: float
  norm_H_sq: float
  norm_b: float
  gram_W: np.ndarray
  gram_M: np.ndarray
  logits_M: np.ndarray
  b: np.ndarray
  metrics: dict


def _etf_error_of_orthogonal_frame(K: int) -> float:
  r""":math:`\|I/\sqrt K - (I - J/K)/\sqrt{K-1}\|_F`: the ETF error of an orthogonal frame (exact)."""
  a, bb = 1 / math.sqrt(K), 1 / math.sqrt(K - 1)
  diag = a - bb + bb / K
  return math.sqrt(K * diag**2 + K * (K - 1) * (bb / K) ** 2)


def balanced_metric_targets(K: int, *, etf_W: bool, orthogonal_W: bool) -> dict:
  r"""The NC metric values (:mod:`ufm.metrics`) fixed by a balanced, collapsed, non-zero minimiser (exact).

  Collapse (NC1 = 0, CDNV = 0), equinorm means and classifiers, ETF class means (equiangularity, max angle and
  ETF error 0, GNC2 :math:`= -\frac12\log\frac{2K}{K-1}`, derivations §0.3), NC4 = 1 and the self-duality of the
  centred means. ``etf_W``: the classifier rows are a simplex ETF too (NC3 exact). ``orthogonal_W``: the
  classifier rows are an orthogonal frame (bias-free MSE), so the uncentred means are orthonormal up to scale,
  the ETF error of ``W`` is :math:`\|I/\sqrt K - (I - J/K)/\sqrt{K-1}\|_F` and the self-duality distance is
  :math:`\sqrt{2 - 2\sqrt{(K-1)/K}}`.
  """
  m = {"nc1": 0.0, "nc1_ratio": 0.0, "cdnv": 0.0, "equinorm_W": 0.0, "equinorm_M": 0.0,
       "equiangularity_M": 0.0, "max_angle_M": 0.0, "etf_error_M": 0.0,
       "gnc2": -0.5 * math.log(2 * K / (K - 1)), "gnc2_var": 0.0, "unc3": 0.0, "nc4": 1.0,
       "self_duality_etf": 0.0}
  if etf_W:
    m.update(equiangularity_W=0.0, max_angle_W=0.0, etf_error_W=0.0, self_duality=0.0,
             self_duality_classwise=0.0)
  if orthogonal_W:
    # Uncentred means h_k ∝ w_k, orthonormal up to scale; the centred means are an ETF.
    dual = math.sqrt(2 - 2 * math.sqrt((K - 1) / K))
    m.update(equiangularity_W=0.0, max_angle_W=1 / (K - 1), of_error_W=0.0, of_error_M=0.0,
             etf_error_W=_etf_error_of_orthogonal_frame(K), self_duality=dual,
             self_duality_classwise=dual)
  return m


PredictFn = Callable[..., Prediction]

# (family, loss) -> the function that predicts a concrete problem of that family and loss.
_REGISTRY: dict[tuple[str, str], PredictFn] = {}


def register_prediction(family: str, loss: str, fn: PredictFn | None = None, *, replace: bool = False):
  """Registers ``fn(problem) -> Prediction`` as the closed form of ``family`` (a problem's ``FAMILY``) with ``loss``
  (a name of :mod:`ufm.losses`); returns ``fn``. Without ``fn`` it returns a decorator.

  ``fn`` raises :class:`NoClosedFormError` for the problems of that pair it does not cover (imbalanced counts,
  zero weight decay, ...). A pair is registered once; ``replace=True`` overrides an existing entry.
  """
  for name, v in (("family", family), ("loss", loss)):
    if not isinstance(v, str) or not v:
      raise ValueError(f"{name} = {v!r} is not a valid name; allowed: a non-empty string")

  def decorate(f: PredictFn) -> PredictFn:
    if not callable(f):
      raise ValueError(f"fn = {f!r} is not callable; allowed: a function problem -> Prediction")
    if (family, loss) in _REGISTRY and not replace:
      raise ValueError(f"a closed form for family {family!r} with loss {loss!r} is already registered "
                       "(pass replace=True to override it)")
    _REGISTRY[(family, loss)] = f
    return f

  return decorate if fn is None else decorate(fn)


def closed_forms() -> tuple[tuple[str, str], ...]:
  """The ``(family, loss)`` pairs that :func:`predict` has a closed form for, in registration order."""
  return tuple(_REGISTRY)


def _listing() -> str:
  return ", ".join(f"{f}/{l}" for f, l in _REGISTRY) or "none"


def predict(problem) -> Prediction:
  """The closed-form global minimiser of a concrete problem, or :class:`NoClosedFormError`.

  Dispatches on ``(problem.FAMILY, problem.loss)`` through the registry (:func:`closed_forms` lists the pairs;
  :func:`register_prediction` adds one). Registered by :mod:`ufm.theory`:

  * ``plain`` / ``ce``: balanced CE (bias-free, or with bias), ``d >= K-1``
    (:func:`ufm.theory.plain.ce_balanced`).
  * ``plain`` / ``mse``: bias-free with any counts, an unregularised bias with any counts, a regularised bias when
    balanced (:func:`ufm.theory.plain.mse_minimiser`), including ``d`` below the unconstrained rank when the kept
    directions are unique.
  * ``deep`` / ``mse`` and ``deep`` / ``ce``: :func:`ufm.theory.deep.predict_deep_mse`,
    :func:`ufm.theory.deep.predict_deep_ce`.

  Not covered (raises): any other family or loss (a loss registered at runtime included), imbalanced CE (no closed
  form; SELI is a ``lambda -> 0`` limit), ``lam_W = 0`` or ``lam_H = 0`` (no minimiser is attained), ETF
  predictions with ``d < K-1``, rank truncations with tied directions.

  Values are computed in JAX's default float: enable ``jax_enable_x64`` for reference-precision predictions.
  """
  try:
    family, loss = problem.FAMILY, problem.loss
  except AttributeError:
    raise TypeError(f"{type(problem).__name__} is not a problem family (it needs the class attribute FAMILY and "
                    "a loss; see ufm.problem.Family)") from None
  fn = _REGISTRY.get((family, loss))
  if fn is None:
    raise NoClosedFormError(f"no closed form for family {family!r} with loss {loss!r}; closed forms exist for: "
                            f"{_listing()} (family/loss)")
  return fn(problem)
