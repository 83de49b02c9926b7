"""``python -m model_export publish-features --to redis://host:port/db``: the feature tables
file loaded into Redis for the service's Redis store (``WATCHTIME_FEATURE_STORE``).

The rows go under a new version's keys (one hash per entity, a field per id holding the
whole row; see ``service.runtime.redis_store`` for the layout), ``--batch`` rows per
``HSET``, with a progress bar; only once every row and the schema are written does one ``SET`` point
``watchtime:features:current`` at the new version. Readers therefore see the old tables or
the new ones, never a half-written version. Versions older than the ``--keep`` before the new
one are then deleted (``UNLINK``, in batches).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import redis
from tqdm import tqdm

from service.manifest import Manifest
from service.runtime.lookup import LookupTables
from service.runtime.redis_store import (
    EXACT_INT,
    POINTER,
    PREFIX,
    categories_key,
    encode_rows,
    model_table_key,
    model_tables_key,
    schema_key,
    table_key,
)
from service.runtime.store import EmbeddedStore, EntityTable

VERSIONS = f"{PREFIX}:versions"
"""A list of the published versions, oldest first."""


def _matrix(table: EntityTable) -> np.ndarray:
    """The table's rows as Redis holds them: float64, a column per schema column, NaN where
    missing; text as its code in the column's list, ints refused beyond float64's exact
    range."""
    columns = []
    for name, kind in table.schema.columns.items():
        values = table.values[name]
        if kind == "text":
            columns.append(np.where(values < 0, np.nan, values).astype(np.float64))
        elif kind == "int":
            if values.size and int(np.abs(values).max()) >= EXACT_INT:
                raise ValueError(f"{table.schema.name}.{name}: integers beyond 2**53")
            columns.append(values.astype(np.float64))
        else:
            columns.append(values.astype(np.float64))
    return np.stack(columns, axis=1) if columns else np.empty((table.ids.size, 0))


def _category_lists(store: EmbeddedStore) -> dict[str, dict[str, list[str]]]:
    """Each text column's strings (its categories without the trailing None)."""
    return {
        name: {column: table.categories[column][:-1].tolist() for column in table.categories}
        for name, table in store.tables.items()
    }


def _write_rows(
    client: redis.Redis, key: str, ids: np.ndarray, matrix: np.ndarray, batch: int, bar: tqdm
) -> None:
    """One hash: a field per id holding its row (``encode_rows``), ``batch`` rows per HSET."""
    rows = encode_rows(matrix)
    keys = ids.tolist()
    for start in range(0, len(keys), batch):
        part = range(start, min(start + batch, len(keys)))
        client.hset(key, mapping={keys[i]: rows[i] for i in part})
        bar.update(len(part))


def publish_model_tables(
    url: str, model_dir: Path, batch: int = 2000, progress: bool = True
) -> str | None:
    """Publish the tables a model directory ships (its history statistics) under their
    file's sha256; returns the sha256, or None when they were already there.

    The directory is loaded as the service loads it (the manifest, the file's sha256 and
    every table checked); the layout key is set last, so a reader finds every table or none.
    """
    manifest = Manifest.read(model_dir / "manifest.json")
    if manifest.history is None:
        raise ValueError(f"{model_dir} ships no tables (its manifest has no history block)")
    tables = LookupTables.load(model_dir, manifest)
    assert tables is not None
    sha = manifest.history.sha256
    client = redis.Redis.from_url(url)
    if client.exists(model_tables_key(sha)):
        return None
    layout = {name: list(declared.statistics) for name, declared in manifest.history.tables.items()}
    total = sum(int(tables.table(name).ids.size) for name in layout)
    with tqdm(
        total=total, unit="rows", disable=None if progress else True, desc=f"{model_dir}"
    ) as bar:
        for name, statistics in layout.items():
            table = tables.table(name)
            matrix = np.empty((table.ids.size, len(statistics)), dtype=np.float64)
            for j, statistic in enumerate(statistics):
                matrix[:, j] = table.columns[statistic]
            _write_rows(client, model_table_key(sha, name), table.ids, matrix, batch, bar)
    client.set(model_tables_key(sha), json.dumps(layout))
    return sha


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
            key = table_key(version, entity.name)
            _write_rows(client, key, table.ids, _matrix(table), batch, bar)
    client.set(categories_key(version), json.dumps(_category_lists(store)))
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
        keys = list(client.scan_iter(match=f"{PREFIX}:{old}:*", count=5000))
        for start in range(0, len(keys), 5000):
            client.unlink(*keys[start : start + 5000])
        client.lrem(VERSIONS, 0, old)


def published(url: str) -> str | None:
    """The version readers use now (None: nothing published)."""
    value = redis.Redis.from_url(url, decode_responses=True).get(POINTER)
    return None if value is None else str(value)
