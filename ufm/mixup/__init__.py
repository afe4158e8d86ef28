r"""Mixup in the unconstrained features model (Fisher, Meng, Papyan, ICLR 2024, arXiv 2402.06171).

* :mod:`ufm.mixup.problems`: the input-mixup and manifold-mixup problems (the objectives, the Beta(α, α)
  quadrature, measurements on the plane of two classifiers);
* :mod:`ufm.mixup.sgd`: the mini-batch solver :func:`mixup_sgd` (stochastic pairs and mixing weights).

Closed forms: :mod:`ufm.theory.mixup`. Every name is re-exported here.
"""

from ufm.mixup.problems import (GRIDS, InputMixupProblem, ManifoldMixupProblem, beta_quadrature, class_pairs,
                                input_as_plain_problem, make_input_mixup_problem, make_manifold_mixup_problem,
                                mixed_features, mse_mixup_features, plane_coordinates)
from ufm.mixup.sgd import MIXUP_SGD_STEPPER, MixupSGDState, mixup_sgd

__all__ = [
    "GRIDS",
    "InputMixupProblem",
    "ManifoldMixupProblem",
    "MixupSGDState",
    "MIXUP_SGD_STEPPER",
    "beta_quadrature",
    "class_pairs",
    "input_as_plain_problem",
    "make_input_mixup_problem",
    "make_manifold_mixup_problem",
    "mixed_features",
    "mixup_sgd",
    "mse_mixup_features",
    "plane_coordinates",
]
