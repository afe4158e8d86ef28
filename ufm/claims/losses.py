r"""Claims on the loss family (label smoothing, focal loss) in the balanced UFM.

Claims on the loss family in the balanced UFM (Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu 2022, arXiv 2210.02192,
Thm. 3.1; norms derived in ``ufm/theory/derivations.md`` §12): the global minimiser with label smoothing or the focal
loss (default parameters, ``alpha = 0.1`` and ``gamma = 2``) is the simplex ETF of :func:`ufm.theory.predict`.

Problems: balanced counts, ``d`` in {K+1, K-1}, bias-free or with an unregularised bias, weight decays drawn as for
the CE claims (collapse index :math:`\tau` in [0.05, 0.9] with :math:`\lambda_H/\lambda_W` in [0.1, 10]), every
problem at least 10% (in :math:`\tau`) from the loss's zero-solution threshold (:func:`loss_family_specs`). Residuals:
:func:`ufm.testing.rel_error` of the objective, :math:`WW^\top` and :math:`\bar H^\top\bar H` against the
prediction, at the ``"reference"`` tolerance; the focal claim takes the best of 4 starts (its loss is not convex).
"""

import math

import numpy as np

from ufm import theory
from ufm.claims.core import Claim
from ufm.testing import problem_specs, rel_error

__all__ = ["CLAIMS", "FOCAL_ETF", "LABEL_SMOOTHING_ETF", "loss_family_specs"]

_GTOL = 1e-12
_MARGIN = 0.1


def _tau(spec) -> float:
  return spec.K * math.sqrt(spec.counts[0] * spec.lam_W * spec.lam_H)


def _zero_threshold(loss: str, K: int) -> float:
  """The collapse index from which the zero solution wins on the ETF ansatz (label smoothing: ``1 - alpha``; focal:
  found by bisection on :func:`ufm.theory.focal_etf`, whose scale drops to 0 there)."""
  if loss == "label_smoothing":
    return 0.9  # 1 - alpha at the default alpha = 0.1 (derivations §12.1)
  lo, hi = 1e-3, 2.0
  for _ in range(50):
    mid = 0.5 * (lo + hi)
    lam = mid / (K * math.sqrt(2.0))
    u = float(theory.focal_etf(K, 2, lam, lam, 2.0).u)
    lo, hi = (mid, hi) if u > 0 else (lo, mid)
  return 0.5 * (lo + hi)


def loss_family_specs(loss: str, *, bias=(False, True)):
  """Hypothesis strategy of :class:`ufm.testing.ProblemSpec` with ``loss`` (``"label_smoothing"`` or
  ``"focal"``): the balanced CE problems of :func:`ufm.testing.problem_specs` (``d`` in {K+1, K-1}, collapse index in
  [0.05, 0.9]) with the loss replaced, kept at least 10% from the loss's zero-solution threshold."""
  thresholds = {}

  def far(spec):
    key = spec.K
    if key not in thresholds:
      thresholds[key] = _zero_threshold(loss, spec.K)
    return abs(_tau(spec) / thresholds[key] - 1) > _MARGIN

  base = problem_specs(loss="ce", counts="balanced", d_offsets=(1, -1), bias=bias, lam_b=0.0, margin=_MARGIN,
                       regime="below", init_scale=(0.1, 1.0))
  return base.map(lambda s: s._replace(loss=loss)).filter(far)


def _best(sol):
  """The best start of a multi-start solution (leading ``inits`` axis) or the solution itself."""
  f = np.asarray(sol.objective, np.float64)
  if f.ndim == 0:
    return sol.params, float(f)
  i = int(np.argmin(f))
  return type(sol.params)(*(np.asarray(x)[i] for x in sol.params)), float(f[i])


def _etf_check(problem, sol, pred):
  params, f = _best(sol)
  W, H = np.asarray(params.W, np.float64), np.asarray(params.H, np.float64)
  Hbar = H @ np.asarray(problem.Y).T / np.asarray(problem.counts, np.float64)[None, :]
  return {"objective": rel_error(f, pred.objective), "gram_W": rel_error(W @ W.T, pred.gram_W),
          "gram_M": rel_error(Hbar.T @ Hbar, pred.gram_M)}


_SOURCE = "Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu 2022 (arXiv 2210.02192), Thm. 3.1; norms: derivations §12"

LABEL_SMOOTHING_ETF = Claim(
    name="label_smoothing_etf",
    source=_SOURCE + ".1 (closed form, ufm.theory.label_smoothing_etf)",
    statement="Balanced label-smoothing UFM (alpha = 0.1), d >= K-1: the global minimiser is a simplex ETF with "
              "h_k = sqrt(lam_W/(n lam_H)) w_k and logit scale u* = (K-1)/K log((K - s(K-1))/s), s = tau + alpha "
              "(zero when s >= 1).",
    problems=loss_family_specs("label_smoothing"), check=_etf_check,
    tolerances={"objective": "reference", "gram_W": "reference", "gram_M": "reference"}, gtol=_GTOL)

FOCAL_ETF = Claim(
    name="focal_etf",
    source=_SOURCE + ".1 (1-D minimisation, ufm.theory.focal_etf)",
    statement="Balanced focal-loss UFM (gamma = 2), d >= K-1: the global minimiser (best of 4 starts) is the "
              "best simplex ETF configuration of ufm.theory.focal_etf (the loss is not convex in the logits).",
    problems=loss_family_specs("focal"), check=_etf_check, inits=4,
    tolerances={"objective": "reference", "gram_W": "reference", "gram_M": "reference"}, gtol=_GTOL)

#: The claims of this module, for the scorecard.
CLAIMS = (LABEL_SMOOTHING_ETF, FOCAL_ETF)
