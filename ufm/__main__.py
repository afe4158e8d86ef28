"""``python -m ufm``: see :mod:`ufm.cli`."""

from ufm.cli import main

raise SystemExit(main())
