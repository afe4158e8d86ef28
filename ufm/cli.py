"""The command line ``python -m ufm``: one solve beside its closed form, the demonstration, and the claims checks.

``python -m ufm solve ...`` prints a table of the final objective, the squared norms of ``W`` and ``H``, the norm of
``b`` and the neural-collapse metrics, each beside the prediction of :func:`ufm.theory.predict` and the relative
error (absolute error where the prediction is 0); ``--json`` prints one JSON object instead. ``python -m ufm demo``
prints every closed form beside its float64 L-BFGS solve. ``python -m ufm claims {list,run,check}`` checks the theory
claims of :mod:`ufm.claims` on random problems. Invalid input: one line on stderr and exit status 2, before any
compilation.
"""

import argparse
import json
import math
import sys
import textwrap
import time

import jax

from ufm import losses
from ufm.cli_measure import json_safe
from ufm.validate import check_int, check_seed

DESCRIPTION = ("Simulate the unconstrained features model (UFM) of neural collapse and compare each solve with its "
               "closed form.")
EPILOG = """examples:
  python -m ufm solve --loss ce --K 4 --n 5 --d 6
  python -m ufm solve --loss mse --bias --counts 20,10,5,5 --d 8 --json
  python -m ufm solve --loss mse --counts 6,6,6 --d 4 --depth 2 --lam-W 0.02 --lam-H 0.01
  python -m ufm solve --loss focal --loss-param gamma=3 --K 4 --n 5 --d 6
  python -m ufm solve --activation relu --K 2 --n 2 --d 4 --depth 3 --lam-W 1e-3 --lam-H 1e-3
  python -m ufm solve --random-targets 3,40 --d 5 --bias --lam-W 0.01 --lam-H 0.01
  python -m ufm demo
  python -m ufm claims list
  python -m ufm claims run ce_norms --examples 50

Run 'python -m ufm COMMAND --help' for the options of a command. Invalid input prints one line on stderr and
exits with status 2 before anything is compiled."""
SOLVE_DESCRIPTION = """Solve one UFM: minimise
  (1/N) sum_i loss(W h_i + b, y_i)
    + lam_W/2 ||W||^2 + lam_H/2 ||H||^2 + lam_b/2 ||b||^2
over the classifier W (K x d), the features H (d x N) and the bias b, then print the objective, ||W||^2, ||H||^2,
||b|| and the neural-collapse metrics, each beside its closed form (ufm.theory.predict) and the relative error
(absolute where the closed form is 0). Give the classes as --K and --n (balanced) or --counts (any counts), and the
feature dimension as --d, or the layer widths of a deep linear UFM as --widths (then lam_W is the weight decay of
every layer; --activation relu puts a ReLU between the layers). A parametrised loss takes its parameters with
--loss-param. --targets or --random-targets solve the regression UFM instead (targets n x N, W n x d; NRC1-NRC3
beside their closed forms). Runs in float64 (--float32 for speed). The verdict line says what the solve reached:
global (the objective matches the closed form), local (converged above it, by how much), below theory (a
counterexample to the closed form), not converged, diverged, or no closed form (ufm.verdict). Deep problems start from 8 initialisations
by default (--restarts), vmapped, and keep the best."""
DEMO_DESCRIPTION = ("Every closed form of ufm.theory beside its float64 L-BFGS solve (seven settings, CE and MSE, "
                    "with and without a bias; about 40 s on 2 CPU cores).")
CLAIMS_DESCRIPTION = ("Theory claims of ufm.claims, each checked on random problems (hypothesis) against a float64 "
                      "reference solve; failing examples are kept in the claims store and replayed first.")
MEASURE_DESCRIPTION = """The neural-collapse summary (NC1-NC5 and their variants) of your own features: FEATURES is
a .npz with H (one row per sample, N x d) and labels (integers 0..K-1), optionally W (K x d), b (K) and an
out-of-distribution set H_ood (with labels_ood) for NC5, or a .npy of features with --labels (and --W, --b, --ood as
.npy files). The file is read twice in batches of --batch rows (a .npy is memory-mapped), with float64 accumulation,
so N can exceed memory; the numbers equal the in-memory summary to rounding. Classes absent from the data are left
out and listed. --conventions picks the definitions: ufm (the default), papyan2020, zhu2021, wu2024 or rhubarbwu
reproduce those code bases' numbers (see ufm.conventions)."""
DEFAULT_STORE = ".ufm-claims"  # ufm.claims.DEFAULT_STORE_DIR, written out so that --help imports no claims


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2 (argparse prints usage + error otherwise)
    sys.stderr.write(f"ufm: error: {message}\n")
    raise SystemExit(2)


