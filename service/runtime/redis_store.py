"""The feature store in Redis: the same tables as the embedded store, one hash per entity.

Layout (written by ``python -m model_export publish-features``, see ``model_export.publish``):

- ``watchtime:features:current``: the version readers use (a string);
- ``watchtime:features:<version>:schema``: the tables' :class:`StoreSchema` as JSON, whose
  column order is the order of a row's fields;
- ``watchtime:features:<version>:<entity>``: one hash per entity, a field per id (decimal
  text), whose value is the whole row: one little-endian float64 per column in the schema's
  order, NaN for a missing value; an int column holds its integer (exact below 2**53), a
  text column the index of its string in the column's list;
- ``watchtime:features:<version>:categories``: those lists, as JSON
  (``{entity: {column: [string, ...]}}``).

- ``watchtime:model-tables:<sha256>:<table>``: a table a model version ships (its history
  statistics, ``history.npz``), keyed by the file's sha256 that the manifest names, in the
  same row layout (a float64 per statistic); ``watchtime:model-tables:<sha256>`` holds each
  table's statistics in row order, as JSON, and is set once every table is written. The
  keys of a sha256 never change, so they need no version switch; a model directory's own
  file answers when Redis fails or does not hold them (``publish-features --model-dir``).

A publication writes a whole new version and then points ``current`` at it with one ``SET``,
so a reader sees one version or the other, never half of one; the previous version is kept
(``--keep``) for readers that still hold its name.

A request's lookup is one ``HMGET`` per entity with the request's distinct ids, on a pooled
connection, bounded by ``WATCHTIME_FEATURE_STORE_TIMEOUT_MS`` from the first byte to the last
(waiting for a pooled connection and connecting included). The version in ``current`` is read
again at most once a second. A row in one field, rather than a hash per row with a field per
column, is what makes a batch cheap: Redis answers 256 ids in one command with 256 strings,
where a hash per row took 256 commands of 30 fields each (about 10 us of server time each,
and more in the client); and binary rows, rather than text, become one float64 matrix in one
``np.frombuffer``, where parsing 7,680 decimal strings cost milliseconds.

Where it runs: on the event loop, with redis-py's asyncio client. The lookup is network
waiting, which on the event loop costs no thread and lets the other requests' decoding and
answers go on; on the batch worker thread it would stall the encoding and post-processing of
every model while it waits. The Python work it leaves on the loop is one command and turning its
reply into arrays (one join, one ``frombuffer``, a take per column); hiredis parses the reply
in C.

A failure (refused or dropped connection, timeout, no published version) raises
:class:`FeatureStoreUnavailable`; after one, lookups fail at once for ``BACKOFF_S``, so an
outage costs each request nothing while Redis is away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import cast

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.errors import FeatureStoreUnavailable
from service.runtime.features import known_ids
from service.runtime.lookup import TableRead
from service.runtime.store import (
    BoolArray,
    EntitySchema,
    StoreSchema,
)

log = logging.getLogger("watchtime.store")

PREFIX = "watchtime:features"
POINTER = f"{PREFIX}:current"
MODEL_PREFIX = "watchtime:model-tables"
POINTER_REFRESH_S = 1.0
"""How long a reader goes on with the version it read from ``current``."""

BACKOFF_S = 0.25
"""After a failure, lookups fail at once for this long instead of trying again."""


def schema_key(version: str) -> str:
    return f"{PREFIX}:{version}:schema"


def table_key(version: str, entity: str) -> str:
    return f"{PREFIX}:{version}:{entity}"


def model_tables_key(sha256: str) -> str:
    """A model version's tables' layout (``{table: [statistic, ...]}``), set once they are
    all written."""
    return f"{MODEL_PREFIX}:{sha256}"


def model_table_key(sha256: str, table: str) -> str:
    return f"{MODEL_PREFIX}:{sha256}:{table}"


def categories_key(version: str) -> str:
    return f"{PREFIX}:{version}:categories"


ROW_DTYPE = np.dtype("<f8")
"""A row's values: little-endian float64, one per column."""

