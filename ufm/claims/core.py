r"""Claims: declared statements about the UFM, checked on random problems against a float64 reference solve.

A :class:`Claim` names a statement and its source, the problems it applies to (a hypothesis
strategy of :class:`~ufm.testing.ProblemSpec`), and a check
``(problem, solution, theory) -> residuals`` with one :class:`~ufm.testing.Tolerance` (bound and
reason) per residual. :func:`run_claim` then

1. replays the counterexamples stored for the claim (:class:`~ufm.claims.store.ClaimStore`);
2. draws ``examples`` problems from the strategy (hypothesis, seeded);
3. solves them with :func:`ufm.solvers.lbfgs_reference`, ``jax.vmap`` ped over the problems
   of one shape (one compilation per shape and batch size; problems of different shapes
   cannot share a program, so they are grouped);
4. evaluates every residual against its bound;
5. if an example fails, lets hypothesis shrink it to a minimal counterexample (same seed, so
   it meets the same failure first; the solved examples are cached), stores it, and records
   the status of the run.

A residual is checked as ``residual <= bound``; ``NaN`` fails. Every example also carries the
residual ``grad_norm`` (the largest final gradient norm of its reference solves) with bound
``Claim.gtol``: a comparison with an unconverged solve decides nothing, so it counts as a failure.
"""

import collections
import dataclasses
import functools
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ufm import theory as _theory
from ufm.problem import Problem
from ufm.solvers import LBFGSHparams, Solution, lbfgs_reference
from ufm.testing import TOL, Tolerance, is_spec, tolerance
from ufm.validate import check_seed

__all__ = [
    "DEFAULT_EXAMPLES",
    "DEFAULT_MAX_SHAPES",
    "EXPECTED",
    "Claim",
    "ClaimResult",
    "Outcome",
    "assert_claim",
    "draw_examples",
    "format_result",
    "format_worst",
    "report_markdown",
    "result_record",
    "run_claim",
]

DEFAULT_EXAMPLES = 200
#: Distinct problem shapes a run draws its examples from by default. Each shape is one compiled program (about 2 s
#: on a CPU core, measured) while its solves take about 0.01 s each: a claim's cost is its number of shapes. The
#: catalogue's strategies draw up to 62 shapes in 200 examples (573 programs for the whole catalogue); with 16
#: shapes per claim the catalogue compiles 281 programs and every claim sees about 12 examples per shape, its
#: weight decays, seeds and other array parameters drawn afresh in each. The shapes are the first 16 hypothesis
#: meets, so another seed covers other shapes; ``max_shapes=None`` (``--max-shapes 0``) lifts the limit.
DEFAULT_MAX_SHAPES = 16
EXPECTED = ("holds", "refuted", "holds-when")
#: How a claim's examples are solved: the float64 L-BFGS reference (any problem family), the convex reference of the
#: CE-UFM (:func:`ufm.convex.convex_reference`), or nothing (the check computes both sides itself).
SOLVERS = ("lbfgs", "convex", "none")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_SOLVES_PER_BATCH = 8  # problems x inits per vmapped call; a fixed size, so one compilation per shape
# Each compiled reference program maps ~580 memory regions on CPU (measured), and Linux allows 65530 per process
# (vm.max_map_count): a full catalogue run (~150 shapes) died with "LLVM compilation error: Cannot allocate memory".
# So JAX's compilation caches are dropped whenever this many reference programs are alive.
_MAX_PROGRAMS = 40


