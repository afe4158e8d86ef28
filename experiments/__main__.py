r"""``python -m experiments list | run NAME | plot NAME | report``.

* ``list [--verbose]``: name, expected runtime and title of every experiment, one line each
  within 100 columns; ``--verbose`` adds the paper and figure it reproduces.
* ``run NAME [--smoke] [--set key=value ...] [--out DIR] [--recompute] [--no-progress]``:
  runs (or reuses) the experiment, stores the results (see :mod:`experiments.runner`),
  writes the figure into the run directory (and into ``--figures DIR`` when given) and prints
  how its solver runs ended (converged / stopped / diverged). Nothing in the source tree is
  written: the committed ``figures/`` change only with ``--update-figures`` (maintainers, full
  configuration only), which writes ``figures/NAME.png``, ``.pdf`` and ``.json`` (the numbers
  of its text, :mod:`experiments.report`) and regenerates ``figures/README.md``'s findings.
* ``plot NAME [--smoke] [--set ...] [--out DIR]``: rebuilds the figure from stored results
  without recomputing (same figure options).
* ``report [--check]``: regenerates (or checks) the findings block of ``figures/README.md`` from
  ``figures/*.json``.

Errors (unknown experiment or key, bad value, missing or corrupted results): one line on
stderr and exit status 2, before anything compiles.
"""

import argparse
import re
import sys
import textwrap

import experiments
from experiments import runner
from ufm import cache
from ufm.io import check_writable_dir


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    sys.stderr.write(f"experiments: error: {message}\n")
    raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(prog="python -m experiments", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
  ls = sub.add_parser("list", help="the experiments: name, expected runtime, title (--verbose: paper, figure)")
  ls.add_argument("--verbose", "-v", action="store_true", help="also the paper and figure each one reproduces")
  for cmd, help_ in (("run", "run an experiment (or reuse its stored results) and write its figure"),
                     ("plot", "rebuild an experiment's figure from stored results")):
    s = sub.add_parser(cmd, help=help_)
    s.add_argument("name", help="experiment name (see `list`)")
    s.add_argument("--smoke", action="store_true", help="the small configuration the tests use")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="override a configuration value (Python literal), repeatable")
    s.add_argument("--out", default="results", help="results root (default: results)")
    s.add_argument("--figures", default=None, help="also write the figure into this directory")
    s.add_argument("--update-figures", action="store_true",
                   help="maintainers: at the full configuration, refresh the committed figures/NAME.png/.pdf/.json "
                        "and figures/README.md")
    if cmd == "run":
      s.add_argument("--recompute", action="store_true", help="ignore stored results of this configuration")
      s.add_argument("--no-progress", action="store_true", help="no progress bars")
  rep = sub.add_parser("report", help="regenerate figures/README.md's findings from figures/*.json")
  rep.add_argument("--check", action="store_true", help="only list disagreements (exit 1 if any)")
  return p


#: Width of ``list`` output.
WIDTH = 100


def _runtime(module) -> str:
  """The leading ``"N s"`` of ``RUNTIME`` (the rest, how it was measured, is for ``--verbose``)."""
  m = re.match(r"\d+ s\b", module.RUNTIME)
  return m.group() if m else module.RUNTIME


def _list(verbose: bool = False) -> None:
  names = experiments.EXPERIMENTS
  modules = [experiments.get(n) for n in names]
  w_name = max(len(n) for n in names)
  w_time = max(max(len(_runtime(m)) for m in modules), len("runtime"))
  head = f"{'name'.ljust(w_name)}  {'runtime'.ljust(w_time)}  "
  print(head + "title")
  indent, room = " " * len(head), WIDTH - len(head)
  for name, m in zip(names, modules):
    lead = f"{name.ljust(w_name)}  {_runtime(m).ljust(w_time)}  "
    if not verbose:
      text = experiments.title(name)
      print(lead + (text if len(text) <= room else text[:room - 3] + "..."))
      continue
    wrap = textwrap.TextWrapper(room, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
    lines = wrap.wrap(experiments.title(name))
    for label in ("paper", "figure", "runtime"):
      lines += wrap.wrap(f"{label}: {getattr(m, label.upper())}")
    print(lead + lines[0])
    for line in lines[1:]:
      print(indent + line)
  print("runtime: the full configuration on a 2-core CPU" + ("" if verbose else "; --verbose: paper, figure, details"))


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  cache.enable()  # compiled programs kept across runs (UFM_COMPILATION_CACHE=0 turns it off)
  if args.command == "list":
    _list(args.verbose)
    return 0
  if args.command == "report":
    return _report(args.check)
  try:
    module = experiments.get(args.name)
    config = runner.apply_overrides(module.get_config("smoke" if args.smoke else None), args.sets)
    full = not args.smoke and not args.sets
    if args.update_figures and not full:
      raise ValueError("--update-figures: only at the full configuration (no --smoke, no --set)")
    if args.update_figures and not (hasattr(module, "summary") and hasattr(module, "findings")):
      raise ValueError(f"--update-figures: experiments.{args.name} defines no summary/findings, so its "
                       "figures/README.md text cannot be generated")
    if args.update_figures:
      check_writable_dir("figures", runner.default_figures_dir())
    if args.figures is not None:
      check_writable_dir("figures", args.figures)  # before minutes of computing, not after
    if getattr(config, "x64", False):
      import jax
      jax.config.update("jax_enable_x64", True)
    if args.command == "run":
      record = runner.run(args.name, config, out=args.out, recompute=args.recompute,
                          progress=not args.no_progress)
    else:
      record = runner.read_run(args.name, config, args.out)
  except (ValueError, runner.ResultsError) as e:
    sys.stderr.write(f"experiments: error: {e}\n")
    return 2
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  try:
    fig = module.plot(record.results, config)
  except (KeyError, AttributeError, ValueError, IndexError) as e:  # results that load but are not what plot reads
    sys.stderr.write(f"experiments: error: the stored results in {record.path} do not fit experiments.{args.name}.plot "
                     f"({type(e).__name__}: {e}); rerun with --recompute\n")
    return 2
  dirs = [record.path] + ([args.figures] if args.figures is not None else [])
  if args.update_figures:
    dirs.append(runner.default_figures_dir())
  paths = runner.save_figure(fig, args.name, dirs)
  plt.close(fig)
  if args.update_figures:
    from experiments import report
    paths.append(report.write_record(args.name, record, runner.default_figures_dir()))
    report.update_readme(runner.default_figures_dir() / "README.md", runner.default_figures_dir())
    paths.append(runner.default_figures_dir() / "README.md")
  how = "reused stored results" if record.reused else (
      f"computed in {record.meta['wall_time_s']:.1f} s (compile {record.meta['compile_time_s']:.1f} s)")
  print(f"{args.name}: {how}; results in {record.path}")
  conv = record.meta.get("convergence") or runner.convergence(record.results)
  print(f"  {runner.convergence_line(conv)}")
  if conv["stopped"] or conv["diverged"]:
    print(f"  note: {conv['stopped'] + conv['diverged']} of {conv['runs']} runs did not converge "
          f"(meta.json 'convergence' has the counts per group)")
  for path in paths:
    print(f"  figure: {path}" if path.suffix in (".png", ".pdf") else f"  updated: {path}")
  return 0


def _report(check: bool) -> int:
  from experiments import report
  directory = runner.default_figures_dir()
  if check:
    found = report.problems(directory / "README.md", directory)
    for line in found:
      print(line)
    return 1 if found else 0
  changed = report.update_readme(directory / "README.md", directory)
  print(f"{directory / 'README.md'}: {'rewritten' if changed else 'already up to date'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
