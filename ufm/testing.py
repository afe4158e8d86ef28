r"""Testing tools for UFM claims: hypothesis strategies for problems, the tolerance table, assertion helpers.

* **Strategies.** :func:`problem_specs` draws a :class:`ProblemSpec` (a JSON-able description of
  one problem plus the seed of its reference solve); :func:`problems` draws the
  :class:`~ufm.problem.Problem` itself; :func:`class_counts` and :func:`weight_decays` are
  the parts. Shapes (``K``, class counts, ``d``) are drawn from **small sets**, because every
  new shape compiles the solver once more (a property test may not spend its time compiling: measured
  0.85 s/example over a wide integer range against 0.16 s over a sampled set); weight decays and seeds are drawn freely.
  Every choice shrinks towards the first element of its set, so a failing example shrinks
  to the smallest shape that still fails.
* **Tolerances.** :data:`TOL` is the project's one tolerance table, each entry with its
  reason; :func:`rel_error` and :func:`tolerance` turn an entry into a residual and its bound,
  :func:`assert_close` and :func:`rel_frobenius` are the assertion helpers of the test suite.

Weight decays are placed by the *collapse index*

.. math:: \tau = N\sqrt{\lambda_W\lambda_H / n_{\min}},

which is :func:`ufm.theory.collapse_threshold` :math:`K\sqrt{n\lambda_W\lambda_H}` for balanced
counts (Zhu et al. 2021, arXiv 2105.02375; ufm/theory/derivations.md §5.1, §1.2) and, for the bias-free MSE-UFM
with any counts, is ``< 1`` iff every class keeps a non-zero classifier
(:math:`\|w_k\|^2 = \sqrt{n_k\lambda_H/\lambda_W} - N\lambda_H > 0`; Dang et al. 2023,
arXiv 2301.00437 at depth 1, derivations §1.3).
"""

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from hypothesis import strategies as st

from ufm.problem import LOSSES, ClassCounts, Problem, balanced_counts, long_tailed_counts, make_problem, step_counts
from ufm.validate import check_seed

__all__ = [
    "COUNT_KINDS",
    "LAZY_FAMILY_MODULES",
    "MIXUP_GRID",
    "SPEC_TYPES",
    "DeepSpec",
    "RegressionSpec",
    "ReLUSpec",
    "MixupSpec",
    "SphereSpec",
    "DEFAULT_D_OFFSETS",
    "DEFAULT_K",
    "DEFAULT_N",
    "REGIMES",
    "TOL",
    "ProblemSpec",
    "Tolerance",
    "assert_close",
    "class_counts",
    "collapse_index",
    "log_uniform",
    "loss_family_specs",
    "deep_specs",
    "is_spec",
    "mixup_specs",
    "register_spec_type",
    "regression_specs",
    "relu_spec_class",
    "relu_specs",
    "spec_from_json",
    "sphere_specs",
    "problem_specs",
    "problems",
    "rel_error",
    "rel_frobenius",
    "tol",
    "tolerance",
    "weight_decays",
]

# ----------------------------------------------------------------------------- tolerance table

