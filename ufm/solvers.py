r"""Solvers: ``(key, problem, hparams, *, static...) -> Solution``, each a single jitted program.

* :func:`gradient_descent`: full-batch first-order methods from optax (SGD, heavy-ball
  momentum, Adam); the whole loop is a ``lax.scan`` over chunks of ``log_every`` steps,
  each chunk a ``fori_loop``; a :class:`Trace` row is written after every chunk.
* :func:`lbfgs_reference`: float64 L-BFGS (``optax.lbfgs`` with its zoom line search)
  in a ``lax.while_loop``, run until the gradient norm is ``<= gtol``. It separates
  "is the theory right?" from "did gradient descent converge?".

Numeric knobs (learning rate, momentum, initial scale, tolerances) are array leaves of
the hyperparameter ``NamedTuple`` s, so ``jax.vmap`` sweeps them and a new value never
recompiles. Nothing raises inside a solve: a run that produces a non-finite objective, or
whose objective grows past :data:`DIVERGENCE_RATIO` times its starting value, is stopped at its
last iterate before that and flagged ``diverged`` (diffrax ``throw=False``).
"""

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from ufm import metrics as _metrics
from ufm.problem import Params, ProblemLike
from ufm.validate import cast_checked, check_int, check_real

__all__ = [
    "DIVERGENCE_RATIO",
    "MAX_STEPS",
    "GDHparams",
    "blown_up",
    "GDState",
    "GD_STEPPER",
    "HPARAM_RANGES",
    "LBFGSState",
    "LBFGS_STEPPER",
    "LBFGSHparams",
    "OPTIMIZERS",
    "Plan",
    "Solution",
    "Stepper",
    "Trace",
    "canonicalise",
    "check_hparam",
    "default_gtol",
    "gd_hparams",
    "gradient_descent",
    "lbfgs_hparams",
    "lbfgs_reference",
    "make_optimizer",
    "public_solver",
    "scalar_leaves",
]

OPTIMIZERS = ("sgd", "adam")


def default_gtol(dtype) -> float:
  """Default gradient-norm tolerance: 1e-10 in float64 (the reference target), 1e-4 in float32."""
  return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-4


class GDHparams(NamedTuple):
  """Gradient-descent knobs (array leaves). ``momentum`` is the heavy-ball coefficient of
  ``optax.sgd`` (0 = plain GD); ``b1, b2`` are Adam's; ``gtol`` sets ``converged``."""
  lr: jax.Array
  momentum: jax.Array
  b1: jax.Array
  b2: jax.Array
  init_scale: jax.Array
  gtol: jax.Array


class LBFGSHparams(NamedTuple):
  """L-BFGS knobs: initial scale and the gradient-norm tolerance ``gtol``."""
  init_scale: jax.Array
  gtol: jax.Array


#: Allowed range of every hyperparameter field (``check_real`` keywords); used by the constructors
#: below and by :func:`ufm.sweep.sweep` for swept values.
HPARAM_RANGES = {
    "lr": dict(lo=0.0, lo_open=True),
    "momentum": dict(lo=0.0, hi=1.0, hi_open=True),
    "b1": dict(lo=0.0, hi=1.0, hi_open=True),
    "b2": dict(lo=0.0, hi=1.0, hi_open=True),
    "init_scale": dict(lo=0.0, lo_open=True),
    "gtol": dict(lo=0.0),
}


def check_hparam(name: str, value, dtype) -> jax.Array:
  """Validates a hyperparameter against :data:`HPARAM_RANGES` and casts it to ``dtype`` (no overflow)."""
  return cast_checked(name, check_real(name, value, **HPARAM_RANGES[name]), dtype)


def gd_hparams(lr=0.1, *, momentum=0.0, b1=0.9, b2=0.999, init_scale=0.1, gtol=None, dtype=None) -> GDHparams:
  """Validated :class:`GDHparams` (Python-level checks, before any compilation).

  Ranges: ``lr > 0``, ``0 <= momentum < 1``, ``0 <= b1 < 1``, ``0 <= b2 < 1``,
  ``init_scale > 0``, ``gtol >= 0``; all finite and representable in ``dtype``.
  Arrays are accepted (for sweeps).
  """
  dtype = dtype or jnp.result_type(float)
  gtol = default_gtol(dtype) if gtol is None else gtol
  vals = dict(lr=lr, momentum=momentum, b1=b1, b2=b2, init_scale=init_scale, gtol=gtol)
  return GDHparams(**{k: check_hparam(k, v, dtype) for k, v in vals.items()})