class _Formatter(argparse.HelpFormatter):
  """Plain-text help: each option's default shown (when it has one); in descriptions, paragraphs are wrapped to the
  terminal while indented lines (formulas, examples) and lines ending with a colon are kept as written."""

  def _get_help_string(self, action):
    text = action.help or ""
    if ("%(default)" in text or not action.option_strings or action.default is None or action.default is False
        or action.default is argparse.SUPPRESS):
      return text
    return f"{text} (default: %(default)s)"

  def _fill_text(self, text, width, indent):
    out, para = [], []

    def flush():
      if para:
        out.extend(textwrap.wrap(" ".join(para), width, initial_indent=indent, subsequent_indent=indent))
        para.clear()
    for line in text.splitlines():
      if not line.strip():
        flush()
        out.append("")
      elif line[0].isspace() or line.endswith(":"):
        flush()
        out.append(indent + line)
      else:
        para.append(line.strip())
    flush()
    return "\n".join(out)


def _parser() -> argparse.ArgumentParser:
  """The argument parser of ``python -m ufm`` and its subcommands."""
  kw = {"formatter_class": _Formatter}
  p = _Parser(prog="python -m ufm", description=DESCRIPTION, epilog=EPILOG, **kw)
  sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                         title="commands")
  s = sub.add_parser("solve", help="solve one UFM and compare it with its closed form", description=SOLVE_DESCRIPTION,
                     **kw)
  s.add_argument("--loss", choices=losses.names(), default=None,
                 help="loss, from the registry ufm.losses (default: ce; for --activation relu and for regression: mse)")
  s.add_argument("--loss-param", action="append", default=None, dest="loss_param", metavar="NAME=VALUE",
                 help="a parameter of a parametrised loss, repeatable: alpha (label_smoothing), gamma (focal), kappa "
                      "and M (rescaled_mse); the others keep their defaults")
  s.add_argument("--activation", choices=("linear", "relu"), default="linear",
                 help="between the layers of a deep UFM (--depth >= 2 or --widths): linear (Dang et al. 2023) or "
                      "relu (the DUFM of Súkeník et al. 2023/2024, bias-free)")
  s.add_argument("--targets", default=None, metavar="PATH",
                 help="regression UFM (Andriopoulos et al. 2024): a .npy of targets, n x N (no pickles)")
  s.add_argument("--random-targets", default=None, dest="random_targets", metavar="n,N",
                 help="regression UFM with random targets of standard deviations 1, 1/2, ..., 1/n "
                      "(ufm.regression.random_targets, key fold_in(key(seed), 1))")
  s.add_argument("--bias", action=argparse.BooleanOptionalAction, default=False,
                 help="learn a bias b (--no-bias: logits W h)")
  s.add_argument("--K", type=int, metavar="K", help="number of classes (with --n)")
  s.add_argument("--n", type=int, metavar="N", help="samples per class (balanced; with --K)")
  s.add_argument("--counts", type=str, metavar="N1,N2,...", help="samples of each class, e.g. 20,10,5,5")
  s.add_argument("--d", type=int, default=None, metavar="D", help="feature dimension (required unless --widths)")
  s.add_argument("--depth", type=int, default=1, metavar="M",
                 help="deep linear UFM: M layers of width D")
  s.add_argument("--widths", type=str, default=None, metavar="D1,...,DM",
                 help="deep linear UFM: layer widths (sets M; D is D1)")
  s.add_argument("--lam-W", type=float, default=5e-3, dest="lam_W", metavar="LAM",
                 help="weight decay of the classifier W")
  s.add_argument("--lam-H", type=float, default=5e-3, dest="lam_H", metavar="LAM",
                 help="weight decay of the features H")
  s.add_argument("--lam-b", type=float, default=0.0, dest="lam_b", metavar="LAM",
                 help="weight decay of b (needs --bias)")
  s.add_argument("--solver", choices=("gd", "adam", "lbfgs"), default="lbfgs",
                 help="gd (with --momentum), adam or lbfgs")
  s.add_argument("--lr", type=float, default=0.1, help="learning rate of gd and adam")
  s.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum of gd")
  s.add_argument("--init-scale", type=float, default=0.1, dest="init_scale", metavar="SCALE",
                 help="std of the Gaussian initialisation")
  s.add_argument("--steps", type=int, default=None,
                 help="gd/adam steps (20000) or lbfgs cap (3000)")
  s.add_argument("--seed", type=int, default=0, help="seed of the initialisation (of the first start)")
  s.add_argument("--restarts", type=int, default=None, metavar="R",
                 help="starts, vmapped, the best kept (default: 8 for a deep problem, depth >= 2, whose landscape has "
                      "local minima; 1 for the plain UFM, whose landscape is benign)")
  s.add_argument("--float32", action="store_true",
                 help="float32 instead of the default float64 (faster; the reference agreement of 1e-10 needs "
                      "float64, float32 reaches about 1e-4 to 1e-3)")
  s.add_argument("--x64", action="store_true", help=argparse.SUPPRESS)  # float64 is the default now
  s.add_argument("--json", action="store_true", help="print one JSON object, not the table")
  sub.add_parser("demo", help="every closed form beside its float64 reference solve", description=DEMO_DESCRIPTION,
                 **kw)
  m = sub.add_parser("measure", help="NC metrics of your own features, streamed in batches (ufm.streaming)",
                     description=MEASURE_DESCRIPTION, **kw)
  m.add_argument("features", metavar="FEATURES", help="a .npz holding H (N x d rows) and labels (and W, b), or a .npy "
                                                      "of features (then --labels)")
  m.add_argument("--labels", default=None, metavar="PATH", help=".npy of integer labels (with a .npy FEATURES)")
  m.add_argument("--W", default=None, metavar="PATH", help=".npy of the classifier, K x d (optional)")
  m.add_argument("--b", default=None, metavar="PATH", help=".npy of the bias, K (optional)")
  m.add_argument("--K", type=int, default=None, help="number of classes (default: W's rows, else max label + 1)")
  m.add_argument("--batch", type=int, default=65536, metavar="ROWS", help="rows per batch (memory: ROWS x d)")
  m.add_argument("--conventions", default="ufm", metavar="NAME",
                 help="the metric definitions: ufm, papyan2020, zhu2021, wu2024 or rhubarbwu")
  m.add_argument("--ood", default=None, metavar="PATH",
                 help=".npy (or .npz with H) of out-of-distribution features, N' x d, for NC5 (optional)")
  m.add_argument("--ood-labels", default=None, metavar="PATH", help=".npy of the OOD set's integer labels (optional)")
  m.add_argument("--json", action="store_true", help="print one JSON object, not the table")
  c = sub.add_parser("claims", help="theory claims checked on random problems (ufm.claims)",
                     description=CLAIMS_DESCRIPTION, **kw)
  csub = c.add_subparsers(dest="claims_command", required=True, parser_class=_Parser, metavar="ACTION",
                          title="actions")
  store_help = "directory of the claims store"
  cl = csub.add_parser("list", help="the catalogue: name, expected status, last run, source", **kw)
  cl.add_argument("--store", default=DEFAULT_STORE, metavar="DIR", help=store_help)
  for name, hlp in (("run", "run catalogue claims (all of them without NAME)"),
                    ("check", "run a claim of your own (module:attr or file.py:attr)")):
    r = csub.add_parser(name, help=hlp, description=hlp[0].upper() + hlp[1:] + ".", **kw)
    if name == "run":
      r.add_argument("names", nargs="*", metavar="NAME", help="claims to run (default: all; see claims list)")
      r.add_argument("--all", action="store_true", help="run every claim of the catalogue")
      r.add_argument("--report", nargs="?", const="README.md", default=None, metavar="PATH",
                     help="without PATH (or with a PATH holding the scorecard markers, README.md by default): merge "
                          "the results into the committed scorecard (--scorecard) and regenerate the table between "
                          "the markers; with another PATH: write the markdown table of this run there")
      r.add_argument("--scorecard", default=None, metavar="JSON",
                     help="the scorecard JSON that --report merges into (default: ufm/claims/scorecard.json)")
    else:
      r.add_argument("target", metavar="MODULE:ATTR", help="e.g. my_claims:my_claim or my_claims.py:my_claim")
    r.add_argument("--examples", type=int, default=200, metavar="N", help="random problems per claim")
    r.add_argument("--seed", type=int, default=0, help="hypothesis seed of the random problems")
    r.add_argument("--store", default=DEFAULT_STORE, metavar="DIR", help=store_help)
    r.add_argument("--no-shrink", action="store_true", help="report the first failing example unshrunk")
    r.add_argument("--max-shapes", type=int, default=16, metavar="S",
                   help="draw the examples from at most S problem shapes (one compilation each; default 16, "
                        "ufm.claims.DEFAULT_MAX_SHAPES; 0: no limit)")
  return p