@dataclasses.dataclass(frozen=True, eq=False)
class Claim:
  r"""A statement about the UFM, checkable on random problems.

  Attributes:
    name: identifier (letters, digits, ``_.-``), used on the command line and in the store.
    source: where the statement comes from (paper, theorem; or "derived in ...").
    statement: the statement in one or two sentences, with its conditions.
    problems: hypothesis strategy of :class:`~ufm.testing.ProblemSpec`
      (see :func:`ufm.testing.problem_specs`): the problems the claim applies to.
    check: ``(problem, solution, theory) -> {residual name: value}``. ``solution`` is the
      :class:`~ufm.solvers.Solution` of the reference solve (NumPy leaves; a leading ``inits``
      axis when ``inits > 1``), ``theory`` is ``theory(problem)``.
    tolerances: residual name -> a :data:`ufm.testing.TOL` entry name (bound: its ``rtol``, for
      :func:`ufm.testing.rel_error` residuals) or a :class:`~ufm.testing.Tolerance`. Every residual
      the check returns needs one.
    theory: ``problem -> expected side`` (default :func:`ufm.theory.predict`); it must not
      call a solver (a prediction must not be computed by the code it checks).
    inits: random initialisations per problem (``> 1`` for landscape claims: vmapped over seeds
      split from the example's seed).
    gtol: gradient-norm target of the reference solve (``|grad| <= gtol`` is required).
    max_steps: L-BFGS iteration cap.
    expected: ``"holds"``; ``"refuted"`` for a published statement kept as a documented counterexample;
      ``"holds-when"`` for a statement that holds only under a condition narrower than published (the claim's
      problems draw from that narrowed domain, and it runs like ``"holds"`` there).
    refuted_because: why the claim is expected to fail (required with ``expected="refuted"``).
    solver: ``"lbfgs"`` (default: :func:`ufm.solvers.lbfgs_reference` on ``spec.problem()``, any family),
      ``"convex"`` (:func:`ufm.convex.convex_reference`, the imbalanced CE-UFM) or ``"none"`` (no solve:
      ``solution`` is ``None`` and the check computes both sides, e.g. two closed forms at one problem).
    counterexamples: problem descriptions replayed before the random examples on every run (committed with the
      claim: a refuted claim's minimal counterexample, which its check must reproduce).
    holds_when: the narrowing condition (required with ``expected="holds-when"``).
    paper: the scorecard's group (default: ``source``), up to its first ``" ("`` or ``";"``.
    convergence: with ``inits > 1``, which starts must reach ``gtol``: ``"all"`` (default; a landscape claim compares
      every start) or ``"best"`` (the start of lowest objective, for a check that reads only the best start: another
      start stalled above it decides nothing).
  """
  name: str
  source: str
  statement: str
  problems: st.SearchStrategy
  check: Callable[[Problem, Solution, Any], Mapping[str, float]]
  tolerances: Mapping[str, str | Tolerance]
  theory: Callable[[Problem], Any] = _theory.predict
  inits: int = 1
  gtol: float = 1e-10
  max_steps: int = 3000
  expected: str = "holds"
  refuted_because: str = ""
  solver: str = "lbfgs"
  counterexamples: Any = ()  # a tuple of specs (checked in __post_init__)
  holds_when: str = ""
  paper: str = ""
  convergence: str = "all"

  def __post_init__(self):
    if not isinstance(self.name, str) or not _NAME.match(self.name):
      raise ValueError(f"claim name {self.name!r} is not allowed; use letters, digits and _.- (starting with a letter)")
    if not (isinstance(self.source, str) and self.source.strip()):
      raise ValueError(f"claim {self.name!r}: source is empty; cite the paper and theorem (or 'derived in ...')")
    if not isinstance(self.problems, st.SearchStrategy):
      raise ValueError(f"claim {self.name!r}: problems must be a hypothesis strategy of ufm.testing.ProblemSpec "
                       "(e.g. ufm.testing.problem_specs(...))")
    if not callable(self.check) or not callable(self.theory):
      raise ValueError(f"claim {self.name!r}: check and theory must be callables")
    if not isinstance(self.inits, int) or self.inits < 1:
      raise ValueError(f"claim {self.name!r}: inits = {self.inits!r} is out of range; allowed: integers >= 1")
    if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
      raise ValueError(f"claim {self.name!r}: max_steps = {self.max_steps!r}; allowed: integers >= 1")
    if not (isinstance(self.gtol, (int, float)) and self.gtol > 0):
      raise ValueError(f"claim {self.name!r}: gtol = {self.gtol!r}; allowed: > 0")
    if self.expected not in EXPECTED:
      raise ValueError(f"claim {self.name!r}: expected = {self.expected!r}; allowed values: {', '.join(EXPECTED)}")
    if self.expected == "refuted" and not self.refuted_because.strip():
      raise ValueError(f"claim {self.name!r} is expected refuted: say why in refuted_because")
    if self.expected == "holds-when" and not self.holds_when.strip():
      raise ValueError(f"claim {self.name!r} is expected to hold under a condition: state it in holds_when")
    if self.convergence not in ("all", "best"):
      raise ValueError(f"claim {self.name!r}: convergence = {self.convergence!r}; allowed values: all, best")
    if self.solver not in SOLVERS:
      raise ValueError(f"claim {self.name!r}: solver = {self.solver!r}; allowed values: {', '.join(SOLVERS)}")
    if not isinstance(self.counterexamples, tuple) or not all(hasattr(c, "to_json") and hasattr(c, "problem")
                                                              for c in self.counterexamples):
      raise ValueError(f"claim {self.name!r}: counterexamples must be a tuple of problem descriptions "
                       "(ufm.testing.ProblemSpec or another family's spec)")
    self.resolved_tolerances()  # validates

  @property
  def group(self) -> str:
    """The scorecard group: ``paper`` (or else ``source``) up to its first ``" ("`` or ``";"``."""
    return re.split(r" \(|;", self.paper or self.source, maxsplit=1)[0].strip()

  def resolved_tolerances(self) -> dict[str, Tolerance]:
    """Residual name -> :class:`~ufm.testing.Tolerance`, including ``grad_norm`` (bound ``gtol``)."""
    out = {}
    if not isinstance(self.tolerances, Mapping) or not self.tolerances:
      raise ValueError(f"claim {self.name!r}: tolerances must map each residual name to a TOL entry or a Tolerance")
    for k, v in self.tolerances.items():
      if k == "grad_norm":
        raise ValueError(f"claim {self.name!r}: the residual name 'grad_norm' is reserved (the convergence check)")
      if isinstance(v, str):
        if v not in TOL:
          raise ValueError(f"claim {self.name!r}: tolerance {v!r} of {k!r} is not in ufm.testing.TOL; "
                           f"known entries: {', '.join(TOL)}")
        v = tolerance(v)
      if not (isinstance(v, Tolerance) and v.bound > 0 and isinstance(v.reason, str) and v.reason.strip()):
        raise ValueError(f"claim {self.name!r}: tolerance of {k!r} must be a TOL entry name or "
                         "Tolerance(bound > 0, reason)")
      out[k] = v
    if self.solver == "lbfgs":
      out["grad_norm"] = Tolerance(float(self.gtol), "the reference solve must reach |grad| <= gtol; a comparison "
                                   "with an unconverged solve decides nothing")
    elif self.solver == "convex":
      out["grad_norm"] = Tolerance(1.0, "the convex solve's KKT residual over its own stopping bound "
                                   "max(tol, rounding floor) must be <= 1: an unconverged solve decides nothing")
    return out


