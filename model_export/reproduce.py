"""``make reproduce``: a rebuild must give back the tracked tree, byte for byte.

The models rebuild bit for bit (fixed seeds, fixed thread counts, a deterministic export),
and every file ``make models`` writes into the tree is meant to carry only what a rebuild
reproduces (timings go to the untracked ``runs/``). This checks both claims end to end: on a
clean git tree it runs the build ``runs`` times and after each one requires ``git status
--porcelain`` to be empty and every ``model.onnx`` to keep the sha256 it had before.

Not part of CI: a build takes 15 to 25 minutes on 2 cores, and the claim is of a rebuild on
the machine that built the committed graphs (torch's CPU kernels choose their instructions
by CPU, so another processor may round differently and give other bytes, a difference this
check would rightly report but CI could not act on). The logic is tested on a small model
(tests/offline/test_reproduce.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from service.manifest import sha256_file

BUILD = (sys.executable, "-m", "model_export", "build-all")


def onnx_digests(models_dir: Path) -> dict[str, str]:
    """sha256 of every ``model.onnx`` under the model repository, by relative path."""
    return {
        str(path.relative_to(models_dir)): sha256_file(path)
        for path in sorted(models_dir.glob("*/*/model.onnx"))
    }


def git_changes(root: Path) -> list[str]:
    """``git status --porcelain`` of the tree: what a build changed, added or deleted."""
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True
    )
    return [line for line in status.stdout.splitlines() if line.strip()]


def differences(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Each graph whose sha256 changed, and each one that appeared or went away."""
    out = []
    for path in sorted(set(before) | set(after)):
        if path not in after:
            out.append(f"{path}: gone")
        elif path not in before:
            out.append(f"{path}: new")
        elif before[path] != after[path]:
            out.append(f"{path}: sha256 {before[path][:12]}... -> {after[path][:12]}...")
    return out


def reproduce(root: Path, models_dir: Path, runs: int, command: Sequence[str] = BUILD) -> list[str]:
    """Run ``command`` (the build) ``runs`` times in ``root``; the problems found, empty when
    every run left the tree clean and the graphs unchanged."""
    changed = git_changes(root)
    if changed:
        return ["the tree is not clean before the first build:", *changed]
    before = onnx_digests(models_dir)
    for i in range(1, runs + 1):
        print(f"reproduce: build {i} of {runs}: {' '.join(command)}", flush=True)
        subprocess.run(list(command), cwd=root, check=True)
        problems = differences(before, onnx_digests(models_dir))
        problems += [f"git status: {line}" for line in git_changes(root)]
        if problems:
            return [f"build {i} of {runs} did not reproduce the tree:", *problems]
        print(f"reproduce: build {i}: git status clean, {len(before)} graphs unchanged")
    return []
