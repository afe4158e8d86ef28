r"""Problem descriptions (specs) and hypothesis strategies of the deep linear, input-mixup and spherical families.

Each spec type has the protocol the claims runner needs: ``FAMILY``, ``problem()`` (the validated problem of the
family), ``shape_key`` (its static part), ``seed`` and ``init_scale`` (of the reference solve), ``to_json()`` (with a
``"family"`` field) and ``from_json()``. :func:`ufm.testing.spec_from_json` reads any of them back; everything here is
re-exported by :mod:`ufm.testing`, next to the plain UFM's :class:`ufm.testing.ProblemSpec`.
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from ufm.problem import LOSSES, ClassCounts
from ufm.validate import check_int, check_seed

__all__ = ["MIXUP_GRID", "DeepSpec", "MixupSpec", "SphereSpec", "deep_specs", "mixup_specs", "sphere_specs"]


def _choices(name, value, allowed=None) -> tuple:
  """``value`` as a non-empty tuple, every element in ``allowed`` (``ValueError`` naming ``name`` otherwise)."""
  t = tuple(value) if isinstance(value, (list, tuple)) else (value,)
  if not t:
    raise ValueError(f"{name} is empty; give at least one value")
  bad = [v for v in t if allowed is not None and v not in allowed]
  if bad:
    raise ValueError(f"{name} = {bad[0]!r} is not supported; allowed values: {', '.join(map(str, allowed))}")
  return t


def log_uniform(lo, hi):
  """:func:`ufm.testing.log_uniform` (imported when drawn: ufm.testing re-exports this module)."""
  from ufm import testing
  return testing.log_uniform(lo, hi)


def class_counts(**kwargs):
  """:func:`ufm.testing.class_counts`."""
  from ufm import testing
  return testing.class_counts(**kwargs)


#: Uniform mixing grid of the input-mixup claims: 9 equally weighted nodes on [0, 1], symmetric about 1/2 and
#: containing 0, 1/2 and 1 (the points the statements of Fisher et al. 2024 single out).
MIXUP_GRID = tuple(float(x) for x in np.linspace(0.0, 1.0, 9))


def _json_fields(spec, family: str) -> dict:
  out = {"family": family}
  for k, v in spec._asdict().items():
    out[k] = [int(c) for c in v] if k == "counts" else v
  return out


def _parse_spec(cls, obj, required: set):
  if not isinstance(obj, dict):
    raise ValueError(f"a problem description must be a JSON object, got {type(obj).__name__}")
  fields = {k: v for k, v in obj.items() if k != "family"}
  unknown, missing = set(fields) - set(cls._fields), required - set(fields)
  if unknown or missing:
    raise ValueError(f"problem description {obj!r}: unknown fields {sorted(unknown)}, missing {sorted(missing)}; "
                     f"allowed fields: family, {', '.join(cls._fields)}")
  if "counts" in fields and isinstance(fields["counts"], list):
    fields["counts"] = tuple(fields["counts"])
  spec = cls(**fields)
  spec.problem()  # validates every field of the family's constructor
  check_seed("seed", spec.seed)
  if not (isinstance(spec.init_scale, (int, float)) and spec.init_scale > 0 and math.isfinite(spec.init_scale)):
    raise ValueError(f"init_scale = {spec.init_scale!r} is out of range; allowed range: finite and > 0")
  return spec


class DeepSpec(NamedTuple):
  r"""A deep linear UFM (:func:`ufm.deep.make_deep_problem`; Dang et al. 2023, arXiv 2301.00437): ``M`` layers of
  width ``width``, the same decay ``lam_W`` on every layer, and the seed of its reference solve."""
  counts: tuple[int, ...]
  M: int
  width: int
  lam_W: float
  lam_H: float
  loss: str = "mse"
  bias: bool = False
  seed: int = 0
  init_scale: float = 1.0

  FAMILY = "deep"
  K = ClassCounts.K
  N = ClassCounts.N

  @property
  def shape_key(self) -> tuple:
    return ("deep", tuple(self.counts), self.M, self.width, self.loss, self.bias)

  def problem(self, dtype=None):
    from ufm import deep
    check_int("M", self.M, lo=1)
    check_int("width", self.width, lo=1)
    return deep.make_deep_problem(tuple(self.counts), widths=(self.width,) * self.M, lam_W=self.lam_W,
                                  lam_H=self.lam_H, loss=self.loss, bias=self.bias, dtype=dtype)

  def to_json(self) -> dict:
    return _json_fields(self, "deep")

  @classmethod
  def from_json(cls, obj) -> "DeepSpec":
    return _parse_spec(cls, obj, {"counts", "M", "width", "lam_W", "lam_H"})

  def __str__(self) -> str:
    return (f"deep {self.loss}, {'bias' if self.bias else 'no bias'}, counts={tuple(self.counts)}, M={self.M}, "
            f"width={self.width}, lam_W={self.lam_W:.6g}, lam_H={self.lam_H:.6g}, seed={self.seed}")


class MixupSpec(NamedTuple):
  r"""An input-mixup UFM with a fixed simplex-ETF classifier of row norm ``rho`` on the grid :data:`MIXUP_GRID`
  (:func:`ufm.mixup.make_input_mixup_problem`; Fisher, Meng & Papyan 2024, arXiv 2402.06171)."""
  K: int
  d: int
  lam_H: float
  rho: float = 1.0
  loss: str = "ce"
  seed: int = 0
  init_scale: float = 0.1

  FAMILY = "input_mixup"

  @property
  def shape_key(self) -> tuple:
    return ("input_mixup", self.K, self.d, self.loss)

  def problem(self, dtype=None):
    from ufm import mixup
    return mixup.make_input_mixup_problem(self.K, d=self.d, lam_H=self.lam_H, rho=self.rho, loss=self.loss,
                                          lam_grid=MIXUP_GRID, fixed_W=True, dtype=dtype)

  def to_json(self) -> dict:
    return _json_fields(self, "input_mixup")

  @classmethod
  def from_json(cls, obj) -> "MixupSpec":
    return _parse_spec(cls, obj, {"K", "d", "lam_H"})

  def __str__(self) -> str:
    return (f"input mixup {self.loss}, K={self.K}, d={self.d}, lam_H={self.lam_H:.6g}, rho={self.rho:.6g}, "
            f"seed={self.seed}")


class SphereSpec(NamedTuple):
  r"""A spherical temperature-scaled CE-UFM (:func:`ufm.spherical.make_spherical_problem`, any ``K`` and ``d``; Jiang
  et al. 2024, arXiv 2310.05351) on its scale-invariant unconstrained form (for L-BFGS), with a learned classifier
  (``classifier=""``) or a fixed one named in :data:`ufm.geometry.FIXED_CLASSIFIERS` (random ones drawn with key 0)."""
  counts: tuple[int, ...]
  d: int
  tau: float
  classifier: str = ""
  seed: int = 0
  init_scale: float = 1.0

  FAMILY = "spherical"
  K = ClassCounts.K
  N = ClassCounts.N

  @property
  def shape_key(self) -> tuple:
    return ("spherical", tuple(self.counts), self.d, self.classifier)

  def problem(self, dtype=None):
    from ufm import spherical
    W = None if not self.classifier else _fixed_classifier(self.classifier, len(self.counts), self.d)
    return spherical.make_spherical_problem(tuple(self.counts), d=self.d, tau=self.tau, W_fixed=W, constrained=False,
                                            dtype=dtype)

  def to_json(self) -> dict:
    return _json_fields(self, "spherical")

  @classmethod
  def from_json(cls, obj) -> "SphereSpec":
    return _parse_spec(cls, obj, {"counts", "d", "tau"})

  def __str__(self) -> str:
    W = f", fixed {self.classifier}" if self.classifier else ""
    return f"spherical, counts={tuple(self.counts)}, d={self.d}, tau={self.tau:.6g}{W}, seed={self.seed}"


_FIXED_W: dict = {}


def _fixed_classifier(name: str, K: int, d: int) -> np.ndarray:
  """:func:`ufm.geometry.fixed_classifier` (key 0 for the random ones), computed once per ``(name, K, d)``."""
  if (name, K, d) not in _FIXED_W:
    import jax
    from ufm import geometry
    _FIXED_W[(name, K, d)] = np.asarray(geometry.fixed_classifier(name, K, d, key=jax.random.key(0)), np.float64)
  return _FIXED_W[(name, K, d)]


def deep_specs(*, K: Sequence[int] = (2, 3, 4), n: Sequence[int] = (1, 2, 3), counts: str | Sequence[str] = "balanced",
               explicit_counts: Sequence[Sequence[int]] = (), M: Sequence[int] = (1, 2, 3), width_offset: int = 1,
               loss: str | Sequence[str] = "mse", bias: bool | Sequence[bool] = False,
               ratio: tuple[float, float] = (0.05, 3.0), margin: float = 0.1, regime: str = "below",
               lam_W: tuple[float, float] = (1e-3, 1e-2), init_scale=1.0,
               seeds: st.SearchStrategy | None = None) -> st.SearchStrategy:
  r"""Hypothesis strategy of :class:`DeepSpec` (deep linear UFM, width ``K + width_offset``).

  The decays are placed by the *smallest class's ratio* :math:`r = b/n_{\min}` with
  :math:`b = M N\lambda_W(N\lambda_H)^{1/M}` (Dang et al. 2023, arXiv 2301.00437; derivations §1.3): class ``k``
  keeps a non-zero classifier iff :math:`b/n_k < \rho_M` (:func:`ufm.theory.deep_threshold_ratio`). ``log r`` is
  uniform on ``[ratio[0], (1 - margin) rho_M]`` (``"below"``), ``[(1 + margin) rho_M, ratio[1]]`` (``"above"``),
  either (``"straddle"``); ``lam_W`` is log-uniform on ``lam_W`` and ``lam_H`` follows from ``r``. Every class's
  ratio is then kept ``margin`` away from :math:`\rho_M` (at the threshold the minimiser is degenerate).
  """
  from ufm import theory
  Ms = _choices("M", M)
  losses, biases = _choices("loss", loss, LOSSES), _choices("bias", bias, (False, True))
  if regime not in ("below", "above", "straddle"):
    raise ValueError(f"regime = {regime!r} is not supported; allowed values: below, above, straddle")
  if not (0 <= margin < 1 and 0 < ratio[0] < ratio[1]):
    raise ValueError(f"margin = {margin!r}, ratio = {ratio!r} are out of range; allowed: 0 <= margin < 1, "
                     "0 < ratio[0] < ratio[1]")
  counts_st = class_counts(K=K, n=n, kind=counts, explicit=explicit_counts)
  seeds = st.integers(0, 2**32 - 1) if seeds is None else seeds
  scale_st = log_uniform(*init_scale) if isinstance(init_scale, tuple) else log_uniform(init_scale, init_scale)

  @st.composite
  def draw_spec(draw):
    c = tuple(draw(counts_st))
    Mv = draw(st.sampled_from(Ms))
    rho = theory.deep_threshold_ratio(Mv)
    below = log_uniform(min(ratio[0], (1 - margin) * rho), (1 - margin) * rho)
    above = log_uniform((1 + margin) * rho, max(ratio[1], (1 + margin) * rho))
    r = draw({"below": below, "above": above, "straddle": st.one_of(below, above)}[regime])
    lw = draw(log_uniform(*lam_W))
    N = sum(c)
    lh = (r * min(c) / (Mv * N * lw)) ** Mv / N  # b / n_min = r
    b = Mv * N * lw * (N * lh) ** (1 / Mv)
    assume(all(abs(b / nk / rho - 1) > margin for nk in c))
    return DeepSpec(counts=c, M=Mv, width=len(c) + width_offset, lam_W=lw, lam_H=lh, loss=draw(st.sampled_from(losses)),
                    bias=draw(st.sampled_from(biases)), seed=draw(seeds), init_scale=draw(scale_st))
  return draw_spec()


def mixup_specs(*, K: Sequence[int] = (3, 4), d_offsets: Sequence[int] = (-1, 1),
                lam_H: tuple[float, float] = (0.1, 1.0), rho: tuple[float, float] = (0.5, 2.0),
                loss: str | Sequence[str] = "ce", init_scale=0.1,
                seeds: st.SearchStrategy | None = None) -> st.SearchStrategy:
  r"""Hypothesis strategy of :class:`MixupSpec`: ``d = K + offset`` (a fixed simplex ETF needs ``d >= K - 1``),
  ``lam_H`` and ``rho`` log-uniform. The defaults keep :math:`\kappa = \rho^2 K/((K-1)\lambda_H) \le 60` and every
  grid weight at ``1/9``, where the ``"mixup_reference"`` tolerance was derived."""
  Ks, offsets, losses = _choices("K", K), _choices("d_offsets", d_offsets), _choices("loss", loss, LOSSES)
  seeds = st.integers(0, 2**32 - 1) if seeds is None else seeds
  scale_st = log_uniform(*init_scale) if isinstance(init_scale, tuple) else log_uniform(init_scale, init_scale)

  @st.composite
  def draw_spec(draw):
    Kv = draw(st.sampled_from(Ks))
    options = [Kv + o for o in offsets if Kv + o >= Kv - 1]
    if not options:
      raise ValueError(f"d_offsets = {offsets}: a fixed simplex ETF needs d >= K - 1")
    return MixupSpec(K=Kv, d=draw(st.sampled_from(options)), lam_H=draw(log_uniform(*lam_H)),
                     rho=draw(log_uniform(*rho)), loss=draw(st.sampled_from(losses)), seed=draw(seeds),
                     init_scale=draw(scale_st))
  return draw_spec()


def sphere_specs(*, K: Sequence[int] = (3, 4, 5), n: Sequence[int] = (1, 2), d: Sequence[int] | None = None,
                 d_of_K=None, tau: tuple[float, float] = (0.3, 1.0), classifier: str | Sequence[str] = "",
                 init_scale=1.0, seeds: st.SearchStrategy | None = None) -> st.SearchStrategy:
  r"""Hypothesis strategy of :class:`SphereSpec` (balanced counts): ``d`` from ``d`` or ``d_of_K(K)`` (e.g.
  ``lambda K: K - 1`` for ``K = d + 1``, ``lambda K: K // 2`` for ``K = 2d``), ``tau`` log-uniform, the classifier
  learned (``""``) or one of :data:`ufm.geometry.FIXED_CLASSIFIERS`."""
  from ufm import geometry
  classifiers = _choices("classifier", classifier, ("",) + tuple(geometry.FIXED_CLASSIFIERS))
  if (d is None) == (d_of_K is None):
    raise ValueError("give exactly one of d (a set) and d_of_K (a function of K)")
  counts_st = class_counts(K=K, n=n, kind="balanced")
  seeds = st.integers(0, 2**32 - 1) if seeds is None else seeds
  scale_st = log_uniform(*init_scale) if isinstance(init_scale, tuple) else log_uniform(init_scale, init_scale)

  @st.composite
  def draw_spec(draw):
    c = tuple(draw(counts_st))
    dv = d_of_K(len(c)) if d_of_K is not None else draw(st.sampled_from(_choices("d", d)))
    return SphereSpec(counts=c, d=int(dv), tau=draw(log_uniform(*tau)), classifier=draw(st.sampled_from(classifiers)),
                      seed=draw(seeds), init_scale=draw(scale_st))
  return draw_spec()