class Outcome(NamedTuple):
  """One example: its residuals, the names over their bounds, and the error raised by the check (if any)."""
  spec: Any  # a ufm.testing spec (ProblemSpec or another family's)
  residuals: dict[str, float]
  failing: tuple[str, ...]
  error: str | None

  @property
  def ok(self) -> bool:
    return self.error is None and not self.failing


class ClaimResult(NamedTuple):
  """The outcome of :func:`run_claim`.

  Attributes:
    name, source, expected: of the claim.
    status: ``"holds"`` / ``"holds-when"`` (no failure), ``"FAILED"`` (a failure of a claim expected to hold),
      ``"refuted"`` (a failure, as expected: every committed counterexample fails), ``"NOT REFUTED"`` (no
      failure of a claim expected refuted), ``"NOT REPRODUCED"`` (a committed counterexample passes) or ``"ERROR"``
      (the check of a claim expected refuted raised: an error refutes nothing).
    examples: random examples checked; replayed: stored counterexamples re-checked first.
    failures: failing examples among both.
    max_residuals: residual name -> largest value over all examples.
    worst: ``(residual name, value, bound)`` with the largest value/bound (``("error", inf, 0)`` if a check raised).
    counterexample: the minimal failing :class:`~ufm.testing.ProblemSpec` (``None`` without failure),
      and counterexample_outcome its :class:`Outcome`.
    shrunk: whether the counterexample is hypothesis's shrunk one; shrink_calls: new examples solved while shrinking.
    seed: hypothesis seed of the random examples; wall_s: seconds.
    shapes: distinct problem shapes among the random examples; max_shapes: the run's limit (``None``: none).
  """
  name: str
  source: str
  expected: str
  status: str
  examples: int
  replayed: int
  failures: int
  max_residuals: dict
  worst: tuple
  counterexample: Any
  counterexample_outcome: Outcome | None
  shrunk: bool
  shrink_calls: int
  seed: int
  wall_s: float
  shapes: int = 0
  max_shapes: int | None = None

  @property
  def as_expected(self) -> bool:
    """Whether the run agrees with the claim's expected status."""
    return self.status == self.expected


