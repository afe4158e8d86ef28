r"""Conventions of the NC metrics as data: one frozen object fixes every choice the published code bases differ on.

The neural-collapse metrics are computed differently across the field, and the numbers differ by factors (NC1 by
``K`` and by the pseudo-inverse, NC3 by a square, the imbalanced ETF error by 2x). A :class:`Conventions` names each
choice; :func:`ufm.canonical.summary` (dense, or tiled with ``block``) and :class:`ufm.streaming.Accumulator` accept
one, or the name of a preset in :data:`PRESETS`:

========================  ==============  ==============  ================  ================
field                     ``ufm``          ``papyan2020``   ``zhu2021``        ``wu2024``
========================  ==============  ==============  ================  ================
``global_mean``           samples         class_means     samples           class_means
``sigma_B``               classes         classes         classes           classes
``sigma_W`` / ddof        samples / 0     samples / 0     samples / 0       samples / 0
``nc1`` / ``nc1_over_K``  pinv / True     rank / False    pinv / True       pinv / True
``equinorm_ddof``         1               1               1                 1
``equiangularity_ddof``   1               1               1                 0
``cdnv_dist_exp`` / ddof  1 / 0           1 / 0           1 / 0             2 / 0
``nc3`` / squared         duality / no    duality / yes   etf / no          etf / no
``nc4_bias``              yes             yes             yes               no
``nc4_weighting``         samples         samples         samples           samples
``nc4_report``            agreement       mismatch        agreement         agreement
========================  ==============  ==============  ================  ================

Sources: Papyan, Han & Donoho 2020 (arXiv 2008.08186) and the ``analysis`` function of their notebook; Zhu et al.
2021 (arXiv 2105.02375), ``validate_NC.py`` of ``tding1/Neural-Collapse``; Wu & Papyan 2024 ("Linguistic Collapse",
arXiv 2405.17767) and their library ``rhubarbwu/neural-collapse`` (whose CDNV default is ``dist_exp = 1``; the paper
reports ``dist_exp = 2``, the preset's value). ``tests/golden/`` holds each code base's own numbers on five fixtures
and the script that produced them; ``tests/test_conventions.py`` checks every preset against them.
"""

import dataclasses
from typing import Any

__all__ = ["Conventions", "PRESETS", "get"]

_CHOICES = {
    "global_mean": ("samples", "class_means"),
    "sigma_B": ("classes", "samples"),
    "sigma_W": ("samples", "classes"),
    "nc1": ("pinv", "lstsq", "rank", "ratio"),
    "nc3": ("duality", "etf"),
    "nc4_weighting": ("samples", "classes"),
    "nc4_report": ("agreement", "mismatch"),
}
_DDOFS = ("sigma_W_ddof", "equinorm_ddof", "equiangularity_ddof", "cdnv_ddof", "unc3_ddof")
_FLAGS = ("nc1_over_K", "nc3_squared", "nc4_bias")


