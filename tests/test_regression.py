"""The regression UFM (neural regression collapse, Andriopoulos et al. 2024, arXiv 2409.04180): the objective, the
NRC metrics on constructed features, the closed form against float64 multi-start L-BFGS, no collapse at zero
weight decay, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close
from ufm import regression, solvers, theory, verdict
from ufm.testing import rel_error, tol, tolerance


def _targets(n=3, N=12, seed=0):
  return regression.random_targets(jax.random.key(seed), n, N)


def test_objective_matches_its_definition():
  Y = _targets()
  p = regression.make_regression_problem(Y, d=4, lam_W=0.02, lam_H=0.03, lam_b=0.01, bias=True)
  P = p.init(jax.random.key(1), 0.7)
  P = P._replace(b=jnp.asarray([0.1, -0.2, 0.3]))
  W, H, b, Yn = (np.asarray(x, np.float64) for x in (P.W, P.H, P.b, Y))
  ref = (0.5 * np.sum((W @ H + b[:, None] - Yn) ** 2) / Yn.shape[1] + 0.01 * np.sum(W**2) + 0.015 * np.sum(H**2)
         + 0.005 * np.sum(b**2))
  assert_close(p.value(P), ref, "exact")


def test_nrc_metrics_on_constructed_features():
  rng = np.random.default_rng(0)
  n, d, N = 2, 5, 9
  B = np.linalg.qr(rng.normal(size=(d, d)))[0]
  W = rng.normal(size=(n, 2)) @ B[:, :2].T  # rows in span(B[:, :2])
  inside = B[:, :2] @ rng.normal(size=(2, N)) + rng.normal(size=(d, 1))  # a common mean is removed by centring
  assert float(regression.nrc1(jnp.asarray(inside), n)) <= tol("exact")["atol"]
  assert float(regression.nrc2(jnp.asarray(inside), jnp.asarray(W))) <= tol("exact")["atol"]
  out = inside + B[:, 4:5] @ rng.normal(size=(1, N))  # energy outside the span
  Hc = out - out.mean(1, keepdims=True)
  frac = np.sum((B[:, 4:5] @ (B[:, 4:5].T @ Hc)) ** 2) / np.sum(Hc**2)
  assert_close(regression.nrc2(jnp.asarray(out), jnp.asarray(W)), frac, "exact")
  Sigma = np.diag([4.0, 1.0])
  A = np.diag([2.0 - 0.5, 1.0 - 0.5])  # (Sigma^1/2 - sqrt(gamma) I)_+, gamma = 0.25
  Wc = np.linalg.cholesky(A) @ np.eye(2, d)  # W W^T = A exactly
  assert float(regression.nrc3(jnp.asarray(Wc), jnp.asarray(Sigma), 0.25)) <= tol("exact")["atol"]
  assert float(regression.nrc3(jnp.asarray(Wc), jnp.asarray(Sigma), 0.0)) > 1e-3


@pytest.mark.parametrize("bias,lam_W", [(True, 1e-3), (True, 0.3),
                                         pytest.param(False, 0.05, marks=pytest.mark.slow)])  # one compile per bias
def test_closed_form_against_multistart_lbfgs(bias, lam_W):
  """NRC1-NRC3 hold and W W^T is the closed form at every lam_W (0.3 kills the smallest target direction:
  sqrt(gamma) = 0.33 > its std 0.25 only when bias, derivations §13)."""
  Y = regression.random_targets(jax.random.key(0), 3, 12, scales=(1.0, 0.5, 0.25))
  p = regression.make_regression_problem(Y, d=5, lam_W=lam_W, lam_H=0.03, bias=bias)
  ms = verdict.multistart(solvers.lbfgs_reference, jax.random.key(2), p, solvers.lbfgs_hparams(init_scale=0.5),
                          restarts=6)
  v = verdict.verdict(ms.best, p)
  assert v.status == "global", v.message
  pred = theory.predict(p)
  W = np.asarray(ms.best.params.W)
  assert rel_error(W @ W.T, pred.gram_W) <= tolerance("reference").bound
  gamma = float(theory.regression_minimiser(Y, lam_W, 0.03, bias=bias).gamma)
  assert gamma == pytest.approx(12 * lam_W * 0.03, rel=1e-14)
  for k, val in regression.nrc_metrics(ms.best.params, p, gamma).items():
    assert float(val) <= tol("reference_metric")["atol"], k
  Sigma = np.asarray(regression.target_covariance(Y, centred=bias))
  ev, V = np.linalg.eigh(Sigma)
  A = (V * np.maximum(np.sqrt(ev) - np.sqrt(gamma), 0)) @ V.T
  assert rel_error(pred.gram_W, np.sqrt(12 * 0.03 / lam_W) * A, "exact") <= tol("exact")["rtol"]


def test_no_collapse_without_regularisation():
  """lam_W = lam_H = 0: the solve interpolates (objective ~ 0) and keeps its initial components outside the target
  subspace (the paper's 'no collapse' statement)."""
  Y = _targets()
  p = regression.make_regression_problem(Y, d=6, lam_W=0.0, lam_H=0.0)
  sol = solvers.lbfgs_reference(jax.random.key(1), p, solvers.lbfgs_hparams(init_scale=0.5))
  assert bool(sol.converged) and float(sol.objective) <= 1e-15
  m = regression.nrc_metrics(sol.params, p, 0.0)
  assert float(m["nrc1"]) > 1e-2 and float(m["nrc2"]) > 1e-2
  with pytest.raises(theory.NoClosedFormError, match="interpolating"):
    theory.predict(p)


@pytest.mark.parametrize("kwargs,match", [
    (dict(Y=np.zeros(5)), r"^Y has shape \(5,\); allowed: a 2-D array n x N"),
    (dict(Y=np.zeros((2, 1))), r"^Y has shape \(2, 1\); allowed"),
    (dict(Y=np.array([[0.0, np.nan]])), r"^Y = .* is not finite"),
    (dict(d=0), r"^d = 0 is out of range; allowed range: integers >= 1$"),
    (dict(lam_W=-1.0), r"^lam_W = -1.0 is out of range; allowed range: >= 0$"),
    (dict(lam_H=[0.1, 0.2]), r"^lam_H has shape \(2,\); allowed: one number >= 0"),
    (dict(bias=False, lam_b=0.1), r"^lam_b = 0.1 has no effect without a bias"),
    (dict(bias="yes"), r"^bias = 'yes' is not a boolean"),
])
def test_bad_input_is_one_line(kwargs, match):
  args = dict(Y=np.ones((2, 4)), d=3, lam_W=0.1, lam_H=0.1)
  args.update(kwargs)
  Y = args.pop("Y")
  with pytest.raises(ValueError, match=match) as e:
    regression.make_regression_problem(Y, **args)
  assert "\n" not in str(e.value)


def test_regression_claims_module():
  from ufm.claims import Claim
  from ufm.claims import regression as reg_claims
  from ufm.testing import ProblemSpec
  assert all(isinstance(c, Claim) for c in reg_claims.CLAIMS)
  spec = reg_claims.RegressionSpec(counts=(2, 8), d=3, lam_W=0.01, lam_H=0.02, loss="mse", bias=True, seed=3)
  assert isinstance(spec, ProblemSpec) and spec.K == 2 and spec.N == 8 and spec.shape_key[0] == "regression"
  p = spec.problem()
  assert isinstance(p, regression.RegressionProblem) and p.Y.shape == (2, 8)
  np.testing.assert_array_equal(np.asarray(p.Y), np.asarray(spec._replace(seed=4).problem().Y))  # fixed by shape


@pytest.mark.slow
def test_nrc_claim_holds():
  from ufm.claims import assert_claim
  from ufm.claims.regression import NRC_CLOSED_FORM
  assert_claim(NRC_CLOSED_FORM, examples=12, seed=0)