# ----------------------------------------------------------------------------- reference solves


# XLA backend optimisation level 0: the same float64 program, compiled in about half the time
# (measured 5.7 s -> 2.4 s per shape on 2 CPU cores); compilation, not solving, dominates small problems.
@functools.partial(jax.jit, static_argnames=("max_steps",), compiler_options={"xla_backend_optimization_level": 0})
def _reference_batch(problem, keys, init_scale, gtol, *, max_steps):
  """``lbfgs_reference`` vmapped over a flat batch of solves of one shape: every array leaf of the problem (weight
  decays, temperatures, fixed classifiers, labels: any family) carries the batch axis, with the keys and scales."""
  solve = lambda p, k, s: lbfgs_reference(k, p, LBFGSHparams(init_scale=s, gtol=gtol), max_steps=max_steps)
  return jax.vmap(solve)(problem, keys, init_scale)


@functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
def _convex_batch(problem, keys, init_scale, gtol):  # noqa: ARG001 (the batch functions share one signature)
  """:func:`ufm.convex.convex_reference` vmapped over a flat batch of CE problems of one shape (deterministic:
  keys, scales and gtol are unused; its own KKT tolerance applies)."""
  from ufm import convex
  hp = convex.convex_hparams(tol=_CONVEX_TOL, dtype=problem.dtype)
  return jax.vmap(lambda p, k: convex.convex_reference(k, p, hp))(problem, keys)


_CONVEX_TOL = 1e-11  # the convex solve's KKT tolerance (ufm.convex.convex_hparams' default)


def _keys(spec, inits: int) -> jax.Array:
  key = jax.random.key(spec.seed)
  return key[None] if inits == 1 else jax.random.split(key, inits)


def _structure_key(problem) -> tuple:
  """Problems with equal keys share one compiled program: the pytree structure (static fields: counts, d, loss,
  widths, ...) and every leaf's shape and dtype."""
  leaves, treedef = jax.tree.flatten(problem)
  return (treedef, tuple((np.shape(x), str(np.asarray(x).dtype)) for x in leaves))


# Solutions already computed in this process, keyed by (spec type, problem, solver, inits, gtol, max_steps): claims
# that draw the same problems (the catalogue's CE claims share a strategy) reuse them instead of solving (and maybe
# compiling) again.
_SOLUTIONS: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_MAX_SOLUTIONS = 2048  # ~50 kB each (the NaN-padded L-BFGS trace dominates)


def _solve(specs: list, claim: Claim) -> list:
  """Solutions of ``specs``: from :data:`_SOLUTIONS` when solved before, else :func:`_solve_new` (``None`` each for
  ``solver="none"``)."""
  if claim.solver == "none":
    return [None] * len(specs)
  tag = (claim.solver, claim.inits, float(claim.gtol), claim.max_steps)
  todo = [s for s in dict.fromkeys(specs) if (type(s), s, *tag) not in _SOLUTIONS]
  fresh = dict(zip(todo, _solve_new(todo, claim)))
  out = [fresh[s] if s in fresh else _SOLUTIONS[(type(s), s, *tag)] for s in specs]
  for s, sol in fresh.items():
    _SOLUTIONS[(type(s), s, *tag)] = sol
    while len(_SOLUTIONS) > _MAX_SOLUTIONS:
      _SOLUTIONS.popitem(last=False)
  return out