#: name -> (rtol, atol, reason). Everything is float64 unless the name says otherwise.
TOL = {
    # Two closed forms, or a closed form against an exact construction: only rounding separates them.
    "exact": (1e-10, 1e-12, "identities in float64: rounding of O(K^2) flops on O(1) numbers"),
    # L-BFGS reference solve (gtol 1e-10) against a closed form. Measured: objective 1e-16, norms 1e-9..1e-11,
    # Grams 1e-9 relative. The distance to the minimiser set is ~ |grad| / (smallest non-zero Hessian
    # eigenvalue), so 1e-8 holds with margin when that eigenvalue is >= 1e-2 (checked by the grid chosen).
    "reference": (1e-8, 1e-9, "float64 L-BFGS to |grad| <= 1e-10 against a closed form: 1e-8"),
    # An NC metric at an L-BFGS solution against its closed-form target: metrics are smooth (Lipschitz with
    # constants O(10) on these problems) in the parameters, which are known to 1e-8; atol for targets 0.
    "reference_metric": (1e-6, 1e-7, "metric at a 1e-8-accurate minimiser, Lipschitz constant O(10)"),
    # float32: unit roundoff 6e-8 times the condition of the small solves.
    "float32": (1e-4, 1e-5, "float32 rounding (eps 1.2e-7) amplified by O(10^2)"),
    # The argmin (norms, Grams) in float32: near a minimum f changes only quadratically, so rounding of f at
    # eps_32 = 1.2e-7 leaves the parameters determined to ~sqrt(eps_32) = 3.5e-4 times a condition factor.
    "float32_argmin": (2e-3, 1e-5, "argmin in float32: sqrt(eps_32) = 3.5e-4 x condition (measured 4e-4)"),
    # Our metrics against rhubarbwu/neural-collapse run in float64 on the same arrays.
    "peer": (1e-10, 1e-12, "the same formulas in float64 in two libraries"),
    # A preset of ufm.conventions against the peer code base's own output (tests/golden): the same formulas in
    # float64, summed in another order (SVD of the d x K centred means vs pinv of d x d Sigma_B). Relative only.
    "golden": (1e-12, 0.0, "a preset against its peer's own float64 numbers: rounding only"),
    # The same, for a coefficient of variation of near-equal values (UNC3 cosines at a near collapse: mean 1,
    # std 5e-7): each cosine's rounding (1e-16) is amplified by mean/std = 2e6, so 4e-10. Measured 2e-11.
    "golden_cov": (1e-9, 0.0, "CoV of near-equal values: eps x mean/std = 2e-16 x 2e6 (measured 2e-11)"),
    # Singular values of the implicit Jacobian F = (beta/N)[Hess^-1]_HH at an exact stationary point (the vicinity
    # base point is exact to 1e-16): one dense solve with a Hessian of condition <= 1e4 here. Measured 9e-16.
    "implicit_map": (1e-12, 1e-12, "dense float64 solve, condition <= 1e4: 1e4 x eps = 2e-12 (measured 9e-16)"),
    # Identities that hold for every W (e.g. Sigma_W(H*(W)) = A Sigma_W(H0) A): products and one d x d solve.
    "identity_solve": (1e-12, 1e-14, "float64 d x d solves and products, condition <= 1e2 (measured 5e-16)"),
    # Mixup UFM with a fixed simplex-ETF classifier. The reduced 2-D problem is solved by damped Newton to
    # |grad G| ~ 1e-16; its Hessian has smallest eigenvalue >= (K-2)/(K kappa), so (u, v) are accurate to
    # 1e-16 kappa <= 1e-13 for kappa <= 1e3. The identities (stationarity, a(lam) = b(1-lam), the lam-free curve)
    # are then met to that level (measured 3e-14).
    "mixup_newton": (1e-11, 1e-12, "2-D damped Newton to |grad| 1e-16, condition <= 1e3 (measured 3e-14)"),
    # L-BFGS on the weighted input-mixup objective at gtol = 1e-12: each feature's own gradient is at most
    # gtol / (its weight, >= 1/(K^2 Q) = 7e-3 here) = 1.4e-10, and its problem is mu-strongly convex (mu = lam_H =
    # 0.1), so each feature is within 1.4e-9 of its optimum (measured 2e-10 relative).
    "mixup_reference": (1e-8, 1e-10, "L-BFGS gtol 1e-12 / feature weight 7e-3 / mu 0.1 = 1.4e-9 (measured 2e-10)"),
    # The MSE mixed features from one d x d solve (W^T W + mu I, condition (beta + mu)/mu <= 50): linear in lam up
    # to rounding, 50 x 1e-16 (measured 2e-16); derivations §2.3 asks for "about 1e-12".
    "mixup_linear": (1e-12, 1e-14, "one float64 d x d solve of condition <= 50 (measured 2e-16)"),
    # Statistics over S vmapped seeds: rtol is the number of standard errors allowed. A Gaussian mean deviates by
    # more than 5 sigma with probability 6e-7, so a correct estimator fails < 1e-5 of the time over the checks.
    "mixup_sampling_z": (5.0, 0.0, "rtol = standard errors allowed; P(|Z| > 5) = 6e-7 per check"),
    # Deep linear UFM: float64 L-BFGS to |grad| <= 1e-11 against ufm.theory.deep_mse_minimiser. The
    # product of M + 1 factors squares nothing but the Hessian's smallest non-zero eigenvalue shrinks with the
    # depth; measured 1.5e-9 (Grams, relative to the largest entry) for M <= 3, widths 6, lam ~ 1e-3.
    "deep_reference": (1e-7, 1e-9, "float64 L-BFGS (|grad| <= 1e-11) on the deep UFM; measured <= 2e-9 at M <= 4"),
    # A scalar minimised on a uniform grid of spacing h (brute force) against the bisection root: |z - z*| <= h.
    "brute_force_grid": (2e-5, 1e-12, "grid of 10^5 points on [0, sigma]: spacing 1e-5 sigma, twice for margin"),
    # K > d + 1: the spherical UFM, constructed configurations and the tiled metrics.
    # A metric of a constructed configuration (polygon, orthoplex, ETF) against its closed form: O(K^2) flops on
    # O(1) numbers in float64, one log/sqrt per pair. Measured <= 4e-16.
    "closed_form_metric": (1e-12, 1e-12, "constructed configurations in float64: rounding only (measured 4e-16)"),
    # Tiled vs untiled metrics: the same formulas summed in another order (row blocks), one normalisation computed
    # from a d x d product instead of the K x K Gram. Measured <= 3e-16 absolute on values O(1).
    "tiled": (1e-12, 1e-13, "same sums in another order, float64 (measured 3e-16)"),
    # The sorted angular gaps of the learned d = 2 classifiers vs 2 pi / K after Riemannian gradient descent:
    # the bound of ufm/theory/derivations.md §5.7 (a geometric statement, not a rounding bound).
    "polygon_gaps": (0.0, 1e-3, "derivations §5.7: sorted angular gaps 2 pi / K within 1e-3"),
    # A first-order Riemannian solve (cosine-decayed Adam, GD with momentum) of a smooth problem against the
    # closed form of its minimiser: the value error is quadratic in the distance to the minimiser set, so a
    # 1e-5-accurate iterate gives 1e-10 in the value. Measured <= 1e-15 (energies), 1e-9 (Grams of the CE-UFM).
    "riemannian": (1e-8, 1e-8, "first-order Riemannian solve, value error quadratic in the iterate error"),
    # Network training: two float32 programs that train the same network (vmapped over seeds vs one seed) sum in
    # different orders: ~eps_32 per step, amplified by the non-convex dynamics over ~300 full-batch steps.
    # Measured at XLA -O0: 1.7e-3 relative on the loss at the last epoch (bit for bit at the default optimisation
    # level).
    "float32_training": (1e-2, 1e-4, "float32 rounding order differs between programs, amplified over ~300 training "
                                     "steps (measured 1.7e-3)"),
    # A planned sweep (batches, calls, devices) against the one-program sweep: every configuration runs the same
    # float64 program; only the batch width of XLA's kernels differs, which may reorder sums (measured: bitwise).
    "plan": (1e-12, 1e-12, "the same float64 solve at another vmap width (planned sweeps; measured bitwise)"),
    # A scale-invariant metric of H against the same metric of s H for s over the float range: features are
    # standardised (centred, divided by their largest entry) first, so only the rounding of that division and of the
    # O(dN) sums differs. Measured <= 9e-16 (float64), 1.1e-6 (float32).
    "scale_invariance": (1e-12, 0.0, "standardised features: rounding of one division and O(dN) sums (9e-16)"),
    "scale_invariance_float32": (1e-5, 0.0, "the same in float32, eps 1.2e-7 x O(dN) sums (measured 1.1e-6)"),
    # NC1 of near-collapsed float64 features (within-class spread 1e-4) against the same features plus a common
    # offset 1e10: the input itself is rounded to ulp(1e10)/2 = 9.5e-7 per entry, up to 1e-2 of the spread, and NC1
    # is quadratic in the spread, so up to 2e-2 relative is the input's rounding, not the metric's (measured 2.6e-3).
    "offset_rounding": (2e-2, 0.0, "input rounded at ulp(1e10)/2 = 1e-2 of a 1e-4 spread; NC1 quadratic (2.6e-3)"),
}