def lbfgs_hparams(*, init_scale=0.1, gtol=None, dtype=None) -> LBFGSHparams:
  """Validated :class:`LBFGSHparams`: ``init_scale > 0``, ``gtol >= 0`` (default :func:`default_gtol`)."""
  dtype = dtype or jnp.result_type(float)
  gtol = default_gtol(dtype) if gtol is None else gtol
  if jnp.dtype(dtype) != jnp.float64:
    reach = "cannot reach it (|grad| floors near 1e-5)" if float(gtol) < 1e-6 else "leaves relative errors of 1e-4-1e-3"
    warnings.warn(f"lbfgs_hparams: a {jnp.dtype(dtype).name} reference solve with gtol = {float(gtol):g} {reach}; "
                  "for reference precision enable float64 first (jax.config.update('jax_enable_x64', True); the "
                  "CLI's default) and pass dtype='float64'", UserWarning, stacklevel=2)
  return LBFGSHparams(init_scale=check_hparam("init_scale", init_scale, dtype), gtol=check_hparam("gtol", gtol, dtype))


def scalar_leaves(problem) -> tuple[str, ...]:
  """The scalar hyperparameter leaves of a problem (sweepable): ``problem.SCALAR_LEAVES`` of the
  :class:`ufm.problem.Family` protocol."""
  return problem.SCALAR_LEAVES


def canonicalise(problem: ProblemLike, hparams):
  """Leaves as strong-typed arrays of the problem's dtype, so that a Python float, a weak-typed scalar
  or a new value never changes the jit cache key (no retrace)."""
  dt = problem.dtype
  problem = problem.replace(**{k: jnp.asarray(getattr(problem, k), dt) for k in scalar_leaves(problem)})
  return problem, type(hparams)(*(jnp.asarray(x, dt) for x in hparams))


def _project(problem, params):
  """``problem.project(params)`` for constrained families; unconstrained iterates are left bit for bit as they are."""
  return problem.project(params) if problem.constrained else params


def public_solver(jitted):
  """Wraps a jitted solver as a public one: normalises leaves (see :func:`canonicalise`) and static tuples, then
  calls ``jitted``."""

  @functools.wraps(jitted)
  def solve(key, problem, hparams, **static):
    if "trace_metrics" in static:
      static["trace_metrics"] = tuple(static["trace_metrics"])
    problem, hparams = canonicalise(problem, hparams)
    return jitted(key, problem, hparams, **static)

  solve._cache_size = jitted._cache_size
  return solve


class Trace(NamedTuple):
  """One row per logging interval (leading axis ``t``): step count, objective, gradient norm, metrics."""
  step: jax.Array
  objective: jax.Array
  grad_norm: jax.Array
  metrics: dict


class Solution(NamedTuple):
  """Result of a solve. ``params`` is the last finite iterate.

  Attributes:
    params: final :class:`~ufm.problem.Params`.
    objective, grad_norm: at ``params``.
    diverged: a non-finite objective or gradient was met (the run stopped there).
    converged: ``grad_norm <= gtol`` at the end.
    num_steps: steps (GD) or iterations (L-BFGS) actually taken.
    trace: :class:`Trace`; for L-BFGS one row per iteration, NaN-padded past ``num_steps``.
  """
  params: Params
  objective: jax.Array
  grad_norm: jax.Array
  diverged: jax.Array
  converged: jax.Array
  num_steps: jax.Array
  trace: Trace


def _masked_grad(problem: ProblemLike):
  """Gradient of the objective; the bias gradient is zero when the problem has no bias."""
  grad = jax.grad(lambda params, problem: problem.value(params))

  def fn(params):
    g = grad(params, problem)
    return g if problem.bias else g._replace(b=jnp.zeros_like(g.b))
  return fn


