"""SweepResult as xarray users expect it: ``sel`` by coordinate value, ``isel`` by position, ``to_xarray``."""

import chex
import numpy as np
import pytest
import xarray as xr

import ufm

LAMS = [1e-3, 1e-2]
SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def problem():
  return ufm.make_problem(ufm.balanced_counts(3, 2), d=3, lam_W=1e-2, lam_H=1e-2, loss="mse")


@pytest.fixture(scope="module")
def lbfgs(problem):
  return ufm.sweep.sweep(ufm.lbfgs_reference, problem, ufm.lbfgs_hparams(), axes={"lam_W": LAMS, "seed": SEEDS})


@pytest.fixture(scope="module")
def gd(problem):
  return ufm.sweep.sweep(ufm.gradient_descent, problem, ufm.gd_hparams(0.1), axes={"lam_W": LAMS, "seed": SEEDS},
                         num_steps=20, log_every=10, trace_metrics=("nc1",))


def test_sel_by_value_equals_isel_by_position(lbfgs):
  """``sel`` looks every (lam_W, seed) value up in ``coords`` and returns, bit for bit, the ``isel`` at its position."""
  for i, lam in enumerate(LAMS):
    for j, seed in enumerate(SEEDS):
      chex.assert_trees_all_equal(lbfgs.sel(lam_W=lam, seed=seed), lbfgs.isel(lam_W=i, seed=j))
  # a float value within rtol 1e-12 of a coordinate, an integer seed given as a NumPy integer, one axis left whole
  chex.assert_trees_all_equal(lbfgs.sel(lam_W=1e-2 * (1 + 1e-14)), lbfgs.isel(lam_W=1))
  chex.assert_trees_all_equal(lbfgs.sel(seed=np.int64(2)), lbfgs.isel(seed=2))
  assert lbfgs.sel(seed=2).objective.shape == (2,)


def test_isel_positions_and_slices_index_the_leading_axes(lbfgs):
  """``isel`` takes integer positions (negative ones too) and slices along named axes, as positional indexing does."""
  sol = lbfgs.solution
  np.testing.assert_array_equal(lbfgs.isel(lam_W=1, seed=-1).objective, np.asarray(sol.objective)[1, -1])
  np.testing.assert_array_equal(lbfgs.isel(seed=slice(1, 3)).params.H, np.asarray(sol.params.H)[:, 1:3])


def test_sel_absent_value_and_unknown_axis_raise_naming_them(lbfgs):
  """An absent value names the axis, the value and the available values; an unknown axis lists the valid axes."""
  with pytest.raises(ValueError, match=r"0\.5.*'lam_W'.*0\.001, 0\.01"):
    lbfgs.sel(lam_W=0.5)
  with pytest.raises(ValueError, match=r"7.*'seed'.*0, 1, 2"):
    lbfgs.sel(seed=7)
  with pytest.raises(ValueError, match=r"1\.5.*'seed'"):
    lbfgs.sel(seed=1.5)  # integer coordinates are compared exactly
  with pytest.raises(ValueError, match=r"'lam_W'"):
    lbfgs.sel(lam_W=1e-2 * (1 + 1e-9))  # outside rtol = 1e-12
  with pytest.raises(ValueError, match=r"unknown axis \['lr'\]; valid axes: lam_W, seed"):
    lbfgs.sel(lr=0.1)
  with pytest.raises(ValueError, match=r"unknown axis \['lr'\]; valid axes: lam_W, seed"):
    lbfgs.isel(lr=0)


def test_isel_out_of_range_raises_naming_axis_position_and_length(lbfgs):
  """An integer position outside ``[-n, n)`` raises (JAX would clamp it silently), naming axis, position and length."""
  with pytest.raises(ValueError, match=r"position 3 .*'seed'.*length 3"):
    lbfgs.isel(seed=3)
  with pytest.raises(ValueError, match=r"position -3 .*'lam_W'.*length 2"):
    lbfgs.isel(lam_W=-3)


def test_to_xarray_dims_coords_and_values(lbfgs):
  """``to_xarray`` gives a Dataset: ``objective`` has dims == axes and the sweep's coords; its ``.sel`` matches ours."""
  ds = lbfgs.to_xarray()
  assert isinstance(ds, xr.Dataset)
  assert {"objective", "grad_norm", "converged", "diverged", "num_steps", "params_W", "params_H", "params_b",
          "trace_objective"} <= set(ds.data_vars)
  assert ds["objective"].dims == lbfgs.axes
  for a in lbfgs.axes:
    np.testing.assert_array_equal(ds[a].values, lbfgs.coords[a])
  np.testing.assert_array_equal(ds["objective"].sel(lam_W=1e-2, seed=1).values, lbfgs.sel(lam_W=1e-2, seed=1).objective)
  np.testing.assert_array_equal(ds["objective"].values, np.asarray(lbfgs.solution.objective))
  assert ds["params_W"].dims == lbfgs.axes + ("params_W_dim0", "params_W_dim1")
  np.testing.assert_array_equal(ds["params_H"].values, np.asarray(lbfgs.solution.params.H))


def test_to_xarray_trace_variables_have_a_trailing_dim(gd):
  """Gradient descent with ``log_every``: trace variables (metrics included) have one extra trailing dim of rows."""
  ds = gd.to_xarray()
  for var in ("trace_objective", "trace_grad_norm", "trace_step", "trace_metrics_nc1"):
    assert ds[var].dims == gd.axes + (f"{var}_dim0",), var
    assert ds[var].shape == (2, 3, 2), var
  np.testing.assert_array_equal(ds["trace_metrics_nc1"].values, np.asarray(gd.solution.trace.metrics["nc1"]))
  np.testing.assert_array_equal(ds["trace_objective"].sel(lam_W=1e-3, seed=2).values,
                                gd.sel(lam_W=1e-3, seed=2).trace.objective)


def test_to_xarray_names_filter(gd):
  """``names`` keeps only the named variables, in order; an unknown name raises listing the available ones."""
  ds = gd.to_xarray(names=["objective", "trace_objective"])
  assert list(ds.data_vars) == ["objective", "trace_objective"]
  assert list(ds.coords) == ["lam_W", "seed"]
  with pytest.raises(ValueError,
                     match=r"unknown variable \[.nope.\]; available: params_W, .*, objective, .*trace_metrics_nc1"):
    gd.to_xarray(names=["objective", "nope"])


def test_to_xarray_skips_none_and_leaves_without_the_axes(lbfgs):
  """Leaves that are None or lack the leading axes are not variables."""
  res = lbfgs._replace(solution={"objective": lbfgs.solution.objective, "extra": None, "scalar": np.float64(1.0),
                                 "wrong": np.zeros((3, 2))})
  assert list(res.to_xarray().data_vars) == ["objective"]
