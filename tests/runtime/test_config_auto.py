"""Automatic defaults: a worker per usable core, onnxruntime's threads shared out among them."""

from __future__ import annotations

import os

import pytest

from service.config import Settings, load_settings, resolve_auto, usable_cores
from tests.support import MODELS


def test_usable_cores_follow_the_affinity_mask() -> None:
    before = os.sched_getaffinity(0)
    assert 1 <= usable_cores() <= len(before)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert usable_cores() == 1
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.parametrize(
    ("workers", "intra", "want_workers", "want_intra"),
    [(0, 0, "cores", 1), (1, 0, 1, "cores"), (2, 3, 2, 3), (0, 4, "cores", 4)],
)
def test_zero_means_automatic(
    workers: int, intra: int, want_workers: object, want_intra: object
) -> None:
    cores = usable_cores()
    got = resolve_auto(Settings(workers=workers, intra_op_threads=intra))
    assert got.workers == (cores if want_workers == "cores" else want_workers)
    assert got.intra_op_threads == (cores if want_intra == "cores" else want_intra)


def test_loaded_settings_are_concrete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHTIME_WORKERS", raising=False)
    monkeypatch.delenv("WATCHTIME_INTRA_OP_THREADS", raising=False)
    settings = load_settings(model_repository=str(MODELS))
    assert settings.workers == usable_cores()
    assert settings.intra_op_threads * settings.workers <= max(usable_cores(), settings.workers)
