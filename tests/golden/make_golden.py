"""Runs the peer NC code bases ONCE on the fixtures of ``fixtures.npz`` and writes ``golden.json``.

Not part of the test suite and not importable by ufm: it needs PyTorch (and SciPy), which ufm does not depend on.
Run it in a separate environment, on checkouts of the peers at the commits recorded below::

    python3 -m venv peers-venv && peers-venv/bin/pip install torch numpy scipy
    git clone https://github.com/rhubarbwu/neural-collapse && git -C neural-collapse checkout c05a0b8
    git clone https://github.com/tding1/Neural-Collapse && git -C Neural-Collapse checkout 04ef586
    peers-venv/bin/python tests/golden/make_golden.py --rhubarbwu neural-collapse --zhu Neural-Collapse

What runs:

* ``rhubarbwu/neural-collapse`` (the library of Wu & Papyan 2024, "Linguistic Collapse", arXiv 2405.17767): its
  accumulators (``MeanAccumulator``, ``CovarAccumulator``, ``VarNormAccumulator``, ``DecAccumulator``) in float64
  and its ``measure`` / ``kernels`` functions, imported from the checkout, with its default (unweighted) global
  mean. Reductions the library leaves to the user follow its README and the paper: the CoV of the centred mean
  norms and the UNC3 cosines with ``torch.std`` (ddof 1), UNC3 as ``similarities(...).var()`` (ddof 1), the
  equiangularity as the population std of the cosine grid via its own ``kernel_stats``.
* ``tding1/Neural-Collapse`` (Zhu et al. 2021, arXiv 2105.02375): the functions of ``validate_NC.py`` (``compute_info``,
  ``compute_Sigma_W``, ``compute_Sigma_B``, ``compute_ETF``, ``compute_W_H_relation``, ``compute_Wh_b_relation``)
  and its NC1 expression from ``main``, taken from the file's syntax tree and executed on a stand-in model whose
  penultimate features are the fixture's rows (the script's hard-coded class counts replaced by the fixture's;
  ``.cuda()`` made a no-op, as there is no GPU here).
* Papyan, Han & Donoho 2020 (arXiv 2008.08186): the paper's Colab notebook could NOT be retrieved (it is not in a
  repository). ``papyan_notebook`` below is a transcription of its ``analysis`` function as reproduced in public
  copies (class means, Sigma_W / N, unweighted global mean and Sigma_B / C, ``svds(Sb, k=C-1)``, no division by
  C, ``torch.std`` CoVs, squared NC3 distance, mutual coherence, NCC mismatch with the network's own biased
  decisions). Its numbers are the published formulas, not the original code's output.
"""

import argparse
import ast
import datetime
import importlib.util
import json
import math
import pathlib
import subprocess
import sys
import types

import numpy as np
import scipy
import scipy.linalg as scilin
import torch
from scipy.sparse.linalg import svds

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
import fixtures  # noqa: E402

torch.set_default_dtype(torch.float64)


