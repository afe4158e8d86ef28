r"""The vicinity-constrained UFM: features kept near a given matrix ``H0`` (perturbation analysis).

Tirer, Huang & Niles-Weed (ICML 2023, "Perturbation Analysis of Neural Collapse",
arXiv 2210.16658) study the bias-free MSE UFM whose features stay near a predefined matrix
``H0`` (e.g. intermediate features of a network). In the paper's normalisation (``ufm/theory/derivations.md`` §3.4,
§10; ``N = sum(counts)``, ``N = Kn`` when balanced):

.. math::
   f(W, H; H_0) = \frac{1}{2N}\|WH - Y\|_F^2 + \frac{\lambda_W}{2K}\|W\|_F^2
   + \frac{\lambda_H}{2N}\|H\|_F^2 + \frac{\beta}{2N}\|H - H_0\|_F^2 .

``loss="ce"`` replaces the first term by :math:`\frac1N\sum_i \mathrm{CE}(Wh_i, y_i)` (the CE
counterpart of the penalty form). With ``eps`` given, the hard-constraint form adds
:math:`\|H - H_0\|_F \le \varepsilon` (solved by projected gradient descent,
:func:`ufm.solvers.gradient_descent`). A :class:`VicinityProblem` works with the solvers,
sweeps (axes ``lam_W``, ``lam_H``, ``beta``, ``eps``) and metrics of :mod:`ufm`.

Note the normalisation: with ``beta = 0`` this is the plain bias-free UFM of
:mod:`ufm.objectives` with weight decays ``lam_W / K`` and ``lam_H / N``
(:func:`as_plain_problem`).

Also here: the central-path classifier :func:`ridge_classifier` :math:`W^\star(H)`, the optimal
features :func:`optimal_features` :math:`H^\star(W)`, the central-path objective
:func:`central_path_objective` and its gradient flow :func:`central_path_flow`, the linearised map
:func:`linearised_map` :math:`F = dH^\star/dH_0` by implicit differentiation, and generators of
near-collapsed ``H0`` (:func:`noisy_collapsed_features`). Closed forms: :mod:`ufm.theory`
(``vicinity_base_point``, ``vicinity_linearised_map``, ``contraction_map``).
"""

import functools
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm import metrics as _metrics
from ufm import losses
from ufm.problem import FamilyBase, Params, Problem, make_labels, make_problem
from ufm.validate import cast_checked, check_counts, check_int, check_loss, check_real

__all__ = ["FlowTrace", "VicinityProblem", "as_plain_problem", "central_path_flow", "central_path_objective",
           "class_blocks", "linearised_map", "make_vicinity_problem", "noisy_collapsed_features",
           "optimal_features", "ridge_classifier", "within_class_covariance"]


@struct.dataclass
class VicinityProblem(FamilyBase):
  """A UFM whose features are kept near ``H0`` (see the module docstring for the objective).

  Attributes:
    Y: one-hot labels ``K x N`` (columns grouped by class).
    H0: the reference features ``d x N`` (an array leaf: vmappable).
    lam_W, lam_H, beta, eps: scalar leaves (``eps`` is ``inf`` in the penalty form).
    counts, d, loss: static, as in :class:`ufm.problem.Problem`.
    constrained: static; the hard constraint ``||H - H0||_F <= eps`` is enforced by projection.
  """
  Y: Any
  H0: Any
  lam_W: Any
  lam_H: Any
  beta: Any
  eps: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)
  d: int = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="mse")
  constrained: bool = struct.field(pytree_node=False, default=False)

  FAMILY: ClassVar[str] = "vicinity"
  SCALAR_LEAVES = ("lam_W", "lam_H", "beta", "eps")
  bias = False  # the paper's model is bias-free; Params.b stays 0

  def value(self, params: Params) -> jax.Array:
    r"""The objective :math:`f(W, H; H_0)` of the module docstring."""
    data = losses.mean(self.loss, params.W @ params.H, self.Y)
    return (data + self.lam_W / (2 * self.K) * jnp.sum(params.W**2) + self.lam_H / (2 * self.N) * jnp.sum(params.H**2)
            + self.beta / (2 * self.N) * jnp.sum((params.H - self.H0) ** 2))

  def init(self, key: jax.Array, init_scale) -> Params:
    r"""Start near the reference: :math:`H = H_0 + s\,\xi_H`, :math:`W = W^\star(H_0) + s\,\xi_W`
    (:func:`ridge_classifier`), :math:`\xi \sim \mathcal N(0, 1)` entrywise."""
    kW, kH = jax.random.split(key)
    s = jnp.asarray(init_scale, self.dtype)
    H = self.H0 + s * jax.random.normal(kH, self.H0.shape, self.dtype)
    W = ridge_classifier(self.H0, self.Y, self.lam_W) + s * jax.random.normal(kW, (self.K, self.d), self.dtype)
    return Params(W=W, H=H, b=jnp.zeros((self.K,), self.dtype))

  def project(self, params: Params) -> Params:
    r"""Euclidean projection of ``H`` onto :math:`\{H : \|H - H_0\|_F \le \varepsilon\}`."""
    D = params.H - self.H0
    norm = jnp.sqrt(jnp.sum(D**2))
    scale = jnp.where(norm > self.eps, self.eps / jnp.maximum(norm, jnp.finfo(self.dtype).tiny), 1.0)
    return params._replace(H=self.H0 + scale * D)


