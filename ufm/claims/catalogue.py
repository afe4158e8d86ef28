r"""The catalogue of claims, gathered from one module per family.

Every closed form of :mod:`ufm.theory`, and every published statement the tests confirmed, refuted, corrected or
narrowed, is a registered :class:`~ufm.claims.Claim`.

Families (each a module ``ufm.claims.<family>`` exporting ``CLAIMS``, a tuple of claims):

* ``plain``: the plain UFM (Zhu et al. 2021; Tirer & Bruna 2022; Zhou et al. 2022; Dang et al. 2023 at depth 1;
  closed forms derived in :mod:`ufm.theory`; NC metric targets; benign landscapes);
* ``vicinity``: the vicinity UFM (Tirer, Huang & Niles-Weed 2023);
* ``deep``: the deep linear UFM (Dang et al. 2023; Garrod & Keating 2024);
* ``mixup``: the input-mixup UFM with a fixed simplex-ETF classifier (Fisher, Meng & Papyan 2024);
* ``imbalanced``: the imbalanced CE-UFM through its convex reduction (Fang et al. 2021; Thrampoulidis et al. 2022);
* ``sphere``: the spherical temperature-scaled UFM with any ``K`` and ``d`` (Lu & Steinerberger 2022; Jiang et
  al. 2024; constructed configurations and their metrics);
* ``fixed``: fixed classifiers (simplex ETF, d-Simplex and d-Orthoplex of Pernici et al. 2021; the EBV of Shen,
  Sun & Wei 2023, where the features do not align with their classifier: a refutation found here).

**Adding a family** is one line: write ``ufm/claims/<family>.py`` with ``CLAIMS = (...)`` built with
:class:`ufm.claims.Claim` (a problem strategy from :mod:`ufm.testing`, or a spec type of one's own registered with
:func:`ufm.testing.register_spec_type`), and add ``"<family>"`` to :data:`FAMILY_MODULES`. Claim names must be unique
across the catalogue (checked at import). For example, the loss-family, deep-ReLU and neural-regression-collapse
modules (``ufm/claims/losses.py``, ``relu.py``, ``regression.py``) plug in as the entries ``"losses"``, ``"relu"``
and ``"regression"``. A family whose problems are not plain UFM problems registers its spec type (``FAMILY``,
``problem()``, ``shape_key``, ``seed``, ``init_scale``, ``to_json``/``from_json``) at import; its claims then run with
``solver="lbfgs"`` (every array leaf of ``spec.problem()`` is vmapped, so any :class:`ufm.problem.Family` works) or
``solver="none"``.

Expected statuses: ``"holds"``; ``"refuted"`` (a published statement kept as a documented counterexample, with its
minimal counterexample committed in ``Claim.counterexamples`` and reproduced by every run); ``"holds-when"`` (the
statement holds under a narrower condition than published, stated in ``Claim.holds_when``, and is checked there).

Statements with no finite check, and therefore not claims:

* limits as a parameter tends to 0 or infinity: SELI as the :math:`\lambda \to 0` limit of the imbalanced CE-UFM
  (Thrampoulidis et al. 2022, Thm. 2) and minority collapse as :math:`R \to \infty` (Fang et al. 2021, Thm. 5).
  Finitely many solves cannot reach a limit; what *is* finite is registered instead: the SELI Grams' own identities,
  the refuted rate "distance to SELI about 1e-2 at lambda = 1e-5", and the exact coincidence of the minority
  classifiers at a finite ratio (``imbalanced``);
* statements about training dynamics or stochastic optimisation (the averaged-SGD error of the mixup UFM, the
  softmax-code and minimal-energy solvers of :mod:`ufm.geometry`): their results depend on step counts and
  learning rates, not on a closed form; ``tests/test_mixup.py`` and ``tests/test_geometry.py`` check them with
  statistical or geometric bounds;
* the strict-saddle property of the deep CE-UFM's ETF (Garrod & Keating 2024, Thm. 4: a PSD Hessian at a critical
  point that is not a minimiser) needs a full Hessian eigen-decomposition per problem; it is checked at four
  points in ``tests/test_deep.py``.
"""

import importlib

from ufm.claims.core import Claim

__all__ = ["CATALOGUE", "FAMILY_MODULES", "FAMILY_OF", "by_family", "get_claim"]

#: The claim modules ``ufm.claims.<name>``, in the order of the scorecard. One entry per family.
FAMILY_MODULES = (
    "plain",
    "vicinity",
    "deep",
    "mixup",
    "imbalanced",
    "sphere",
    "fixed",
    "losses",
    "relu",
    "regression",
)


def _collect() -> tuple[dict[str, Claim], dict[str, str]]:
  claims, family = {}, {}
  for mod_name in FAMILY_MODULES:
    module = importlib.import_module(f"ufm.claims.{mod_name}")
    got = getattr(module, "CLAIMS", None)
    if not isinstance(got, tuple) or not all(isinstance(c, Claim) for c in got):
      raise TypeError(f"ufm.claims.{mod_name}.CLAIMS must be a tuple of ufm.claims.Claim")
    for c in got:
      if c.name in claims:
        raise ValueError(f"claim name {c.name!r} of ufm.claims.{mod_name} is already used by "
                         f"ufm.claims.{family[c.name]}; claim names must be unique")
      claims[c.name], family[c.name] = c, mod_name
  return claims, family


#: Name -> claim, in the order of the scorecard; FAMILY_OF: name -> its family module.
CATALOGUE, FAMILY_OF = _collect()


def by_family() -> dict[str, list[str]]:
  """Family module -> the names of its claims (scorecard order)."""
  out: dict[str, list[str]] = {m: [] for m in FAMILY_MODULES}
  for name, fam in FAMILY_OF.items():
    out[fam].append(name)
  return out


def get_claim(name: str) -> Claim:
  """The catalogue claim ``name``; ``ValueError`` listing the known names otherwise."""
  if name not in CATALOGUE:
    raise ValueError(f"unknown claim {name!r}; known claims: {', '.join(CATALOGUE)}")
  return CATALOGUE[name]