def _counts(args):
  from ufm.problem import balanced_counts
  if args.counts is not None:
    if args.n is not None:
      raise ValueError("give either --counts or --K with --n, not both")
    try:
      counts = tuple(int(c) for c in args.counts.split(","))
    except ValueError:
      raise ValueError(f"counts = {args.counts!r} is not a comma-separated list of integers; "
                       "allowed: integers >= 1, at least 2 of them") from None
    if args.K is not None and args.K != len(counts):
      raise ValueError(f"K = {args.K} does not match the {len(counts)} entries of --counts")
    return counts
  if args.K is None or args.n is None:
    raise ValueError("give --K and --n (balanced) or --counts")
  return balanced_counts(args.K, args.n)


def _widths(args):
  """``None`` for the plain UFM (``--depth 1`` without ``--widths``), else the deep UFM's layer widths."""
  spec, depth = getattr(args, "widths", None), getattr(args, "depth", 1)
  if spec is not None:
    try:
      widths = tuple(int(w) for w in spec.split(","))
    except ValueError:
      raise ValueError(f"widths = {spec!r} is not a comma-separated list of integers; "
                       "allowed: integers >= 1, one per layer") from None
    if depth not in (1, len(widths)):
      raise ValueError(f"depth = {depth} does not match the {len(widths)} entries of --widths")
    if args.d is not None and args.d != widths[0]:
      raise ValueError(f"d = {args.d} does not match the first width {widths[0]} (d is d_1)")
    return widths
  if args.d is None:
    raise ValueError("give --d (feature dimension) or --widths")
  depth = check_int("depth", depth, lo=1)
  return None if depth == 1 else (args.d,) * depth


