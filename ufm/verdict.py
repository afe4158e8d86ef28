r"""Verdicts on solves that have a closed form (global, local, not converged, diverged), and multi-start solves.

A solver's ``converged`` flag says only that :math:`\|\nabla f\| \le` ``gtol``: a stationary point, which on a
non-convex landscape may be a local minimum or a saddle. Where :func:`ufm.theory.predict` knows the optimal
objective :math:`f^\star`, :func:`verdict` says which it is:

* ``"diverged"``: the solve stopped at a non-finite or blown-up objective (:data:`ufm.solvers.DIVERGENCE_RATIO`);
* ``"not converged"``: the step budget ran out with :math:`\|\nabla f\| >` ``gtol``;
* ``"global"``: converged and :math:`(f - f^\star)/|f^\star| \le` ``rtol``;
* ``"local"``: converged with the objective above :math:`f^\star` by more than ``rtol`` (``gap`` says how much);
* ``"below theory"``: converged *below* :math:`f^\star` by more than ``rtol``: the closed form is not the
  minimum, a counterexample to the theory (or to its conditions) worth reporting;
* ``"no closed form"``: :func:`ufm.theory.predict` has none for this problem.

``rtol`` defaults to :data:`RTOL` by dtype: 1e-8 in float64 (an objective is quadratic in the distance to a
minimiser, so ``gtol = 1e-10`` puts it within ~1e-16 of its value; 1e-8 leaves room for the closed forms' own
root finding, whose tolerance is 1e-12 relative) and 1e-3 in float32 (``gtol = 1e-4`` leaves relative errors of
1e-4 to 1e-3, measured on the plain and deep families).

:func:`multistart` runs a solver from ``restarts`` initialisations at once (``jax.vmap`` over the keys), keeps the
best finite objective and reports the spread: on the deep linear UFM (``M >= 2``), the learned-classifier mixup UFM
and ``K > d``, a single start can end at a local minimum (the deep MSE-UFM with counts (6, 6, 6), ``d = 4``,
``M = 2``, ``lam_W = 0.02``, ``lam_H = 0.01`` stops at 0.2506 from seed 0 where the optimum is 0.1259).
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.validate import check_int

__all__ = ["RTOL", "STATUSES", "MultiStart", "Verdict", "multistart", "verdict"]

#: Relative objective tolerance of :func:`verdict` by dtype name (reasons in the module docstring).
RTOL = {"float64": 1e-8, "float32": 1e-3}

#: Every status :func:`verdict` can give.
STATUSES = ("global", "local", "below theory", "not converged", "diverged", "no closed form")


class Verdict(NamedTuple):
  r"""What a solve reached. ``status``: one of :data:`STATUSES`; ``gap``: :math:`(f - f^\star)/|f^\star|` (NaN
  without a closed form or a finite objective); ``objective``, ``optimum``: :math:`f` and :math:`f^\star`;
  ``rtol``: the tolerance used; ``message``: one line for people."""
  status: str
  gap: float
  objective: float
  optimum: float
  rtol: float
  message: str


def verdict(solution, problem, *, optimum: float | None = None, rtol: float | None = None) -> Verdict:
  r"""The :class:`Verdict` of one (unbatched) ``solution`` of ``problem``.

  Args:
    solution: a :class:`ufm.solvers.Solution` (fields ``objective``, ``converged``, ``diverged``, ``grad_norm``).
    problem: the problem it solved.
    optimum: :math:`f^\star`; default ``ufm.theory.predict(problem).objective`` (``"no closed form"`` when that
      raises ``NoClosedFormError``).
    rtol: relative tolerance on the objective (default :data:`RTOL` of the problem's dtype).
  """
  from ufm import theory  # theory is heavy; the verdict of a solve is asked after the solve

  f = float(np.asarray(solution.objective))
  rtol = RTOL.get(jnp.dtype(problem.dtype).name, RTOL["float32"]) if rtol is None else float(rtol)
  if optimum is None:
    try:
      optimum = float(theory.predict(problem).objective)
    except theory.NoClosedFormError as e:
      optimum = None
      note = str(e)
  gap = float("nan") if optimum is None or not np.isfinite(f) else (f - optimum) / max(abs(optimum), 1e-300)
  grad = float(np.asarray(solution.grad_norm))
  if bool(np.asarray(solution.diverged)):
    status, msg = "diverged", f"diverged: the objective blew up or was not finite (last finite value {f:.6g})"
  elif not bool(np.asarray(solution.converged)):
    status = "not converged"
    msg = f"not converged: |grad| = {grad:.2e} above the tolerance" + (
        "" if optimum is None else f"; objective {f:.10g} vs the optimum {optimum:.10g} (gap {gap:.2e})")
  elif optimum is None:
    status, msg = "no closed form", f"converged (|grad| = {grad:.2e}); no closed form to compare: {note}"
  elif gap > rtol:
    status = "local"
    msg = (f"local: converged (|grad| = {grad:.2e}) at objective {f:.10g}, above the global optimum {optimum:.10g} "
           f"by {gap:.2e} (relative); more restarts may reach it")
  elif gap < -rtol:
    status = "below theory"
    msg = (f"below theory: objective {f:.10g} is below the closed-form optimum {optimum:.10g} by {-gap:.2e}: "
           "the closed form is not the minimum here (a counterexample)")
  else:
    status = "global"
    msg = f"global: objective {f:.10g} matches the optimum {optimum:.10g} (gap {gap:.1e} <= {rtol:g})"
  return Verdict(status=status, gap=gap, objective=f, optimum=float("nan") if optimum is None else optimum,
                 rtol=rtol, message=msg)


class MultiStart(NamedTuple):
  r""":func:`multistart`'s output. ``best``: the solution with the lowest finite objective (unbatched);
  ``index``: its start; ``objectives``, ``converged``, ``diverged``: every start's (leading axis ``restarts``)."""
  best: Any
  index: int
  objectives: np.ndarray
  converged: np.ndarray
  diverged: np.ndarray

  @property
  def spread(self) -> float:
    """Largest minus smallest finite objective over the starts (0 with one start)."""
    ok = np.isfinite(self.objectives) & ~self.diverged
    return float(np.ptp(self.objectives[ok])) if ok.any() else float("nan")


def multistart(solver, key: jax.Array, problem, hparams, *, restarts: int, **static) -> MultiStart:
  r"""``solver`` from ``restarts`` keys ``jax.random.split(key, restarts)`` in one vmapped call; the best start.

  The best is the lowest objective among the starts that did not diverge (the first start when all diverged).
  With ``restarts = 1`` it is ``solver(jax.random.split(key, 1)[0], ...)``. ``static`` goes to the solver
  (``max_steps``, ``num_steps``, ...).

  Raises:
    ValueError: ``restarts`` not an integer in ``[1, 4096]``.
  """
  restarts = check_int("restarts", restarts, lo=1)
  if restarts > 4096:
    raise ValueError(f"restarts = {restarts} is out of range; allowed range: integers in [1, 4096]")
  keys = jax.random.split(key, restarts)
  sols = jax.vmap(lambda k: solver(k, problem, hparams, **static))(keys)
  f = np.asarray(sols.objective, np.float64)
  diverged = np.asarray(sols.diverged, bool)
  score = np.where(np.isfinite(f) & ~diverged, f, np.inf)
  i = int(np.argmin(score)) if np.isfinite(score).any() else 0
  best = jax.tree.map(lambda x: x[i], sols)
  return MultiStart(best=best, index=i, objectives=f, converged=np.asarray(sols.converged, bool), diverged=diverged)
