"""The report's figures, reproduced from what the HTTP API answers.

``reports/evaluation.json`` is computed offline from each model directory (manifest ->
features -> onnxruntime -> the family's numpy code). Here the whole test day goes through the
service instead, as a ranking client sends it (JSON columns, 5,000 rows a request), and the
figures that the answers carry (point, median, the three quantiles, quick-skip probability)
are scored again. NLL and CRPS need the density at each row's own label, which the API does
not return, so they are checked offline only (tests/offline/test_baselines.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from model_export.data import labels
from model_export.evaluation.metrics import mae, roc_auc, xauc
from service.runtime.repository import ModelRepository
from tests.support import ROOT
from tests.support.api import AppClient, app_client, held_out_day, json_columns

REPORT = json.loads((ROOT / "reports" / "evaluation.json").read_text(encoding="utf-8"))
CHUNK = 5_000


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository)


def test_every_report_model_is_listed_with_its_family(client: AppClient) -> None:
    listed = {e["name"]: e["family"] for e in client.get("/v1/models").json()["models"]}
    assert {name: doc["family"] for name, doc in REPORT["models"].items()}.items() <= (
        listed.items()
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REPORT["models"]))
def test_the_api_reproduces_the_report(client: AppClient, name: str) -> None:
    test = held_out_day()
    assert len(test) == REPORT["rows"]
    y = labels(test)
    sources = client.get(f"/v1/models/{name}").json()["feature_columns"]
    point, median, quantiles, skip = [], [], [], []
    for start in range(0, len(test), CHUNK):
        body = {
            "features": json_columns(test.iloc[start : start + CHUNK], sources),
            "quantiles": [0.1, 0.5, 0.9],
            "quick_skip_threshold_s": 3.0,
        }
        r = client.post(f"/v1/models/{name}/predict", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["family"] == REPORT["models"][name]["family"]
        point += doc["point_s"]
        values = np.asarray(doc["quantiles"]["values_s"], dtype=np.float64)
        quantiles.append(values)
        median += values[:, 1].tolist()
        skip += doc["quick_skip_prob"]
    q = np.concatenate(quantiles)
    p, s = np.asarray(point), np.asarray(skip)
    assert p.shape == y.shape == s.shape and q.shape == (y.size, 3)  # no row lost
    got = {
        "mae_point": mae(p, y),
        "xauc_point": xauc(p, y),
        "mae_median": mae(np.asarray(median), y),
        "coverage_0.1": float(np.mean(y <= q[:, 0])),
        "coverage_0.5": float(np.mean(y <= q[:, 1])),
        "coverage_0.9": float(np.mean(y <= q[:, 2])),
        "quick_skip_auc": roc_auc(s, y <= 3.0),
        "quick_skip_brier": float(np.mean((s - (y <= 3.0)) ** 2)),
    }
    want = REPORT["models"][name]["overall"]
    for key, value in got.items():
        # JSON carries float32-rounded values; a coverage may move by a row or two where a
        # label sits exactly on a quantile.
        tolerance = 2.5 / y.size if key.startswith("coverage") else 1e-4
        assert value == pytest.approx(want[key], rel=1e-4, abs=tolerance), key