MAX_STEPS = 10_000_000
#: Starts of a deep (depth >= 2) solve by default: 3 of 8 single starts end at a local minimum on the deep MSE-UFM
#: with counts (6, 6, 6), d = 4, depth 2, lam_W = 0.02, lam_H = 0.01 (seeds 0-7, measured).
DEEP_RESTARTS = 8
MAX_RESTARTS = 4096


def _check_steps(steps: int) -> int:
  if not 1 <= steps <= MAX_STEPS:
    raise ValueError(f"steps = {steps} is out of range; allowed range: integers 1 <= steps <= {MAX_STEPS:,}")
  return steps


def _rel(a: float, b: float) -> float:
  if not (math.isfinite(a) and math.isfinite(b)):
    return float("nan")
  return abs(a - b) / abs(b) if b != 0 else abs(a - b)


def _targets_given(args) -> bool:
  """Whether ``args`` ask for the regression UFM (``--targets`` or ``--random-targets``; not both)."""
  path, rnd = getattr(args, "targets", None), getattr(args, "random_targets", None)
  if path is not None and rnd is not None:
    raise ValueError("give either --targets or --random-targets, not both")
  if path is None and rnd is None:
    return False
  if args.K is not None or args.n is not None or args.counts is not None:
    raise ValueError("the regression UFM has targets, not classes: give --targets or --random-targets without "
                     "--K, --n or --counts")
  return True


def _loss_params(args) -> dict:
  """``--loss-param NAME=VALUE`` as ``{NAME: float}`` (names and ranges checked by the problem's constructor)."""
  out = {}
  for item in getattr(args, "loss_param", None) or ():
    name, sep, value = item.partition("=")
    try:
      out[name.strip()] = float(value)
    except ValueError:
      sep = ""
    if not sep or not name.strip():
      raise ValueError(f"loss_param = {item!r} is not NAME=VALUE with a number VALUE, e.g. gamma=2")
  return out