def make_optimizer(name: str, hp: GDHparams) -> optax.GradientTransformation:
  """The optax transformation of a gradient-descent solver: ``optax.sgd`` (heavy-ball ``momentum``) or
  ``optax.adam`` (``b1``, ``b2``), both at learning rate ``hp.lr`` (array leaves, traceable)."""
  if name == "sgd":
    return optax.sgd(hp.lr, momentum=hp.momentum)
  return optax.adam(hp.lr, b1=hp.b1, b2=hp.b2)


class GDState(NamedTuple):
  """The state of a gradient-descent run between chunks (everything needed to resume it).

  Attributes:
    params: the last finite iterate.
    opt_state: the optax state (momentum buffer, Adam moments, step count).
    step: steps taken (stops growing at divergence).
    diverged: a non-finite objective or gradient was met, or the objective blew up (:func:`blown_up`).
    objective, grad_norm: at ``params``.
    objective0: the objective at the start (the divergence bound's reference).
  """
  params: Params
  opt_state: Any
  step: jax.Array
  diverged: jax.Array
  objective: jax.Array
  grad_norm: jax.Array
  objective0: jax.Array


#: A first-order run is ``diverged`` once its objective exceeds ``DIVERGENCE_RATIO * |f(start)|``. Every UFM
#: objective is bounded below by 0 and starts at ``O(1)`` (log K for CE at a small initialisation), so six orders of
#: magnitude above the start is a blow-up, not a transient (a learning rate of 100 takes CE to 1e113, Adam at
#: 1000 to 6e6 times its start); non-finite values are flagged too. L-BFGS needs no bound: its line search only
#: accepts decreasing steps.
DIVERGENCE_RATIO = 1e6


def blown_up(f, f0):
  """``f`` is not finite, or above :data:`DIVERGENCE_RATIO` times ``|f0|`` (the objective at the start)."""
  return ~jnp.isfinite(f) | (f > DIVERGENCE_RATIO * jnp.abs(f0))


#: Most steps (or L-BFGS iterations) one solve may take: 10^8 full-batch steps run for hours even on the smallest
#: problem; a larger count is a typo, and the API refuses it as the CLI does.
MAX_STEPS = 10**8


def _check_gd_static(optimizer: str, num_steps: int, log_every: int):
  check_int("num_steps", num_steps, lo=1, hi=MAX_STEPS)
  check_int("log_every", log_every, lo=1, hi=MAX_STEPS)
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer = {optimizer!r} is not supported; allowed values: {', '.join(OPTIMIZERS)}")
  if log_every < 1 or num_steps < log_every or num_steps % log_every:
    raise ValueError(f"num_steps = {num_steps}, log_every = {log_every}: allowed: log_every >= 1 and num_steps a "
                     "positive multiple of log_every")


def _gd_init(key, problem, hparams, *, optimizer):
  opt, grad_fn = make_optimizer(optimizer, hparams), _masked_grad(problem)
  params0 = _project(problem, problem.init(key, hparams.init_scale))
  f0, gn0 = problem.value(params0), otu.tree_norm(grad_fn(params0))
  return GDState(params=params0, opt_state=opt.init(params0), step=jnp.zeros((), jnp.int32),
                 diverged=~(jnp.isfinite(f0) & jnp.isfinite(gn0)), objective=f0, grad_norm=gn0, objective0=f0)


