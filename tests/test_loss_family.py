"""The loss family (label smoothing, focal, rescaled MSE): the registered losses against their definitions, the
LossProblem family (parameters as vmapped leaves), the closed forms of ufm.theory.losses against float64 multi-start
L-BFGS solves, and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close
from ufm import losses, solvers, theory, verdict
from ufm.loss_problem import LossProblem, loss_params, make_loss_problem
from ufm.problem import make_problem
from ufm.testing import rel_error, tolerance


def _np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_losses_match_their_definitions_on_one_hot_targets():
  rng = np.random.default_rng(0)
  K, B = 5, 7
  Z = rng.normal(size=(B, K)) * 2
  y = rng.integers(0, K, B)
  Y = np.eye(K)[y]
  p = _np_softmax(Z)
  py = p[np.arange(B), y]
  alpha, gamma, kappa, M = 0.2, 1.5, 3.0, 2.5
  ls = -(1 - alpha) * np.log(py) - alpha / K * np.log(p).sum(-1)  # Szegedy et al.: CE to the smoothed label
  fl = -((1 - py) ** gamma) * np.log(py)  # Lin et al.
  zy = Z[np.arange(B), y]
  rm = 0.5 * (kappa * (zy - M) ** 2 + (Z**2).sum(-1) - zy**2)  # Hui & Belkin, with the 1/2 of "mse"
  got = {n: losses.get(n).per_sample(jnp.asarray(Z), jnp.asarray(Y), **kw) for n, kw in
         (("label_smoothing", dict(alpha=alpha)), ("focal", dict(gamma=gamma)), ("rescaled_mse", dict(kappa=kappa, M=M)))}
  assert_close(got["label_smoothing"], ls, "exact")
  assert_close(got["focal"], fl, "exact")
  assert_close(got["rescaled_mse"], rm, "exact")
  # special values: alpha = 0 and gamma = 0 are CE, kappa = M = 1 is MSE
  ce, mse = losses.get("ce").per_sample(Z, Y), losses.get("mse").per_sample(Z, Y)
  assert_close(losses.get("label_smoothing").per_sample(Z, Y, alpha=0.0), ce, "exact")
  assert_close(losses.get("focal").per_sample(Z, Y, gamma=0.0), ce, "exact")
  assert_close(losses.get("rescaled_mse").per_sample(Z, Y, kappa=1.0, M=1.0), mse, "exact")
  assert [p.name for n in ("label_smoothing", "focal", "rescaled_mse") for p in losses.get(n).params] == [
      "alpha", "gamma", "kappa", "M"]


def test_loss_problem_equals_problem_at_the_defaults_and_vmaps_over_its_parameter():
  counts = (3, 3, 3)
  for loss in ("label_smoothing", "focal", "rescaled_mse"):
    lp = make_loss_problem(counts, d=3, lam_W=0.01, lam_H=0.02, loss=loss)
    p = make_problem(counts, d=3, lam_W=0.01, lam_H=0.02, loss=loss)
    params = p.init(jax.random.key(0), 0.5)
    assert_close(lp.value(params), p.value(params), "exact")
  lp = make_loss_problem(counts, d=3, lam_W=0.01, lam_H=0.02, loss="focal", gamma=0.0)
  assert lp.SCALAR_LEAVES == ("lam_W", "lam_H", "lam_b", "gamma")
  params = lp.init(jax.random.key(1), 0.5)
  gammas = jnp.asarray([0.0, 1.0, 2.5])
  vals = jax.jit(jax.vmap(lambda g: lp.replace(gamma=g).value(params)))(gammas)
  for g, v in zip(gammas, vals):
    assert_close(v, make_loss_problem(counts, d=3, lam_W=0.01, lam_H=0.02, loss="focal", gamma=float(g)).value(params),
                 "exact")
  ce = make_problem(counts, d=3, lam_W=0.01, lam_H=0.02, loss="ce")
  assert_close(vals[0], ce.value(params), "exact")


@pytest.mark.parametrize("K,n,lw,lh", [(4, 2, 0.003, 0.02), pytest.param(2, 3, 0.01, 0.05, marks=pytest.mark.slow),
                                       pytest.param(5, 1, 0.05, 0.1, marks=pytest.mark.slow)])
def test_closed_forms_reduce_to_ce_and_mse(K, n, lw, lh):
  ce = theory.ce_balanced(K, n, lw, lh)
  for sol in (theory.label_smoothing_etf(K, n, lw, lh, 0.0), theory.focal_etf(K, n, lw, lh, 0.0)):
    assert_close(sol.norm_w_sq, ce.norm_w_sq, "exact")
    assert_close(sol.objective, ce.objective, "exact")
  for bias in (False, True):
    got = theory.rescaled_mse_minimiser(K, n, lw, lh, 1.0, 1.0, bias=bias)
    ref = theory.mse_minimiser((n,) * K, lw, lh, 0.0, bias=bias)
    assert_close(got.objective, ref.objective, "exact")
    assert_close(got.gram_W, ref.gram_W, "exact")


def test_label_smoothing_shifts_the_collapse_threshold_by_alpha():
  # tau + alpha >= 1 gives the zero solution; just below it a non-zero ETF (derivations §12.1)
  K, n = 4, 2
  for alpha in (0.0, 0.3, 0.7):
    lam_at = lambda tau: tau / (K * math.sqrt(n))  # lam_W = lam_H with K sqrt(n lam^2) = tau
    above = theory.label_smoothing_etf(K, n, lam_at(1.001 - alpha), lam_at(1.001 - alpha), alpha)
    below = theory.label_smoothing_etf(K, n, lam_at(0.99 - alpha), lam_at(0.99 - alpha), alpha)
    assert float(above.u) == 0.0 and float(above.objective) == pytest.approx(math.log(K), rel=1e-12)
    assert float(below.u) > 0


_slow = pytest.mark.slow  # one compilation each (~15 s on the shared CPU); the focal case runs by default
CASES = [
    pytest.param("focal", dict(gamma=1.0), False, id="focal"),
    pytest.param("focal", dict(gamma=4.0), True, id="focal-bias", marks=_slow),
    pytest.param("label_smoothing", dict(alpha=0.05), False, id="ls", marks=_slow),
    pytest.param("label_smoothing", dict(alpha=0.6), True, id="ls-bias", marks=_slow),
    pytest.param("rescaled_mse", dict(kappa=3.0, M=2.0), False, id="rmse", marks=_slow),
    pytest.param("rescaled_mse", dict(kappa=0.5, M=4.0), True, id="rmse-bias", marks=_slow),
]


@pytest.mark.parametrize("loss,params,bias", CASES)
def test_closed_form_is_the_best_of_eight_float64_starts(loss, params, bias):
  """Every start converges to the closed-form objective (landscape), and the best start's Grams equal the closed
  form (Zhou et al. 2022, arXiv 2210.02192, Thm. 3.1; the norms of derivations §12)."""
  p = make_loss_problem((3, 3, 3, 3), d=4, lam_W=0.004, lam_H=0.01, loss=loss, bias=bias, **params)
  ms = verdict.multistart(solvers.lbfgs_reference, jax.random.key(3), p,
                          solvers.lbfgs_hparams(init_scale=0.5), restarts=8)
  pred = theory.predict(p)
  v = verdict.verdict(ms.best, p)
  assert v.status == "global", v.message
  assert ms.converged.all()
  assert max(abs(f - pred.objective) / abs(pred.objective) for f in ms.objectives) <= tolerance("reference").bound
  W = np.asarray(ms.best.params.W)
  assert rel_error(W @ W.T, pred.gram_W) <= tolerance("reference").bound
  Hbar = np.asarray(ms.best.params.H) @ np.asarray(p.Y).T / 3
  assert rel_error(Hbar.T @ Hbar, pred.gram_M) <= tolerance("reference").bound
  assert pred.geometry == ("orthogonal frame" if loss == "rescaled_mse" and not bias else "simplex ETF")


@pytest.mark.slow
@pytest.mark.parametrize("K", [2, 3, 5])
def test_focal_etf_is_global_across_gamma_and_tau(K):
  """The focal loss is not convex in the logits, so the theorem (not the convex reduction) says the ETF is the
  global minimum; 8 starts at d = K - 1 over gamma in {0.5, 2, 5} and tau in {0.1, 0.5, 0.9, 1.2}."""
  n = 2
  for gamma in (0.5, 2.0, 5.0):
    for tau in (0.1, 0.5, 0.9, 1.2):
      lam = tau / (K * math.sqrt(n))
      p = make_loss_problem((n,) * K, d=K - 1, lam_W=lam, lam_H=lam, loss="focal", gamma=gamma)
      ms = verdict.multistart(solvers.lbfgs_reference, jax.random.key(1), p, solvers.lbfgs_hparams(init_scale=1.0),
                              restarts=8)
      v = verdict.verdict(ms.best, p)
      assert v.status == "global", (gamma, tau, v.message)


def test_predict_uses_the_defaults_for_a_plain_problem():
  p = make_problem((2, 2, 2), d=2, lam_W=0.01, lam_H=0.01, loss="label_smoothing")
  lp = make_loss_problem((2, 2, 2), d=2, lam_W=0.01, lam_H=0.01, loss="label_smoothing", alpha=0.1)
  assert theory.predict(p).objective == theory.predict(lp).objective
  with pytest.raises(theory.NoClosedFormError, match="balanced"):
    theory.predict(make_loss_problem((3, 1), d=2, lam_W=0.01, lam_H=0.01, loss="focal"))
  with pytest.raises(theory.NoClosedFormError, match="d = 1 < 2"):
    theory.predict(make_loss_problem((2, 2, 2), d=1, lam_W=0.01, lam_H=0.01, loss="focal"))


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss="label_smoothing", alpha=1.0), r"^alpha = 1.0 is out of range; allowed range: >= 0 and < 1$"),
    (dict(loss="label_smoothing", alpha=-0.1), r"^alpha = -0.1 is out of range; allowed range: >= 0 and < 1$"),
    (dict(loss="focal", gamma=-1), r"^gamma = -1.0 is out of range; allowed range: >= 0$"),
    (dict(loss="focal", gamma=float("nan")), r"^gamma = nan is not finite"),
    (dict(loss="rescaled_mse", kappa=0.0), r"^kappa = 0.0 is out of range; allowed range: > 0$"),
    (dict(loss="rescaled_mse", M=-2), r"^M = -2.0 is out of range; allowed range: > 0$"),
    (dict(loss="focal", alpha=0.1), r"^alpha is not a parameter of loss = 'focal'; allowed: gamma$"),
    (dict(loss="ce"), r"^loss = 'ce' has no parameters; allowed: label_smoothing, focal, rescaled_mse"),
    (dict(loss="hinge"), r"^loss = 'hinge' is not supported; allowed values: ce, mse, label_smoothing"),
])
def test_bad_input_is_one_line_naming_the_parameter(kwargs, match):
  with pytest.raises(ValueError, match=match) as e:
    make_loss_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, **kwargs)
  assert "\n" not in str(e.value)


def test_loss_params_returns_defaults_and_validates():
  got = loss_params("rescaled_mse", kappa=2.0)
  assert float(got["kappa"]) == 2.0 and float(got["M"]) == 1.0
  assert isinstance(make_loss_problem((2, 2), d=2, lam_W=0.1, lam_H=0.1, loss="focal"), LossProblem)


def test_claims_module_exports_its_claims():
  from ufm.claims import Claim
  from ufm.claims import losses as loss_claims
  assert all(isinstance(c, Claim) for c in loss_claims.CLAIMS)
  assert [c.name for c in loss_claims.CLAIMS] == ["label_smoothing_etf", "focal_etf"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["label_smoothing_etf", "focal_etf"])
def test_loss_family_claims_hold(name):
  from ufm.claims import assert_claim
  from ufm.claims import losses as loss_claims
  claim = {c.name: c for c in loss_claims.CLAIMS}[name]
  assert_claim(claim, examples=12, seed=0)
