r"""Neural regression collapse in the UFM: the global minimiser of the regression UFM of :mod:`ufm.regression`.

Andriopoulos, Dong, Guo, Zhao, Ross (NeurIPS 2024, "The Prevalence of Neural Collapse in Neural Multivariate
Regression", arXiv 2409.04180), UFM theorem of their Sec. 4 (the theorem's number and its normalisation not checked
against the paper's text; derived here in ufm's normalisation, derivations §13): for :math:`\lambda_W, \lambda_H >
0` every global minimiser has

* (NRC1, NRC2) centred features in an (at most) ``n``-dimensional subspace, the row space of ``W``;
* (NRC3) :math:`WW^\top = \sqrt{N\lambda_H/\lambda_W}\,(\Sigma^{1/2} - \sqrt\gamma I)_+`,
  :math:`\gamma = N\lambda_W\lambda_H` (the paper's :math:`\sqrt{\lambda'_H/\lambda_W}(\Sigma^{1/2} - \sqrt{c}I)`,
  :math:`c = \lambda'_H\lambda_W`, with its per-sample feature decay :math:`\lambda'_H = N\lambda_H`), where
  :math:`\Sigma` is the target covariance (the second moment :math:`\frac1NYY^\top` without a bias);

and for :math:`\lambda_W = \lambda_H = 0` the minimisers are every interpolating :math:`(W, H)`, so nothing collapses.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ufm.theory.prediction import NoClosedFormError, Prediction, register_prediction

__all__ = ["RegressionMinimiser", "predict_regression", "regression_minimiser"]

SOURCE = "Andriopoulos, Dong, Guo, Zhao, Ross 2024 (arXiv 2409.04180), UFM theorem (Sec. 4)"


class RegressionMinimiser(NamedTuple):
  r"""The regression UFM's minimiser: ``gram_W`` :math:`WW^\top` (``n x n``), ``gram_H`` :math:`\tilde H^\top
  \tilde H` (``N x N``, centred features), ``Z`` :math:`= W\tilde H` (``n x N``), bias ``b``, ``objective``,
  ``gamma`` :math:`= N\lambda_W\lambda_H`, ``singular_values`` of ``Z`` (the soft-thresholded ones of the
  centred targets) and ``rank``."""
  gram_W: jax.Array
  gram_H: jax.Array
  Z: jax.Array
  b: jax.Array
  objective: jax.Array
  gamma: jax.Array
  singular_values: jax.Array
  rank: jax.Array


def regression_minimiser(Y, lam_W, lam_H, *, bias: bool, d: int | None = None) -> RegressionMinimiser:
  r"""Global minimiser of :math:`\frac1{2N}\|WH + b\mathbf 1^\top - Y\|_F^2 + \frac{\lambda_W}2\|W\|_F^2 +
  \frac{\lambda_H}2\|H\|_F^2` (unregularised ``b`` when ``bias``; derivations §13; Andriopoulos et al. 2024,
  arXiv 2409.04180, Sec. 4).

  With a bias, :math:`b = \bar y` and :math:`h_G = 0` (the mean of :math:`H` costs :math:`\lambda_H` and changes no
  prediction), leaving the centred targets :math:`Y_c = U\,\mathrm{diag}(s)V^\top`. The minimal regulariser of
  :math:`Z = WH` is :math:`\sqrt{\lambda_W\lambda_H}\|Z\|_*`, so
  :math:`Z = U\,\mathrm{diag}((s_i - \mu)_+)V^\top`, :math:`\mu = N\sqrt{\lambda_W\lambda_H}` (the top ``d``
  only, when ``d`` is below the rank), :math:`WW^\top = \sqrt{\lambda_H/\lambda_W}(ZZ^\top)^{1/2}`,
  :math:`H^\top H = \sqrt{\lambda_W/\lambda_H}(Z^\top Z)^{1/2}`, and
  :math:`f^\star = \frac1{2N}\sum_i(s_i - z_i)^2 + \sqrt{\lambda_W\lambda_H}\sum_i z_i`. With
  :math:`\Sigma = Y_cY_c^\top/N` (:math:`s_i^2 = N\sigma_i`) this is NRC3's
  :math:`WW^\top = \sqrt{N\lambda_H/\lambda_W}(\Sigma^{1/2} - \sqrt{N\lambda_W\lambda_H}\,I)_+`.
  """
  Y = jnp.asarray(Y)
  N = Y.shape[1]
  lam_W, lam_H = jnp.asarray(lam_W, Y.dtype), jnp.asarray(lam_H, Y.dtype)
  ybar = jnp.mean(Y, axis=1)
  Yc = Y - ybar[:, None] if bias else Y
  U, s, Vt = jnp.linalg.svd(Yc, full_matrices=False)
  mu = N * jnp.sqrt(lam_W * lam_H)
  z = jnp.maximum(s - mu, 0.0)
  if d is not None and d < z.shape[0]:
    z = z.at[d:].set(0.0)
  Z = (U * z[None, :]) @ Vt
  gram_W = jnp.sqrt(lam_H / lam_W) * (U * z[None, :]) @ U.T
  gram_H = jnp.sqrt(lam_W / lam_H) * (Vt.T * z[None, :]) @ Vt
  f = 0.5 * jnp.sum((s - z) ** 2) / N + jnp.sqrt(lam_W * lam_H) * jnp.sum(z)
  tiny = 1e-12 * jnp.maximum(jnp.max(s), 1e-300)
  return RegressionMinimiser(gram_W=gram_W, gram_H=gram_H, Z=Z, b=ybar if bias else jnp.zeros_like(ybar),
                             objective=f, gamma=N * lam_W * lam_H, singular_values=z, rank=jnp.sum(z > tiny))


@register_prediction("regression", "mse")
def predict_regression(problem) -> Prediction:
  r"""The closed-form minimiser of a :class:`ufm.regression.RegressionProblem` (:func:`regression_minimiser`):
  bias-free or with an unregularised bias, ``lam_W, lam_H > 0``; ``d`` below the rank of the unconstrained
  minimiser only when the kept singular values are unique. ``gram_M`` holds :math:`\tilde H^\top\tilde H`
  (``N x N``), ``logits_M`` the predictions :math:`WH + b\mathbf 1^\top` (``n x N``); ``metrics`` the NRC targets
  (0 at a non-zero minimiser). Raises :class:`NoClosedFormError` otherwise."""
  lam_W, lam_H, lam_b = (float(np.asarray(getattr(problem, k))) for k in ("lam_W", "lam_H", "lam_b"))
  if lam_W <= 0 or lam_H <= 0:
    raise NoClosedFormError(f"lam_W = {lam_W:g}, lam_H = {lam_H:g}: with a zero weight decay every interpolating "
                            "(W, H) is a minimiser (no collapse); a closed form needs lam_W > 0 and lam_H > 0")
  if problem.bias and lam_b > 0:
    raise NoClosedFormError(f"lam_b = {lam_b:g} > 0: the closed form covers no bias or an unregularised bias")
  Y = np.asarray(problem.Y, np.float64)
  free = jax.tree.map(lambda x: np.asarray(x, np.float64), regression_minimiser(Y, lam_W, lam_H, bias=problem.bias))
  d = problem.d
  if int(free.rank) > d:
    z = free.singular_values
    if z[d - 1] - z[d] <= 1e-12 * z[0]:
      raise NoClosedFormError(f"d = {d} is below the rank {int(free.rank)} of the minimiser and singular values tie "
                              f"at the cut; allowed range for a prediction: d >= {int(free.rank)}, or distinct values")
  sol = jax.tree.map(lambda x: np.asarray(x, np.float64),
                     regression_minimiser(Y, lam_W, lam_H, bias=problem.bias, d=d))
  alive = int(sol.rank) > 0
  metrics = {"nrc1": 0.0, "nrc2": 0.0, "nrc3": 0.0} if alive else {}
  return Prediction(
      geometry=("W W^T = sqrt(N lam_H/lam_W) (Sigma^1/2 - sqrt(gamma) I)_+" if alive else "zero"),
      source=SOURCE + "; derived in ufm.theory.regression_minimiser (nuclear-norm reduction)",
      objective=float(sol.objective), norm_W_sq=float(np.trace(sol.gram_W)), norm_H_sq=float(np.trace(sol.gram_H)),
      norm_b=float(np.linalg.norm(sol.b)), gram_W=sol.gram_W, gram_M=sol.gram_H,
      logits_M=sol.Z + sol.b[:, None], b=sol.b, metrics=metrics)
