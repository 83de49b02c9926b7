"""Id-keyed statistic tables (the history features' source): build, save, load and verify.

A model with lookup features ships its tables in one ``.npz`` file beside ``model.onnx``
(plain arrays, no pickle): per table, ``<table>.ids`` (sorted distinct int64) and one float32
column per statistic. The service loads it once per model version; a request's ids are looked
up in it by binary search (``service.runtime.features``), so clients send only the ids.

The offline side builds the same objects, one per day, from the days before it, and encodes
each day's rows through them with the service's own code: training and serving cannot read
the tables differently. What an id with no row becomes (``defaults``) belongs to the tables:
the value of a statistic with no views, the global value it is smoothed towards, which is a
different number on each offline day and the manifest's ``default`` for the frozen tables.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.errors import ModelLoadError
from service.manifest import HistoryTables, LookupFeature, Manifest, sha256_file

IntArray = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]

STORED = "__stored__."
"""Start of the columns a request carries when a store (Redis) has read a model's tables for
it: no decoder makes one, since no model reads a source of that name."""


def stored_column(table: str, source: str, statistic: str) -> str:
    """The column of a statistic read from a store: the raw value, NaN where no row."""
    return f"{STORED}{table}.{source}.{statistic}"


def stored_found(table: str, source: str) -> str:
    """The column of which rows' ids the store held (bool)."""
    return f"{STORED}{table}.{source}"


@dataclass(frozen=True)
class TableRead:
    """One table read by one id column, and the statistics the model takes from it."""

    table: str
    source: str
    statistics: tuple[str, ...]


@dataclass(frozen=True)
class ModelTables:
    """What a store needs to read a model version's tables for a request: the file's sha256
    (the tables' name in the store), the reads its lookup features make, and the tables
    loaded from the model directory (the answer when the store cannot give one)."""

    sha256: str
    reads: tuple[TableRead, ...]
    local: LookupTables

    @classmethod
    def of(cls, manifest: Manifest, local: LookupTables | None) -> ModelTables | None:
        """None for a model without lookup features."""
        if manifest.history is None or local is None:
            return None
        reads: dict[tuple[str, str], list[str]] = {}
        for spec in manifest.features:
            if isinstance(spec, LookupFeature):
                reads.setdefault((spec.table, spec.source), []).append(spec.statistic)
        return cls(
            manifest.history.sha256,
            tuple(
                TableRead(table, source, tuple(dict.fromkeys(statistics)))
                for (table, source), statistics in reads.items()
            ),
            local,
        )


@dataclass(frozen=True)
class Table:
    """One id-keyed table: sorted distinct ids and one float32 column per statistic."""

    ids: IntArray
    columns: Mapping[str, Float32Array]
    defaults: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ids.ndim != 1 or self.ids.dtype != np.int64:
            shape = self.ids.shape
            raise ValueError(f"ids must be a 1-D int64 array, got {self.ids.dtype} {shape}")
        if self.ids.size > 1 and not bool(np.all(self.ids[1:] > self.ids[:-1])):
            raise ValueError("ids must be sorted and distinct")
        for name, column in self.columns.items():
            if column.shape != self.ids.shape or column.dtype != np.float32:
                raise ValueError(
                    f"statistic {name!r} must be float32 with one value per id, got "
                    f"{column.dtype} {column.shape} for {self.ids.size} ids"
                )


@dataclass(frozen=True)
class LookupTables:
    """The tables of one cut-off, by table name."""

    tables: Mapping[str, Table]

    def table(self, name: str) -> Table:
        return self.tables[name]

    def save(self, path: Path) -> None:
        """Write the ``.npz`` the service loads (compressed: many ids share the same values)."""
        arrays: dict[str, np.ndarray] = {}
        for name, table in self.tables.items():
            arrays[f"{name}.ids"] = table.ids
            for statistic, column in table.columns.items():
                arrays[f"{name}.{statistic}"] = column
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, model_dir: Path, manifest: Manifest) -> LookupTables | None:
        """The manifest's history tables, verified; None when the model has none.

        Refused with a one-line ModelLoadError: a missing file, another sha256 than the
        manifest's, an unreadable archive, a table or statistic the manifest declares but the
        file lacks, ids that are not sorted distinct int64, a column of another length or
        type than the ids', and any value that is not finite.
        """
        history = manifest.history
        if history is None:
            return None
        path = model_dir / history.file
        if not path.is_file():
            raise ModelLoadError(f"{history.file} is missing")
        if sha256_file(path) != history.sha256:
            raise ModelLoadError(f"{history.file} does not have the sha256 the manifest names")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelLoadError(f"{history.file} is unreadable: {exc}") from None
        return cls(
            {name: _checked_table(history, name, arrays, manifest) for name in history.tables}
        )


def _checked_table(
    history: HistoryTables, name: str, arrays: Mapping[str, np.ndarray], manifest: Manifest
) -> Table:
    declared = history.tables[name]
    where = f"{history.file}: table {name!r}"
    ids = arrays.get(f"{name}.ids")
    if ids is None:
        raise ModelLoadError(f"{where} has no ids")
    if ids.dtype != np.int64 or ids.shape != (declared.rows,):
        raise ModelLoadError(
            f"{where}: ids are {ids.dtype} {ids.shape}, manifest says int64 ({declared.rows},)"
        )
    columns: dict[str, Float32Array] = {}
    for statistic in declared.statistics:
        column = arrays.get(f"{name}.{statistic}")
        if column is None:
            raise ModelLoadError(f"{where} has no statistic {statistic!r}")
        if column.dtype != np.float32 or column.shape != (declared.rows,):
            raise ModelLoadError(
                f"{where}: {statistic!r} is {column.dtype} {column.shape}, manifest says "
                f"float32 ({declared.rows},)"
            )
        if not bool(np.all(np.isfinite(column))):
            raise ModelLoadError(f"{where}: {statistic!r} holds values that are not finite")
        columns[statistic] = column
    defaults = {
        f.statistic: f.default
        for f in manifest.features
        if isinstance(f, LookupFeature) and f.table == name
    }
    try:
        return Table(ids=ids, columns=columns, defaults=defaults)
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
