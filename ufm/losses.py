r"""The loss registry: every per-sample loss :math:`\ell(z, y)` of ufm, in one place.

Every problem family (:mod:`ufm.objectives`, :mod:`ufm.deep`, :mod:`ufm.mixup`, :mod:`ufm.vicinity`), the Flax
networks (:mod:`ufm.networks`) and the theory dispatch (:func:`ufm.theory.predict`) take the loss from here by
name; an unknown name is a ``ValueError`` listing the registered ones. Adding a loss is one :func:`register`
call in one module (and its tests).

Conventions: logits ``z`` and targets ``y`` have the class axis last (``(..., K)``, as optax's losses); targets
may be soft (label smoothing; mixup's convex combinations of one-hot vectors). The built-in losses are

* ``"ce"``: softmax cross-entropy :math:`\ell(z, y) = -\sum_k y_k \log\mathrm{softmax}(z)_k`
  (Zhu et al. 2021, arXiv 2105.02375, eq. (2)); :func:`optax.softmax_cross_entropy`;
* ``"mse"``: :math:`\ell(z, y) = \tfrac12\|z - y\|_2^2` (Zhou et al. 2022, arXiv 2203.01238, eq. (2);
  :func:`optax.squared_error` is :math:`(z - y)^2` per entry, hence the 1/2);
* ``"label_smoothing"`` (parameter ``alpha``), ``"focal"`` (``gamma``), ``"rescaled_mse"`` (``kappa``, ``M``): the
  loss family of Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu (NeurIPS 2022, "Are All Losses Created Equal? A Neural Collapse
  Perspective", arXiv 2210.02192), defined in :mod:`ufm.loss_family`. A parametrised loss lists its
  :class:`LossParam` s in ``Loss.params``; ``per_sample(z, y)`` uses their defaults and
  ``per_sample(z, y, **values)`` takes array values (traceable, so ``jax.vmap`` sweeps them;
  :class:`ufm.loss_problem.LossProblem` holds them as array leaves).
"""

from collections.abc import Callable
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

__all__ = ["Loss", "LossParam", "get", "mean", "mixed", "names", "register", "registry"]


class LossParam(NamedTuple):
  """One scalar parameter of a parametrised loss: its name (a keyword of ``per_sample``), default value, allowed
  range as :func:`ufm.validate.check_real` keywords (``lo``, ``hi``, ``lo_open``, ``hi_open``) and a description."""
  name: str
  default: float
  bounds: dict
  description: str


class Loss(NamedTuple):
  """One registered loss.

  Attributes:
    name: the name problems and networks use (``loss="ce"``).
    per_sample: ``(logits (..., K), targets (..., K), **params) -> (...)``, the loss of each sample; pure, jittable;
      every parameter keyword has its default.
    description: one line for ``--help`` and error messages.
    source: the paper that defines it in the UFM (authors, year, arXiv id).
    params: the loss's :class:`LossParam` s (empty for ``"ce"`` and ``"mse"``).
  """
  name: str
  per_sample: Callable[..., jax.Array]
  description: str
  source: str
  params: tuple = ()


_REGISTRY: dict[str, Loss] = {}

#: Read-only view of the registered losses, by name.
registry = MappingProxyType(_REGISTRY)


def register(loss: Loss, *, replace: bool = False) -> Loss:
  """Adds ``loss`` to the registry (``ValueError`` if the name is taken and ``replace`` is false)."""
  if not isinstance(loss, Loss):
    raise ValueError(f"loss = {loss!r} is not a ufm.losses.Loss")
  if not loss.name or not loss.name.isidentifier():
    raise ValueError(f"Loss.name = {loss.name!r} is not a valid name; allowed: a Python identifier")
  if loss.name in _REGISTRY and not replace:
    raise ValueError(f"a loss named {loss.name!r} is already registered (pass replace=True to replace it)")
  _REGISTRY[loss.name] = loss
  return loss


def names() -> tuple[str, ...]:
  """The registered loss names, in registration order."""
  return tuple(_REGISTRY)


def get(name) -> Loss:
  """The registered :class:`Loss` called ``name``; ``ValueError`` naming the allowed values otherwise."""
  if not isinstance(name, str) or name not in _REGISTRY:
    raise ValueError(f"loss = {name!r} is not supported; allowed values: {', '.join(_REGISTRY)}")
  return _REGISTRY[name]


def mean(name: str, Z_KxN: ArrayLike, Y_KxN: ArrayLike) -> jax.Array:
  r""":math:`\frac1N\sum_{i=1}^N \ell(z_i, y_i)` for logits and targets stored as columns (``K x N``, the UFM's
  layout)."""
  return jnp.mean(get(name).per_sample(jnp.asarray(Z_KxN).T, jnp.asarray(Y_KxN).T))


def mixed(name: str, Z_KxM: ArrayLike, Y1_KxM: ArrayLike, Y2_KxM: ArrayLike, lam_M: ArrayLike) -> jax.Array:
  r"""The mixup loss per column, :math:`\lambda\,\ell(z, y_1) + (1-\lambda)\,\ell(z, y_2)` (``(M,)``; Zhang et
  al. 2018, arXiv 1710.09412; Fisher, Meng & Papyan 2024, arXiv 2402.06171). For CE it equals
  :math:`\ell(z, \lambda y_1 + (1-\lambda) y_2)` (CE is linear in the target); for MSE it does not (they differ by
  the constant :math:`\tfrac12\lambda(1-\lambda)\|y_1-y_2\|^2`), so the two terms are kept apart."""
  f = get(name).per_sample
  Z_KxM, Y1_KxM, Y2_KxM = jnp.asarray(Z_KxM), jnp.asarray(Y1_KxM), jnp.asarray(Y2_KxM)
  return lam_M * f(Z_KxM.T, Y1_KxM.T) + (1 - lam_M) * f(Z_KxM.T, Y2_KxM.T)


def _ce(logits, targets):
  return optax.softmax_cross_entropy(logits, targets)


def _mse(logits, targets):
  return 0.5 * jnp.sum(optax.squared_error(logits, targets), axis=-1)


register(Loss("ce", _ce, "softmax cross-entropy -sum_k y_k log softmax(z)_k",
              "Zhu, Ding, Zhou, Li, You, Sulam, Qu 2021, arXiv 2105.02375"))
register(Loss("mse", _mse, "squared error 0.5 ||z - y||^2",
              "Zhou, Li, Ding, You, Qu, Zhu 2022, arXiv 2203.01238"))


# The parametrised family (label smoothing, focal, rescaled MSE) registers itself here, so that every problem family
# and the CLI see it as soon as the registry is imported.
from ufm import loss_family as _loss_family  # noqa: E402,F401  (import for its registrations)
