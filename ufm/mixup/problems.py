r"""The mixup UFM problems: input mixup and manifold mixup (Fisher, Meng, Papyan, ICLR 2024, arXiv 2402.06171).

Two problem classes, both of which run in :func:`ufm.solvers.gradient_descent`, :func:`ufm.solvers.lbfgs_reference`
and :func:`ufm.sweep.sweep` through the :class:`ufm.problem.Family` protocol (``value``, ``init``,
``SCALAR_LEAVES``; sweep axes ``alpha``, ``lam_W``, ``lam_H``, ``lam_b``), and in the mini-batch solver
:func:`ufm.mixup.sgd.mixup_sgd` (``sample_value``: pairs and :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` drawn
with a key carried in the solver state).

**Mixup loss.** For a mixing pair (a sample of class :math:`c`, a sample of class :math:`c'`) and mixing weight
:math:`\lambda`, the loss of a mixed feature :math:`h` is that of mixup (Zhang et al. 2018, arXiv 1710.09412):

.. math:: \ell_\lambda(h; c, c') = \lambda\,\ell(Wh + b, e_c) + (1-\lambda)\,\ell(Wh + b, e_{c'}),

:math:`\ell` the softmax cross-entropy or :math:`\tfrac12\|z - y\|^2` (as in :mod:`ufm.objectives`).

**Input mixup** (:class:`InputMixupProblem`; the paper's UFM analysis, Sec. 3). The network is expressive enough that
each mixed *input* gets its own last-layer feature: the mixed feature is a free variable per (class pair,
:math:`\lambda`). Over all ``K^2`` ordered class pairs (balanced classes: each with probability ``1/K^2``) and the
nodes :math:`\lambda_q` of a quadrature of :math:`\mathrm{Beta}(\alpha,\alpha)` with weights :math:`\omega_q`
(:func:`beta_quadrature`), the objective is

.. math::
   F(W, H, b) = \sum_{c, c'} \frac1{K^2} \sum_q \omega_q \Big[\ell_{\lambda_q}(h_{cc'q}; c, c')
   + \frac{\lambda_H}{2}\|h_{cc'q}\|^2\Big] + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2 ,

a quadrature of :math:`\mathbb E_{(c,c'),\lambda}[\ell_\lambda(h; c, c') + \frac{\lambda_H}{2}\|h\|^2]` (the feature
decay is weighted by the same measure, so each feature's own problem has decay exactly :math:`\mu = \lambda_H` whatever
its weight: :func:`ufm.theory.mixup_optimal_feature` with ``lam_H`` is its closed form). With ``fixed_W`` the classifier
is the simplex ETF ``W0`` (rows of norm ``rho``; the paper's assumption, derivations §9.6) and the
:math:`\lambda_W` term is absent; otherwise ``W`` is learned.

**Manifold mixup** (:class:`ManifoldMixupProblem`; Verma et al. 2019, arXiv 1806.05236, at the last layer). The
features :math:`h_i` of the ``N`` samples are the free variables and the mixed feature is
:math:`\lambda h_i + (1-\lambda) h_j`, so mixing acts on ``H``:

.. math::
   F(W, H, b) = \frac1{N^2}\sum_{i,j}\sum_q \omega_q\, \lambda_q\,\ell(W\tilde h + b, y_i) + (1-\lambda_q)
   \ell(W\tilde h + b, y_j)\Big|_{\tilde h = \lambda_q h_i + (1-\lambda_q) h_j}
   + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2,

the normalisation of :mod:`ufm.objectives`.

**Mapping to the paper.** The paper's text was not available to us (``ufm/theory/derivations.md`` §2.1, §9.6:
"UFM + mixup loss + fixed simplex-ETF classifier" confirmed; the regulariser form, bias and normalisation
unverified). :class:`InputMixupProblem` with ``fixed_W=True, bias=False`` is our reading of it. Had the paper used a constraint on the total feature energy,
:math:`\mathbb E\|h\|^2 \le E_H`, instead of the decay, the stationarity equations would be the same with
:math:`\mu` the (single) Lagrange multiplier, so the optimal features are the same family, indexed by :math:`\mu`;
a per-feature norm constraint would instead give one multiplier per feature. The expectation over
:math:`\lambda` only weights the per-node problems, so with a fixed classifier the optimal mixed features do not
depend on :math:`\alpha` (or on the grid): :math:`\alpha` matters through a learned ``W`` or through shared features
(manifold mixup).

**Limits.** :math:`\lambda \in \{0, 1\}` (``lam_grid=(0, 1)``, weights ``(1/2, 1/2)``; also :math:`\alpha = 0`, where
Beta(α, α) is :math:`\tfrac12(\delta_0 + \delta_1)`) is the plain UFM exactly: the manifold objective equals
:func:`ufm.objectives.objective` with the same weight decays, and the input objective equals it on ``2K^2`` samples
(``2K`` per class) with feature decay :math:`\lambda_H/(2K^2)` (:func:`input_as_plain_problem`).
"""

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from ufm import losses
from ufm.problem import FamilyBase, Params, make_labels, make_problem
from ufm.validate import cast_checked, check_counts, check_int, check_loss_bias_dtype, check_real

