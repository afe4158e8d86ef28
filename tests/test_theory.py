"""Closed forms against their own identities, and predicted minimisers as exact stationary points.

No solver is used here: a predicted minimiser is *constructed* from the closed form and
must have zero gradient and the predicted objective value (a check of the first kind: exact, no solver).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax.tree_utils as otu
import pytest

from helpers import assert_close, ce_minimiser_params, lams_at_tau
from ufm import losses, objectives, theory, vicinity
from ufm.problem import Params, balanced_counts, make_problem


@pytest.mark.parametrize("K, d", [(2, 1), (3, 2), (4, 7), (10, 9)])
def test_simplex_etf_gram_has_unit_diagonal_and_cosine_minus_one_over_K_minus_1(K, d, getkey):
  for key in (None, getkey()):
    M = theory.simplex_etf(K, d, key=key)
    assert M.shape == (d, K)
    assert_close(M.T @ M, theory.etf_gram(K), "exact")
    assert_close(jnp.diag(theory.etf_gram(K)), np.ones(K), "exact")
    assert_close(theory.etf_gram(K)[0, 1], -1 / (K - 1), "exact")
    assert_close(M.sum(axis=1), np.zeros(d), "exact")


def test_orthogonal_frame_and_etf_target(getkey):
  F = theory.orthogonal_frame(4, 6, key=getkey())
  assert_close(F.T @ F, np.eye(4), "exact")
  E = theory.etf_target(5)
  assert_close(jnp.linalg.norm(E), 1.0, "exact")
  with pytest.raises(theory.NoClosedFormError, match="d >= K = 4"):
    theory.orthogonal_frame(4, 3)


def test_collapse_threshold_separates_zero_and_nonzero_minimisers():
  K, n = 4, 5
  for tau, alive in [(0.5, True), (0.999, True), (1.0 + 1e-9, False), (1.5, False)]:
    lam_W, lam_H = lams_at_tau(tau, K, n)
    assert_close(theory.collapse_threshold(K, n, lam_W, lam_H), tau, "exact")
    assert (float(theory.ce_balanced(K, n, lam_W, lam_H).norm_w_sq) > 0) == alive
    mse = theory.mse_minimiser(balanced_counts(K, n), lam_W, lam_H, bias=False)
    assert (float(mse.norm_W_sq) > 0) == alive
    mse_b = theory.mse_minimiser(balanced_counts(K, n), lam_W, lam_H, bias=True)
    assert (float(mse_b.norm_W_sq) > 0) == alive
  assert_close(theory.ce_balanced(K, n, *lams_at_tau(1.5, K, n)).objective, math.log(K), "exact")


def test_mse_bias_free_matches_theory_md_general_orthogonal_frame():
  """derivations §1.3 (M = 1): ||w_k||^2 = sqrt(n_k lam_H / lam_W) - N lam_H, ||h_k|| = s_k / (s_k^2 + N lam_H)."""
  counts, lam_W, lam_H = (20, 10, 5, 5), 1e-3, 1e-3
  N = sum(counts)
  sol = theory.mse_minimiser(counts, lam_W, lam_H, bias=False)
  s2 = np.maximum(np.sqrt(np.array(counts) * lam_H / lam_W) - N * lam_H, 0)
  assert_close(np.diag(sol.gram_W), s2, "exact")
  assert_close(np.sqrt(np.diag(sol.gram_M)), np.sqrt(s2) / (s2 + N * lam_H), "exact")
  assert_close(sol.gram_W - np.diag(np.diag(sol.gram_W)), np.zeros((4, 4)), "exact")
  # the numbers ufm/theory/derivations.md §1.3 quotes from its one-off L-BFGS check
  np.testing.assert_allclose(np.diag(sol.gram_W), [4.432136, 3.122278, 2.196068, 2.196068], atol=1e-6)


def _params_from_prediction(problem, pred):
  """A minimiser built from the predicted class-level Grams (no solver): W from gram_W, H_bar = W^+ (W H_bar)."""
  K, d = problem.K, problem.d
  lam, U = np.linalg.eigh(pred.gram_W)
  lam = np.where(lam > 1e-12 * lam.max(), lam, 0.0)  # round-off of a rank-deficient Gram is 0, not a tiny column
  W_KxK = U * np.sqrt(lam)[None, :]
  W = np.zeros((K, d))
  W[:, :K] = W_KxK
  H_bar = np.linalg.pinv(W) @ pred.logits_M
  H = H_bar @ np.asarray(problem.Y)
  b = np.zeros(K) if not problem.bias else np.nan_to_num(pred.b)
  return Params(W=jnp.asarray(W), H=jnp.asarray(H), b=jnp.asarray(b)), H_bar


CASES = [  # loss, bias, counts, d, lam_W, lam_H, lam_b
    ("ce", False, balanced_counts(4, 5), 4, 5e-3, 2e-3, 0.0),
    ("ce", True, balanced_counts(3, 2), 4, 0.03, 0.05, 0.1),
    ("ce", True, balanced_counts(5, 3), 5, 1e-2, 1e-3, 0.0),
    ("mse", False, balanced_counts(4, 5), 4, 5e-3, 2e-3, 0.0),
    ("mse", True, balanced_counts(4, 5), 4, 5e-3, 2e-3, 0.0),
    ("mse", True, balanced_counts(4, 5), 5, 5e-3, 2e-3, 0.5),  # mean direction active
    ("mse", True, balanced_counts(4, 5), 5, 5e-3, 2e-3, 1e-4),  # mean direction inactive
    ("mse", False, (20, 10, 5, 5), 4, 1e-3, 1e-3, 0.0),
    ("mse", False, (20, 10, 5, 1), 4, 2e-3, 2e-3, 0.0),  # smallest class collapsed to zero
    ("mse", True, (12, 6, 3, 3), 4, 1e-3, 3e-3, 0.0),
]


@pytest.mark.parametrize("loss, bias, counts, d, lam_W, lam_H, lam_b", CASES)
def test_predicted_minimiser_is_stationary_with_predicted_value(loss, bias, counts, d, lam_W, lam_H, lam_b):
  problem = make_problem(counts, d=d, lam_W=lam_W, lam_H=lam_H, lam_b=lam_b, loss=loss, bias=bias)
  pred = theory.predict(problem)
  if loss == "ce":  # built from the ETF directly; the Gram check below is MSE-only
    params, H_bar = ce_minimiser_params(problem), None
  else:
    params, H_bar = _params_from_prediction(problem, pred)
  grad = jax.grad(objectives.objective)(params, problem)
  if not bias:
    grad = grad._replace(b=jnp.zeros_like(grad.b))
  assert float(otu.tree_norm(grad)) < 1e-12
  assert_close(objectives.objective(params, problem), pred.objective, "exact")
  assert_close(jnp.sum(params.W**2), pred.norm_W_sq, "exact")
  assert_close(jnp.sum(params.H**2), pred.norm_H_sq, "exact")
  if loss == "mse":  # (for CE, H_bar is built from the same rho and t, so the Gram check would be circular)
    assert_close(H_bar.T @ H_bar, pred.gram_M, "exact")


def test_perturbed_prediction_is_not_better():
  """f(predicted) <= f(random perturbations of it): a local check of minimality (not only stationarity)."""
  problem = make_problem((12, 6, 3, 3), d=4, lam_W=1e-3, lam_H=3e-3, loss="mse", bias=True)
  params, _ = _params_from_prediction(problem, theory.predict(problem))
  f0 = float(objectives.objective(params, problem))
  for i in range(20):
    k = jax.random.split(jax.random.key(i), 3)
    eps = 1e-3
    q = Params(*(p + eps * jax.random.normal(kk, p.shape) for p, kk in zip(params, k)))
    assert float(objectives.objective(q, problem)) >= f0 - 1e-15


def test_closed_forms_are_jittable_and_vmappable():
  lams = jnp.array([1e-3, 5e-3, 2e-2, 0.2])
  vm = jax.jit(jax.vmap(lambda lam: theory.mse_minimiser((5, 5, 5), lam, lam, bias=True).objective))(lams)
  loop = [theory.mse_minimiser((5, 5, 5), float(lam), float(lam), bias=True).objective for lam in lams]
  assert_close(vm, loop, "exact")
  vc = jax.jit(jax.vmap(lambda lam: theory.ce_balanced(3, 5, lam, lam).norm_w_sq))(lams)
  assert_close(vc, [theory.ce_balanced(3, 5, float(lam), float(lam)).norm_w_sq for lam in lams], "exact")


def test_predict_refuses_what_has_no_closed_form():
  with pytest.raises(theory.NoClosedFormError, match="imbalanced CE"):
    theory.predict(make_problem((5, 3), d=3, lam_W=1e-3, lam_H=1e-3, loss="ce"))
  with pytest.raises(theory.NoClosedFormError, match="lam_W > 0 and lam_H > 0"):
    theory.predict(make_problem((5, 5), d=3, lam_W=0.0, lam_H=1e-3))
  with pytest.raises(theory.NoClosedFormError, match="does not decouple"):
    theory.predict(make_problem((5, 3), d=3, lam_W=1e-3, lam_H=1e-3, lam_b=0.1, loss="mse", bias=True))
  with pytest.raises(theory.NoClosedFormError, match="allowed range for a prediction: d >= 4"):
    theory.predict(make_problem((5, 5, 5, 5), d=3, lam_W=1e-3, lam_H=1e-3, loss="mse"))


def test_regularised_bias_limit_turns_uncentred_means_into_an_orthogonal_frame():
  """Balanced MSE with bias: lam_b = 0 gives ETF means (h_G = 0); lam_b -> inf gives an orthogonal frame of
  uncentred means (the mean block's target sqrt(n) then equals the centred ones; cf. arXiv 2606.00344)."""
  K, n = 5, 4
  etf = theory.mse_minimiser(balanced_counts(K, n), 1e-3, 1e-3, 0.0, bias=True)
  G = np.asarray(etf.gram_M)
  assert_close(G / G[0, 0], theory.etf_gram(K), "exact")
  of = theory.mse_minimiser(balanced_counts(K, n), 1e-3, 1e-3, 1e12, bias=True)
  G = np.asarray(of.gram_M)
  np.testing.assert_allclose(G / G[0, 0], np.eye(K), atol=1e-10)  # 1e-12 from lam_b = 1e12, plus rounding


def test_ce_closed_form_is_nan_without_weight_decay():
  out = theory.ce_balanced(3, 4, jnp.array([0.0, 1e-3]), jnp.array([1e-3, 0.0]))
  assert np.all(np.isnan(np.asarray(out.objective)))


def test_predict_dispatches_on_family_and_loss_and_refuses_unregistered_losses():
  """The registry lists the (family, loss) pairs with a closed form; a loss registered at runtime in ufm.losses has
  none, so predict raises NoClosedFormError (never the MSE answer)."""
  assert set(theory.closed_forms()) >= {("plain", "ce"), ("plain", "mse"), ("deep", "ce"), ("deep", "mse")}
  assert ("vicinity", "mse") not in theory.closed_forms()
  huber = lambda z, y: jnp.sum(jnp.where(jnp.abs(z - y) < 1, 0.5 * (z - y) ** 2, jnp.abs(z - y) - 0.5), -1)
  losses.register(losses.Loss("huber_test", huber, "Huber loss (test only)", "none"))
  try:
    problem = make_problem((3, 3, 3), d=3, lam_W=1e-3, lam_H=1e-3, loss="huber_test")
    with pytest.raises(theory.NoClosedFormError, match=r"no closed form for family 'plain' with loss 'huber_test'; "
                       r"closed forms exist for: .*plain/mse"):
      theory.predict(problem)
  finally:
    losses._REGISTRY.pop("huber_test", None)
  vic = vicinity.make_vicinity_problem(jnp.zeros((3, 6)), (2, 2, 2), lam_W=0.1, lam_H=0.1, loss="ce")
  with pytest.raises(theory.NoClosedFormError, match="no closed form for family 'vicinity' with loss 'ce'"):
    theory.predict(vic)
  with pytest.raises(theory.NoClosedFormError, match="takes a deep problem"):
    theory.predict_deep(make_problem((3, 3), d=2, lam_W=1e-3, lam_H=1e-3, loss="mse"))


def test_register_prediction_adds_a_closed_form_and_refuses_duplicates():
  with pytest.raises(ValueError, match="already registered"):
    theory.register_prediction("plain", "mse", theory.predict_plain_mse)
  problem = make_problem((3, 3), d=2, lam_W=1e-3, lam_H=1e-3, loss="mse")
  sentinel = theory.predict(problem)._replace(source="test")
  try:
    theory.register_prediction("test_family", "mse")(lambda p: sentinel)
    assert ("test_family", "mse") in theory.closed_forms()
    fake = type("FakeProblem", (), {"FAMILY": "test_family", "loss": "mse"})()
    assert theory.predict(fake) is sentinel
  finally:
    theory.prediction._REGISTRY.pop(("test_family", "mse"), None)
  assert ("test_family", "mse") not in theory.closed_forms()