def _loss_param_values(problem) -> dict | None:
  """The loss parameters a :class:`ufm.loss_problem.LossProblem` solved with (``None`` for the other families)."""
  spec = losses.get(problem.loss)
  if not spec.params or not hasattr(problem, spec.params[0].name):
    return None
  return {p.name: float(getattr(problem, p.name)) for p in spec.params}


def _problem(args, counts, widths, seed, dtype):
  """The problem ``args`` describe: plain (any registered loss and its parameters), deep linear, deep ReLU
  (``--activation relu``) or regression (``--targets`` / ``--random-targets``); ``ValueError`` naming the option for
  a combination that does not exist."""
  import numpy as np

  from ufm.problem import make_problem
  activation = getattr(args, "activation", "linear")
  params = _loss_params(args)
  if counts is None:  # regression
    from ufm import regression
    if args.loss not in (None, "mse"):
      raise ValueError(f"loss = {args.loss!r}: the regression UFM has the squared loss; allowed: mse")
    if widths is not None or activation != "linear" or params:
      raise ValueError("the regression UFM has one layer: give --d, without --depth, --widths, --activation or "
                       "--loss-param")
    args.loss = "mse"
    if args.targets is not None:
      try:
        Y = np.load(args.targets, allow_pickle=False)
      except (OSError, ValueError) as e:
        raise ValueError(f"targets = {args.targets!r} is not a readable .npy file ({e}); allowed: a .npy of "
                         "targets n x N, without pickles") from None
    else:
      try:
        n, N = (int(v) for v in args.random_targets.split(","))
      except ValueError:
        raise ValueError(f"random_targets = {args.random_targets!r} is not n,N; allowed: two integers, n >= 1 "
                         "and N >= 2") from None
      check_int("n", n, lo=1)
      check_int("N", N, lo=2)
      Y = regression.random_targets(jax.random.fold_in(jax.random.key(seed), 1), n, N, dtype=dtype)
    return regression.make_regression_problem(Y, d=args.d, lam_W=args.lam_W,
                                              lam_H=args.lam_H, lam_b=args.lam_b, bias=args.bias, dtype=dtype)
  if activation == "relu":
    from ufm.relu_deep import make_relu_problem
    if widths is None:
      raise ValueError("activation = 'relu' needs layers: give --depth >= 2 or --widths")
    if args.bias or args.lam_b:
      raise ValueError("the ReLU DUFM is bias-free: drop --bias and --lam-b")
    if params:
      raise ValueError("--loss-param applies to the plain UFM only (drop --depth/--widths)")
    args.loss = args.loss or "mse"
    return make_relu_problem(counts, widths=widths, lam_W=args.lam_W, lam_H=args.lam_H, loss=args.loss, dtype=dtype)
  args.loss = args.loss or "ce"
  if widths is not None:
    from ufm.deep import make_deep_problem
    if params:
      raise ValueError("--loss-param applies to the plain UFM only (drop --depth/--widths)")
    return make_deep_problem(counts, widths=widths, lam_W=args.lam_W, lam_H=args.lam_H, lam_b=args.lam_b,
                             loss=args.loss, bias=args.bias, dtype=dtype)
  if losses.get(args.loss).params:
    from ufm.loss_problem import make_loss_problem
    return make_loss_problem(counts, d=args.d, lam_W=args.lam_W, lam_H=args.lam_H, lam_b=args.lam_b, loss=args.loss,
                             bias=args.bias, dtype=dtype, **params)
  if params:
    raise ValueError(f"loss = {args.loss!r} has no parameters; --loss-param applies to "
                     f"{', '.join(n for n in losses.names() if losses.get(n).params)}")
  return make_problem(counts, d=args.d, lam_W=args.lam_W, lam_H=args.lam_H, lam_b=args.lam_b, loss=args.loss,
                      bias=args.bias, dtype=dtype)


