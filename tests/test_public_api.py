"""API snapshot: changes to ufm.__all__ are deliberate (STYLE.md B.11)."""

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
