"""Which model the bare ``/v1/predict`` route serves when several are loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.errors import UnknownModelError
from service.runtime.model import SessionConfig
from service.runtime.repository import ModelRepository, latest_version_dir, load_repository
from tests.support.api import SHIPPED


def _repository_of(root: Path, names: list[str]) -> Path:
    """A repository holding the served graph under each of ``names`` (at its version)."""
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    for name in names:
        target = root / name / str(manifest["version"])
        target.mkdir(parents=True)
        shutil.copy(SHIPPED / "model.onnx", target / "model.onnx")
        (target / "manifest.json").write_text(json.dumps({**manifest, "name": name}))
    return root


def _load(root: Path, default: str | None = None) -> ModelRepository:
    return load_repository(root, SessionConfig(intra_op_threads=1), default, warmup_rows=2)


def test_egmn_is_the_default_beside_models_sorting_before_it(tmp_path: Path) -> None:
    repository = _load(_repository_of(tmp_path, ["cread", "egmn", "ziln"]))
    assert repository.names() == ["cread", "egmn", "ziln"]
    assert repository.default_name == "egmn"
    assert repository.default().name == "egmn"


def test_without_egmn_the_first_name_is_the_default(tmp_path: Path) -> None:
    repository = _load(_repository_of(tmp_path, ["wlr", "cread"]))
    assert repository.default_name == "cread"


def test_a_configured_default_wins(tmp_path: Path) -> None:
    repository = _load(_repository_of(tmp_path, ["cread", "egmn"]), default="cread")
    assert repository.default().name == "cread"


def test_a_configured_default_that_is_absent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError):
        _load(_repository_of(tmp_path, ["cread", "egmn"]), default="softmax")


def test_latest_version_dir_orders_versions_as_numbers(tmp_path: Path) -> None:
    for version in ("2", "10", "9", "notes"):
        (tmp_path / "egmn" / version).mkdir(parents=True)
    assert latest_version_dir(tmp_path, "egmn") == tmp_path / "egmn" / "10"
    with pytest.raises(UnknownModelError):
        latest_version_dir(tmp_path, "cread")
