r"""Mini-batch SGD / Adam for the mixup UFMs.

Pairs and :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` are drawn per step with a key carried in the
solver state; Polyak averaging; a :class:`ufm.solvers.Stepper` for chunked sweeps. The problems are those of :mod:`ufm.mixup.problems` (their ``sample_value``)."""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from ufm.problem import Params
from ufm.solvers import (MAX_STEPS, OPTIMIZERS, GDHparams, Plan, Solution, Stepper, Trace, blown_up, make_optimizer,
                         public_solver)
from ufm.validate import check_int

__all__ = ["MIXUP_SGD_STEPPER", "MixupSGDState", "mixup_sgd"]


class MixupSGDState(NamedTuple):
  """State of :func:`mixup_sgd` between chunks.

  Attributes:
    params: the current iterate (last finite).
    opt_state: optax state.
    key: the sampling key as raw key data (``jax.random.key_data``, so that checkpoints store plain integers),
      split every step (jax-md's ``NVTLangevinState.rng``).
    step: steps taken. diverged: a non-finite value met, or the objective blew up past
      :data:`ufm.solvers.DIVERGENCE_RATIO` times its start (the run stopped at the chunk start).
    avg_params, avg_count: the running Polyak–Ruppert average of the iterates from ``average_from`` on.
    objective, grad_norm: the deterministic (quadrature) objective and its gradient norm at the output parameters
      (the average once it has started, else the iterate).
    objective0: the objective at the start (the divergence bound's reference).
  """
  params: Params
  opt_state: Any
  key: jax.Array
  step: jax.Array
  diverged: jax.Array
  avg_params: Params
  avg_count: jax.Array
  objective: jax.Array
  grad_norm: jax.Array
  objective0: jax.Array


def _check_sgd_static(optimizer, num_steps, log_every, batch_size, average_from):
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer = {optimizer!r} is not supported; allowed values: {', '.join(OPTIMIZERS)}")
  for name, v in (("num_steps", num_steps), ("log_every", log_every), ("batch_size", batch_size)):
    check_int(name, v, lo=1, hi=MAX_STEPS)
  if num_steps % log_every:
    raise ValueError(f"num_steps = {num_steps}, log_every = {log_every}: allowed: num_steps a multiple of log_every")
  if average_from is not None:
    check_int("average_from", average_from, lo=0)


def _grad_fn(fn, problem):
  g = jax.grad(fn)

  def grad(*args):
    out = g(*args)
    return out if problem.bias else out._replace(b=jnp.zeros_like(out.b))
  return grad


def _output_params(s_params, avg, count):
  return jax.tree.map(lambda p, a: jnp.where(count > 0, a, p), s_params, avg)


def _sgd_init(key, problem, hparams, *, optimizer):
  k_init, k_sample = jax.random.split(key)
  opt = make_optimizer(optimizer, hparams)
  params = problem.init(k_init, hparams.init_scale)
  f, g = problem.value(params), _grad_fn(lambda p: problem.value(p), problem)(params)
  gn = otu.tree_norm(g)
  return MixupSGDState(params=params, opt_state=opt.init(params), key=jax.random.key_data(k_sample),
                       step=jnp.zeros((), jnp.int32),
                       diverged=~(jnp.isfinite(f) & jnp.isfinite(gn)), avg_params=jax.tree.map(jnp.zeros_like, params),
                       avg_count=jnp.zeros((), jnp.int32), objective=f, grad_norm=gn, objective0=f)


def _sgd_advance(state, problem, hparams, *, optimizer, batch_size, average_from, log_every, num_chunks):
  opt = make_optimizer(optimizer, hparams)
  sample_grad = _grad_fn(lambda p, k: problem.sample_value(k, p, batch_size), problem)
  full_grad = _grad_fn(lambda p: problem.value(p), problem)

  def one_step(_, carry):
    params, opt_state, key, step, avg, count = carry
    key, sub = jax.random.split(jax.random.wrap_key_data(key))
    key = jax.random.key_data(key)
    updates, opt_state = opt.update(sample_grad(params, sub), opt_state, params)
    params = optax.apply_updates(params, updates)
    step = step + 1
    on = step > average_from
    count = count + on.astype(count.dtype)
    w = jnp.where(on, 1.0 / jnp.maximum(count, 1).astype(problem.dtype), 0.0)
    avg = jax.tree.map(lambda a, p: a + w * (p - a), avg, params)
    return params, opt_state, key, step, avg, count

  def chunk(s: MixupSGDState, _):
    carry = (s.params, s.opt_state, s.key, s.step, s.avg_params, s.avg_count)
    new = jax.lax.fori_loop(0, log_every, one_step, carry)
    out = _output_params(new[0], new[4], new[5])
    f, gn = problem.value(out), otu.tree_norm(full_grad(out))
    f_last = problem.value(new[0])
    bad = s.diverged | blown_up(f, s.objective0) | blown_up(f_last, s.objective0) | ~jnp.isfinite(gn)
    kept = jax.tree.map(lambda a, b: jnp.where(bad, b, a), (new, f, gn), (carry, s.objective, s.grad_norm))
    (params, opt_state, key, step, avg, count), f, gn = kept
    s = MixupSGDState(params=params, opt_state=opt_state, key=key, step=step, diverged=bad, avg_params=avg,
                      avg_count=count, objective=f, grad_norm=gn, objective0=s.objective0)
    row = Trace(step=step, objective=f, grad_norm=gn, metrics={"objective_last": jnp.where(bad, jnp.nan, f_last)})
    return s, row

  return jax.lax.scan(chunk, state, None, length=num_chunks)