__all__ = [
    "GRIDS",
    "InputMixupProblem",
    "ManifoldMixupProblem",
    "MixupFamily",
    "beta_quadrature",
    "class_pairs",
    "input_as_plain_problem",
    "make_input_mixup_problem",
    "make_manifold_mixup_problem",
    "mixed_features",
    "mse_mixup_features",
    "plane_coordinates",
]

#: ``"beta"``: Gauss–Jacobi nodes of Beta(alpha, alpha) computed from the leaf ``alpha`` (sweepable);
#: ``"fixed"``: the explicit leaves ``lam_nodes``, ``lam_weights``.
GRIDS = ("beta", "fixed")


# ----------------------------------------------------------------------------- quadrature


def beta_quadrature(alpha, num_nodes: int) -> tuple[jax.Array, jax.Array]:
  r"""Gauss quadrature of :math:`\mathrm{Beta}(\alpha, \alpha)` on [0, 1]: nodes :math:`\lambda_q`, weights
  :math:`\omega_q` (sum 1) with :math:`\sum_q \omega_q f(\lambda_q) = \mathbb E_{\lambda\sim\mathrm{Beta}(\alpha,
  \alpha)} f(\lambda)` exactly for polynomials of degree :math:`\le 2Q - 1`.

  Derivation. With :math:`x = 2\lambda - 1` the density is :math:`\propto (1-x)^{\gamma}(1+x)^{\gamma}`,
  :math:`\gamma = \alpha - 1`: the Gauss–Jacobi (Gegenbauer) rule. The monic orthogonal polynomials satisfy
  :math:`p_{k+1} = x p_k - \beta_k p_{k-1}` with (Gautschi 2004, Table 1.1, Jacobi with :math:`a = b = \gamma`)

  .. math:: \beta_1 = \frac{1}{2\alpha + 1} = 4\,\mathrm{Var}\,\lambda,\qquad
            \beta_k = \frac{k(k + 2\gamma)}{(2k + 2\gamma + 1)(2k + 2\gamma - 1)}\quad (k \ge 2),

  (the general formula at :math:`k = 1` is 0/0 for :math:`\alpha = 1/2`; the limit is written out). Golub–Welsch:
  the nodes are the eigenvalues of the Jacobi matrix (diagonal 1/2, off-diagonal :math:`\sqrt{\beta_k}/2` in the
  :math:`\lambda` variable) and the weights the squared first components of its unit eigenvectors. Pure ``jnp``
  (``eigh``), differentiable and vmappable in ``alpha``. At :math:`\alpha = 0`, :math:`\beta_2 = 0` and the rule is
  :math:`\tfrac12(\delta_0 + \delta_1)` (the no-mixup limit), the other nodes having weight 0.
  """
  Q = check_int("num_nodes", num_nodes, lo=1)
  alpha = jnp.asarray(alpha)
  dt = alpha.dtype if jnp.issubdtype(alpha.dtype, jnp.floating) else jnp.result_type(float)
  alpha = alpha.astype(dt)
  if Q == 1:
    return jnp.full((1,), 0.5, dt), jnp.ones((1,), dt)
  k = jnp.arange(2, Q, dtype=dt)
  g = alpha - 1
  bk = k * (k + 2 * g) / ((2 * k + 2 * g + 1) * (2 * k + 2 * g - 1))
  b = jnp.concatenate([(1 / (2 * alpha + 1))[None], bk])
  off = jnp.sqrt(jnp.maximum(b, 0.0)) / 2
  J = 0.5 * jnp.eye(Q, dtype=dt) + jnp.diag(off, 1) + jnp.diag(off, -1)
  nodes, V = jnp.linalg.eigh(J)
  return jnp.clip(nodes, 0.0, 1.0), V[0] ** 2


