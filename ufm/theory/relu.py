r"""The deep UFM with ReLU layers: the best deep-neural-collapse (DNC) configuration and its objective.

Súkeník, Mondelli, Lampert (NeurIPS 2023, arXiv 2305.13165): for binary classification (``K = 2``) every global
minimiser of the MSE DUFM (:mod:`ufm.relu_deep`) is DNC. Súkeník, Mondelli, Lampert (NeurIPS 2024, arXiv
2405.14468): beyond two layers or two classes DNC stops being optimal (a low-rank bias of the multi-layer
regulariser). The DNC value is the deep linear UFM's orthogonal-frame value (derivations §14), so
:func:`predict_relu_dnc` reports it, and :func:`ufm.verdict.verdict` calls a solve below it "below theory": a
solution better than DNC.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory._onedim import global_min_1d
from ufm.theory.prediction import NoClosedFormError, Prediction, register_prediction
from ufm.validate import check_int

__all__ = ["ReLUDNC", "predict_relu_dnc", "relu_dnc"]


class ReLUDNC(NamedTuple):
  r"""The best DNC configuration: class-level output scale ``z`` (:math:`W_L\bar H_L = zI_K`), ``objective``, and
  :math:`\Lambda_n = (n\lambda_H\prod_l\lambda_{W_l})^{1/(L+1)}`."""
  z: jax.Array
  objective: jax.Array
  Lam: jax.Array


def relu_dnc(K: int, n, L: int, lam_W, lam_H) -> ReLUDNC:
  r"""The best DNC configuration of the balanced MSE DUFM with ``L`` layers (derivations §14; the DNC family of
  Súkeník et al. 2023, arXiv 2305.13165, and 2024, arXiv 2405.14468): minimises over :math:`z \ge 0`

  .. math:: F_{DNC}(z) = \tfrac12(z - 1)^2 + \tfrac{K(L+1)}{2}\Lambda_n z^{2/(L+1)},\qquad
     \Lambda_n = (n\lambda_H\textstyle\prod_l\lambda_{W_l})^{1/(L+1)}

  (each of the ``K`` orthogonal directions is a product of ``L + 1`` factors balanced by AM-GM; every ReLU acts on
  non-negative features). ``lam_W``: a scalar or ``L`` values. ``z = 0`` (the zero solution, value 1/2) is always a
  local minimum for ``L >= 2``; a grid and bisection find the global one on ``[0, 1]``."""
  K = check_int("K", K, lo=2)
  L = check_int("L", L, lo=1)
  dt = jnp.result_type(float)
  lam = jnp.broadcast_to(jnp.asarray(lam_W, dt), (L,))
  Lam = jnp.exp((jnp.log(jnp.asarray(n, dt) * jnp.asarray(lam_H, dt)) + jnp.sum(jnp.log(lam))) / (L + 1))
  z, f = _relu_dnc_1d(Lam, K=K, L=L)
  return ReLUDNC(z=z, objective=f, Lam=Lam)


def _relu_dnc_1d_impl(Lam, *, K, L):
  q = 2.0 / (L + 1)
  return global_min_1d(lambda z: 0.5 * (z - 1) ** 2 + 0.5 * K * (L + 1) * Lam * z**q, hi=1.0)


_relu_dnc_1d = jax.jit(_relu_dnc_1d_impl, static_argnames=("K", "L"))


@register_prediction("relu_deep", "mse")
def predict_relu_dnc(problem) -> Prediction:
  r"""The best DNC configuration of a balanced :class:`ufm.relu_deep.ReLUDeepProblem` with MSE and every width
  ``>= K`` (:func:`relu_dnc`): the global minimum for ``K = 2`` (Súkeník et al. 2023, arXiv 2305.13165), only an
  upper bound on it otherwise (Súkeník et al. 2024, arXiv 2405.14468). Raises :class:`NoClosedFormError` for
  imbalanced counts, narrower widths or a zero weight decay."""
  K, L = problem.K, problem.depth
  lam = np.asarray(problem.lams(), np.float64)
  lam_H = float(np.asarray(problem.lam_H))
  if np.any(lam <= 0) or lam_H <= 0:
    raise NoClosedFormError("a DNC value needs every lam_W > 0 and lam_H > 0")
  if not problem.balanced:
    raise NoClosedFormError(f"counts = {problem.counts}: the DNC value is for balanced counts")
  if min(problem.widths) < K:
    raise NoClosedFormError(f"widths = {problem.widths}: DNC needs every width >= K = {K}")
  n = problem.counts[0]
  sol = relu_dnc(K, n, L, lam, lam_H)
  z, f, Lam = float(sol.z), float(sol.objective), float(sol.Lam)
  root = z ** (1.0 / (L + 1))
  a_H = math.sqrt(Lam / (n * lam_H)) * root  # per-sample feature norm of H_1
  a_L = math.sqrt(Lam / lam[-1]) * root
  I = np.eye(K)
  src = ("Súkeník, Mondelli, Lampert 2023 (arXiv 2305.13165; global for K = 2) / 2024 (arXiv 2405.14468; "
         "not global beyond two layers or two classes); DNC value derived in ufm.theory.relu_dnc")
  return Prediction(geometry="DNC (orthogonal frames)" if z > 0 else "zero", source=src, objective=f,
                    norm_W_sq=float(sum(K * Lam / l * root**2 for l in lam)) if z > 0 else 0.0,
                    norm_H_sq=problem.N * a_H**2, norm_b=0.0, gram_W=a_L**2 * I, gram_M=a_H**2 * I,
                    logits_M=z * I, b=np.zeros(K), metrics={"nc1": 0.0} if z > 0 else {})
