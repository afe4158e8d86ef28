"""``python -m ufm measure``: the neural-collapse summary of features in a file, streamed in batches.

The command reads a ``.npz`` (``H``, ``labels``, optionally ``W``, ``b``, ``H_ood``, ``labels_ood``) or ``.npy`` files
without pickles, memory-mapped where possible, and accumulates the metrics of :mod:`ufm.streaming` under the chosen
:mod:`ufm.conventions` (NC1-NC5 and their variants; definitions and sources there).
"""

import json
import math

from ufm.validate import check_int

__all__ = ["json_safe", "load_features", "measure", "ood_mean"]


def json_safe(x):
  """``x`` with non-finite floats as JSON can hold them: NaN as ``null``, infinities as ``"inf"`` / ``"-inf"``."""
  if isinstance(x, float) and not math.isfinite(x):
    return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  return x


def load_features(args):
  """Features (memory-mapped where the file allows), labels, W, b from ``measure``'s arguments."""
  import numpy as np
  from pathlib import Path
  path = Path(args.features)
  if not path.is_file():
    raise ValueError(f"features = {str(path)!r} is not a file; allowed: a .npz or .npy file")
  W = b = H_ood = y_ood = None
  try:
    if path.suffix == ".npz":
      z = np.load(path, allow_pickle=False)
      key = "H" if "H" in z.files else ("features" if "features" in z.files else None)
      if key is None or "labels" not in z.files:
        raise ValueError(f"features = {str(path)!r} holds {z.files}; allowed: arrays H (or features) and labels, "
                         "optionally W and b")
      H, y = z[key], z["labels"]
      W = z["W"] if "W" in z.files else None
      b = z["b"] if "b" in z.files else None
      H_ood = z["H_ood"] if "H_ood" in z.files else None
      y_ood = z["labels_ood"] if "labels_ood" in z.files else None
    else:
      if args.labels is None:
        raise ValueError("labels: give --labels PATH.npy with a .npy FEATURES file")
      H = np.load(path, mmap_mode="r", allow_pickle=False)
      y = np.load(args.labels, mmap_mode="r", allow_pickle=False)
    W = np.load(args.W, allow_pickle=False) if args.W else W
    b = np.load(args.b, allow_pickle=False) if args.b else b
    if args.ood:
      H_ood = np.load(args.ood, mmap_mode="r", allow_pickle=False)
      if isinstance(H_ood, np.lib.npyio.NpzFile):
        H_ood = H_ood["H"] if "H" in H_ood.files else None
        if H_ood is None:
          raise ValueError(f"ood = {args.ood!r} holds no array H; allowed: a .npy, or a .npz with H")
    y_ood = np.load(args.ood_labels, allow_pickle=False) if args.ood_labels else y_ood
  except (OSError, EOFError, KeyError) as e:
    raise ValueError(f"features: cannot read the arrays ({e}); allowed: .npz or .npy files without pickles") from None
  return H, y, W, b, H_ood, y_ood


def ood_mean(H_ood, y_ood, d, conv, batch):
  """The global mean of the OOD features, streamed: the sample mean, or under ``class_means`` conventions with
  labels the mean of the OOD class means."""
  import numpy as np
  if H_ood.ndim != 2 or H_ood.shape[1] != d:
    hint = " (transposed? one row per sample)" if H_ood.ndim == 2 and H_ood.shape[0] == d else ""
    raise ValueError(f"ood has shape {H_ood.shape}; allowed: (N', d) = (N', {d}){hint}")
  if y_ood is not None and (y_ood.shape != (H_ood.shape[0],) or y_ood.dtype.kind not in "iu" or y_ood.min() < 0):
    raise ValueError(f"ood labels have shape {y_ood.shape}; allowed: ({H_ood.shape[0]},) integers >= 0")
  total, sums, counts = np.zeros(d), {}, None
  if y_ood is not None:
    counts = np.bincount(y_ood)
    sums = np.zeros((counts.size, d))
  for i in range(0, H_ood.shape[0], batch):
    Hb = np.asarray(H_ood[i:i + batch], np.float64)
    total += Hb.sum(0)
    if y_ood is not None:
      np.add.at(sums, y_ood[i:i + batch], Hb)
  if y_ood is not None and conv.global_mean == "class_means":
    present = counts > 0
    return (sums[present] / counts[present, None]).mean(0)
  return total / H_ood.shape[0]


def measure(args) -> int:
  """``measure``: the NC metrics of the features in a file, streamed in batches."""
  import numpy as np

  from ufm import conventions, streaming
  conv = conventions.get(args.conventions)
  H, y, W, b, H_ood, y_ood = load_features(args)
  if H.ndim != 2 or y.ndim != 1 or H.shape[0] != y.shape[0]:
    hint = " (transposed? one row per sample)" if H.ndim == 2 and H.shape[1] == y.shape[0] else ""
    raise ValueError(f"features have shape {H.shape} and labels {y.shape}; allowed: (N, d) and (N,){hint}")
  if y.dtype.kind not in "iu":
    raise ValueError(f"labels have dtype {y.dtype}; allowed: integers")
  batch = check_int("batch", args.batch, lo=1)
  K = args.K if args.K is not None else (W.shape[0] if W is not None else int(np.max(y)) + 1)
  N = H.shape[0]
  batches = lambda: ((H[i:i + batch], y[i:i + batch]) for i in range(0, N, batch))
  ood_centre = None if H_ood is None else ood_mean(H_ood, y_ood, H.shape[1], conv, batch)
  acc = streaming.Accumulator(K, H.shape[1], W=W, b=b, conventions=conv)
  for step in (acc.add_means, acc.add_spread):
    for Hb, yb in batches():
      step(Hb, yb)
  out = acc.summary(ood_mean=ood_centre)
  if args.json:
    print(json.dumps(json_safe({**out, "convention_fields": conv.as_dict()})))
    return 0
  print(f"N = {out['N']:,} samples, K = {K} classes ({len(out['present'])} present"
        + (f"; absent: {out['absent']}" if out["absent"] else "") + f"), d = {H.shape[1]}; conventions: {conv.name}")
  for name, value in out.items():
    if isinstance(value, float):
      print(f"{name:<24}{value:18.10g}")
  return 0