def _solve_new(specs: list, claim: Claim) -> list:
  """Solutions of ``specs`` (with a leading ``inits`` axis when ``claim.inits > 1``).

  Every solve of one shape (:func:`_structure_key`), whatever the claim, goes through the same program: a flat batch
  of ``_SOLVES_PER_BATCH`` solves (padded by repetition) with every array leaf of the problem stacked, so each shape
  compiles once (until the caches are dropped, every ``_MAX_PROGRAMS`` programs) and, with the persistent
  compilation cache (:mod:`ufm.cache`), never again in a later process.
  """
  out: list[Any] = [None] * len(specs)
  problems = [s.problem() for s in specs]
  groups: dict[tuple, list[int]] = {}
  for i, p in enumerate(problems):
    groups.setdefault(_structure_key(p), []).append(i)
  B, m = _SOLVES_PER_BATCH, claim.inits
  batch_fn = _convex_batch if claim.solver == "convex" else functools.partial(_reference_batch,
                                                                               max_steps=claim.max_steps)
  for idx in groups.values():
    if _reference_batch._cache_size() + _convex_batch._cache_size() >= _MAX_PROGRAMS:
      jax.clear_caches()  # frees the compiled programs (and their memory maps); see _MAX_PROGRAMS
    dt = problems[idx[0]].dtype
    solves = [(i, k) for i in idx for k in _keys(specs[i], m)]  # flat: example x init
    rows: dict[int, list] = {i: [] for i in idx}
    for start in range(0, len(solves), B):
      chunk = solves[start:start + B]
      padded = chunk + [chunk[0]] * (B - len(chunk))
      batch = jax.tree.map(lambda *xs: jnp.stack(xs), *[problems[i] for i, _ in padded])
      sol = batch_fn(batch, jnp.stack([k for _, k in padded]),
                     jnp.asarray([getattr(specs[i], "init_scale", 1.0) for i, _ in padded], dt),
                     jnp.asarray(claim.gtol, dt))
      sol = jax.device_get(sol)
      for j, (i, _) in enumerate(chunk):
        rows[i].append(jax.tree.map(lambda x, j=j: np.asarray(x[j]), sol))
    for i in idx:
      out[i] = rows[i][0] if m == 1 else jax.tree.map(lambda *xs: np.stack(xs), *rows[i])
  return out


def _convergence(claim: Claim, sol) -> dict[str, float]:
  """The residual that says the solve converged (``grad_norm``; none for ``solver="none"``)."""
  if claim.solver == "none":
    return {}
  grad = np.asarray(getattr(sol, "grad_norm", 0.0), np.float64)
  if claim.solver == "lbfgs" and claim.convergence == "best" and grad.ndim:
    # only the best start counts (a diverged start has no finite objective: it is never the best)
    f = np.where(np.asarray(sol.diverged, bool), np.inf, np.asarray(sol.objective, np.float64))
    f = np.where(np.isfinite(f), f, np.inf)
    return {"grad_norm": float(grad[np.argmin(f)]) if np.isfinite(f).any() else math.inf}
  if np.any(sol.diverged):
    return {"grad_norm": math.inf}
  if claim.solver == "convex":
    return {"grad_norm": float(np.max(np.asarray(sol.kkt) / np.maximum(_CONVEX_TOL, np.asarray(sol.kkt_floor))))}
  return {"grad_norm": float(np.max(grad))}


def _evaluate(claim: Claim, spec, sol, tols: dict[str, Tolerance]) -> Outcome:
  residuals = _convergence(claim, sol)
  error = None
  try:
    problem = spec.problem()
    got = claim.check(problem, sol, claim.theory(problem))
    if not isinstance(got, Mapping):
      raise TypeError(f"check returned {type(got).__name__}; it must return a dict of residuals")
    unknown = set(got) - set(tols)
    if unknown or "grad_norm" in got:
      raise ValueError(f"check returned residuals {sorted(unknown | ({'grad_norm'} & set(got)))} without a "
                       f"declared tolerance; declared: {', '.join(k for k in tols if k != 'grad_norm')}")
    residuals.update({k: float(v) for k, v in got.items()})
  except Exception as e:  # a claim that raises on a problem is a failing example, and is shrunk like one
    error = f"{type(e).__name__}: {e}"
  failing = tuple(k for k, v in residuals.items() if not v <= tols[k].bound)
  return Outcome(spec=spec, residuals=residuals, failing=failing, error=error)


