"""Tiled metrics (ufm.tiled): the same values as ufm.metrics, closed forms on constructed configurations, and
temporary memory that grows linearly (not quadratically) with K."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import ufm
from ufm import metrics, spherical, theory, tiled


def test_every_metric_equals_the_untiled_one_on_a_zipf_problem_with_bias(getkey):
  """K = 37 (not a multiple of the block), Zipf counts (1..9 samples), d = 5 < K, random W, H, b: every metric
  computed in tiles (tiled.TILED) equals its ufm.metrics namesake."""
  counts = tiled.zipf_counts(37, n_max=9)
  p = ufm.make_problem(counts, d=5, lam_W=1e-3, lam_H=1e-3, bias=True)
  params = ufm.init_params(getkey(), p, 1.0)._replace(b=jax.random.normal(getkey(), (37,)))
  assert set(tiled.TILED) < set(metrics.METRICS)
  got = tiled.compute(params, p, tiled.TILED, block=8)
  want = jax.jit(metrics.compute, static_argnames="names")(params, p, tiled.TILED)
  for name in tiled.TILED:
    assert_close(got[name], want[name], "tiled", name)
  # the other names are ufm.metrics' own functions (linear in K already): the same program, the same numbers
  linear = tuple(n for n in metrics.METRICS if n not in tiled.TILED)
  got = tiled.compute(params, p, linear[:3], block=8)
  for name in linear[:3]:
    assert_close(got[name], metrics.METRICS[name](params, p), "tiled", name)


def test_tiled_metrics_of_a_collapsed_polygon_equal_the_closed_forms():
  """Features collapsed onto a regular 7-gon (d = 2; the polygon and orthoplex closed forms of ufm.metrics are in
  test_geometry.py): GNC2, its variance, the cosine spread, max-angle and ETF errors are the closed forms of
  ufm.theory.regular_polygon_metrics; NC1, CDNV, NC3 are 0 and NC4 is 1 (classifier = means)."""
  X, cf = theory.regular_polygon(7), theory.regular_polygon_metrics(7)
  K = X.shape[1]
  p = spherical.make_spherical_problem(ufm.balanced_counts(K, 3), d=2, tau=1.0)
  params = ufm.Params(W=X.T, H=X @ p.Y, b=jnp.zeros(K))
  P = K * (K - 1) / 2
  expected = dict(gnc2=cf.gnc2, gnc2_var=cf.gnc2_var, max_angle_M=cf.max_angle, etf_error_W=cf.etf_error,
                  self_duality_etf=cf.etf_error, equiangularity_M=math.sqrt(cf.cos_var * P / (P - 1)),
                  cdnv=0.0, nc4=1.0)
  v = tiled.compute(params, p, names=tuple(expected), block=4)
  for name, value in expected.items():
    assert_close(v[name], value, "closed_form_metric", name)


def _temp_bytes(fn, *shapes):
  args = [jax.ShapeDtypeStruct(s, jnp.float64) for s in shapes]
  return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_temporary_memory_grows_linearly_not_quadratically_in_K():
  """Compiled temporary memory at K and 4K (d = 8): the tiled GNC2 and NC4 grow by at most 4x
  (plus slack), the untiled GNC2 by about 16x (its K x K matrices)."""
  d, K1, K2 = 8, 256, 1024
  fns = {"gnc2": lambda X: tiled.gnc2(X, block=32)}
  for name, fn in fns.items():
    m1, m2 = _temp_bytes(fn, (d, K1)), _temp_bytes(fn, (d, K2))
    assert m2 <= 1.1 * (K2 / K1) * m1, (name, m1, m2)
  u1, u2 = _temp_bytes(metrics.gnc2, (d, K1)), _temp_bytes(metrics.gnc2, (d, K2))
  assert u2 >= 0.8 * (K2 / K1) ** 2 * u1  # the control: the untiled path is quadratic
  nc4 = lambda W, H: tiled.nc4(W, H, jnp.zeros(W.shape[0]), jnp.arange(H.shape[1]) % W.shape[0], W.shape[0], block=32)
  n1, n2 = _temp_bytes(nc4, (K1, d), (d, 4 * K1)), _temp_bytes(nc4, (K2, d), (d, 4 * K2))
  assert n2 <= 1.1 * (K2 / K1) * n1


@pytest.mark.slow
def test_fifty_thousand_classes_with_zipf_counts(getkey):
  """The language-model regime: K = 50 000 classes, Zipf counts (n_max = 2 000, a = 1: N = 63 518, 49 000 classes
  with one sample), d = 16, random features and classifiers, labels without a dense one-hot Y (ClassLabels): every
  metric is finite, and the temporary memory of the whole tiled metric set stays below that of one K x K matrix."""
  K, d = 50_000, 16
  counts = tiled.zipf_counts(K, n_max=2_000, a=1.0)
  labels = tiled.ClassLabels.make(counts)
  params = ufm.Params(W=jax.random.normal(getkey(), (K, d)), H=jax.random.normal(getkey(), (d, labels.N)),
                      b=jnp.zeros(K))
  v = tiled.compute(params, labels, block=256)
  assert all(np.isfinite(float(x)) for x in v.values()), v
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  compiled = jax.jit(lambda q: tiled.compute(q, labels, block=256)).lower(spec).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < K * K * 8


def test_class_labels_give_the_same_metrics_as_the_problem(getkey):
  counts = tiled.zipf_counts(9, n_max=4)
  p = ufm.make_problem(counts, d=3, lam_W=0.1, lam_H=0.1)
  params = ufm.init_params(getkey(), p, 1.0)
  names = ("gnc2", "unc3", "cdnv", "nc1")
  a, b = tiled.compute(params, p, names, block=4), tiled.compute(params, tiled.ClassLabels.make(counts), names, block=4)
  for n in names:
    assert_close(a[n], b[n], "tiled", n)


def test_zipf_counts_and_validation():
  c = tiled.zipf_counts(10, n_max=100, a=1.0)
  assert c == tuple(max(1, 100 // (k + 1)) for k in range(10))
  assert tiled.zipf_counts(5, n_max=3, a=0.0) == (3,) * 5
  with pytest.raises(ValueError, match="K = 1"):
    tiled.zipf_counts(1, n_max=3)
  with pytest.raises(ValueError, match="a = -1"):
    tiled.zipf_counts(4, n_max=3, a=-1.0)
  p = ufm.make_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1)
  params = ufm.init_params(jax.random.key(0), p, 1.0)
  with pytest.raises(ValueError, match="block = 0"):
    tiled.compute(params, p, block=0)
  with pytest.raises(ValueError, match="unknown metric"):
    tiled.compute(params, p, names=("nope",))
