"""One-dimensional global minimisation for the closed forms of the loss family and the ReLU DUFM.

One-dimensional global minimisation shared by the closed forms of :mod:`ufm.theory.losses` and
:mod:`ufm.theory.relu` (private to :mod:`ufm.theory`)."""

import jax
import jax.numpy as jnp

__all__ = ["global_min_1d"]


def global_min_1d(fn, hi: float = 1.0, num: int = 4096, iters: int = 200, lo: float | None = None):
  r"""Global minimiser over :math:`t \in [0, \text{hi}]` of a scalar function smooth on :math:`(0, \text{hi}]`: a
  geometric grid of ``num`` points on :math:`[10^{-8}\text{hi}, \text{hi}]` locates the best cell, ``iters``
  bisection steps on :math:`f'` refine it inside its neighbours, and :math:`t = 0` is compared last (the same
  method as the deep linear CE candidates of :mod:`ufm.theory.deep`). Returns ``(t, f(t))``; vmappable through
  ``fn``. The grid makes the minimum global up to its resolution (a minimum narrower than one cell can be missed).
  ``lo`` moves the grid's lower end (default ``1e-8 * hi``)."""
  grid = jnp.geomspace(1e-8 * hi if lo is None else lo, hi, num)
  vals = jax.vmap(fn)(grid)
  j = jnp.argmin(vals)
  lo, up = grid[jnp.maximum(j - 1, 0)], grid[jnp.minimum(j + 1, num - 1)]
  dfn = jax.grad(fn)

  def body(_, lu):
    lo, up = lu
    mid = 0.5 * (lo + up)
    neg = dfn(mid) < 0
    return jnp.where(neg, mid, lo), jnp.where(neg, up, mid)

  lo, up = jax.lax.fori_loop(0, iters, body, (lo, up))
  t = 0.5 * (lo + up)
  ft, f0 = fn(t), fn(jnp.zeros_like(t))
  return jnp.where(ft < f0, t, 0.0), jnp.minimum(ft, f0)
