r"""Benchmarks of ufm: ``python -m benchmarks [--quick] [--json PATH]``.

Prints a table and writes a JSON file with every figure, the environment and the date. The top-level keys
``sweep_vs_torch`` and ``sweep_vs_loop`` (case 1, float32), ``large_step_peak_fraction`` (case 2, float32,
the better of CE and MSE), ``metrics_vs_numpy`` (case 3) and ``sharded_identical`` (case 6) summarise it; the
cases are described in :mod:`benchmarks.cases`. ``--quick`` runs tiny sizes (the test suite runs it; its
timings mean nothing).

On a CPU the command asks JAX for one host device per core before JAX starts, so that the planned sweep
can use every core (:func:`ufm.sweep.plan_sweep`); on a GPU or TPU host the real devices are used.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["main", "run", "summarise", "table"]


def _setup_jax():
  """One CPU device per core (only possible before JAX's backends start) and float64 available."""
  import jax  # noqa: PLC0415 -- imported here so that the device count can still be set
  try:
    jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
  except RuntimeError:  # backends already started (e.g. inside the test process): keep what exists
    pass
  jax.config.update("jax_enable_x64", True)
  return jax


def environment() -> dict:
  """Versions, devices, CPU, load average and git commit of this run."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  cpu = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
  except OSError:
    pass
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                            cwd=Path(__file__).resolve().parents[1]).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    commit = None
  try:
    import torch  # noqa: PLC0415
    torch_version = torch.__version__
  except ImportError:
    torch_version = None
  devs = jax.devices()
  return dict(python=sys.version.split()[0], jax=jax.__version__, numpy=np.__version__, torch=torch_version,
              backend=jax.default_backend(), devices=len(devs), device_kind=devs[0].device_kind, cpu=cpu,
              cpu_count=os.cpu_count(), load_average_start=list(os.getloadavg()), git_commit=commit,
              platform=platform.platform())


def run(quick: bool = False) -> dict:
  """Runs the six cases; returns the JSON-ready report (see :func:`summarise`)."""
  _setup_jax()
  from benchmarks import cases  # noqa: PLC0415 -- after the device setup

  cfg = cases.CONFIGS["quick" if quick else "full"]
  env = environment()
  dtypes = cfg["dtypes"]  # float32 first: the dtype of the PyTorch baseline and of the summary
  t0 = time.perf_counter()

  def done(what, result):
    print(f"[{time.perf_counter() - t0:7.1f} s] {what} done", file=sys.stderr, flush=True)
    return result

  large_cfg = cases.large_config(cfg)
  bandwidth = done("copy bandwidth", cases.copy_bandwidth(cfg["bandwidth_bytes"], "float32"))
  bw = bandwidth["bytes_per_second"]
  peaks = {dt: cases.matmul_peak(large_cfg["matmul"], dt) for dt in dtypes}
  sweep = {dt: done(f"case 1 sweep {dt}", cases.case_sweep(cfg["sweep"], dt, peaks[dt]["flops_per_second"], bw))
           for dt in dtypes}
  sharded = done("case 6 sharded", cases.case_sharded(cfg["sweep"], sweep[dtypes[-1]]))
  large = [done(f"case 2 {loss} {dt}", cases.case_large(large_cfg, dt, loss, peaks[dt]["flops_per_second"], bw))
           for dt in dtypes for loss in cfg["losses"]]
  for dt in dtypes:  # the peak again after the steps (the load changes); the better of the two counts
    again = cases.matmul_peak(cfg["large"]["matmul"], dt)
    if again["flops_per_second"] > peaks[dt]["flops_per_second"]:
      peaks[dt] = again
    for r in large:
      if r["dtype"] == dt:
        r["peak_flops_per_second"] = peaks[dt]["flops_per_second"]
        r["peak_fraction"] = r["flops_per_second"] / r["peak_flops_per_second"]
        r["roofline"] = cases.roofline(r["seconds_per_step"], flops=r["flops_per_step"], nbytes=r["roofline"]["bytes"],
                                       peak=r["peak_flops_per_second"], bandwidth=bw)
  met = done("case 3 metrics", cases.case_metrics(cfg["metrics"], bw))
  comp = done("case 4 compile", cases.case_compile(cfg, sweep[dtypes[-1]], met))
  for s in sweep.values():
    s.pop("_result")
  env["load_average_end"] = list(os.getloadavg())
  env["seconds_total"] = time.perf_counter() - t0
  report = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), quick=quick,
                environment=env, cases=dict(sweep=sweep, large_step=large, matmul_peak=peaks, metrics=met,
                                            compile=comp, sharded=sharded, copy_bandwidth=bandwidth))
  return summarise(report)


def summarise(report: dict) -> dict:
  """Adds the top-level summary keys to ``report`` (in place; returned): ``sweep_vs_torch`` (``None`` with
  ``sweep_vs_torch_reason`` when PyTorch is unavailable), ``sweep_vs_loop``, ``large_step_peak_fraction``,
  ``metrics_vs_numpy``, ``sharded_identical``, ``roofline_fractions`` (case -> measured time over the time its
  bytes and FLOPs need at the measured bandwidth and peak; see :mod:`benchmarks.cases`)."""
  c = report["cases"]
  s32 = c["sweep"]["float32"]
  torch = s32.get("torch") or dict(available=False, reason="the PyTorch baseline did not run")
  s32["sweep_vs_torch"] = s32["sweep_rate"] / torch["rate"] if torch["available"] else None
  report["sweep_vs_torch"] = s32["sweep_vs_torch"]
  report.pop("sweep_vs_torch_reason", None)
  if report["sweep_vs_torch"] is None:
    report["sweep_vs_torch_reason"] = torch["reason"]
  report["sweep_vs_loop"] = s32["sweep_vs_loop"]
  report["large_step_peak_fraction"] = max(r["peak_fraction"] for r in c["large_step"] if r["dtype"] == "float32")
  report["metrics_vs_numpy"] = c["metrics"]["numpy_vs_ufm"]
  report["sharded_identical"] = bool(c["sharded"]["identical"])
  fractions = {f"sweep {dt}": s["roofline"]["roofline_fraction"] for dt, s in c["sweep"].items() if s.get("roofline")}
  fractions.update({f"large_step {r['loss']} {r['dtype']}": r["roofline"]["roofline_fraction"]
                    for r in c["large_step"] if r.get("roofline")})
  if c["metrics"].get("roofline"):
    fractions["metrics"] = c["metrics"]["roofline"]["roofline_fraction"]
  report["roofline_fractions"] = fractions
  return report


def _fmt(x, unit=""):
  if x is None:
    return "n/a"
  if isinstance(x, float):
    return f"{x:.3g}{unit}"
  return f"{x}{unit}"


def table(report: dict) -> str:
  """The report as a plain-text table: case, measurement, ufm, baseline, ratio."""
  c = report["cases"]
  rows = [("case", "measurement", "ufm", "baseline", "ratio")]
  for dt, s in c["sweep"].items():
    p = s["plan"]
    rows.append((f"1 sweep {dt}", f"{s['configs']} configs x {s['steps']} steps, config-steps/s "
                 f"(plan: {p['devices']} dev x batch {p['batch']}, {p['source']})",
                 _fmt(s["sweep_rate"]), f"loop {_fmt(s['loop_rate'])}", _fmt(s["sweep_vs_loop"], "x")))
    if "torch" in s:
      t = s["torch"]
      rows.append((f"1 sweep {dt}", f"vs PyTorch eager ({t.get('configs', '-')} configs x {t.get('steps', '-')} steps,"
                   " scaled)", _fmt(s["sweep_rate"]), f"torch {_fmt(t.get('rate'))}" if t["available"] else
                   "torch unavailable", _fmt(s.get("sweep_vs_torch"), "x")))
    rows.append((f"1 sweep {dt}", f"{s['paper_steps']} steps x {s['configs']} configs (extrapolated), s",
                 _fmt(s["paper_sweep_seconds_extrapolated"]), "", ""))
  for r in c["large_step"]:
    rows.append((f"2 large {r['loss']} {r['dtype']}", f"K={r['K']} d={r['d']} N={r['N']}: s/step, FLOP/s vs dot peak",
                 f"{_fmt(r['seconds_per_step'])} s, {_fmt(r['flops_per_second'])} (matmuls {r['matmul_share']:.0%})",
                 f"peak {_fmt(r['peak_flops_per_second'])}", _fmt(r["peak_fraction"])))
  m = c["metrics"]
  rows.append(("3 metrics", f"{m['metrics']} metrics K={m['K']} d={m['d']} N={m['N']}: s", _fmt(m["ufm_seconds"]),
               f"numpy {_fmt(m['numpy_seconds'])}", _fmt(m["numpy_vs_ufm"], "x")))
  rows.append(("3 metrics", "peak memory, bytes", _fmt(float(m["ufm_peak_bytes"])),
               f"numpy {_fmt(float(m['numpy_peak_bytes']))}", _fmt(m["numpy_peak_bytes"] / m["ufm_peak_bytes"], "x")))
  for name, t in c["compile"].items():
    if t is None:
      rows.append(("4 compile", f"{name}: not run in --quick", "", "", ""))
      continue
    rows.append(("4 compile", f"{name}: first / later call, s", _fmt(t["first"]), _fmt(t["later"]),
                 _fmt(t["first"] / t["later"], "x")))
  for dt, s in c["sweep"].items():
    if s.get("roofline"):
      r = s["roofline"]
      rows.append((f"roofline sweep {dt}", f"{r['bound']}-bound: {_fmt(float(r['bytes']))} B, {_fmt(r['flops'])} FLOP "
                   "per config-step", f"{_fmt(s['sweep_rate'])} /s", f"bound {_fmt(1 / r['roofline_seconds'])} /s",
                   _fmt(r["roofline_fraction"])))
  for r in c["large_step"]:
    if r.get("roofline"):
      rl = r["roofline"]
      rows.append((f"roofline large {r['loss']} {r['dtype']}", f"{rl['bound']}-bound per step",
                   f"{_fmt(r['seconds_per_step'])} s", f"bound {_fmt(rl['roofline_seconds'])} s",
                   _fmt(rl["roofline_fraction"])))
  if m.get("roofline"):
    rl = m["roofline"]
    rows.append(("roofline metrics", "read H once (float64)", f"{_fmt(m['ufm_seconds'])} s",
                 f"bound {_fmt(rl['roofline_seconds'])} s", _fmt(rl["roofline_fraction"])))
  bw = c.get("copy_bandwidth")
  if bw:
    rows.append(("bandwidth", f"jitted x + 1 on {bw['bytes'] // 2**20} MiB", f"{_fmt(bw['bytes_per_second'])} B/s",
                 "", ""))
  sh = c["sharded"]
  rows.append(("6 sharded", f"{sh['devices']} devices vs 1, identical={sh['identical']}",
               f"{_fmt(sh['all_devices_seconds'])} s", f"{_fmt(sh['one_device_seconds'])} s", _fmt(sh["speedup"], "x")))
  widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
  lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)) for r in rows]
  lines.insert(1, "  ".join("-" * w for w in widths))
  summary = (f"sweep_vs_torch={_fmt(report['sweep_vs_torch'])} sweep_vs_loop={_fmt(report['sweep_vs_loop'])} "
             f"large_step_peak_fraction={_fmt(report['large_step_peak_fraction'])} "
             f"metrics_vs_numpy={_fmt(report['metrics_vs_numpy'])} sharded_identical={report['sharded_identical']}")
  env = report["environment"]
  head = (f"ufm benchmarks {report['date']} ({'quick' if report['quick'] else 'full'}): {env['backend']} x "
          f"{env['devices']} ({env['cpu']}), load average {env['load_average_start'][0]:.1f} -> "
          f"{env['load_average_end'][0]:.1f}")
  return "\n".join([head, *lines, summary])


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
    return x.item()
  return x


def main(argv=None) -> dict:
  """``python -m benchmarks [--quick] [--json PATH]``: runs, prints the table, writes the JSON report."""
  ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; timings mean nothing)")
  ap.add_argument("--json", type=Path, default=None, help="write the report here (JSON)")
  args = ap.parse_args(argv)
  report = _jsonable(run(quick=args.quick))
  print(table(report))
  if args.json is not None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
  return report