EXACT_INT = 2**53
"""Integers at or beyond this do not survive a float64 (the publisher refuses them)."""


def encode_rows(matrix: np.ndarray) -> list[bytes]:
    """Each row's value in its entity's hash, from the (rows, columns) float64 matrix."""
    data = np.ascontiguousarray(matrix, dtype=ROW_DTYPE)
    width = data.shape[1] * ROW_DTYPE.itemsize
    if width == 0:
        return [b""] * data.shape[0]
    buffer = data.tobytes()
    return [buffer[i : i + width] for i in range(0, len(buffer), width)]


def decode_rows(replies: Sequence[bytes | None], width: int) -> tuple[np.ndarray, BoolArray]:
    """Each reply's values as one (rows, width) float64 matrix, and which replies held a row
    (the others, ids without one, are all NaN); no loop over rows in Python."""
    values = np.array(replies, dtype=object) if replies else np.empty(0, dtype=object)
    hit: BoolArray = np.asarray(values != None, dtype=np.bool_)  # noqa: E711
    values[~hit] = np.full(width, np.nan, dtype=ROW_DTYPE).tobytes()
    buffer = b"".join(values.tolist())
    if len(buffer) != len(values) * width * ROW_DTYPE.itemsize:
        raise ValueError(f"rows do not hold {width} float64 values each")
    return np.frombuffer(buffer, dtype=ROW_DTYPE).reshape(len(values), width), hit


