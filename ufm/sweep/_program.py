"""The compiled programs of a sweep: nested ``vmap`` over the grid, and ``lax.map``/``shard_map`` over a flat axis.

Private to :mod:`ufm.sweep` (shared by :mod:`ufm.sweep.plan` and :mod:`ufm.sweep.run`).
"""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ufm.sweep.axes import flat_values, substitute
from ufm.sweep.progress import progress_bar

AXIS = "config"


def nest(fn, names, *batched):
  """``fn(vals, *batched)`` vmapped over every axis: axis ``i`` of ``vals[i]`` and of each batched leaf."""
  n = len(names)
  for i in reversed(range(n)):
    fn = jax.vmap(fn, in_axes=(tuple(0 if j == i else None for j in range(n)),) + (0,) * len(batched))
  return fn


@functools.partial(jax.jit, static_argnames=("solver", "names", "solver_kwargs"))
def sweep_impl(values, problem, hparams, base_seed, *, solver, names, solver_kwargs):
  """The unplanned sweep: ``solver`` on every grid point, one nested-``vmap`` program."""
  def solve_one(vals):
    key, p, h = substitute(names, vals, problem, hparams, base_seed)
    return solver(key, p, h, **dict(solver_kwargs))
  return nest(solve_one, names)(values)


@functools.partial(jax.jit, static_argnames=("stepper", "names", "init_kwargs"))
def init_nested(values, problem, hparams, base_seed, *, stepper, names, init_kwargs):
  """``stepper.init`` on every grid point (nested ``vmap``)."""
  def one(vals):
    key, p, h = substitute(names, vals, problem, hparams, base_seed)
    return stepper.init(key, p, h, **dict(init_kwargs))
  return nest(one, names)(values)


# the state is donated: each chunk replaces it, so XLA may update it in place (half the state memory)
@functools.partial(jax.jit, static_argnames=("stepper", "names", "advance_kwargs"), donate_argnums=(0,))
def advance_nested(state, values, problem, hparams, base_seed, *, stepper, names, advance_kwargs):
  """``stepper.advance`` (one chunk of steps) on every grid point (nested ``vmap``); returns ``(state, rows)``."""
  def one(vals, s):
    _, p, h = substitute(names, vals, problem, hparams, base_seed)
    return stepper.advance(s, p, h, **dict(advance_kwargs))
  return nest(one, names, state)(values, state)


@functools.partial(jax.jit, static_argnames=("stepper", "names"))
def finish_nested(state, trace, values, hparams, *, stepper, names):
  """``stepper.finish`` on every grid point (nested ``vmap``): the solver's output from the state and trace rows."""
  def one(vals, s, t):
    h = hparams
    for name, v in zip(names, vals):
      if name in hparams._fields:
        h = h._replace(**{name: v})
    return stepper.finish(s, t, h)
  return nest(one, names, state, trace)(values, state, trace)


class Task(NamedTuple):
  """The per-configuration function of a planned sweep (hashable: a static argument of :data:`mapped`)."""
  kind: str  # "solve", "init", "advance" or "finish"
  fn: Any  # the solver ("solve") or its Stepper
  names: tuple
  kwargs: tuple

  def __call__(self, vals, carry, problem, hparams, base_seed):
    key, p, h = substitute(self.names, vals, problem, hparams, base_seed)
    kw = dict(self.kwargs)
    if self.kind == "solve":
      return self.fn(key, p, h, **kw)
    if self.kind == "init":
      return self.fn.init(key, p, h, **kw)
    if self.kind == "advance":
      return self.fn.advance(carry, p, h, **kw)
    return self.fn.finish(carry[0], carry[1], h)


def mesh(devices: int) -> Mesh:
  """The 1-D mesh ``("config",)`` of the first ``devices`` devices."""
  return Mesh(np.asarray(jax.devices()[:devices]), (AXIS,))