def make_vicinity_problem(H0, counts, *, lam_W, lam_H, beta=0.0, eps=None, loss="mse", dtype=None) -> VicinityProblem:
  """Builds and validates a :class:`VicinityProblem` (errors name the parameter and the allowed range).

  Args:
    H0: reference features, ``d x N`` with ``N = sum(counts)`` (columns grouped by class).
    counts: per-class sample counts, ``K >= 2``.
    lam_W, lam_H, beta: ``>= 0`` (the paper's normalisation, module docstring).
    eps: radius of the hard constraint ``||H - H0||_F <= eps`` (``> 0``); ``None`` for the penalty form.
    loss: ``"mse"`` (the paper's) or ``"ce"``.
    dtype: floating dtype (default: JAX's default float).
  """
  counts = check_counts(counts)
  check_loss(loss)
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  H0 = np.asarray(H0)
  if H0.ndim != 2 or H0.shape[1] != sum(counts) or H0.shape[0] < 1:
    raise ValueError(f"H0 has shape {H0.shape}; allowed: (d, N) with d >= 1 and N = sum(counts) = {sum(counts)}")
  if not np.all(np.isfinite(H0)):
    raise ValueError("H0 has non-finite entries; allowed: finite values")
  leaves = {k: cast_checked(k, check_real(k, v, lo=0.0), dtype)
            for k, v in (("lam_W", lam_W), ("lam_H", lam_H), ("beta", beta))}
  if eps is None:
    eps_leaf = jnp.asarray(np.inf, dtype)
  else:
    eps_leaf = cast_checked("eps", check_real("eps", eps, lo=0.0, lo_open=True), dtype)
  return VicinityProblem(Y=make_labels(counts, dtype), H0=jnp.asarray(H0, dtype), eps=eps_leaf, counts=counts,
                         d=int(H0.shape[0]), loss=loss, constrained=eps is not None, **leaves)


def as_plain_problem(problem: VicinityProblem) -> Problem:
  r"""The ``beta = 0`` problem as a plain :class:`~ufm.problem.Problem`: the same objective with weight
  decays :math:`\lambda_W/K` and :math:`\lambda_H/N` (bias-free)."""
  return make_problem(problem.counts, d=problem.d, lam_W=np.asarray(problem.lam_W) / problem.K,
                      lam_H=np.asarray(problem.lam_H) / problem.N, loss=problem.loss, bias=False,
                      dtype=problem.dtype)


def ridge_classifier(H: jax.Array, Y: jax.Array, lam_W) -> jax.Array:
  r"""The central-path classifier :math:`W^\star(H) = YH^\top(HH^\top + \tfrac{N}{K}\lambda_W I_d)^{-1}`
  (the minimiser over ``W`` of the MSE objective; ``N/K = n`` when balanced: derivations §10.1, Tirer et al.
  2023 §3)."""
  K, N = Y.shape
  d = H.shape[0]
  G = H @ H.T + (N / K) * lam_W * jnp.eye(d, dtype=H.dtype)
  return jnp.linalg.solve(G, H @ Y.T).T


