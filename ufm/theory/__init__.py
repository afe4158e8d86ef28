r"""Closed forms of the UFM literature: the *expected* side of every test, organised by problem family.

Modules:

* :mod:`ufm.theory.prediction`: :class:`Prediction`, :class:`NoClosedFormError`, and :func:`predict`, which looks up
  the closed form of a concrete problem by ``(problem.FAMILY, problem.loss)`` in a registry
  (:func:`register_prediction`, :func:`closed_forms`); a pair with no entry raises :class:`NoClosedFormError`.
* :mod:`ufm.theory.frames`: constructions: :func:`simplex_etf`, :func:`etf_gram`, :func:`etf_target`,
  :func:`orthogonal_frame`, :func:`random_orthonormal`, :func:`regular_polygon`, :func:`cross_polytope`.
* :mod:`ufm.theory.plain`: the plain UFM: balanced CE (:func:`ce_balanced`, :func:`collapse_threshold`), MSE with
  any counts (:func:`mse_minimiser`); registers ``plain/ce`` and ``plain/mse``.
* :mod:`ufm.theory.deep`: the deep linear UFM: MSE at any depth and counts (:func:`deep_mse_minimiser`,
  :func:`deep_mse_nearest_minimiser`, ...), the balanced CE candidates (:func:`deep_ce_etf`,
  :func:`deep_ce_block`); registers ``deep/mse`` and ``deep/ce``.
* :mod:`ufm.theory.losses`: the loss family (label smoothing, focal, rescaled MSE) in the balanced plain UFM
  (:func:`label_smoothing_etf`, :func:`focal_etf`, :func:`rescaled_mse_minimiser`); registers ``plain/<loss>``.
* :mod:`ufm.theory.regression`: neural regression collapse, the regression UFM's minimiser
  (:func:`regression_minimiser`); registers ``regression/mse``.
* :mod:`ufm.theory.relu`: the deep UFM with ReLU layers, the best deep-neural-collapse value (:func:`relu_dnc`);
  registers ``relu_deep/mse``.
* :mod:`ufm.theory.mixup`: the mixup UFM with a fixed ETF classifier (:func:`mixup_optimal_feature`, ...).
* :mod:`ufm.theory.vicinity`: the perturbation analysis of the vicinity UFM (:func:`vicinity_base_point`,
  :func:`vicinity_linearised_map`, :func:`contraction_map`).
* :mod:`ufm.theory.sphere`: the ``K > d + 1`` regime and the spherical UFM (Riesz energies, configuration
  metrics, :func:`spherical_ce_collapsed`).

Every name is also available as ``ufm.theory.<name>``. Every closed form is jittable (no sympy, no Python loops
over classes); :func:`predict` is the one Python-level entry point.

Theory never imports :mod:`ufm.solvers` (nor :mod:`ufm.sweep`, :mod:`ufm.networks` or the experiments): a
prediction must not be computed by the code it checks. It imports only :mod:`ufm.problem`, :mod:`ufm.losses`,
:mod:`ufm.validate` (and the construction :func:`ufm.deep.balanced_factorisation`).

Normalisation (all functions): the objective of :mod:`ufm.objectives`,
:math:`f = \frac1N\sum_i \ell(Wh_i + b, y_i) + \frac{\lambda_W}{2}\|W\|_F^2
+ \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2`, with
:math:`\ell_{MSE}(z,y) = \frac12\|z-y\|^2` (the vicinity module uses the paper's normalisation, see
:mod:`ufm.vicinity`).

Derivations are written out in the docstrings (those that go beyond the papers in :func:`mse_minimiser`,
:func:`ce_balanced`, :func:`deep_mse_minimiser`, :func:`mixup_optimal_feature`) and in
``ufm/theory/derivations.md``, cited as "derivations §1.3" (its section numbers).

Adding a closed form for a new family or loss: write ``fn(problem) -> Prediction`` (raising
:class:`NoClosedFormError` where it does not apply) and register it with
``register_prediction("family", "loss", fn)`` (or as a decorator).
"""

from ufm.theory import deep, frames, losses, mixup, plain, prediction, regression, relu, sphere, vicinity
from ufm.theory.deep import *  # noqa: F403  (re-exports, listed in each module's __all__)
from ufm.theory.frames import *  # noqa: F403
from ufm.theory.losses import *  # noqa: F403
from ufm.theory.mixup import *  # noqa: F403
from ufm.theory.plain import *  # noqa: F403
from ufm.theory.prediction import *  # noqa: F403
from ufm.theory.regression import *  # noqa: F403
from ufm.theory.relu import *  # noqa: F403
from ufm.theory.sphere import *  # noqa: F403
from ufm.theory.vicinity import *  # noqa: F403

__all__ = sorted({name for m in (prediction, frames, plain, vicinity, mixup, deep, sphere, losses, regression, relu) for name in m.__all__})
