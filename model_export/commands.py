"""What each CLI command does; argument parsing stays in ``model_export.cli``."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from model_export.data.kuairand import Split, labels, load_joined, raw_columns, split_by_day
from model_export.data.prepared import Prepared, prepare
from model_export.evaluation import costs as costs_record
from model_export.evaluation.egmn_report import write_egmn_report
from model_export.evaluation.metrics import evaluate_distribution
from model_export.evaluation.reference import REFERENCE, baseline_metrics
from model_export.evaluation.runs import (
    manifest_evaluation,
    run_baseline,
    run_egmn,
    served_metrics,
)
from model_export.evaluation.served import load_served, served_distribution
from model_export.evaluation.tables import headline_table, metrics_table
from model_export.export.runs import write_baseline, write_egmn
from model_export.models.registry import SERVED
from model_export.training.baselines import BaselineRun
from model_export.training.checkpoint import CHECKPOINT, load_run, save_run
from model_export.training.config import (
    HEADLINE_CONFIG,
    PAPER_CONFIG,
    SERVED_CONFIG,
    BaselineConfig,
    named_config,
)
from model_export.training.egmn import EGMNRun
from service.manifest import Manifest
from service.versions import highest_version_dir

ROOT = Path(__file__).resolve().parent.parent


def _run_dir(args: argparse.Namespace) -> Path:
    return args.run_dir if args.run_dir is not None else ROOT / "runs" / args.model


def _print_run(run: EGMNRun, label: str) -> None:
    rows = {f"{label} {k}": v for k, v in run.metrics.items() if k != REFERENCE}
    if REFERENCE in run.metrics:
        rows[REFERENCE] = run.metrics[REFERENCE]
    window = run.window
    print(f"\ntest day {window.test_date}, {window.rows_test} rows; took {run.seconds:.0f} s")
    print(metrics_table(rows))


def _baseline_config(args: argparse.Namespace) -> BaselineConfig:
    config = BaselineConfig.of(args.model, seed=args.seed, history=args.history)
    if args.epochs is not None:
        config = dataclasses.replace(config, max_epochs=args.epochs)
    return config


def _train_baseline(args: argparse.Namespace) -> None:
    prepared = prepare(args.data_dir, history=args.history)
    run = run_baseline(prepared, _baseline_config(args), progress=not args.quiet)
    path = _run_dir(args) / CHECKPOINT
    save_run(run, path)
    print(f"checkpoint: {path}")
    window = run.window
    print(f"\ntest day {window.test_date}, {window.rows_test} rows; took {run.seconds:.0f} s")
    rows = {run.name: run.metrics, REFERENCE: baseline_metrics(prepared)}
    print(metrics_table(rows))


def train(args: argparse.Namespace) -> None:
    """Train one configuration and save its checkpoint."""
    if args.model != "egmn":
        _train_baseline(args)
        return
    name = args.config or PAPER_CONFIG
    config = dataclasses.replace(named_config(name), seed=args.seed)
    if args.no_point_mass:
        config = dataclasses.replace(config, point_mass=False)
    if args.history:
        config = dataclasses.replace(config, history=True)
    if args.epochs is not None:
        config = dataclasses.replace(config, max_epochs=args.epochs)
    prepared = prepare(args.data_dir, history=config.history)
    label = "egmn" if config.point_mass else "egmn-no-p0"
    print(f"{label}: configuration {name}", flush=True)
    run = run_egmn(
        prepared,
        config,
        calibrate=not args.no_calibration,
        progress=not args.quiet,
        label=label,
    )
    run.metrics[REFERENCE] = baseline_metrics(prepared)
    path = _run_dir(args) / CHECKPOINT
    save_run(run, path)
    print(f"checkpoint: {path}")
    _print_run(run, label)


def _write(
    run: EGMNRun, out: Path, version: str, references: dict[str, dict[str, float]]
) -> Manifest:
    return write_egmn(
        run, out, version, manifest_evaluation(run.window, served_metrics(run), references)
    )


def _write_baseline(
    run: BaselineRun, out: Path, version: str, references: dict[str, dict[str, float]]
) -> Manifest:
    return write_baseline(
        run, out, version, manifest_evaluation(run.window, run.metrics, references)
    )


def export(args: argparse.Namespace) -> None:
    """Model directory from a saved checkpoint."""
    out = args.out if args.out is not None else ROOT / "models" / args.model / args.version
    if args.model != "egmn":
        brun = load_run(_run_dir(args) / CHECKPOINT, BaselineRun)
        manifest = _write_baseline(brun, out, args.version, {})
        print(f"wrote {out} (sha256 {manifest.onnx_sha256[:12]}...)")
        return
    run = load_run(_run_dir(args) / CHECKPOINT, EGMNRun)
    references = {k: v for k, v in run.metrics.items() if k != "calibrated"}
    manifest = _write(run, out, args.version, references)
    print(f"wrote {out} (sha256 {manifest.onnx_sha256[:12]}...)")


def evaluate(args: argparse.Namespace) -> None:
    """Score an exported directory on the test day through the serving path only."""
    model = load_served(args.model_dir)
    split = split_by_day(load_joined(args.data_dir))
    start = time.perf_counter()
    columns = raw_columns(split.test, model.manifest.source_columns())
    dist = served_distribution(model, columns)
    metrics = evaluate_distribution(dist, labels(split.test), model.manifest.quick_skip_threshold_s)
    print(f"scored {len(split.test)} rows in {time.perf_counter() - start:.1f} s")
    rows = {f"{model.manifest.name}/{model.manifest.version} (onnx)": metrics}
    if model.manifest.evaluation is not None:
        rows["manifest"] = model.manifest.evaluation.metrics
        rows.update(model.manifest.evaluation.references)
    print(metrics_table(rows))


def _d2q_run(runs_dir: Path, data_dir: Path, quiet: bool) -> BaselineRun:
    """D2Q's saved run, or a fresh one: the report scores it from its run when
    ``models/d2q`` holds no version."""
    path = runs_dir / "d2q" / CHECKPOINT
    if path.exists():
        return load_run(path, BaselineRun)
    print(f"no {path}: training d2q (about a minute)")
    run = run_baseline(prepare(data_dir), BaselineConfig.of("d2q"), progress=not quiet)
    save_run(run, path)
    return run


def report(args: argparse.Namespace, d2q: BaselineRun | None = None) -> None:
    """reports/evaluation.{md,json} and plots from the shipped model directories; nothing
    machine-dependent goes into them (timings: :func:`costs`), so a rebuild rewrites them
    byte for byte."""
    from model_export.evaluation import report as evaluation

    split = split_by_day(load_joined(args.data_dir))
    if d2q is None and highest_version_dir(args.models_dir / "d2q") is None:
        d2q = _d2q_run(args.runs_dir, args.data_dir, args.quiet)
    from model_export.evaluation import seeds as seed_figures

    seed_runs = seed_figures.load(args.reports_dir / seed_figures.SEEDS_FILE)
    inputs = evaluation.collect(args.models_dir, split, d2q, seed_runs=seed_runs)
    path = evaluation.write_report(args.reports_dir, inputs, args.models_dir)
    print(f"wrote {path}")
    print(headline_table(inputs.models))


class Stages:
    """The overall counter of a long command: ``[3/19] egmn/2 ...`` before each stage, so
    that a log says how far the build is."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def next(self, what: str) -> None:
        """Announce the next stage."""
        self.done += 1
        print(f"[{self.done}/{self.total}] {what}", flush=True)