def optimal_features(W: jax.Array, Y: jax.Array, H0: jax.Array, lam_H, beta) -> jax.Array:
  r""":math:`H^\star(W) = (W^\top W + (\lambda_H + \beta)I)^{-1}(W^\top Y + \beta H_0)`, the minimiser over
  ``H`` of the MSE objective (derivations §10.1)."""
  d = W.shape[1]
  return jnp.linalg.solve(W.T @ W + (lam_H + beta) * jnp.eye(d, dtype=W.dtype), W.T @ Y + beta * H0)


def central_path_objective(H: jax.Array, problem: VicinityProblem) -> jax.Array:
  r""":math:`L(H) = f(W^\star(H), H; H_0)`, the MSE objective on the central path (Tirer et al. 2023, §4)."""
  W = ridge_classifier(H, problem.Y, problem.lam_W)
  return problem.value(Params(W=W, H=H, b=jnp.zeros((problem.K,), H.dtype)))


def within_class_covariance(H: jax.Array, labels: jax.Array, K: int) -> jax.Array:
  r""":math:`\Sigma_W = \frac1N\sum_i (h_i - \bar h_{y_i})(h_i - \bar h_{y_i})^\top` (``d x d``)."""
  M = _metrics.class_means(H, labels, K)[0]
  D = H - M[:, labels]
  return D @ D.T / H.shape[1]


class FlowTrace(NamedTuple):
  """Rows of :func:`central_path_flow` (leading axis ``t``): time, ``L(H)``, gradient norm,
  ``tr Sigma_W / tr Sigma_B`` (:func:`ufm.metrics.nc1_ratio`) and ``tr Sigma_W``."""
  time: jax.Array
  objective: jax.Array
  grad_norm: jax.Array
  nc1_ratio: jax.Array
  tr_sigma_W: jax.Array


@functools.partial(jax.jit, static_argnames=("num_steps", "log_every"))
def _flow(problem, step_size, *, num_steps, log_every):
  grad = jax.grad(central_path_objective)
  labels = problem.labels

  def row(H, t):
    return FlowTrace(time=t, objective=central_path_objective(H, problem),
                     grad_norm=jnp.sqrt(jnp.sum(grad(H, problem) ** 2)),
                     nc1_ratio=_metrics.nc1_ratio(H, labels, problem.K),
                     tr_sigma_W=jnp.trace(within_class_covariance(H, labels, problem.K)))

  def chunk(carry, _):
    H, t = carry
    H = jax.lax.fori_loop(0, log_every, lambda _, H: H - step_size * problem.N * grad(H, problem), H)
    t = t + log_every * step_size
    return (H, t), row(H, t)

  t0 = jnp.zeros((), problem.dtype)
  (H, _), rows = jax.lax.scan(chunk, (problem.H0, t0), None, length=num_steps // log_every)
  first = row(problem.H0, t0)
  return H, jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rows)


def central_path_flow(problem: VicinityProblem, *, step_size, num_steps: int, log_every: int = 1):
  r"""Gradient flow on the central path from :math:`H(0) = H_0`:
  :math:`\dot H = -N\,\nabla L(H)` (:func:`central_path_objective`; the factor ``N`` makes the time scale
  independent of the sample count), integrated by explicit Euler steps of ``step_size`` in a
  ``lax.scan`` (Tirer et al. 2023, Thm. on within-class variability along the flow; the claim
  is that :math:`\mathrm{tr}\Sigma_W/\mathrm{tr}\Sigma_B` decreases).

  Returns:
    ``(H, FlowTrace)``; the trace has ``num_steps // log_every + 1`` rows, the first at ``H0``.
  """
  if problem.loss != "mse":
    raise ValueError(f"loss = {problem.loss!r}: the central path needs the closed-form W*(H); allowed: 'mse'")
  step_size = cast_checked("step_size", check_real("step_size", step_size, lo=0.0, lo_open=True), problem.dtype)
  num_steps = check_int("num_steps", num_steps, lo=1)
  log_every = check_int("log_every", log_every, lo=1)
  if num_steps % log_every:
    raise ValueError(f"num_steps = {num_steps}, log_every = {log_every}: allowed: num_steps a multiple of log_every")
  return _flow(problem, step_size, num_steps=num_steps, log_every=log_every)


