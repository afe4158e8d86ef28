"""Experiments: one module per paper figure or claim, run by ``python -m experiments``.

Every module has the same three parts:

* ``get_config(arg=None) -> ml_collections.ConfigDict``: the full configuration, or the
  small one the tests run with ``arg="smoke"``;
* ``run(config, ctx) -> xarray.Dataset``: validates the whole configuration first
  (so bad values fail before anything compiles), then calls ``ufm``'s vmapped solvers
  through ``ctx.sweep`` over the axes ``ctx.axes`` (progress bars and resumable chunks; no
  training loops here);
* ``plot(results, config) -> matplotlib.figure.Figure``: no JAX compute;

optionally ``sweep(config) -> dict``, the vmapped axes in order (name -> values) when they are
not the default seed axis ``{"seed": config.seed + arange(config.num_seeds)}``; and the module
constants ``PAPER``, ``FIGURE`` and ``RUNTIME`` (the measured time of the full
configuration on a 2-core CPU) that ``python -m experiments list --verbose`` prints. ``FIGURE`` says what the
figure is, and starts with one of :data:`KINDS`: "reproduces <paper> Fig. N (same setting)" or "reproduces <paper>
Fig. N (paper: <their setting>; ours: <ours>)" only where the paper has that figure of the UFM, "checks <paper>
Thm. N" for a numerical check of a stated result, "new" otherwise.

Optionally ``summary(results, config)`` and ``findings(summary, config)``: the numbers the figure's text in
``figures/README.md`` quotes, and that text (:mod:`experiments.report`).

:mod:`experiments.runner` does the shared work: ``runner.compute(name, config)`` runs one
(float64 when ``config.x64``, with a default context and the axes); ``runner.run`` also stores
the results under ``results/<experiment>/<config-hash>/`` (see its docstring for the format).

Citations "derivations §N" refer to the sections of ``ufm/theory/derivations.md``.
"""

import importlib
import pkgutil
from types import ModuleType

#: Modules of this package that are not experiments.
_NOT_EXPERIMENTS = ("report", "runner")
#: What every experiment module defines.
REQUIRED = ("PAPER", "FIGURE", "RUNTIME", "get_config", "run", "plot")
#: How every ``FIGURE`` starts: what the figure is.
KINDS = ("reproduces ", "checks ", "new")


def _discover() -> tuple[str, ...]:
  """The public modules of this package other than the runner, sorted by name (no import needed)."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if not m.name.startswith("_") and not m.ispkg and m.name not in _NOT_EXPERIMENTS))


#: The experiments: every public module of this package except :mod:`experiments.runner`, sorted by name (their
#: prefixes group them: ``deep_``, ``kd_``, ``mixup_``, ``net_``, ``perturbation_``). A new experiment is a new
#: module; nothing else registers it.
EXPERIMENTS = _discover()

__all__ = ["EXPERIMENTS", "KINDS", "REQUIRED", "get", "title"]


def get(name: str) -> ModuleType:
  """The experiment module ``name``; ``ValueError`` listing the valid names otherwise, ``TypeError`` when the module
  lacks one of :data:`REQUIRED`."""
  if name not in EXPERIMENTS:
    raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
  module = importlib.import_module(f"experiments.{name}")
  missing = [a for a in REQUIRED if not hasattr(module, a)]
  missing += [] if (module.__doc__ or "").strip() else ["a docstring"]
  if hasattr(module, "FIGURE") and not str(module.FIGURE).startswith(KINDS):
    missing += [f"a FIGURE starting with one of {', '.join(repr(k.strip()) for k in KINDS)} (it has "
                f"{module.FIGURE!r})"]
  if missing:
    raise TypeError(f"experiments.{name} is not an experiment module: it lacks {', '.join(missing)}")
  return module


def title(name: str) -> str:
  """The title of experiment ``name``: the first paragraph of its module docstring on one line, RST markup removed."""
  first = get(name).__doc__.strip().split("\n\n")[0]
  return " ".join(first.replace("``", "").replace(":math:", "").split())