def solve(args) -> dict:
  """Validates, solves and compares; returns the JSON-able record."""
  import numpy as np

  from ufm import metrics, solvers, theory
  from ufm import verdict as verdicts
  dtype = "float32" if getattr(args, "float32", False) else "float64"
  regression = _targets_given(args)
  counts = None if regression else _counts(args)
  widths = _widths(args)
  restarts = getattr(args, "restarts", None)
  restarts = (1 if widths is None else DEEP_RESTARTS) if restarts is None else restarts
  check_int("restarts", restarts, lo=1, hi=MAX_RESTARTS)
  seed = int(check_seed("seed", args.seed))
  steps = _check_steps((3000 if args.solver == "lbfgs" else 20_000) if args.steps is None else args.steps)
  problem = _problem(args, counts, widths, seed, dtype)
  if args.solver == "lbfgs":
    hp = solvers.lbfgs_hparams(init_scale=args.init_scale, dtype=dtype)
    solver, static = solvers.lbfgs_reference, {"max_steps": steps}
  else:
    hp = solvers.gd_hparams(args.lr, momentum=args.momentum, init_scale=args.init_scale, dtype=dtype)
    solver = solvers.gradient_descent
    static = {"optimizer": "adam" if args.solver == "adam" else "sgd", "num_steps": steps,
              "log_every": math.gcd(steps, 100)}
  key = jax.random.key(seed)
  t0 = time.perf_counter()
  if restarts == 1:
    sol, starts = jax.block_until_ready(solver(key, problem, hp, **static)), None
  else:
    ms = verdicts.multistart(solver, key, problem, hp, restarts=restarts, **static)
    sol = jax.block_until_ready(ms.best)
    starts = {"restarts": restarts, "best": ms.index, "objectives": [float(f) for f in ms.objectives],
              "spread": ms.spread}
  wall = time.perf_counter() - t0
  Ws = sol.params.Ws if hasattr(sol.params, "Ws") else (sol.params.W,)
  H, b = (np.asarray(x, np.float64) for x in (sol.params.H, sol.params.b))
  got = {"objective": float(sol.objective), "norm_W_sq": float(sum(np.sum(np.asarray(W, np.float64)**2) for W in Ws)),
         "norm_H_sq": float(np.sum(H**2)), "norm_b": float(np.linalg.norm(b))}
  if problem.FAMILY in ("relu_deep", "regression"):  # the family's own metrics (the plain NC set needs one W)
    table = problem.METRICS
    got_metrics = {k: float(jax.jit(fn)(sol.params, problem)) for k, fn in table.items()}
  else:
    got_metrics = {k: float(v) for k, v in jax.jit(metrics.compute)(sol.params, problem).items()}
  try:
    pred = theory.predict(problem)
    th = {"objective": pred.objective, "norm_W_sq": pred.norm_W_sq, "norm_H_sq": pred.norm_H_sq,
          "norm_b": pred.norm_b, "metrics": pred.metrics, "geometry": pred.geometry, "source": pred.source}
    note = None
  except theory.NoClosedFormError as e:
    th, note = None, str(e)
  v = verdicts.verdict(sol, problem, optimum=None if th is None else th["objective"])
  return {**got, "metrics": got_metrics, "theory": th, "theory_note": note, "verdict": v.status,
          "verdict_message": v.message, "gap": v.gap, "starts": starts,
          "diverged": bool(sol.diverged), "converged": bool(sol.converged), "grad_norm": float(sol.grad_norm),
          "num_steps": int(sol.num_steps), "wall_time_s": wall,
          "config": {**{k: v for k, v in vars(args).items() if k not in ("command", "json")},
                     "counts": None if counts is None else list(counts), "d": problem.d, "family": problem.FAMILY,
                     "targets_shape": [problem.K, problem.N] if regression else None,
                     "loss_params": _loss_param_values(problem),
                     "dtype": dtype, "backend": jax.default_backend()}}