# ----------------------------------------------------------------------------- running a claim


class _Failed(Exception):
  """Raised inside the shrinking run for a failing example."""


def _settings(examples: int, phases):
  return settings(max_examples=examples, phases=phases, database=None, deadline=None, derandomize=False,
                  verbosity=Verbosity.quiet, print_blob=False, report_multiple_bugs=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large, HealthCheck.large_base_example])


def _draw(claim: Claim, examples: int, seed: int, max_shapes: int | None, shapes: set) -> list:
  """The random examples (hypothesis, generate phase only); ``shapes`` collects the static shapes allowed."""
  drawn: list = []

  @_settings(examples, [Phase.generate])
  @hypothesis_seed(seed)
  @given(claim.problems)
  def collect(spec):
    if not is_spec(spec):
      raise ValueError(f"claim {claim.name!r}: problems drew {type(spec).__name__}, not a problem description "
                       "(ufm.testing.ProblemSpec or another family's spec, see ufm.testing.SPEC_TYPES)")
    if max_shapes is not None and spec.shape_key not in shapes:
      assume(len(shapes) < max_shapes)
      shapes.add(spec.shape_key)
    drawn.append(spec)

  collect()
  return drawn


def _check_x64():
  if not jax.config.jax_enable_x64:
    raise ValueError("claims compare float64 reference solves with closed forms to 1e-8: enable float64 first "
                     "(jax.config.update('jax_enable_x64', True))")


