r"""Sweeps: nested ``vmap`` over named axes, one compilation per shape.

``sweep(solver, problem, hparams, axes={"lam_W": [...], "seed": [...]})`` solves the
cartesian product of the axis values in one jitted call. Each axis name is ``"seed"``
(integer seeds, turned into keys with ``jax.random.key`` inside the program), a weight
decay of the :class:`~ufm.problem.Problem` (``lam_W``, ``lam_H``, ``lam_b``; for other problem classes
their ``SCALAR_LEAVES``, e.g. ``beta`` of :class:`ufm.vicinity.VicinityProblem`), or a field
of the solver's hyperparameters (``lr``, ``momentum``, ``init_scale``, ...). The result
has one leading array axis per named axis, outermost first (the first axis named is the
leading array axis), and records the names and values. Values are arguments of the compiled
program, so a new value never retraces; a new axis *length* or a new static option compiles once more.

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

Modules:

* :mod:`ufm.sweep.axes`: validation of the named axes, their grid, substitution of one grid point;
* :mod:`ufm.sweep.plan`: :class:`SweepPlan`, :func:`plan_sweep`, the memory budget
  (:func:`available_memory`, :data:`MEMORY_FRACTION`) and the CPU batch calibration;
* :mod:`ufm.sweep.run`: :func:`sweep` and :class:`SweepResult` (one program, planned calls, resumable chunks);
* :mod:`ufm.sweep.checkpoint`: :class:`CheckpointError` and the checkpoint file (written with
  :func:`ufm.io.atomic_write`, re-exported here as :func:`atomic_write`);
* :mod:`ufm.sweep.progress`: the progress bars;
* ``ufm.sweep._program`` (private): the compiled programs (nested ``vmap``; ``lax.map`` inside ``shard_map``).
"""

from ufm.io import atomic_write
from ufm.sweep._program import sweep_impl as _sweep_impl  # noqa: F401  (its compile cache is inspected in tests)
from ufm.sweep.checkpoint import CheckpointError
from ufm.sweep.plan import MEMORY_FRACTION, SweepPlan, available_memory, plan_sweep
from ufm.sweep.run import SweepResult, sweep

__all__ = ["MEMORY_FRACTION", "CheckpointError", "SweepPlan", "SweepResult", "atomic_write", "available_memory",
           "plan_sweep", "sweep"]
