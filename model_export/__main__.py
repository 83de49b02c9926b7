"""``python -m model_export``: the command line of :mod:`model_export.cli`."""

from model_export.cli import main

raise SystemExit(main())
