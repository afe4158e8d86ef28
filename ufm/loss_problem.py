r"""The plain UFM with a parametrised loss whose parameters are array leaves.

The plain UFM with a parametrised loss of :mod:`ufm.loss_family` (label smoothing, focal, rescaled MSE), the
loss parameters as array leaves (Zhou, Yu, Ding, Wang, Zhu, Sun, Zhu 2022, arXiv 2210.02192).

:class:`LossProblem` follows the :class:`ufm.problem.Family` protocol, so every solver, :func:`ufm.verdict.multistart`
and :func:`ufm.sweep.sweep` (axes ``alpha``, ``gamma``, ``kappa``, ``M``) take it; ``jax.vmap`` over a leaf sweeps a
loss parameter without recompiling.
"""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm import losses
from ufm.loss_family import LOSS_PARAMS
from ufm.problem import FamilyBase, Params, check_solve_memory, make_labels
from ufm.validate import cast_checked, check_counts, check_int, check_loss_bias_dtype, check_real

__all__ = ["LossProblem", "loss_params", "make_loss_problem"]


def loss_params(loss: str, dtype=None, **values) -> dict:
  """The parameters of the registered ``loss`` as validated arrays: ``values`` where given, the defaults otherwise
  (``ValueError`` naming the parameter and its allowed range; a parameter the loss does not have is refused)."""
  spec = losses.get(loss)
  names = {p.name for p in spec.params}
  for k in values:
    if k not in names:
      allowed = ", ".join(sorted(names)) or "none"
      raise ValueError(f"{k} is not a parameter of loss = {loss!r}; allowed: {allowed}")
  dtype = dtype or jnp.result_type(float)
  out = {}
  for p in spec.params:
    v = check_real(p.name, values.get(p.name, p.default), **p.bounds)
    out[p.name] = cast_checked(p.name, v, dtype)
  return out


@struct.dataclass
class LossProblem(FamilyBase):
  r"""The plain UFM (:mod:`ufm.objectives`) with a parametrised loss whose parameters are array leaves.

  .. math:: f(W, H, b) = \frac1N\sum_i \ell_\theta(Wh_i + b, y_i) + \frac{\lambda_W}{2}\|W\|_F^2
     + \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2,

  :math:`\theta` = the loss's parameters (``alpha``, ``gamma``, or ``kappa`` and ``M``; the leaves of the other
  losses hold their defaults and are not in ``SCALAR_LEAVES``). ``FAMILY`` is ``"plain"``: the closed forms of
  :mod:`ufm.theory.losses` apply to it and to a :class:`ufm.problem.Problem` with the same loss (default parameters).
  Parameters are :class:`ufm.problem.Params`.
  """
  Y: Any
  lam_W: Any
  lam_H: Any
  lam_b: Any
  alpha: Any
  gamma: Any
  kappa: Any
  M: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  d: int = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="label_smoothing")
  bias: bool = struct.field(pytree_node=False, default=False)

  FAMILY: ClassVar[str] = "plain"

  @property
  def SCALAR_LEAVES(self) -> tuple[str, ...]:  # noqa: N802  (the protocol's name)
    """The weight decays and the parameters of ``self.loss``."""
    return ("lam_W", "lam_H", "lam_b") + tuple(p.name for p in losses.get(self.loss).params)

  def params_of_loss(self) -> dict:
    """``{name: leaf}`` for the parameters of ``self.loss``."""
    return {p.name: getattr(self, p.name) for p in losses.get(self.loss).params}

  def value(self, params: Params) -> jax.Array:
    """The objective of the class docstring."""
    Z_KxN = params.W @ params.H
    r = 0.5 * (self.lam_W * jnp.sum(params.W**2) + self.lam_H * jnp.sum(params.H**2))
    if self.bias:
      Z_KxN = Z_KxN + params.b[:, None]
      r = r + 0.5 * self.lam_b * jnp.sum(params.b**2)
    per = losses.get(self.loss).per_sample(Z_KxN.T, self.Y.T, **self.params_of_loss())
    return jnp.mean(per) + r

  def init(self, key: jax.Array, init_scale) -> Params:
    r"""Gaussian :math:`W_{kj}, H_{ji} \sim \mathcal N(0, s^2)`, ``b = 0``, with the keys of
    :func:`ufm.problem.init_params` (the same initial point as a :class:`ufm.problem.Problem`)."""
    kW, kH = jax.random.split(key)
    dt = self.dtype
    s = jnp.asarray(init_scale, dt)
    return Params(W=s * jax.random.normal(kW, (self.K, self.d), dt), H=s * jax.random.normal(kH, (self.d, self.N), dt),
                  b=jnp.zeros((self.K,), dt))


def make_loss_problem(counts, *, d, lam_W, lam_H, lam_b=0.0, loss="label_smoothing", bias=False, dtype=None,
                      **params) -> LossProblem:
  r"""Builds and validates a :class:`LossProblem`; ``params`` are the loss's parameters (``alpha=``, ``gamma=``,
  ``kappa=``, ``M=``; defaults of :mod:`ufm.loss_family` when omitted; scalars or arrays for a batch).

  Raises:
    ValueError: naming the parameter and its allowed range (``0 <= alpha < 1``, ``gamma >= 0``, ``kappa > 0``,
      ``M > 0``, weight decays ``>= 0``), a parameter the loss does not have, or ``loss`` without parameters
      (use :func:`ufm.problem.make_problem` for ``"ce"`` and ``"mse"``).
  """
  counts = check_counts(counts)
  d = check_int("d", d, lo=1)
  dtype = check_loss_bias_dtype(loss, bias, dtype)
  if not losses.get(loss).params:
    with_params = ", ".join(k for k, v in losses.registry.items() if v.params)
    raise ValueError(f"loss = {loss!r} has no parameters; allowed: {with_params} (ufm.make_problem for the others)")
  check_solve_memory(len(counts), sum(counts), d, dtype)
  lams = {name: check_real(name, v, lo=0.0) for name, v in (("lam_W", lam_W), ("lam_H", lam_H), ("lam_b", lam_b))}
  if not bias and np.any(lams["lam_b"] != 0):
    raise ValueError(f"lam_b = {lams['lam_b'].tolist()!r} has no effect without a bias; allowed: lam_b = 0 "
                     "when bias=False (or set bias=True)")
  theta = {name: cast_checked(name, np.asarray(p.default), dtype) for name, (_, p) in LOSS_PARAMS.items()}
  theta.update(loss_params(loss, dtype, **params))
  return LossProblem(Y=make_labels(counts, dtype), counts=counts, d=d, loss=loss, bias=bool(bias),
                     **{k: cast_checked(k, v, dtype) for k, v in lams.items()}, **theta)
