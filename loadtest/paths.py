"""Where the load kit finds the repository's models and writes its report.

Standard library only: the locust image imports it without the service's dependencies.
"""

from __future__ import annotations

from pathlib import Path

#: the directory holding the ``loadtest`` package: the repository root (``/app`` in the image)
ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
REPORT = ROOT / "reports" / "benchmarks.md"
