"""The deep UFM with ReLU layers (Súkeník, Mondelli, Lampert 2023, arXiv 2305.13165; 2024, arXiv 2405.14468): the
objective, the best DNC value against the deep linear closed form and an explicit construction, float64 multi-start
solves (DNC optimal for K = 2; beaten for K = 6, L = 4: a documented counterexample), and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close
from ufm import solvers, theory, verdict
from ufm.problem import Params, make_problem
from ufm.relu_deep import class_mean_singular_values, dnc_params, layer_features, make_relu_problem


def test_objective_matches_its_definition_and_depth_one_is_the_plain_ufm():
  p = make_relu_problem((2, 3, 2), lam_W=(0.01, 0.02, 0.03), lam_H=0.04, widths=(4, 5, 3))
  P = p.init(jax.random.key(0), 0.8)
  W1, W2, W3 = (np.asarray(W, np.float64) for W in P.Ws)
  H1 = np.asarray(P.H, np.float64)
  H3 = np.maximum(W2 @ np.maximum(W1 @ H1, 0), 0)
  Y = np.asarray(p.Y)
  ref = (0.5 * np.sum((W3 @ H3 - Y) ** 2) / 7 + 0.5 * (0.01 * np.sum(W1**2) + 0.02 * np.sum(W2**2)
                                                        + 0.03 * np.sum(W3**2) + 0.04 * np.sum(H1**2)))
  assert_close(p.value(P), ref, "exact")
  assert_close(layer_features(P)[-1], H3, "exact")
  p1 = make_relu_problem((2, 3), lam_W=0.01, lam_H=0.02, d=3, depth=1)
  P1 = p1.init(jax.random.key(1), 0.5)
  plain = make_problem((2, 3), d=3, lam_W=0.01, lam_H=0.02, loss="mse")
  assert_close(p1.value(P1), plain.value(Params(W=P1.Ws[0], H=P1.H, b=P1.b)), "exact")


@pytest.mark.parametrize("K,n,L,lam", [(3, 2, 3, 3e-3), pytest.param(2, 1, 2, 1e-3, marks=pytest.mark.slow),
                                       pytest.param(5, 2, 4, 5e-4, marks=pytest.mark.slow), (4, 3, 2, 0.05)])
def test_dnc_value_is_the_deep_linear_orthogonal_frame_and_is_attained(K, n, L, lam):
  """The best DNC value equals the deep linear UFM's global minimum (bias-free, balanced: an orthogonal frame,
  derivations §14) and the explicit DNC parameters attain it, with every layer's class means of full rank K."""
  p = make_relu_problem((n,) * K, lam_W=lam, lam_H=lam, d=K + 1, depth=L)
  sol = theory.relu_dnc(K, n, L, lam, lam)
  lin = theory.deep_mse_minimiser((n,) * K, lam, lam, M=L, bias=False)
  assert_close(sol.objective, lin.objective, "exact")
  assert theory.predict(p).objective == pytest.approx(float(sol.objective), rel=1e-14)
  P = dnc_params(p, float(sol.z))
  assert_close(p.value(P), sol.objective, "exact")
  if float(sol.z) > 0:
    for s in class_mean_singular_values(P, p):
      assert_close(np.asarray(s) / np.asarray(s)[0], np.ones(K), "exact")


@pytest.mark.slow
@pytest.mark.parametrize("L", [2, 3])
def test_binary_dnc_is_not_beaten(L):
  """Súkeník et al. 2023: for K = 2 DNC is globally optimal: no start goes below it, the best reaches it."""
  p = make_relu_problem((2, 2), lam_W=1e-3, lam_H=1e-3, d=4, depth=L)
  ms = verdict.multistart(solvers.lbfgs_reference, jax.random.key(0), p, solvers.lbfgs_hparams(init_scale=0.3),
                          restarts=8, max_steps=5000)
  f_dnc = theory.predict(p).objective
  assert ms.objectives.min() >= f_dnc * (1 - 1e-8)
  assert ms.objectives.min() == pytest.approx(f_dnc, rel=1e-8)


