"""Conventions as data: each preset reproduces its peer's own numbers (tests/golden/golden.json, produced by
tests/golden/make_golden.py from the peers' code on tests/golden/fixtures.npz); bad conventions are refused."""

import json
import math
import pathlib
import sys

import numpy as np
import pytest

from helpers import assert_close
from ufm import canonical, conventions

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN_DIR))
import fixtures  # noqa: E402

GOLDEN = json.loads((GOLDEN_DIR / "golden.json").read_text())
CASES = fixtures.load()

#: preset -> (peer in golden.json, {peer's name: ufm summary name}).
_RHUBARBWU = {"nc1_pinv": "nc1_pinv", "nc1_svd": "nc1_rank", "nc1_quotient": "nc1_ratio", "nc2_etf_error": "nc2",
              "norms_cov": "equinorm_M", "cos_std_ddof0": "equiangularity_M", "kernel_dist_mean": "kernel_dist_mean",
              "kernel_dist_var": "kernel_dist_var", "kernel_log_mean": "kernel_log_mean",
              "kernel_log_var": "kernel_log_var", "kernel_riesz_mean": "kernel_riesz_mean",
              "kernel_riesz_var": "kernel_riesz_var", "nc3_dual_error": "nc3", "unc3_dot_var": "unc3_dot",
              "unc3_cos_cov": "unc3", "dual_dists_mean": "nc3_classwise", "nc4_agree_weighted": "nc4",
              "nc4_agree_unweighted": "nc4_classes", "nc5_ood_dev": "nc5"}
MAPS = {
    "wu2024": ("rhubarbwu", {**_RHUBARBWU, "cdnv_exp2": "cdnv"}),
    "rhubarbwu": ("rhubarbwu", {**_RHUBARBWU, "cdnv_exp1": "cdnv"}),
    "zhu2021": ("zhu2021", {"nc1_collapse_metric": "nc1", "nc2_ETF_metric_W": "nc2_W",
                            "nc3_WH_relation_metric": "nc3", "nc4_Wh_b_relation_metric": "bias_relation"}),
    "papyan2020": ("papyan2020", {"Sw_invSb": "nc1", "norm_M_CoV": "equinorm_M", "norm_W_CoV": "equinorm_W",
                                  "W_M_dist": "nc3", "cos_M": "max_angle_M", "cos_W": "max_angle_W",
                                  "NCC_mismatch": "nc4"}),
}

#: Where the peer itself fails, the reason (and what ufm returns instead is checked to be finite).
PEER_FAILURES = {
    ("rhubarbwu", "k_gt_d", "nc1_svd"): "scipy svds(k = K - 1) needs K - 1 < d",
    ("papyan2020", "k_gt_d", "Sw_invSb"): "scipy svds(k = C - 1) needs C - 1 < d",
}

#: Entries whose value is ill-conditioned in float64 itself (the peer's rounding differs from ufm's by more than
#: 1e-12 relative for a stated reason): the CoV of the UNC3 cosines at the near collapse (see TOL["golden_cov"]).
ILL_CONDITIONED = {("near_collapse", "unc3_cos_cov"): "golden_cov"}


def _summary(case, preset, block=None):
  c = CASES[case]
  return canonical.summary(c["H"], c["labels"], W=c["W"], b=c["b"], conventions=preset, H_ood=c["H_ood"],
                           labels_ood=c["labels_ood"], block=block)


def relative_differences(preset, case, block=None) -> dict:
  """{peer name: |ufm - peer| / |peer|} (absolute where the peer's value is 0) for one preset and fixture."""
  peer, names = MAPS[preset]
  want, got = GOLDEN[peer][case], _summary(case, preset, block)
  out = {}
  for pname, uname in names.items():
    w = want[pname]
    if isinstance(w, dict):
      assert (peer, case, pname) in PEER_FAILURES, f"{peer} failed unexpectedly on {case}/{pname}: {w}"
      assert math.isfinite(got[uname]), (case, pname)
      continue
    out[pname] = abs(got[uname] - w) / (abs(w) if w else 1.0)
  return out


@pytest.mark.parametrize("preset", list(MAPS))
@pytest.mark.parametrize("case", list(CASES))
def test_preset_reproduces_its_peer(preset, case):
  """Every mapped metric within TOL["golden"] (1e-12 relative) of the peer's own output."""
  peer, names = MAPS[preset]
  got = _summary(case, preset)
  for pname, rel in relative_differences(preset, case).items():
    kind = ILL_CONDITIONED.get((case, pname), "golden")
    assert_close(got[names[pname]], GOLDEN[peer][case][pname], kind, f"{preset}/{case}/{pname} (rel {rel:.1e})")