def _commit(path):
  try:
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def _safe(fn):
  try:
    v = float(fn())
    return v if math.isfinite(v) else {"nonfinite": repr(v)}
  except Exception as e:  # the peer's own failure is a result too
    return {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def _batches(H, y, size=16):
  return [(torch.tensor(H[i:i + size]), torch.tensor(y[i:i + size], dtype=torch.int64))
          for i in range(0, len(y), size)]


def run_rhubarbwu(case):
  from neural_collapse.accumulate import CovarAccumulator, DecAccumulator, MeanAccumulator, VarNormAccumulator
  from neural_collapse.kernels import dist_kernel, kernel_stats, log_kernel, riesz_kernel
  from neural_collapse.measure import (clf_ncc_agreement, covariance_ratio, distance_norms, interference_grid,
                                       mean_norms, orthogonality_deviation, self_duality_error, similarities,
                                       simplex_etf_error, variability_cdnv)
  H, y, W = case["H"], case["labels"], torch.tensor(case["W"])
  K, d = W.shape
  f64 = dict(dtype=torch.float64)
  mean_acc = MeanAccumulator(K, d, "cpu", **f64)
  for X, Y in _batches(H, y):
    mean_acc.accumulate(X, Y)
  means, mG = mean_acc.compute()
  covar, varn = CovarAccumulator(K, d, "cpu", M=means, **f64), VarNormAccumulator(K, d, "cpu", M=means, **f64)
  dec = DecAccumulator(K, d, "cpu", M=means, W=W, **f64)
  for X, Y in _batches(H, y):
    covar.accumulate(X, Y, means)
    varn.accumulate(X, Y, means)
    dec.accumulate(X, Y, W, means)
  Sw = covar.compute()
  var_norms, _ = varn.compute()
  ood = MeanAccumulator(4, d, "cpu", **f64)
  for X, Y in _batches(case["H_ood"], case["labels_ood"]):
    ood.accumulate(X, Y)
  _, mG_ood = ood.compute()
  norms = lambda: mean_norms(means, mG)
  cos_kernel = lambda data, tile_size=None: interference_grid(data)
  sim_cos = lambda: similarities(W, means, mG, cos=True)
  return {
      "nc1_pinv": _safe(lambda: covariance_ratio(Sw, means, mG, "pinv")),
      "nc1_svd": _safe(lambda: covariance_ratio(Sw, means, mG, "svd")),
      "nc1_quotient": _safe(lambda: covariance_ratio(Sw, means, mG, "quotient")),
      "cdnv_exp1": _safe(lambda: variability_cdnv(var_norms, means, dist_exp=1.0)),
      "cdnv_exp2": _safe(lambda: variability_cdnv(var_norms, means, dist_exp=2.0)),
      "nc2_etf_error": _safe(lambda: simplex_etf_error(means, mG)),
      "norms_cov": _safe(lambda: norms().std() / norms().mean()),
      "cos_mean": _safe(lambda: kernel_stats(means, mG, kernel=cos_kernel)[0]),
      "cos_std_ddof0": _safe(lambda: math.sqrt(kernel_stats(means, mG, kernel=cos_kernel)[1])),
      "kernel_dist_mean": _safe(lambda: kernel_stats(means, mG, kernel=dist_kernel)[0]),
      "kernel_dist_var": _safe(lambda: kernel_stats(means, mG, kernel=dist_kernel)[1]),
      "kernel_log_mean": _safe(lambda: kernel_stats(means, mG, kernel=log_kernel)[0]),
      "kernel_log_var": _safe(lambda: kernel_stats(means, mG, kernel=log_kernel)[1]),
      "kernel_riesz_mean": _safe(lambda: kernel_stats(means, mG, kernel=riesz_kernel)[0]),
      "kernel_riesz_var": _safe(lambda: kernel_stats(means, mG, kernel=riesz_kernel)[1]),
      "nc3_dual_error": _safe(lambda: self_duality_error(W, means, mG)),
      "unc3_dot_var": _safe(lambda: similarities(W, means, mG).var()),
      "unc3_cos_cov": _safe(lambda: sim_cos().std() / sim_cos().mean()),
      "dual_dists_mean": _safe(lambda: distance_norms(W, means, mG).mean()),
      "nc4_agree_weighted": _safe(lambda: clf_ncc_agreement(dec, weighted=True)),
      "nc4_agree_unweighted": _safe(lambda: clf_ncc_agreement(dec, weighted=False)),
      "nc5_ood_dev": _safe(lambda: orthogonality_deviation(means, mG_ood)),
      "weighted_global_mean": _safe(lambda: mean_acc.compute(weighted=True)[1].norm()),
  }


def _zhu_namespace(repo, counts):
  """The functions of validate_NC.py (and its NC1 expression in main) executed from the file's syntax tree."""
  spec = importlib.util.spec_from_file_location("zhu_utils", pathlib.Path(repo) / "utils.py")
  utils = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(utils)
  tree = ast.parse((pathlib.Path(repo) / "validate_NC.py").read_text())
  wanted = {"FCFeatures", "compute_info", "compute_Sigma_W", "compute_Sigma_B", "compute_ETF",
            "compute_W_H_relation", "compute_Wh_b_relation"}
  body = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in wanted]
  main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
  nc1 = next(n.value for n in ast.walk(main) if isinstance(n, ast.Assign)
             and getattr(n.targets[0], "id", None) == "collapse_metric")
  ns = {"torch": torch, "np": np, "scilin": scilin, "compute_accuracy": utils.compute_accuracy,
        "AverageMeter": utils.AverageMeter, "CIFAR10_TRAIN_SAMPLES": tuple(int(c) for c in counts),
        "CIFAR10_TEST_SAMPLES": tuple(int(c) for c in counts)}
  exec(compile(ast.Module(body=body, type_ignores=[]), "validate_NC.py", "exec"), ns)
  ns["nc1_expression"] = compile(ast.Expression(body=nc1), "validate_NC.py:main", "eval")
  return ns


def run_zhu(case, repo):
  H, y, W, b = case["H"], case["labels"], torch.tensor(case["W"]), torch.tensor(case["b"])
  K = W.shape[0]
  ns = _zhu_namespace(repo, np.bincount(y, minlength=K))
  torch.Tensor.cuda = lambda self, *a, **k: self  # no GPU: .cuda() is the identity
  fc = ns["FCFeatures"]()

  def model(inputs):  # the penultimate features are the inputs; fc's pre-hook sees them
    fc(None, (inputs.clone(),))
    return (inputs @ W.T + b, inputs)

  args = types.SimpleNamespace(device="cpu", dataset="cifar10")
  loader = _batches(H, y)
  out = {}
  try:
    mu_G, mu_c, _, _ = ns["compute_info"](args, model, fc, loader, isTrain=True)
    Sigma_W = ns["compute_Sigma_W"](args, model, fc, mu_c, loader, isTrain=True)
    Sigma_B = ns["compute_Sigma_B"](mu_c, mu_G)
    scope = {**ns, "Sigma_W": Sigma_W, "Sigma_B": Sigma_B, "mu_c_dict_train": mu_c}
    out["nc1_collapse_metric"] = _safe(lambda: eval(ns["nc1_expression"], scope))
    out["nc2_ETF_metric_W"] = _safe(lambda: ns["compute_ETF"](W))
    out["nc3_WH_relation_metric"] = _safe(lambda: ns["compute_W_H_relation"](W, mu_c, mu_G)[0])
    out["nc4_Wh_b_relation_metric"] = _safe(lambda: ns["compute_Wh_b_relation"](W, mu_G, b))
  except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
  return out


