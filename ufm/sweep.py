r"""Sweeps: nested ``vmap`` over named axes, one compilation per shape.

``sweep(solver, problem, hparams, axes={"lam_W": [...], "seed": [...]})`` solves the
cartesian product of the axis values in one jitted call. Each axis name is ``"seed"``
(integer seeds, turned into keys with ``jax.random.key`` inside the program), a weight
decay of the :class:`~ufm.problem.Problem` (``lam_W``, ``lam_H``, ``lam_b``; for other problem classes
their ``SCALAR_LEAVES``, e.g. ``beta`` of :class:`ufm.vicinity.VicinityProblem`), or a field
of the solver's hyperparameters (``lr``, ``momentum``, ``init_scale``, ...). The result
has one leading array axis per named axis, outermost first (STYLE.md B.5), and records
the names and values. Values are arguments of the compiled program, so a new value
never retraces; a new axis *length* or a new static option compiles once more.

Long gradient-descent sweeps can run in chunks of steps (``chunk_steps``): each chunk is
one call of the same compiled program, a progress bar reports steps and configurations
done with an ETA, and with ``checkpoint=path`` the batched state is written atomically
after every chunk, so that a killed sweep resumes from its last completed chunk and ends
with the same numbers as an uninterrupted one.
"""

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.problem import ProblemLike, cast_checked, check_real, check_seed
from ufm.solvers import HPARAM_RANGES, Stepper, _canonical, scalar_leaves

__all__ = ["CheckpointError", "SweepResult", "atomic_write", "sweep"]

_CKPT_FORMAT = "ufm-sweep-checkpoint/1"


class CheckpointError(ValueError):
  """A checkpoint file that is unreadable, not a ufm checkpoint, or belongs to another sweep."""



class SweepResult(NamedTuple):
  """A batched solver output with named leading axes.

  Attributes:
    solution: the solver's output pytree; every leaf has leading axes ``axes``.
    axes: axis names, outermost first.
    coords: axis name -> the NumPy vector of its values.
  """
  solution: Any
  axes: tuple[str, ...]
  coords: dict[str, np.ndarray]

  def sel(self, **index) -> Any:
    """The solution at integer positions along named axes, e.g. ``result.sel(seed=0, lam_W=2)``."""
    unknown = set(index) - set(self.axes)
    if unknown:
      raise ValueError(f"unknown axis {sorted(unknown)}; valid axes: {', '.join(self.axes)}")
    idx = tuple(index.get(a, slice(None)) for a in self.axes)
    return jax.tree.map(lambda x: x[idx], self.solution)


def _substitute(names, vals, problem, hparams, base_seed):
  p, h, seed = problem, hparams, base_seed
  for name, v in zip(names, vals):
    if name == "seed":
      seed = v
    elif name in scalar_leaves(problem):
      p = p.replace(**{name: v})
    else:
      h = h._replace(**{name: v})
  return jax.random.key(seed), p, h


def _nest(fn, names, *batched):
  """``fn(vals, *batched)`` vmapped over every axis: axis ``i`` of ``vals[i]`` and of each batched leaf."""
  n = len(names)
  for i in reversed(range(n)):
    fn = jax.vmap(fn, in_axes=(tuple(0 if j == i else None for j in range(n)),) + (0,) * len(batched))
  return fn


@functools.partial(jax.jit, static_argnames=("solver", "names", "solver_kwargs"))
def _sweep_impl(values, problem, hparams, base_seed, *, solver, names, solver_kwargs):
  def solve_one(vals):
    key, p, h = _substitute(names, vals, problem, hparams, base_seed)
    return solver(key, p, h, **dict(solver_kwargs))
  return _nest(solve_one, names)(values)


@functools.partial(jax.jit, static_argnames=("stepper", "names", "init_kwargs"))
def _init_impl(values, problem, hparams, base_seed, *, stepper, names, init_kwargs):
  def one(vals):
    key, p, h = _substitute(names, vals, problem, hparams, base_seed)
    return stepper.init(key, p, h, **dict(init_kwargs))
  return _nest(one, names)(values)


@functools.partial(jax.jit, static_argnames=("stepper", "names", "advance_kwargs"))
def _advance_impl(state, values, problem, hparams, base_seed, *, stepper, names, advance_kwargs):
  def one(vals, s):
    _, p, h = _substitute(names, vals, problem, hparams, base_seed)
    s, rows = stepper.advance(s, p, h, **dict(advance_kwargs))
    return s, rows
  return _nest(one, names, state)(values, state)


@functools.partial(jax.jit, static_argnames=("stepper", "names"))
def _finish_impl(state, trace, values, hparams, *, stepper, names):
  def one(vals, s, t):
    h = hparams
    for name, v in zip(names, vals):
      if name in hparams._fields:
        h = h._replace(**{name: v})
    return stepper.finish(s, t, h)
  return _nest(one, names, state, trace)(values, state, trace)