def _gd_advance(state, problem, hparams, *, optimizer, num_chunks, log_every, trace_metrics):
  opt, grad_fn = make_optimizer(optimizer, hparams), _masked_grad(problem)

  def one_step(_, carry):
    params, opt_state = carry
    updates, opt_state = opt.update(grad_fn(params), opt_state, params)
    return _project(problem, optax.apply_updates(params, updates)), opt_state

  def chunk(s: GDState, _):
    # SGD: unroll=2. With one step per iteration XLA copies H (d x N) every step (the in-place updates of H and of
    # its momentum both read the old H); two steps per iteration compile without the copy, bit for bit the same
    # numbers (tested). Adam keeps one step per iteration (unrolled, its fusions round differently, ~1e-16).
    new_params, new_opt = jax.lax.fori_loop(0, log_every, one_step, (s.params, s.opt_state),
                                            unroll=2 if optimizer == "sgd" else 1)
    new_f, new_gn = problem.value(new_params), otu.tree_norm(grad_fn(new_params))
    bad = s.diverged | blown_up(new_f, s.objective0) | ~jnp.isfinite(new_gn)
    params, opt_state, f, gn = jax.tree.map(lambda new, old: jnp.where(bad, old, new),
                                            (new_params, new_opt, new_f, new_gn),
                                            (s.params, s.opt_state, s.objective, s.grad_norm))
    s = GDState(params=params, opt_state=opt_state, step=jnp.where(bad, s.step, s.step + log_every),
                diverged=bad, objective=f, grad_norm=gn, objective0=s.objective0)
    row = Trace(step=s.step, objective=f, grad_norm=gn, metrics=_metrics.compute(params, problem, trace_metrics))
    return s, row

  return jax.lax.scan(chunk, state, None, length=num_chunks)


def _gd_finish(state: GDState, trace: Trace, hparams) -> "Solution":
  return Solution(params=state.params, objective=state.objective, grad_norm=state.grad_norm,
                  diverged=state.diverged, converged=(~state.diverged) & (state.grad_norm <= hparams.gtol),
                  num_steps=state.step, trace=trace)


@public_solver
@functools.partial(jax.jit, static_argnames=("optimizer", "num_steps", "log_every", "trace_metrics"))
def gradient_descent(key: jax.Array, problem: ProblemLike, hparams: GDHparams, *, optimizer: str = "sgd",
                     num_steps: int = 10_000, log_every: int = 100,
                     trace_metrics: tuple[str, ...] = ()) -> Solution:
  r"""Full-batch first-order descent on :func:`ufm.objectives.objective`.

  .. math:: \theta_{t+1} = \theta_t - \eta\, u_t(\nabla f(\theta_t)),

  with :math:`u_t` optax's SGD (heavy ball, :math:`v_{t+1} = \beta v_t + \nabla f`,
  :math:`\theta_{t+1} = \theta_t - \eta v_{t+1}`) or Adam. Initialisation:
  :func:`ufm.problem.init_params` with ``hparams.init_scale``.

  The run is resumable: ``gradient_descent.stepper`` (:data:`GD_STEPPER`) exposes the same
  computation as ``init`` / ``advance`` (``num_chunks`` chunks of ``log_every`` steps) /
  ``finish``, which :func:`ufm.sweep.sweep` uses to run long sweeps in chunks with a
  progress bar and checkpoints; the numbers are the same (bit for bit on CPU, tested).

  Args:
    key: PRNG key for the initialisation.
    problem: the :class:`~ufm.problem.Problem`.
    hparams: :class:`GDHparams` (see :func:`gd_hparams`).
    optimizer: ``"sgd"`` or ``"adam"`` (static).
    num_steps: total steps, a multiple of ``log_every`` (static).
    log_every: steps between trace rows (static).
    trace_metrics: names from :data:`ufm.metrics.METRICS` recorded in the trace (static).

  Returns:
    :class:`Solution` with a trace of ``num_steps // log_every`` rows.
  """
  _check_gd_static(optimizer, num_steps, log_every)
  state = _gd_init(key, problem, hparams, optimizer=optimizer)
  state, trace = _gd_advance(state, problem, hparams, optimizer=optimizer, num_chunks=num_steps // log_every,
                             log_every=log_every, trace_metrics=trace_metrics)
  return _gd_finish(state, trace, hparams)


class Plan(NamedTuple):
  """How a :class:`Stepper` runs for given static options (see ``Stepper.plan``).

  Attributes:
    init_kwargs, advance_kwargs: static keyword arguments (sorted tuples of pairs) of ``init`` and,
      apart from the chunk length, of ``advance``.
    total: units of work of a whole solve (steps for gradient descent, iterations for L-BFGS).
    granularity: a chunk must be a multiple of it that divides ``total`` (GD: ``log_every``; L-BFGS: 1).
    chunk_arg: the name of ``advance``'s chunk-length argument; its value is ``chunk // granularity``.
    early_stop: chunks may stop once every configuration is ``finished`` (the output does not depend
      on the number of chunks run: L-BFGS); false when every chunk adds trace rows (gradient descent).
  """
  init_kwargs: tuple
  advance_kwargs: tuple
  total: int
  granularity: int
  chunk_arg: str
  early_stop: bool = False


