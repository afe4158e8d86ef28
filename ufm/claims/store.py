"""The claims store: counterexamples to replay first and the status of the last run, in one plain JSON file.

Layout (``<dir>/claims.json``, default ``<dir> = .ufm-claims`` in the working directory)::

  {"version": 1,
   "claims": {"<claim name>": {"counterexamples": [<spec.to_json()>, ...],
                               "last_run": {"status": ..., "examples": ..., ...}}}}

Never pickle: every entry is a problem description that :func:`ufm.testing.spec_from_json`
validates before anything is solved. Writes go through a temporary file and ``os.replace``,
so an interrupted run never leaves a half-written store.
"""

import json
import os
import tempfile

from ufm.io import check_writable_file
from ufm.testing import spec_from_json

__all__ = ["DEFAULT_STORE_DIR", "ClaimStore"]

DEFAULT_STORE_DIR = ".ufm-claims"
_VERSION = 1
_MAX_COUNTEREXAMPLES = 20  # per claim; the oldest are dropped first


class ClaimStore:
  """Counterexamples and last-run records of claims, kept in ``<directory>/claims.json``.

  Args:
    directory: where the JSON file lives (created on the first write).
  """

  def __init__(self, directory: str | os.PathLike = DEFAULT_STORE_DIR):
    self.directory = os.fspath(directory)
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise ValueError(f"store = {self.directory!r} is not a directory; allowed: a directory (created if absent)")
    self.path = os.path.join(self.directory, "claims.json")

  def check_writable(self) -> None:
    """``ValueError`` naming the store when its ``claims.json`` cannot be written (before a run computes)."""
    check_writable_file("store", self.path)

  def _load(self) -> dict:
    if not os.path.exists(self.path):
      return {"version": _VERSION, "claims": {}}
    try:
      with open(self.path, encoding="utf-8") as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"claims store {self.path} is not readable JSON ({e}); fix or delete it") from None
    if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("claims"), dict):
      raise ValueError(f"claims store {self.path} has an unknown layout; expected version {_VERSION} "
                       "with a 'claims' object")
    return data

  def _save(self, data: dict) -> None:
    os.makedirs(self.directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".claims.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=1, sort_keys=True)
      f.write("\n")
    os.replace(tmp, self.path)

  def counterexamples(self, name: str) -> list:
    """The stored counterexamples of claim ``name``, oldest first (validated; ``ValueError`` if one is bad)."""
    entry = self._load()["claims"].get(name, {})
    out = []
    for i, obj in enumerate(entry.get("counterexamples", [])):
      try:
        out.append(spec_from_json(obj))
      except (TypeError, ValueError) as e:
        raise ValueError(f"claims store {self.path}: counterexample {i} of {name!r} is invalid: {e}") from None
    return out

  def add_counterexample(self, name: str, spec) -> bool:
    """Appends ``spec`` to the counterexamples of ``name`` unless it is there already; returns whether it was added."""
    data = self._load()
    entry = data["claims"].setdefault(name, {})
    ces = entry.setdefault("counterexamples", [])
    obj = spec.to_json()
    if obj in ces:
      return False
    ces.append(obj)
    del ces[:-_MAX_COUNTEREXAMPLES]
    self._save(data)
    return True

  def last_run(self, name: str) -> dict | None:
    """The record of the last run of ``name`` (see :func:`ufm.claims.run_claim`), or ``None``."""
    return self._load()["claims"].get(name, {}).get("last_run")

  def record_run(self, name: str, record: dict) -> None:
    """Replaces the last-run record of ``name``."""
    data = self._load()
    data["claims"].setdefault(name, {})["last_run"] = record
    self._save(data)
