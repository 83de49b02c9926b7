"""The feature store in Redis: the same tables as the embedded store, one hash per entity.

Layout (written by ``python -m model_export publish-features``, see ``model_export.publish``):

- ``watchtime:features:current``: the version readers use (a string);
- ``watchtime:features:<version>:schema``: the tables' :class:`StoreSchema` as JSON;
- ``watchtime:features:<version>:<entity>:<id>``: one hash per entity row, a field per column
  that has a value (a column without one has no field: a missing value), numbers as decimal
  text, and the field ``_`` (``1``) so that a row whose columns are all empty is still found.

A publication writes a whole new version and then points ``current`` at it with one ``SET``,
so a reader sees one version or the other, never half of one; the previous version is kept
(``--keep``) for readers that still hold its name.

A request's lookup is one pipeline of ``HMGET``, one per distinct id of the request, on a
pooled connection, bounded by ``WATCHTIME_FEATURE_STORE_TIMEOUT_MS`` from the first byte to
the last (waiting for a pooled connection and connecting included). The version in
``current`` is read again at most once a second.

Where it runs: on the event loop, with redis-py's asyncio client. The lookup is network
waiting, which on the event loop costs no thread and lets the other requests' decoding and
answers go on; on the batch worker thread it would stall the encoding and post-processing of
every model while it waits. The Python work it leaves on the loop is building the pipeline
(one command per distinct id) and turning the replies into arrays; hiredis parses the
replies in C.

A failure (refused or dropped connection, timeout, no published version) raises
:class:`FeatureStoreUnavailable`; after one, lookups fail at once for ``BACKOFF_S``, so an
outage costs each request nothing while Redis is away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.errors import FeatureStoreUnavailable
from service.runtime.features import known_ids
from service.runtime.store import (
    BoolArray,
    EntitySchema,
    StoreSchema,
    float_column,
    int_column,
)

log = logging.getLogger("watchtime.store")

PREFIX = "watchtime:features"
POINTER = f"{PREFIX}:current"
PRESENT = "_"
"""The field every published row holds."""

POINTER_REFRESH_S = 1.0
"""How long a reader goes on with the version it read from ``current``."""

BACKOFF_S = 0.25
"""After a failure, lookups fail at once for this long instead of trying again."""


def schema_key(version: str) -> str:
    return f"{PREFIX}:{version}:schema"


def row_key(version: str, entity: str, entity_id: int) -> str:
    return f"{PREFIX}:{version}:{entity}:{entity_id}"


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

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.timeout_s,
                socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._loop = loop
        return self._client

    async def lookup(
        self, entity: EntitySchema, ids: np.ndarray, columns: Sequence[str]
    ) -> tuple[dict[str, np.ndarray], BoolArray]:
        """The columns of each row's entity, and which rows were found."""
        values, known = known_ids(entity.key, ids)
        n = values.size
        if time.monotonic() < self._down_until:
            raise FeatureStoreUnavailable("unavailable", "Redis failed a moment ago")
        unique, inverse = np.unique(values[known], return_inverse=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                version = await self._current()
                replies = await self._fetch(version, entity, unique.tolist(), columns)
        except TimeoutError:
            self._down_until = time.monotonic() + BACKOFF_S
            raise FeatureStoreUnavailable(
                "timeout", f"Redis did not answer within {self.timeout_s * 1000:g} ms"
            ) from None
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + BACKOFF_S
            raise FeatureStoreUnavailable("unavailable", type(exc).__name__) from None
        rows = np.full(n, -1, dtype=np.int64)
        rows[known] = inverse
        table = np.empty((len(replies), len(columns) + 1), dtype=object)
        if replies:
            table[:] = replies
        hit_unique = np.asarray(table[:, 0] != None, dtype=np.bool_)  # noqa: E711
        found = rows >= 0
        found[found] = hit_unique[rows[found]]
        safe = np.where(found, rows, 0)
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(columns, start=1):
            out[name] = _column(entity.columns[name], table[:, j], safe, found)
        return out, found

    async def _current(self) -> str:
        """The published version (read again once ``POINTER_REFRESH_S`` has passed)."""
        now = time.monotonic()
        if self._version is not None and now - self._version_read < POINTER_REFRESH_S:
            return self._version
        client = self._redis()
        pointer = await client.get(POINTER)
        if pointer is None:
            raise FeatureStoreUnavailable("no_tables", f"no tables published at {POINTER}")
        version = pointer.decode() if isinstance(pointer, bytes) else str(pointer)
        if version != self._version:
            text = await client.get(schema_key(version))
            published = StoreSchema.from_json(str(text)) if text else None
            if published is None or published.entities != self.schema.entities:
                raise FeatureStoreUnavailable(
                    "no_tables", f"version {version!r} has other tables than this service reads"
                )
            log.info("feature store %s: reading version %s", redacted(self.url), version)
        self._version, self._version_read = version, now
        return version

    async def _fetch(
        self, version: str, entity: EntitySchema, ids: list[int], columns: Sequence[str]
    ) -> list[Any]:
        if not ids:
            return []
        fields = [PRESENT, *columns]
        async with self._redis().pipeline(transaction=False) as pipe:
            for entity_id in ids:
                pipe.hmget(row_key(version, entity.name, entity_id), fields)
            return list(await pipe.execute())

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()


def _column(kind: str, replies: np.ndarray, rows: np.ndarray, found: BoolArray) -> np.ndarray:
    """One column of the request's rows from the distinct ids' replies (text or None)."""
    if replies.size == 0:
        replies = np.full(1, None, dtype=object)
    taken = replies[rows]
    if kind == "text":
        text = taken.copy()
        text[~found] = None
        return text
    absent = np.asarray(taken == None, dtype=np.bool_)  # noqa: E711
    numbers = np.where(absent | ~found, "nan", taken).astype(np.float64)
    present = found & ~absent
    if kind == "int" and bool(present.all()):
        return int_column(numbers, found)
    return float_column(numbers, present)
