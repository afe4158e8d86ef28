"""ufm: the unconstrained features model of neural collapse, in JAX.

Public modules: :mod:`ufm.problem`, :mod:`ufm.objectives`, :mod:`ufm.solvers`,
:mod:`ufm.metrics`, :mod:`ufm.theory`, :mod:`ufm.sweep`, :mod:`ufm.deep` (the deep linear UFM),
:mod:`ufm.convex` (the convex reference of the imbalanced CE-UFM, SELI Grams, minority collapse), :mod:`ufm.mixup`
(input- and manifold-mixup UFMs), :mod:`ufm.spherical` (the spherical temperature-scaled UFM, any K and d),
:mod:`ufm.geometry` (softmax codes, minimal-energy configurations, fixed classifiers), :mod:`ufm.tiled` (the metrics
in memory linear in K), :mod:`ufm.networks` and :mod:`ufm.data` (Flax networks on real data, measured beside the
UFM), :mod:`ufm.testing` (hypothesis strategies, the tolerance table) and :mod:`ufm.claims` (theory claims as
executable checks). The most used names are re-exported here.
"""

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

__version__ = "0.1.0"

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
