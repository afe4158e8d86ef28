"""Running a sweep: :func:`sweep` solves the grid of named axes, in one program, planned calls, or resumable chunks."""

import functools
import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.io import check_writable_file
from ufm.problem import ProblemLike
from ufm.solvers import MAX_STEPS, Stepper, canonicalise
from ufm.validate import check_int
from ufm.sweep._program import Task, advance_nested, finish_nested, init_nested, run_planned, sweep_impl
from ufm.sweep.axes import parse_axes
from ufm.sweep.checkpoint import CheckpointError, fingerprint, load_checkpoint, save_checkpoint
from ufm.sweep.plan import SweepPlan, resolve_plan, work_units
from ufm.sweep.progress import progress_bar

__all__ = ["SweepResult", "check_solver_options", "sweep"]


class SweepResult(NamedTuple):
  """A batched solver output with named leading axes.

  Attributes:
    solution: the solver's output pytree; every leaf has leading axes ``axes``.
    axes: axis names, outermost first.
    coords: axis name -> the NumPy vector of its values.
    plan: the :class:`SweepPlan` the sweep ran with.
  """
  solution: Any
  axes: tuple[str, ...]
  coords: dict[str, np.ndarray]
  plan: Any = None

  def sel(self, **labels) -> Any:
    """The solution at coordinate values along named axes, e.g. ``result.sel(lam_W=1e-2, seed=3)``.

    Like :meth:`xarray.Dataset.sel`: each value is looked up in ``coords`` (floats with
    ``numpy.isclose(rtol=1e-12, atol=0)``, other values exactly); axes not named are kept whole.

    Raises:
      ValueError: an unknown axis name (listing the valid axes), a value absent from its axis or
        found at several positions (naming the axis, the value and the axis's values), a non-scalar value.
    """
    self._check_axes(labels)
    return self.isel(**{a: _position(a, v, np.asarray(self.coords[a])) for a, v in labels.items()})

  def isel(self, **positions) -> Any:
    """The solution at integer positions (or slices) along named axes, e.g. ``result.isel(seed=0, lam_W=1)``.

    Raises:
      ValueError: an unknown axis name (listing the valid axes) or an integer position out of range
        (naming the axis, the position and the axis's length).
    """
    self._check_axes(positions)
    for a, i in positions.items():
      n = len(self.coords[a])
      if isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) and not -n <= i < n:
        raise ValueError(f"position {i} is out of range for axis {a!r} of length {n}; allowed: -{n} to {n - 1}")
    idx = tuple(positions.get(a, slice(None)) for a in self.axes)
    return jax.tree.map(lambda x: x[idx], self.solution)

  def to_xarray(self, names=None):
    """The solution as an :class:`xarray.Dataset`, one data variable per array leaf with the sweep's leading axes.

    A variable is named by its leaf's path joined with ``"_"`` (``objective``, ``params_W``,
    ``trace_objective``, ``trace_metrics_nc1``, ...); its dims are the sweep's axes followed by
    ``<name>_dim0, <name>_dim1, ...`` for its trailing dimensions, and the axes' coordinates are
    ``coords``. Leaves without the leading axes (and ``None``) are skipped.

    Args:
      names: the variables to keep (default: all), in this order.

    Raises:
      ValueError: a name among ``names`` that is not a variable (listing the available ones), or two leaves
        whose paths join to the same name.
    """
    import xarray as xr  # lazily: ``import ufm`` stays light

    shape = tuple(len(self.coords[a]) for a in self.axes)
    data = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(self.solution)[0]:
      if leaf is None:
        continue
      x = np.asarray(leaf)
      if x.shape[:len(shape)] != shape:
        continue
      var = "_".join(_key_name(k) for k in path)
      if var in data:
        raise ValueError(f"two leaves of the solution are both named {var!r}")
      data[var] = (self.axes + tuple(f"{var}_dim{i}" for i in range(x.ndim - len(shape))), x)
    if names is not None:
      names = (names,) if isinstance(names, str) else tuple(names)
      unknown = [n for n in names if n not in data]
      if unknown:
        raise ValueError(f"unknown variable {unknown}; available: {', '.join(data)}")
      data = {n: data[n] for n in dict.fromkeys(names)}
    return xr.Dataset(data, coords={a: np.asarray(self.coords[a]) for a in self.axes})

  def _check_axes(self, index) -> None:
    """Raises ``ValueError`` for axis names of ``index`` that are not axes of the sweep."""
    unknown = set(index) - set(self.axes)
    if unknown:
      raise ValueError(f"unknown axis {sorted(unknown)}; valid axes: {', '.join(self.axes)}")


