"""The feature store: the columns of the user and video tables, looked up by id.

A ranking client may send only the request-time columns (``user_id``, ``video_id``, ``tab``,
``hourmin``, ``date``, ...): every column the model reads that the request lacks and that an
entity table holds is filled here, from the id in the entity's key column, before the rows
are queued (:mod:`service.runtime.fill`). Columns the client sends win (whole columns: a null
it sends stays a missing value), so a request with every column is answered exactly as
before.

Two stores hold the same tables, described by one :class:`StoreSchema`:

- :class:`EmbeddedStore` (the default): the tables file that ships with the service
  (``feature_store/kuairand.npz``, written by ``python -m model_export feature-tables``), in
  memory, as sorted ids and one array per column. A batch of ids is one ``np.searchsorted``
  per entity and one ``np.take`` per column, with no Python loop over rows; it is the same
  id search (:func:`~service.runtime.features.find_rows`) the history tables that a model
  version ships use.
- :class:`~service.runtime.redis_store.RedisStore` (``WATCHTIME_FEATURE_STORE=redis://...``):
  one hash per entity, a field per id holding its row; one ``HMGET`` per entity and request,
  the entities' commands in flight at once.

An id with no row (unknown, null, a fraction) gives a missing value in every column of that
entity, which the manifest turns into the missing index or fill: a miss, counted, never an
error. A store that fails (Redis down or slow) counts an error and leaves the columns
missing, or, with ``WATCHTIME_FEATURE_STORE_REQUIRED``, fails the request with
:class:`~service.errors.FeatureStoreUnavailable` (503).

Column kinds: ``int`` (int64 ids and codes), ``float`` (NaN where the table has no value) and
``text`` (dictionary-coded strings). A filled column has the type a decoded request column of
the same values has: int64 when every row was found, else float64 with NaN; text as an
object array with None. One derived rule exists: ``days_since`` (``freshness_days``, the
days from the video's ``upload_day`` to the request's ``date``).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from service.runtime.features import _days_from_civil, find_rows
from service.runtime.lookup import TableRead

log = logging.getLogger("watchtime.store")

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

STORE_FORMAT = 1
"""Layout version of the tables file and of the Redis keys; bumped on incompatible changes."""

Kind = Literal["int", "float", "text"]
KINDS: tuple[Kind, ...] = ("int", "float", "text")


@dataclass(frozen=True)
class EntitySchema:
    """One entity table: its name, its key column (in requests) and its columns' kinds."""

    name: str
    key: str
    columns: Mapping[str, Kind]


@dataclass(frozen=True)
class DerivedColumn:
    """A column computed from two others once they are filled: ``days_since`` gives the
    days from ``start`` (days since 1970-01-01) to ``end`` (yyyymmdd), missing when either
    is."""

    name: str
    rule: Literal["days_since"]
    start: str
    end: str