def run_claim(claim: Claim, *, examples: int = DEFAULT_EXAMPLES, seed: int = 0, store=None, shrink: bool = True,
              max_shapes: int | None = DEFAULT_MAX_SHAPES) -> ClaimResult:
  r"""Checks ``claim`` on its committed counterexamples (``claim.counterexamples``) and those of the store, then on
  ``examples`` random problems.

  Args:
    claim: the :class:`Claim`.
    examples: random problems to draw (hypothesis may stop earlier when the strategy has fewer
      distinct values).
    seed: hypothesis seed (the same seed draws the same problems).
    store: a :class:`~ufm.claims.store.ClaimStore` whose counterexamples are replayed first and
      which receives the new counterexample and the record of this run; ``None``: no replay, no record.
    shrink: shrink a failing random example to a minimal one (hypothesis).
    max_shapes: draw only from the first ``max_shapes`` static shapes met (default
      :data:`DEFAULT_MAX_SHAPES`; weight decays, seeds and every other array parameter still vary;
      ``None``: no limit).

  Returns:
    :class:`ClaimResult`.

  Raises:
    ValueError: ``examples < 1``, a bad seed, float64 disabled, or an unreadable store
      (all before any compilation).
  """
  if not isinstance(examples, int) or isinstance(examples, bool) or examples < 1:
    raise ValueError(f"examples = {examples!r} is out of range; allowed: integers >= 1")
  seed = int(check_seed("seed", seed))
  if max_shapes is not None and (not isinstance(max_shapes, int) or max_shapes < 1):
    raise ValueError(f"max_shapes = {max_shapes!r} is out of range; allowed: integers >= 1 or None")
  _check_x64()
  tols = claim.resolved_tolerances()
  committed = list(claim.counterexamples)
  stored = store.counterexamples(claim.name) if store is not None else []
  replay = list(dict.fromkeys(committed + stored))
  t0 = time.perf_counter()
  shapes: set = set()
  drawn = _draw(claim, examples, seed, max_shapes, shapes)
  cache: dict[Any, Outcome] = {}

  def evaluate_all(specs):
    todo = [s for s in dict.fromkeys(specs) if s not in cache]
    for s, sol in zip(todo, _solve(todo, claim)):
      cache[s] = _evaluate(claim, s, sol, tols)
    return [cache[s] for s in specs]

  replayed = evaluate_all(replay)  # stored counterexamples first
  fresh = evaluate_all(drawn)
  everything = replayed + fresh
  failures = sum(not o.ok for o in everything)

  counterexample, shrink_calls = None, 0
  first_bad = next((o for o in fresh if not o.ok), None)
  # A refuted claim whose committed counterexample reproduces has its minimal counterexample already: no shrinking
  # (which would solve, and compile, new shapes on every run).
  reproduced = claim.expected == "refuted" and committed and not any(o.ok for o in replayed[:len(committed)])
  if first_bad is not None and shrink and not reproduced:
    allowed = shapes if max_shapes is not None else None
    counterexample, shrink_calls = _shrink(claim, examples, seed, allowed, cache, evaluate_all)
  shrunk = counterexample is not None
  if reproduced:
    counterexample = next(o for o in replayed if not o.ok)
  if counterexample is None and first_bad is not None:
    counterexample = first_bad
  if counterexample is None:
    counterexample = next((o for o in replayed if not o.ok), None)

  max_residuals: dict[str, float] = {}
  for o in everything:
    for k, v in o.residuals.items():
      max_residuals[k] = max(max_residuals.get(k, -math.inf), v if not math.isnan(v) else math.inf)
  worst = ("-", 0.0, 1.0)
  if any(o.error for o in everything):
    worst = ("error", math.inf, 0.0)
  else:
    for k, v in max_residuals.items():
      # grad_norm sits just below gtol by construction: ranked only when it fails (it is a precondition)
      if k == "grad_norm" and v <= tols[k].bound:
        continue
      if v / tols[k].bound > worst[1] / worst[2] or worst[0] == "-":
        worst = (k, v, tols[k].bound)
  if claim.expected != "refuted":
    status = claim.expected if failures == 0 else "FAILED"
  elif any(o.error for o in everything):
    status = "ERROR"  # a check that raises refutes nothing
  elif committed and any(o.ok for o in replayed[:len(committed)]):
    status = "NOT REPRODUCED"  # a committed counterexample no longer fails: the documented refutation is stale
  else:
    status = "refuted" if failures else "NOT REFUTED"
  result = ClaimResult(name=claim.name, source=claim.source, expected=claim.expected, status=status,
                       examples=len(drawn), replayed=len(replay), failures=failures, max_residuals=max_residuals,
                       worst=worst, counterexample=None if counterexample is None else counterexample.spec,
                       counterexample_outcome=counterexample, shrunk=shrunk, shrink_calls=shrink_calls, seed=seed,
                       wall_s=time.perf_counter() - t0, shapes=len({s.shape_key for s in drawn}),
                       max_shapes=max_shapes)
  if store is not None:
    if counterexample is not None:
      store.add_counterexample(claim.name, counterexample.spec)
    store.record_run(claim.name, result_record(result))
  return result


def _shrink(claim, examples, seed, allowed, cache, evaluate_all):
  """Re-runs hypothesis with the same seed (it meets the same first failure, from the cache) and lets it shrink,
  within the ``allowed`` shapes when the run was limited to some."""
  failing: list[Outcome] = []
  calls = [0]

  @_settings(examples, [Phase.generate, Phase.shrink])
  @hypothesis_seed(seed)
  @given(claim.problems)
  def check(spec):
    assume(allowed is None or spec.shape_key in allowed)
    if spec not in cache:
      calls[0] += 1
    (out,) = evaluate_all([spec])
    if not out.ok:
      failing.append(out)
      raise _Failed(spec)

  try:
    check()
  except _Failed:
    pass
  return (failing[-1] if failing else None), calls[0]


