"""The one rule for which version a bare model name means: the highest numeric version.

Standard library only, so that every side that needs the rule (the repository, the offline
evaluation, the load generator's image without onnxruntime, the tests) imports this one
definition instead of repeating it.
"""

from __future__ import annotations

from pathlib import Path


def version_key(version: str) -> int:
    """The order of versions: numeric, so that version 10 comes after version 9."""
    return int(version)


def version_dirs(model_root: Path) -> list[Path]:
    """``model_root``'s numeric version directories, lowest version first."""
    if not model_root.is_dir():
        return []
    found = [p for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(found, key=lambda p: version_key(p.name))


def highest_version_dir(model_root: Path) -> Path | None:
    """The directory a bare model name serves: its highest numeric version, if any."""
    versions = version_dirs(model_root)
    return versions[-1] if versions else None
