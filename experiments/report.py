r"""What ``figures/README.md`` says about each figure, generated from the figure's stored results.

An experiment module may define

* ``summary(results, config) -> dict``: the numbers its text quotes, computed from the results dataset (JSON
  values: numbers, strings, lists of them);
* ``findings(summary, config) -> str``: the Markdown text of its bullet in ``figures/README.md``, every number
  formatted from ``summary`` (no number typed by hand).

``python -m experiments run NAME --update-figures`` (the maintainers' command, at the full configuration) writes the
figure into ``figures/`` and, beside it, ``figures/NAME.json``: the configuration hash, the ufm version and git
revision of the run, the convergence counts (:func:`experiments.runner.convergence`), ``summary`` and the rendered
``findings``; then it rewrites the block of ``figures/README.md`` between :data:`START` and :data:`END` from every
``figures/*.json`` (:func:`update_readme`). :func:`problems` lists every way the committed text, the committed
records and the modules disagree; a test asserts it is empty. The table of figures at the top of
``figures/README.md`` (what each is, the command, the runtime) is generated from the modules the same way
(:func:`render_table`).
"""

import json
import os
import time
from pathlib import Path

import experiments
from experiments import runner
from ufm.io import atomic_write

__all__ = ["END", "START", "TABLE_END", "TABLE_START", "load_records", "problems", "record_path", "render",
           "render_table", "update_readme", "write_record"]

#: The generated findings of ``figures/README.md`` lie between these two lines.
START = "<!-- findings: generated from figures/*.json by `python -m experiments report`; edit the modules, not this -->"
END = "<!-- findings: end -->"
#: The generated table of the figures (what each is, module, command, runtime) lies between these two lines.
TABLE_START = "<!-- table: generated from the modules by `python -m experiments report`; edit the modules, not this -->"
TABLE_END = "<!-- table: end -->"
FORMAT = "ufm-findings/1"


def record_path(name: str, directory: str | os.PathLike) -> Path:
  """``directory/NAME.json``."""
  return Path(directory) / f"{name}.json"


def write_record(name: str, record: "runner.RunRecord", directory: str | os.PathLike) -> Path:
  """Writes ``directory/NAME.json`` for a stored run at the module's full configuration (atomically).

  Raises:
    ValueError: the module defines no ``summary``/``findings``, or the run is not at the full configuration.
  """
  module = experiments.get(name)
  if not (hasattr(module, "summary") and hasattr(module, "findings")):
    raise ValueError(f"experiments.{name} defines no summary(results, config) and findings(summary, config); "
                     "its figures/README.md text cannot be generated")
  full = module.get_config()
  if runner.config_hash(name, record.config) != runner.config_hash(name, full):
    raise ValueError(f"--update-figures: {name} was run at a configuration other than its full one")
  summary = _plain(module.summary(record.results, record.config))
  conv = record.meta.get("convergence") or runner.convergence(record.results)
  rec = {"format": FORMAT, "experiment": name, "config_hash": runner.config_hash(name, full),
         "ufm": record.meta.get("ufm"), "git_revision": record.meta.get("git_revision"),
         "git_dirty": record.meta.get("git_dirty"), "run_date": record.meta.get("date"),
         "written": time.strftime("%Y-%m-%d"), "convergence": conv, "summary": summary,
         "findings": module.findings(summary, record.config)}
  path = record_path(name, directory)
  atomic_write(path, lambda f: f.write((json.dumps(rec, indent=2) + "\n").encode()))  # order kept: findings iterate it
  return path


def _plain(x):
  """JSON round trip: what a reader of the record gets back (floats stay floats, tuples become lists)."""
  return json.loads(json.dumps(x))


def load_records(directory: str | os.PathLike) -> dict[str, dict]:
  """Every ``directory/NAME.json`` of an experiment, by name, in :data:`experiments.EXPERIMENTS` order."""
  out = {}
  for name in experiments.EXPERIMENTS:
    path = record_path(name, directory)
    if path.is_file():
      out[name] = json.loads(path.read_text())
  return out


