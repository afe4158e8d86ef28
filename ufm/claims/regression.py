r"""Claims on neural regression collapse in the UFM, and the strategy of its problems.

Claims on neural regression collapse in the UFM (Andriopoulos, Dong, Guo, Zhao, Ross 2024, arXiv 2409.04180;
closed form derived in ``ufm/theory/derivations.md`` §13), and the hypothesis strategy of its problems.

A regression problem is described by :class:`RegressionSpec`, a :class:`ufm.testing.ProblemSpec` whose ``counts``
field holds ``(n, N)`` (target dimension, samples); the targets are fixed by the shape
(:func:`ufm.regression.random_targets` with standard deviations ``1, 1/2, ..., 1/n``, key
``fold_in(key(0), 1000 n + N)``: the claim runner solves all problems of one shape with one target set, the
weight decays and the initialisation, ``seed``, vary); ``loss`` is ``"mse"``. Weight decays: :math:`\lambda_W, \lambda_H`
log-uniform in [1e-3, 1] with every target direction at least 10% (in :math:`\sqrt\gamma/\sqrt{\sigma_i}`) from its
threshold :math:`\sigma_i = \gamma = N\lambda_W\lambda_H`, where the minimiser is degenerate.

Storage: :meth:`RegressionSpec.to_json` records ``"family": "regression"`` and the spec type is registered
(:func:`ufm.testing.register_spec_type`), so a stored counterexample replays as the same regression problem.
"""

import math

import jax
import numpy as np
from hypothesis import strategies as st

from ufm import regression
from ufm.claims.core import Claim
from ufm.testing import ProblemSpec, register_spec_type, rel_error

__all__ = ["CLAIMS", "NRC_CLOSED_FORM", "RegressionSpec", "regression_specs"]

_MARGIN = 0.1
_GTOL = 1e-12


class RegressionSpec(ProblemSpec):
  """A :class:`ufm.testing.ProblemSpec` describing a :class:`ufm.regression.RegressionProblem`: ``counts = (n, N)``
  (the targets are fixed by them), ``d``, the weight decays, ``bias``, ``seed`` (initialisation) and
  ``init_scale``."""
  __slots__ = ()
  FAMILY = "regression"

  K = property(lambda self: self.counts[0])
  N = property(lambda self: self.counts[1])

  @property
  def shape_key(self) -> tuple:
    """``("regression", (n, N), d, bias)``: one compilation each."""
    return ("regression", tuple(self.counts), self.d, self.bias)

  def targets(self):
    n, N = self.counts
    key = jax.random.fold_in(jax.random.key(0), 1000 * n + N)
    return regression.random_targets(key, n, N)

  def problem(self, dtype=None):
    """The validated :class:`ufm.regression.RegressionProblem`."""
    return regression.make_regression_problem(self.targets(), d=self.d, lam_W=self.lam_W, lam_H=self.lam_H,
                                              lam_b=self.lam_b, bias=self.bias, dtype=dtype)

  def to_json(self) -> dict:
    """:meth:`ufm.testing.ProblemSpec.to_json` with ``"family": "regression"``."""
    return {**super().to_json(), "family": self.FAMILY}

  @classmethod
  def from_json(cls, obj) -> "RegressionSpec":
    """Parses :meth:`to_json`'s output; ``ValueError`` naming the field otherwise (before any solve)."""
    if not isinstance(obj, dict):
      raise ValueError(f"a problem description must be a JSON object, got {type(obj).__name__}")
    return super().from_json({k: v for k, v in obj.items() if k != "family"})

  def __str__(self) -> str:
    return (f"regression, n={self.counts[0]}, N={self.counts[1]}, d={self.d}, {'bias' if self.bias else 'no bias'}, "
            f"lam_W={self.lam_W:.6g}, lam_H={self.lam_H:.6g}, seed={self.seed}, init_scale={self.init_scale:g}")


def _off_thresholds(spec: RegressionSpec) -> bool:
  Y = np.asarray(spec.targets(), np.float64)
  Sigma = regression.target_covariance(Y, centred=spec.bias)
  sig = np.linalg.eigvalsh(np.asarray(Sigma))
  gamma = spec.N * spec.lam_W * spec.lam_H
  return bool(np.all(np.abs(np.sqrt(gamma / sig) - 1) > _MARGIN) and gamma < sig.max() * (1 - _MARGIN))


register_spec_type(RegressionSpec)


def regression_specs(*, shapes=((2, 8, 3), (3, 12, 5)), bias=(True, False)) -> st.SearchStrategy:
  """Strategy of :class:`RegressionSpec`: ``(n, N, d)`` from ``shapes`` (``d > n``: room for the features to leave
  the target subspace), weight decays log-uniform in [1e-3, 1], at least one target direction alive and every one
  10% from its threshold, ``init_scale`` in [0.1, 1]."""
  log_lam = st.floats(math.log(1e-3), 0.0)

  @st.composite
  def draw(draw_):
    n, N, d = draw_(st.sampled_from(shapes))
    return RegressionSpec(counts=(n, N), d=d, lam_W=math.exp(draw_(log_lam)), lam_H=math.exp(draw_(log_lam)),
                          lam_b=0.0, loss="mse", bias=draw_(st.sampled_from(bias)),
                          seed=draw_(st.integers(0, 2**32 - 1)),
                          init_scale=math.exp(draw_(st.floats(math.log(0.1), 0.0))))

  return draw().filter(_off_thresholds)


def _nrc_check(problem, sol, pred):
  W, H = (np.asarray(x, np.float64) for x in (sol.params.W, sol.params.H))
  gamma = problem.N * float(problem.lam_W) * float(problem.lam_H)
  m = regression.nrc_metrics(type(sol.params)(W=W, H=H, b=np.asarray(sol.params.b)), problem, gamma)
  return {"objective": rel_error(sol.objective, pred.objective), "gram_W": rel_error(W @ W.T, pred.gram_W),
          "nrc": max(float(v) for v in m.values())}


NRC_CLOSED_FORM = Claim(
    name="nrc_closed_form",
    source="Andriopoulos, Dong, Guo, Zhao, Ross 2024 (arXiv 2409.04180), UFM theorem of Sec. 4; closed form derived "
           "in derivations §13 (ufm.theory.regression_minimiser)",
    statement="Regression UFM, lam_W, lam_H > 0, d > n: at the global minimiser NRC1 = NRC2 = NRC3 = 0 and "
              "W W^T = sqrt(N lam_H/lam_W) (Sigma^1/2 - sqrt(N lam_W lam_H) I)_+ (Sigma: target covariance, the "
              "second moment without a bias).",
    problems=regression_specs(), check=_nrc_check,
    tolerances={"objective": "reference", "gram_W": "reference", "nrc": "reference_metric"}, gtol=_GTOL)

#: The claims of this module, for the scorecard.
CLAIMS = (NRC_CLOSED_FORM,)
