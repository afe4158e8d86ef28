"""Sweep checkpoints: the batched solver state and trace rows after each chunk, in one ``.npz`` written atomically.

A checkpoint holds the leaves of ``(state, rows)`` as arrays ``leaf_00000, ...`` and a JSON header (format,
fingerprint of the sweep, chunks done); it is read with ``allow_pickle=False`` and checked against the sweep's
fingerprint and abstract state before it is used, so that a file from another sweep is refused, never resumed.
"""

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ufm.io import atomic_write

__all__ = ["FORMAT", "CheckpointError", "fingerprint", "load_checkpoint", "save_checkpoint"]

#: The format tag every checkpoint's header carries.
FORMAT = "ufm-sweep-checkpoint/1"


class CheckpointError(ValueError):
  """A checkpoint file that is unreadable, not a ufm checkpoint, or belongs to another sweep."""


def fingerprint(values, problem, hparams, base_seed, names, solver_kwargs, chunk_steps) -> str:
  """SHA-256 of everything that determines the sweep's numbers (values, leaves, static options)."""
  h = hashlib.sha256()
  leaves, treedef = jax.tree.flatten((values, problem, hparams, base_seed))
  h.update(repr((str(treedef), names, solver_kwargs, chunk_steps, jax.config.jax_enable_x64)).encode())
  for leaf in leaves:
    a = np.asarray(leaf)
    h.update(repr((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save_checkpoint(path: Path, fp: str, chunks_done: int, state, rows):
  """Writes ``state`` and the trace rows so far to ``path`` atomically (:func:`ufm.io.atomic_write`), with the
  sweep's fingerprint ``fp`` and the number of chunks done."""
  leaves = jax.tree.leaves((state, rows))
  arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
  meta = dict(format=FORMAT, fingerprint=fp, chunks_done=chunks_done, num_leaves=len(leaves))
  arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: Path, fp: str, like: Callable):
  """Reads a checkpoint written by :func:`save_checkpoint` (never unpickles); ``like(chunks_done)`` is the
  abstract ``(state, rows)`` it must match, ``fp`` the sweep's :func:`fingerprint`. Returns
  ``(chunks_done, (state, rows))``; :class:`CheckpointError` for an unreadable or foreign file."""
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(bytes(z["__meta__"]).decode())
      arrays = {k: z[k] for k in z.files if k != "__meta__"}
  except Exception as e:  # noqa: BLE001 -- any unreadable file is reported the same way
    raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start over") from e
  if meta.get("format") != FORMAT:
    raise CheckpointError(f"{path} is not a ufm sweep checkpoint (format {meta.get('format')!r}, expected "
                          f"{FORMAT!r})")
  if meta.get("fingerprint") != fp:
    raise CheckpointError(f"checkpoint {path} belongs to a different sweep (other values, options or code); "
                          "delete it or choose another checkpoint path")
  ref_leaves, treedef = jax.tree.flatten(like(int(meta.get("chunks_done", 0))))
  leaves = [arrays.get(f"leaf_{i:05d}") for i in range(meta["num_leaves"])]
  if len(leaves) != len(ref_leaves) or any(
      x is None or x.shape != r.shape or x.dtype != r.dtype for x, r in zip(leaves, ref_leaves)):
    raise CheckpointError(f"checkpoint {path} does not match this sweep's state (shapes or dtypes differ)")
  return int(meta["chunks_done"]), jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])
