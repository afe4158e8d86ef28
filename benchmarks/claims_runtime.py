r"""Per-claim runtime of the claims catalogue: ``python -m benchmarks.claims_runtime [--examples N] [NAME ...]``.

Runs each selected catalogue claim (all by default) in this process with ``N`` random examples (default 200, the
default of ``python -m ufm claims run``; no store, shrinking on), and prints one row per claim: its family, solver,
the examples drawn, the distinct problem shapes among them (one compiled program each), the wall time, the programs
compiled (entries the run added to the persistent compilation cache, :mod:`ufm.cache`) and the seconds per example.

Cold and warm: ``--cache DIR`` uses ``DIR`` as the compilation cache (default: a fresh temporary directory, so every
program is compiled). Run twice with the same ``DIR`` to measure the warm run, which loads every program instead of
compiling it. Writes ``benchmarks/results/claims-runtime-<date>.json`` (or ``--json PATH``). No timing is asserted
anywhere: the machine's load (printed) changes the numbers.
"""

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]


def _entries(directory: Path) -> int:
  return sum(1 for p in directory.rglob("*") if p.is_file())


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(prog="python -m benchmarks.claims_runtime", description=__doc__.split("\n")[0])
  p.add_argument("names", nargs="*", metavar="NAME", help="catalogue claims (default: all)")
  p.add_argument("--examples", type=int, default=200, help="random examples per claim (default 200)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-shapes", type=int, default=16, metavar="S",
                 help="draw from at most S problem shapes per claim (default 16, as claims run; 0: no limit)")
  p.add_argument("--cache", default=None, metavar="DIR", help="compilation cache directory (default: a fresh one)")
  p.add_argument("--json", default=None, help="where to write the report (default: benchmarks/results/)")
  args = p.parse_args(argv)
  if args.examples < 1:
    p.error(f"examples = {args.examples} is out of range; allowed: integers >= 1")
  if args.max_shapes < 0:
    p.error(f"max_shapes = {args.max_shapes} is out of range; allowed: integers >= 1, or 0 for no limit")
  args.max_shapes = args.max_shapes or None
  tmp = None
  if args.cache is None:
    tmp = tempfile.TemporaryDirectory()
    args.cache = tmp.name
  cache_dir = Path(args.cache)
  cache_dir.mkdir(parents=True, exist_ok=True)
  os.environ["UFM_COMPILATION_CACHE"] = str(cache_dir)
  import jax
  jax.config.update("jax_enable_x64", True)
  from ufm import cache, claims
  from ufm.claims import catalogue
  cache.enable(cache_dir)
  names = args.names or list(claims.CATALOGUE)
  selected = [claims.get_claim(n) for n in names]  # unknown names fail before anything runs
  load_start = list(os.getloadavg())
  rows = []
  print(f"{'claim':<40}{'family':<11}{'solver':<8}{'examples':>9}{'shapes':>7}{'wall s':>9}{'compiled':>9}"
        f"{'s/example':>10}  status", flush=True)
  t_all = time.perf_counter()
  for c in selected:
    before = _entries(cache_dir)
    t0 = time.perf_counter()
    r = claims.run_claim(c, examples=args.examples, seed=args.seed, max_shapes=args.max_shapes)
    wall = time.perf_counter() - t0
    shapes = r.shapes
    row = {"claim": c.name, "family": catalogue.FAMILY_OF[c.name], "solver": c.solver, "examples": r.examples,
           "shapes": shapes, "wall_s": round(wall, 2), "compiled": _entries(cache_dir) - before,
           "s_per_example": round(wall / max(r.examples, 1), 3), "status": r.status, "expected": c.expected}
    rows.append(row)
    print(f"{c.name:<40}{row['family']:<11}{c.solver:<8}{r.examples:>9}{shapes:>7}{wall:>9.1f}{row['compiled']:>9}"
          f"{row['s_per_example']:>10.3f}  {r.status}", flush=True)
  total = time.perf_counter() - t_all
  print(f"total: {total:.1f} s for {len(rows)} claims; load average at start {load_start}, at end "
        f"{list(os.getloadavg())}; {os.cpu_count()} CPUs")
  report = {"date": datetime.date.today().isoformat(), "examples": args.examples, "seed": args.seed,
            "max_shapes": args.max_shapes,
            "jax": jax.__version__, "cpu_count": os.cpu_count(), "load_average_start": load_start,
            "load_average_end": list(os.getloadavg()), "total_s": round(total, 1), "rows": rows}
  path = Path(args.json) if args.json else REPO / "benchmarks" / "results" / f"claims-runtime-{report['date']}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(report, indent=2) + "\n")
  print(f"written: {path}")
  if tmp is not None:
    tmp.cleanup()
  return report


if __name__ == "__main__":
  main()
