"""ufm: the unconstrained features model of neural collapse, in JAX.

Public modules: :mod:`ufm.problem` (the problems and the ``Family`` protocol), :mod:`ufm.objectives`,
:mod:`ufm.losses` (the loss registry), :mod:`ufm.validate`, :mod:`ufm.solvers`, :mod:`ufm.metrics`,
:mod:`ufm.theory` (closed forms; the derivations are in ``ufm/theory/derivations.md``), :mod:`ufm.sweep`,
:mod:`ufm.deep` (the deep linear UFM), :mod:`ufm.convex` (the convex reference of the imbalanced CE-UFM, SELI Grams,
minority collapse), :mod:`ufm.mixup` (input- and manifold-mixup UFMs), :mod:`ufm.vicinity` (the perturbed, vicinal
UFM), :mod:`ufm.spherical` (the spherical temperature-scaled UFM, any K and d), :mod:`ufm.geometry` (softmax codes,
minimal-energy configurations, fixed classifiers), :mod:`ufm.tiled` (the metrics in memory linear in K),
:mod:`ufm.networks` and :mod:`ufm.data` (Flax networks on real data, measured beside the UFM), :mod:`ufm.testing`
(hypothesis strategies, the tolerance table) and :mod:`ufm.claims` (theory claims as executable checks).

The most used names are re-exported here. Everything is imported lazily (PEP 562): ``import ufm`` loads no
submodule, no JAX, no Flax and no hypothesis; ``ufm.make_problem`` or ``ufm.theory`` imports what it needs on first
use.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Submodules reachable as attributes of the package (``ufm.theory``), imported on first access.
_SUBMODULES = frozenset({
    "cache", "canonical", "claims", "cli", "conventions", "convex", "data", "deep", "geometry", "kernels", "losses",
    "loss_family", "loss_problem", "metrics", "mixup", "networks",
    "objectives", "problem", "regression", "relu_deep", "solvers", "specs", "spherical", "streaming", "sweep", "testing",
    "theory", "tiled", "validate", "verdict", "vicinity",
})

# Re-exported names: name -> the submodule that defines it.
_EXPORTS = {
    "Claim": "claims", "run_claim": "claims",
    "ce_loss": "objectives", "mse_loss": "objectives", "objective": "objectives",
    "Params": "problem", "Problem": "problem", "balanced_counts": "problem", "init_params": "problem",
    "long_tailed_counts": "problem", "make_labels": "problem", "make_problem": "problem", "step_counts": "problem",
    "GDHparams": "solvers", "LBFGSHparams": "solvers", "Solution": "solvers", "Trace": "solvers",
    "gd_hparams": "solvers", "gradient_descent": "solvers", "lbfgs_hparams": "solvers", "lbfgs_reference": "solvers",
    "SweepResult": "sweep",
    "NoClosedFormError": "theory", "Prediction": "theory", "predict": "theory",
}

__all__ = [
    "Claim",
    "GDHparams",
    "LBFGSHparams",
    "NoClosedFormError",
    "Params",
    "Prediction",
    "Problem",
    "Solution",
    "SweepResult",
    "Trace",
    "__version__",
    "balanced_counts",
    "ce_loss",
    "claims",
    "convex",
    "data",
    "deep",
    "gd_hparams",
    "geometry",
    "gradient_descent",
    "init_params",
    "lbfgs_hparams",
    "lbfgs_reference",
    "long_tailed_counts",
    "make_labels",
    "make_problem",
    "metrics",
    "mixup",
    "mse_loss",
    "networks",
    "objective",
    "objectives",
    "predict",
    "problem",
    "run_claim",
    "solvers",
    "spherical",
    "step_counts",
    "sweep",
    "testing",
    "theory",
    "tiled",
    "vicinity",
]


def __getattr__(name: str):
  """Imports a submodule or a re-exported name on first access (PEP 562) and caches it in the package."""
  if name in _SUBMODULES:
    value = importlib.import_module(f"{__name__}.{name}")
  elif name in _EXPORTS:
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  """The package's names, including those not imported yet."""
  return sorted(set(globals()) | set(__all__) | _SUBMODULES)


if TYPE_CHECKING:  # static type checkers and IDEs see the eager imports
  from ufm import (claims, convex, data, deep, geometry, metrics, mixup, networks, objectives, problem, solvers,
                   spherical, sweep, testing, theory, tiled, vicinity)
  from ufm.claims import Claim, run_claim
  from ufm.objectives import ce_loss, mse_loss, objective
  from ufm.problem import (Params, Problem, balanced_counts, init_params, long_tailed_counts, make_labels,
                           make_problem, step_counts)
  from ufm.solvers import (GDHparams, LBFGSHparams, Solution, Trace, gd_hparams, gradient_descent, lbfgs_hparams,
                           lbfgs_reference)
  from ufm.sweep import SweepResult
  from ufm.theory import NoClosedFormError, Prediction, predict
