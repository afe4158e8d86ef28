"""API snapshot: a change to ufm.__all__ is deliberate (and listed in the README's "Changes" section)."""

import ufm

EXPECTED = sorted([
    "Claim", "GDHparams", "LBFGSHparams", "NoClosedFormError", "Params", "Prediction", "Problem", "Solution",
    "SweepResult", "Trace", "__version__", "balanced_counts", "ce_loss", "claims", "convex", "data", "deep",
    "gd_hparams", "geometry", "gradient_descent", "init_params", "lbfgs_hparams", "lbfgs_reference",
    "long_tailed_counts", "make_labels", "make_problem", "metrics", "mixup", "mse_loss", "networks", "objective",
    "objectives", "predict", "problem", "run_claim", "solvers", "spherical", "step_counts", "sweep", "testing",
    "theory", "tiled", "vicinity",
])


def test_public_api_snapshot():
  assert sorted(ufm.__all__) == EXPECTED
  for name in ufm.__all__:
    assert hasattr(ufm, name), name


def test_every_public_function_has_a_docstring():
  import inspect
  for mod in (ufm.problem, ufm.objectives, ufm.solvers, ufm.metrics, ufm.theory, ufm.sweep, ufm.testing, ufm.claims,
              ufm.claims.core, ufm.claims.store, ufm.claims.catalogue, ufm.vicinity, ufm.convex, ufm.mixup,
              ufm.deep, ufm.spherical, ufm.geometry, ufm.tiled, ufm.data, ufm.networks):
    assert mod.__doc__, mod.__name__
    for name in mod.__all__:
      obj = getattr(mod, name)
      if inspect.isfunction(obj) or inspect.isclass(obj):
        assert obj.__doc__ and len(obj.__doc__.strip()) > 20, f"{mod.__name__}.{name}"


CITED_ARXIV = {"2008.08186", "2105.02375", "2203.01238", "2301.00437", "2210.16658", "2402.06171", "2405.17767",
               "2208.05512", "2101.12699"}


def test_citation_file():
  """CITATION.cff: Citation File Format 1.2.0, the package's version, and the papers it reproduces."""
  import pathlib
  import re
  path = pathlib.Path(__file__).resolve().parents[1] / "CITATION.cff"
  text = path.read_text(encoding="utf-8")
  try:
    import yaml
  except ImportError:  # no PyYAML: the top-level keys, read line by line
    keys = {m.group(1) for m in re.finditer(r"^([a-z-]+):", text, re.MULTILINE)}
    assert {"cff-version", "message", "title", "authors", "version", "license", "date-released",
            "references"} <= keys
    assert re.search(r"^version: 0\.1\.0$", text, re.MULTILINE) and re.search(r"^cff-version: 1\.2\.0$", text, re.M)
  else:
    cff = yaml.safe_load(text)
    assert cff["cff-version"] == "1.2.0" and cff["message"] and cff["title"]
    assert cff["authors"] == [{"name": "ufm developers"}]
    assert str(cff["version"]) == ufm.__version__ and cff["license"] == "Apache-2.0"
    assert str(cff["date-released"]) == "2026-12-05"
    for ref in cff["references"]:
      assert ref["type"] and ref["title"] and ref["authors"] and isinstance(ref["year"], int), ref
      assert all(a.get("family-names") for a in ref["authors"]), ref["title"]
  assert set(re.findall(r"arXiv:(\d{4}\.\d{5})", text)) == CITED_ARXIV
