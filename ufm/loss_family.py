r"""The loss family of Zhou et al. 2022: label smoothing, focal loss and the rescaled MSE.

The loss family of Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu (NeurIPS 2022, "Are All Losses Created Equal? A Neural
Collapse Perspective", arXiv 2210.02192) in the UFM: label smoothing, focal loss and the rescaled MSE beside CE and MSE.

Per-sample losses (logits ``z``, targets ``y`` with the class axis last; ``p = softmax(z)``), registered in
:mod:`ufm.losses` under these names, each with its parameters (:class:`ufm.losses.LossParam`):

* ``"label_smoothing"``, ``alpha`` in ``[0, 1)`` (default 0.1; Szegedy et al. 2016, arXiv 1512.00567; the
  smoothing of Zhou et al.'s code ``Losses/label_smoothing_loss.py``):
  :math:`\ell_{LS}(z, y) = \mathrm{CE}(z, (1-\alpha)y + \tfrac{\alpha}{K}\mathbf 1)
  = (1-\alpha)\,\mathrm{CE}(z, y) - \tfrac{\alpha}{K}\sum_j \log p_j`;
* ``"focal"``, ``gamma >= 0`` (default 2; Lin et al. 2017, arXiv 1708.02002):
  :math:`\ell_{FL}(z, y) = -\sum_k y_k (1 - p_k)^\gamma \log p_k` (one-hot: :math:`-(1-p_y)^\gamma\log p_y`;
  ``gamma = 0`` is CE);
* ``"rescaled_mse"``, ``kappa > 0`` and ``M > 0`` (defaults 1, 1; Hui & Belkin 2021, arXiv 2006.07322):
  :math:`\ell(z, y) = \tfrac12\sum_k (1 + (\kappa - 1) y_k)(z_k - M y_k)^2`, i.e. for a one-hot ``y`` of class
  ``c``: :math:`\tfrac12[\kappa (z_c - M)^2 + \sum_{j\ne c} z_j^2]` (the 1/2 as in ``"mse"``, which is
  ``kappa = M = 1``).

``per_sample(z, y)`` uses the defaults (so every problem family, e.g. ``make_problem(..., loss="focal")``, can use the
losses as they are); :class:`ufm.loss_problem.LossProblem` is the plain UFM with the loss parameters as array leaves,
so one compiled solve serves every parameter value and ``jax.vmap`` (or :func:`ufm.sweep.sweep` on the axes
``alpha``, ``gamma``, ``kappa``, ``M``) sweeps them. Closed forms: :mod:`ufm.theory.losses`.

This module imports only :mod:`ufm.losses` (which imports it to register the losses).
"""

import jax
import jax.numpy as jnp
import optax

from ufm import losses

__all__ = ["LOSS_PARAMS", "SOURCE", "focal", "label_smoothing", "rescaled_mse"]

SOURCE = ("Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu 2022, arXiv 2210.02192 (NeurIPS 2022, 'Are All Losses Created "
          "Equal? A Neural Collapse Perspective')")


def label_smoothing(logits, targets, alpha=0.1):
  r"""Label-smoothed cross-entropy :math:`\mathrm{CE}(z, (1-\alpha)y + \frac{\alpha}{K}\mathbf 1)` per sample
  (Szegedy et al. 2016, arXiv 1512.00567; Zhou et al. 2022, arXiv 2210.02192)."""
  K = logits.shape[-1]
  return optax.softmax_cross_entropy(logits, (1 - alpha) * targets + alpha / K)


def focal(logits, targets, gamma=2.0):
  r"""Focal loss :math:`-\sum_k y_k(1-p_k)^\gamma\log p_k`, :math:`p = \mathrm{softmax}(z)` (Lin et al. 2017,
  arXiv 1708.02002; Zhou et al. 2022, arXiv 2210.02192). :math:`1 - p_k` is computed as ``-expm1(log p_k)``."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  one_minus_p = -jnp.expm1(logp)
  return -jnp.sum(targets * one_minus_p**gamma * logp, axis=-1)


def rescaled_mse(logits, targets, kappa=1.0, M=1.0):
  r"""Rescaled square loss :math:`\frac12\sum_k(1 + (\kappa-1)y_k)(z_k - My_k)^2` (Hui & Belkin 2021,
  arXiv 2006.07322; Zhou et al. 2022, arXiv 2210.02192); ``kappa = M = 1`` is ``"mse"``."""
  weight = 1 + (kappa - 1) * targets
  return 0.5 * jnp.sum(weight * (logits - M * targets) ** 2, axis=-1)


losses.register(losses.Loss(
    "label_smoothing", label_smoothing, "label smoothing: CE with targets (1 - alpha) y + alpha/K",
    SOURCE, (losses.LossParam("alpha", 0.1, dict(lo=0.0, hi=1.0, hi_open=True), "smoothing, 0 <= alpha < 1"),)))
losses.register(losses.Loss(
    "focal", focal, "focal loss -(1 - p_y)^gamma log p_y", SOURCE,
    (losses.LossParam("gamma", 2.0, dict(lo=0.0), "focusing parameter, gamma >= 0"),)))
losses.register(losses.Loss(
    "rescaled_mse", rescaled_mse, "rescaled MSE 0.5 [kappa (z_y - M)^2 + sum_{j != y} z_j^2]", SOURCE,
    (losses.LossParam("kappa", 1.0, dict(lo=0.0, lo_open=True), "weight of the true class, kappa > 0"),
     losses.LossParam("M", 1.0, dict(lo=0.0, lo_open=True), "target of the true class, M > 0"))))

#: Every loss parameter: name -> (the loss that uses it, its :class:`ufm.losses.LossParam`).
LOSS_PARAMS = {p.name: (name, p) for name in ("label_smoothing", "focal", "rescaled_mse")
               for p in losses.get(name).params}
