"""Model repositories the live-reload tests change: copies of a few shipped versions, and new
versions made from them (copied in under a temporary name and renamed, as a deployer should),
whole or broken in one of the ways a load must refuse."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tests.support import MODELS


def copy_repository(root: Path, labels: list[str]) -> Path:
    """``root`` holding a copy of each shipped ``name/version`` of ``labels``."""
    for label in labels:
        shutil.copytree(MODELS / label, root / label)
    return root


def stage_version(root: Path, name: str, source: str, version: str) -> Path:
    """A copy of ``name/source`` as version ``version`` under a name the repository ignores
    (``<version>.incoming``: not a number), its manifest naming the new version."""
    staged = root / name / f"{version}.incoming"
    shutil.copytree(root / name / source, staged)
    manifest = json.loads((staged / "manifest.json").read_text())
    manifest["version"] = version
    (staged / "manifest.json").write_text(json.dumps(manifest))
    return staged


def publish(staged: Path) -> Path:
    """The staged directory renamed to its version: one atomic step."""
    final = staged.with_name(staged.name.removesuffix(".incoming"))
    os.rename(staged, final)
    return final


def add_version(root: Path, name: str, source: str, version: str) -> Path:
    return publish(stage_version(root, name, source, version))


def retract(version_dir: Path) -> None:
    """Take a version out: renamed away first (atomic), then deleted."""
    gone = version_dir.with_name(f".{version_dir.name}.removed")
    os.rename(version_dir, gone)
    shutil.rmtree(gone)


def set_manifest(version_dir: Path, **fields: object) -> None:
    path = version_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


def break_version(version_dir: Path, how: str) -> None:
    """Break a version as ``how`` says: ``truncated`` (half of model.onnx, as a copy still
    under way leaves it), ``sha256`` (the manifest names another digest), ``onnx`` (bytes
    that are no ONNX graph, with their own digest in the manifest), ``manifest`` (not
    JSON)."""
    onnx = version_dir / "model.onnx"
    if how == "truncated":
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    elif how == "sha256":
        set_manifest(version_dir, onnx_sha256="0" * 64)
    elif how == "onnx":
        garbage = b"this is not an onnx graph" * 100
        onnx.write_bytes(garbage)
        set_manifest(version_dir, onnx_sha256=hashlib.sha256(garbage).hexdigest())
    elif how == "manifest":
        (version_dir / "manifest.json").write_text('{"name": "egmn", "version": ')
    else:
        raise ValueError(how)
