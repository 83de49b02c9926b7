"""The served history lookup: the frozen tables of a model directory, read by id at request
time, give the very numbers the offline join gave the test day; unseen ids get the default;
bad ids fail as they do for the vocabulary features; a broken table file refuses the model."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_export.data import load_joined, raw_columns, split_by_day
from model_export.data.history import HISTORY_FIELDS, STATISTICS, feature_name
from model_export.data.prepared import Prepared, prepare_split
from model_export.export.model_dir import HISTORY_FILE
from service.errors import FeatureError, ModelLoadError
from service.manifest import CategoricalFeature, InputTensor, LookupFeature, Manifest
from service.runtime.features import encode_columns
from service.runtime.model import ModelRuntime, SessionConfig
from service.runtime.repository import load_repository
from tests.support.api import app_client, json_columns
from tests.support.history import write_history_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared() -> Iterator[Prepared]:
    yield prepare_split(split_by_day(load_joined()), history=True)


@pytest.fixture(scope="module")
def model_root(prepared: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository with one model with history features (untrained weights: the lookup is
    what is tested, and it does not care)."""
    root = tmp_path_factory.mktemp("models")
    write_history_model(prepared, root)
    yield root


@pytest.fixture(scope="module")
def model(model_root: Path) -> ModelRuntime:
    return ModelRuntime.load(model_root / "hist" / "1", SessionConfig(intra_op_threads=1))


def test_model_dir_holds_the_frozen_tables(model: ModelRuntime, prepared: Prepared) -> None:
    history = model.manifest.history
    assert history is not None and history.file == HISTORY_FILE
    assert history.cutoff_date == prepared.split.validation_date
    size = (model.path / HISTORY_FILE).stat().st_size
    rows = {name: t.rows for name, t in history.tables.items()}
    print(f"\n{HISTORY_FILE}: {size / 1e3:.0f} kB for {rows} ids x {len(STATISTICS)} statistics")
    assert set(rows) == set(HISTORY_FIELDS)
    assert size < 2_000_000


def test_serving_lookup_equals_the_offline_join_on_the_test_day(
    model: ModelRuntime, prepared: Prepared
) -> None:
    test = prepared.split.test
    # The client sends the raw columns it always sent: nothing about the history.
    columns = raw_columns(test, model.manifest.source_columns())
    assert not any("hist" in c for c in columns)
    tensors = model.encode(columns)
    np.testing.assert_array_equal(tensors["numeric"], prepared.test.numeric.numpy())
    np.testing.assert_array_equal(tensors["categorical"], prepared.test.categorical.numpy())


def _lookup_specs(model: ModelRuntime) -> list[LookupFeature]:
    return [f for f in model.manifest.features if isinstance(f, LookupFeature)]