def _grid(problem) -> tuple[jax.Array, jax.Array]:
  if problem.grid == "fixed":
    return problem.lam_nodes, problem.lam_weights
  return beta_quadrature(problem.alpha, problem.num_lam)


def _sample_lam(key, problem, shape) -> jax.Array:
  r""":math:`\lambda` draws: Beta(alpha, alpha) (``grid="beta"``; at alpha = 0 a fair coin on {0, 1}), or the explicit
  nodes with probabilities ``lam_weights`` (``grid="fixed"``)."""
  dt = problem.dtype
  if problem.grid == "fixed":
    idx = jax.random.choice(key, problem.lam_nodes.shape[0], shape, p=problem.lam_weights)
    return problem.lam_nodes[idx]
  kb, kc = jax.random.split(key)
  a = jnp.maximum(problem.alpha, jnp.finfo(dt).tiny)
  lam = jax.random.beta(kb, a, a, shape, dt)
  coin = jax.random.bernoulli(kc, 0.5, shape).astype(dt)
  return jnp.where(problem.alpha > 0, lam, coin)


# ----------------------------------------------------------------------------- losses


def _mixed_loss(Z_KxM: jax.Array, Y1_KxM: jax.Array, Y2_KxM: jax.Array, lam_M: jax.Array, loss: str) -> jax.Array:
  r""":math:`\lambda\ell(z, y_1) + (1-\lambda)\ell(z, y_2)` per column (``(M,)``; :func:`ufm.losses.mixed`)."""
  return losses.mixed(loss, Z_KxM, Y1_KxM, Y2_KxM, lam_M)


def _check_common(loss, bias, lam_W, lam_H, lam_b, alpha, num_lam, lam_grid, lam_weights, rho, dtype):
  dtype = check_loss_bias_dtype(loss, bias, dtype)
  leaves = {k: cast_checked(k, check_real(k, v, lo=0.0), dtype)
            for k, v in (("lam_W", lam_W), ("lam_H", lam_H), ("lam_b", lam_b), ("alpha", alpha))}
  if not bias and np.any(np.asarray(lam_b) != 0):
    raise ValueError(f"lam_b = {lam_b!r} has no effect without a bias; allowed: lam_b = 0 when bias=False")
  rho = float(check_real("rho", rho, lo=0.0, lo_open=True))
  if lam_grid is None and lam_weights is not None:
    raise ValueError("lam_weights given without lam_grid; allowed: both, lam_grid alone (equal weights) or neither")
  if lam_grid is None:
    num_lam = check_int("num_lam", num_lam, lo=1)
    grid, nodes, weights = "beta", None, None
  else:
    nodes = check_real("lam_grid", lam_grid, lo=0.0, hi=1.0)
    if nodes.ndim != 1 or nodes.size == 0:
      raise ValueError(f"lam_grid has shape {nodes.shape}; allowed: a non-empty 1-D sequence in [0, 1]")
    if lam_weights is None:
      weights = np.full(nodes.shape, 1.0 / nodes.size)
    else:
      weights = check_real("lam_weights", lam_weights, lo=0.0)
      if weights.shape != nodes.shape or weights.sum() <= 0:
        raise ValueError(f"lam_weights has shape {weights.shape} and sum {weights.sum():g}; allowed: the shape of "
                         f"lam_grid {nodes.shape}, entries >= 0, sum > 0")
      weights = weights / weights.sum()
    grid, num_lam = "fixed", int(nodes.size)
    nodes, weights = jnp.asarray(nodes, dtype), jnp.asarray(weights, dtype)
  return dtype, leaves, rho, grid, num_lam, nodes, weights


def _etf_classifier(K: int, d: int, rho: float, key, dtype) -> jax.Array:
  from ufm import theory  # a frame constructor only (as in ufm.vicinity); no prediction is read here
  if d < K - 1:
    raise ValueError(f"d = {d} is out of range for a fixed simplex-ETF classifier of K = {K} classes; "
                     f"allowed range: d >= K-1 = {K - 1}")
  return rho * theory.simplex_etf(K, d, key=key, dtype=dtype).T