def _mapped_fn(vals, carry, shared, *, task, batch, devices):
  """``task`` over the leading (configuration) axis of ``vals`` and ``carry``: ``lax.map`` over batches of
  ``batch`` vmapped configurations, inside ``shard_map`` over ``devices`` devices when ``devices > 1``."""
  def local(vals, carry, shared):
    return jax.lax.map(lambda x: task(x[0], x[1], *shared), (vals, carry), batch_size=batch)
  if devices == 1:
    return local(vals, carry, shared)
  return jax.shard_map(local, mesh=mesh(devices), in_specs=(P(AXIS), P(AXIS), P()), out_specs=P(AXIS),
                       check_vma=False)(vals, carry, shared)


mapped = jax.jit(_mapped_fn, static_argnames=("task", "batch", "devices"))
# advance: the per-call state (a fresh slice) is donated and replaced by the new state
mapped_donating = jax.jit(_mapped_fn, static_argnames=("task", "batch", "devices"), donate_argnums=(1,))


def is_key(x) -> bool:
  """Whether ``x`` is a typed PRNG key array."""
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_host(x):
  """A (possibly sharded, possibly multi-host) array as a NumPy array (PRNG key arrays stay JAX arrays)."""
  if is_key(x):
    return x
  if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-host only
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def put(tree, devices: int, spec):
  """Places host arrays on the mesh: ``spec`` ``P("config")`` splits the leading axis, ``P()`` replicates.
  ``make_array_from_callback`` works on one host and on many (each process holds the whole array)."""
  if devices == 1:
    return tree
  sharding = NamedSharding(mesh(devices), spec)

  def one(x):
    if is_key(x):
      return jax.device_put(x, sharding)
    a = np.asarray(x)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree.map(one, tree)


def nbytes(tree) -> int:
  """Total bytes of the (concrete or abstract) arrays of ``tree``."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def run_planned(task: Task, values, carry, shared, plan, *, progress=False):
  """Runs ``task`` over the grid of ``values`` (``carry``: per-configuration inputs with leading grid axes)
  according to ``plan`` (a :class:`ufm.sweep.SweepPlan`); returns outputs with leading grid axes.

  The ``C`` configurations (row-major) go in calls of ``plan.chunk * plan.devices``; a call's last group is
  padded with the last configuration to a multiple of ``plan.batch * plan.devices`` and the padding dropped.
  """
  shape = tuple(len(v) for v in values)
  n = len(shape)
  C = math.prod(shape)
  flat = flat_values(values)
  carry = jax.tree.map(lambda x: x.reshape((C,) + x.shape[n:]), carry)
  group = plan.batch * plan.devices  # a call holds a multiple of this many configurations
  per_call = plan.chunk * plan.devices
  calls = range(0, C, per_call)
  shared = put(shared, plan.devices, P())
  bar = progress_bar(progress if len(calls) > 1 else False, total=C, unit="config")
  outs = []
  try:
    for start in calls:
      m = min(per_call, C - start)
      idx = np.minimum(np.arange(start, start + -(-m // group) * group), C - 1)  # pad with the last configuration
      v = put(tuple(f[idx] for f in flat), plan.devices, P(AXIS))
      c = put(jax.tree.map(lambda x: x[idx], carry), plan.devices, P(AXIS))
      call = mapped_donating if task.kind == "advance" else mapped
      out = call(v, c, shared, task=task, batch=plan.batch, devices=plan.devices)
      if len(calls) > 1 or plan.devices > 1 or len(idx) > m:
        out = jax.tree.map(lambda x: to_host(x)[:m], out)
      outs.append(out)
      if bar is not None:
        bar.update(m)
  finally:
    if bar is not None:
      bar.close()
  if len(outs) == 1:
    out = outs[0]
  else:
    out = jax.tree.map(lambda *xs: (jnp.concatenate if is_key(xs[0]) else np.concatenate)(xs), *outs)
  if any(isinstance(x, np.ndarray) for x in jax.tree.leaves(out)) and nbytes(out) <= plan.budget:
    out = jax.tree.map(jnp.asarray, out)  # back on the default device when it fits
  return jax.tree.map(lambda x: x.reshape(shape + x.shape[1:]), out)
