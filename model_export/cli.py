"""Command line: ``python -m model_export COMMAND``; ``--help`` lists the commands.

Argument parsing lives here, the checks of every input a command needs in
:mod:`model_export.checks`, what each command does in :mod:`model_export.commands`. The
checks run before any slow import or data loading, so that a missing checkpoint, model
directory, configuration or earlier step is one line on stderr with exit code 2 (argparse's
convention for a usage error), not a traceback after seconds of loading. This module imports
neither torch nor the data.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from model_export.checks import DEFAULT_DATA_DIR, ROOT, check
from model_export.models.names import TRAINABLE
from model_export.training.config import (
    EGMN_CONFIGS,
    HEADLINE_CONFIG,
    PAPER_CONFIG,
    SERVED_CONFIG,
    TRAIN_CONFIG_NAMES,
)

MODELS = TRAINABLE

DESCRIPTION = """\
Train, export and evaluate the watch-time models on KuaiRand, and write the reports.

A model directory (models/<name>/<version>/) holds model.onnx, manifest.json and the data's
attribution: what the service loads and serves. "make models" runs build-all, which
rebuilds every shipped directory and the reports."""

EPILOG = """\
one model, end to end (EGMN with the served settings, written outside models/):
  python -m model_export train --model egmn --config beta0.5-anchor-pointhead-median
  python -m model_export export --model egmn --version 3 --out runs/egmn/export/3
  python -m model_export evaluate --model-dir runs/egmn/export/3
  python -m model_export info runs/egmn/export/3

"python -m model_export COMMAND --help" describes each command's options."""

