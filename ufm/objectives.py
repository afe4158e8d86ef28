r"""UFM objectives: pure functions ``(params, problem) -> scalar``.

One normalisation everywhere (Zhu et al. 2021, arXiv 2105.02375; Zhou et al.
2022, arXiv 2203.01238 for MSE):

.. math::
   f(W, H, b) = \frac1N \sum_{i=1}^N \ell(W h_i + b, y_i)
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
   + \frac{\lambda_b}{2}\|b\|_2^2,

with :math:`\ell` the loss named by the static ``problem.loss`` in the registry :mod:`ufm.losses`
(:math:`\ell_{CE}(z, y) = -\log \mathrm{softmax}(z)_{y}`, :math:`\ell_{MSE}(z, y) = \tfrac12\|z - y\|_2^2`, or
any registered loss). Without a bias the ``b`` terms are absent (``params.b`` is ignored).
"""

import jax
import jax.typing
import jax.numpy as jnp
import optax

from ufm import losses
from ufm.problem import Params, Problem

__all__ = ["ce_loss", "logits", "mse_loss", "objective", "regulariser"]


def logits(params: Params, problem: Problem) -> jax.typing.ArrayLike:
  r"""Logits :math:`Z = W H + b \mathbf 1^\top` (``K x N``); ``b`` only when ``problem.bias``."""
  Z_KxN = params.W @ params.H
  if problem.bias:
    Z_KxN = Z_KxN + params.b[:, None]
  return Z_KxN


def regulariser(params: Params, problem: Problem) -> jax.typing.ArrayLike:
  r""":math:`\frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2 (+ \frac{\lambda_b}{2}\|b\|^2)`."""
  r = 0.5 * (problem.lam_W * jnp.sum(params.W**2) + problem.lam_H * jnp.sum(params.H**2))
  if problem.bias:
    r = r + 0.5 * problem.lam_b * jnp.sum(params.b**2)
  return r


def ce_loss(params: Params, problem: Problem) -> jax.typing.ArrayLike:
  r"""Regularised softmax cross-entropy UFM objective (Zhu et al. 2021, arXiv 2105.02375).

  .. math::
     f = \frac1N \sum_{i} -\log\frac{e^{z_{y_i i}}}{\sum_k e^{z_{k i}}}
         + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
         + \frac{\lambda_b}{2}\|b\|^2, \qquad Z = W H + b\mathbf 1^\top.

  Uses :func:`optax.softmax_cross_entropy` (per-sample loss, averaged over ``N``).
  """
  Z_KxN = logits(params, problem)
  ce = optax.softmax_cross_entropy(Z_KxN.T, problem.Y.T).mean()
  return ce + regulariser(params, problem)


def mse_loss(params: Params, problem: Problem) -> jax.typing.ArrayLike:
  r"""Regularised MSE UFM objective (Zhou et al. 2022, arXiv 2203.01238).

  .. math::
     f = \frac{1}{2N}\|W H + b\mathbf 1^\top - Y\|_F^2
         + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2
         + \frac{\lambda_b}{2}\|b\|^2 .

  This is :math:`\frac1N\sum_i \ell_{MSE}` with :math:`\ell_{MSE}(z,y) = \frac12\|z-y\|^2`
  (:func:`optax.squared_error` is :math:`\|z-y\|^2` per entry, hence the 1/2).
  """
  Z_KxN = logits(params, problem)
  mse = 0.5 * jnp.sum(optax.squared_error(Z_KxN, problem.Y)) / problem.N
  return mse + regulariser(params, problem)


def objective(params: Params, problem: Problem) -> jax.typing.ArrayLike:
  r""":math:`\frac1N\sum_i \ell(Wh_i + b, y_i)` + the weight decays, with :math:`\ell` the registered loss
  ``problem.loss`` (:func:`ufm.losses.mean`; ``"ce"`` equals :func:`ce_loss`, ``"mse"`` :func:`mse_loss`)."""
  return losses.mean(problem.loss, logits(params, problem), problem.Y) + regulariser(params, problem)
