r"""The mixup UFM's claims.

Fisher, Meng & Papyan 2024, arXiv 2402.06171: input mixup with a fixed simplex-ETF
classifier of row norm ``rho`` (:func:`ufm.mixup.make_input_mixup_problem`) on the 9-node uniform grid
:data:`ufm.testing.MIXUP_GRID` (symmetric, containing 0, 1/2 and 1).

* ``mixup_span_and_reduced_problem`` (holds): every optimal mixed feature of classes ``c != c'`` lies in
  :math:`\mathrm{span}\{w_c, w_{c'}\}` with the coordinates of the reduced 2-D problem
  (:func:`ufm.theory.mixup_optimal_feature`, damped Newton; MSE: the exact linear interpolation), and same-class
  mixtures sit at :math:`a^\star w_c` (:func:`ufm.theory.mixup_same_class_scale`); against float64 L-BFGS.
* ``mixup_symmetry_and_boundary`` (holds): :math:`a(\lambda) = b(1-\lambda)` (the swap symmetry), the feature at
  :math:`\lambda = 1/2` sits on the ``c``/``c'`` decision boundary (equal logits), and the other ``K - 2`` logits are
  equal; against float64 L-BFGS.
* ``mixup_reduced_stationarity`` (holds): the reduced solution is a stationary point of the full d-dimensional
  per-feature problem (a gradient written out independently) and meets the identities of derivations §11 B.1
  (the lambda-free curve, the same-class equation :math:`u(e^u + K - 1) = \kappa K`); no solve.
* ``mixup_mse_linear`` (holds): with the MSE loss the optimal mixed features are exactly linear in lambda and
  satisfy the normal equations; no solve.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ufm import mixup, theory
from ufm.claims.core import Claim
from ufm.testing import MIXUP_GRID, mixup_specs, rel_error

__all__ = ["CLAIMS"]

_FISHER = "Fisher, Meng & Papyan 2024 (arXiv 2402.06171)"
_LAMS = np.asarray(MIXUP_GRID)
_HALF = int(np.argmin(np.abs(_LAMS - 0.5)))


def _feature(problem):
  return theory.mixup_optimal_feature(jnp.asarray(_LAMS), problem.K, lam_H=float(problem.lam_H),
                                      rho=float(np.linalg.norm(np.asarray(problem.W0)[0])), loss=problem.loss)


def _pairs(problem, sol):
  Hm, _ = mixup.mixed_features(jax.tree.map(jnp.asarray, sol.params), problem)
  W = jnp.asarray(problem.W0)
  for c in range(problem.K):
    for c2 in range(problem.K):
      yield c, c2, W, Hm[:, c, c2, :]


def _span_check(problem, sol, f):
  out = {"span": 0.0, "plane_x": 0.0, "plane_y": 0.0, "same_class": 0.0}
  rho = float(np.linalg.norm(np.asarray(problem.W0)[0]))
  a_star = (float(theory.mixup_same_class_scale(problem.K, lam_H=float(problem.lam_H), rho=rho))
            if problem.loss == "ce" else float(f.a[-1]))
  for c, c2, W, H in _pairs(problem, sol):
    if c == c2:
      out["same_class"] = max(out["same_class"], rel_error(H, a_star * jnp.broadcast_to(W[c][:, None], H.shape),
                                                           "mixup_reference"))
      continue
    x, y, resid = mixup.plane_coordinates(W, c, c2, H)
    out["span"] = max(out["span"], float(jnp.max(resid)))
    out["plane_x"] = max(out["plane_x"], rel_error(x, f.x, "mixup_reference"))
    out["plane_y"] = max(out["plane_y"], rel_error(y, f.y, "mixup_reference"))
  return out


MIXUP_SPAN = Claim(
    name="mixup_span_and_reduced_problem",
    source=_FISHER + ", the optimal mixed features (reduced 2-D problem: derivations §2.3, §11 B.1)",
    paper=_FISHER,
    statement="Input-mixup UFM, fixed simplex-ETF classifier (rows of norm rho), CE or MSE: the optimal feature of "
              "every mixture of classes c != c' lies in span{w_c, w_c'} at the coordinates of the reduced problem, "
              "and same-class mixtures are a* w_c.",
    problems=mixup_specs(loss=("ce", "mse")),
    theory=_feature, check=_span_check, gtol=1e-12,
    tolerances={"span": "mixup_reference", "plane_x": "mixup_reference", "plane_y": "mixup_reference",
                "same_class": "mixup_reference"},
)


def _symmetry_check(problem, sol, f):
  out = {"swap": 0.0, "boundary": 0.0, "others_equal": 0.0}
  for c, c2, W, H in _pairs(problem, sol):
    if c == c2:
      continue
    ab = jnp.linalg.lstsq(jnp.stack([W[c], W[c2]], 1), H)[0]
    out["swap"] = max(out["swap"], rel_error(ab[0], ab[1][::-1], "mixup_reference"))
    Z = W @ H
    out["boundary"] = max(out["boundary"], abs(float((Z[c, _HALF] - Z[c2, _HALF]) / Z[c, _HALF])))
    others = np.delete(np.asarray(Z), [c, c2], axis=0)
    if len(others):
      out["others_equal"] = max(out["others_equal"], rel_error(others, np.broadcast_to(others[:1], others.shape),
                                                               "mixup_reference"))
  return out


MIXUP_SYMMETRY = Claim(
    name="mixup_symmetry_and_boundary",
    source=_FISHER + ", symmetry of the mixed features and the lambda = 1/2 decision boundary",
    paper=_FISHER,
    statement="Input-mixup CE-UFM, fixed simplex-ETF classifier: h(lam) = a w_c + b w_c' with a(lam) = b(1 - lam); at "
              "lam = 1/2 the logits of c and c' are equal (the feature is on their decision boundary); the other "
              "K - 2 logits are equal.",
    problems=mixup_specs(loss="ce"),
    theory=lambda problem: None, check=_symmetry_check, gtol=1e-12,
    tolerances={"swap": "mixup_reference", "boundary": "mixup_reference", "others_equal": "mixup_reference"},
)


@jax.jit
def _full_grad(H, W, Y, mu):
  """Gradients (columns) of lam CE(W h, c) + (1 - lam) CE(W h, c') + mu/2 |h|^2 with soft labels ``Y``, written out
  independently of ufm.mixup and ufm.theory."""
  g = lambda h, y: optax.softmax_cross_entropy(W @ h, y) + 0.5 * mu * jnp.sum(h**2)
  return jax.vmap(jax.grad(g), in_axes=(1, 1), out_axes=1)(H, Y)


def _stationarity_check(problem, sol, th):
  K, mu = problem.K, float(problem.lam_H)
  W = jnp.asarray(problem.W0)
  rho = float(jnp.linalg.norm(W[0]))
  f = theory.mixup_optimal_feature(jnp.asarray(_LAMS), K, lam_H=mu, rho=rho)
  H = f.a[None, :] * W[0][:, None] + f.b[None, :] * W[1][:, None]
  E = np.eye(K)
  Y = jnp.asarray(_LAMS[None, :] * E[:, :1] + (1 - _LAMS[None, :]) * E[:, 1:2])
  beta = rho**2 * K / (K - 1)
  kappa = beta / mu
  u, v = beta * np.asarray(f.a), beta * np.asarray(f.b)
  S = np.exp(u) + np.exp(v) + K - 2
  u1 = beta * float(theory.mixup_same_class_scale(K, lam_H=mu, rho=rho))
  return {"full_gradient": float(jnp.abs(_full_grad(H, W, Y, mu)).max()),
          "curve": rel_error((u + v) * S / (kappa * K), np.ones_like(_LAMS), "mixup_newton"),
          "same_class": rel_error(u1 * (np.exp(u1) + K - 1), kappa * K, "mixup_newton")}


MIXUP_STATIONARITY = Claim(
    name="mixup_reduced_stationarity",
    source=_FISHER + "; the reduced problem and its identities derived in ufm.theory.mixup_optimal_feature "
                     "(derivations §11 B.1)",
    paper=_FISHER,
    statement="Input-mixup CE-UFM, fixed simplex-ETF classifier: the damped-Newton solution of the reduced 2-D "
              "problem is a stationary point of the full d-dimensional per-feature objective, lies on the "
              "lambda-free curve (u + v)(e^u + e^v + K - 2) = kappa K, and a* solves u(e^u + K - 1) = kappa K.",
    problems=mixup_specs(K=(3, 4, 5, 8), lam_H=(1e-2, 1.0)),
    theory=lambda problem: None, check=_stationarity_check, solver="none",
    tolerances={"full_gradient": "mixup_newton", "curve": "mixup_newton", "same_class": "mixup_newton"},
)


def _mse_linear_check(problem, sol, th):
  W = jnp.asarray(problem.W0)
  mu = float(problem.lam_H)
  H = mixup.mse_mixup_features(W, 0, 1, jnp.asarray(_LAMS), mu)
  line = _LAMS[None, :] * H[:, -1:] + (1 - _LAMS[None, :]) * H[:, :1]
  f = theory.mixup_optimal_feature(jnp.asarray(_LAMS), problem.K, lam_H=mu, rho=float(jnp.linalg.norm(W[0])),
                                   loss="mse")
  E = np.eye(problem.K)
  Y = jnp.asarray(_LAMS[None, :] * E[:, :1] + (1 - _LAMS[None, :]) * E[:, 1:2])
  return {"linear": rel_error(H, line, "mixup_linear"),
          "closed_form": rel_error(H, f.a[None, :] * W[0][:, None] + f.b[None, :] * W[1][:, None], "mixup_linear"),
          "normal_equations": float(jnp.abs(W.T @ (W @ H - Y) + mu * H).max())}


MIXUP_MSE_LINEAR = Claim(
    name="mixup_mse_linear",
    source=_FISHER + " (MSE case, derivations §2.3)",
    paper=_FISHER,
    statement="Input-mixup MSE-UFM, fixed simplex-ETF classifier: the optimal mixed features (W^T W + mu I)^-1 W^T "
              "y_lam are exactly linear in lam, equal ufm.theory.mixup_optimal_feature(loss='mse') and satisfy "
              "W^T(W h - y) + mu h = 0.",
    problems=mixup_specs(K=(3, 4, 5, 8), loss="mse", lam_H=(1e-2, 1.0)),
    theory=lambda problem: None, check=_mse_linear_check, solver="none",
    tolerances={"linear": "mixup_linear", "closed_form": "mixup_linear", "normal_equations": "mixup_newton"},
)

#: The mixup UFM's claims.
CLAIMS = (MIXUP_SPAN, MIXUP_SYMMETRY, MIXUP_STATIONARITY, MIXUP_MSE_LINEAR)