CONFIG_HELP = (
    f"EGMN only: a named configuration, {PAPER_CONFIG} (the paper's settings, models/egmn/1), "
    f"{SERVED_CONFIG} (models/egmn/2), {HEADLINE_CONFIG} (served, models/egmn/3) or one of "
    "the other tuning configurations: "
    + ", ".join(n for n in EGMN_CONFIGS if n not in (SERVED_CONFIG, HEADLINE_CONFIG))
    + f" (default: {PAPER_CONFIG})"
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        """One line, so that a log or a terminal shows the cause and nothing else."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; every option's default shown after its help.

    Unlike ``ArgumentDefaultsHelpFormatter`` it leaves out the defaults that say nothing
    (``None``, ``False`` of a flag), and shows paths relative to the repository.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or not text:
            return text
        return f"{text} (default: {_shown(default)})".replace("%(", "%%(")


def _shown(value: object) -> str:
    """A default as a reader would type it."""
    if isinstance(value, Path):
        try:
            return str(value.relative_to(ROOT))
        except ValueError:
            return str(value)
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def _model_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--model",
        choices=MODELS,
        default="egmn",
        metavar="NAME",
        help=f"the model {what}: " + ", ".join(MODELS),
    )


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR", help="the KuaiRand files"
    )


def _dir(parser: argparse.ArgumentParser, flag: str, default: Path, text: str) -> None:
    parser.add_argument(flag, type=Path, default=default, metavar="DIR", help=text)


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars and no per-epoch lines"
    )


def _command(
    sub: argparse._SubParsersAction[Parser], name: str, summary: str, description: str
) -> Parser:
    return sub.add_parser(
        name, help=summary, description=description, formatter_class=HelpFormatter
    )


def parser() -> Parser:
    """The whole command line (``--help`` prints it without importing torch)."""
    top = Parser(
        prog="python -m model_export",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    train = _command(
        sub,
        "train",
        "train, calibrate and evaluate one model; save its checkpoint",
        "Fit one model on the training days, early-stop (and calibrate or post-fit) on the\n"
        "validation day, score the test day, save runs/<model>/checkpoint.pt and print the\n"
        "figures. The settings are those make models uses; export writes the model directory.",
    )
    _model_option(train, "to train")
    train.add_argument(
        "--config", choices=TRAIN_CONFIG_NAMES, default=None, metavar="NAME", help=CONFIG_HELP
    )
    _data_dir(train)
    train.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the checkpoint goes (default: runs/<model>)",
    )
    train.add_argument(
        "--no-point-mass", action="store_true", help="EGMN only: plain EGM, no atom p0 at 0 s"
    )
    train.add_argument(
        "--no-calibration",
        action="store_true",
        help="EGMN only: serve the network's own parameters, no calibration on the validation day",
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="N",
        help="at most N epochs (default: the shared budget, 12; early stopping may end sooner)",
    )
    train.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the weights and batch order"
    )
    train.add_argument(
        "--history", action="store_true", help="add the point-in-time history features"
    )
    _quiet(train)

    export = _command(
        sub,
        "export",
        "write a model directory from a checkpoint",
        "Write model.onnx, manifest.json and ATTRIBUTION.txt for a checkpoint saved by train.",
    )
    _model_option(export, "whose checkpoint to export")
    export.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where train saved the checkpoint (default: runs/<model>)",
    )
    export.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="the model directory to write (default: models/<model>/<version>)",
    )
    export.add_argument("--version", default="1", help="the version the manifest names")

    evaluate = _command(
        sub,
        "evaluate",
        "score an exported model directory on the test day",
        "Score a model directory through the serving path only (manifest -> numpy features ->\n"
        "onnxruntime -> numpy post-processor), beside the figures its manifest carries.",
    )
    _dir(evaluate, "--model-dir", ROOT / "models" / "egmn" / "3", "the model directory")
    _data_dir(evaluate)

    for name, summary, description in (
        (
            "report",
            "score every shipped model on the test day and write the report",
            "Score every model directory through the serving path; write\n"
            "reports/evaluation.md, evaluation.json and the plots.",
        ),
        (
            "build-all",
            "rebuild every shipped model and the reports (make models)",
            "Train and export EGMN (version 1, its variant without p0, version 2) and every\n"
            "served baseline, then write the reports. Timings go to runs/costs.json only\n"
            "(see the costs command), so that a rebuild leaves the tracked files as they were.",
        ),
    ):
        build = _command(sub, name, summary, description)
        _data_dir(build)
        _dir(build, "--models-dir", ROOT / "models", "the model repository")
        _dir(build, "--reports-dir", ROOT / "reports", "where the reports go")
        _dir(build, "--runs-dir", ROOT / "runs", "checkpoints and the build's timings")
        _quiet(build)

    seeds = _command(
        sub,
        "seeds",
        "train every report model again with other seeds",
        "Train every model of the report with other seeds, score each through the serving\n"
        "path and record the figures in reports/seeds.json (the spread the report prints).",
    )
    seeds.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2], metavar="N", help="the seeds to train"
    )
    seeds.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=None,
        metavar="NAME",
        help="the models to train (default: every model of the report)",
    )
    seeds.add_argument("--redo", action="store_true", help="retrain runs already recorded")
    _data_dir(seeds)
    _dir(seeds, "--runs-dir", ROOT / "runs", "where the runs' model directories go")
    _dir(seeds, "--reports-dir", ROOT / "reports", "where seeds.json is")
    _quiet(seeds)

    rolling = _command(
        sub,
        "rolling",
        "fit every report model on the logs without their last one or two days",
        "Rolling-origin check: hold back the last day, then the last two, split what is left\n"
        "by day as usual (its last day tests), fit every report model with the settings make\n"
        "models uses and record each test-day figure in reports/rolling.json; the evaluation\n"
        "report prints EGMN's rank on each test day. About 15 minutes per model set and day.",
    )
    rolling.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=None,
        metavar="NAME",
        help="the models to fit (default: every model of the report)",
    )
    rolling.add_argument(
        "--held-back",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="K",
        help="days cut from the end of the logs, one split each",
    )
    rolling.add_argument("--redo", action="store_true", help="refit models already recorded")
    _data_dir(rolling)
    _dir(rolling, "--reports-dir", ROOT / "reports", "where rolling.json goes")
    _quiet(rolling)

    costs = _command(
        sub,
        "costs",
        "write reports/costs.md: training times, ONNX size and speed",
        "Write reports/costs.md and costs.json: each model's training time (wall and CPU,\n"
        "from the last build's runs/costs.json), ONNX size and rows/s on this machine.\n"
        "Machine-dependent, so kept out of the files a rebuild must reproduce.",
    )
    _data_dir(costs)
    _dir(costs, "--models-dir", ROOT / "models", "the model repository")
    _dir(costs, "--reports-dir", ROOT / "reports", "where costs.md goes")
    _dir(costs, "--runs-dir", ROOT / "runs", "where the build recorded its timings")

    info = _command(
        sub,
        "info",
        "say what a model directory is, from its manifest",
        "Print a model directory's family, training window, settings, test-day figures,\n"
        "graph sha256 (checked against model.onnx), size and data attribution. Reads the\n"
        "manifest only: no torch, no data.",
    )
    info.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="e.g. models/egmn/3")

    rows = _command(
        sub,
        "sample-rows",
        "write the /inspect page's test-day rows",
        "Write the 50 test-day rows the /inspect page offers into the service package.",
    )
    _data_dir(rows)
    _dir(rows, "--models-dir", ROOT / "models", "the model repository")

    tables = _command(
        sub,
        "feature-tables",
        "write the feature store's tables file",
        "Write the user and video tables the service looks ids up in.",
    )
    _data_dir(tables)
    tables.add_argument(
        "--out",
        type=Path,
        default=ROOT / "feature_store" / "kuairand.npz",
        metavar="FILE",
        help="the tables file",
    )

    publish = _command(
        sub,
        "publish-features",
        "load the feature tables into Redis",
        "Load the tables file into Redis as a new version and switch readers to it in one step.",
    )
    publish.add_argument("--to", required=True, metavar="URL", help="redis://host:port/db")
    publish.add_argument(
        "--tables",
        type=Path,
        default=ROOT / "feature_store" / "kuairand.npz",
        metavar="FILE",
        help="the tables file (written by feature-tables)",
    )
    publish.add_argument("--batch", type=int, default=2000, metavar="N", help="hashes per pipeline")
    publish.add_argument(
        "--keep", type=int, default=1, metavar="N", help="earlier versions kept in Redis"
    )
    publish.add_argument(
        "--model-dir",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also publish the tables this model directory ships (its history statistics); "
        "repeatable",
    )
    publish.add_argument("--quiet", action="store_true", help="no progress bar")

    tune = _command(
        sub,
        "tune",
        "EGMN configurations scored on the validation day",
        "Validation-day tuning of EGMN (model_export.evaluation.tuning); the steps in order:\n"
        "--config NAME for each configuration, --shipped, --table, then --ship NAME.",
    )
    tune.add_argument(
        "--config",
        default=None,
        metavar="NAME",
        help="train one named configuration: " + ", ".join(EGMN_CONFIGS),
    )
    tune.add_argument(
        "--shipped",
        action="store_true",
        help="score the shipped model directories on the validation day",
    )
    tune.add_argument(
        "--table", action="store_true", help="write reports/tuning.md (after --shipped)"
    )
    tune.add_argument(
        "--capacity",
        action="store_true",
        help="fit each duration group without features: what limits NLL (tuning.md)",
    )
    tune.add_argument(
        "--calibration",
        default=None,
        metavar="NAME",
        help="refit a tuned run's calibration with each coverage weight: what coverage costs "
        "in NLL (tuning.md)",
    )
    tune.add_argument(
        "--noise",
        action="store_true",
        help="score the served configuration's seed runs (the tie margin of --table)",
    )
    _dir(tune, "--seeds-dir", ROOT / "runs" / "seeds", "where the seeds command put its runs")
    tune.add_argument(
        "--ship",
        default=None,
        metavar="NAME",
        help="export a tuned configuration's run as models/egmn/<version>",
    )
    tune.add_argument("--version", default="2", help="model version written by --ship")
    _data_dir(tune)
    _dir(tune, "--models-dir", ROOT / "models", "the model repository")
    _dir(tune, "--runs-dir", ROOT / "runs" / "tune", "the configurations' runs")
    _dir(tune, "--reports-dir", ROOT / "reports", "where tuning.md goes")
    _quiet(tune)

    reproduce = _command(
        sub,
        "reproduce",
        "rebuild twice and check that nothing tracked changes (make reproduce)",
        "Run build-all RUNS times on a clean git tree; after each, git status must be empty\n"
        "and every model.onnx must keep its sha256. 15 to 25 minutes per run on 2 cores.",
    )
    reproduce.add_argument("--runs", type=int, default=2, metavar="N", help="builds to run")
    _dir(reproduce, "--models-dir", ROOT / "models", "the model repository")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, check the inputs, then run the command (heavy imports only from here on)."""
    top = parser()
    args = top.parse_args(argv)
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    check(args, dict(sub.choices))
    if args.command == "info":
        from model_export.info import describe

        print(describe(args.model_dir))
        return 0
    if args.command == "reproduce":
        from model_export.reproduce import reproduce

        problems = reproduce(ROOT, args.models_dir, args.runs)
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    if args.command == "feature-tables":
        from model_export.data.feature_tables import write_feature_tables

        print(write_feature_tables(args.data_dir, args.out))
        return 0
    if args.command == "publish-features":
        from model_export.publish import publish_features, publish_model_tables
        from service.errors import ModelLoadError

        version = publish_features(
            args.to, args.tables, batch=args.batch, keep=args.keep, progress=not args.quiet
        )
        print(f"published feature tables version {version} to {args.to}")
        for model_dir in args.model_dir:
            try:
                sha = publish_model_tables(
                    args.to, model_dir, batch=args.batch, progress=not args.quiet
                )
            except (ValueError, ModelLoadError) as exc:
                print(f"publish-features: {exc}", file=sys.stderr)
                return 2
            said = "already published" if sha is None else f"published as {sha[:12]}"
            print(f"{model_dir}: tables {said}")
        return 0
    # Imported late so that --help and the checks above do not pay for torch.
    from model_export import commands

    start = time.perf_counter()
    if args.command == "sample-rows":
        from model_export.data.sample_rows import write_sample_rows

        print(write_sample_rows(args.data_dir, args.models_dir))
        return 0
    run = {
        "train": commands.train,
        "export": commands.export,
        "evaluate": commands.evaluate,
        "tune": commands.tune,
        "seeds": commands.seeds,
        "rolling": commands.rolling,
        "report": commands.report,
        "costs": commands.costs,
        "build-all": commands.build_all,
    }[args.command]
    run(args)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0
