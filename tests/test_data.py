"""ufm.data: the digits set and its subsamplers, Gaussian mixtures, and users' .npz files with clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from ufm import data as D


def test_digits_default_split_is_balanced_class_major_and_centred(getkey):
  d = D.digits(getkey())
  assert d.counts == (D.DIGITS_MAX_TRAIN,) * 10 and d.X.shape == (1240, 64) and d.X.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(d.y), np.repeat(np.arange(10), D.DIGITS_MAX_TRAIN))
  assert d.X_test.shape == (500, 64)
  np.testing.assert_array_equal(np.bincount(np.asarray(d.y_test)), np.full(10, 50))
  np.testing.assert_allclose(np.asarray(d.X).mean(0), 0.0, atol=1e-6)  # centred by the training mean pixel
  # train and test are disjoint images of the 1 797: no test row appears in the training set
  train_rows = {r.tobytes() for r in np.asarray(d.X)}
  dup = sum(r.tobytes() in train_rows for r in np.asarray(d.X_test))
  assert dup <= 5  # the digits set itself holds a few identical images; a leak would give hundreds


@pytest.mark.parametrize("kind", ["step", "long_tailed"])
def test_digits_imbalanced_subsamplers_give_the_requested_counts(kind, getkey):
  counts = (ufm.step_counts(10, K_major=5, n_major=120, rho=10) if kind == "step"
            else ufm.long_tailed_counts(10, n_max=120, rho=20))
  d = D.digits(getkey(), counts, image=True)
  assert d.counts == counts and d.X.shape == (sum(counts), 8, 8, 1)
  np.testing.assert_array_equal(np.bincount(np.asarray(d.y)), counts)


def test_digits_is_deterministic_for_a_key_and_varies_with_it():
  a, b = D.digits(jax.random.key(3)), D.digits(jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(a.X), np.asarray(b.X))
  c = D.digits(jax.random.key(4))
  assert not np.array_equal(np.asarray(a.X), np.asarray(c.X))


@pytest.mark.parametrize("kwargs, match", [
    (dict(counts=(200,) * 10), r"counts\[0\] = 200 is out of range; allowed range: 1 <= counts\[0\] <= 128"),
    (dict(counts=(5,) * 9), "counts has 9 entries; allowed: K = 10"),
    (dict(test_per_class=174), "test_per_class = 174 is out of range"),
    (dict(dtype=jnp.int32), "not a floating dtype"),
])
def test_digits_bad_arguments_are_refused(kwargs, match, getkey):
  with pytest.raises(ValueError, match=match):
    D.digits(getkey(), **kwargs)


def test_gaussian_mixture_shapes_labels_and_separation(getkey):
  key = getkey()
  g = D.gaussian_mixture(key, (30, 20, 10), dim=50, separation=10.0, noise=0.0, test_per_class=4)
  assert g.X.shape == (60, 50) and g.X_test.shape == (12, 50) and g.counts == (30, 20, 10)
  X, y = np.asarray(g.X, np.float64), np.asarray(g.y)
  for k in range(3):  # noise 0: every sample of a class is its mean
    assert np.ptp(X[y == k], axis=0).max() == 0.0
  again = D.gaussian_mixture(key, (30, 20, 10), dim=50, separation=10.0, noise=0.0, test_per_class=4)
  np.testing.assert_array_equal(np.asarray(again.X), np.asarray(g.X))


def test_npz_round_trip_sorts_class_major(tmp_path):
  rng = np.random.default_rng(0)
  X, y = rng.normal(size=(9, 4)), np.array([2, 0, 1, 2, 0, 1, 1, 0, 2])
  np.savez(tmp_path / "mine.npz", X=X, y=y, X_test=X[:3], y_test=y[:3])
  d = D.load_npz(tmp_path / "mine.npz")
  order = np.argsort(y, kind="stable")
  assert d.counts == (3, 3, 3)
  np.testing.assert_array_equal(np.asarray(d.y), y[order])
  np.testing.assert_allclose(np.asarray(d.X), X[order].astype(np.float32))
  np.testing.assert_array_equal(np.asarray(d.y_test), y[:3])


def _bad(name):
  rng = np.random.default_rng(0)
  X, y = rng.normal(size=(6, 3)), np.array([0, 0, 1, 1, 2, 2])
  return {
      "no_y": (dict(X=X), r"has no key\(s\) \['y'\]; found \['X'\]"),
      "unknown_key": (dict(X=X, y=y, Z=X), r"unknown key\(s\) \['Z'\]"),
      "X_1d": (dict(X=X[:, 0], y=y), r"X has shape \(6,\); allowed: \(N, ...\)"),
      "rows": (dict(X=X[:5], y=y), "X has 5 rows but y has 6 labels"),
      "y_2d": (dict(X=X, y=y[:, None]), r"y has shape \(6, 1\)"),
      "y_float": (dict(X=X, y=y + 0.5), "y has dtype float64; allowed: integer class labels"),
      "y_negative": (dict(X=X, y=y - 1), "y contains the label -1"),
      "missing_class": (dict(X=X, y=np.array([0, 0, 2, 2, 3, 3])), r"class\(es\) \[1\] have no sample"),
      "one_class": (dict(X=X, y=np.zeros(6, int)), "allowed: every class 0..K-1 present, K >= 2"),
      "nan": (dict(X=np.where(X > 1, np.nan, X), y=y), "X contains NaN or inf"),
      "test_label": (dict(X=X, y=y, X_test=X[:2], y_test=np.array([0, 3])), "y_test contains the label 3"),
      "test_shape": (dict(X=X, y=y, X_test=X[:2, :2], y_test=np.array([0, 1])), "X_test has sample shape"),
      "test_half": (dict(X=X, y=y, X_test=X[:2]), "X_test and y_test: give both or neither"),
      "strings": (dict(X=np.array([["a"] * 3] * 6), y=y), "X has dtype <U1; allowed: real numbers"),
  }[name]


@pytest.mark.parametrize("case", ["no_y", "unknown_key", "X_1d", "rows", "y_2d", "y_float", "y_negative",
                                  "missing_class", "one_class", "nan", "test_label", "test_shape", "test_half",
                                  "strings"])
def test_npz_with_bad_keys_shapes_or_labels_gives_a_clear_error(case, tmp_path):
  arrays, match = _bad(case)
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=match):
    D.load_npz(tmp_path / "bad.npz")


def test_npz_missing_file_or_not_an_npz(tmp_path):
  with pytest.raises(ValueError, match="no such file"):
    D.load_npz(tmp_path / "nope.npz")
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="is not a NumPy .npz file"):
    D.load_npz(tmp_path / "junk.npz")
  np.savez(tmp_path / "obj.npz", X=np.array([object()] * 2, dtype=object), y=np.array([0, 1]))
  with pytest.raises(ValueError, match="unreadable without pickle"):
    D.load_npz(tmp_path / "obj.npz")


def test_subsample_refuses_more_than_a_class_holds(getkey):
  with pytest.raises(ValueError, match=r"counts\[1\] = 3 is out of range; allowed range: 1 <= counts\[1\] <= 2"):
    D.subsample(getkey(), np.array([0, 0, 0, 1, 1]), (2, 3))
