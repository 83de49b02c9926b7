"""``python -m model_export publish-features --to redis://host:port/db``: the feature tables
file loaded into Redis for the service's Redis store (``WATCHTIME_FEATURE_STORE``).

The rows go under a new version's keys (one hash per entity row, see
``service.runtime.redis_store`` for the layout), in pipelines of ``--batch`` hashes, with a
progress bar; only once every row and the schema are written does one ``SET`` point
``watchtime:features:current`` at the new version. Readers therefore see the old tables or
the new ones, never a half-written version. Versions older than the ``--keep`` before the new
one are then deleted (``UNLINK``, in batches).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from tqdm import tqdm

from service.runtime.redis_store import POINTER, PREFIX, PRESENT, row_key, schema_key
from service.runtime.store import EmbeddedStore, EntityTable

VERSIONS = f"{PREFIX}:versions"
"""A list of the published versions, oldest first."""


def _texts(table: EntityTable, name: str) -> list[str | None]:
    """One column as the text Redis holds (None: no value, no field)."""
    kind = table.schema.columns[name]
    values = table.values[name]
    if kind == "text":
        labels: list[str | None] = table.categories[name].tolist()
        return [labels[code] for code in values.tolist()]
    if kind == "int":
        return [str(v) for v in values.tolist()]
    return [None if math.isnan(v) else repr(v) for v in values.tolist()]


def _mappings(table: EntityTable) -> Iterator[tuple[int, dict[str, str]]]:
    columns = {name: _texts(table, name) for name in table.schema.columns}
    for i, entity_id in enumerate(table.ids.tolist()):
        mapping = {PRESENT: "1"}
        for name, texts in columns.items():
            text = texts[i]
            if text is not None:
                mapping[name] = text
        yield entity_id, mapping


def publish_features(
    url: str, tables: Path, batch: int = 2000, keep: int = 1, progress: bool = True
) -> str:
    """Publish the tables file at ``url``; returns the new version's name."""
    store = EmbeddedStore.load(tables)
    schema = store.schema
    version = f"{schema.version or 'tables'}-{time.time_ns() // 1_000_000}"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.ping()
    total = sum(int(t.ids.size) for t in store.tables.values())
    with tqdm(
        total=total, unit="rows", disable=None if progress else True, desc=f"version {version}"
    ) as bar:
        for entity in schema.entities:
            table = store.tables[entity.name]
            pipe = client.pipeline(transaction=False)
            queued = 0
            for entity_id, mapping in _mappings(table):
                pipe.hset(row_key(version, entity.name, entity_id), mapping=mapping)
                queued += 1
                if queued == batch:
                    pipe.execute()
                    bar.update(queued)
                    queued = 0
            if queued:
                pipe.execute()
                bar.update(queued)
    client.set(schema_key(version), schema.to_json())
    client.rpush(VERSIONS, version)
    client.set(POINTER, version)  # the one step that switches every reader
    _drop_old(client, version, keep)
    return version


def _drop_old(client: redis.Redis, current: str, keep: int) -> None:
    """Delete the versions published before the ``keep`` that precede ``current``."""
    versions: list[str] = list(client.lrange(VERSIONS, 0, -1))  # type: ignore[arg-type]
    if current not in versions:
        return
    index = versions.index(current)
    for old in versions[: max(0, index - keep)]:
        keys: list[str] = []
        for key in client.scan_iter(match=f"{PREFIX}:{old}:*", count=5000):
            keys.append(key)
            if len(keys) >= 5000:
                client.unlink(*keys)
                keys = []
        if keys:
            client.unlink(*keys)
        client.lrem(VERSIONS, 0, old)


def published(url: str) -> str | None:
    """The version readers use now (None: nothing published)."""
    value = redis.Redis.from_url(url, decode_responses=True).get(POINTER)
    return None if value is None else str(value)
