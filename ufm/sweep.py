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

**Planning the configuration axis.** The grid is also a flat axis of ``C`` configurations
(row-major), which :func:`sweep` runs according to a :class:`SweepPlan` (``plan="auto"`` by
default, see :func:`plan_sweep`): ``devices`` shards the axis over a 1-D device mesh
(``jax.sharding``, ``shard_map``; every device runs its share with no communication, and the
same code runs on several hosts after ``jax.distributed.initialize()``), ``batch``
configurations are vmapped together and ``lax.map`` runs the batches of a device in sequence
(on a CPU a narrow batch stays in cache; on an accelerator a wide one fills the device), and
``chunk`` configurations per device go into one call of the compiled program, so that a sweep
of any size fits a memory budget (the estimate comes from the compiled program's
``memory_analysis()``). A progress bar counts the configurations. The numbers do not depend on
the plan (equal to the one-program sweep to rounding, tested in float64).
"""

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ufm.problem import ProblemLike, cast_checked, check_real, check_seed
from ufm.solvers import HPARAM_RANGES, Stepper, canonicalise, scalar_leaves

__all__ = ["CheckpointError", "SweepPlan", "SweepResult", "atomic_write", "available_memory", "plan_sweep", "sweep"]

_CKPT_FORMAT = "ufm-sweep-checkpoint/1"


class CheckpointError(ValueError):
  """A checkpoint file that is unreadable, not a ufm checkpoint, or belongs to another sweep."""



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
def _init_nested(values, problem, hparams, base_seed, *, stepper, names, init_kwargs):
  def one(vals):
    key, p, h = _substitute(names, vals, problem, hparams, base_seed)
    return stepper.init(key, p, h, **dict(init_kwargs))
  return _nest(one, names)(values)


# the state is donated: each chunk replaces it, so XLA may update it in place (half the state memory)
@functools.partial(jax.jit, static_argnames=("stepper", "names", "advance_kwargs"), donate_argnums=(0,))
def _advance_nested(state, values, problem, hparams, base_seed, *, stepper, names, advance_kwargs):
  def one(vals, s):
    _, p, h = _substitute(names, vals, problem, hparams, base_seed)
    s, rows = stepper.advance(s, p, h, **dict(advance_kwargs))
    return s, rows
  return _nest(one, names, state)(values, state)


@functools.partial(jax.jit, static_argnames=("stepper", "names"))
def _finish_nested(state, trace, values, hparams, *, stepper, names):
  def one(vals, s, t):
    h = hparams
    for name, v in zip(names, vals):
      if name in hparams._fields:
        h = h._replace(**{name: v})
    return stepper.finish(s, t, h)
  return _nest(one, names, state, trace)(values, state, trace)


def _init_impl(values, problem, hparams, base_seed, *, stepper, names, init_kwargs, plan=None):
  if plan is None or plan.plain:
    return _init_nested(values, problem, hparams, base_seed, stepper=stepper, names=names, init_kwargs=init_kwargs)
  task = _Task("init", stepper, names, init_kwargs)
  return _run_planned(task, values, None, (problem, hparams, base_seed), plan)


def _advance_impl(state, values, problem, hparams, base_seed, *, stepper, names, advance_kwargs, plan=None):
  """One chunk of steps for every configuration (called once per chunk; tests count the calls)."""
  if plan is None or plan.plain:
    return _advance_nested(state, values, problem, hparams, base_seed, stepper=stepper, names=names,
                           advance_kwargs=advance_kwargs)
  task = _Task("advance", stepper, names, advance_kwargs)
  return _run_planned(task, values, state, (problem, hparams, base_seed), plan)


def _finish_impl(state, trace, values, problem, hparams, base_seed, *, stepper, names, plan=None):
  if plan is None or plan.plain:
    return _finish_nested(state, trace, values, hparams, stepper=stepper, names=names)
  task = _Task("finish", stepper, names, ())
  return _run_planned(task, values, (state, trace), (problem, hparams, base_seed), plan)


# ------------------------------------------------------------------------------------------------- planning

class SweepPlan(NamedTuple):
  """How :func:`sweep` runs the flat axis of its ``C`` configurations (the grid in row-major order).

  Attributes:
    devices: devices the configuration axis is sharded over (a 1-D mesh ``("config",)`` of the first
      ``devices`` of ``jax.devices()``); each runs ``ceil(C / devices)`` configurations.
    batch: configurations vmapped together on one device; ``lax.map`` runs a device's batches in sequence.
    chunk: configurations per device in one call of the compiled program (a multiple of ``batch``); sized
      so that a call fits the memory budget. Outputs go to the host between calls.
    plain: the whole grid as one nested-``vmap`` program (the unplanned sweep: one device, one batch, one call).
    source: ``"user"`` (given), ``"plain"`` (small sweep), ``"heuristic"``, ``"calibrated"`` (batch timed) or
      ``"cached"`` (batch from an earlier calibration in this process).
    bytes_per_config: estimated device memory per configuration of a call (0: not estimated, small sweep).
    budget: the device-memory budget per device the chunk was sized for (bytes).
  """
  devices: int
  batch: int
  chunk: int
  plain: bool = False
  source: str = "user"
  bytes_per_config: int = 0
  budget: int = 0


class _Task(NamedTuple):
  """The per-configuration function of a planned sweep (hashable: a static argument of :func:`_mapped`)."""
  kind: str  # "solve", "init", "advance" or "finish"
  fn: Any  # the solver ("solve") or its Stepper
  names: tuple
  kwargs: tuple

  def __call__(self, vals, carry, problem, hparams, base_seed):
    key, p, h = _substitute(self.names, vals, problem, hparams, base_seed)
    kw = dict(self.kwargs)
    if self.kind == "solve":
      return self.fn(key, p, h, **kw)
    if self.kind == "init":
      return self.fn.init(key, p, h, **kw)
    if self.kind == "advance":
      return self.fn.advance(carry, p, h, **kw)
    return self.fn.finish(carry[0], carry[1], h)


_AXIS = "config"


def _mesh(devices: int) -> Mesh:
  return Mesh(np.asarray(jax.devices()[:devices]), (_AXIS,))


def _mapped_fn(vals, carry, shared, *, task, batch, devices):
  """``task`` over the leading (configuration) axis of ``vals`` and ``carry``: ``lax.map`` over batches of
  ``batch`` vmapped configurations, inside ``shard_map`` over ``devices`` devices when ``devices > 1``."""
  def local(vals, carry, shared):
    return jax.lax.map(lambda x: task(x[0], x[1], *shared), (vals, carry), batch_size=batch)
  if devices == 1:
    return local(vals, carry, shared)
  return jax.shard_map(local, mesh=_mesh(devices), in_specs=(P(_AXIS), P(_AXIS), P()), out_specs=P(_AXIS),
                       check_vma=False)(vals, carry, shared)


_mapped = jax.jit(_mapped_fn, static_argnames=("task", "batch", "devices"))
# advance: the per-call state (a fresh slice) is donated and replaced by the new state
_mapped_donating = jax.jit(_mapped_fn, static_argnames=("task", "batch", "devices"), donate_argnums=(1,))


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_host(x):
  """A (possibly sharded, possibly multi-host) array as a NumPy array (PRNG key arrays stay JAX arrays)."""
  if _is_key(x):
    return x
  if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-host only
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _put(tree, devices: int, spec):
  """Places host arrays on the mesh: ``spec`` ``P("config")`` splits the leading axis, ``P()`` replicates.
  ``make_array_from_callback`` works on one host and on many (each process holds the whole array)."""
  if devices == 1:
    return tree
  sharding = NamedSharding(_mesh(devices), spec)

  def put(x):
    if _is_key(x):
      return jax.device_put(x, sharding)
    a = np.asarray(x)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree.map(put, tree)


def _flat_values(values) -> tuple[np.ndarray, ...]:
  """The cartesian grid of the axis values as flat vectors (row-major: the last axis varies fastest)."""
  grids = np.meshgrid(*[np.asarray(v) for v in values], indexing="ij")
  return tuple(g.reshape(-1) for g in grids)


def _nbytes(tree) -> int:
  return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _run_planned(task: _Task, values, carry, shared, plan: SweepPlan, *, progress=False):
  """Runs ``task`` over the grid of ``values`` (``carry``: per-configuration inputs with leading grid axes)
  according to ``plan``; returns outputs with leading grid axes."""
  shape = tuple(len(v) for v in values)
  n = len(shape)
  C = math.prod(shape)
  flat = _flat_values(values)
  carry = jax.tree.map(lambda x: x.reshape((C,) + x.shape[n:]), carry)
  group = plan.batch * plan.devices  # a call holds a multiple of this many configurations
  per_call = plan.chunk * plan.devices
  calls = range(0, C, per_call)
  shared = _put(shared, plan.devices, P())
  bar = None
  if progress and len(calls) > 1:
    from tqdm.auto import tqdm  # imported lazily: only progress bars need it
    bar = tqdm(total=C, unit="config", delay=2.0, dynamic_ncols=True, leave=False,
               desc=progress if isinstance(progress, str) else "sweep")
  outs = []
  try:
    for start in calls:
      m = min(per_call, C - start)
      idx = np.minimum(np.arange(start, start + -(-m // group) * group), C - 1)  # pad with the last configuration
      v = _put(tuple(f[idx] for f in flat), plan.devices, P(_AXIS))
      c = _put(jax.tree.map(lambda x: x[idx], carry), plan.devices, P(_AXIS))
      call = _mapped_donating if task.kind == "advance" else _mapped
      out = call(v, c, shared, task=task, batch=plan.batch, devices=plan.devices)
      if len(calls) > 1 or plan.devices > 1 or len(idx) > m:
        out = jax.tree.map(lambda x: _to_host(x)[:m], out)
      outs.append(out)
      if bar is not None:
        bar.update(m)
  finally:
    if bar is not None:
      bar.close()
  if len(outs) == 1:
    out = outs[0]
  else:
    out = jax.tree.map(lambda *xs: (jnp.concatenate if _is_key(xs[0]) else np.concatenate)(xs), *outs)
  if any(isinstance(x, np.ndarray) for x in jax.tree.leaves(out)) and _nbytes(out) <= plan.budget:
    out = jax.tree.map(jnp.asarray, out)  # back on the default device when it fits
  return jax.tree.map(lambda x: x.reshape(shape + x.shape[1:]), out)


def available_memory(device=None) -> int:
  """Free memory of ``device`` (default: the first device) in bytes: the allocator's limit minus its use on
  an accelerator; ``MemAvailable`` of ``/proc/meminfo`` (else free physical pages) on a CPU."""
  device = device or jax.devices()[0]
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


#: Fraction of :func:`available_memory` a sweep plans to use by default.
MEMORY_FRACTION = 0.5
#: On a CPU, the widest batch the heuristic picks without timing (the issue's measurement: chunks of 8
#: beat both a loop and one wide vmap at K = 10, d = 64, N = 1000).
_CPU_BATCH = 8
#: Calibrate the CPU batch width when configurations x steps x parameters exceeds this (a sweep of seconds).
_CALIBRATE_WORK = 1e9
_CALIBRATION: dict = {}


def _calibration_key(problem, hparams, per_device: int):
  leaves, treedef = jax.tree.flatten((problem, hparams))
  dev = jax.devices()[0]
  return (dev.platform, dev.device_kind, type(problem).__qualname__, str(treedef),
          tuple((tuple(np.shape(x)), str(jnp.result_type(x))) for x in leaves), per_device)


def _calibrated_batch(problem, hparams, per_device: int) -> tuple[int, str]:
  """The batch width with the shortest time per configuration-step of a gradient step ``p - eta grad f(p)`` of
  ``problem``, timed for widths 1, 2, 4, ... <= min(64, ``per_device``) on one device, stopping once a width is
  1.5x slower than the best (cached per shape, dtype and backend).
  The gradient step is the hot loop of every first-order solver, for any problem class (``value``/``init``)."""
  key = _calibration_key(problem, hparams, per_device)
  if key in _CALIBRATION:
    return _CALIBRATION[key], "cached"
  grad = jax.grad(lambda params, problem: problem.value(params))
  init_scale = getattr(hparams, "init_scale", jnp.asarray(0.1, problem.dtype))
  times = {}
  for b in (1, 2, 4, 8, 16, 32, 64):
    if b > per_device:
      break

    @jax.jit
    def run(keys):
      params = jax.vmap(lambda k: problem.init(k, init_scale))(keys)
      step = lambda _, p: jax.tree.map(lambda x, g: x - 1e-3 * g, p, jax.vmap(grad, (0, None))(p, problem))
      return jax.lax.fori_loop(0, 10, step, params)

    keys = jax.random.split(jax.random.key(0), b)
    jax.block_until_ready(run(keys))
    best = math.inf
    for _ in range(2):
      t0 = time.perf_counter()
      jax.block_until_ready(run(keys))
      best = min(best, time.perf_counter() - t0)
    times[b] = best / b
    if times[b] > 1.5 * min(times.values()):
      break  # past the cache cliff: wider batches only get slower
  batch = min(times, key=times.get)
  _CALIBRATION[key] = batch
  return batch, "calibrated"


def _work_units(stepper, solver_kwargs) -> int:
  """Steps (GD) or iterations (L-BFGS) of one solve, for the calibration threshold (1 when unknown)."""
  if stepper is None:
    return int(solver_kwargs.get("num_steps", solver_kwargs.get("max_steps", 1)))
  return stepper.plan(**solver_kwargs).total


def _check_plan_int(name: str, value, lo: int, hi: int | None = None) -> int:
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
  if not ok or value < lo or (hi is not None and value > hi):
    rng = f"integers {lo} <= {name} <= {hi}" if hi is not None else f"integers >= {lo}"
    raise ValueError(f"plan {name} = {value!r} is out of range; allowed: {rng}")
  return int(value)


def _resolve_plan(plan, task: _Task, values, carry_like, shared, *, memory_budget, units: int) -> SweepPlan:
  """Turns ``plan`` (``"auto"``, ``"plain"``, a :class:`SweepPlan` or a dict of some of its fields) into a
  full :class:`SweepPlan` for ``task`` (``carry_like``: abstract per-configuration inputs, leading grid axes)."""
  C = math.prod(len(v) for v in values)
  if isinstance(plan, str):
    if plan not in ("auto", "plain"):
      raise ValueError(f"plan = {plan!r}: allowed: 'auto', 'plain', a SweepPlan or a dict with keys devices, batch, "
                       "chunk")
    user = {}
  elif isinstance(plan, (SweepPlan, dict)):
    user = {k: v for k, v in (plan._asdict() if isinstance(plan, SweepPlan) else plan).items()
            if k in ("devices", "batch", "chunk") and v is not None}
    extra = set(plan) - set(SweepPlan._fields) if isinstance(plan, dict) else set()
    if extra:
      raise ValueError(f"plan has unknown keys {sorted(extra)}; allowed: devices, batch, chunk")
  else:
    raise ValueError(f"plan = {plan!r}: allowed: 'auto', 'plain', a SweepPlan or a dict with keys devices, batch, "
                     "chunk")
  if memory_budget is not None:
    memory_budget = _check_plan_int("memory_budget", memory_budget, 1)
  n_dev = len(jax.devices())
  devices = _check_plan_int("devices", user["devices"], 1, n_dev) if "devices" in user else min(n_dev, C)
  per_device = -(-C // devices)
  problem, hparams = shared[0], shared[1]
  on_cpu = jax.devices()[0].platform == "cpu"
  budget = memory_budget or int(MEMORY_FRACTION * available_memory() / (devices if on_cpu else 1))
  if jax.process_count() > 1:  # every process must run the same plan: process 0's budget, no timing
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-host only
    budget = int(multihost_utils.broadcast_one_to_all(np.int64(budget)))
  if plan == "plain":
    return SweepPlan(devices=1, batch=C, chunk=C, plain=True, source="user", budget=budget)
  if "batch" in user:
    batch, source = _check_plan_int("batch", user["batch"], 1), "user"
  elif not on_cpu or per_device <= _CPU_BATCH:
    batch, source = per_device, "heuristic"
  elif jax.process_count() > 1:  # a timing could differ between hosts, and their plans must agree
    batch, source = _CPU_BATCH, "heuristic"
  elif C * units * sum(np.size(x) for x in jax.tree.leaves(jax.eval_shape(
      lambda: problem.init(jax.random.key(0), jnp.asarray(1.0, problem.dtype))))) < _CALIBRATE_WORK:
    batch, source = _CPU_BATCH, "heuristic"
  else:
    batch, source = _calibrated_batch(problem, hparams, per_device)
  batch = min(batch, per_device)
  bytes_per_config = 0
  if "chunk" in user:
    chunk = _check_plan_int("chunk", user["chunk"], 1)
    if chunk % batch:
      raise ValueError(f"plan chunk = {chunk} is not a multiple of batch = {batch}; allowed: a multiple of batch")
  else:
    chunk, batch, bytes_per_config = _memory_chunk(task, values, carry_like, shared, batch=batch,
                                                   per_device=per_device, budget=budget, fixed_batch="batch" in user)
  chunk = min(chunk, -(-per_device // batch) * batch)
  plain = devices == 1 and batch >= C and chunk >= C
  return SweepPlan(devices=devices, batch=batch, chunk=chunk, plain=plain,
                   source="plain" if plain and source == "heuristic" else source, bytes_per_config=bytes_per_config,
                   budget=budget)


def _abstract_inputs(values, carry_like, n: int):
  """Abstract (vals, carry) of ``n`` configurations (leading axis ``n``; the carry's grid axes flattened)."""
  k = len(values)
  vals = tuple(jax.ShapeDtypeStruct((n,), np.asarray(v).dtype) for v in values)
  carry = jax.tree.map(lambda x: jax.ShapeDtypeStruct((n,) + x.shape[k:], x.dtype), carry_like)
  return vals, carry


_SCRATCH: dict = {}


def _scratch_bytes(task, vals_b, carry_b, shared_b, batch) -> int | None:
  """Scratch memory of the compiled program for one batch (``memory_analysis().temp_size_in_bytes``; ``None``
  where the backend does not report it), cached per task, shapes and batch (one compilation each)."""
  leaves, treedef = jax.tree.flatten((vals_b, carry_b, shared_b))
  key = (task, treedef, tuple((x.shape, str(x.dtype)) for x in leaves), batch)
  if key not in _SCRATCH:
    if len(_SCRATCH) >= 64:
      _SCRATCH.clear()
    stats = _mapped.lower(vals_b, carry_b, shared_b, task=task, batch=batch, devices=1).compile().memory_analysis()
    _SCRATCH[key] = None if stats is None else int(stats.temp_size_in_bytes)
  return _SCRATCH[key]


def _memory_chunk(task, values, carry_like, shared, *, batch, per_device, budget, fixed_batch):
  """Configurations per device per call that fit ``budget``: ``temp(batch) + chunk * io`` with ``temp`` the
  scratch memory of the compiled program for one batch and ``io`` its input + output bytes per configuration
  (``memory_analysis()`` of the compiled program). Small sweeps (a generous shape-only estimate far below the
  budget) skip the compilation. Returns ``(chunk, batch, bytes_per_config)``; the batch may shrink to fit."""
  vals1, carry1 = _abstract_inputs(values, carry_like, 1)
  out1 = jax.eval_shape(functools.partial(_mapped, task=task, batch=1, devices=1), vals1, carry1, shared)
  io = _nbytes(out1) + _nbytes(carry1) + _nbytes(vals1)
  C = math.prod(len(v) for v in values)
  host = available_memory(jax.local_devices(backend="cpu")[0])
  if C * _nbytes(out1) > MEMORY_FRACTION * host:  # the results themselves are gathered on the host
    raise ValueError(f"the sweep's results need about {C * _nbytes(out1)} bytes ({C} configurations x "
                     f"{_nbytes(out1)}), more than {MEMORY_FRACTION:g} of the host's available memory ({host} bytes); "
                     "allowed: fewer configurations per sweep call (split an axis), fewer trace rows (log_every)")
  if per_device * 16 * (io + _nbytes(out1)) <= budget:  # everything fits many times over
    return -(-per_device // batch) * batch, batch, 0
  while True:
    vals_b, carry_b = _abstract_inputs(values, carry_like, batch)
    temp = _scratch_bytes(task, vals_b, carry_b, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), shared),
                          batch)
    temp = 8 * batch * io if temp is None else temp
    if temp + batch * io <= budget or batch == 1 or fixed_batch:
      break
    batch = max(1, batch // 2)
  if temp + batch * io > budget:
    raise ValueError(f"memory_budget = {budget} bytes is too small: one call of {batch} configuration(s) needs about "
                     f"{temp + batch * io} bytes; allowed: a budget of at least that (or a smaller plan batch)")
  chunk = max(batch, (budget - temp) // io // batch * batch)
  return int(chunk), batch, int(temp // batch + io)


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
                 checkpoint, progress, n_configs, plan, memory_budget):
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
  fp = _fingerprint(*args, names, tuple(sorted(solver_kwargs.items())), chunk_steps)
  t_axis = len(names)
  abstract_state = jax.eval_shape(functools.partial(_init_nested, stepper=stepper, names=names,
                                                    init_kwargs=init_kwargs), *args)
  plan = _resolve_plan(plan, _Task("advance", stepper, names, advance_kwargs), values, abstract_state,
                       (problem, hparams, base_seed), memory_budget=memory_budget, units=splan.total)
  done, state, rows = 0, None, None
  if checkpoint is not None and Path(checkpoint).exists():
    abstract_rows = jax.eval_shape(functools.partial(_advance_nested, stepper=stepper, names=names,
                                                     advance_kwargs=advance_kwargs), abstract_state, *args)[1]

    def like(chunks_done):  # the abstract (state, rows) after ``chunks_done`` chunks
      grow = lambda a: jax.ShapeDtypeStruct(
          a.shape[:t_axis] + (a.shape[t_axis] * chunks_done,) + a.shape[t_axis + 1:], a.dtype)
      return abstract_state, jax.tree.map(grow, abstract_rows)

    done, (state, rows) = _load_checkpoint(Path(checkpoint), fp, like)
    if not 1 <= done <= total:
      raise CheckpointError(f"checkpoint {checkpoint} records {done} chunks; this sweep has {total}")
  if state is None:
    state = _init_impl(*args, stepper=stepper, names=names, init_kwargs=init_kwargs, plan=plan)
  bar = None
  if progress:
    from tqdm.auto import tqdm  # imported lazily: only progress bars need it
    bar = tqdm(total=splan.total, initial=int(np.max(np.asarray(stepper.units_done(state)))), delay=2.0,
               unit="step", dynamic_ncols=True, desc=progress if isinstance(progress, str) else "sweep", leave=False)
  try:
    for c in range(done, total):
      if splan.early_stop and np.asarray(stepper.finished(state, splan.total)).all():
        break  # L-BFGS: every configuration has stopped; the remaining chunks would change nothing
      state, more = _advance_impl(state, *args, stepper=stepper, names=names, advance_kwargs=advance_kwargs,
                                  plan=plan)
      rows = _concat_rows(rows, more, t_axis)
      if checkpoint is not None:
        _save_checkpoint(Path(checkpoint), fp, c + 1, state, rows)
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


def _parse_axes(problem, hparams, axes, seed):
  """Validates the sweep axes (Python-level); returns ``(names, values, coords, base_seed)``."""
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
  return names, tuple(values), coords, jnp.asarray(check_seed("seed", seed), jnp.uint32)


def plan_sweep(solver: Callable, problem: ProblemLike, hparams: Any, *, axes: dict[str, Any], plan="auto",
               memory_budget: int | None = None, **solver_kwargs) -> SweepPlan:
  r"""The :class:`SweepPlan` that :func:`sweep` would run these arguments with (nothing is solved).

  Rules (``plan="auto"``; ``C`` configurations, ``D`` devices visible):

  * ``devices = min(D, C)``: the configuration axis is sharded over every visible device. On a CPU
    JAX shows one device unless asked for more before its backend starts
    (``jax.config.update("jax_num_cpu_devices", n)`` or
    ``XLA_FLAGS=--xla_force_host_platform_device_count=n``); one per core lets the cores run
    configurations side by side.
  * ``batch``: on an accelerator, every configuration of a device at once (one wide ``vmap``). On a CPU,
    up to 8 configurations per device take one ``vmap``; a larger sweep (configurations x steps x
    parameters >= 1e9) times a gradient step at widths 1, 2, 4, ..., 64 once per shape and backend
    and takes the fastest per configuration (a wide batch falls out of cache and runs slower than a
    loop there).
  * ``chunk``: as many configurations per call as fit ``memory_budget`` bytes per device (default
    :data:`MEMORY_FRACTION` of :func:`available_memory`, shared between the host devices of a CPU),
    from the compiled program's ``memory_analysis()``: scratch memory of one batch plus the inputs
    and outputs of each configuration. The batch halves until one batch fits; a budget too small for
    a single configuration raises ``ValueError``.

  ``plan`` overrides: ``"plain"`` (one nested-``vmap`` program, the unplanned sweep), or a
  :class:`SweepPlan` / a dict with any of ``devices``, ``batch``, ``chunk`` (the rest is planned).

  Raises:
    ValueError: as :func:`sweep`, and for plan fields out of range (``1 <= devices <= D``,
      ``batch >= 1``, ``chunk`` a positive multiple of ``batch``).
  """
  names, values, _, base_seed = _parse_axes(problem, hparams, axes, 0)
  problem, hparams = canonicalise(problem, hparams)
  stepper = getattr(solver, "stepper", None)
  return _resolve_plan(plan, _Task("solve", solver, names, tuple(sorted(solver_kwargs.items()))), values, None,
                       (problem, hparams, base_seed), memory_budget=memory_budget,
                       units=_work_units(stepper, solver_kwargs))


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
  names, values, coords, base_seed = _parse_axes(problem, hparams, axes, seed)
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
    plan = _resolve_plan(plan, _Task("solve", solver, names, kwargs), values, None, (problem, hparams, base_seed),
                         memory_budget=memory_budget, units=_work_units(stepper, solver_kwargs))
  if plan == "plain" or plan.plain:
    sol = _sweep_impl(values, problem, hparams, base_seed, solver=solver, names=names, solver_kwargs=kwargs)
    if plan == "plain":
      C = math.prod(len(v) for v in values)
      plan = SweepPlan(devices=1, batch=C, chunk=C, plain=True, source="user")
  else:
    sol = _run_planned(_Task("solve", solver, names, kwargs), values, None, (problem, hparams, base_seed), plan,
                       progress=progress)
  return SweepResult(solution=sol, axes=names, coords=coords, plan=plan)


def _divisor_near(n: int, target: int) -> int:
  """The divisor of ``n`` closest to ``target`` (ties: the smaller)."""
  divs = [d for d in range(1, n + 1) if n % d == 0]
  return min(divs, key=lambda d: (abs(d - target), d))