def render(records: dict[str, dict]) -> str:
  """The generated block: one bullet per record, its findings, then its convergence counts."""
  lines = []
  for name, rec in records.items():
    lines.append(f"* **{name}** — {rec['findings'].strip()} ({runner.convergence_line(rec['convergence'])}.)")
  return "\n".join(lines)


def render_table() -> str:
  """The table of every experiment's figure: what it is (``FIGURE``), its module, the command, its ``RUNTIME``."""
  lines = ["| figure | what it is | module | command | runtime (full configuration, 2-core CPU) |",
           "|---|---|---|---|---|"]
  for name in experiments.EXPERIMENTS:
    m = experiments.get(name)
    lines.append(f"| `{name}.png` / `.pdf` | {' '.join(str(m.FIGURE).split())} | `experiments/{name}.py` | "
                 f"`python -m experiments run {name}` | {' '.join(str(m.RUNTIME).split())} |")
  return "\n".join(lines)


def _split(text: str, start: str = START, end: str = END) -> tuple[str, str, str]:
  if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
    raise ValueError(f"figures/README.md must hold one {start!r} line and, after it, one {end!r} line")
  head, rest = text.split(start, 1)
  body, tail = rest.split(end, 1)
  return head, body, tail


def _blocks(directory) -> tuple[tuple[str, str, str], ...]:
  return ((TABLE_START, TABLE_END, render_table()), (START, END, render(load_records(directory))))


def update_readme(readme: str | os.PathLike, directory: str | os.PathLike) -> bool:
  """Rewrites the generated blocks of ``readme`` (the table from the modules, the findings from the records in
  ``directory``); ``True`` when it changed."""
  readme = Path(readme)
  text = new = readme.read_text()
  for start, end, body in _blocks(directory):
    head, _, tail = _split(new, start, end)
    new = f"{head}{start}\n{body}\n{end}{tail}"
  if new == text:
    return False
  atomic_write(readme, lambda f: f.write(new.encode()))
  return True


def problems(readme: str | os.PathLike, directory: str | os.PathLike) -> list[str]:
  """Every disagreement between ``readme``'s generated block, the records in ``directory`` and the modules.

  A record disagrees when its configuration hash is not the module's full configuration's (the module changed its
  configuration and the figure was not regenerated), or when the module's ``findings`` renders its ``summary`` to
  another text (the text was edited by hand, or the module's wording changed without a regeneration); the README
  disagrees when its block is not :func:`render` of the records.
  """
  out = []
  records = load_records(directory)
  for name, rec in records.items():
    module = experiments.get(name)
    if rec.get("format") != FORMAT:
      out.append(f"{name}.json: format {rec.get('format')!r}, expected {FORMAT!r}")
      continue
    full = module.get_config()
    if rec["config_hash"] != runner.config_hash(name, full):
      out.append(f"{name}.json: stored for configuration {rec['config_hash']}, the module's full configuration is "
                 f"{runner.config_hash(name, full)}: regenerate with `python -m experiments run {name} --update-figures`")
    if not hasattr(module, "findings"):
      out.append(f"{name}.json: experiments.{name} defines no findings(summary, config)")
    else:
      try:
        text = module.findings(rec["summary"], full)
      except (KeyError, TypeError, ValueError, IndexError) as e:
        out.append(f"{name}.json: experiments.{name}.findings cannot render its summary ({type(e).__name__}: {e})")
        continue
      if text != rec["findings"]:
        out.append(f"{name}.json: its findings text is not what experiments.{name}.findings makes of its summary")
  text = Path(readme).read_text()
  for start, end, expected in _blocks(directory):
    _, body, _ = _split(text, start, end)
    if body.strip() != expected.strip():
      what = "table is not the rendering of the modules" if start == TABLE_START else \
          "findings are not the rendering of figures/*.json"
      out.append(f"figures/README.md: the generated {what}; run `python -m experiments report`")
  return out