def build_all(args: argparse.Namespace) -> None:
    """Every shipped model (EGMN, then each served baseline) and both reports.

    The timings of every run go to ``runs/costs.json`` (untracked), not into the manifests
    or reports: those must come out byte for byte the same from a rebuild."""
    start = time.perf_counter()
    record = costs_record.Record(args.runs_dir / costs_record.RECORD)
    record.start_build()
    stages = Stages(4 + len(SERVED) + 1)
    prepared = prepare(args.data_dir)
    baseline = baseline_metrics(prepared)
    progress = not args.quiet
    stages.next("egmn/1: EGMN with the paper's settings")
    with_p0 = run_egmn(prepared, named_config(PAPER_CONFIG), progress=progress, label="egmn/1")
    record.run("egmn/1", with_p0.train_seconds, with_p0.train_cpu_seconds, with_p0.seconds)
    stages.next("egmn/1 without p0: the same without the atom at 0 s (reports/egmn.md)")
    no_p0 = dataclasses.replace(named_config(PAPER_CONFIG), point_mass=False)
    without_p0 = run_egmn(prepared, no_p0, progress=progress, label="egmn/1 without p0")
    record.run(
        "egmn/1 without p0",
        without_p0.train_seconds,
        without_p0.train_cpu_seconds,
        without_p0.seconds,
    )
    references = {
        "egmn uncalibrated": with_p0.metrics["uncalibrated"],
        "egmn-no-p0 calibrated": without_p0.metrics["calibrated"],
        "egmn-no-p0 uncalibrated": without_p0.metrics["uncalibrated"],
        REFERENCE: baseline,
    }
    out = args.models_dir / "egmn" / "1"
    manifest = _write(with_p0, out, "1", references)
    rows = {"egmn calibrated (shipped)": manifest.evaluation.metrics if manifest.evaluation else {}}
    rows.update(references)
    write_egmn_report(args.reports_dir / "egmn.md", rows, with_p0, without_p0)
    print(f"\nwrote {out}; test day {with_p0.window.test_date} ({with_p0.window.rows_test} rows)")
    print(metrics_table(rows))
    # The configuration chosen on the validation day (reports/tuning.md), served by default.
    stages.next(f"egmn/2: EGMN with the tuned configuration {SERVED_CONFIG}")
    tuned = run_egmn(prepared, named_config(SERVED_CONFIG), progress=progress, label="egmn/2")
    record.run("egmn/2", tuned.train_seconds, tuned.train_cpu_seconds, tuned.seconds)
    references_v2 = {"egmn/1 (paper settings)": served_metrics(with_p0), REFERENCE: baseline}
    out_v2 = args.models_dir / "egmn" / "2"
    _write(tuned, out_v2, "2", references_v2)
    print(f"wrote {out_v2}: EGMN with the tuned configuration {SERVED_CONFIG}")
    stages.next(f"egmn/3: EGMN with the second round's configuration {HEADLINE_CONFIG}")
    references_v3 = {
        "egmn/2 (beta0.5)": served_metrics(tuned),
        "egmn/1 (paper settings)": served_metrics(with_p0),
        REFERENCE: baseline,
    }
    build_headline(args, prepared, references_v3, record, progress)
    for name in SERVED:
        stages.next(name)
        run = run_baseline(prepared, BaselineConfig.of(name), progress=progress)
        record.run(f"{name}/1", run.seconds, run.cpu_seconds, run.seconds)
        target = args.models_dir / name / "1"
        _write_baseline(run, target, "1", {REFERENCE: baseline})
        print(f"wrote {target}: {name} in {run.seconds:.0f} s")
        if name == "d2q":  # the tuning report's validation-day row reads its run
            save_run(run, args.runs_dir / "d2q" / CHECKPOINT)
    del prepared
    stages.next("report")
    report(args)
    record.finish_build(time.perf_counter() - start)
    print(f"build-all took {time.perf_counter() - start:.0f} s; timings in {record.path}")
    print("reports/costs.md from them: python -m model_export costs")