def papyan_notebook(case):
  """Transcription (see the module docstring) of the notebook's analysis function, on the fixture's rows."""
  h_all, target, Wt, bt = (torch.tensor(case["H"]), torch.tensor(case["labels"]), torch.tensor(case["W"]),
                           torch.tensor(case["b"]))
  C = Wt.shape[0]
  N = [int((target == c).sum()) for c in range(C)]
  M = torch.stack([h_all[target == c].sum(0) / N[c] for c in range(C)]).T  # d x C
  Sw, match = 0, 0
  output = h_all @ Wt.T + bt
  for c in range(C):
    idxs = (target == c).nonzero(as_tuple=True)[0]
    h_c = h_all[idxs, :]
    z = h_c - M[:, c].unsqueeze(0)
    Sw = Sw + torch.sum(torch.matmul(z.unsqueeze(-1), z.unsqueeze(1)), dim=0)
    net_pred = torch.argmax(output[idxs, :], dim=1)
    scores = torch.stack([torch.norm(h_c[i, :] - M.T, dim=1) for i in range(h_c.shape[0])])
    match += int((torch.argmin(scores, dim=1) == net_pred).sum())
  Sw = Sw / sum(N)
  muG = torch.mean(M, dim=1, keepdim=True)
  M_ = M - muG
  Sb = torch.matmul(M_, M_.T) / C
  M_norms, W_norms = torch.norm(M_, dim=0), torch.norm(Wt.T, dim=0)

  def nc1():
    eigvec, eigval, _ = svds(Sb.numpy(), k=C - 1)
    return np.trace(Sw.numpy() @ (eigvec @ np.diag(eigval ** (-1)) @ eigvec.T))

  def coherence(V):
    G = V.T @ V
    G = G + torch.ones((C, C)) / (C - 1)
    G = G - torch.diag(torch.diag(G))
    return torch.norm(G, 1).item() / (C * (C - 1))

  return {
      "Sw_invSb": _safe(nc1),
      "norm_M_CoV": _safe(lambda: torch.std(M_norms) / torch.mean(M_norms)),
      "norm_W_CoV": _safe(lambda: torch.std(W_norms) / torch.mean(W_norms)),
      "W_M_dist": _safe(lambda: torch.norm(Wt.T / torch.norm(Wt.T, "fro") - M_ / torch.norm(M_, "fro")) ** 2),
      "cos_M": _safe(lambda: coherence(M_ / M_norms)),
      "cos_W": _safe(lambda: coherence(Wt.T / W_norms)),
      "NCC_mismatch": _safe(lambda: 1 - match / sum(N)),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rhubarbwu", required=True, help="checkout of rhubarbwu/neural-collapse")
  p.add_argument("--zhu", required=True, help="checkout of tding1/Neural-Collapse")
  p.add_argument("--commit-rhubarbwu", default=None, help="its commit, when the checkout is not a git clone")
  p.add_argument("--commit-zhu", default=None)
  a = p.parse_args()
  sys.path.insert(0, str(pathlib.Path(a.rhubarbwu).resolve()))
  cases = fixtures.load()
  result = {
      "_provenance": {
          "script": "tests/golden/make_golden.py", "fixtures": "tests/golden/fixtures.npz (tests/golden/fixtures.py)",
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
          "environment": f"python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}, "
                         f"scipy {scipy.__version__}, CPU, float64",
          "peers": {
              "rhubarbwu": {"repository": "https://github.com/rhubarbwu/neural-collapse",
                            "commit": a.commit_rhubarbwu or _commit(a.rhubarbwu)},
              "zhu2021": {"repository": "https://github.com/tding1/Neural-Collapse",
                          "commit": a.commit_zhu or _commit(a.zhu)},
              "papyan2020": {"repository": None, "commit": None,
                             "note": "transcription of the notebook's analysis function (original not retrieved)"},
          },
      },
      "rhubarbwu": {n: run_rhubarbwu(c) for n, c in cases.items()},
      "zhu2021": {n: run_zhu(c, a.zhu) for n, c in cases.items()},
      "papyan2020": {n: papyan_notebook(c) for n, c in cases.items()},
  }
  tmp = HERE / "golden.json.tmp"
  tmp.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
  tmp.replace(HERE / "golden.json")
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