@dataclasses.dataclass(frozen=True)
class Conventions:
  r"""Every choice behind the NC metrics (frozen and hashable: a static argument under ``jit``).

  Attributes:
    name: a label, shown in outputs (``"custom"`` unless a preset).
    global_mean: :math:`\mu_G`: ``"samples"`` the sample mean :math:`\frac1N\sum_i h_i` (Zhu et al.; ufm), or
      ``"class_means"`` the unweighted mean of the class means :math:`\frac1K\sum_k\mu_k` (Papyan's notebook;
      rhubarbwu). Equal on balanced classes. Every centred quantity (:math:`\tilde\mu_k = \mu_k - \mu_G`) uses it.
    sigma_B: :math:`\Sigma_B = \sum_k w_k\tilde\mu_k\tilde\mu_k^\top` with :math:`w_k = 1/K` (``"classes"``, every
      peer) or :math:`n_k/N` (``"samples"``).
    sigma_W: :math:`\Sigma_W`: ``"samples"`` pooled, :math:`\frac1{N - \delta K}\sum_i (h_i - \mu_{y_i})(\cdot)^\top`;
      ``"classes"`` the mean of the class covariances, :math:`\frac1K\sum_k\frac1{n_k - \delta}\sum_{y_i = k}(\cdot)`;
      :math:`\delta` = ``sigma_W_ddof`` (0 or 1).
    nc1: :math:`\mathrm{tr}(\Sigma_W\Sigma_B^\dagger)` with the Moore-Penrose inverse (``"pinv"``; ``"lstsq"``, the
      minimum-norm least-squares solution of :math:`\Sigma_B X = \Sigma_W`, has the same trace), with the inverse
      on the top ``K - 1`` eigenpairs of :math:`\Sigma_B` (``"rank"``, Papyan's ``svds(Sb, k=C-1)``), or
      :math:`\mathrm{tr}\,\Sigma_W/\mathrm{tr}\,\Sigma_B` (``"ratio"``, Tirer et al. 2023).
    nc1_over_K: divide the trace by ``K`` (Zhu; rhubarbwu; ufm) or not (Papyan's notebook).
    equinorm_ddof: ddof of the std in the CoV of the norms (``torch.std``: 1).
    equiangularity_ddof: ddof of the std of the pairwise cosines (Papyan: 1; rhubarbwu's population std: 0).
    cdnv_dist_exp: ``e`` in :math:`(\sigma_i^2 + \sigma_j^2)/(2\|\mu_i - \mu_j\|^{2e})` (Galanti et al.: 1;
      Wu & Papyan 2024: 2).
    cdnv_ddof: the class variances :math:`\sigma_k^2 = \frac1{n_k - \delta}\sum_{y_i = k}\|h_i - \mu_k\|^2`.
    nc3: ``"duality"`` :math:`\|W^\top/\|W\|_F - \tilde M/\|\tilde M\|_F\|_F` (Papyan) or ``"etf"``
      :math:`\|W\tilde M/\|W\tilde M\|_F - (I - \frac1K 11^\top)/\sqrt{K-1}\|_F` (Zhu; rhubarbwu).
    nc3_squared: square the NC3 distance (Papyan's notebook plots the square).
    nc4_bias: the classifier's decision :math:`\arg\max_k(Wh + b)_k` with the bias (Papyan: the network's own
      output) or without (rhubarbwu's ``DecAccumulator``).
    nc4_weighting: the agreement over samples (``"samples"``) or the mean of the per-class agreements
      (``"classes"``, rhubarbwu's ``weighted=False``).
    nc4_report: report the agreement, or the mismatch ``1 - agreement`` (Papyan's "NCC mismatch").
    unc3_ddof: ddof of the variance of :math:`w_k\cdot\tilde\mu_k` (``unc3_dot``) and of the std of the
      cosines (``unc3``): ``torch.var`` / ``torch.std`` use 1.
  """
  # Annotated Any: the values are validated in __post_init__, with a ValueError naming the field.
  name: Any = "custom"
  global_mean: Any = "samples"
  sigma_B: Any = "classes"
  sigma_W: Any = "samples"
  sigma_W_ddof: Any = 0
  nc1: Any = "pinv"
  nc1_over_K: Any = True
  equinorm_ddof: Any = 1
  equiangularity_ddof: Any = 1
  cdnv_dist_exp: Any = 1.0
  cdnv_ddof: Any = 0
  nc3: Any = "duality"
  nc3_squared: Any = False
  nc4_bias: Any = True
  nc4_weighting: Any = "samples"
  nc4_report: Any = "agreement"
  unc3_ddof: Any = 1

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"name = {self.name!r}; allowed: a non-empty string")
    for field, allowed in _CHOICES.items():
      value = getattr(self, field)
      if value not in allowed:
        raise ValueError(f"{field} = {value!r}; allowed: {', '.join(map(repr, allowed))}")
    for field in _DDOFS:
      value = getattr(self, field)
      if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"{field} = {value!r}; allowed: 0 or 1")
    for field in _FLAGS:
      if not isinstance(getattr(self, field), bool):
        raise ValueError(f"{field} = {getattr(self, field)!r}; allowed: True or False")
    e = self.cdnv_dist_exp
    if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 4:
      raise ValueError(f"cdnv_dist_exp = {e!r}; allowed: a number in (0, 4]")
    object.__setattr__(self, "cdnv_dist_exp", float(e))

  def replace(self, **changes) -> "Conventions":
    """A copy with ``changes`` (named ``"custom"`` unless ``name`` is given), validated."""
    unknown = [k for k in changes if k not in {f.name for f in dataclasses.fields(self)}]
    if unknown:
      names = ", ".join(f.name for f in dataclasses.fields(self))
      raise ValueError(f"unknown convention(s) {unknown}; allowed: {names}")
    return dataclasses.replace(self, **{"name": "custom", **changes})

  def as_dict(self) -> dict:
    """The fields as a plain dict (for JSON outputs)."""
    return dataclasses.asdict(self)


#: Named presets (module docstring). ``rhubarbwu`` is ``wu2024`` with the library's default CDNV ``dist_exp = 1``.
PRESETS: dict[str, Conventions] = {
    "ufm": Conventions(name="ufm"),
    "papyan2020": Conventions(name="papyan2020", global_mean="class_means", nc1="rank", nc1_over_K=False,
                              nc3_squared=True, nc4_report="mismatch"),
    "zhu2021": Conventions(name="zhu2021", nc3="etf"),
    "wu2024": Conventions(name="wu2024", global_mean="class_means", equiangularity_ddof=0, cdnv_dist_exp=2.0,
                          nc3="etf", nc4_bias=False),
    "rhubarbwu": Conventions(name="rhubarbwu", global_mean="class_means", equiangularity_ddof=0, nc3="etf",
                             nc4_bias=False),
}


def get(conventions="ufm") -> Conventions:
  """A :class:`Conventions` from a preset name of :data:`PRESETS` or a :class:`Conventions` (returned as is)."""
  if isinstance(conventions, Conventions):
    return conventions
  if isinstance(conventions, str) and conventions in PRESETS:
    return PRESETS[conventions]
  raise ValueError(f"conventions = {conventions!r}; allowed: a Conventions or one of {', '.join(PRESETS)}")