def _fingerprint(values, problem, hparams, base_seed, names, solver_kwargs, chunk_steps) -> str:
  """SHA-256 of everything that determines the sweep's numbers (values, leaves, static options)."""
  h = hashlib.sha256()
  leaves, treedef = jax.tree.flatten((values, problem, hparams, base_seed))
  h.update(repr((str(treedef), names, solver_kwargs, chunk_steps, jax.config.jax_enable_x64)).encode())
  for leaf in leaves:
    a = np.asarray(leaf)
    h.update(repr((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _save_checkpoint(path: Path, fingerprint: str, chunks_done: int, state, rows):
  """Writes ``state`` and the trace rows so far to ``path`` atomically (temp file + ``os.replace``)."""
  leaves = jax.tree.leaves((state, rows))
  arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
  meta = dict(format=_CKPT_FORMAT, fingerprint=fingerprint, chunks_done=chunks_done, num_leaves=len(leaves))
  arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path: str | os.PathLike, write: Callable) -> None:
  """Writes a file atomically: ``write(f)`` into a temporary file beside ``path``, ``fsync``, then
  ``os.replace``; a reader sees the old file or the new one, never a partial one."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def _load_checkpoint(path: Path, fingerprint: str, like: Callable):
  """Reads a checkpoint written by :func:`_save_checkpoint` (never unpickles); ``like(chunks_done)`` is the
  abstract ``(state, rows)`` it must match. Returns ``(chunks_done, (state, rows))``."""
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(bytes(z["__meta__"]).decode())
      arrays = {k: z[k] for k in z.files if k != "__meta__"}
  except Exception as e:  # noqa: BLE001 -- any unreadable file is reported the same way
    raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start over") from e
  if meta.get("format") != _CKPT_FORMAT:
    raise CheckpointError(f"{path} is not a ufm sweep checkpoint (format {meta.get('format')!r}, expected "
                          f"{_CKPT_FORMAT!r})")
  if meta.get("fingerprint") != fingerprint:
    raise CheckpointError(f"checkpoint {path} belongs to a different sweep (other values, options or code); "
                          "delete it or choose another checkpoint path")
  ref_leaves, treedef = jax.tree.flatten(like(int(meta.get("chunks_done", 0))))
  leaves = [arrays.get(f"leaf_{i:05d}") for i in range(meta["num_leaves"])]
  if len(leaves) != len(ref_leaves) or any(
      x is None or x.shape != r.shape or x.dtype != r.dtype for x, r in zip(leaves, ref_leaves)):
    raise CheckpointError(f"checkpoint {path} does not match this sweep's state (shapes or dtypes differ)")
  return int(meta["chunks_done"]), jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])


def _concat_rows(rows, more, axis):
  if rows is None:
    return more
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=axis), rows, more)


def _run_chunked(stepper: Stepper, values, problem, hparams, base_seed, names, solver_kwargs, *, chunk_steps,
                 checkpoint, progress, n_configs):
  plan = stepper.plan(**solver_kwargs)  # validates the static options
  if chunk_steps is None:  # about 10 chunks
    units = plan.total // plan.granularity
    chunk_steps = plan.granularity * _divisor_near(units, max(units // 10, 1))
  if (isinstance(chunk_steps, bool) or not isinstance(chunk_steps, (int, np.integer)) or chunk_steps < 1
      or chunk_steps % plan.granularity or plan.total % chunk_steps):
    raise ValueError(f"chunk_steps = {chunk_steps!r}: allowed: a multiple of {plan.granularity} that divides "
                     f"{plan.total} (the solve's length)")
  init_kwargs = plan.init_kwargs
  advance_kwargs = tuple(sorted(plan.advance_kwargs + ((plan.chunk_arg, chunk_steps // plan.granularity),)))
  args = (values, problem, hparams, base_seed)
  total = plan.total // chunk_steps
  fp = _fingerprint(*args, names, tuple(sorted(solver_kwargs.items())), chunk_steps)
  t_axis = len(names)
  done, state, rows = 0, None, None
  if checkpoint is not None and Path(checkpoint).exists():
    abstract_state = jax.eval_shape(functools.partial(_init_impl, stepper=stepper, names=names,
                                                      init_kwargs=init_kwargs), *args)
    abstract_rows = jax.eval_shape(functools.partial(_advance_impl, stepper=stepper, names=names,
                                                     advance_kwargs=advance_kwargs), abstract_state, *args)[1]

    def like(chunks_done):  # the abstract (state, rows) after ``chunks_done`` chunks
      grow = lambda a: jax.ShapeDtypeStruct(
          a.shape[:t_axis] + (a.shape[t_axis] * chunks_done,) + a.shape[t_axis + 1:], a.dtype)
      return abstract_state, jax.tree.map(grow, abstract_rows)

    done, (state, rows) = _load_checkpoint(Path(checkpoint), fp, like)
    if not 1 <= done <= total:
      raise CheckpointError(f"checkpoint {checkpoint} records {done} chunks; this sweep has {total}")
  if state is None:
    state = _init_impl(*args, stepper=stepper, names=names, init_kwargs=init_kwargs)
  bar = None
  if progress:
    from tqdm.auto import tqdm  # imported lazily: only progress bars need it
    bar = tqdm(total=plan.total, initial=int(np.max(np.asarray(stepper.units_done(state)))), delay=2.0,
               unit="step", dynamic_ncols=True, desc=progress if isinstance(progress, str) else "sweep", leave=False)
  try:
    for c in range(done, total):
      if plan.early_stop and np.asarray(stepper.finished(state, plan.total)).all():
        break  # L-BFGS: every configuration has stopped; the remaining chunks would change nothing
      state, more = _advance_impl(state, *args, stepper=stepper, names=names, advance_kwargs=advance_kwargs)
      rows = _concat_rows(rows, more, t_axis)
      if checkpoint is not None:
        _save_checkpoint(Path(checkpoint), fp, c + 1, state, rows)
      if bar is not None:
        finished = np.asarray(stepper.finished(state, plan.total))
        bar.set_postfix_str(f"configs {int(finished.sum())}/{n_configs} done", refresh=False)
        reached = plan.total if finished.all() else int(np.max(np.asarray(stepper.units_done(state))))
        bar.update(reached - bar.n)
  finally:
    if bar is not None:
      bar.close()
  return _finish_impl(state, rows, values, hparams, stepper=stepper, names=names)


def sweep(solver: Callable, problem: ProblemLike, hparams: Any, *, axes: dict[str, Any], seed: int = 0,
          chunk_steps: int | None = None, checkpoint: str | os.PathLike | None = None,
          progress: bool | str = False, **solver_kwargs) -> SweepResult:
  """Solves the cartesian grid of ``axes`` with nested ``vmap`` in one jitted program.

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
    **solver_kwargs: static options passed to ``solver`` (``num_steps``, ``optimizer``, ...).

  Raises:
    ValueError: unknown axis names (listing the valid ones), empty or non-1-D axes,
      values out of range (weight decays ``>= 0``, :data:`ufm.solvers.HPARAM_RANGES` for solver
    knobs, seeds integers in ``[0, 2**32)``), and values that overflow the problem's dtype.
  """
  valid = ("seed",) + scalar_leaves(problem) + tuple(hparams._fields)
  names = tuple(axes)
  if not names:
    raise ValueError("axes is empty; give at least one of: " + ", ".join(valid))
  values, coords = [], {}
  for name in names:
    if name not in valid:
      raise ValueError(f"unknown sweep axis {name!r}; valid axes: {', '.join(valid)}")
    v = np.asarray(axes[name])
    if v.ndim != 1 or v.size == 0:
      raise ValueError(f"axis {name!r} has shape {v.shape}; allowed: a non-empty 1-D sequence")
    if name == "seed":
      values.append(jnp.asarray(check_seed("seed", v), jnp.uint32))
    else:
      if name == "lam_b" and not problem.bias:
        raise ValueError("axis 'lam_b' has no effect on a problem without a bias; allowed: a bias=True problem")
      bounds = dict(lo=0.0) if name in scalar_leaves(problem) else HPARAM_RANGES.get(name, {})
      values.append(cast_checked(name, check_real(name, v, **bounds), problem.dtype))
    coords[name] = v
  base_seed = jnp.asarray(check_seed("seed", seed), jnp.uint32)
  stepper = getattr(solver, "stepper", None)
  if chunk_steps is not None or checkpoint is not None or progress:
    if stepper is None:
      if chunk_steps is not None or checkpoint is not None:
        raise ValueError(f"chunk_steps/checkpoint need a resumable solver (one with a .stepper: gradient_descent, "
                         f"lbfgs_reference); {getattr(solver, '__name__', solver)} runs in one call")
    else:
      problem, hparams = _canonical(problem, hparams)
      n_configs = int(np.prod([len(c) for c in coords.values()]))
      sol = _run_chunked(stepper, tuple(values), problem, hparams, base_seed, names, solver_kwargs,
                         chunk_steps=chunk_steps, checkpoint=checkpoint, progress=progress, n_configs=n_configs)
      return SweepResult(solution=sol, axes=names, coords=coords)
  sol = _sweep_impl(tuple(values), problem, hparams, base_seed, solver=solver, names=names,
                    solver_kwargs=tuple(sorted(solver_kwargs.items())))
  return SweepResult(solution=sol, axes=names, coords=coords)


def _divisor_near(n: int, target: int) -> int:
  """The divisor of ``n`` closest to ``target`` (ties: the smaller)."""
  divs = [d for d in range(1, n + 1) if n % d == 0]
  return min(divs, key=lambda d: (abs(d - target), d))
