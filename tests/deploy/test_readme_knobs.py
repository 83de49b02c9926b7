"""The README's "Limits and timeouts" table names every setting, with the default it has."""

from __future__ import annotations

import re

from service.config import ENV_PREFIX, Settings
from tests.support import ROOT

README = ROOT / "README.md"


def _table() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Limits and timeouts", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`(WATCHTIME_[A-Z_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_every_setting_is_in_the_limits_table() -> None:
    rows = _table()
    names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert names - set(rows) == set(), "settings missing from the README table"
    assert set(rows) - names == set(), "README names settings that do not exist"


def test_documented_defaults_match() -> None:
    rows = _table()
    plain = {
        "max_request_rows": "10,000",
        "max_connections": "2,048 per worker",
        "max_queue_rows": "50,000 per model and worker",
        "timeout_request_header_s": "10 s",
        "timeout_request_body_s": "30 s",
        "timeout_keep_alive_s": "5 s",
        "max_header_bytes": "16 KiB",
        "max_body_bytes": "32 MiB",
        "max_buffered_body_bytes": "256 MiB per worker",
        "strict_models": "`true`",
        "metrics_auth": "`false`",
        "publish_vocabularies": "`false`",
    }
    fields = Settings.model_fields
    assert fields["max_request_rows"].default == 10_000
    assert fields["max_connections"].default == 2048
    assert fields["max_queue_rows"].default == 50_000
    assert fields["timeout_request_header_s"].default == 10.0
    assert fields["timeout_request_body_s"].default == 30.0
    assert fields["timeout_keep_alive_s"].default == 5
    assert fields["max_header_bytes"].default == 16 * 1024
    assert fields["max_body_bytes"].default == 32 * 1024 * 1024
    assert fields["max_buffered_body_bytes"].default == 256 * 1024 * 1024
    assert fields["strict_models"].default is True
    assert fields["metrics_auth"].default is False
    assert fields["publish_vocabularies"].default is False
    for field, shown in plain.items():
        assert rows[ENV_PREFIX + field.upper()] == shown, field