def _position(axis: str, value, coords: np.ndarray) -> int:
  """The position of ``value`` among ``coords`` (the values of ``axis``): floats compared with
  ``numpy.isclose(rtol=1e-12, atol=0)``, anything else exactly; ``ValueError`` unless exactly one matches."""
  if np.ndim(value) != 0:
    raise ValueError(f"axis {axis!r}: value {value!r} is not a scalar; allowed: one of its values "
                     f"({', '.join(map(str, coords.tolist()))}); use isel for positions and slices")
  try:
    v = np.asarray(value)
    if np.issubdtype(coords.dtype, np.inexact) or np.issubdtype(v.dtype, np.inexact):
      match = np.isclose(coords, v, rtol=1e-12, atol=0)
    else:
      match = coords == v
    hits = np.flatnonzero(np.asarray(match, bool))
  except (TypeError, ValueError):  # e.g. a string looked up among floats
    hits = np.zeros(0, int)
  if hits.size != 1:
    what = "is not a value" if hits.size == 0 else f"matches several positions {hits.tolist()}"
    raise ValueError(f"{value!r} {what} of axis {axis!r}; available values: {', '.join(map(str, coords.tolist()))}")
  return int(hits[0])


def _key_name(key) -> str:
  """One step of a pytree path as a name: an attribute's or a dict key's name, a sequence index."""
  for attr in ("name", "key", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _init_impl(values, problem, hparams, base_seed, *, stepper, names, init_kwargs, plan=None):
  """The initial solver state of every configuration (leading grid axes)."""
  if plan is None or plan.plain:
    return init_nested(values, problem, hparams, base_seed, stepper=stepper, names=names, init_kwargs=init_kwargs)
  task = Task("init", stepper, names, init_kwargs)
  return run_planned(task, values, None, (problem, hparams, base_seed), plan)


def _advance_impl(state, values, problem, hparams, base_seed, *, stepper, names, advance_kwargs, plan=None):
  """One chunk of steps for every configuration (called once per chunk; tests count the calls)."""
  if plan is None or plan.plain:
    return advance_nested(state, values, problem, hparams, base_seed, stepper=stepper, names=names,
                          advance_kwargs=advance_kwargs)
  task = Task("advance", stepper, names, advance_kwargs)
  return run_planned(task, values, state, (problem, hparams, base_seed), plan)


def _finish_impl(state, trace, values, problem, hparams, base_seed, *, stepper, names, plan=None):
  """The solver's output of every configuration from its final state and trace rows."""
  if plan is None or plan.plain:
    return finish_nested(state, trace, values, hparams, stepper=stepper, names=names)
  task = Task("finish", stepper, names, ())
  return run_planned(task, values, (state, trace), (problem, hparams, base_seed), plan)


def _concat_rows(rows, more, axis):
  """The trace rows so far with one more chunk's rows appended along the step axis ``axis``."""
  if rows is None:
    return more
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=axis), rows, more)