@dataclass(frozen=True)
class StoreSchema:
    """Every entity table and derived column a store holds: the same for every store."""

    entities: tuple[EntitySchema, ...]
    derived: tuple[DerivedColumn, ...] = ()
    version: str = ""
    attribution: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entity in self.entities:
            for name in [*entity.columns, entity.key]:
                if name in seen and name not in {e.key for e in self.entities}:
                    raise ValueError(f"column {name!r} appears in two entity tables")
                seen.add(name)
            bad = {k for k in entity.columns.values() if k not in KINDS}
            if bad:
                raise ValueError(f"entity {entity.name!r}: unknown column kinds {sorted(bad)}")

    def entity(self, name: str) -> EntitySchema:
        for entity in self.entities:
            if entity.name == name:
                return entity
        raise KeyError(name)

    def fillable(self) -> frozenset[str]:
        """Every column this store can fill (given its key)."""
        names = {c for e in self.entities for c in e.columns}
        return frozenset(names | {d.name for d in self.derived})

    def document(self) -> dict[str, Any]:
        return {
            "format": STORE_FORMAT,
            "version": self.version,
            "attribution": self.attribution,
            "entities": [
                {"name": e.name, "key": e.key, "columns": dict(e.columns)} for e in self.entities
            ],
            "derived": [
                {"name": d.name, "rule": d.rule, "start": d.start, "end": d.end}
                for d in self.derived
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StoreSchema:
        doc = json.loads(text)
        if doc.get("format") != STORE_FORMAT:
            raise ValueError(
                f"tables format {doc.get('format')!r}, this service reads {STORE_FORMAT}"
            )
        entities = tuple(
            EntitySchema(e["name"], e["key"], dict(e["columns"])) for e in doc["entities"]
        )
        derived = tuple(
            DerivedColumn(d["name"], d["rule"], d["start"], d["end"]) for d in doc["derived"]
        )
        return cls(entities, derived, str(doc.get("version", "")), str(doc.get("attribution", "")))


# --------------------------------------------------------------------------- filled columns


def int_column(values: npt.NDArray[Any], hit: BoolArray) -> np.ndarray:
    """An int column as a decoder makes it: int64 when every row was found, else float64 NaN."""
    if bool(hit.all()):
        return values.astype(np.int64, copy=False)
    return np.where(hit, values, np.nan).astype(np.float64)


def float_column(values: npt.NDArray[Any], hit: BoolArray) -> np.ndarray:
    return np.where(hit, values, np.nan).astype(np.float64)


def civil_days(dates: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of yyyymmdd numbers (float64; NaN where missing or impossible).

    A request's rows mostly share one date: that case is one date computed once.
    """
    x = np.asarray(dates, dtype=np.float64)
    if x.size and bool((x == x[0]).all()):
        return np.full(x.shape, _one_civil_day(float(x[0])))
    ok = np.isfinite(x)
    d = np.where(ok, x, 19700101).astype(np.int64)
    year, rest = np.divmod(d, 10000)
    month, day = np.divmod(rest, 100)
    days = _days_from_civil(year, np.clip(month, 1, 12), np.clip(day, 1, 31))
    return np.where(ok, days.astype(np.float64), np.nan)


def _one_civil_day(value: float) -> float:
    if not math.isfinite(value) or value != round(value):
        return math.nan
    year, rest = divmod(int(value), 10000)
    month, day = divmod(rest, 100)
    try:
        return float(datetime.date(year, month, day).toordinal() - _EPOCH_ORDINAL)
    except ValueError:  # not a calendar date: as the vector path, clipped
        days = _days_from_civil(
            np.array([year]), np.array([min(max(month, 1), 12)]), np.array([min(max(day, 1), 31)])
        )
        return float(days[0])


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def days_since(start_days: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Days from ``start_days`` (days since 1970-01-01) to yyyymmdd ``end``; NaN where
    either is missing."""
    return civil_days(end) - np.asarray(start_days, dtype=np.float64)


def empty_column(kind: Kind, n: int) -> np.ndarray:
    """A column of ``n`` missing values of ``kind``, as a row with no entity has."""
    if kind == "text":
        return np.full(n, None, dtype=object)
    return np.full(n, np.nan, dtype=np.float64)


# --------------------------------------------------------------------------- stores


class Lookup(Protocol):
    """What a store answers for one entity: the columns asked for and which rows were found."""

    name: str

    async def lookup(
        self, entity: EntitySchema, ids: np.ndarray, columns: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], BoolArray]: ...

    async def close(self) -> None: ...


@runtime_checkable
class TableLookup(Protocol):
    """A store that also holds the tables model versions ship (Redis), by the tables file's
    sha256 (see :mod:`service.runtime.redis_store`)."""

    async def lookup_table(
        self, sha256: str, read: TableRead, ids: np.ndarray
    ) -> tuple[np.ndarray, BoolArray]: ...


class EntityTable:
    """One entity in memory: sorted distinct ids and its columns by row.

    The columns of a kind sit in one matrix of a row per column (ints as int64, floats as
    float64 with NaN, text as int64 codes into the concatenated distinct strings of every
    text column, with one None at the end for "no value"), so a lookup is one take per kind
    whatever the number of columns: a request's cost is a handful of numpy calls.
    """

    def __init__(
        self,
        schema: EntitySchema,
        ids: IntArray,
        values: Mapping[str, np.ndarray],
        categories: Mapping[str, np.ndarray],
    ) -> None:
        self.schema = schema
        self.ids = ids
        self.values = values  # per column, as stored (text: codes, -1 no value)
        self.categories = categories  # per text column: its strings, then None
        n = ids.size
        self._index: dict[str, tuple[Kind, int]] = {}
        by_kind: dict[Kind, list[np.ndarray]] = {"int": [], "float": [], "text": []}
        labels: list[object] = []
        for name, kind in schema.columns.items():
            column = values[name]
            if kind == "text":
                own = categories[name][:-1]
                column = np.where(column < 0, -1, column + len(labels))
                labels.extend(own.tolist())
            self._index[name] = (kind, len(by_kind[kind]))
            by_kind[kind].append(column)
        self._labels = np.array([*labels, None], dtype=object)
        none = len(labels)
        self._ints = np.array(by_kind["int"], dtype=np.int64).reshape(-1, n)
        self._floats = np.array(by_kind["float"], dtype=np.float64).reshape(-1, n)
        texts = np.array(by_kind["text"], dtype=np.int64).reshape(-1, n)
        self._texts = np.where(texts < 0, none, texts)

    def rows(self, ids: np.ndarray) -> IntArray:
        return find_rows(self.ids, self.schema.key, ids)

    def take(self, columns: Sequence[str], rows: IntArray) -> dict[str, np.ndarray]:
        """The ``columns`` of ``rows`` (-1: not found, every column missing)."""
        hit = rows >= 0
        every = bool(hit.all())
        safe = rows if every else np.where(hit, rows, 0)
        if self.ids.size == 0:
            safe, every = np.zeros(rows.shape, dtype=np.int64), False
            hit = np.zeros(rows.shape, dtype=np.bool_)
        kinds = {self._index[c][0] for c in columns}
        ints = floats = texts = None
        if "int" in kinds:
            taken = self._ints[:, safe] if self.ids.size else self._ints[:, :0]
            ints = taken if every else np.where(hit, taken, np.nan)
        if "float" in kinds:
            reals = self._floats[:, safe] if self.ids.size else self._floats[:, :0]
            floats = reals if every else np.where(hit, reals, np.nan)
        if "text" in kinds:
            codes = self._texts[:, safe] if self.ids.size else self._texts[:, :0]
            texts = self._labels[codes if every else np.where(hit, codes, self._labels.size - 1)]
        out: dict[str, np.ndarray] = {}
        for name in columns:
            kind, j = self._index[name]
            block = ints if kind == "int" else floats if kind == "float" else texts
            assert block is not None
            out[name] = block[j] if block.shape[1] == rows.size else empty_column(kind, rows.size)
        return out


class EmbeddedStore:
    """The tables in memory (see the module's notes)."""

    name = "embedded"

    def __init__(self, schema: StoreSchema, tables: Mapping[str, EntityTable]) -> None:
        self.schema = schema
        self.tables = tables

    def lookup_now(
        self, entity: EntitySchema, ids: np.ndarray, columns: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], BoolArray]:
        table = self.tables[entity.name]
        rows = table.rows(ids)
        return table.take(columns, rows), rows >= 0

    async def lookup(
        self, entity: EntitySchema, ids: np.ndarray, columns: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], BoolArray]:
        return self.lookup_now(entity, ids, columns)

    async def close(self) -> None:
        return None

    @classmethod
    def load(cls, path: Path) -> EmbeddedStore:
        """The tables file (an ``.npz`` of plain arrays, no pickle); ValueError if unreadable."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: unreadable feature tables: {exc}") from None
        if "schema" not in arrays:
            raise ValueError(f"{path}: no schema in the feature tables")
        schema = StoreSchema.from_json(str(arrays["schema"]))
        tables: dict[str, EntityTable] = {}
        for entity in schema.entities:
            tables[entity.name] = _table(path, entity, arrays)
        return cls(schema, tables)


def _table(path: Path, entity: EntitySchema, arrays: Mapping[str, np.ndarray]) -> EntityTable:
    where = f"{path}: entity {entity.name!r}"
    ids = arrays.get(f"{entity.name}.ids")
    if ids is None or ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"{where}: ids missing or not 1-D integers")
    ids = ids.astype(np.int64)
    if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError(f"{where}: ids are not sorted and distinct")
    values: dict[str, np.ndarray] = {}
    categories: dict[str, np.ndarray] = {}
    for name, kind in entity.columns.items():
        key = f"{entity.name}.{name}"
        column = arrays.get(key)
        if column is None or column.shape != ids.shape:
            raise ValueError(f"{where}: column {name!r} missing or not one value per id")
        if kind == "text":
            labels = arrays.get(f"{key}.categories")
            if labels is None or column.dtype.kind not in "iu" or labels.dtype.kind != "U":
                raise ValueError(f"{where}: text column {name!r} needs codes and categories")
            if column.size and (int(column.min()) < -1 or int(column.max()) >= labels.size):
                raise ValueError(f"{where}: text column {name!r} has codes out of range")
            categories[name] = np.array([*labels.tolist(), None], dtype=object)
            values[name] = column.astype(np.int64)
        elif kind == "int":
            if column.dtype.kind not in "iu":
                raise ValueError(f"{where}: int column {name!r} holds {column.dtype}")
            values[name] = column.astype(np.int64)
        else:
            values[name] = column.astype(np.float64)
    return EntityTable(entity, ids, values, categories)


_EMBEDDED: dict[tuple[str, int, int], EmbeddedStore] = {}


def load_embedded(path: Path) -> EmbeddedStore:
    """The tables file, loaded once per file version in a process (apps and tests share it)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    store = _EMBEDDED.get(key)
    if store is None:
        store = EmbeddedStore.load(path)
        _EMBEDDED.clear()
        _EMBEDDED[key] = store
    return store
