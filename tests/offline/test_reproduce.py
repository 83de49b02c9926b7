"""``make reproduce``'s logic on a build of seconds: a tiny EGMN trained and exported twice.

The real check (``make models`` twice on the shipped tree) takes hours on 2 cores; here the
same function drives a small build in a throwaway git repository, so that what it checks
(git status clean, every graph's sha256 unchanged) and that it notices a change are tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_export.reproduce import differences, onnx_digests, reproduce
from tests.support import ROOT

TINY = [sys.executable, str(ROOT / "tests" / "support" / "tiny_egmn.py"), "models/tiny/1"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository whose only tracked files are one tiny build's model directory."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    subprocess.run(TINY, cwd=tmp_path, check=True, capture_output=True, env=os.environ.copy())
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tiny")
    return tmp_path


@pytest.mark.slow
def test_two_builds_of_a_small_model_leave_the_tree_and_graph_unchanged(repo: Path) -> None:
    before = onnx_digests(repo / "models")
    assert list(before) == ["tiny/1/model.onnx"]
    assert reproduce(repo, repo / "models", runs=2, command=TINY) == []
    assert onnx_digests(repo / "models") == before


@pytest.mark.slow
def test_a_build_that_changes_a_graph_or_the_tree_is_reported(repo: Path) -> None:
    touch = [sys.executable, "-c", "open('models/tiny/1/model.onnx', 'ab').write(b'x')"]
    problems = reproduce(repo, repo / "models", runs=2, command=touch)
    assert problems[0] == "build 1 of 2 did not reproduce the tree:"
    assert any(p.startswith("tiny/1/model.onnx: sha256 ") for p in problems)
    assert "git status:  M models/tiny/1/model.onnx" in problems
    # A dirty tree is refused before any build runs.
    assert reproduce(repo, repo / "models", runs=1, command=["false"])[0].startswith(
        "the tree is not clean"
    )


def test_differences_names_changed_new_and_gone_graphs() -> None:
    before = {"a/1/model.onnx": "0" * 64, "b/1/model.onnx": "1" * 64}
    after = {"a/1/model.onnx": "2" * 64, "c/1/model.onnx": "3" * 64}
    assert differences(before, after) == [
        "a/1/model.onnx: sha256 000000000000... -> 222222222222...",
        "b/1/model.onnx: gone",
        "c/1/model.onnx: new",
    ]
    assert differences(before, dict(before)) == []


def test_make_reproduce_runs_the_check() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nreproduce: $(VENV)/.all\n\t$(BIN)/python -m model_export reproduce" in makefile
    assert "make reproduce" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(("version", "config"), [("1", "paper"), ("2", "beta0.5")])
def test_a_rebuild_writes_the_shipped_training_settings(version: str, config: str) -> None:
    """A new TrainConfig option must not change the settings a rebuild writes into the shipped
    manifests (the rebuild would leave the tree dirty); the options appear only when set."""
    import ast
    import json

    from model_export.training.config import named_config

    manifest = json.loads((ROOT / "models" / "egmn" / version / "manifest.json").read_text())
    assert ast.literal_eval(manifest["extras"]["train_config"]) == named_config(config).as_dict()
    crossed = named_config("beta0.5-cross").as_dict()
    assert crossed["cross_layers"] == 2 and crossed["cross_rank"] == 64
