"""Filling a request's columns from the feature store: the data plane's one call per request.

What a model's requests may leave out (:meth:`FeatureLookup.fillable`), and, per request,
the entity tables' columns by id and, when the store holds them, the statistics of the
model's own tables (:meth:`FeatureLookup.fill`), with the hit, miss, error and duration
metrics and the policy for a store that fails. The stores and their tables are in
:mod:`service.runtime.store`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.errors import FeatureError, FeatureStoreUnavailable
from service.manifest import derived_once
from service.runtime.features import find_rows
from service.runtime.lookup import ModelTables, Table, TableRead, stored_column, stored_found
from service.runtime.store import (
    BoolArray,
    DerivedColumn,
    EntitySchema,
    Lookup,
    StoreSchema,
    TableLookup,
    days_since,
    empty_column,
)


@dataclass(frozen=True)
class _Plan:
    """What a model's requests may leave out: per entity, the model's columns it holds."""

    entities: tuple[tuple[EntitySchema, tuple[str, ...]], ...]
    derived: tuple[DerivedColumn, ...]
    fillable: frozenset[str]


class FeatureLookup:
    """Fills a request's missing columns from a store: the data plane's one call per request."""

    def __init__(self, schema: StoreSchema, store: Lookup, required: bool = False) -> None:
        self.schema = schema
        self.store = store
        self.required = required
        self._plans: dict[int, tuple[object, _Plan]] = {}

    def register_metrics(self) -> None:
        """Every series of this store at zero (see :mod:`service.metrics`)."""
        metrics.register_feature_store(self.store.name, [e.name for e in self.schema.entities])

    def plan(self, sources: Sequence[str]) -> _Plan:
        """The columns of ``sources`` this store can fill, by entity (cached per list)."""

        def build() -> _Plan:
            wanted = set(sources)
            entities: list[tuple[EntitySchema, tuple[str, ...]]] = []
            fillable: set[str] = set()
            derived: list[DerivedColumn] = []
            for entity in self.schema.entities:
                columns = tuple(c for c in entity.columns if c in wanted)
                entities.append((entity, columns))
                fillable.update(columns)
            for rule in self.schema.derived:
                if rule.name in wanted:
                    derived.append(rule)
                    fillable.add(rule.name)
            return _Plan(tuple(entities), tuple(derived), frozenset(fillable))

        return derived_once(self._plans, sources, build)

    def fillable(self, sources: Sequence[str]) -> frozenset[str]:
        """The columns of ``sources`` a request may leave out."""
        return self.plan(sources).fillable

    async def fill(
        self,
        sources: Sequence[str],
        columns: Mapping[str, np.ndarray],
        n: int,
        tables: ModelTables | None = None,
    ) -> Mapping[str, np.ndarray]:
        """``columns`` with every column of ``sources`` they lack that the store holds, and,
        when the store holds model versions' tables, the statistics of ``tables`` (see
        :meth:`_fill_tables`); one duration observed per request.

        Raises FeatureError for a column that is neither sent nor can be looked up (its
        entity's key column is not sent either), and FeatureStoreUnavailable when the store
        fails and the policy requires it.
        """
        entities = not all(s in columns for s in sources)
        store = self.store
        read_tables = tables is not None and isinstance(store, TableLookup)
        if not entities and not read_tables:
            return columns
        started = time.perf_counter()
        try:
            out = await self._fill_entities(sources, columns, n) if entities else dict(columns)
            if read_tables:
                assert tables is not None and isinstance(store, TableLookup)
                await self._fill_tables(store, tables, out, n)
        finally:
            metrics.FEATURE_LOOKUP_DURATION.labels(self.store.name).observe(
                time.perf_counter() - started
            )
        return out

    async def _fill_entities(
        self, sources: Sequence[str], columns: Mapping[str, np.ndarray], n: int
    ) -> dict[str, np.ndarray]:
        """The entity tables' part of :meth:`fill`."""
        plan = self.plan(sources)
        out = dict(columns)
        extra: dict[str, np.ndarray] = {}
        wanted: list[tuple[EntitySchema, tuple[str, ...], list[str]]] = []
        for entity, entity_columns in plan.entities:
            need = [c for c in entity_columns if c not in out]
            need += [
                d.start
                for d in plan.derived
                if d.name not in out and d.start in entity.columns and d.start not in out
            ]
            need = list(dict.fromkeys(need))
            if not need:
                continue
            if entity.key not in out:
                raise FeatureError(
                    need[0],
                    f"required column is missing (send it, or {entity.key!r} to look it up by)",
                )
            wanted.append((entity, entity_columns, need))
        # The entities' lookups at once: on Redis, their round trips overlap.
        answers = await asyncio.gather(
            *(self._lookup(e, out[e.key], need, n) for e, _, need in wanted),
            return_exceptions=True,
        )
        for (entity, entity_columns, _), answer in zip(wanted, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            values, hit = answer
            if hit is not None:
                found = int(np.count_nonzero(hit))
                metrics.FEATURE_LOOKUP_HITS.labels(entity.name).inc(found)
                metrics.FEATURE_LOOKUP_MISSES.labels(entity.name).inc(n - found)
            for name, value in values.items():
                if name in entity_columns:
                    out[name] = value
                else:
                    extra[name] = value
        for rule in plan.derived:
            if rule.name in out:
                continue
            start = out.get(rule.start, extra.get(rule.start))
            if start is None or rule.end not in out:
                missing = rule.end if start is not None else rule.start
                raise FeatureError(rule.name, f"required column is missing (or {missing!r})")
            out[rule.name] = days_since(start, out[rule.end])
        return out

    async def _lookup(
        self, entity: EntitySchema, ids: np.ndarray, columns: list[str], n: int
    ) -> tuple[dict[str, np.ndarray], BoolArray | None]:
        """The store's answer and the rows it found; on its failure, missing values and
        None (or 503 when required): an error is counted as one, not as misses."""
        try:
            return await self.store.lookup(entity, ids, columns)
        except FeatureStoreUnavailable as exc:
            metrics.FEATURE_LOOKUP_ERRORS.labels(self.store.name, exc.reason).inc()
            if self.required:
                raise
            return {c: empty_column(entity.columns[c], n) for c in columns}, None

    async def _fill_tables(
        self, store: TableLookup, tables: ModelTables, out: dict[str, np.ndarray], n: int
    ) -> None:
        """The statistics a model's lookup features read, from the store, into ``out``.

        The model directory's own tables (the same bytes: the store holds them by their
        sha256) answer instead when the store fails or does not hold them, the failure
        counted; with ``WATCHTIME_FEATURE_STORE_REQUIRED`` it is a 503, as for the entities.
        Every request of the model gets these columns, so that batches merge them.
        """
        for read in tables.reads:
            ids = out[read.source]
            try:
                values, found = await store.lookup_table(tables.sha256, read, ids)
            except FeatureStoreUnavailable as exc:
                metrics.FEATURE_LOOKUP_ERRORS.labels(self.store.name, exc.reason).inc()
                if self.required:
                    raise
                values, found = _local_read(tables.local.table(read.table), read, ids)
            else:
                hits = int(np.count_nonzero(found))
                metrics.FEATURE_LOOKUP_HITS.labels(f"history:{read.table}").inc(hits)
                metrics.FEATURE_LOOKUP_MISSES.labels(f"history:{read.table}").inc(n - hits)
            for j, statistic in enumerate(read.statistics):
                out[stored_column(read.table, read.source, statistic)] = values[:, j]
            out[stored_found(read.table, read.source)] = found

    async def close(self) -> None:
        await self.store.close()


def _local_read(table: Table, read: TableRead, ids: np.ndarray) -> tuple[np.ndarray, BoolArray]:
    """What the store would have answered, from the model directory's table."""
    rows = find_rows(table.ids, read.source, ids)
    found: BoolArray = rows >= 0
    if table.ids.size == 0:
        return np.full((rows.size, len(read.statistics)), np.nan), found
    safe = np.maximum(rows, 0)
    values = np.empty((rows.size, len(read.statistics)), dtype=np.float64)
    for j, statistic in enumerate(read.statistics):
        values[:, j] = table.columns[statistic][safe]
    values[~found] = np.nan
    return values, found