def result_record(r: ClaimResult) -> dict:
  """The JSON record of a run (what the store and the scorecard keep): status, examples, worst residual, seed,
  wall time, date and the counterexample."""
  name, value, bound = r.worst
  return {"status": r.status, "expected": r.expected, "examples": r.examples, "replayed": r.replayed,
          "failures": r.failures, "worst_residual": name, "worst_value": _finite_or_str(value),
          "worst_bound": bound, "seed": r.seed, "wall_s": round(r.wall_s, 2), "shapes": r.shapes,
          "max_shapes": r.max_shapes,
          "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "counterexample": None if r.counterexample is None else r.counterexample.to_json()}


def _finite_or_str(v: float):
  return v if math.isfinite(v) else ("inf" if v > 0 else "nan" if math.isnan(v) else "-inf")


def draw_examples(claim: Claim, examples: int, seed: int = 0, max_shapes: int | None = DEFAULT_MAX_SHAPES) -> list:
  """The random problems :func:`run_claim` draws for ``claim`` with ``examples``, ``seed`` and ``max_shapes`` (no
  solve)."""
  return _draw(claim, examples, int(check_seed("seed", seed)), max_shapes, set())


def assert_claim(claim: Claim, *, examples: int = 50, seed: int = 0, store=None,
                 max_shapes: int | None = DEFAULT_MAX_SHAPES) -> ClaimResult:
  """Pytest entry point: runs :func:`run_claim` and raises ``AssertionError`` with the report (and the
  minimal counterexample) unless the claim's status is the expected one. One line in a test::

    def test_my_claim():
      ufm.claims.assert_claim(my_claim, examples=100)
  """
  result = run_claim(claim, examples=examples, seed=seed, store=store, max_shapes=max_shapes)
  if not result.as_expected:
    raise AssertionError(format_result(result))
  return result


# ----------------------------------------------------------------------------- reporting


def _fmt(v: float) -> str:
  return f"{v:.2g}" if math.isfinite(v) else str(v)


def format_worst(result: ClaimResult) -> str:
  """``"<residual> <value> / <bound>"`` for the residual with the largest value/bound."""
  name, value, bound = result.worst
  if name == "error":
    return "check raised an error"
  return f"{name} {_fmt(value)} / {_fmt(bound)}"


def format_result(result: ClaimResult, claim: Claim | None = None) -> str:
  """A few lines: status, examples, failures, largest residual against its tolerance, the counterexample."""
  lines = [f"{result.name}: {result.status} (expected: {result.expected}) -- {result.examples} examples"
           f" of {result.shapes} shape(s)"
           f" + {result.replayed} replayed, {result.failures} failing; largest residual/tolerance: "
           f"{format_worst(result)}; {result.wall_s:.1f} s",
           f"  source: {result.source}"]
  if claim is not None and claim.expected == "refuted":
    lines.append(f"  refuted because: {claim.refuted_because}")
  if claim is not None and claim.expected == "holds-when":
    lines.append(f"  holds when: {claim.holds_when}")
  out = result.counterexample_outcome
  if out is not None:
    how = f"minimal: shrunk with {result.shrink_calls} new solves" if result.shrunk else "as found"
    lines.append(f"  counterexample ({how}): {out.spec}")
    if out.error:
      lines.append(f"    error: {out.error}")
    tols = claim.resolved_tolerances() if claim is not None else {}
    for k in out.failing:
      bound = f" > {_fmt(tols[k].bound)} ({tols[k].reason})" if k in tols else ""
      lines.append(f"    {k} = {_fmt(out.residuals[k])}{bound}")
  return "\n".join(lines)


def report_markdown(results: list[ClaimResult], claims: Mapping[str, Claim] | None = None, *, command: str = "") -> str:
  """The scorecard: one row per claim (claim, source, examples, max residual / tolerance, status), then a note
  for each claim kept as a documented counterexample, and the command that produced it."""
  rows = ["| claim | source | examples | max residual / tolerance | status |", "|---|---|---|---|---|"]
  notes = []
  for r in results:
    status = r.status if r.as_expected else f"**{r.status}**"
    if r.expected == "refuted":
      status += " (expected)" if r.as_expected else " (expected refuted)"
      if claims is not None and r.name in claims:
        notes.append(f"* `{r.name}` is kept as a documented counterexample: {claims[r.name].refuted_because}")
    stored = f" (+{r.replayed} stored)" if r.replayed else ""
    rows.append(f"| `{r.name}` | {r.source} | {r.examples}{stored} | {format_worst(r)} | {status} |")
  out = rows + ([""] + notes if notes else [])
  if command:
    out += ["", f"Generated by `{command}`."]
  return "\n".join(out) + "\n"