def build_headline(
    args: argparse.Namespace,
    prepared: Prepared,
    references: dict[str, dict[str, float]],
    record: costs_record.Record,
    progress: bool,
) -> None:
    """models/egmn/3, the served default: the configuration and the point the second
    round's rules chose on the validation day (reports/tuning.md)."""
    run = run_egmn(prepared, named_config(HEADLINE_CONFIG), progress=progress, label="egmn/3")
    record.run("egmn/3", run.train_seconds, run.train_cpu_seconds, run.seconds)
    out = args.models_dir / "egmn" / "3"
    _write(run, out, "3", references)
    print(f"wrote {out}: EGMN with the second round's configuration {HEADLINE_CONFIG}")


def costs(args: argparse.Namespace) -> None:
    """reports/costs.{md,json}: the last build's timings, each graph's size and speed here."""
    split = split_by_day(load_joined(args.data_dir))
    record = costs_record.Record(args.runs_dir / costs_record.RECORD)
    path = costs_record.write_costs(args.reports_dir, args.models_dir, split, record.load())
    print(f"wrote {path}")


def _manifest_metrics(model_dir: Path) -> dict[str, float]:
    """The test-day figures a model directory's manifest carries."""
    evaluation = Manifest.read(model_dir / "manifest.json").evaluation
    return dict(evaluation.metrics) if evaluation is not None else {}


