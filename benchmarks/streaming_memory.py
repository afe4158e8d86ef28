r"""Streaming vs in-memory NC summary: agreement and peak memory (``python -m benchmarks.streaming_memory``).

The same synthetic features (``N x d`` rows, ``K`` classes, generated batch by batch from fixed seeds) are measured
twice, each in a fresh process so that the peak resident memory of each is its own: by
:class:`ufm.streaming.Accumulator` (two passes over batches of ``--batch`` rows, regenerated on the fly, never held
whole) and by :func:`ufm.canonical.summary` on the whole array. The table gives the largest relative difference
between the two over every scalar of the summary, and each process's peak RSS and wall time.

The default size is small (``N = 20 000``, ``d = 64``, ``K = 100``) so that it runs in seconds on a shared machine; the
case of the acceptance criterion is ``--N 1000000 --d 512 --K 1000`` (the in-memory path then needs several times
the 4 GB of the array itself; the streaming path ``O(Kd + d^2 + batch d)``).
"""

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import numpy as np


def _batches(N, d, K, batch):
  """The data set as a callable returning a fresh iterator of ``(H, labels, W)`` batches (deterministic)."""
  rng = np.random.default_rng(0)
  M = 3.0 * rng.normal(size=(K, d))
  W = 0.5 * M + rng.normal(size=(K, d))

  def gen():
    for i, start in enumerate(range(0, N, batch)):
      idx = np.arange(start, min(start + batch, N))
      y = (idx * 7919) % K
      r = np.random.default_rng(1000 + i)
      yield M[y] + r.normal(size=(idx.size, d)) + 1.0, y
  return gen, W


def _peak_gb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def run(mode, N, d, K, batch, conventions):
  """One measurement in this process: ``{"values": ..., "peak_rss_gb": ..., "wall_s": ...}``."""
  import jax
  jax.config.update("jax_enable_x64", True)
  from ufm import canonical, streaming
  gen, W = _batches(N, d, K, batch)
  t = time.perf_counter()
  if mode == "stream":
    acc = streaming.Accumulator(K, d, W=W, conventions=conventions)
    for step in (acc.add_means, acc.add_spread):
      for H, y in gen():
        step(H, y)
    out = acc.summary()
  else:
    parts = list(gen())
    H, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    del parts
    out = canonical.summary(H, y, W=W, conventions=conventions)
  values = {k: v for k, v in out.items() if k in canonical.SCALARS}
  return {"values": values, "peak_rss_gb": _peak_gb(), "wall_s": time.perf_counter() - t}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--N", type=int, default=20_000)
  p.add_argument("--d", type=int, default=64)
  p.add_argument("--K", type=int, default=100)
  p.add_argument("--batch", type=int, default=4096)
  p.add_argument("--conventions", default="ufm")
  p.add_argument("--mode", choices=("stream", "dense"), default=None, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  size = ["--N", str(a.N), "--d", str(a.d), "--K", str(a.K), "--batch", str(a.batch), "--conventions", a.conventions]
  if a.mode:
    print(json.dumps(run(a.mode, a.N, a.d, a.K, a.batch, a.conventions)))
    return None
  res = {}
  for mode in ("stream", "dense"):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.streaming_memory", "--mode", mode, *size],
                          capture_output=True, text=True, check=True)
    res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
  s, dn = res["stream"]["values"], res["dense"]["values"]
  rel = {k: abs(s[k] - dn[k]) / max(abs(dn[k]), 1e-300) for k in dn if math.isfinite(dn[k]) and dn[k] != 0}
  worst = max(rel, key=rel.get)
  print(f"N = {a.N:,}, d = {a.d}, K = {a.K}, batch = {a.batch:,}, conventions = {a.conventions}")
  print(f"{'path':<10}{'peak RSS (GB)':>15}{'wall (s)':>10}")
  for mode in ("stream", "dense"):
    print(f"{mode:<10}{res[mode]['peak_rss_gb']:>15.2f}{res[mode]['wall_s']:>10.1f}")
  print(f"largest relative difference: {rel[worst]:.1e} ({worst}) over {len(rel)} metrics")
  return {"rel": rel, **res}


if __name__ == "__main__":
  main()
