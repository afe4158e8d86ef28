"""Progress bars of sweeps (tqdm, imported only when a bar is asked for)."""

__all__ = ["progress_bar"]


def progress_bar(progress, *, total: int, unit: str, initial: int = 0):
  """A tqdm bar for ``progress`` (``True``, or a string: its label; default label ``"sweep"``) that appears after
  2 s and disappears when closed; ``None`` when ``progress`` is false. The caller updates and closes it."""
  if not progress:
    return None
  from tqdm.auto import tqdm  # noqa: PLC0415 -- imported lazily: only progress bars need it
  return tqdm(total=total, initial=initial, unit=unit, delay=2.0, dynamic_ncols=True, leave=False,
              desc=progress if isinstance(progress, str) else "sweep")