def format_table(rec: dict) -> str:
  """A readable table: quantity, solver value, theory value, relative error."""
  th = rec["theory"] or {}
  thm = th.get("metrics", {})
  lines = [f"{'quantity':<24}{'solver':>18}{'theory':>18}{'rel. err':>12}"]
  head_keys = ("objective", "norm_W_sq", "norm_H_sq", "norm_b")
  rows = [(k, rec[k], th.get(k)) for k in head_keys]
  # the metrics repeat the norms: each quantity once, with the closed form from either source
  rows += [(k, v, thm.get(k)) for k, v in rec["metrics"].items() if k not in head_keys]
  for name, v, t in rows:
    ts = "—" if t is None or (isinstance(t, float) and math.isnan(t)) else f"{t:18.10g}"
    es = "" if ts == "—" else f"{_rel(v, t):12.2e}"
    lines.append(f"{name:<24}{v:18.10g}{ts:>18}{es:>12}")
  c = rec["config"]
  status = "DIVERGED" if rec["diverged"] else ("converged" if rec["converged"] else "not converged")
  starts = rec.get("starts")
  if starts:
    status += (f" (best of {starts['restarts']} starts, #{starts['best']}; objectives spread "
               f"{starts['spread']:.2e})")
  deep_s = f", widths={c['widths']}" if c.get("widths") else (f", depth={c['depth']}" if c.get("depth", 1) > 1 else "")
  if c.get("activation") == "relu":
    deep_s += ", ReLU between layers"
  lp = c.get("loss_params") or {}
  loss_s = c["loss"].upper() + (f" ({', '.join(f'{k}={v:g}' for k, v in lp.items())})" if lp else "")
  what = (f"regression UFM, targets n x N = {c['targets_shape'][0]} x {c['targets_shape'][1]}"
          if c.get("targets_shape") else f"{loss_s}-UFM, counts={tuple(c['counts'])}")
  head = (f"{what}, {'bias' if c['bias'] else 'no bias'}, "
          f"d={c['d']}{deep_s}, "
          f"lam_W={c['lam_W']:g}, lam_H={c['lam_H']:g}, lam_b={c['lam_b']:g}, {c['solver']}, {c['dtype']}\n"
          f"{status}: |grad| = {rec['grad_norm']:.2e} after {rec['num_steps']} steps ({rec['wall_time_s']:.1f} s)")
  geo = f"theory: {th['geometry']} — {th['source']}" if th else f"theory: none ({rec['theory_note']})"
  return "\n".join([head, f"verdict: {rec['verdict_message']}", geo, *lines])


def demo() -> int:
  """Every closed form of ufm.theory beside its float64 L-BFGS solve (the default reproduction)."""
  cases = [
      ("ce", False, "4", 6, 5e-3, 0.0), ("ce", True, "4", 3, 5e-3, 1e-2),
      ("mse", False, "4", 6, 5e-3, 0.0), ("mse", True, "4", 3, 5e-3, 0.0),
      ("mse", True, "4", 8, 5e-3, 0.5), ("mse", False, "20,10,5,5", 8, 1e-3, 0.0),
      ("ce", False, "4", 6, 0.06, 0.0),
  ]
  worst = 0.0
  for loss, bias, spec, d, lam, lam_b in cases:
    counts = spec if "," in spec else None
    args = argparse.Namespace(loss=loss, bias=bias, K=4 if counts is None else None, n=5 if counts is None else None,
                              counts=counts, d=d, lam_W=lam, lam_H=lam, lam_b=lam_b, solver="lbfgs", lr=0.1,
                              momentum=0.0, init_scale=0.1, steps=None, seed=0, float32=False, restarts=1,
                              command="solve", json=False)
    rec = solve(args)
    print(format_table(rec), end="\n\n")
    th = rec["theory"]
    worst = max([worst] + [_rel(rec[k], th[k]) for k in ("objective", "norm_W_sq", "norm_H_sq")])
  print(f"largest relative error of objective and norms against the closed forms: {worst:.2e}")
  return 0


def _claims_setup(args):
  """Validates a ``claims`` command and resolves its claims and store, before anything compiles."""
  from ufm import claims
  store = claims.ClaimStore(args.store or claims.DEFAULT_STORE_DIR)
  if args.claims_command == "list":
    return list(claims.CATALOGUE.values()), store
  if args.examples is not None and args.examples < 1:
    raise ValueError(f"examples = {args.examples} is out of range; allowed: integers >= 1")
  check_seed("seed", args.seed)
  if args.max_shapes is not None and args.max_shapes < 0:
    raise ValueError(f"max_shapes = {args.max_shapes} is out of range; allowed: integers >= 1, or 0 for no limit")
  if args.claims_command == "check":
    selected = claims.load_claim(args.target)
  else:
    if args.all and args.names:
      raise ValueError("give claim names or --all, not both")
    selected = [claims.get_claim(n) for n in args.names] if args.names else list(claims.CATALOGUE.values())
  for c in selected:
    store.counterexamples(c.name)  # an unreadable store or a bad stored example fails here, not mid-run
  store.check_writable()  # and an unwritable one before the first claim computes
  if getattr(args, "report", None):
    from ufm.io import check_writable_file
    check_writable_file("report", args.report)
    if _scorecard_mode(args.report):
      from ufm.claims import scorecard
      path = args.scorecard or scorecard.SCORECARD_PATH
      scorecard.load(path)  # an unreadable scorecard fails here, before any claim computes
      check_writable_file("scorecard", str(path))
  return selected, store


