"""Sweep axes: validation of the named axes, their cartesian grid, and substitution of one grid point."""

import jax
import jax.numpy as jnp
import numpy as np

from ufm.solvers import HPARAM_RANGES, scalar_leaves
from ufm.validate import cast_checked, check_real, check_seed

__all__ = ["flat_values", "parse_axes", "substitute"]


def parse_axes(problem, hparams, axes, seed):
  """Validates the sweep axes (in Python, before anything is traced); returns ``(names, values, coords, base_seed)``.

  An axis name is ``"seed"`` (integers in ``[0, 2**32)``), a scalar leaf of the problem (its weight decays, e.g.
  ``lam_W``, values ``>= 0``; ``lam_b`` only for a problem with a bias) or a field of the solver's hyperparameters
  (ranges of :data:`ufm.solvers.HPARAM_RANGES`). ``values`` are the device vectors (seeds ``uint32``, the rest in
  the problem's dtype, refusing overflow), ``coords`` the NumPy vectors as given, ``base_seed`` the ``seed`` used
  when ``"seed"`` is not an axis.
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
  return names, tuple(values), coords, jnp.asarray(check_seed("seed", seed), jnp.uint32)


def substitute(names, vals, problem, hparams, base_seed):
  """``(key, problem, hparams)`` of one grid point: ``vals[i]`` replaces the seed, the problem's scalar leaf or
  the hyperparameter ``names[i]``; the key is ``jax.random.key(seed)`` (traceable: values are program arguments)."""
  p, h, seed = problem, hparams, base_seed
  for name, v in zip(names, vals):
    if name == "seed":
      seed = v
    elif name in scalar_leaves(problem):
      p = p.replace(**{name: v})
    else:
      h = h._replace(**{name: v})
  return jax.random.key(seed), p, h


def flat_values(values) -> tuple[np.ndarray, ...]:
  """The cartesian grid of the axis values as flat vectors of length ``C = prod(len(v))`` (row-major: the last
  axis varies fastest), one per axis."""
  grids = np.meshgrid(*[np.asarray(v) for v in values], indexing="ij")
  return tuple(g.reshape(-1) for g in grids)
