"""Command line: ``python -m model_export {train,evaluate,export,report,build-all}``.

- ``train --model NAME`` (``egmn`` or a baseline: vr, wlr, ziln, softmax, cread, d2q, d2co,
  cwm, lda): fit on the training days, early-stop (and calibrate or post-fit) on the validation
  day, evaluate on the test day, save ``runs/NAME/checkpoint.pt`` and print the metrics table.
- ``export``: write ``models/<name>/<version>/`` (model.onnx, manifest.json, attribution) from a
  checkpoint.
- ``evaluate``: score an exported model directory on the test day through the serving path
  (manifest-driven numpy features -> onnxruntime -> numpy EGM), independently of torch.
- ``report``: score every shipped model directory (and D2Q's run) on the test day and write
  ``reports/evaluation.md``, ``evaluation.json`` and the plots.
- ``build-all``: rebuild every shipped model and the reports (what ``make models`` runs).
- ``seeds``: every report model trained again with seeds 1 and 2 and scored through the
  serving path; ``reports/seeds.json``, from which the report prints each figure's spread.
- ``sample-rows``: write the 50 test-day rows the ``/inspect`` page offers (with the KuaiRand
  attribution) into the service package; see ``model_export.data.sample_rows``.
- ``feature-tables``: write the feature store's tables file (``feature_store/kuairand.npz``,
  the user and video tables the service looks ids up in); see
  ``model_export.data.feature_tables``.
- ``publish-features --to redis://host:port/db``: load that file into Redis as a new version
  and switch readers to it in one step; see ``model_export.publish``.
- ``tune``: EGMN configurations scored on the validation day beside the shipped models
  (``--config NAME`` trains one, ``--shipped`` scores the model directories, ``--table``
  writes ``reports/tuning.md``); see ``model_export.evaluation.tuning``.

Argument parsing lives here, what each command does in ``model_export.commands``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from model_export.data.kuairand import DEFAULT_DATA_DIR
from model_export.models.names import TRAINABLE

ROOT = Path(__file__).resolve().parent.parent
MODELS = TRAINABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_export", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train, calibrate and evaluate one model")
    train.add_argument("--model", choices=MODELS, default="egmn")
    train.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    train.add_argument("--run-dir", type=Path, default=None, help="default: runs/<model>")
    train.add_argument("--no-point-mass", action="store_true", help="plain EGM, no p0 atom")
    train.add_argument("--no-calibration", action="store_true")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--history", action="store_true", help="add the point-in-time history features"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    export = sub.add_parser("export", help="write a model directory from a checkpoint")
    export.add_argument("--model", choices=MODELS, default="egmn")
    export.add_argument("--run-dir", type=Path, default=None, help="default: runs/<model>")
    export.add_argument("--out", type=Path, default=None, help="default: models/<model>/1")
    export.add_argument("--version", default="1")

    evaluate = sub.add_parser("evaluate", help="score an exported model on the test day")
    evaluate.add_argument("--model-dir", type=Path, default=ROOT / "models" / "egmn" / "2")
    evaluate.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)

    for command, text in (
        ("report", "evaluate every shipped model on the test day and write the report"),
        ("build-all", "rebuild every shipped model and the reports"),
    ):
        build = sub.add_parser(command, help=text)
        build.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
        build.add_argument("--models-dir", type=Path, default=ROOT / "models")
        build.add_argument("--reports-dir", type=Path, default=ROOT / "reports")
        build.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
        build.add_argument("--quiet", action="store_true")

    seeds = sub.add_parser("seeds", help="train every report model with other seeds")
    seeds.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    seeds.add_argument("--models", nargs="+", choices=MODELS, default=None, help="default: all")
    seeds.add_argument("--redo", action="store_true", help="retrain runs already recorded")
    seeds.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    seeds.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    seeds.add_argument("--reports-dir", type=Path, default=ROOT / "reports")
    seeds.add_argument("--quiet", action="store_true")

    rows = sub.add_parser("sample-rows", help="write the /inspect page's test-day rows")
    rows.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    rows.add_argument("--models-dir", type=Path, default=ROOT / "models")

    tables = sub.add_parser("feature-tables", help="write the feature store's tables file")
    tables.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    tables.add_argument("--out", type=Path, default=ROOT / "feature_store" / "kuairand.npz")

    publish = sub.add_parser("publish-features", help="load the feature tables into Redis")
    publish.add_argument("--to", required=True, help="redis://host:port/db")
    publish.add_argument("--tables", type=Path, default=ROOT / "feature_store" / "kuairand.npz")
    publish.add_argument("--batch", type=int, default=2000, help="hashes per pipeline")
    publish.add_argument("--keep", type=int, default=1, help="earlier versions kept")
    publish.add_argument("--quiet", action="store_true", help="no progress bar")

    tune = sub.add_parser("tune", help="EGMN configurations on the validation day")
    tune.add_argument("--config", default=None, help="train one named configuration")
    tune.add_argument("--shipped", action="store_true", help="score the shipped models")
    tune.add_argument("--table", action="store_true", help="write reports/tuning.md")
    tune.add_argument("--ship", default=None, help="export a tuned configuration's run")
    tune.add_argument("--version", default="2", help="model version written by --ship")
    tune.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    tune.add_argument("--models-dir", type=Path, default=ROOT / "models")
    tune.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "tune")
    tune.add_argument("--reports-dir", type=Path, default=ROOT / "reports")
    tune.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "feature-tables":
        from model_export.data.feature_tables import write_feature_tables

        print(write_feature_tables(args.data_dir, args.out))
        return 0
    if args.command == "publish-features":
        from model_export.publish import publish_features

        version = publish_features(
            args.to, args.tables, batch=args.batch, keep=args.keep, progress=not args.quiet
        )
        print(f"published feature tables version {version} to {args.to}")
        return 0
    # Imported late so that --help does not pay for torch.
    from model_export import commands

    start = time.perf_counter()
    if args.command == "sample-rows":
        from model_export.data.sample_rows import write_sample_rows

        print(write_sample_rows(args.data_dir, args.models_dir))
        return 0
    if args.command == "train":
        commands.train(args)
    elif args.command == "export":
        commands.export(args)
    elif args.command == "evaluate":
        commands.evaluate(args)
    elif args.command == "tune":
        commands.tune(args)
    elif args.command == "seeds":
        commands.seeds(args)
    elif args.command == "report":
        commands.report(args)
    else:
        commands.build_all(args)
    print(f"done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0