class Stepper(NamedTuple):
  """A solver split into resumable pieces (jax-md's ``init_fn`` / ``apply_fn`` pattern).

  ``init`` then ``advance`` in chunks (any number of calls) then ``finish`` gives the same
  :class:`Solution` as the one-call solver. :func:`ufm.sweep.sweep` uses it for progress bars
  and checkpoints.

  Attributes:
    plan: ``(**solver_kwargs) -> Plan``; validates the static options (Python-level).
    init: ``(key, problem, hparams, **init_kwargs) -> state``.
    advance: ``(state, problem, hparams, **advance_kwargs, <chunk_arg>=m) -> (state, rows)``; ``rows``
      have a leading time axis that chunks concatenate (empty for L-BFGS, whose trace is in the state).
    finish: ``(state, rows, hparams) -> Solution``.
    units_done: ``state -> int array``: work units done (steps, iterations).
    finished: ``(state, total) -> bool array``: nothing is left to do for this configuration.
  """
  plan: Callable
  init: Callable
  advance: Callable
  finish: Callable
  units_done: Callable
  finished: Callable


def _gd_plan(optimizer: str = "sgd", num_steps: int = 10_000, log_every: int = 100,
             trace_metrics: tuple[str, ...] = ()) -> Plan:
  _check_gd_static(optimizer, num_steps, log_every)
  return Plan(init_kwargs=(("optimizer", optimizer),),
              advance_kwargs=(("log_every", log_every), ("optimizer", optimizer),
                              ("trace_metrics", tuple(trace_metrics))),
              total=num_steps, granularity=log_every, chunk_arg="num_chunks")


#: The pieces of :func:`gradient_descent`.
GD_STEPPER = Stepper(plan=_gd_plan, init=_gd_init, advance=_gd_advance, finish=_gd_finish,
                     units_done=lambda s: s.step, finished=lambda s, total: s.diverged | (s.step >= total))
gradient_descent.stepper = GD_STEPPER


class LBFGSState(NamedTuple):
  """The state of an L-BFGS run between chunks: iterate, optax state, iteration count ``k``, objective,
  gradient norm, ``diverged``, ``active`` (still iterating) and the per-iteration trace rows so far."""
  params: Params
  opt_state: Any
  k: jax.Array
  objective: jax.Array
  grad_norm: jax.Array
  diverged: jax.Array
  active: jax.Array
  rows: tuple


def _check_lbfgs_static(max_steps: int, memory_size: int):
  check_int("max_steps", max_steps, lo=1, hi=MAX_STEPS)
  check_int("memory_size", memory_size, lo=1, hi=1000)


def _lbfgs_parts(problem, memory_size):
  if problem.constrained:
    raise ValueError(f"lbfgs_reference does not handle the constrained {type(problem).__name__}; "
                     "allowed: gradient_descent (projected gradient) or the penalty form")
  f_fn = problem.value
  opt = optax.lbfgs(memory_size=memory_size, linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=50))
  return f_fn, _masked_grad(problem), opt


def _lbfgs_init(key, problem, hparams, *, max_steps, memory_size):
  f_fn, grad_fn, opt = _lbfgs_parts(problem, memory_size)
  params0 = problem.init(key, hparams.init_scale)
  f0, gn0 = f_fn(params0), otu.tree_norm(grad_fn(params0))
  nan_row = jnp.full((max_steps,), jnp.nan, problem.dtype)
  bad = ~jnp.isfinite(f0)
  return LBFGSState(params=params0, opt_state=opt.init(params0), k=jnp.zeros((), jnp.int32), objective=f0,
                    grad_norm=gn0, diverged=bad, active=(gn0 > hparams.gtol) & ~bad & (max_steps > 0),
                    rows=(nan_row, nan_row))