def _sgd_finish(state: MixupSGDState, trace: Trace, hparams) -> Solution:
  return Solution(params=_output_params(state.params, state.avg_params, state.avg_count), objective=state.objective,
                  grad_norm=state.grad_norm, diverged=state.diverged,
                  converged=(~state.diverged) & (state.grad_norm <= hparams.gtol), num_steps=state.step, trace=trace)


def _resolve_average_from(num_steps, average_from):
  return num_steps // 2 if average_from is None else average_from


def _sgd_plan(optimizer: str = "sgd", num_steps: int = 10_000, log_every: int = 100, batch_size: int = 32,
              average_from: int | None = None) -> Plan:
  _check_sgd_static(optimizer, num_steps, log_every, batch_size, average_from)
  avg = _resolve_average_from(num_steps, average_from)
  return Plan(init_kwargs=(("optimizer", optimizer),),
              advance_kwargs=(("average_from", avg), ("batch_size", batch_size), ("log_every", log_every),
                              ("optimizer", optimizer)),
              total=num_steps, granularity=log_every, chunk_arg="num_chunks")


@public_solver
@functools.partial(jax.jit, static_argnames=("optimizer", "num_steps", "log_every", "batch_size", "average_from"))
def mixup_sgd(key: jax.Array, problem, hparams: GDHparams, *, optimizer: str = "sgd", num_steps: int = 10_000,
              log_every: int = 100, batch_size: int = 32, average_from: int | None = None) -> Solution:
  r"""Mini-batch SGD (or Adam) on a mixup problem's stochastic objective, with Polyak–Ruppert averaging.

  Each step draws a fresh mini-batch with :meth:`sample_value` (manifold mixup: ``batch_size`` sample pairs and
  :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`; input mixup: ``batch_size`` (pair, node) columns by their
  weights) from a key carried in the state and split every step, and applies the optax update
  :math:`\theta_{t+1} = \theta_t - \eta\,u_t(\hat\nabla F(\theta_t))` (unbiased: :math:`\mathbb E\hat\nabla F =
  \nabla F`). From step ``average_from`` on (default ``num_steps // 2``; ``num_steps`` for none) the iterates are
  averaged, :math:`\bar\theta_T = \frac{1}{T - t_0}\sum_{t > t_0}\theta_t` (Polyak & Juditsky 1992), whose error
  is :math:`O(1/\sqrt{T - t_0})` for small constant steps (plus an :math:`O(\eta)` bias for non-quadratic ``F``).
  The loop is a ``lax.scan`` over chunks of ``log_every`` steps; a :class:`~ufm.solvers.Trace` row per chunk holds the
  deterministic quadrature objective and gradient norm at the output parameters and, as metric
  ``objective_last``, the objective of the last iterate. A non-finite chunk is undone and flagged ``diverged``.

  Args:
    key: PRNG key (split into the initialisation key and the sampling stream).
    problem: an :class:`InputMixupProblem` or :class:`ManifoldMixupProblem`.
    hparams: :class:`~ufm.solvers.GDHparams` (:func:`ufm.solvers.gd_hparams`): ``lr``, ``momentum``, ``b1``, ``b2``,
      ``init_scale``, ``gtol``.
    optimizer, num_steps, log_every, batch_size, average_from: static.

  Returns:
    :class:`~ufm.solvers.Solution` whose ``params`` are the averaged iterate (the last iterate when no averaging).
    Resumable via ``mixup_sgd.stepper`` (:data:`MIXUP_SGD_STEPPER`), so :func:`ufm.sweep.sweep` runs it in chunks.
  """
  _check_sgd_static(optimizer, num_steps, log_every, batch_size, average_from)
  state = _sgd_init(key, problem, hparams, optimizer=optimizer)
  state, trace = _sgd_advance(state, problem, hparams, optimizer=optimizer, batch_size=batch_size,
                              average_from=_resolve_average_from(num_steps, average_from), log_every=log_every,
                              num_chunks=num_steps // log_every)
  return _sgd_finish(state, trace, hparams)


#: The pieces of :func:`mixup_sgd` (for :func:`ufm.sweep.sweep`'s chunked runs).
MIXUP_SGD_STEPPER = Stepper(plan=_sgd_plan, init=_sgd_init, advance=_sgd_advance, finish=_sgd_finish,
                            units_done=lambda s: s.step, finished=lambda s, total: s.diverged | (s.step >= total))
mixup_sgd.stepper = MIXUP_SGD_STEPPER
