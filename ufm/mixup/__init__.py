r"""Mixup in the unconstrained features model (Fisher, Meng, Papyan, ICLR 2024, arXiv 2402.06171).

* :mod:`ufm.mixup.problems`: the input-mixup and manifold-mixup problems (the objectives, the Beta(α, α)
  quadrature, measurements on the plane of two classifiers);
* :mod:`ufm.mixup.sgd`: the mini-batch solver :func:`mixup_sgd` (stochastic pairs and mixing weights).

Closed forms: :mod:`ufm.theory` (``mixup_optimal_feature``, ``mixup_confidence``, ...). Every public name of the
two modules is re-exported here.
"""

from ufm.mixup import problems, sgd
from ufm.mixup.problems import *  # noqa: F403  (re-exports, listed in problems.__all__)
from ufm.mixup.sgd import *  # noqa: F403

__all__ = sorted(problems.__all__ + sgd.__all__)
