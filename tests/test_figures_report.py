"""Figures a researcher can cite: convergence counts in every run, the text of figures/README.md generated from the
stored records, and a user's run that leaves the source tree alone."""

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import experiments
from experiments import __main__ as cli
from experiments import report, runner

REPO = Path(__file__).resolve().parent.parent


def test_convergence_counts_every_flag_group_and_its_diverged_partner():
  ds = xr.Dataset({
      "converged": (("a", "b"), np.array([[True, False, False], [True, True, False]])),
      "diverged": (("a", "b"), np.array([[False, True, False], [False, False, False]])),
      "converged_inner": (("a",), np.array([True, False])),  # no partner: nothing diverged
      "net_diverged": (("s",), np.array([False, True, False, False])),  # a budget without a convergence test
      "objective": (("a",), np.array([1.0, 2.0])),
  })
  c = runner.convergence(ds)
  assert c["groups"]["converged"] == {"runs": 6, "converged": 3, "diverged": 1, "stopped": 2}
  assert c["groups"]["converged_inner"] == {"runs": 2, "converged": 1, "diverged": 0, "stopped": 1}
  assert c["groups"]["net_diverged"] == {"runs": 4, "converged": 0, "diverged": 1, "stopped": 3}
  assert (c["runs"], c["converged"], c["diverged"], c["stopped"]) == (12, 4, 2, 6)
  assert "diverged 2" in runner.convergence_line(c)
  none = runner.convergence(xr.Dataset({"x": (("a",), np.ones(2))}))
  assert none["runs"] == 0 and "no iterative solve" in runner.convergence_line(none)


def test_a_converged_flag_that_is_not_boolean_is_not_a_flag():
  ds = xr.Dataset({"converged": (("a",), np.array([1.0, 0.0]))})
  assert runner.convergence(ds)["runs"] == 0


def test_the_gate_keeps_converged_runs_and_says_what_it_left_out():
  ok, note = runner.gate([True, False, True, True], [False, True, False, False])
  np.testing.assert_array_equal(ok, [True, False, True, True])
  assert note == "1 of 4 runs left out (1 diverged, 0 not converged)"
  ok, note = runner.gate([True, True])
  assert ok.all() and note == ""


def _fake_full(monkeypatch, name="etf_emergence"):
  """The smoke configuration as if it were the full one (so the full-configuration code paths run in seconds)."""
  module = experiments.get(name)
  original = module.get_config
  monkeypatch.setattr(module, "get_config", lambda arg=None: original("smoke"))
  return module


def test_a_users_run_writes_only_into_its_results_directory(tmp_path, monkeypatch, capsys):
  _fake_full(monkeypatch)
  figs = tmp_path / "figs"
  monkeypatch.setattr(runner, "default_figures_dir", lambda: figs)
  assert cli.main(["run", "etf_emergence", "--out", str(tmp_path / "res"), "--no-progress"]) == 0
  assert not figs.exists()  # the committed figures are not touched by a user's run
  out = capsys.readouterr().out
  assert "runs: " in out and "converged" in out
  run_dir = next((tmp_path / "res" / "etf_emergence").iterdir())
  assert (run_dir / "etf_emergence.png").is_file()
  meta = json.loads((run_dir / "meta.json").read_text())
  assert meta["convergence"]["runs"] == 4  # 2 settings x 2 seeds at the smoke configuration


def test_update_figures_writes_the_record_and_regenerates_the_readme_block(tmp_path, monkeypatch):
  module = _fake_full(monkeypatch)
  figs = tmp_path / "figs"
  figs.mkdir()
  (figs / "README.md").write_text(f"# head\n{report.TABLE_START}\nold table\n{report.TABLE_END}\n\n{report.START}\n"
                                  f"stale text\n{report.END}\n\ntail\n")
  monkeypatch.setattr(runner, "default_figures_dir", lambda: figs)
  assert cli.main(["run", "etf_emergence", "--out", str(tmp_path / "res"), "--no-progress", "--update-figures"]) == 0
  for ext in ("png", "pdf", "json"):
    assert (figs / f"etf_emergence.{ext}").is_file(), ext
  rec = json.loads((figs / "etf_emergence.json").read_text())
  assert rec["findings"] == module.findings(rec["summary"], module.get_config())
  text = (figs / "README.md").read_text()
  assert "stale text" not in text and "old table" not in text and text.startswith("# head") and text.endswith("tail\n")
  assert "| `etf_emergence.png` / `.pdf` | checks Zhu et al. 2021 Thm. 3.1" in text
  assert f"* **etf_emergence** — {rec['findings']}" in text
  assert report.problems(figs / "README.md", figs) == []
  # A hand edit of the generated text, or of a record's findings, is caught.
  (figs / "README.md").write_text(text.replace(rec["findings"][:40], rec["findings"][:40].upper()))
  assert any("findings are not the rendering" in p for p in report.problems(figs / "README.md", figs))
  rec["findings"] += " (edited)"
  (figs / "etf_emergence.json").write_text(json.dumps(rec))
  assert any("findings text" in p for p in report.problems(figs / "README.md", figs))


@pytest.mark.parametrize("argv, match", [
    (["run", "etf_emergence", "--smoke", "--update-figures"], "only at the full configuration"),
    (["run", "etf_emergence", "--set", "K=4", "--update-figures"], "only at the full configuration"),
])
def test_update_figures_is_refused_away_from_the_full_configuration(argv, match, capsys, tmp_path):
  assert cli.main(argv + ["--out", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert match in err and len(err.strip().splitlines()) == 1


def test_a_stale_record_is_reported(tmp_path):
  rec = {"format": report.FORMAT, "config_hash": "0" * 16, "summary": {}, "findings": "x",
         "convergence": {"runs": 0, "converged": 0, "diverged": 0, "stopped": 0, "groups": {}}}
  (tmp_path / "etf_emergence.json").write_text(json.dumps(rec))
  (tmp_path / "README.md").write_text(f"{report.TABLE_START}\n{report.TABLE_END}\n{report.START}\n{report.END}\n")
  found = report.problems(tmp_path / "README.md", tmp_path)
  assert any("regenerate with `python -m experiments run etf_emergence --update-figures`" in p for p in found)


def test_committed_figure_texts_agree_with_their_records_and_modules():
  """The findings block of figures/README.md is the rendering of figures/*.json, each record was written at its
  module's current full configuration, and each module renders the record's numbers to the committed text."""
  assert report.problems(REPO / "figures" / "README.md", REPO / "figures") == []
  assert report.load_records(REPO / "figures"), "no generated figure text committed"
