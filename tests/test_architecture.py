"""Architecture rules of the repository, checked on the source text (imports walked with ``ast``, no import needed).

The rules (the README's "Architecture" section states them for users):

(a) ``ufm.theory`` (the module ``ufm/theory.py`` or the package ``ufm/theory/``) is closed forms only: none of its
    modules imports ``ufm.solvers``, ``ufm.sweep``, ``ufm.networks``, the mixup solver ``ufm.mixup.sgd`` (nor a name
    of it through ``ufm.mixup``), ``experiments`` or ``benchmarks`` -- directly, and (a second test) through any chain
    of ``ufm`` modules it imports (importing ``ufm.a.b`` runs ``ufm/a/__init__.py`` too, so it counts).
(b) Private names stay private. A dotted name ``X._y`` (``_y`` a function, class, constant or module; dunders such as
    ``__version__`` excepted) belongs to ``X``: only ``X`` itself and the modules inside the package ``X`` may
    import it. So ``from ufm.problem import _check_int`` in ``ufm/cli.py`` fails (owner ``ufm.problem``), while
    ``from experiments import _common`` in ``experiments/etf_emergence.py`` passes (owner: the package
    ``experiments``). Sibling modules of one package share private helpers through a private module of the package
    (``pkg/_common.py``), not through each other's underscore names. Checked on ``from X import _y``,
    ``import X._y`` and on attribute access ``m._y`` where ``m`` is bound by an import to a first-party module.
    Only first-party names (``ufm``, ``experiments``, ``benchmarks``) are checked; tests are exempt.
(c) Nothing in ``ufm/`` imports ``experiments`` or ``benchmarks``.
(d) The repository is self-contained: no file listed by ``git ls-files --cached --others --exclude-standard`` (tracked
    files plus new, not ignored ones; binary files skipped) names the two documents outside the repository that
    older versions cited (the theory notes and the style guide, see ``_OUTSIDE_DOCS``), a path into a ``shared/``
    folder outside the repository (``shared/`` followed by a path character and not preceded by a letter, digit,
    ``_``, ``.`` or ``-``, as in ``../shared/<file>``; the repository has no folder of that name), or an
    issue number: "issue" or "issues" in any case, not preceded by a letter, optionally followed by spaces, ``-``,
    ``_`` or ``#``, then a digit (``issue N``, ``Issue-N``, ``issue #N``, ``test_issueN`` for a number N).
    URLs are removed before matching, so a GitHub address of another project's issue (``github.com/o/r/issues/12``)
    in a citation is no issue number, and neither is CFF's ``issue: 40`` key of a journal reference.
(e) Every module in ``ufm/`` opens with a docstring whose first line is one complete sentence: it ends with a period
    and no other sentence ends inside it (a period, ``!`` or ``?`` followed by a space and a capital letter, common
    abbreviations such as "et al." and "e.g." excepted).
(f) No module in ``ufm/`` is longer than 650 lines.
(g) ``import ufm`` is light: in a fresh interpreter it loads neither hypothesis, Flax, Matplotlib nor scikit-learn, nor
    any ``ufm`` submodule (:mod:`ufm` re-exports lazily, PEP 562).
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("ufm", "experiments", "benchmarks")
MAX_LINES = 650
THEORY_FORBIDDEN = ("ufm.solvers", "ufm.sweep", "ufm.networks", "ufm.mixup.sgd", "experiments", "benchmarks")


# -- the import graph ------------------------------------------------------------------------------------------------

def _module_name(path: Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _source_files(*tops: str) -> list[Path]:
  return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


_FILES = {_module_name(p): p for p in _source_files(*FIRST_PARTY)}


def _is_package(module: str) -> bool:
  return _FILES.get(module, Path()).name == "__init__.py"


def _under(name: str, prefix: str) -> bool:
  return name == prefix or name.startswith(prefix + ".")


def _parents(name: str) -> list[str]:
  """``a.b.c`` -> ``[a, a.b, a.b.c]``: importing a module runs its packages' ``__init__`` first."""
  parts = name.split(".")
  return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
  """ids of the nodes under ``if TYPE_CHECKING:`` (imports for type checkers, never run)."""
  skip = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      for stmt in node.body:
        skip.update(id(n) for n in ast.walk(stmt))
  return skip


class Import:
  """One imported dotted name, e.g. ``ufm.problem._check_int`` from ``from ufm.problem import _check_int``."""

  def __init__(self, importer: str, path: Path, line: int, module: str, name: str | None, alias: str | None):
    self.importer, self.path, self.line = importer, path, line
    self.module, self.name, self.alias = module, name, alias  # name: None for ``import module``

  @property
  def full(self) -> str:
    return self.module if self.name is None else f"{self.module}.{self.name}"

  def where(self) -> str:
    return f"{self.path.relative_to(ROOT)}:{self.line}"