def class_pairs(K: int) -> np.ndarray:
  """All ``K^2`` ordered class pairs ``(c, c')``, ``c`` major: ``[[0,0], [0,1], ..., [K-1,K-1]]`` (``K^2 x 2``)."""
  K = check_int("K", K, lo=2)
  c, c2 = np.meshgrid(np.arange(K), np.arange(K), indexing="ij")
  return np.stack([c.ravel(), c2.ravel()], 1)


@struct.dataclass(kw_only=True)
class MixupFamily(FamilyBase):
  r"""What the two mixup problems share: the classifier (fixed ``W0`` or learned ``W``), its regulariser
  :math:`\frac{\lambda_W}{2}\|W\|^2` (learned only) :math:`+ \frac{\lambda_b}{2}\|b\|^2` (with a bias), the
  Gaussian initialisation, and the fields below (keyword-only).

  Attributes:
    W0: the fixed classifier ``K x d`` (ETF rows of norm ``rho``; zeros when ``fixed_W`` is false).
    alpha, lam_W, lam_H, lam_b: scalar leaves (sweepable).
    lam_nodes, lam_weights: the explicit grid (``grid="fixed"``), else ``None``.
    d, num_lam, loss, bias, fixed_W, grid: static.
  """
  W0: Any
  alpha: Any
  lam_W: Any
  lam_H: Any
  lam_b: Any
  lam_nodes: Any
  lam_weights: Any
  d: int = struct.field(pytree_node=False)
  num_lam: int = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False, default="ce")
  bias: bool = struct.field(pytree_node=False, default=False)
  fixed_W: bool = struct.field(pytree_node=False, default=False)
  grid: str = struct.field(pytree_node=False, default="beta")

  def _classifier(self, params: Params) -> jax.Array:
    return self.W0 if self.fixed_W else params.W

  def _global_reg(self, params: Params) -> jax.Array:
    r = jnp.zeros((), self.dtype)
    if not self.fixed_W:
      r = r + 0.5 * self.lam_W * jnp.sum(params.W**2)
    if self.bias:
      r = r + 0.5 * self.lam_b * jnp.sum(params.b**2)
    return r

  def init(self, key: jax.Array, init_scale) -> Params:
    r""":math:`H_{ji} \sim \mathcal N(0, s^2)`; ``W = W0`` (fixed) or :math:`\mathcal N(0, s^2)`; ``b = 0``."""
    kW, kH = jax.random.split(key)
    s = jnp.asarray(init_scale, self.dtype)
    H = s * jax.random.normal(kH, (self.d, self.N), self.dtype)
    W = self.W0 if self.fixed_W else s * jax.random.normal(kW, (self.K, self.d), self.dtype)
    return Params(W=W, H=H, b=jnp.zeros((self.K,), self.dtype))


# ----------------------------------------------------------------------------- input mixup


