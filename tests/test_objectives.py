"""Objectives: values against NumPy, rotation invariance, gradients (jax.test_util.check_grads)."""

import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from helpers import assert_close
from ufm import objectives, theory
from ufm.problem import Params, init_params, make_problem


def _numpy_objective(W, H, b, Y, lam_W, lam_H, lam_b, loss, bias):
  Z = W @ H + (b[:, None] if bias else 0.0)
  N = Y.shape[1]
  if loss == "ce":
    Zs = Z - Z.max(0, keepdims=True)
    data = -np.sum(Y * (Zs - np.log(np.exp(Zs).sum(0, keepdims=True)))) / N
  else:
    data = 0.5 * np.sum((Z - Y) ** 2) / N
  reg = 0.5 * (lam_W * np.sum(W**2) + lam_H * np.sum(H**2) + (lam_b * np.sum(b**2) if bias else 0.0))
  return data + reg


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("bias", [False, True])
def test_objective_matches_numpy_and_is_rotation_invariant(loss, bias, getkey):
  p = make_problem((3, 2, 4), d=5, lam_W=0.02, lam_H=0.03, lam_b=0.04 if bias else 0.0, loss=loss, bias=bias)
  params = init_params(getkey(), p, 1.0)._replace(b=jnp.array([0.3, -0.2, 0.1]))
  expected = _numpy_objective(*(np.asarray(x) for x in params), np.asarray(p.Y), 0.02, 0.03, 0.04, loss, bias)
  assert_close(objectives.objective(params, p), expected, "exact")
  Q = theory.random_orthonormal(getkey(), 5, 5)
  rotated = params._replace(W=params.W @ Q, H=Q.T @ params.H)
  assert_close(objectives.objective(rotated, p), expected, "exact")
  check_grads(lambda q: objectives.objective(q, p), (params,), order=2, modes=("rev",))


def test_bias_free_objective_ignores_b(getkey):
  p = make_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, loss="mse")
  params = init_params(getkey(), p, 1.0)
  assert_close(objectives.objective(params, p), objectives.objective(params._replace(b=jnp.ones(2)), p), "exact")


def test_zero_parameters_give_log_K_and_one_half():
  for loss, expected in [("ce", np.log(4)), ("mse", 0.5)]:
    p = make_problem((3, 3, 3, 3), d=2, lam_W=0.1, lam_H=0.1, loss=loss)
    zero = Params(W=jnp.zeros((4, 2)), H=jnp.zeros((2, 12)), b=jnp.zeros(4))
    assert_close(objectives.objective(zero, p), expected, "exact")
