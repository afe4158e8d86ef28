"""Experiments: one module per paper figure or claim, run by ``python -m experiments``.

Every module has the same four parts:

* ``get_config(arg=None) -> ml_collections.ConfigDict``: the full configuration, or the
  small one the tests run with ``arg="smoke"``;
* ``sweep(config) -> dict``: the vmapped axes in order (name -> values);
* ``run(config, ctx=None) -> xarray.Dataset``: validates the whole configuration first
  (so bad values fail before anything compiles), then calls ``ufm``'s vmapped solvers
  through ``ctx.sweep`` (progress bars and resumable chunks; no training loops here);
* ``plot(results, config) -> matplotlib.figure.Figure``: no JAX compute.

and the module constants ``TITLE``, ``PAPER``, ``FIGURE`` and ``RUNTIME`` (the measured
time of the full configuration on a 2-core CPU) that ``python -m experiments list``
prints. :mod:`experiments.runner` stores results under
``results/<experiment>/<config-hash>/`` (see its docstring for the format).

Citations "derivations §N" refer to the sections of ``ufm/theory/derivations.md``.
"""

import importlib
from types import ModuleType

#: Registered experiments, in the order ``list`` prints them.
EXPERIMENTS = ("etf_emergence", "weight_decay_phase", "benign_landscape", "bias_mse_gram",
               "perturbation_nc1_flow", "perturbation_linearised_map", "perturbation_regularisation",
               "minority_collapse", "seli_distance",
               # mixup UFM
               "mixup_geometry", "mixup_confidence", "mixup_alpha_K",
               # deep linear UFM
               "deep_layers_nc", "deep_imbalanced_mse", "deep_mse_thresholds", "deep_ce_lowrank",
               # K > d, spherical UFM, fixed classifiers
               "kd_geometry", "kd_gnc2", "fixed_classifiers", "zipf_many_class",
               # Flax networks on real data
               "net_nc_dynamics", "net_layerwise_nc1", "net_imbalanced", "net_mixup")

__all__ = ["EXPERIMENTS", "get"]


def get(name: str) -> ModuleType:
  """The experiment module ``name``; ``ValueError`` listing the valid names otherwise."""
  if name not in EXPERIMENTS:
    raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
  return importlib.import_module(f"experiments.{name}")
