r"""Sweeps: nested ``vmap`` over named axes, one compilation per shape.

``sweep(solver, problem, hparams, axes={"lam_W": [...], "seed": [...]})`` solves the
cartesian product of the axis values in one jitted call. Each axis name is ``"seed"``
(integer seeds, turned into keys with ``jax.random.key`` inside the program), a weight
decay of the :class:`~ufm.problem.Problem` (``lam_W``, ``lam_H``, ``lam_b``), or a field
of the solver's hyperparameters (``lr``, ``momentum``, ``init_scale``, ...). The result
has one leading array axis per named axis, outermost first (STYLE.md B.5), and records
the names and values. Values are arguments of the compiled program, so a new value
never retraces; a new axis *length* or a new static option compiles once more.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.problem import Problem, cast_checked, check_real, check_seed
from ufm.solvers import HPARAM_RANGES

__all__ = ["SweepResult", "sweep"]

_PROBLEM_AXES = ("lam_W", "lam_H", "lam_b")


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


@functools.partial(jax.jit, static_argnames=("solver", "names", "solver_kwargs"))
def _sweep_impl(values, problem, hparams, base_seed, *, solver, names, solver_kwargs):
  def solve_one(*vals):
    p, h, seed = problem, hparams, base_seed
    for name, v in zip(names, vals):
      if name == "seed":
        seed = v
      elif name in _PROBLEM_AXES:
        p = p.replace(**{name: v})
      else:
        h = h._replace(**{name: v})
    return solver(jax.random.key(seed), p, h, **dict(solver_kwargs))

  fn = solve_one
  for i in reversed(range(len(names))):
    fn = jax.vmap(fn, in_axes=tuple(0 if j == i else None for j in range(len(names))))
  return fn(*values)


def sweep(solver: Callable, problem: Problem, hparams: Any, *, axes: dict[str, Any], seed: int = 0,
          **solver_kwargs) -> SweepResult:
  """Solves the cartesian grid of ``axes`` with nested ``vmap`` in one jitted program.

  Args:
    solver: a solver of :mod:`ufm.solvers`, ``(key, problem, hparams, **static) -> Solution``.
    problem: the base problem (its weight decays are replaced along their axes).
    hparams: the base hyperparameters (fields replaced along their axes).
    axes: ordered mapping axis name -> 1-D values (outermost first).
    seed: the seed used when ``"seed"`` is not an axis.
    **solver_kwargs: static options passed to ``solver`` (``num_steps``, ``optimizer``, ...).

  Raises:
    ValueError: unknown axis names (listing the valid ones), empty or non-1-D axes,
      values out of range (weight decays ``>= 0``, :data:`ufm.solvers.HPARAM_RANGES` for solver
    knobs, seeds integers in ``[0, 2**32)``), and values that overflow the problem's dtype.
  """
  valid = ("seed",) + _PROBLEM_AXES + tuple(hparams._fields)
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
      bounds = dict(lo=0.0) if name in _PROBLEM_AXES else HPARAM_RANGES.get(name, {})
      values.append(cast_checked(name, check_real(name, v, **bounds), problem.dtype))
    coords[name] = v
  base_seed = jnp.asarray(check_seed("seed", seed), jnp.uint32)
  sol = _sweep_impl(tuple(values), problem, hparams, base_seed, solver=solver, names=names,
                    solver_kwargs=tuple(sorted(solver_kwargs.items())))
  return SweepResult(solution=sol, axes=names, coords=coords)
