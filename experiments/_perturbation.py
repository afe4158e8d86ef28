"""What the near-collapse (vicinity UFM) experiments share: the paper and its setting as a base configuration."""

import math

import ml_collections

from experiments import _common

#: Tirer, Huang & Niles-Weed, ICML 2023, "Perturbation analysis of neural collapse", arXiv 2210.16658.
PAPER = "Tirer, Huang & Niles-Weed 2023"


def base_config(arg: str | None) -> ml_collections.ConfigDict:
  """The paper's Fig. 1 setting: ``K = 4`` classes of ``n = 10`` samples in ``d = 10``, ``lam_W = sqrt(2)``, seed
  0, float64; at ``arg = "smoke"`` ``K = 2, d = 3, n = 2``. Each experiment adds its own fields."""
  c = ml_collections.ConfigDict()
  c.K, c.d, c.n = 4, 10, 10
  c.lam_W = math.sqrt(2)
  c.seed = 0
  c.x64 = True
  if _common.variant(arg) == "smoke":
    c.K, c.d, c.n = 2, 3, 2
  return c
