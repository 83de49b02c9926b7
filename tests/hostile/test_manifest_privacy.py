"""``GET /v1/models/{m}`` once listed 10,830 user ids of the training set: now sizes and hashes."""

from __future__ import annotations

import hashlib
import json

import orjson

from tests.support import MODELS
from tests.support.hostile import ServiceProcess, get


def _walk_lists(doc: object) -> list[list[object]]:
    if isinstance(doc, list):
        return [doc] + [x for item in doc for x in _walk_lists(item)]
    if isinstance(doc, dict):
        return [x for value in doc.values() for x in _walk_lists(value)]
    return []


def test_published_manifest_holds_no_vocabulary(service: ServiceProcess) -> None:
    for version in ("1", "2"):
        on_disk = json.loads((MODELS / "egmn" / version / "manifest.json").read_text())
        user_ids = next(f for f in on_disk["features"] if f["source"] == "user_id")["vocabulary"]
        assert len(user_ids) > 1000
        status, body = get(service.port, f"/v1/models/egmn/versions/{version}")
        assert status == 200
        assert len(body) < 64 * 1024, len(body)  # the vocabularies alone are megabytes
        doc = orjson.loads(body)
        longest = max(len(x) for x in _walk_lists(doc))
        assert longest < 100, longest
        for feature in doc["manifest"]["features"]:
            assert "vocabulary" not in feature
        published = {f["name"]: f for f in doc["manifest"]["features"]}
        for feature in on_disk["features"]:
            if "vocabulary" not in feature:
                continue
            compact = json.dumps(feature["vocabulary"], separators=(",", ":"), ensure_ascii=False)
            entry = published[feature["name"]]
            assert entry["vocabulary_size"] == len(feature["vocabulary"])
            assert entry["vocabulary_sha256"] == hashlib.sha256(compact.encode()).hexdigest()
    status, body = get(service.port, "/v1/models/egmn")
    assert status == 200 and b'"vocabulary"' not in body


def test_openapi_examples_show_no_training_id(service: ServiceProcess) -> None:
    status, body = get(service.port, "/openapi.json")
    assert status == 200
    examples = orjson.loads(body)["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    columnar = examples["application/json"]["examples"]["columnar"]["value"]["features"]
    on_disk = json.loads((MODELS / "egmn" / "2" / "manifest.json").read_text())
    for feature in on_disk["features"]:
        if feature["source"] in ("user_id", "video_id", "author_id"):
            shown = set(columnar[feature["source"]])
            assert not shown & set(feature["vocabulary"]), (feature["source"], shown)