def _numeric(model: ModelRuntime, tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    return tensors["numeric"][:, model.manifest.inputs[1].columns.index(name)]


def test_unseen_and_missing_ids_get_the_default(model: ModelRuntime, prepared: Prepared) -> None:
    rows = prepared.split.test.iloc[:4]
    columns = raw_columns(rows, model.manifest.source_columns())
    columns["user_id"] = np.array([10**12, -1, None, 2.5], dtype=object)
    tensors = model.encode(columns)
    for spec in _lookup_specs(model):
        got = _numeric(model, tensors, spec.name)
        if spec.source != "user_id":
            continue
        raw = np.log1p(max(spec.default, 0.0)) if spec.log1p else spec.default
        np.testing.assert_allclose(got, (raw - spec.mean) / spec.std, rtol=1e-6)
        if spec.unseen_indicator:
            np.testing.assert_array_equal(_numeric(model, tensors, spec.indicator_name), 1.0)
    count = next(s for s in _lookup_specs(model) if s.name == feature_name("user_id", "count"))
    assert count.default == 0.0


GARBAGE: list[Any] = [
    ["abc", 1],
    [1, "x" * 100_000],
    [None, 3],
    [1.5, float("nan")],
    [float("inf"), 2],
    [True, 1],
    [{"a": 1}, 2],
    [[1, 2], 3],
    [10**30, 1],
    [b"12", 1],
]


def _outcome(model: ModelRuntime, feature: Any, dtype: Any, values: Any) -> str:
    """What encoding one user id column through one feature gives: the error, or none."""
    inputs = [InputTensor(name="x", dtype=dtype, columns=[feature.name])]
    column = {"user_id": np.array(values, dtype=object)}
    try:
        encode_columns([feature], inputs, column, model.lookups)
    except FeatureError as exc:
        return f"FeatureError: {exc}"
    return "encoded"


# The vocabulary path casts 1e30 to int64 before it finds the value unknown (numpy warns).
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("values", GARBAGE, ids=range(len(GARBAGE)))
def test_bad_ids_fail_as_the_vocabulary_features_do(model: ModelRuntime, values: Any) -> None:
    """The same FeatureError (column, row, message), or none, for the lookup of a user id as
    for the user id's own vocabulary lookup."""
    vocab = next(
        f
        for f in model.manifest.features
        if isinstance(f, CategoricalFeature) and f.source == "user_id"
    )
    lookup = next(s for s in _lookup_specs(model) if s.source == "user_id")
    by_vocab = _outcome(model, vocab, "int64", values)
    by_lookup = _outcome(model, lookup, "float32", values)
    assert by_lookup == by_vocab
    if isinstance(values[0], str | dict | list | bytes) or isinstance(values[1], str):
        assert by_lookup.startswith("FeatureError") and "user_id" in by_lookup


def test_lookup_cost_on_10k_rows(model: ModelRuntime) -> None:
    """Measured, not asserted: the machine is shared."""
    specs = _lookup_specs(model)
    inputs = [InputTensor(name="n", dtype="float32", columns=[s.name for s in specs])]
    assert model.lookups is not None
    rng = np.random.default_rng(0)
    known = model.lookups.table("user_id").ids
    columns = {
        field: rng.choice(model.lookups.table(field).ids, 10_000) for field in HISTORY_FIELDS
    }
    columns["user_id"] = np.where(rng.random(10_000) < 0.2, 10**9, rng.choice(known, 10_000))
    encode_columns(specs, inputs, columns, model.lookups)
    best = min(
        _timed(lambda: encode_columns(specs, inputs, columns, model.lookups)) for _ in range(20)
    )
    print(f"\n{len(specs)} history columns of 10k rows: {best * 1e3:.2f} ms (best of 20)")


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def test_a_request_needs_no_new_column(model_root: Path, prepared: Prepared) -> None:
    """Through HTTP: the test day's rows as a client sends them, answered from the tables."""
    repo = load_repository(model_root, SessionConfig(intra_op_threads=1), warmup_rows=8)
    model = repo.get("hist")
    rows = prepared.split.test.iloc[:50]
    sources = model.manifest.source_columns()
    for client in app_client(repo):
        reply = client.post(
            "/v1/models/hist/predict", json={"features": json_columns(rows, sources)}
        )
        assert reply.status_code == 200, reply.text
        offline = model.distribution(model.run(model.encode(raw_columns(rows, sources))))
        np.testing.assert_allclose(reply.json()["expected_watch_time_s"], offline.mean(), rtol=1e-9)
        bad = json_columns(rows.iloc[:3], sources)
        bad["user_id"][1] = "not-an-id"
        reply = client.post("/v1/models/hist/predict", json={"features": bad})
        assert reply.status_code == 422 and "user_id" in reply.text


def _copy(model_root: Path, tmp_path: Path) -> Path:
    target = tmp_path / "hist" / "1"
    shutil.copytree(model_root / "hist" / "1", target)
    return target


def _rewrite(model_dir: Path, arrays: dict[str, np.ndarray]) -> None:
    """A new table file, with the manifest's sha256 updated: only its contents are wrong."""
    np.savez(model_dir / HISTORY_FILE, **arrays)  # type: ignore[arg-type]
    from service.manifest import sha256_file

    document = json.loads((model_dir / "manifest.json").read_text())
    document["history"]["sha256"] = sha256_file(model_dir / HISTORY_FILE)
    Manifest.model_validate(document).write(model_dir / "manifest.json")


def _arrays(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / HISTORY_FILE) as archive:
        return {k: archive[k] for k in archive.files}


def test_a_missing_or_corrupt_table_file_refuses_the_model(
    model_root: Path, tmp_path: Path
) -> None:
    def refused(case: str, match: str, edit: Any) -> None:
        model_dir = _copy(model_root, tmp_path / case)
        edit(model_dir)
        with pytest.raises(ModelLoadError, match=match):
            ModelRuntime.load(model_dir)

    refused("missing", "history.npz is missing", lambda d: (d / HISTORY_FILE).unlink())

    def flip(d: Path) -> None:
        data = bytearray((d / HISTORY_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (d / HISTORY_FILE).write_bytes(bytes(data))

    refused("flipped", "does not have the sha256", flip)

    def garbage(d: Path) -> None:
        (d / HISTORY_FILE).write_bytes(b"not a zip file")
        document = json.loads((d / "manifest.json").read_text())
        from service.manifest import sha256_file

        document["history"]["sha256"] = sha256_file(d / HISTORY_FILE)
        (d / "manifest.json").write_text(json.dumps(document))

    refused("garbage", "history.npz is unreadable", garbage)

    def nan(d: Path) -> None:
        arrays = _arrays(d)
        arrays["video_id.mean_watch_s"][3] = np.nan
        _rewrite(d, arrays)

    refused("nan", "'mean_watch_s' holds values that are not finite", nan)

    def short(d: Path) -> None:
        arrays = _arrays(d)
        arrays["author_id.skip_share"] = arrays["author_id.skip_share"][:-1]
        _rewrite(d, arrays)

    refused("short", r"'skip_share' is float32 \(\d+,\), manifest says", short)

    def unsorted(d: Path) -> None:
        arrays = _arrays(d)
        arrays["user_id.ids"] = arrays["user_id.ids"][::-1].copy()
        _rewrite(d, arrays)

    refused("unsorted", "ids must be sorted and distinct", unsorted)

    def absent(d: Path) -> None:
        arrays = _arrays(d)
        del arrays["user_id.median_watch_s"]
        _rewrite(d, arrays)

    refused("absent", "no statistic 'median_watch_s'", absent)

    def wide(d: Path) -> None:
        arrays = _arrays(d)
        arrays["user_id.count"] = arrays["user_id.count"].astype(np.float64)
        _rewrite(d, arrays)

    refused("wide", "'count' is float64", wide)


def test_manifest_refuses_lookups_without_tables(model: ModelRuntime) -> None:
    document = json.loads(model.manifest.to_json())
    document["history"] = None
    with pytest.raises(ValueError, match="reads history tables the manifest lacks"):
        Manifest.model_validate(document)
    document = json.loads(model.manifest.to_json())
    document["history"]["tables"]["user_id"]["statistics"].remove("count")
    with pytest.raises(ValueError, match="no statistic 'count'"):
        Manifest.model_validate(document)
