"""Service configuration: environment variables ``WATCHTIME_*``, overridden by CLI options.

One pydantic-settings class holds every knob so that a value is validated once, at start-up,
with a message naming the variable; a bad value stops the process before it binds a port
instead of surfacing as a confusing failure under load.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ConfigError

ENV_PREFIX = "WATCHTIME_"


class Settings(BaseSettings):
    """Every setting of the service; each field ``x`` is the variable ``WATCHTIME_X``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    host: str = Field(default="127.0.0.1", min_length=1, description="address to bind")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port)")
    grpc_port: int = Field(
        default=8001,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol's gRPC service, on the same "
        "address (0: no gRPC)",
    )
    workers: int = Field(
        default=0, ge=0, le=64, description="uvicorn worker processes (0: one per usable core)"
    )
    model_repository: Path = Field(
        default=Path("models"), description="directory holding <name>/<version>/ model dirs"
    )
    default_model: str | None = Field(
        default=None,
        description="model served by /v1/predict; default: egmn if loaded, else the first sorted",
    )
    max_request_rows: int = Field(default=10_000, ge=1, description="rows per request (413)")
    max_curve_values: int = Field(
        default=200_000,
        ge=2,
        description="rows x points of the curve option in one request (413 past it)",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="request body size (413)"
    )
    max_buffered_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="request body bytes one worker holds at once, over all its requests "
        "(503 with Retry-After past it); at least max_body_bytes",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime threads inside one operator (0: the usable cores shared out "
        "among the workers)",
    )
    inter_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime threads across operators (0: its default)"
    )
    warmup_rows: int = Field(default=64, ge=1, description="batch size of the warm-up runs")
    batching: bool = Field(
        default=True, description="merge rows of concurrent requests into one onnxruntime run"
    )
    max_batch_rows: int = Field(
        default=2048, ge=1, le=1_000_000, description="most rows in one onnxruntime run"
    )
    max_queue_delay_ms: float = Field(
        default=2.0,
        ge=0.0,
        le=60_000.0,
        allow_inf_nan=False,
        description="longest wait of the oldest queued request for more rows to batch with",
    )
    max_queue_rows: int = Field(
        default=50_000, ge=1, description="rows a model's queue holds; beyond it: 429"
    )
    default_timeout_ms: float | None = Field(
        default=None,
        ge=0.0,
        allow_inf_nan=False,
        description="deadline of a request that sends none (0 or unset: no deadline)",
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        le=1_000_000,
        description="open connections per worker; past it the oldest idle one is closed",
    )
    max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="request line and headers (431, or 414 for the URL alone)",
    )
    timeout_request_header_s: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        allow_inf_nan=False,
        description="time to send a request's line and headers (from the connection or its "
        "first byte); then 408, or a silent close when nothing came",
    )
    timeout_request_body_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        allow_inf_nan=False,
        description="time to send a request's body once its headers are in; then 408",
    )
    timeout_keep_alive_s: int = Field(
        default=5, ge=1, le=3600, description="idle time of a kept-alive connection"
    )
    publish_vocabularies: bool = Field(
        default=False,
        description="GET /v1/models/{m} shows vocabularies (training ids); else size and hash",
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="comma-separated bearer tokens the API requires (empty: no authentication)",
    )
    metrics_auth: bool = Field(
        default=False, description="require a bearer token on /metrics too (with api_keys)"
    )
    strict_models: bool = Field(
        default=True,
        description="stop start-up when any model directory fails to load (else serve the rest)",
    )
    model_control: Literal["none", "poll", "explicit"] = Field(
        default="none",
        description="how the served models follow the repository, as Triton's model control "
        "modes: none (loaded at start-up only), poll (rescanned every poll_s seconds), "
        "explicit (POST /v2/repository/models/{m}/load and unload)",
    )
    poll_s: float = Field(
        default=15.0,
        gt=0.0,
        le=86_400.0,
        allow_inf_nan=False,
        description="seconds between two scans of the repository (model_control=poll)",
    )
    load_models: str = Field(
        default="",
        description="model_control=explicit: the models loaded at start-up, comma-separated, "
        "or * for all of them (empty: none, as Triton's --load-model)",
    )
    feature_store: str = Field(
        default="embedded",
        pattern=r"^(embedded|none|rediss?://\S+)$",
        description="where the columns a request leaves out are looked up by id: embedded "
        "(feature_tables, in memory), redis://host:port/db, or none (every column required)",
    )
    feature_tables: Path = Field(
        default=Path("feature_store/kuairand.npz"),
        description="the feature tables file: the embedded store's values, and the columns "
        "every store can fill",
    )
    feature_store_required: bool = Field(
        default=False,
        description="a request that needs a lookup fails with 503 while the store does not "
        "answer (else it goes on with those columns missing)",
    )
    feature_store_timeout_ms: float = Field(
        default=200.0,
        gt=0.0,
        le=10_000.0,
        allow_inf_nan=False,
        description="longest wait for one Redis lookup (connecting included; the event "
        "loop's own delays under load count too, so not much below 200 ms)",
    )
    feature_store_max_connections: int = Field(
        default=16, ge=1, le=1024, description="Redis connections per worker"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @model_validator(mode="after")
    def _check_together(self) -> Settings:
        names = self.load_model_names()
        if names is not None and names and self.model_control != "explicit":
            raise ValueError(
                f"WATCHTIME_LOAD_MODELS ({self.load_models!r}) applies only with "
                f"WATCHTIME_MODEL_CONTROL=explicit (it is {self.model_control!r}), which loads "
                "at start-up only the models it names; the other modes load every model"
            )
        if "*" in self.load_models.split(",") and self.load_models.strip() != "*":
            raise ValueError(
                "WATCHTIME_LOAD_MODELS: * (every model) must stand alone, as Triton's "
                "--load-model=*"
            )
        if self.model_control == "explicit" and self.workers > 1:
            raise ValueError(
                f"WATCHTIME_MODEL_CONTROL=explicit needs WATCHTIME_WORKERS=1 (it is "
                f"{self.workers}): a load or unload request reaches one worker process only, "
                "and the others would go on serving what they had; use poll mode with several "
                "workers"
            )
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(
                f"WATCHTIME_GRPC_PORT ({self.grpc_port}) must differ from WATCHTIME_PORT: HTTP "
                "and gRPC listen on ports of their own (0 turns gRPC off)"
            )
        if self.max_buffered_body_bytes < self.max_body_bytes:
            raise ValueError(
                f"WATCHTIME_MAX_BUFFERED_BODY_BYTES ({self.max_buffered_body_bytes}) must be at "
                f"least WATCHTIME_MAX_BODY_BYTES ({self.max_body_bytes}), or no body of the "
                "largest size could ever be taken"
            )
        return self

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: SecretStr) -> SecretStr:
        for key in _split_keys(value.get_secret_value()):
            if not TOKEN.fullmatch(key):
                # the key itself stays out of the message (and out of logs)
                raise ValueError(
                    "each key must be a bearer token: letters, digits and -._~+/ (then = "
                    "padding), keys separated by commas"
                )
        return value

    def load_model_names(self) -> set[str] | None:
        """The models explicit mode loads at start-up; None: all of them (``*``)."""
        names = {n.strip() for n in self.load_models.split(",") if n.strip()}
        return None if names == {"*"} else names

    def api_key_list(self) -> list[str]:
        """The configured bearer tokens (empty: no authentication)."""
        return _split_keys(self.api_keys.get_secret_value())


TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
"""RFC 6750's b64token: what a bearer token may hold."""


def _split_keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        if not err["loc"]:  # a check across settings: its message names them (not the input,
            # which holds every setting, the API keys too)
            parts.append(str(err["msg"]).removeprefix("Value error, "))
            continue
        name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
        shown = "..." if name == f"{ENV_PREFIX}API_KEYS" else repr(err.get("input"))
        parts.append(f"{name}={shown}: {err['msg']}")
    return "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with explicit ``overrides`` on top; ConfigError if bad."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    if settings.feature_store != "none" and not settings.feature_tables.is_file():
        raise ConfigError(
            f"{ENV_PREFIX}FEATURE_TABLES={str(settings.feature_tables)!r}: not a file "
            f"({ENV_PREFIX}FEATURE_STORE=none serves without feature lookup)"
        )
    if not settings.model_repository.is_dir():
        raise ConfigError(
            f"{ENV_PREFIX}MODEL_REPOSITORY={str(settings.model_repository)!r}: not a directory"
        )
    return resolve_auto(settings)


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota.

    A container limited to 2 CPUs on a 64-core host sees 64 in ``os.cpu_count()``; the
    quota (cgroup v2 ``cpu.max``) is what it really gets.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def resolve_auto(settings: Settings) -> Settings:
    """Settings with the automatic values (0) made concrete for this machine.

    One worker per usable core: a worker's Python work holds one core (numpy's small calls
    hold the GIL), so more cores serve more only through more workers. onnxruntime's
    threads share the cores out among the workers, so the workers' runs do not fight over
    them (onnxruntime's own default is a thread per core in every process).
    """
    cores = usable_cores()
    # explicit model control: one process, so that a load or unload reaches all of it
    workers = settings.workers or (1 if settings.model_control == "explicit" else cores)
    intra = settings.intra_op_threads or max(1, cores // workers)
    if (workers, intra) == (settings.workers, settings.intra_op_threads):
        return settings
    return settings.model_copy(update={"workers": workers, "intra_op_threads": intra})


def parse_cli(argv: Sequence[str] | None = None) -> Settings:
    """Settings for ``python -m service``: CLI options win over ``WATCHTIME_*`` variables."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve watch-time distributions from the ONNX models of a model repository.",
    )
    parser.add_argument("--host", help="address to bind (WATCHTIME_HOST, default 127.0.0.1)")
    parser.add_argument("--port", help="TCP port (WATCHTIME_PORT, default 8000)")
    parser.add_argument(
        "--grpc-port", help="gRPC port (WATCHTIME_GRPC_PORT, default 8001; 0: no gRPC)"
    )
    parser.add_argument(
        "--workers", help="worker processes (WATCHTIME_WORKERS, default 0: one per usable core)"
    )
    parser.add_argument(
        "--model-repository",
        help="model repository directory (WATCHTIME_MODEL_REPOSITORY, default models/)",
    )
    args = parser.parse_args(argv)
    return load_settings(**vars(args))


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``WATCHTIME_*`` variables, so worker processes rebuild the same ones."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            env[ENV_PREFIX + name.upper()] = str(value)
    return env
