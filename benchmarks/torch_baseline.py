r"""The PyTorch baseline of benchmark case 1, written the way public UFM implementations run it (e.g. the
synthetic experiments of Dang et al. 2023, arXiv 2301.00437): ``nn.Parameter`` W and H, the regularised MSE
objective, ``torch.optim.SGD`` with momentum, an eager ``optimizer.step()`` loop, one configuration at a
time, default PyTorch threading, float32 (PyTorch's default dtype).

PyTorch is an optional extra (``pip install ufm[bench]``); without it :func:`torch_rate` reports the baseline
as unavailable and says why.
"""

import time

__all__ = ["torch_rate"]


def _import_torch():
  import torch  # noqa: PLC0415 -- optional dependency
  return torch


def torch_rate(*, K: int, d: int, n: int, lam: float, lr: float, momentum: float, init_scale: float,
               num_steps: int, num_configs: int, dtype: str = "float32", device: str | None = None) -> dict:
  r"""Configurations x steps per second of the eager PyTorch loop, timed on ``num_configs`` configurations of
  ``num_steps`` steps each (after 5 untimed warm-up steps per configuration); the caller scales the rate.

  Objective: :math:`\frac{1}{2N}\|WH - Y\|_F^2 + \frac{\lambda}{2}(\|W\|_F^2 + \|H\|_F^2)` (no bias).

  ``device``: ``"cuda"`` when ufm runs on a GPU and PyTorch sees CUDA (then float32 products at full precision,
  ``allow_tf32 = False``, stated in the result), else ``"cpu"``; default: ``"cuda"`` if available.

  Returns:
    ``dict(available=True, rate=..., seconds=..., configs=..., steps=..., threads=..., version=..., device=...,
    matmul_precision=...)``, or ``dict(available=False, reason=...)`` when PyTorch cannot be imported.
  """
  try:
    torch = _import_torch()
  except ImportError as e:
    return dict(available=False, reason=f"PyTorch is not installed ({e}); install the optional extra: "
                                        "pip install 'ufm[bench]'")
  dt = getattr(torch, dtype)
  if device is None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = False  # the same full-precision float32 products as ufm's comparison
  precision = "float32 products at full precision (allow_tf32=False)" if device == "cuda" else "CPU float32"
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  N = K * n
  Y = torch.eye(K, dtype=dt, device=device).repeat_interleave(n, dim=1)
  total = 0.0
  for seed in range(num_configs):
    torch.manual_seed(seed)
    W = torch.nn.Parameter(init_scale * torch.randn(K, d, dtype=dt, device=device))
    H = torch.nn.Parameter(init_scale * torch.randn(d, N, dtype=dt, device=device))
    opt = torch.optim.SGD([W, H], lr=lr, momentum=momentum)

    def step():
      opt.zero_grad()
      loss = 0.5 * ((W @ H - Y) ** 2).sum() / N + 0.5 * lam * ((W**2).sum() + (H**2).sum())
      loss.backward()
      opt.step()
      return loss.detach()

    for _ in range(5):
      step()
    sync()
    t0 = time.perf_counter()
    for _ in range(num_steps):
      loss = step()
    float(loss)
    sync()
    total += time.perf_counter() - t0
  return dict(available=True, rate=num_configs * num_steps / total, seconds=total, configs=num_configs,
              steps=num_steps, threads=torch.get_num_threads(), version=torch.__version__, device=device,
              matmul_precision=precision)
