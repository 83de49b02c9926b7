"""The test-day rows shipped for the /inspect page are what ``python -m model_export
sample-rows`` writes from the shipped data, and carry the KuaiRand attribution."""

from __future__ import annotations

import json

from model_export.data.attribution import KUAIRAND
from model_export.data.kuairand import load_joined, split_by_day
from model_export.data.sample_rows import SAMPLE_ROWS, SAMPLE_ROWS_PATH, render, sample_rows


def test_the_shipped_file_is_what_the_command_writes() -> None:
    assert SAMPLE_ROWS_PATH.read_text(encoding="utf-8") == render(sample_rows())


def test_rows_are_test_day_rows_with_their_licence() -> None:
    doc = json.loads(SAMPLE_ROWS_PATH.read_text(encoding="utf-8"))
    assert doc["license"] == KUAIRAND.license == "CC BY-SA 4.0"
    assert doc["citation"] == KUAIRAND.citation and "CC BY-SA 4.0" in doc["notice"]
    assert len(doc["rows"]) == len(doc["watch_time_s"]) == SAMPLE_ROWS
    test = split_by_day(load_joined()).test
    assert doc["test_date"] == int(test["date"].iloc[0])
    assert all(row["date"] == doc["test_date"] for row in doc["rows"])
    assert all(set(row) == set(doc["columns"]) for row in doc["rows"])
    assert "play_time_ms" not in doc["columns"] and "watch_time_s" not in doc["columns"]