def _run_chunked(stepper: Stepper, values, problem, hparams, base_seed, names, solver_kwargs, *, chunk_steps,
                 checkpoint, progress, n_configs, plan, memory_budget):
  """A resumable solver's sweep in chunks of ``chunk_steps`` (init, advance per chunk, finish), saving and
  resuming ``checkpoint``; returns ``(solution, plan)``."""
  splan = stepper.plan(**solver_kwargs)  # validates the static options
  if chunk_steps is None:  # about 10 chunks
    units = splan.total // splan.granularity
    chunk_steps = splan.granularity * _divisor_near(units, max(units // 10, 1))
  if (isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1
      or chunk_steps % splan.granularity or splan.total % chunk_steps):
    raise ValueError(f"chunk_steps = {chunk_steps!r}: allowed: a multiple of {splan.granularity} that divides "
                     f"{splan.total} (the solve's length)")
  init_kwargs = splan.init_kwargs
  advance_kwargs = tuple(sorted(splan.advance_kwargs + ((splan.chunk_arg, chunk_steps // splan.granularity),)))
  args = (values, problem, hparams, base_seed)
  total = splan.total // chunk_steps
  fp = fingerprint(*args, names, tuple(sorted(solver_kwargs.items())), chunk_steps)
  t_axis = len(names)
  abstract_state = jax.eval_shape(functools.partial(init_nested, stepper=stepper, names=names,
                                                   init_kwargs=init_kwargs), *args)
  plan = resolve_plan(plan, Task("advance", stepper, names, advance_kwargs), values, abstract_state,
                      (problem, hparams, base_seed), memory_budget=memory_budget, units=splan.total)
  done, state, rows = 0, None, None
  if checkpoint is not None and Path(checkpoint).exists():
    abstract_rows = jax.eval_shape(functools.partial(advance_nested, stepper=stepper, names=names,
                                                    advance_kwargs=advance_kwargs), abstract_state, *args)[1]

    def like(chunks_done):  # the abstract (state, rows) after ``chunks_done`` chunks
      grow = lambda a: jax.ShapeDtypeStruct(
          a.shape[:t_axis] + (a.shape[t_axis] * chunks_done,) + a.shape[t_axis + 1:], a.dtype)
      return abstract_state, jax.tree.map(grow, abstract_rows)

    done, (state, rows) = load_checkpoint(Path(checkpoint), fp, like)
    if not 1 <= done <= total:
      raise CheckpointError(f"checkpoint {checkpoint} records {done} chunks; this sweep has {total}")
  if state is None:
    state = _init_impl(*args, stepper=stepper, names=names, init_kwargs=init_kwargs, plan=plan)
  bar = progress_bar(progress, total=splan.total, unit="step",
                     initial=int(np.max(np.asarray(stepper.units_done(state)))) if progress else 0)
  try:
    for c in range(done, total):
      if splan.early_stop and np.asarray(stepper.finished(state, splan.total)).all():
        break  # L-BFGS: every configuration has stopped; the remaining chunks would change nothing
      state, more = _advance_impl(state, *args, stepper=stepper, names=names, advance_kwargs=advance_kwargs,
                                  plan=plan)
      rows = _concat_rows(rows, more, t_axis)
      if checkpoint is not None:
        save_checkpoint(Path(checkpoint), fp, c + 1, state, rows)
      if bar is not None:
        finished = np.asarray(stepper.finished(state, splan.total))
        bar.set_postfix_str(f"configs {int(finished.sum())}/{n_configs} done", refresh=False)
        reached = splan.total if finished.all() else int(np.max(np.asarray(stepper.units_done(state))))
        bar.update(reached - bar.n)
  finally:
    if bar is not None:
      bar.close()
  return _finish_impl(state, rows, values, problem, hparams, base_seed, stepper=stepper, names=names,
                      plan=plan), plan


def sweep(solver: Callable, problem: ProblemLike, hparams: Any, *, axes: dict[str, Any], seed: int = 0,
          chunk_steps: int | None = None, checkpoint: str | os.PathLike | None = None,
          progress: bool | str = False, plan="auto", memory_budget: int | None = None,
          **solver_kwargs) -> SweepResult:
  """Solves the cartesian grid of ``axes`` (nested ``vmap``; planned over devices, batches and calls).

  Args:
    solver: a solver of :mod:`ufm.solvers`, ``(key, problem, hparams, **static) -> Solution``.
    problem: the base problem (its weight decays are replaced along their axes).
    hparams: the base hyperparameters (fields replaced along their axes).
    axes: ordered mapping axis name -> 1-D values (outermost first).
    seed: the seed used when ``"seed"`` is not an axis.
    chunk_steps: run a resumable solver (one with a ``stepper``:
      :func:`ufm.solvers.gradient_descent`, :func:`ufm.solvers.lbfgs_reference`) in calls of
      this many steps / iterations (GD: a multiple of ``log_every`` dividing ``num_steps``;
      L-BFGS: a divisor of ``max_steps``; L-BFGS stops calling once every configuration has
      stopped). Default: one call, or about 10 chunks when ``checkpoint`` or ``progress`` is given.
    checkpoint: a file path; the batched state is saved there after every chunk (atomically),
      and an existing checkpoint of the same sweep is resumed. The file is left in place
      (delete it when the result has been stored).
    progress: show a progress bar (steps, configurations done, ETA) after 2 s; a string is its label.
    plan: how to run the configuration axis: ``"auto"`` (see :func:`plan_sweep`), ``"plain"`` (one
      nested-``vmap`` program), or a :class:`SweepPlan` / dict of ``devices``, ``batch``, ``chunk``.
      The numbers do not depend on it (to rounding; tested in float64).
    memory_budget: device memory per device a call may use, in bytes (default: half the available memory).
    **solver_kwargs: static options passed to ``solver`` (``num_steps``, ``optimizer``, ...).

  Raises:
    ValueError: unknown axis names (listing the valid ones), empty or non-1-D axes,
      values out of range (weight decays ``>= 0``, :data:`ufm.solvers.HPARAM_RANGES` for solver
      knobs, seeds integers in ``[0, 2**32)``), values that overflow the problem's dtype, and plan
      fields out of range (see :func:`plan_sweep`).
  """
  names, values, coords, base_seed = parse_axes(problem, hparams, axes, seed)
  check_solver_options(solver, solver_kwargs)
  if checkpoint is not None:
    check_writable_file("checkpoint", checkpoint)
  stepper = getattr(solver, "stepper", None)
  if chunk_steps is not None or checkpoint is not None or progress:
    if stepper is None:
      if chunk_steps is not None or checkpoint is not None:
        raise ValueError(f"chunk_steps/checkpoint need a resumable solver (one with a .stepper: gradient_descent, "
                         f"lbfgs_reference); {getattr(solver, '__name__', solver)} runs in one call")
    else:
      problem, hparams = canonicalise(problem, hparams)
      n_configs = int(np.prod([len(c) for c in coords.values()]))
      sol, plan = _run_chunked(stepper, values, problem, hparams, base_seed, names, solver_kwargs,
                               chunk_steps=chunk_steps, checkpoint=checkpoint, progress=progress,
                               n_configs=n_configs, plan=plan, memory_budget=memory_budget)
      return SweepResult(solution=sol, axes=names, coords=coords, plan=plan)
  kwargs = tuple(sorted(solver_kwargs.items()))
  if plan != "plain":
    problem, hparams = canonicalise(problem, hparams)
    plan = resolve_plan(plan, Task("solve", solver, names, kwargs), values, None, (problem, hparams, base_seed),
                        memory_budget=memory_budget, units=work_units(stepper, solver_kwargs))
  if plan == "plain" or plan.plain:
    sol = sweep_impl(values, problem, hparams, base_seed, solver=solver, names=names, solver_kwargs=kwargs)
    if plan == "plain":
      C = math.prod(len(v) for v in values)
      plan = SweepPlan(devices=1, batch=C, chunk=C, plain=True, source="user")
  else:
    sol = run_planned(Task("solve", solver, names, kwargs), values, None, (problem, hparams, base_seed), plan,
                      progress=progress)
  return SweepResult(solution=sol, axes=names, coords=coords, plan=plan)


def check_solver_options(solver: Callable, options: dict) -> None:
  """``ValueError`` naming the options ``solver`` does not take (its keyword-only parameters), listing the valid
  ones, before anything compiles."""
  try:
    params = inspect.signature(solver).parameters
  except (TypeError, ValueError):
    return
  if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
    return
  valid = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown} for {getattr(solver, '__name__', solver)}; valid options: "
                     f"{', '.join(valid)}")
  for name in ("num_steps", "log_every", "max_steps", "batch_size"):  # counts the planner reads before the solver
    if name in options:
      check_int(name, options[name], lo=1, hi=MAX_STEPS)


def _divisor_near(n: int, target: int) -> int:
  """The divisor of ``n`` closest to ``target`` (ties: the smaller)."""
  divs = [d for d in range(1, n + 1) if n % d == 0]
  return min(divs, key=lambda d: (abs(d - target), d))