def _scorecard_mode(report: str) -> bool:
  """Whether ``--report PATH`` regenerates a scorecard between markers (PATH exists and holds them)."""
  import os
  from ufm.claims import scorecard
  return os.path.isfile(report) and scorecard.readme_table(report) is not None


def claims_list(selected, store) -> int:
  """``claims list``: one line per catalogue claim (name, expected status, last run, source)."""
  print(f"{'claim':<32}{'expected':<10}{'last run':<44}source")
  for c in selected:
    last = store.last_run(c.name)
    run = "never run" if last is None else (f"{last['status']} ({last['examples']} examples, "
                                            f"{last['failures']} failing, {last['when'][:10]})")
    print(f"{c.name:<32}{c.expected:<10}{run:<44}{c.source}")
  return 0


def claims_run(args, selected, store) -> int:
  """``claims run`` / ``claims check``: runs each claim, prints its result; exit 1 if any differs from expected."""
  from ufm import claims
  examples = claims.DEFAULT_EXAMPLES if args.examples is None else args.examples
  max_shapes = args.max_shapes or None  # 0: no limit
  results = []
  for c in selected:
    r = claims.run_claim(c, examples=examples, seed=args.seed, store=store, shrink=not args.no_shrink,
                         max_shapes=max_shapes)
    results.append(r)
    print(claims.format_result(r, c), flush=True)
  bad = [r.name for r in results if not r.as_expected]
  print(f"{len(results)} claim(s): {len(results) - len(bad)} as expected" + (f"; NOT as expected: {', '.join(bad)}"
                                                                            if bad else ""))
  if getattr(args, "report", None):
    which = '--all' if not args.names else ' '.join(args.names)
    shapes_arg = "" if max_shapes == claims.DEFAULT_MAX_SHAPES else f" --max-shapes {args.max_shapes}"
    if _scorecard_mode(args.report):
      from ufm.claims import catalogue, scorecard
      path = args.scorecard or scorecard.SCORECARD_PATH
      cmd = f"python -m ufm claims run {which} --examples {examples} --seed {args.seed}{shapes_arg} --report"
      data = scorecard.merge(scorecard.load(path), results, {c.name: c for c in selected}, catalogue.FAMILY_OF, cmd)
      scorecard.write(data, path)
      scorecard.update_readme(args.report, scorecard.render(data))
      print(f"scorecard merged into {path} and written to {args.report} between its markers")
    else:
      cmd = (f"python -m ufm claims run {which} --examples {examples} --seed {args.seed}{shapes_arg} "
             f"--report {args.report}")
      with open(args.report, "w", encoding="utf-8") as f:
        f.write(claims.report_markdown(results, {c.name: c for c in selected}, command=cmd))
      print(f"scorecard written to {args.report}")
  return 1 if bad else 0


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from ufm import cache
  cache.enable()  # compiled programs kept across runs (UFM_COMPILATION_CACHE=0 turns it off)
  # float64 unless solve --float32; only ever switched on: never undo a caller's x64
  if not getattr(args, "float32", False):
    jax.config.update("jax_enable_x64", True)
  try:
    if args.command == "demo":
      return demo()
    if args.command == "measure":
      from ufm.cli_measure import measure
      return measure(args)
    if args.command == "claims":
      selected, store = _claims_setup(args)
      if args.claims_command == "list":
        return claims_list(selected, store)
      return claims_run(args, selected, store)
    rec = solve(args)
  except ValueError as e:
    sys.stderr.write(f"ufm: error: {e}\n")
    return 2
  print(json.dumps(json_safe(rec)) if args.json else format_table(rec))
  return 0
