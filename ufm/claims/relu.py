r"""Claims on deep neural collapse in the deep UFM with ReLU layers.

Claims on the deep UFM with ReLU layers (:mod:`ufm.relu_deep`): deep neural collapse (DNC) is optimal for
binary classification (Súkeník, Mondelli, Lampert 2023, arXiv 2305.13165), and is not beyond two layers and two
classes (Súkeník, Mondelli, Lampert 2024, arXiv 2405.14468). The expected side is the best DNC value
(:func:`ufm.theory.relu_dnc`, derivations §14).

Problems (:func:`relu_specs`): balanced counts with ``n`` in {1, 2}, widths ``2K`` (binary; at width ``K`` every
start can stop at a worse local minimum) or ``K`` (multi-class), ``lam_W = lam_H`` log-uniform in
[3e-4, 3e-3] (where the DNC scale is away from its zero threshold), the depth ``L`` carried by the spec's class
(:class:`ReLUSpec` subclasses made by :func:`relu_spec_class`). The check takes the best of the claim's starts.

Storage: a spec is stored as :meth:`ufm.testing.ProblemSpec.to_json`, which does not record the subclass, so a stored
counterexample of these claims would replay as a plain problem; run them without a ``ClaimStore`` (as the tests do).
"""

import math

import numpy as np
from hypothesis import strategies as st

from ufm import relu_deep
from ufm.claims.core import Claim
from ufm.testing import ProblemSpec, rel_error

__all__ = ["CLAIMS", "DNC_BINARY", "DNC_MULTICLASS", "ReLUSpec", "relu_spec_class", "relu_specs"]


class ReLUSpec(ProblemSpec):
  """A :class:`ufm.testing.ProblemSpec` describing a :class:`ufm.relu_deep.ReLUDeepProblem` with ``L = DEPTH``
  layers of width ``d`` (the subclass fixes ``DEPTH``; see :func:`relu_spec_class`)."""
  __slots__ = ()
  DEPTH = 2

  @property
  def shape_key(self) -> tuple:
    return ("relu_deep", self.DEPTH, tuple(self.counts), self.d)

  def problem(self, dtype=None):
    return relu_deep.make_relu_problem(tuple(self.counts), lam_W=self.lam_W, lam_H=self.lam_H, d=self.d,
                                       depth=self.DEPTH, loss=self.loss, dtype=dtype)

  def __str__(self) -> str:
    return f"relu L={self.DEPTH}, " + super().__str__()


_CLASSES: dict[int, type] = {}


def relu_spec_class(L: int) -> type:
  """The :class:`ReLUSpec` subclass with ``DEPTH = L`` (one per depth, cached)."""
  if L not in _CLASSES:
    _CLASSES[L] = type(f"ReLUSpecL{L}", (ReLUSpec,), {"__slots__": (), "DEPTH": L})
  return _CLASSES[L]


def relu_specs(*, K=(2,), L=(2, 3), n=(1, 2), lam=(3e-4, 3e-3), width_factor: int = 1) -> st.SearchStrategy:
  """Strategy of :class:`ReLUSpec`: ``K`` classes of ``n`` samples, ``L`` layers of width ``width_factor * K``,
  ``lam_W = lam_H`` log-uniform in ``lam``, initial scale 0.3."""

  @st.composite
  def draw(d):
    k, depth, m = d(st.sampled_from(K)), d(st.sampled_from(L)), d(st.sampled_from(n))
    lam_ = math.exp(d(st.floats(math.log(lam[0]), math.log(lam[1]))))
    return relu_spec_class(depth)(counts=(m,) * k, d=width_factor * k, lam_W=lam_, lam_H=lam_, loss="mse", bias=False,
                                  seed=d(st.integers(0, 2**32 - 1)), init_scale=0.3)

  return draw()


def _dnc_check(problem, sol, pred):
  f = np.asarray(sol.objective, np.float64).ravel()
  best = float(np.min(f))
  return {"objective": rel_error(best, pred.objective), "below_dnc": max(0.0, (pred.objective - best) / pred.objective)}


_TOL = {"objective": "reference", "below_dnc": "reference"}
# L-BFGS on the ReLU objective (kinks where a unit switches) stalls near |grad| 1e-8..1e-10 from some starts; an
# objective is quadratic in the distance to a minimiser, so |grad| <= 1e-6 still fixes it far below the 1e-8 bound.
_RELU_GTOL = 1e-6

DNC_BINARY = Claim(
    name="relu_dnc_binary",
    source="Súkeník, Mondelli, Lampert 2023 (arXiv 2305.13165), main theorem (binary DUFM); DNC value: "
           "derivations §14",
    statement="MSE DUFM with ReLU, K = 2, L in {2, 3}, widths 4: the global minimum (best of 8 starts) equals the "
              "best DNC configuration's objective; nothing lies below it. (At widths K = 2 all 8 starts can end "
              "above it, e.g. n = 1, L = 3, lam = 1.22e-3: a landscape effect, none below.)",
    problems=relu_specs(K=(2,), L=(2, 3), width_factor=2), check=_dnc_check, tolerances=_TOL, inits=8, max_steps=5000,
    gtol=_RELU_GTOL)

DNC_MULTICLASS = Claim(
    name="relu_dnc_multiclass",
    source="deep neural collapse as the global optimum of the multi-class DUFM (the extension that Súkeník, Mondelli, "
           "Lampert 2024, arXiv 2405.14468, refute); DNC value: derivations §14",
    statement="MSE DUFM with ReLU, K = 6, L = 4: no solution lies below the best DNC configuration (best of 8 "
              "starts).",
    problems=relu_specs(K=(6,), L=(4,), n=(2,), lam=(1e-3, 1e-3)), check=_dnc_check, tolerances=_TOL, inits=8,
    max_steps=5000, expected="refuted",
    counterexamples=(relu_spec_class(4)(counts=(2,) * 6, d=6, lam_W=1e-3, lam_H=1e-3, loss="mse", bias=False, seed=0,
                                        init_scale=0.3),),
    refuted_because="Súkeník et al. 2024 (arXiv 2405.14468): beyond two layers and two classes low-rank solutions "
                    "beat DNC; measured here: K = 6, L = 4, n = 2, lam = 1e-3, the best of 8 float64 L-BFGS starts is "
                    "4.9% below the DNC value (0.016360 vs 0.017207), class means of H_L of rank < 6.")

#: The claims of this module, for the scorecard.
CLAIMS = (DNC_BINARY, DNC_MULTICLASS)
