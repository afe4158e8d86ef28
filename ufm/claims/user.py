"""Claims of one's own, resolved from ``module:attr`` or ``path/to/file.py:attr`` (``python -m ufm claims check``)."""

import importlib
import importlib.util
import os
import re
import sys

from ufm.claims.core import Claim

__all__ = ["load_claim"]


def load_claim(target: str) -> list[Claim]:
  """Resolves ``"module:attr"`` (or ``"path/to/file.py:attr"``) to its claim(s).

  ``attr`` may be a :class:`Claim` or a list/tuple of them. The working directory is importable.
  Raises ``ValueError`` with one clear sentence for a malformed target, an import error, a missing
  attribute, or an object that is not a claim.
  """
  if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
    raise ValueError(f"{target!r} is not of the form module:attr (e.g. my_claims:my_claim or path/file.py:my_claim)")
  mod_name, attr = target.split(":")
  try:
    if mod_name.endswith(".py"):
      if not os.path.isfile(mod_name):
        raise ValueError(f"file {mod_name!r} does not exist")
      name = "_ufm_user_claims_" + re.sub(r"\W", "_", os.path.abspath(mod_name))
      spec = importlib.util.spec_from_file_location(name, mod_name)
      module = importlib.util.module_from_spec(spec)
      sys.modules[name] = module
      spec.loader.exec_module(module)
    else:
      if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
      module = importlib.import_module(mod_name)
  except ValueError:
    raise
  except Exception as e:
    raise ValueError(f"cannot import {mod_name!r}: {type(e).__name__}: {e}") from None
  if not hasattr(module, attr):
    raise ValueError(f"module {mod_name!r} has no attribute {attr!r}")
  obj = getattr(module, attr)
  claims = list(obj) if isinstance(obj, (list, tuple)) else [obj]
  if not claims or not all(isinstance(c, Claim) for c in claims):
    raise ValueError(f"{target} is a {type(obj).__name__}, not a ufm.claims.Claim (or a list of them)")
  return claims