def _tuned_run(args: argparse.Namespace, name: str) -> tuple[EGMNRun, Prepared]:
    """A tuned configuration's saved run, and the data prepared the way it was trained."""
    run = load_run(args.runs_dir / name / CHECKPOINT, EGMNRun)
    return run, prepare(args.data_dir, run.config.history, run.config.history_options())


def tune(args: argparse.Namespace) -> None:
    """Validation-day tuning of EGMN (evaluation.tuning); never reads the test day's labels."""
    import json

    from model_export.evaluation import tuning, tuning_report

    tuning.set_threads()
    if args.config is not None:
        config = tuning.config_of(args.config)
        prepared = prepare(args.data_dir, config.history, config.history_options())
        result = tuning.run_config(prepared, args.config, args.runs_dir, not args.quiet)
        print(tuning_report.table({f"{args.config} calibrated": result["calibrated"]}))
    if args.shipped:
        shipped = tuning.score_shipped(args.models_dir, split_by_day(load_joined(args.data_dir)))
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        (args.runs_dir / "shipped.json").write_text(json.dumps(shipped, indent=1))
        print(tuning_report.table(shipped))
    if args.noise:
        split = split_by_day(load_joined(args.data_dir))
        noise = tuning.score_seeds(args.models_dir, args.seeds_dir, split)
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        (args.runs_dir / "noise.json").write_text(json.dumps(noise, indent=1))
        print(tuning_report.table({f"seed run {i}": m for i, m in enumerate(noise)}))
    if args.capacity:
        from model_export.evaluation.capacity import capacity, capacity_table

        limits = capacity(*_positive_by_group(split_by_day(load_joined(args.data_dir))))
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        (args.runs_dir / "capacity.json").write_text(json.dumps(limits, indent=1))
        print("\n".join(capacity_table(limits)))
    if args.calibration is not None:
        from model_export.evaluation.calibration_trade import calibration_trade, trade_table

        tuned, prepared = _tuned_run(args, args.calibration)
        figures = calibration_trade(prepared, tuned)
        doc = {"config": args.calibration, "figures": figures}
        (args.runs_dir / "calibration.json").write_text(json.dumps(doc, indent=1))
        print("\n".join(trade_table(figures)))
    if args.ship is not None:
        tuned, prepared = _tuned_run(args, args.ship)
        run = tuning.finish(prepared, tuned)
        references = {
            "egmn/1 (paper settings)": _manifest_metrics(args.models_dir / "egmn" / "1"),
            REFERENCE: baseline_metrics(prepared),
        }
        out = args.models_dir / "egmn" / args.version
        manifest = _write(run, out, args.version, references)
        print(f"wrote {out} (sha256 {manifest.onnx_sha256[:12]}...)")
    if args.table:
        shipped = json.loads((args.runs_dir / "shipped.json").read_text())
        d2q = args.runs_dir.parent / "d2q" / CHECKPOINT
        if d2q.exists():
            split = split_by_day(load_joined(args.data_dir))
            shipped["d2q (offline run)"] = tuning.score_d2q_validation(d2q, split)
        results = tuning.load_results(args.runs_dir)
        budget = tuning_report.BUDGET.format(n=len(results))
        path = args.reports_dir / "tuning.md"
        noise_path = args.runs_dir / "noise.json"
        noise = json.loads(noise_path.read_text()) if noise_path.exists() else []
        limits_path = args.runs_dir / "capacity.json"
        limits = json.loads(limits_path.read_text()) if limits_path.exists() else None
        trade_path = args.runs_dir / "calibration.json"
        trade = json.loads(trade_path.read_text()) if trade_path.exists() else None
        winner = tuning_report.write_tuning_report(
            path, shipped, results, budget, noise, limits, trade
        )
        print(f"wrote {path}; chosen: {winner}")


