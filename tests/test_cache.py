"""The persistent compilation cache: the second run of a command compiles nothing, and it can be turned off."""

import os
import subprocess
import sys
from pathlib import Path

from ufm import cache

REPO = Path(__file__).resolve().parent.parent
CMD = [sys.executable, "-m", "ufm", "solve", "--K", "3", "--n", "2", "--d", "3", "--json"]


def _run(env_cache: str) -> None:
  env = dict(os.environ, UFM_COMPILATION_CACHE=env_cache, JAX_PLATFORMS="cpu")
  subprocess.run(CMD, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)


def test_a_second_run_reads_every_program_from_the_cache(tmp_path):
  """Cold: entries written; warm: the same entries, none added (a compilation would add one: every program is
  cached, whatever its compile time)."""
  _run(str(tmp_path))
  cold = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
  assert cold, "nothing cached"
  _run(str(tmp_path))
  assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == cold


def test_the_cache_can_be_turned_off_and_defaults_to_the_user_cache(monkeypatch, tmp_path):
  for off in ("0", "off", "False", "no"):
    monkeypatch.setenv(cache.ENV, off)
    assert cache.default_dir() is None
  monkeypatch.setenv(cache.ENV, "")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert cache.default_dir() == tmp_path / "ufm" / "jax"
  monkeypatch.setenv(cache.ENV, str(tmp_path / "mine"))
  assert cache.default_dir() == tmp_path / "mine"