def redacted(url: str) -> str:
    """The URL without a password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


class RedisStore:
    """Lookups in Redis (see the module's notes); one client per event loop, made lazily."""

    name = "redis"

    def __init__(
        self, url: str, schema: StoreSchema, timeout_s: float, max_connections: int
    ) -> None:
        self.url = url
        self.schema = schema
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version: str | None = None
        self._version_read = -float("inf")
        self._down_until = -float("inf")
        self._positions: dict[str, dict[str, int]] = {}
        self._labels: dict[str, dict[str, np.ndarray]] = {}
        self._model_tables: dict[str, tuple[float, dict[str, dict[str, int]]]] = {}

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._loop = loop
        return self._client

    async def lookup(
        self, entity: EntitySchema, ids: np.ndarray, columns: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], BoolArray]:
        """The columns of each row's entity, and which rows were found."""

        async def locate() -> tuple[str, Mapping[str, int]]:
            version = await self._current()
            return table_key(version, entity.name), self._positions[entity.name]

        taken, found = await self._read(entity.key, ids, locate, columns)
        present = ~np.isnan(taken)
        whole: BoolArray = np.asarray(present.all(axis=0), dtype=np.bool_)
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(columns):
            kind = entity.columns[name]
            if kind == "text":
                out[name] = _text(taken[:, j], self._labels[entity.name][name])
            elif kind == "int" and whole[j]:
                out[name] = taken[:, j].astype(np.int64)
            else:
                out[name] = taken[:, j].copy()
        return out, found

    async def lookup_table(
        self, sha256: str, read: TableRead, ids: np.ndarray
    ) -> tuple[np.ndarray, BoolArray]:
        """A model version's table (by its file's sha256): the statistics of ``read`` for
        each row's id as a (rows, statistics) float64 matrix, NaN where no row, and which
        rows were found."""

        async def locate() -> tuple[str, Mapping[str, int]]:
            positions = await self._model_table(sha256, read.table)
            if any(s not in positions for s in read.statistics):
                raise FeatureStoreUnavailable("no_tables", f"table {read.table!r} lacks statistics")
            return model_table_key(sha256, read.table), positions

        return await self._read(read.source, ids, locate, read.statistics)

    async def _read(
        self,
        source: str,
        ids: np.ndarray,
        locate: Callable[[], Awaitable[tuple[str, Mapping[str, int]]]],
        wanted: Sequence[str],
    ) -> tuple[np.ndarray, BoolArray]:
        """One ``HMGET`` of the distinct ids in the hash ``locate`` names: the ``wanted``
        fields of every row's id (NaN where none) and which rows were found."""
        id_values, known = known_ids(source, ids)
        n = id_values.size
        if time.monotonic() < self._down_until:
            raise FeatureStoreUnavailable("unavailable", "Redis failed a moment ago")
        unique, inverse = np.unique(id_values[known], return_inverse=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                key, positions = await locate()
                replies = await self._hmget(key, unique.tolist())
        except TimeoutError:
            self._down_until = time.monotonic() + BACKOFF_S
            raise FeatureStoreUnavailable(
                "timeout", f"Redis did not answer within {self.timeout_s * 1000:g} ms"
            ) from None
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BACKOFF_S
            raise FeatureStoreUnavailable("unavailable", type(exc).__name__) from None
        try:
            values, hit_unique = decode_rows(replies, len(positions))
        except ValueError as exc:
            self._down_until = time.monotonic() + BACKOFF_S
            raise FeatureStoreUnavailable("unavailable", f"malformed row: {exc}") from None
        rows = np.full(n, -1, dtype=np.int64)
        rows[known] = inverse
        found = rows >= 0
        found[found] = hit_unique[rows[found]]
        safe = np.where(found, rows, 0)
        if values.shape[0] == 0:
            values = np.full((1, values.shape[1]), np.nan)
        taken = values[:, [positions[name] for name in wanted]][safe]
        taken[~found] = np.nan
        return taken, found

    async def _model_table(self, sha256: str, table: str) -> Mapping[str, int]:
        """Column positions of a published model table; its marker is read once (the keys of
        a sha256 never change), its absence again after ``POINTER_REFRESH_S``."""
        known = self._model_tables.get(sha256)
        now = time.monotonic()
        if known is None or (not known[1] and now - known[0] >= POINTER_REFRESH_S):
            text = await self._redis().get(model_tables_key(sha256))
            layout = json.loads(_text_of(text)) if text else {}
            known = (
                now,
                {
                    name: {s: j for j, s in enumerate(statistics)}
                    for name, statistics in layout.items()
                },
            )
            self._model_tables[sha256] = known
        positions = known[1].get(table)
        if positions is None:
            raise FeatureStoreUnavailable(
                "no_tables", f"no table {table!r} of {sha256[:12]} published"
            )
        return positions

    async def _current(self) -> str:
        """The published version (read again once ``POINTER_REFRESH_S`` has passed)."""
        now = time.monotonic()
        if self._version is not None and now - self._version_read < POINTER_REFRESH_S:
            return self._version
        client = self._redis()
        pointer = await client.get(POINTER)
        if pointer is None:
            raise FeatureStoreUnavailable("no_tables", f"no tables published at {POINTER}")
        version = _text_of(pointer)
        if version != self._version:
            text = await client.get(schema_key(version))
            published = StoreSchema.from_json(_text_of(text)) if text else None
            if published is None or published.entities != self.schema.entities:
                raise FeatureStoreUnavailable(
                    "no_tables", f"version {version!r} has other tables than this service reads"
                )
            categories = await client.get(categories_key(version))
            lists = json.loads(_text_of(categories)) if categories else {}
            self._labels = {
                e.name: {
                    name: np.array([*lists.get(e.name, {}).get(name, []), None], dtype=object)
                    for name, kind in e.columns.items()
                    if kind == "text"
                }
                for e in published.entities
            }
            self._positions = {
                e.name: {name: j for j, name in enumerate(e.columns)} for e in published.entities
            }
            log.info("feature store %s: reading version %s", redacted(self.url), version)
        self._version, self._version_read = version, now
        return version

    async def _hmget(self, key: str, ids: list[int]) -> list[bytes | None]:
        """The row of every id (None: no row)."""
        if not ids:
            return []
        replies = await self._redis().hmget(key, ids)
        return cast(list[bytes | None], replies)  # the client does not decode replies

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def _text_of(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A text column from its codes (NaN or out of range: no value, the trailing None)."""
    none = labels.size - 1
    index = np.where(np.isnan(codes), none, codes)
    index = np.where((index < 0) | (index > none), none, index).astype(np.int64)
    result: np.ndarray = labels[index]
    return result