@struct.dataclass(kw_only=True)
class InputMixupProblem(MixupFamily):
  r"""The input-mixup UFM (module docstring): one free feature per (ordered class pair, :math:`\lambda` node).

  ``H`` is ``d x (K^2 Q)`` with column ``p Q + q`` the feature of pair ``p`` (:func:`class_pairs` order) at node
  ``q`` (:func:`mixed_features` reshapes it).

  Attributes (besides :class:`MixupFamily`'s):
    Y1, Y2: one-hot labels ``K x K^2`` of the first and second class of each pair.
    num_classes: static.
  """
  Y1: Any
  Y2: Any
  num_classes: int = struct.field(pytree_node=False)
  fixed_W: bool = struct.field(pytree_node=False, default=True)

  FAMILY: ClassVar[str] = "input_mixup"
  SCALAR_LEAVES = ("alpha", "lam_W", "lam_H", "lam_b")

  @property
  def K(self) -> int:
    return self.num_classes

  @property
  def Y(self):
    return self.Y1

  @property
  def dtype(self):
    return self.Y1.dtype

  @property
  def num_pairs(self) -> int:
    return self.num_classes**2

  @property
  def N(self) -> int:
    """Number of free features, ``K^2 Q``."""
    return self.num_pairs * self.num_lam

  def nodes(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    r"""Per feature column: ``(Y1, Y2, lam, weight)`` with weight :math:`\omega_q / K^2` (shapes ``K x N``,
    ``(N,)``)."""
    lam, w = _grid(self)
    Q = self.num_lam
    Y1 = jnp.repeat(self.Y1, Q, axis=1)
    Y2 = jnp.repeat(self.Y2, Q, axis=1)
    return Y1, Y2, jnp.tile(lam, self.num_pairs), jnp.tile(w, self.num_pairs) / self.num_pairs


  def _logits(self, params: Params, H: jax.Array) -> jax.Array:
    Z = self._classifier(params) @ H
    return Z + params.b[:, None] if self.bias else Z


  def value(self, params: Params) -> jax.Array:
    r"""The quadrature objective :math:`F(W, H, b)` of the module docstring."""
    Y1, Y2, lam, w = self.nodes()
    per = _mixed_loss(self._logits(params, params.H), Y1, Y2, lam, self.loss) + 0.5 * self.lam_H * jnp.sum(
        params.H**2, 0)
    return jnp.sum(w * per) + self._global_reg(params)

  def sample_value(self, key: jax.Array, params: Params, batch_size: int) -> jax.Array:
    r"""An unbiased mini-batch estimate of :meth:`value`: ``batch_size`` feature columns drawn i.i.d. with
    probabilities :math:`\omega_q/K^2` (a class pair uniformly, a node by its weight), averaged, plus the
    deterministic :math:`\lambda_W, \lambda_b` terms. The free features live on the nodes, so :math:`\lambda` is drawn
    from the quadrature measure (its discretisation of Beta(alpha, alpha)), not from the Beta itself."""
    kp, kq = jax.random.split(key)
    _, w = _grid(self)
    pair = jax.random.randint(kp, (batch_size,), 0, self.num_pairs)
    q = jax.random.choice(kq, self.num_lam, (batch_size,), p=w)
    lam_all, _ = _grid(self)
    cols = pair * self.num_lam + q
    H = params.H[:, cols]
    per = _mixed_loss(self._logits(params, H), self.Y1[:, pair], self.Y2[:, pair], lam_all[q], self.loss)
    per = per + 0.5 * self.lam_H * jnp.sum(H**2, 0)
    return jnp.mean(per) + self._global_reg(params)



def make_input_mixup_problem(K, *, d, lam_H, lam_W=0.0, lam_b=0.0, alpha=1.0, num_lam=8, lam_grid=None,
                             lam_weights=None, loss="ce", fixed_W=True, rho=1.0, bias=False, key=None,
                             dtype=None) -> InputMixupProblem:
  r"""Builds and validates an :class:`InputMixupProblem` (errors name the parameter and its allowed range).

  Args:
    K: number of classes (``>= 2``). d: feature dimension (``>= K-1`` when ``fixed_W``).
    lam_H, lam_W, lam_b: weight decays ``>= 0`` (``lam_W`` unused when ``fixed_W``; ``lam_b`` needs ``bias``).
    alpha: Beta(alpha, alpha) parameter, ``>= 0`` (0: the no-mixup limit). num_lam: quadrature nodes ``Q >= 1``.
    lam_grid, lam_weights: an explicit grid in [0, 1] instead (weights >= 0, normalised; equal when omitted).
    loss: ``"ce"`` or ``"mse"``. fixed_W: classifier fixed to a simplex ETF with rows of norm ``rho > 0``
      (embedded by ``key``: a Haar-random embedding, or the first ``K-1`` axes when ``None``).
    bias: learn a bias ``b``. dtype: floating dtype.
  """
  K = check_int("K", K, lo=2)
  d = check_int("d", d, lo=1)
  if not isinstance(fixed_W, (bool, np.bool_)):
    raise ValueError(f"fixed_W = {fixed_W!r} is not a boolean; allowed values: True, False")
  dtype, leaves, rho, grid, num_lam, nodes, weights = _check_common(loss, bias, lam_W, lam_H, lam_b, alpha, num_lam,
                                                                   lam_grid, lam_weights, rho, dtype)
  W0 = _etf_classifier(K, d, rho, key, dtype) if fixed_W else jnp.zeros((K, d), dtype)
  pairs = class_pairs(K)
  eye = np.eye(K)
  return InputMixupProblem(Y1=jnp.asarray(eye[:, pairs[:, 0]], dtype), Y2=jnp.asarray(eye[:, pairs[:, 1]], dtype),
                           W0=W0, lam_nodes=nodes, lam_weights=weights, num_classes=K, d=d, num_lam=num_lam,
                           loss=loss, bias=bool(bias), fixed_W=bool(fixed_W), grid=grid, **leaves)


def input_as_plain_problem(problem: InputMixupProblem):
  r"""For a grid with nodes in {0, 1} only: the plain UFM :class:`~ufm.problem.Problem` with the same objective, and
  the column permutation ``perm`` with ``value(params) == objective(params._replace(H=params.H[:, perm]), plain)``.

  The column of pair ``(c, c')`` at :math:`\lambda = 1` is a sample of class ``c``, at :math:`\lambda = 0` of class
  ``c'``. This needs equal node weights (1/2, 1/2), so that every column has weight :math:`1/N` with
  :math:`N = 2K^2` and ``2K`` samples per class; the feature decay is :math:`\lambda_H/N`. Raises ``ValueError``
  otherwise.
  """
  lam = np.asarray(_grid(problem)[0])
  w = np.asarray(_grid(problem)[1])
  if problem.grid != "fixed" or sorted(lam.tolist()) != [0.0, 1.0] or not np.all(w == 0.5):
    raise ValueError(f"lam_grid = {lam.tolist()}, lam_weights = {w.tolist()}: allowed: lam_grid (0, 1) or (1, 0) "
                     "with equal weights")
  if problem.fixed_W:
    raise ValueError("fixed_W = True: ufm.objectives learns W; allowed: fixed_W = False")
  K, Q = problem.K, 2
  pairs = class_pairs(K)
  label = np.empty(K * K * Q, int)
  for p, (c, c2) in enumerate(pairs):
    for q in range(Q):
      label[p * Q + q] = c if lam[q] == 1.0 else c2
  perm = np.argsort(label, kind="stable")
  N = label.size
  plain = make_problem((N // K,) * K, d=problem.d, lam_W=np.asarray(problem.lam_W),
                       lam_H=np.asarray(problem.lam_H) / N, lam_b=np.asarray(problem.lam_b), loss=problem.loss,
                       bias=problem.bias, dtype=problem.dtype)
  return plain, perm


# ----------------------------------------------------------------------------- manifold mixup


@struct.dataclass(kw_only=True)
class ManifoldMixupProblem(MixupFamily):
  r"""The manifold-mixup UFM (module docstring): free sample features ``H`` (``d x N``), mixed as
  :math:`\lambda h_i + (1-\lambda) h_j` over all ``N^2`` ordered sample pairs.

  Attributes (besides :class:`MixupFamily`'s):
    Y: one-hot labels ``K x N`` (columns grouped by class).
    counts: static.
  """
  Y: Any
  counts: tuple[int, ...] = struct.field(pytree_node=False)

  FAMILY: ClassVar[str] = "manifold_mixup"
  SCALAR_LEAVES = ("alpha", "lam_W", "lam_H", "lam_b")


  def _reg(self, params: Params) -> jax.Array:
    return 0.5 * self.lam_H * jnp.sum(params.H**2) + self._global_reg(params)

  def _pair_loss(self, params: Params, i, j, lam) -> jax.Array:
    """Mixed losses of sample pairs ``(i, j)`` at weights ``lam`` (1-D arrays of one length)."""
    Z = self._classifier(params) @ params.H  # the logits are linear in h: mix them instead of the features
    Zm = lam[None, :] * Z[:, i] + (1 - lam[None, :]) * Z[:, j]
    if self.bias:
      Zm = Zm + params.b[:, None]
    return _mixed_loss(Zm, self.Y[:, i], self.Y[:, j], lam, self.loss)

  def value(self, params: Params) -> jax.Array:
    r"""The quadrature objective :math:`F(W, H, b)` of the module docstring (all ``N^2`` pairs, ``Q`` nodes)."""
    lam, w = _grid(self)
    N, Q = self.N, self.num_lam
    i = jnp.repeat(jnp.arange(N), N * Q)
    j = jnp.tile(jnp.repeat(jnp.arange(N), Q), N)
    per = self._pair_loss(params, i, j, jnp.tile(lam, N * N))
    return jnp.sum(per * jnp.tile(w, N * N)) / N**2 + self._reg(params)

  def sample_value(self, key: jax.Array, params: Params, batch_size: int) -> jax.Array:
    r"""An unbiased mini-batch estimate of the *exact* expectation (:meth:`value` is its quadrature): ``batch_size``
    sample pairs drawn uniformly with :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)` (or from the explicit grid),
    plus the deterministic regulariser."""
    ki, kj, kl = jax.random.split(key, 3)
    i = jax.random.randint(ki, (batch_size,), 0, self.N)
    j = jax.random.randint(kj, (batch_size,), 0, self.N)
    lam = _sample_lam(kl, self, (batch_size,))
    return jnp.mean(self._pair_loss(params, i, j, lam)) + self._reg(params)



def make_manifold_mixup_problem(counts, *, d, lam_W, lam_H, lam_b=0.0, alpha=1.0, num_lam=8, lam_grid=None,
                                lam_weights=None, loss="ce", fixed_W=False, rho=1.0, bias=False, key=None,
                                dtype=None) -> ManifoldMixupProblem:
  """Builds and validates a :class:`ManifoldMixupProblem`; arguments as :func:`make_input_mixup_problem`, with
  ``counts`` the per-class sample counts (``K >= 2``)."""
  counts = check_counts(counts)
  d = check_int("d", d, lo=1)
  if not isinstance(fixed_W, (bool, np.bool_)):
    raise ValueError(f"fixed_W = {fixed_W!r} is not a boolean; allowed values: True, False")
  dtype, leaves, rho, grid, num_lam, nodes, weights = _check_common(loss, bias, lam_W, lam_H, lam_b, alpha, num_lam,
                                                                   lam_grid, lam_weights, rho, dtype)
  K = len(counts)
  W0 = _etf_classifier(K, d, rho, key, dtype) if fixed_W else jnp.zeros((K, d), dtype)
  return ManifoldMixupProblem(Y=make_labels(counts, dtype), W0=W0, lam_nodes=nodes, lam_weights=weights,
                              counts=counts, d=d, num_lam=num_lam, loss=loss, bias=bool(bias), fixed_W=bool(fixed_W),
                              grid=grid, **leaves)


# ----------------------------------------------------------------------------- measurements


def mixed_features(params: Params, problem: InputMixupProblem) -> tuple[jax.Array, jax.Array]:
  r"""The input-mixup features as ``d x K x K x Q`` (``[:, c, c', q]``: pair ``(c, c')`` at node ``q``) and the nodes
  :math:`\lambda_q` (``(Q,)``)."""
  K, Q = problem.K, problem.num_lam
  return params.H.reshape(problem.d, K, K, Q), _grid(problem)[0]


def plane_coordinates(W: jax.Array, c, c2, H: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  r"""Orthonormal coordinates of features ``H`` (``d x M``) on the plane of the classifier rows :math:`w_c, w_{c'}`:
  ``x`` along :math:`(w_c - w_{c'})/\|\cdot\|`, ``y`` along :math:`(w_c + w_{c'})/\|\cdot\|` (the convention of
  :class:`ufm.theory.MixupFeature`; for :math:`w_c + w_{c'} = 0` ``y`` is 0), and the relative out-of-plane
  component :math:`\|h - P h\| / \|h\|` per column (``P`` the orthogonal projection onto
  :math:`\mathrm{span}\{w_c, w_{c'}\}`, by least squares)."""
  dm, sm = W[c] - W[c2], W[c] + W[c2]
  x = dm @ H / jnp.linalg.norm(dm)
  ns = jnp.linalg.norm(sm)
  y = jnp.where(ns > 1e-12 * jnp.linalg.norm(dm), sm @ H / jnp.where(ns > 0, ns, 1.0), 0.0)
  B = jnp.stack([W[c], W[c2]], 1)  # d x 2
  coef = jnp.linalg.lstsq(B, H)[0]
  resid = jnp.linalg.norm(H - B @ coef, axis=0) / jnp.maximum(jnp.linalg.norm(H, axis=0), jnp.finfo(H.dtype).tiny)
  return x, y, resid


def mse_mixup_features(W: jax.Array, c, c2, lam: jax.Array, lam_H) -> jax.Array:
  r"""The exact MSE mixed features for a fixed classifier ``W``: :math:`h^\star(\lambda) = (W^\top W + \mu I)^{-1}
  W^\top(\lambda e_c + (1-\lambda) e_{c'})` (``d x len(lam)``), by one dense solve (the minimiser of
  :math:`\tfrac12\|Wh - y_\lambda\|^2 + \tfrac\mu2\|h\|^2`, to which the mixup MSE reduces up to a constant)."""
  K, d = W.shape
  E = jnp.eye(K, dtype=W.dtype)
  Y = lam[None, :] * E[:, c][:, None] + (1 - lam[None, :]) * E[:, c2][:, None]
  return jnp.linalg.solve(W.T @ W + lam_H * jnp.eye(d, dtype=W.dtype), W.T @ Y)