def _lbfgs_advance(state, problem, hparams, *, max_steps, memory_size, num_iters):
  f_fn, grad_fn, opt = _lbfgs_parts(problem, memory_size)
  stop_at = jnp.minimum(state.k + num_iters, max_steps)

  def keep_going(s: LBFGSState):
    return (s.k < max_steps) & (s.grad_norm > hparams.gtol) & ~s.diverged

  def cond(s: LBFGSState):
    return keep_going(s) & (s.k < stop_at)

  def body(s: LBFGSState):
    g = grad_fn(s.params)
    updates, new_opt = opt.update(g, s.opt_state, s.params, value=s.objective, grad=g, value_fn=f_fn)
    new_params = optax.apply_updates(s.params, updates)
    new_f, new_gn = f_fn(new_params), otu.tree_norm(grad_fn(new_params))
    bad = ~(jnp.isfinite(new_f) & jnp.isfinite(new_gn))
    params, opt_state, f, gn = jax.tree.map(lambda a, b_: jnp.where(bad, b_, a),
                                            (new_params, new_opt, new_f, new_gn),
                                            (s.params, s.opt_state, s.objective, s.grad_norm))
    rows = (s.rows[0].at[s.k].set(jnp.where(bad, jnp.nan, f)), s.rows[1].at[s.k].set(jnp.where(bad, jnp.nan, gn)))
    return s._replace(params=params, opt_state=opt_state, k=jnp.where(bad, s.k, s.k + 1), objective=f,
                      grad_norm=gn, diverged=bad, rows=rows)

  state = jax.lax.while_loop(cond, body, state)
  return state._replace(active=keep_going(state)), ()


def _lbfgs_finish(state: LBFGSState, rows, hparams) -> "Solution":
  max_steps = state.rows[0].shape[-1]
  trace = Trace(step=jnp.arange(1, max_steps + 1), objective=state.rows[0], grad_norm=state.rows[1], metrics={})
  return Solution(params=state.params, objective=state.objective, grad_norm=state.grad_norm,
                  diverged=state.diverged, converged=(~state.diverged) & (state.grad_norm <= hparams.gtol),
                  num_steps=state.k, trace=trace)


def _lbfgs_plan(max_steps: int = 3000, memory_size: int = 20) -> Plan:
  _check_lbfgs_static(max_steps, memory_size)
  kw = (("max_steps", max_steps), ("memory_size", memory_size))
  return Plan(init_kwargs=kw, advance_kwargs=kw, total=max_steps, granularity=1, chunk_arg="num_iters",
              early_stop=True)


@public_solver
@functools.partial(jax.jit, static_argnames=("max_steps", "memory_size"))
def lbfgs_reference(key: jax.Array, problem: ProblemLike, hparams: LBFGSHparams, *, max_steps: int = 3000,
                    memory_size: int = 20) -> Solution:
  r"""High-precision reference solve: L-BFGS (Nocedal & Wright 1999, Alg. 7.4–7.5) via ``optax.lbfgs``
  with a zoom line search (strong Wolfe), in a ``lax.while_loop`` that stops when
  :math:`\|\nabla f\| \le` ``gtol`` (default 1e-10 in float64), after ``max_steps``
  iterations, or at a non-finite value (flagged ``diverged``).

  Run it under ``jax_enable_x64``: float32 cannot resolve gradients near 1e-10. Resumable:
  ``lbfgs_reference.stepper`` (:data:`LBFGS_STEPPER`) runs the same iterations in chunks.
  """
  _check_lbfgs_static(max_steps, memory_size)
  state = _lbfgs_init(key, problem, hparams, max_steps=max_steps, memory_size=memory_size)
  state, rows = _lbfgs_advance(state, problem, hparams, max_steps=max_steps, memory_size=memory_size,
                               num_iters=max_steps)
  return _lbfgs_finish(state, rows, hparams)


#: The pieces of :func:`lbfgs_reference`.
LBFGS_STEPPER = Stepper(plan=_lbfgs_plan, init=_lbfgs_init, advance=_lbfgs_advance, finish=_lbfgs_finish,
                        units_done=lambda s: s.k, finished=lambda s, total: ~s.active)
lbfgs_reference.stepper = LBFGS_STEPPER