def _positive_by_group(
    split: Split,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Watch times > 0 of the training days and of the validation day, by duration group."""
    from model_export.evaluation.scoring import DURATION_GROUPS, duration_group

    out: list[dict[str, np.ndarray]] = []
    for frame in (split.train, split.validation):
        y = labels(frame)
        group = duration_group(frame["duration_ms"].to_numpy())
        out.append(
            {name: y[(group == i) & (y > 0)] for i, (name, _, _) in enumerate(DURATION_GROUPS)}
        )
    return out[0], out[1]


def seeds(args: argparse.Namespace) -> None:
    """Every report model trained again with other seeds, scored through the serving path;
    the figures go to reports/seeds.json (see :mod:`model_export.evaluation.seeds`)."""
    from model_export.evaluation import seeds as seed_figures
    from model_export.evaluation.report import REPORT_ORDER

    names = args.models or list(REPORT_ORDER)
    prepared = prepare(args.data_dir)
    split = split_by_day(load_joined(args.data_dir))
    path = args.reports_dir / seed_figures.SEEDS_FILE
    runs = seed_figures.load(path)
    stages = Stages(len(args.seeds) * len(names))
    for seed in args.seeds:
        for name in names:
            stages.next(f"{name} seed {seed}")
            if not args.redo and str(seed) in runs.get(name, {}):
                print(f"{name} seed {seed}: already in {path}")
                continue
            # EGMN's are version 3's seeds; runs/seeds/<seed>/egmn/1 keeps version 2's, the
            # tuning's noise (tune --noise).
            version = "3" if name == "egmn" else "1"
            out = args.runs_dir / "seeds" / str(seed) / name / version
            start = time.perf_counter()
            if name == "egmn":
                config = dataclasses.replace(named_config(HEADLINE_CONFIG), seed=seed)
                run = run_egmn(
                    prepared, config, progress=not args.quiet, label=f"egmn/3 seed {seed}"
                )
                _write(run, out, version, {})
            else:
                config_b = BaselineConfig.of(name, seed=seed)
                _write_baseline(
                    run_baseline(prepared, config_b, progress=not args.quiet), out, "1", {}
                )
            seconds = time.perf_counter() - start
            figures = seed_figures.figures_of(out, split)
            figures["train_seconds"] = round(seconds, 1)
            runs.setdefault(name, {})[str(seed)] = figures
            seed_figures.save(path, runs, split.test_date)
            overall = figures["overall"]
            assert isinstance(overall, dict)
            print(
                f"{name} seed {seed}: {seconds:.0f} s; MAE {overall.get('mae_point')}, XAUC "
                f"{overall.get('xauc_point')}, CRPS {overall.get('crps')}",
                flush=True,
            )


def rolling(args: argparse.Namespace) -> None:
    """Every report model fitted on the logs without their last days (reports/rolling.json;
    see :mod:`model_export.evaluation.rolling`)."""
    from model_export.data.prepared import prepare_split
    from model_export.evaluation import rolling as rolling_check
    from model_export.evaluation.report import REPORT_ORDER

    names = args.models or list(REPORT_ORDER)
    prepared: dict[int, Prepared] = {}

    def fit(split: Split, name: str) -> dict[str, float]:
        if split.test_date not in prepared:
            prepared.clear()  # one split's tensors in memory at a time
            prepared[split.test_date] = prepare_split(split)
        data = prepared[split.test_date]
        label = f"{name}, test day {split.test_date}"
        if name == "egmn":
            run = run_egmn(
                data, named_config(HEADLINE_CONFIG), progress=not args.quiet, label=label
            )
            return served_metrics(run)
        return run_baseline(data, BaselineConfig.of(name), progress=not args.quiet).metrics

    path = args.reports_dir / rolling_check.ROLLING_FILE
    stages = Stages(len(args.held_back) * len(names))
    rolling_check.run_folds(
        load_joined(args.data_dir),
        names,
        fit,
        path,
        held_back=args.held_back,
        redo=args.redo,
        announce=stages.next,
    )
    print(f"wrote {path}")
