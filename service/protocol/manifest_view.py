"""The manifest as ``GET /v1/models/{m}`` publishes it: without the training ids.

A categorical feature's vocabulary is the list of values seen in training (user, video and
author ids among them), so publishing it tells anyone who can reach the service who was in
the training set. By default the published manifest replaces each ``vocabulary`` by
``vocabulary_size`` and ``vocabulary_sha256`` (:func:`service.manifest.vocabulary_sha256`):
enough to check that a served model holds the same vocabulary as a manifest on the offline
side, which keeps the whole file. ``WATCHTIME_PUBLISH_VOCABULARIES=true`` publishes the
manifest as it is on disk.
"""

from __future__ import annotations

from typing import Any

from service.manifest import Manifest, derived_once, vocabulary_sha256

_CACHE: dict[int, tuple[object, tuple[dict[str, Any], dict[str, Any]]]] = {}
_CACHE_SIZE = 256  # whole documents: fewer than the feature caches hold


def published_manifest(manifest: Manifest, vocabularies: bool = False) -> dict[str, Any]:
    """The manifest's JSON document, with each vocabulary replaced by its size and hash
    unless ``vocabularies``; built once per manifest."""

    def build() -> tuple[dict[str, Any], dict[str, Any]]:
        full = manifest.document()
        return full, {**full, "features": [_redacted(f) for f in full["features"]]}

    full, redacted = derived_once(_CACHE, manifest, build, _CACHE_SIZE)
    return full if vocabularies else redacted


def _redacted(feature: dict[str, Any]) -> dict[str, Any]:
    if "vocabulary" not in feature:
        return feature
    out = {k: v for k, v in feature.items() if k != "vocabulary"}
    out["vocabulary_size"] = len(feature["vocabulary"])
    out["vocabulary_sha256"] = vocabulary_sha256(feature["vocabulary"])
    return out
