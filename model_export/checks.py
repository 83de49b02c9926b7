"""The checks of every input a command needs, run before anything slow is imported or loaded.

A failure is one line on stderr with exit code 2 (argparse's ``error``), saying what to run
first. Like :mod:`model_export.cli`, this module imports neither torch nor the data: the
constants below stand in for those modules' own (a test holds them equal).
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import NoReturn

from model_export.training.config import EGMN_CONFIGS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / "data" / "kuairand"
DATA_FILES = ("interactions.parquet", "user_features_pure.csv", "video_features_basic_pure.csv")
"""The KuaiRand files :func:`model_export.data.kuairand.load_joined` reads."""
CHECKPOINT = "checkpoint.pt"
"""A run directory's checkpoint (``model_export.training.checkpoint.CHECKPOINT``)."""


def _fail(command: argparse.ArgumentParser, message: str) -> NoReturn:
    command.error(message)


def _missing_data(data_dir: Path) -> str | None:
    missing = [name for name in DATA_FILES if not (data_dir / name).is_file()]
    if not missing:
        return None
    return f"no KuaiRand data in {data_dir} (missing {', '.join(missing)}); see README.md"


def _run_dir(args: argparse.Namespace) -> Path:
    return args.run_dir if args.run_dir is not None else ROOT / "runs" / args.model


def _check_model_dir(command: argparse.ArgumentParser, model_dir: Path) -> None:
    if not model_dir.is_dir():
        _fail(command, f"no model directory {model_dir}")
    if not (model_dir / "manifest.json").is_file():
        _fail(command, f"{model_dir} has no manifest.json: not a model directory")


def check(args: argparse.Namespace, commands: dict[str, argparse.ArgumentParser]) -> None:
    """Every input the command needs, checked before anything slow is imported or loaded;
    a failure is one line on stderr and exit code 2."""
    command = commands[args.command]
    if "data_dir" in args:
        problem = _missing_data(args.data_dir)
        if problem is not None:
            _fail(command, problem)
    name = args.command
    if name == "train":
        if args.model != "egmn":
            for flag, given in (
                ("--config", args.config is not None),
                ("--no-point-mass", args.no_point_mass),
                ("--no-calibration", args.no_calibration),
            ):
                if given:
                    _fail(command, f"{flag} applies to --model egmn only")
        if args.epochs is not None and args.epochs < 1:
            _fail(command, "--epochs must be at least 1")
    elif name == "export":
        path = _run_dir(args) / CHECKPOINT
        if not path.is_file():
            train = f"python -m model_export train --model {args.model}"
            if args.run_dir is not None:
                train += f" --run-dir {args.run_dir}"
            _fail(command, f"no checkpoint {path}: run '{train}' first")
    elif name in ("evaluate", "info"):
        _check_model_dir(command, args.model_dir)
    elif name in ("report", "sample-rows", "costs") and not args.models_dir.is_dir():
        _fail(command, f"no model repository {args.models_dir}")
    elif name == "publish-features":
        if not args.tables.is_file():
            _fail(command, f"no {args.tables}: run 'python -m model_export feature-tables' first")
        if not args.to.startswith(("redis://", "rediss://", "unix://")):
            _fail(command, f"--to {args.to}: expected redis://host:port/db")
        for model_dir in args.model_dir:
            _check_model_dir(command, model_dir)
    elif name == "tune":
        _check_tune(command, args)
    elif name == "reproduce":
        _check_reproduce(command, args)


def _check_tune(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    steps = (args.config, args.shipped, args.noise, args.capacity, args.table, args.ship)
    if not any(steps) and args.calibration is None:
        _fail(
            command,
            "nothing to do: give --config NAME, --shipped, --noise, --capacity, "
            "--calibration NAME, --table or --ship NAME",
        )
    known = ", ".join(EGMN_CONFIGS)
    named = (("--config", args.config), ("--ship", args.ship), ("--calibration", args.calibration))
    for flag, value in named:
        if value is not None and value not in EGMN_CONFIGS:
            _fail(command, f"{flag} {value}: unknown configuration; known: {known}")
    for value in (args.ship, args.calibration):
        if value is None or value == args.config:
            continue
        path = args.runs_dir / value / CHECKPOINT
        if not path.is_file():
            _fail(command, f"no {path}: run 'python -m model_export tune --config {value}' first")
    if args.ship is not None:
        paper = args.models_dir / "egmn" / "1" / "manifest.json"
        if not paper.is_file():
            _fail(command, f"no {paper} (the reference figures of --ship): run 'make models'")
    if args.table and not args.shipped and not (args.runs_dir / "shipped.json").is_file():
        shipped = args.runs_dir / "shipped.json"
        _fail(command, f"no {shipped}: run 'python -m model_export tune --shipped' first")


def _check_reproduce(command: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runs < 1:
        _fail(command, "--runs must be at least 1")
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if status.returncode != 0:
        _fail(command, f"{ROOT} is not a git work tree")
    if status.stdout.strip():
        _fail(command, "the tree has changes; commit or stash them first (git status)")
