"""``python -m benchmarks --quick`` in the default suite: tiny sizes, every report key, agreement of
the NumPy and ufm metric sets; and the report without PyTorch (an optional extra, absent in CI). No timing
is asserted."""

import copy
import json
import sys

import pytest

import benchmarks
from benchmarks import torch_baseline

SUMMARY = ("sweep_vs_torch", "sweep_vs_loop", "large_step_peak_fraction", "metrics_vs_numpy", "sharded_identical",
           "roofline_fractions")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
  path = tmp_path_factory.mktemp("bench") / "report.json"
  report = benchmarks.main(["--quick", "--json", str(path)])  # the command's entry point, in this process
  return report, json.loads(path.read_text())


def _torch_installed() -> bool:
  try:
    torch_baseline._import_torch()
  except ImportError:
    return False
  return True


def test_quick_benchmark_reports_every_case_and_summary_key(quick):
  report, on_disk = quick
  assert on_disk == json.loads(json.dumps(report))  # the JSON file is the report
  for key in SUMMARY + ("date", "environment", "cases"):
    assert key in on_disk, key
  assert set(on_disk["cases"]) == {"sweep", "large_step", "matmul_peak", "metrics", "compile", "sharded",
                                   "copy_bandwidth"}
  fractions = on_disk["roofline_fractions"]  # every timed case states its bound and the fraction reached
  assert set(fractions) == {"sweep float32", "large_step mse float32", "metrics"}, fractions
  assert all(f > 0 for f in fractions.values()), fractions
  for case in [*on_disk["cases"]["sweep"].values(), *on_disk["cases"]["large_step"], on_disk["cases"]["metrics"]]:
    assert case["roofline"]["bound"] in ("memory", "compute") and case["roofline"]["bytes"] > 0
  env = on_disk["environment"]
  assert env["jax"] and env["devices"] >= 1 and len(env["load_average_start"]) == 3
  for key in ("sweep_vs_loop", "large_step_peak_fraction", "metrics_vs_numpy"):
    assert isinstance(on_disk[key], float) and on_disk[key] > 0, key
  assert on_disk["sharded_identical"] is True
  if _torch_installed():
    assert on_disk["sweep_vs_torch"] > 0 and on_disk["cases"]["sweep"]["float32"]["torch"]["available"]
  else:
    assert on_disk["sweep_vs_torch"] is None and "PyTorch is not installed" in on_disk["sweep_vs_torch_reason"]
  s = on_disk["cases"]["sweep"]["float32"]
  assert s["configs"] == 16 and s["diverged"] == 0 and s["plan"]["batch"] >= 1
  # the NumPy baseline computes the same numbers (float64; the pinv route of NC1 against the SVD route)
  assert on_disk["cases"]["metrics"]["max_relative_difference"] < 1e-8
  assert on_disk["cases"]["metrics"]["metrics"] == 24
  text = benchmarks.table(report)
  assert "sharded_identical=True" in text and "1 sweep float32" in text


def test_without_pytorch_the_torch_ratio_is_null_with_a_reason(quick, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
  tr = torch_baseline.torch_rate(K=2, d=2, n=1, lam=1e-3, lr=0.1, momentum=0.9, init_scale=0.1, num_steps=2,
                                 num_configs=1)
  assert tr["available"] is False and "pip install 'ufm[bench]'" in tr["reason"]
  report = copy.deepcopy(quick[0])
  report["cases"]["sweep"]["float32"]["torch"] = tr
  out = benchmarks.summarise(report)
  assert out["sweep_vs_torch"] is None and out["sweep_vs_torch_reason"] == tr["reason"]
  assert out["sweep_vs_loop"] == quick[0]["sweep_vs_loop"]
  assert "torch unavailable" in benchmarks.table(out)
  json.dumps(out)  # still a valid JSON report
