"""Problem builders and input validation (issue: every bad input gives a clear error, before compiling)."""

import jax.numpy as jnp
import numpy as np
import pytest

import ufm
from ufm import solvers, theory
from ufm.problem import balanced_counts, long_tailed_counts, make_problem, step_counts


def test_counts_builders_give_documented_profiles():
  assert balanced_counts(3, 4) == (4, 4, 4)
  assert step_counts(5, K_major=2, n_major=100, n_minor=10) == (100, 100, 10, 10, 10)
  assert step_counts(4, K_major=1, n_major=100, rho=4) == (100, 25, 25, 25)
  assert long_tailed_counts(3, n_max=100, rho=100) == (100, 10, 1)
  assert long_tailed_counts(5, n_max=500, rho=10) == tuple(int(500 * 10 ** (-k / 4)) for k in range(5))


def test_labels_are_grouped_one_hot():
  p = make_problem((2, 1, 3), d=2, lam_W=0.1, lam_H=0.1)
  np.testing.assert_array_equal(np.asarray(p.Y).argmax(0), [0, 0, 1, 2, 2, 2])
  np.testing.assert_array_equal(np.asarray(p.Y).sum(0), np.ones(6))
  np.testing.assert_array_equal(np.asarray(p.labels), [0, 0, 1, 2, 2, 2])
  assert (p.K, p.N, p.balanced, p.n) == (3, 6, False, None)


def test_dtype_follows_request():
  p = make_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, dtype=jnp.float32)
  assert p.Y.dtype == jnp.float32 and p.lam_W.dtype == jnp.float32


BAD = [
    (lambda: make_problem((5,), d=2, lam_W=0.1, lam_H=0.1), "K = 1"),
    (lambda: balanced_counts(1, 5), "K = 1"),
    (lambda: make_problem((3, 0), d=2, lam_W=0.1, lam_H=0.1), "counts[1] = 0"),
    (lambda: make_problem((3, 2.5), d=2, lam_W=0.1, lam_H=0.1), "counts[1] = 2.5 is not an integer"),
    (lambda: make_problem((3, 3), d=0, lam_W=0.1, lam_H=0.1), "d = 0"),
    (lambda: make_problem((3, 3), d=2.0, lam_W=0.1, lam_H=0.1), "d = 2.0 is not an integer"),
    (lambda: make_problem((3, 3), d=2, lam_W=-0.1, lam_H=0.1), "lam_W = -0.1 is out of range"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=-1e-9), "lam_H = -1e-09 is out of range"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=0.1, lam_b=-1), "lam_b = -1.0 is out of range"),
    (lambda: make_problem((3, 3), d=2, lam_W=float("nan"), lam_H=0.1), "lam_W = nan is not finite"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=float("inf")), "lam_H = inf is not finite"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=0.1, loss="hinge"), "loss = 'hinge'"),
    (lambda: solvers.gd_hparams(0.0), "lr = 0.0 is out of range; allowed range: > 0"),
    (lambda: solvers.gd_hparams(-1.0), "lr = -1.0 is out of range"),
    (lambda: solvers.gd_hparams(float("nan")), "lr = nan is not finite"),
    (lambda: solvers.gd_hparams(0.1, momentum=1.0), "momentum = 1.0 is out of range"),
    (lambda: solvers.gd_hparams(0.1, init_scale=0.0), "init_scale = 0.0"),
    (lambda: step_counts(4, K_major=4, n_major=10, n_minor=1), "K_major = 4"),
    (lambda: long_tailed_counts(4, n_max=10, rho=0.5), "rho = 0.5 is out of range"),
    (lambda: long_tailed_counts(4, n_max=10, rho=20), "rho = 20.0 is out of range"),
    (lambda: make_problem((3, 3), d=2, lam_W="0.1", lam_H=0.1), "lam_W = '0.1' is not a number"),
    (lambda: make_problem({3, 4}, d=2, lam_W=0.1, lam_H=0.1), "is not a sequence of class counts"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=0.1, dtype="foo"), "dtype = 'foo' is not a dtype"),
    (lambda: make_problem((3, 3), d=2, lam_W=1e300, lam_H=0.1, dtype=jnp.float32), "lam_W = 1e+300 overflows float32"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=1e-50, dtype=jnp.float32), "lam_H = 1e-50 underflows to 0"),
    (lambda: make_problem((3, 3), d=2, lam_W=0.1, lam_H=0.1, lam_b=0.1), "lam_b = 0.1 has no effect without a bias"),
    (lambda: solvers.gd_hparams(1e300, dtype=jnp.float32), "lr = 1e+300 overflows float32"),
    (lambda: theory.etf_gram(1), "K = 1 is out of range"),
    (lambda: theory.orthogonal_frame(0, 3), "K = 0 is out of range"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_clear_error(make, message):
  with pytest.raises(ValueError, match="allowed|not supported|not an integer|not finite|not a") as e:
    make()
  assert message in str(e.value)


def test_small_d_is_legal_but_etf_prediction_is_an_error():
  p = make_problem(balanced_counts(5, 2), d=2, lam_W=1e-3, lam_H=1e-3)  # K > d + 1: legal
  with pytest.raises(ufm.NoClosedFormError, match="d = 2 < K-1 = 4"):
    theory.predict(p)
  with pytest.raises(ufm.NoClosedFormError, match="allowed range: d >= K-1 = 4"):
    theory.simplex_etf(5, 2)
