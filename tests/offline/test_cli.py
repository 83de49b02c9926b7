"""The offline command line as a newcomer meets it: its help, its errors and its logs.

- ``--help`` of the command and of every subcommand: plain text, every command and option
  described, defaults shown.
- A missing input (checkpoint, model directory, configuration, earlier step, data) is one
  line on stderr with exit code 2, found before torch is imported (so before any data is
  loaded or model built: the checks cost nothing).
- Progress written to a file is a line per epoch, no carriage-return bars.
- ``build-all`` and ``seeds`` count their stages; EGMN's runs are named in their progress.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from model_export import checks, cli
from model_export.models.names import SERVED, TRAINABLE
from model_export.training.config import EGMN_CONFIGS, TrainConfig, named_config
from tests.support import ROOT

# Runs the command line in a fresh interpreter and reports, on stdout, whether torch was
# imported by the time it exited: the checks must come before any slow import.
PROBE = """\
import sys
from model_export.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch" in sys.modules)
sys.exit(code)
"""


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, argv)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _commands() -> dict[str, argparse.ArgumentParser]:
    top = cli.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        cli.parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def test_top_level_help_lists_every_command_in_plain_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _help([], monkeypatch)
    assert "`" not in text and "``" not in text
    assert text.startswith("usage: python -m model_export [-h] COMMAND ...")
    commands = _commands()
    top = cli.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    described = {action.dest: action.help for action in sub._choices_actions}
    for name in commands:
        assert described.get(name), f"{name} has no summary"
        assert f"    {name}" in text, name
    for name in ("train", "export", "evaluate", "report", "build-all", "seeds", "tune", "info"):
        assert name in commands
    assert "{" not in text  # no brace list of the commands, wrapped across lines
    assert "train --model egmn --config beta0.5" in text  # the worked example


@pytest.mark.parametrize("name", sorted(_commands()))
def test_subcommand_help_describes_every_option_and_its_default(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = _commands()[name]
    assert command.description, f"{name} has no description"
    text = _help([name], monkeypatch)
    assert "`" not in text
    formatter = command._get_formatter()
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help"
        shown = formatter._get_help_string(action) or ""
        if action.default not in (None, False):
            assert "default" in shown, f"{name} {action.option_strings}: default not shown"
    if any("--data-dir" in a.option_strings for a in command._actions):
        assert "(default: data/kuairand)" in " ".join(text.split())


def test_model_option_has_a_metavar_and_lists_the_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("train", "export"):
        text = " ".join(_help([name], monkeypatch).split())
        assert "--model NAME" in text and "{egmn" not in text
        assert ", ".join(TRAINABLE) in text
        assert "(default: egmn)" in text
    evaluate = " ".join(_help(["evaluate"], monkeypatch).split())
    assert "(default: models/egmn/3)" in evaluate


def test_help_does_not_import_torch() -> None:
    done = _run("--help")
    assert done.returncode == 0
    assert done.stdout.rstrip().endswith("False")


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty")


def _error_cases(empty: Path) -> Iterator[tuple[list[str | Path], str, str]]:
    yield ["export", "--model", "egmn", "--run-dir", empty], "export", "train --model egmn"
    yield ["export", "--model", "vr", "--run-dir", empty], "export", "train --model vr"
    yield ["evaluate", "--model-dir", "models/nope/1"], "evaluate", "no model directory"
    yield ["evaluate", "--model-dir", empty], "evaluate", "no manifest.json"
    yield ["tune", "--config", "nosuchconfig"], "tune", "known: " + ", ".join(EGMN_CONFIGS)
    yield ["tune", "--table", "--runs-dir", empty], "tune", "tune --shipped' first"
    yield ["tune", "--ship", "beta0.5", "--runs-dir", empty], "tune", "tune --config beta0.5"
    yield ["tune"], "tune", "nothing to do"
    yield ["train", "--data-dir", empty], "train", "no KuaiRand data"
    yield ["report", "--data-dir", empty], "report", "no KuaiRand data"
    yield ["train", "--model", "vr", "--config", "beta0.5"], "train", "--model egmn only"
    yield ["train", "--epochs", "0"], "train", "at least 1"
    yield ["train", "--model", "nosuch"], "train", "invalid choice"
    yield ["info", empty / "nope"], "info", "no model directory"
    yield ["costs", "--models-dir", empty / "nope"], "costs", "no model repository"
    yield (
        ["publish-features", "--to", "redis://localhost:1/0", "--tables", empty / "t.npz"],
        "publish-features",
        "feature-tables' first",
    )


@pytest.mark.parametrize("case", range(16))
def test_missing_inputs_are_one_line_with_exit_2_before_torch(empty: Path, case: int) -> None:
    cases = list(_error_cases(empty))
    assert len(cases) == 16
    argv, command, hint = cases[case]
    done = _run(*argv)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"python -m model_export {command}: error: ")
    assert hint in lines[0]
    assert done.stdout.strip() == "False", "torch was imported before the check"


def test_cli_constants_match_the_modules_they_stand_in_for() -> None:
    """The command line keeps copies so as not to import torch; they must not drift."""
    from model_export.data.kuairand import DEFAULT_DATA_DIR
    from model_export.training.checkpoint import CHECKPOINT

    assert checks.CHECKPOINT == CHECKPOINT
    assert checks.DEFAULT_DATA_DIR == DEFAULT_DATA_DIR
    source = (ROOT / "model_export" / "data" / "kuairand.py").read_text()
    for name in checks.DATA_FILES:
        assert f'"{name}"' in source


def test_progress_written_to_a_file_is_a_line_per_epoch(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests/support/tiny_egmn.py"),
                tmp_path / "m",
                "--progress",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
            timeout=300,
        )
    data = log.read_bytes()
    assert b"\r" not in data
    assert len(data) < 2_000, data[:500]
    lines = data.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == ["egmn/1 epoch 1", "egmn/1 epoch 2"]


def test_train_config_selects_the_named_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    from model_export import commands
    from model_export.evaluation import tuning

    assert named_config("paper") == TrainConfig()
    assert named_config(tuning.SERVED) == tuning.config_of(tuning.SERVED)
    assert named_config("beta0.5").beta == 0.5 and named_config("beta0.5").num_threads == 1
    seen: list[tuple[TrainConfig, str]] = []

    class Stop(Exception):
        pass

    def fake_run(prepared: object, config: TrainConfig, **kwargs: Any) -> None:
        seen.append((config, kwargs["label"]))
        raise Stop

    monkeypatch.setattr(commands, "prepare", lambda data_dir, history=False: history)
    monkeypatch.setattr(commands, "run_egmn", fake_run)
    args = cli.parser().parse_args(["train", "--config", "beta0.5-history", "--seed", "3"])
    with pytest.raises(Stop):
        commands.train(args)
    args = cli.parser().parse_args(["train", "--no-point-mass", "--epochs", "2"])
    with pytest.raises(Stop):
        commands.train(args)
    want = dataclasses.replace(named_config("beta0.5-history"), seed=3)
    assert seen[0] == (want, "egmn")
    assert seen[1] == (TrainConfig(point_mass=False, max_epochs=2), "egmn-no-p0")


def test_build_all_counts_its_stages_and_records_timings_outside_the_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_export import commands

    labels: list[str] = []
    run = SimpleNamespace(
        metrics={"uncalibrated": {}, "calibrated": {}},
        train_seconds=2.0,
        train_cpu_seconds=3.0,
        seconds=4.0,
        cpu_seconds=3.0,
        window=SimpleNamespace(test_date=20220504, rows_test=1),
    )

    def fake_egmn(prepared: object, config: TrainConfig, **kwargs: Any) -> SimpleNamespace:
        labels.append(kwargs["label"])
        return run

    manifest = SimpleNamespace(evaluation=None)
    monkeypatch.setattr(commands, "prepare", lambda data_dir: None)
    monkeypatch.setattr(commands, "baseline_metrics", lambda prepared: {})
    monkeypatch.setattr(commands, "run_egmn", fake_egmn)
    monkeypatch.setattr(commands, "run_baseline", lambda *a, **k: run)
    monkeypatch.setattr(commands, "_write", lambda *a: manifest)
    monkeypatch.setattr(commands, "_write_baseline", lambda *a: manifest)
    monkeypatch.setattr(commands, "write_egmn_report", lambda *a: None)
    monkeypatch.setattr(commands, "save_run", lambda *a: None)
    monkeypatch.setattr(commands, "report", lambda args: None)
    args = cli.parser().parse_args(
        ["build-all", "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path)]
    )
    out = io.StringIO()
    with redirect_stdout(out):
        commands.build_all(args)
    stages = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    total = 4 + len(SERVED) + 1
    assert [s.split("]")[0] for s in stages] == [f"[{i}/{total}" for i in range(1, total + 1)]
    assert stages[0].startswith(f"[1/{total}] egmn/1")
    assert stages[3].startswith(f"[4/{total}] egmn/3")
    assert stages[4] == f"[5/{total}] {SERVED[0]}" and stages[-1] == f"[{total}/{total}] report"
    assert labels == ["egmn/1", "egmn/1 without p0", "egmn/2", "egmn/3"]
    record = json.loads((tmp_path / "runs" / "costs.json").read_text())
    assert set(record["runs"]) == {
        "egmn/1",
        "egmn/1 without p0",
        "egmn/2",
        "egmn/3",
        *(f"{name}/1" for name in SERVED),
    }
    assert record["runs"]["egmn/2"] == {
        "train_seconds": 2.0,
        "train_cpu_seconds": 3.0,
        "seconds": 4.0,
    }
    assert record["build"]["seconds"] >= 0


def test_shipped_manifests_carry_no_timings() -> None:
    """Timings differ between two builds of the same model: a manifest that held them could
    not be rebuilt byte for byte (they are in reports/costs.md)."""
    for path in sorted((ROOT / "models").glob("*/*/manifest.json")):
        extras = json.loads(path.read_text())["extras"]
        assert not {"train_seconds", "train_cpu_seconds"} & set(extras), path


def test_info_says_what_a_model_directory_is_without_torch(tmp_path: Path) -> None:
    done = _run("info", "models/egmn/2")
    assert done.returncode == 0, done.stderr
    text, torch_loaded = done.stdout.rsplit("\n", 2)[0], done.stdout.split()[-1]
    assert torch_loaded == "False"
    manifest = json.loads((ROOT / "models/egmn/2/manifest.json").read_text())
    assert text.startswith("egmn/2: EGMN: exponential + 10 truncated Gaussians")
    assert "family: egm" in text
    assert "training window: 2022-04-25 to 2022-05-02 (8 days, 135,128 rows)" in text
    assert "test 2022-05-04 (17,600 rows)" in text
    assert "beta=0.5" in text and "alpha=0.1" in text
    mae = manifest["evaluation"]["metrics"]["mae_point"]
    assert f"MAE point (s)   {mae:.4f}" in text
    assert f"sha256: {manifest['onnx_sha256']} (matches model.onnx)" in text
    assert "model.onnx: 2." in text and "CC BY-SA 4.0" in text and "KuaiRand" in text
    # A graph that is not the one the manifest was written for is called out.
    copy = tmp_path / "egmn" / "2"
    copy.mkdir(parents=True)
    (copy / "manifest.json").write_bytes((ROOT / "models/egmn/2/manifest.json").read_bytes())
    (copy / "model.onnx").write_bytes(b"not the graph")
    done = _run("info", copy)
    assert done.returncode == 0 and "DOES NOT match model.onnx" in done.stdout