def _imports(module: str, path: Path) -> tuple[list[Import], ast.AST]:
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  skip = _type_checking_nodes(tree)
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if id(node) in skip:
      continue
    if isinstance(node, ast.Import):
      out += [Import(module, path, node.lineno, a.name, None, a.asname) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: resolved against the importing module's package
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      out += [Import(module, path, node.lineno, base, a.name, a.asname) for a in node.names]
  return out, tree


_PARSED = {m: _imports(m, p) for m, p in _FILES.items()}


def _targets(imp: Import) -> list[str]:
  """The first-party modules an import runs: the module, its packages, and ``from pkg import submodule``."""
  out = _parents(imp.module)
  if imp.name is not None and imp.full in _FILES:
    out.append(imp.full)
  return [t for t in out if t in _FILES or t.split(".")[0] in FIRST_PARTY]


def _graph() -> dict[str, set[str]]:
  return {m: {t for imp in imps for t in _targets(imp)} - {m} for m, (imps, _) in _PARSED.items()}


def _public_names(module: str) -> set[str]:
  """Top-level names defined by a first-party module (its ``__all__`` when it has one)."""
  tree = _PARSED[module][1]
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
      return set(ast.literal_eval(node.value))
  return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def _theory_modules() -> list[str]:
  mods = [m for m in _FILES if _under(m, "ufm.theory")]
  assert mods, "ufm.theory not found (neither ufm/theory.py nor ufm/theory/)"
  return mods


# -- (a) theory stays closed forms -----------------------------------------------------------------------------------

def _forbidden_for_theory(imp: Import) -> str | None:
  for t in [imp.module, imp.full]:
    for bad in THEORY_FORBIDDEN:
      if _under(t, bad):
        return bad
  if imp.module == "ufm.mixup" and "ufm.mixup.sgd" in _FILES and imp.name in _public_names("ufm.mixup.sgd"):
    return "ufm.mixup.sgd"
  return None


def test_theory_imports_no_solver_sweep_network_or_experiment():
  bad = []
  for m in _theory_modules():
    for imp in _PARSED[m][0]:
      hit = _forbidden_for_theory(imp)
      if hit:
        bad.append(f"{imp.where()}: {m} imports {imp.full} ({hit})")
  assert not bad, "ufm.theory must not import solvers, sweeps, networks or experiments:\n" + "\n".join(bad)


def test_theory_rule_catches_what_it_should():
  def hit(source):
    imps, _ = _parse_as("ufm.theory.plain", source)
    return [_forbidden_for_theory(i) for i in imps]
  assert hit("from ufm import solvers") == ["ufm.solvers"]
  assert hit("from ufm.sweep import sweep") == ["ufm.sweep"]
  assert hit("import experiments.runner") == ["experiments"]
  assert hit("from ufm.mixup import mixup_sgd, make_input_mixup_problem") == ["ufm.mixup.sgd", None]
  assert hit("from ufm.validate import check_int") == [None]


def test_theory_reaches_no_solver_sweep_network_or_experiment_through_other_modules():
  graph = _graph()
  bad = []
  for start in _theory_modules():
    seen, stack = {start: None}, [start]
    while stack:  # depth-first, remembering how each module was reached
      m = stack.pop()
      for t in sorted(graph.get(m, ())):
        if t not in seen:
          seen[t] = m
          stack.append(t)
    for t in seen:
      if any(_under(t, b) for b in THEORY_FORBIDDEN):
        chain, x = [], t
        while x is not None:
          chain.append(x)
          x = seen[x]
        bad.append(" -> ".join(reversed(chain)))
  assert not bad, "ufm.theory reaches a solver, sweep, network or experiment module:\n" + "\n".join(sorted(set(bad)))


# -- (b) private names -----------------------------------------------------------------------------------------------

def _private_owner(full: str) -> str | None:
  """The owner ``X`` of the first private component of ``X._y...``; ``None`` when the name is public."""
  parts = full.split(".")
  for i, p in enumerate(parts[1:], start=1):
    if p.startswith("_") and not (p.startswith("__") and p.endswith("__")):
      return ".".join(parts[:i])
  return None


def _attribute_chain(node: ast.AST) -> list[str] | None:
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  return [node.id, *reversed(parts)]


def _private_uses(module: str, parsed=None) -> list[tuple[str, str, str]]:
  """(where, name, owner) for every private first-party name ``module`` imports or reaches by attribute."""
  imps, tree = parsed or _PARSED[module]
  out, aliases = [], {}
  for imp in imps:
    if imp.module.split(".")[0] not in FIRST_PARTY or imp.name == "*":
      continue
    owner = _private_owner(imp.full)
    if owner is not None:
      out.append((imp.where(), imp.full, owner))
    if imp.name is None:  # ``import a.b.c`` binds ``a``; ``import a.b.c as m`` binds ``m`` to ``a.b.c``
      aliases[imp.alias or imp.module.split(".")[0]] = imp.module if imp.alias else imp.module.split(".")[0]
    elif imp.full in _FILES:  # ``from pkg import module [as m]``
      aliases[imp.alias or imp.name] = imp.full
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
      chain = _attribute_chain(node)
      if chain and chain[0] in aliases:
        full = ".".join([aliases[chain[0]], *chain[1:]])
        owner = _private_owner(full)
        if owner is not None:
          out.append((f"{imps[0].path.relative_to(ROOT) if imps else module}:{node.lineno}", full, owner))
  return [(w, n, o) for w, n, o in out if not _under(module, o)]


def test_no_module_imports_another_modules_private_name():
  bad = [f"{w}: {m} uses {n} (private to {o})" for m in sorted(_FILES) for w, n, o in _private_uses(m)]
  assert not bad, "private names used outside their module or package:\n" + "\n".join(sorted(set(bad)))


def _parse_as(module: str, source: str):
  """``_imports`` on made-up source, as if it were the file of ``module``."""
  path = ROOT / "ufm" / "_made_up.py"
  tree = ast.parse(source)
  imps = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imps += [Import(module, path, node.lineno, a.name, None, a.asname) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      imps += [Import(module, path, node.lineno, node.module, a.name, a.asname) for a in node.names]
  return imps, tree


def test_private_name_rule_catches_what_it_should():
  """The rule itself, on made-up sources (so that a rule that silently matches nothing fails here)."""
  def owners(module, source):
    return [o for _, _, o in _private_uses(module, _parse_as(module, source))]
  assert owners("ufm.cli", "from ufm.problem import _check_int") == ["ufm.problem"]
  assert owners("ufm.tiled", "from ufm import metrics as _m\n_m._safe_div(1, 2)") == ["ufm.metrics"]
  assert owners("ufm.cli", "import ufm.problem\nufm.problem._check_int('K', 3, lo=1)") == ["ufm.problem"]
  assert owners("benchmarks.cases", "from experiments import _common") == ["experiments"]
  assert owners("experiments.etf_emergence", "from experiments import _common\n_common.sweep_dataset") == []
  assert owners("ufm.problem", "from ufm.problem import _check_int") == []
  assert owners("ufm.cli", "from ufm import metrics as _metrics\nimport ufm\nufm.__version__") == []
  assert owners("ufm.cli", "from jax._src import core") == []  # third-party names are not checked


# -- (c) the library does not depend on its users ------------------------------------------------------------------

def test_ufm_imports_no_experiments_or_benchmarks():
  bad = [f"{imp.where()}: {m} imports {imp.full}" for m in sorted(_FILES) if _under(m, "ufm")
         for imp in _PARSED[m][0] if imp.module.split(".")[0] in ("experiments", "benchmarks")
         or (imp.module == "" and imp.name in ("experiments", "benchmarks"))]
  assert not bad, "ufm must not import experiments or benchmarks:\n" + "\n".join(bad)


# -- (d) a self-contained repository ---------------------------------------------------------------------------------

# The two outside documents, spelled so that this file does not match itself.
_OUTSIDE_DOCS = re.compile(r"\b(?:THEORY|STYLE)\.md\b")
_SHARED_PATH = re.compile(r"(?<![\w.-])shared/[\w.-]")
_ISSUE_NUMBER = re.compile(r"(?<![A-Za-z])issues?[ \t_#-]*\d", re.IGNORECASE)
_URL = re.compile(r"(?:https?://|www\.)\S+")


def _repo_text_files() -> list[Path]:
  try:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    rels = set(out.decode().split("\0")) - {""}
  except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file outside build and cache folders
    ignored = {".git", ".venv", "results", "build", "__pycache__", ".pytest_cache", ".hypothesis", ".ufm-claims"}
    rels = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if p.is_file() and not ignored.intersection(p.relative_to(ROOT).parts)
            and not any(q.endswith(".egg-info") for q in p.relative_to(ROOT).parts)}
  files = []
  for rel in sorted(rels):
    p = ROOT / rel
    if not p.is_file():  # deleted in the working tree
      continue
    data = p.read_bytes()
    if b"\0" in data[:8192]:
      continue
    try:
      data.decode("utf-8")
    except UnicodeDecodeError:
      continue
    files.append(p)
  return files


def _self_containment_problems(text: str) -> list[str]:
  out = []
  for i, line in enumerate(text.splitlines(), start=1):
    bare = _URL.sub("", line)
    for rx, what in ((_OUTSIDE_DOCS, "a document outside the repository"), (_SHARED_PATH, "a shared/ path"),
                     (_ISSUE_NUMBER, "an issue number")):
      m = rx.search(bare)
      if m:
        out.append(f"{i}: {what}: ...{bare[max(0, m.start() - 30):m.end() + 30].strip()}...")
  return out


def test_self_containment_patterns():
  """The patterns themselves: what they must catch and what they must let through."""
  hits = lambda s: bool(_self_containment_problems(s))
  for s in ("see THEORY" ".md §5.6", "STYLE" ".md B.11", "issue" " 8", "Issue" "-5", "issue" " #3", "(issue" "11)",
            "test_issue" "5_x", "/srv/shared" "/papers/x.pdf", "../shared" "/notes"):
    assert hits(s), s
  for s in ("https://github.com/google/jax/issues/1234", "ufm/theory/derivations.md §5.6", "the issue's targets",
            "issue: 40", "an open issue", "shared memory", "overshared/x", "a tissue 3", "see ``shared/``"):
    assert not hits(s), s


def test_repository_is_self_contained():
  bad = []
  for p in _repo_text_files():
    bad += [f"{p.relative_to(ROOT)}:{msg}" for msg in _self_containment_problems(p.read_text(encoding="utf-8"))]
  files = sorted({b.split(":")[0] for b in bad})
  assert not bad, (f"{len(bad)} references to outside documents, shared/ paths or issue numbers in "
                   f"{len(files)} files ({', '.join(files)}):\n" + "\n".join(bad[:200]))


# -- (e), (f) module docstrings and lengths --------------------------------------------------------------------------

_ABBREVIATIONS = re.compile(r"\b(?:et al|e\.g|i\.e|cf|vs|Thm|Fig|Eq|Sec|Prop|Lem|Cor|Def|resp|approx|no|Vol)\.",
                            re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?]\s+[A-Z]")


def _first_line_problem(doc: str | None) -> str | None:
  if not doc or not doc.strip():
    return "no module docstring"
  first = doc.strip().splitlines()[0].strip()
  if not first.endswith("."):
    return f"first line is not a complete sentence ending with a period: {first!r}"
  if _SENTENCE_END.search(_ABBREVIATIONS.sub("abbrev", first[:-1])):
    return f"first line holds more than one sentence: {first!r}"
  return None


def _ufm_modules() -> list[str]:
  return sorted(m for m in _FILES if _under(m, "ufm"))


def test_docstring_rule_itself():
  assert _first_line_problem("Holds the loss registry.\n\nMore.") is None
  assert _first_line_problem("Closed forms (Zhu et al. 2021, Thm. 3.1; e.g. the ETF).") is None
  assert _first_line_problem("Command line: ``solve`` and\n``demo``.") is not None
  assert _first_line_problem("Two. Sentences.") is not None
  assert _first_line_problem(None) is not None


def test_every_ufm_module_opens_with_a_one_sentence_docstring():
  bad = []
  for m in _ufm_modules():
    problem = _first_line_problem(ast.get_docstring(_PARSED[m][1], clean=True))
    if problem:
      bad.append(f"{_FILES[m].relative_to(ROOT)}: {problem}")
  assert not bad, "module docstrings:\n" + "\n".join(bad)


def test_no_ufm_module_is_longer_than_650_lines():
  lengths = {m: len(_FILES[m].read_text(encoding="utf-8").splitlines()) for m in _ufm_modules()}
  bad = [f"{_FILES[m].relative_to(ROOT)}: {n} lines" for m, n in sorted(lengths.items()) if n > MAX_LINES]
  assert not bad, f"modules over {MAX_LINES} lines:\n" + "\n".join(bad)


# -- (g) a light import ----------------------------------------------------------------------------------------------

def test_import_ufm_is_light():
  code = ("import sys, ufm; heavy = ('hypothesis', 'flax', 'matplotlib', 'sklearn'); "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('ufm.')))")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == "[]", f"import ufm loaded {r.stdout.strip()}"


def test_lazy_names_resolve_in_a_fresh_interpreter():
  code = ("import ufm; assert callable(ufm.make_problem) and ufm.theory.predict is ufm.predict; "
          "assert ufm.sweep.SweepResult is ufm.SweepResult; assert set(ufm.__all__) <= set(dir(ufm))")
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr
