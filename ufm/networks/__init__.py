r"""Real networks in Flax (``flax.nnx``): neural collapse measured in trained networks, beside the UFM.

The unconstrained features model (UFM) treats the penultimate features :math:`h_i` of a network as free
variables. This package trains the network whose last layers the UFM models and measures the same
quantities on it:

* :mod:`ufm.networks.models`: the models. :class:`MLP` (``depth`` hidden ReLU layers of ``width`` units) and
  :class:`CNN` (two 3x3 convolutions and a dense layer), each ending in a linear classifier :math:`z = W h + b`
  (``W`` ``K x d``, the UFM's orientation), optionally a *fixed* simplex-ETF classifier (Fisher et al. 2024,
  arXiv 2402.06171; Zhu et al. 2021, arXiv 2105.02375, Sec. 5) and optionally no bias; :class:`NetSpec`
  (:func:`mlp`, :func:`cnn`), :func:`build`, and :func:`features` (every hidden layer, logits, classifier).
* :mod:`ufm.networks.training`: :func:`train`, one pure jitted program (vmapped over a 1-D array of keys) that
  minimises the UFM-normalised objective -- the loss ``config.loss`` of :mod:`ufm.losses` plus weight decays
  ``lam_W`` (classifier), ``weight_decay`` (hidden layers) and an optional feature decay ``lam_H`` -- with SGD
  (heavy ball) or Adam, label smoothing and mixup, measuring at a log-spaced schedule of epochs
  (:func:`log_epochs`); :class:`TrainHparams` (:func:`train_hparams`), :class:`TrainConfig`
  (:func:`train_config`), :class:`TrainResult`, :class:`NetTrace`.
* :mod:`ufm.networks.measurement`: :func:`measure` (every NC metric of anyone's features, labels and classifier;
  :data:`LAYER_METRICS` on a hidden layer) and :func:`compare_with_ufm` (the UFM's predicted geometry for the
  network's ``K``, ``n_k`` and weight decays beside the measured one: :class:`Comparison`).

Unlike the UFM solvers, this package imports :mod:`ufm.theory` (for the fixed ETF classifier and for the
comparison); no training quantity depends on a prediction. Every public name of the three modules is re-exported
here.
"""

from ufm.networks import measurement, models, training
from ufm.networks.measurement import *  # noqa: F403  (re-exports, listed in measurement.__all__)
from ufm.networks.models import *  # noqa: F403
from ufm.networks.training import *  # noqa: F403

__all__ = sorted(models.__all__ + training.__all__ + measurement.__all__)
