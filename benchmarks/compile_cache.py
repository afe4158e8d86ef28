r"""Cold and warm runs with the persistent compilation cache: ``python -m benchmarks.compile_cache [--quick]``.

Each command runs twice in a fresh process with an empty cache directory of its own (``UFM_COMPILATION_CACHE``,
see :mod:`ufm.cache`): cold (every program compiled and stored), then warm (every program loaded). Reported per
run: wall time and the number of programs compiled, counted as the cache entries the run added (every program is
cached whatever its compile time, so a compilation always adds one). A third run with the cache off gives the
baseline. The commands:

* ``readme``: the README's first command, ``python -m experiments run etf_emergence`` (with ``--recompute``, so that
  it computes instead of reusing stored results; its results go to a temporary directory);
* ``claim``: ``python -m ufm claims run ce_norms --examples 20`` (a claim with 20 random problems);
* ``solve``: ``python -m ufm solve --K 4 --n 5 --d 6`` (one reference solve).

``--quick`` runs ``solve`` and the smoke configuration of ``etf_emergence`` only. Writes
``benchmarks/results/compile-cache-<date>.json`` (or ``--json PATH``).
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["COMMANDS", "main", "measure"]

REPO = Path(__file__).resolve().parents[1]

#: name -> (argv after the interpreter, the argv --quick runs instead, or None: --quick skips it)
COMMANDS = {
    "readme": (["-m", "experiments", "run", "etf_emergence", "--recompute", "--no-progress"],
               ["-m", "experiments", "run", "etf_emergence", "--smoke", "--recompute", "--no-progress"]),
    "claim": (["-m", "ufm", "claims", "run", "ce_norms", "--examples", "20"], None),
    "solve": (["-m", "ufm", "solve", "--K", "4", "--n", "5", "--d", "6", "--json"],
              ["-m", "ufm", "solve", "--K", "4", "--n", "5", "--d", "6", "--json"]),
}


def _entries(directory: Path) -> int:
  return sum(1 for p in directory.rglob("*") if p.is_file())


def measure(argv: list[str], cache_dir: Path | None, workdir: Path) -> dict:
  """One run of ``python argv`` in ``workdir``: wall seconds and programs compiled (entries added to the cache)."""
  env = dict(os.environ, UFM_COMPILATION_CACHE=str(cache_dir) if cache_dir else "0",
             PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
  extra = ["--out", str(workdir / "results"), "--figures", str(workdir / "figures")] if "experiments" in argv else []
  extra += ["--store", str(workdir / "store")] if "claims" in argv else []
  before = _entries(cache_dir) if cache_dir else 0
  t0 = time.perf_counter()
  subprocess.run([sys.executable, *argv, *extra], cwd=workdir, env=env, check=True, capture_output=True)
  wall = time.perf_counter() - t0
  return {"wall_s": round(wall, 2), "compiled": (_entries(cache_dir) - before) if cache_dir else None}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(prog="python -m benchmarks.compile_cache", description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="solve and the etf_emergence smoke configuration only")
  p.add_argument("--json", default=None, help="where to write the report (default: benchmarks/results/)")
  args = p.parse_args(argv)
  rows = {}
  for name, (full, quick) in COMMANDS.items():
    cmd = quick if args.quick else full
    if cmd is None:
      continue
    with tempfile.TemporaryDirectory() as tmp:
      tmp = Path(tmp)
      cache_dir = tmp / "cache"
      rows[name] = {"command": "python " + " ".join(cmd),
                    "off": measure(cmd, None, tmp),
                    "cold": measure(cmd, cache_dir, tmp),
                    "warm": measure(cmd, cache_dir, tmp)}
  print(f"{'command':<8}{'cache off (s)':>15}{'cold (s)':>10}{'compiled':>10}{'warm (s)':>10}{'compiled':>10}"
        f"{'warm / cold':>13}")
  for name, r in rows.items():
    print(f"{name:<8}{r['off']['wall_s']:>15.1f}{r['cold']['wall_s']:>10.1f}{r['cold']['compiled']:>10}"
          f"{r['warm']['wall_s']:>10.1f}{r['warm']['compiled']:>10}{r['warm']['wall_s'] / r['cold']['wall_s']:>13.2f}")
  import jax  # noqa: PLC0415 -- only for the versions in the report
  report = {"date": datetime.date.today().isoformat(), "quick": args.quick, "jax": jax.__version__,
            "cpu_count": os.cpu_count(), "load_average_end": list(os.getloadavg()), "commands": rows}
  path = Path(args.json) if args.json else REPO / "benchmarks" / "results" / f"compile-cache-{report['date']}.json"
  if not args.quick or args.json:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {path}")
  return report


if __name__ == "__main__":
  main()