class Tolerance(NamedTuple):
  """The bound a claim's residual must stay below, and why that bound (a claim declares one per residual)."""
  bound: float
  reason: str


def tol(name: str) -> dict:
  """``dict(rtol=, atol=)`` of the :data:`TOL` entry ``name`` (for ``np.testing.assert_allclose``)."""
  rtol, atol, _ = TOL[name]
  return dict(rtol=rtol, atol=atol)


def tolerance(name: str) -> Tolerance:
  """The bound on a :func:`rel_error` residual for the :data:`TOL` entry ``name``: its ``rtol``, with its reason."""
  rtol, _, reason = TOL[name]
  return Tolerance(rtol, f"TOL[{name!r}]: {reason}")


def assert_close(actual, expected, name, msg=""):
  """``np.testing.assert_allclose`` with the :data:`TOL` entry ``name``; the failure names the entry and its reason."""
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                             err_msg=f"[{name}: {TOL[name][2]}] {msg}", **tol(name))


def rel_frobenius(actual, expected):
  """||A - B||_F / max(||B||_F, 1e-300): the neural-tangents ``assert_close_matrices`` measure."""
  a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def rel_error(actual, expected, tol_name: str = "reference") -> float:
  r"""Relative Frobenius error with an absolute floor, for the :data:`TOL` entry ``tol_name``:

  .. math:: r = \frac{\|A - E\|_F}{\max(\|E\|_F,\ \mathrm{atol}/\mathrm{rtol})},

  so ``r <= rtol`` (the bound :func:`tolerance` returns) iff
  :math:`\|A - E\|_F \le \max(\mathrm{rtol}\,\|E\|_F, \mathrm{atol})`: relative for quantities of
  order one, absolute for targets that are 0 (a collapsed norm, an NC metric of a perfect
  collapse). ``NaN`` or ``inf`` anywhere gives ``inf``, which no bound accepts.
  """
  rtol, atol, _ = TOL[tol_name]
  a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  if a.shape != e.shape:
    raise ValueError(f"rel_error: actual has shape {a.shape}, expected {e.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
    return math.inf
  return float(np.linalg.norm(a - e) / max(float(np.linalg.norm(e)), atol / rtol))


# ----------------------------------------------------------------------------- problem descriptions


class ProblemSpec(NamedTuple):
  """A JSON-able description of one UFM problem and of the seed of its solve.

  It is what a claim run draws, stores as a counterexample and replays: the arguments of
  :func:`ufm.problem.make_problem` plus the initialisation (``seed`` for
  ``jax.random.key``, ``init_scale``) of the reference solve.
  """
  counts: tuple[int, ...]
  d: int
  lam_W: float
  lam_H: float
  lam_b: float = 0.0
  loss: str = "ce"
  bias: bool = False
  seed: int = 0
  init_scale: float = 0.1

  FAMILY = "plain"
  K = ClassCounts.K  # a NamedTuple takes no mixin: the properties themselves
  N = ClassCounts.N

  @property
  def shape_key(self) -> tuple:
    """The static part (one compilation each): ``(counts, d, loss, bias)``."""
    return (tuple(self.counts), self.d, self.loss, self.bias)

  def problem(self, dtype=None) -> Problem:
    """The validated :class:`~ufm.problem.Problem` (``ValueError`` naming the bad field otherwise)."""
    return make_problem(tuple(self.counts), d=self.d, lam_W=self.lam_W, lam_H=self.lam_H, lam_b=self.lam_b,
                        loss=self.loss, bias=self.bias, dtype=dtype)

  def to_json(self) -> dict:
    """Plain JSON types (floats round-trip exactly through ``repr``)."""
    return {"counts": [int(c) for c in self.counts], "d": int(self.d), "lam_W": float(self.lam_W),
            "lam_H": float(self.lam_H), "lam_b": float(self.lam_b), "loss": str(self.loss), "bias": bool(self.bias),
            "seed": int(self.seed), "init_scale": float(self.init_scale)}

  @classmethod
  def from_json(cls, obj: Any) -> "ProblemSpec":
    """Parses :meth:`to_json`'s output; ``ValueError`` naming the field for anything else (before any solve)."""
    if not isinstance(obj, dict):
      raise ValueError(f"a problem description must be a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - set(cls._fields)
    missing = {"counts", "d", "lam_W", "lam_H"} - set(obj)
    if unknown or missing:
      raise ValueError(f"problem description {obj!r}: unknown fields {sorted(unknown)}, missing {sorted(missing)}; "
                       f"allowed fields: {', '.join(cls._fields)}")
    spec = cls(**{**obj, "counts": tuple(obj["counts"]) if isinstance(obj["counts"], list) else obj["counts"]})
    spec.problem()  # validates counts, d, weight decays, loss, bias
    check_seed("seed", spec.seed)
    if not (isinstance(spec.init_scale, (int, float)) and spec.init_scale > 0 and math.isfinite(spec.init_scale)):
      raise ValueError(f"init_scale = {spec.init_scale!r} is out of range; allowed range: finite and > 0")
    return spec

  def __str__(self) -> str:
    lam_b = f", lam_b={self.lam_b:.6g}" if self.bias else ""
    return (f"{self.loss}, {'bias' if self.bias else 'no bias'}, counts={tuple(self.counts)}, d={self.d}, "
            f"lam_W={self.lam_W:.6g}, lam_H={self.lam_H:.6g}{lam_b}, seed={self.seed}, init_scale={self.init_scale:g}")


# ----------------------------------------------------------------------------- strategies

#: Default shape sets (small on purpose: every new shape compiles once).
DEFAULT_K = (2, 3, 4, 5)
DEFAULT_N = (1, 2, 3, 5)
DEFAULT_D_OFFSETS = (-1, 0, 1)  # d = K - 1 (the smallest d with a simplex ETF), K, K + 1
COUNT_KINDS = ("balanced", "step", "long_tailed", "explicit")
REGIMES = ("below", "above", "straddle", "free")


def _as_tuple(name, value, allowed=None) -> tuple:
  t = tuple(value) if isinstance(value, (list, tuple)) else (value,)
  if not t:
    raise ValueError(f"{name} is empty; give at least one value")
  if allowed is not None:
    bad = [v for v in t if v not in allowed]
    if bad:
      raise ValueError(f"{name} = {bad[0]!r} is not supported; allowed values: {', '.join(map(str, allowed))}")
  return t


def log_uniform(lo: float, hi: float) -> st.SearchStrategy:
  """Strategy of :math:`\\exp U[\\log lo, \\log hi]` (``lo == hi`` gives the constant)."""
  if not (0 < lo <= hi and math.isfinite(hi)):
    raise ValueError(f"log-uniform range ({lo!r}, {hi!r}) is out of range; allowed: 0 < lo <= hi < inf")
  if lo == hi:
    return st.just(float(lo))
  return st.floats(math.log(lo), math.log(hi)).map(lambda x: min(max(math.exp(x), lo), hi))


def collapse_index(counts, lam_W, lam_H) -> float:
  r""":math:`\tau = N\sqrt{\lambda_W\lambda_H/n_{\min}}` (see the module docstring): for balanced counts,
  :func:`ufm.theory.collapse_threshold`; for bias-free MSE with any counts, ``< 1`` iff no class collapses to 0."""
  counts = tuple(counts)
  return sum(counts) * math.sqrt(lam_W * lam_H / min(counts))


def class_counts(*, K: Sequence[int] = DEFAULT_K, n: Sequence[int] = DEFAULT_N,
                 kind: str | Sequence[str] = "balanced", explicit: Sequence[Sequence[int]] = ()) -> st.SearchStrategy:
  r"""Class counts ``(n_1, ..., n_K)`` from small sets.

  Args:
    K: number of classes, drawn from this set.
    n: per-class sizes, drawn from this set (balanced ``n``; the ``n_major``/``n_minor`` of a step
      profile and the ``n_max`` of a long-tailed one are taken from it too).
    kind: ``"balanced"`` (:func:`ufm.problem.balanced_counts`), ``"step"`` (:func:`ufm.problem.step_counts`,
      Fang et al. 2021, arXiv 2101.12699: ``K_major`` classes of ``n_major`` and the rest of a smaller
      ``n_minor``), ``"long_tailed"`` (:func:`ufm.problem.long_tailed_counts`, Cao et al. 2019:
      :math:`n_k = \lfloor n_{\max}\rho^{-k/(K-1)}\rfloor`, :math:`\rho \in \{2, n_{\max}\}`),
      ``"explicit"`` (one of ``explicit``), or a sequence of these (drawn in that order).
    explicit: count tuples for ``kind="explicit"``.
  """
  kinds = _as_tuple("kind", kind, COUNT_KINDS)
  Ks = _as_tuple("K", K)
  ns = tuple(sorted(_as_tuple("n", n)))
  for v in Ks:
    balanced_counts(v, 1)  # validates K
  for v in ns:
    balanced_counts(2, v)  # validates n
  explicit = tuple(tuple(int(c) for c in e) for e in explicit)
  if "explicit" in kinds and not explicit:
    raise ValueError("kind 'explicit' needs explicit=[counts, ...]")
  big = [v for v in ns if v >= 2]
  if ("step" in kinds or "long_tailed" in kinds) and not big:
    raise ValueError(f"n = {ns}: step and long-tailed counts need some n >= 2")
  # Every candidate is built here, once, with the ufm.problem builders, so that drawing is a plain choice from
  # a list (ordered by K, then N: a failure shrinks towards the fewest classes and samples).
  by_kind = {
      "balanced": [balanced_counts(k, v) for k in Ks for v in ns],
      "step": [step_counts(k, K_major=km, n_major=hi, n_minor=lo) for k in Ks for hi in big for lo in ns if lo < hi
               for km in range(1, k)],
      "long_tailed": [long_tailed_counts(k, n_max=hi, rho=rho) for k in Ks for hi in big for rho in (2.0, float(hi))],
      "explicit": list(explicit),
  }
  options = []
  for k in kinds:
    ordered = by_kind[k] if k == "explicit" else sorted(dict.fromkeys(by_kind[k]), key=lambda c: (len(c), sum(c), c))
    options.append(st.sampled_from(ordered))
  return st.one_of(*options) if len(options) > 1 else options[0]


def _lams_from_index(counts, tau, r):
  """``(lam_W, lam_H)`` with collapse index ``tau`` and ratio ``lam_H / lam_W = r`` (see :func:`weight_decays`)."""
  lam_W = tau * math.sqrt(min(counts) / r) / sum(counts)
  return (lam_W, r * lam_W)


def _index_and_ratio(regime, tau, margin, ratio, lam):
  """The strategy of ``(tau, r)`` (of ``(lam_W, lam_H)`` for ``"free"``); validates the options."""
  if regime not in REGIMES:
    raise ValueError(f"regime = {regime!r} is not supported; allowed values: {', '.join(REGIMES)}")
  if regime == "free":
    w = log_uniform(*lam)
    return st.tuples(w, w)
  if not (0 <= margin < 1):
    raise ValueError(f"margin = {margin!r} is out of range; allowed range: 0 <= margin < 1")
  lo, hi = tau
  if not (0 < lo < 1 - margin and 1 + margin < hi):
    raise ValueError(f"tau = {tau!r} is out of range for margin {margin}; allowed: 0 < tau[0] < 1 - margin "
                     f"and tau[1] > 1 + margin")
  below, above = log_uniform(lo, 1 - margin), log_uniform(1 + margin, hi)
  taus = {"below": below, "above": above, "straddle": st.one_of(below, above)}[regime]
  return st.tuples(taus, log_uniform(*ratio))


def weight_decays(counts, *, regime: str = "below", tau: tuple[float, float] = (0.05, 3.0), margin: float = 0.1,
                  ratio: tuple[float, float] = (0.1, 10.0),
                  lam: tuple[float, float] = (1e-4, 1.0)) -> st.SearchStrategy:
  r"""Weight decays ``(lam_W, lam_H)`` for ``counts``, log-uniform.

  With :math:`\tau` the collapse index (:func:`collapse_index`) and :math:`r = \lambda_H/\lambda_W`,
  :math:`\lambda_W = \tau\sqrt{n_{\min}/r}/N`, :math:`\lambda_H = r\lambda_W`, where ``log r`` is
  uniform on ``log ratio`` and ``log tau`` uniform on:

  * ``"below"``: ``[tau[0], 1 - margin]`` (a non-zero minimiser);
  * ``"above"``: ``[1 + margin, tau[1]]`` (the zero minimiser, balanced);
  * ``"straddle"``: either of the two, each with probability 1/2;
  * ``"free"``: no index; ``lam_W`` and ``lam_H`` independently log-uniform on ``lam``.

  ``margin`` keeps draws off :math:`\tau = 1`, where the non-zero minimiser merges with the zero
  one and the Hessian's smallest non-zero eigenvalue tends to 0, so no finite-precision solve
  determines the norms (the reference tolerance assumes that eigenvalue is not tiny).
  """
  counts = tuple(counts)
  pairs = _index_and_ratio(regime, tau, margin, ratio, lam)
  return pairs if regime == "free" else pairs.map(lambda t_r: _lams_from_index(counts, *t_r))


def _lam_b_strategy(lam_b) -> st.SearchStrategy:
  if isinstance(lam_b, st.SearchStrategy):
    return lam_b
  if isinstance(lam_b, tuple) and len(lam_b) == 2:
    return log_uniform(*lam_b)
  v = float(lam_b)
  if not (v >= 0 and math.isfinite(v)):
    raise ValueError(f"lam_b = {lam_b!r} is out of range; allowed: a float >= 0, a (lo, hi) log-uniform range, "
                     "or a strategy")
  return st.just(v)


def problem_specs(*, K: Sequence[int] = DEFAULT_K, n: Sequence[int] = DEFAULT_N,
                  counts: str | Sequence[str] = "balanced", explicit_counts: Sequence[Sequence[int]] = (),
                  d: Sequence[int] | None = None, d_offsets: Sequence[int] = DEFAULT_D_OFFSETS,
                  loss: str | Sequence[str] = LOSSES, bias: bool | Sequence[bool] = (False, True),
                  lam_b=0.0, regime: str = "below", tau: tuple[float, float] = (0.05, 3.0), margin: float = 0.1,
                  ratio: tuple[float, float] = (0.1, 10.0), lam: tuple[float, float] = (1e-4, 1.0),
                  init_scale=0.1, depth: int = 1, seeds: st.SearchStrategy | None = None) -> st.SearchStrategy:
  r"""Hypothesis strategy of :class:`ProblemSpec`: shapes from small sets, weight decays and seeds free.

  Args:
    K, n, counts, explicit_counts: the class counts (see :func:`class_counts`; ``counts`` is its ``kind``).
    d: feature dimensions to draw from; by default ``d = K + offset`` for ``offset`` in ``d_offsets``
      (values ``< 1`` are skipped), so ``(-1, 0, 1)`` gives ``K - 1`` (the smallest ``d`` with a
      simplex ETF), ``K`` (the smallest with an orthogonal frame) and ``K + 1``.
    loss, bias: one value or a sequence to draw from (first values first).
    lam_b: bias decay when ``bias``: a float, a ``(lo, hi)`` log-uniform range, or a strategy (0 without bias).
    regime, tau, margin, ratio, lam: the weight decays (see :func:`weight_decays`).
    init_scale: scale of the Gaussian initialisation, a float or a ``(lo, hi)`` log-uniform range.
    depth: number of linear layers; only 1 is drawn here (the deep linear UFM of :mod:`ufm.deep` has its own
      tests, ``tests/test_deep.py``).
    seeds: strategy of initialisation seeds (default: any integer in ``[0, 2**32)``).

  Raises:
    ValueError: ``depth != 1`` and out-of-range options, before anything is drawn.
  """
  if depth != 1:
    raise ValueError(f"depth = {depth!r} is not supported yet: problem_specs draws plain (one-layer) UFM "
                     "problems; the deep linear UFM is built with ufm.deep.make_deep_problem; allowed: depth = 1")
  losses = _as_tuple("loss", loss, LOSSES)
  biases = _as_tuple("bias", bias, (False, True))
  counts_st = class_counts(K=K, n=n, kind=counts, explicit=explicit_counts)
  ds = None if d is None else _as_tuple("d", d)
  offsets = _as_tuple("d_offsets", d_offsets)
  lam_b_st = _lam_b_strategy(lam_b)
  scale_st = log_uniform(*init_scale) if isinstance(init_scale, tuple) else log_uniform(init_scale, init_scale)
  seeds = st.integers(0, 2**32 - 1) if seeds is None else seeds
  pairs = _index_and_ratio(regime, tau, margin, ratio, lam)

  @st.composite
  def draw_spec(draw):
    c = draw(counts_st)
    Kv = len(c)
    if ds is None:
      options = [Kv + o for o in offsets if Kv + o >= 1]
      if not options:
        raise ValueError(f"d_offsets = {offsets}: no d >= 1 for K = {Kv}")
      dv = draw(st.sampled_from(options))
    else:
      dv = draw(st.sampled_from(ds))
    ls = draw(st.sampled_from(losses))
    b = draw(st.sampled_from(biases))
    lam_W, lam_H = draw(pairs) if regime == "free" else _lams_from_index(c, *draw(pairs))
    lb = draw(lam_b_st) if b else 0.0
    return ProblemSpec(counts=tuple(c), d=dv, lam_W=lam_W, lam_H=lam_H, lam_b=lb, loss=ls, bias=b,
                       seed=draw(seeds), init_scale=draw(scale_st))
  return draw_spec()


def problems(**kwargs) -> st.SearchStrategy:
  """Strategy of :class:`~ufm.problem.Problem` s: :func:`problem_specs` (same arguments), built with
  :func:`ufm.problem.make_problem` (the dtype follows ``jax_enable_x64``)."""
  return problem_specs(**kwargs).map(ProblemSpec.problem)



# ----------------------------------------------------------------------------- the other families' problems

from ufm.specs import MIXUP_GRID, DeepSpec, MixupSpec, SphereSpec, deep_specs, mixup_specs, sphere_specs  # noqa: E402

#: family -> spec type (the plain UFM's :class:`ProblemSpec` writes no ``"family"`` field: it is the default).
SPEC_TYPES = {"plain": ProblemSpec, "deep": DeepSpec, "input_mixup": MixupSpec, "spherical": SphereSpec}


def register_spec_type(cls) -> None:
  """Adds a family's spec type to :data:`SPEC_TYPES` (its ``FAMILY`` is the key its JSON's ``"family"`` names)."""
  if not (isinstance(getattr(cls, "FAMILY", None), str) and all(
      callable(getattr(cls, a, None)) for a in ("problem", "to_json", "from_json"))):
    raise ValueError(f"{cls!r} is not a spec type; it needs FAMILY, problem(), to_json() and from_json()")
  SPEC_TYPES[cls.FAMILY] = cls


def is_spec(obj) -> bool:
  """Whether ``obj`` is a problem description a claim can solve (an instance of a :data:`SPEC_TYPES` type)."""
  return isinstance(obj, tuple(SPEC_TYPES.values()))


#: The families whose spec types and strategies live with their claims (they subclass :class:`ProblemSpec`, so they
#: cannot sit in :mod:`ufm.specs`, which this module imports): name -> module, imported on first use.
LAZY_FAMILY_MODULES = {"relu_deep": "ufm.claims.relu", "regression": "ufm.claims.regression",
                       "losses": "ufm.claims.losses"}
_LAZY_NAMES = {"ReLUSpec": "relu_deep", "relu_spec_class": "relu_deep", "relu_specs": "relu_deep",
               "RegressionSpec": "regression", "regression_specs": "regression", "loss_family_specs": "losses"}


def __getattr__(name):
  """The ReLU DUFM's, the regression UFM's and the loss family's spec types and strategies (``relu_specs``,
  ``regression_specs``, ``loss_family_specs``, ...), from their claims modules on first use."""
  if name in _LAZY_NAMES:
    import importlib
    return getattr(importlib.import_module(LAZY_FAMILY_MODULES[_LAZY_NAMES[name]]), name)
  raise AttributeError(f"module 'ufm.testing' has no attribute {name!r}")


def spec_from_json(obj):
  """Any family's spec from its JSON (``"family"`` selects the type; none: :class:`ProblemSpec`); ``ValueError``
  naming the field otherwise (before any solve)."""
  family = obj.get("family", "plain") if isinstance(obj, dict) else "plain"
  if family not in SPEC_TYPES and family in LAZY_FAMILY_MODULES:
    import importlib
    importlib.import_module(LAZY_FAMILY_MODULES[family])  # registers its spec type
  if family not in SPEC_TYPES:
    raise ValueError(f"family = {family!r} is not supported; allowed values: {', '.join(SPEC_TYPES)}")
  return SPEC_TYPES[family].from_json(obj)