@pytest.mark.slow
def test_multiclass_deep_solution_beats_dnc():
  """Súkeník et al. 2024: K = 6, L = 4, n = 2, lam = 1e-3: the best of 8 float64 starts lies 4.9% below every DNC
  configuration (measured 0.016360 vs 0.017207), with class means of H_L of rank < 6: a counterexample to DNC
  optimality beyond two layers and two classes, kept as such (the objective is evaluated exactly; the start need
  not have converged)."""
  p = make_relu_problem((2,) * 6, lam_W=1e-3, lam_H=1e-3, d=6, depth=4)
  ms = verdict.multistart(solvers.lbfgs_reference, jax.random.key(0), p, solvers.lbfgs_hparams(init_scale=0.3),
                          restarts=8, max_steps=5000)
  f_dnc = theory.predict(p).objective
  assert ms.objectives.min() < 0.97 * f_dnc
  assert verdict.verdict(ms.best, p).gap < -0.03
  s = np.asarray(class_mean_singular_values(ms.best.params, p)[3])
  assert s[-1] / s[0] < 0.9  # the last hidden layer's class means are far from an orthogonal frame


@pytest.mark.parametrize("kwargs,match", [
    (dict(d=3, depth=0), r"^depth = 0 is out of range"),
    (dict(widths=(3, 0)), r"^widths\[1\] = 0 is out of range; allowed range: integers >= 1$"),
    (dict(d=3, depth=2, lam_W=(0.1, 0.2, 0.3)), r"^lam_W has shape \(3,\); allowed: a scalar or one value per layer"),
    (dict(d=3, depth=2, lam_H=-1.0), r"^lam_H = -1.0 is out of range; allowed range: >= 0$"),
    (dict(widths=(3,), d=3), r"^give either widths or \(d, depth\), not both$"),
    (dict(d=3, depth=2, loss="hinge"), r"^loss = 'hinge' is not supported"),
])
def test_bad_input_is_one_line(kwargs, match):
  args = dict(lam_W=0.1, lam_H=0.1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match) as e:
    make_relu_problem((2, 2), **args)
  assert "\n" not in str(e.value)


def test_no_dnc_value_where_it_does_not_apply():
  with pytest.raises(theory.NoClosedFormError, match="width"):
    theory.predict(make_relu_problem((2, 2, 2), lam_W=0.1, lam_H=0.1, d=2, depth=2))
  with pytest.raises(theory.NoClosedFormError, match="balanced"):
    theory.predict(make_relu_problem((2, 1), lam_W=0.1, lam_H=0.1, d=2, depth=2))
  with pytest.raises(ValueError, match="every width >= K"):
    dnc_params(make_relu_problem((2, 2, 2), lam_W=0.1, lam_H=0.1, d=2, depth=2), 0.5)


def test_relu_claims_module():
  from ufm.claims import Claim
  from ufm.claims import relu as relu_claims
  assert all(isinstance(c, Claim) for c in relu_claims.CLAIMS)
  assert [c.expected for c in relu_claims.CLAIMS] == ["holds", "refuted", "holds-when"]
  spec = relu_claims.relu_spec_class(3)(counts=(2, 2), d=4, lam_W=1e-3, lam_H=1e-3, loss="mse")
  p = spec.problem()
  assert p.depth == 3 and p.widths == (4, 4, 4) and spec.shape_key[:2] == ("relu_deep", 3)
  assert jnp.shape(p.lam_W) == (3,)


@pytest.mark.slow
def test_relu_claims_run_as_expected():
  from ufm.claims import assert_claim, run_claim
  from ufm.claims import relu as relu_claims
  assert_claim(relu_claims.DNC_BINARY, examples=6, seed=0)
  assert run_claim(relu_claims.DNC_MULTICLASS, examples=1, seed=0, shrink=False).status == "refuted"


def test_best_start_convergence_ignores_a_stalled_worse_start():
  """K = 2, L = 2, n = 1, lam = 1.37e-3 (met in a 200-example run): 7 of 8 starts reach the DNC value, one stalls at a
  ReLU kink 60x above it (|grad| 2e-3 after 5000 iterations). The binary claim reads the best start only, so it
  needs only that start converged (convergence="best"); requiring every start (convergence="all") fails it."""
  import dataclasses

  from hypothesis import strategies as st

  from ufm import claims
  from ufm.claims import relu as relu_claims
  spec = relu_claims.relu_spec_class(2)(counts=(1, 1), d=4, lam_W=0.0013688969629109165,
                                        lam_H=0.0013688969629109165, loss="mse", seed=0, init_scale=0.3)
  best = dataclasses.replace(relu_claims.DNC_BINARY, name="binary_best", problems=st.just(spec))
  every = dataclasses.replace(best, name="binary_all", convergence="all")
  assert claims.run_claim(best, examples=1, shrink=False).status == "holds"
  r = claims.run_claim(every, examples=1, shrink=False)
  assert r.status == "FAILED" and r.worst[0] == "grad_norm" and r.worst[1] > 1e-3
  with pytest.raises(ValueError, match="convergence = 'some'; allowed values: all, best"):
    dataclasses.replace(best, convergence="some")