def linearised_map(problem: VicinityProblem, params: Params) -> jax.Array:
  r"""The linearised map :math:`F = \partial\,\mathrm{vec}H^\star / \partial\,\mathrm{vec}H_0` at a
  stationary point ``params`` of ``problem`` (Tirer et al. 2023, near-collapse theorem), by implicit
  differentiation of :math:`\nabla_z f(z; H_0) = 0`, :math:`z = (W, H)`. Since
  :math:`\nabla_{H_0}\nabla_H f = -\tfrac{\beta}{N} I` and :math:`\nabla_{H_0}\nabla_W f = 0`,

  .. math:: F = \frac{\beta}{N}\,\big[(\nabla_z^2 f)^{-1}\big]_{HH}

  (derivations §10.1). Dense (``(Kd + dN)^2`` memory): for the small problems of the theorem. Returns
  ``F`` with shape ``(d, N, d, N)`` (columns of ``H`` in class-major order).
  """
  return _linearised_map(problem, params)


@jax.jit
def _linearised_map(problem, params):
  K, d, N = problem.K, problem.d, problem.N
  z0 = jnp.concatenate([params.W.ravel(), params.H.ravel()])
  b = jnp.zeros((K,), params.W.dtype)

  def f(z):
    return problem.value(Params(W=z[:K * d].reshape(K, d), H=z[K * d:].reshape(d, N), b=b))

  hess = jax.hessian(f)(z0)
  rhs = jnp.concatenate([jnp.zeros((K * d, d * N), z0.dtype), jnp.eye(d * N, dtype=z0.dtype)])
  dz = jnp.linalg.solve(hess, rhs) * (problem.beta / N)
  return dz[K * d:].reshape(d, N, d, N)


def class_blocks(F: jax.typing.ArrayLike, counts, k: int, k2: int) -> jax.typing.ArrayLike:
  """The ``(d n_k) x (d n_k2)`` block of ``F`` mapping class ``k2`` of ``H0`` to class ``k`` of ``H*``."""
  starts = np.concatenate([[0], np.cumsum(counts)])
  d = F.shape[0]
  blk = F[:, starts[k]:starts[k + 1], :, starts[k2]:starts[k2 + 1]]
  return blk.reshape(d * counts[k], d * counts[k2])


def noisy_collapsed_features(key: jax.Array, counts, d: int, *, scale=1.0, within=0.1, between=0.0,
                             base: str = "of", dtype=None) -> jax.Array:
  r"""A near-collapsed ``H0``: class means ``scale * q_k`` (an orthogonal frame ``base="of"``, needs
  ``d >= K``, or a simplex ETF ``base="etf"``, ``d >= K - 1``; random orientation from ``key``), plus
  Gaussian between-class noise of standard deviation ``between`` per mean coordinate and within-class
  noise ``within`` per sample coordinate."""
  from ufm import theory
  counts = check_counts(counts)
  K = len(counts)
  d = check_int("d", d, lo=1)
  if base not in ("of", "etf"):
    raise ValueError(f"base = {base!r}; allowed: 'of', 'etf'")
  if (base == "of" and d < K) or (base == "etf" and d < K - 1):
    raise ValueError(f"d = {d} is out of range for base = {base!r} with K = {K}; allowed: d >= "
                     f"{K if base == 'of' else K - 1}")
  dtype = jnp.dtype(dtype or jnp.result_type(float))
  k_frame, k_between, k_within = jax.random.split(key, 3)
  frame = (theory.orthogonal_frame if base == "of" else theory.simplex_etf)(K, d, key=k_frame, dtype=dtype)
  M = scale * frame + between * jax.random.normal(k_between, (d, K), dtype)
  labels = np.repeat(np.arange(K), counts)
  return M[:, labels] + within * jax.random.normal(k_within, (d, sum(counts)), dtype)
