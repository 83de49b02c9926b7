"""Pydantic models that document the HTTP bodies in the OpenAPI schema.

They describe, they do not parse: the predict routes decode bodies with orjson and numpy
directly (validating a 10,000-row request through pydantic would cost more than the model),
so these classes only feed ``/openapi.json`` and ``/docs``. Decoding enforces the same rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = int | float | str | None
"""A feature value: a number, a string or null (missing, filled by the manifest's rule)."""

Level = Annotated[float, Field(gt=0.0, lt=1.0)]


class CurveRequest(BaseModel):
    """A grid of times on which to draw each row's density and CDF."""

    model_config = ConfigDict(extra="forbid")

    points: int = Field(
        default=200,
        ge=2,
        le=2000,
        description="grid points, evenly spaced from 0 to max_s inclusive; rows x points may "
        "not exceed WATCHTIME_MAX_CURVE_VALUES (200,000 by default; 413 past it)",
    )
    max_s: float = Field(
        default=600.0, gt=0.0, le=1e7, description="the grid's last time, in seconds"
    )


class PredictRequest(BaseModel):
    """A batch of candidate rows, columnar (``features``) or as rows (``instances``)."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, list[Scalar]] | None = Field(
        default=None,
        description="one list per raw feature column, all of equal length n (columnar form)",
    )
    instances: list[dict[str, Scalar]] | None = Field(
        default=None, description="one object per row (row form); send this or features"
    )
    quantiles: list[Level] | None = Field(
        default=None, description="quantile levels in (0, 1)", max_length=100
    )
    intervals: list[tuple[float, float | None]] | None = Field(
        default=None,
        description="intervals [lo, hi] in seconds, hi null for +infinity, lo <= hi",
        max_length=100,
    )
    quick_skip_threshold_s: Annotated[float, Field(ge=0.0)] | None = Field(
        default=None, description="P(T <= threshold) is quick_skip_prob; default: the model's"
    )
    return_params: bool = Field(default=False, description="add the family parameters per row")
    curve: CurveRequest | None = Field(
        default=None,
        description="draw each row's density and CDF on a grid of times (the /inspect page "
        "uses it)",
    )


class QuantilesOut(BaseModel):
    levels: list[float]
    values_s: list[list[float]] = Field(description="per row, one value per level")


class IntervalsOut(BaseModel):
    edges_s: list[tuple[float, float | None]]
    mass: list[list[float]] = Field(description="per row, P(lo <= T <= hi) per interval")


class AtomsOut(BaseModel):
    at_s: list[list[float]] = Field(description="per row, where each point mass sits")
    mass: list[list[float]] = Field(description="per row, each point mass's probability")


class CurveOut(BaseModel):
    t_s: list[float] = Field(description="the grid of times, seconds")
    density: Literal["point", "step"] = Field(
        description="point: pdf[i] is the density at t_s[i] (smooth families; trapezoids "
        "integrate it); step: pdf[i] holds on [t_s[i], t_s[i+1]), the cell's continuous mass "
        "over its width (bucket families: histogram, survival, quantile; rectangles integrate "
        "it exactly)"
    )
    note: str = Field(description="the density rule in words")
    pdf: list[list[float]] = Field(description="per row, density per second at each time")
    cdf: list[list[float]] = Field(description="per row, P(T <= t) at each time, atoms included")
    atoms: AtomsOut = Field(
        description="point masses (p0 at 0 s, flat quantile segments), not in pdf; only the "
        "atoms some row holds are listed"
    )


class PredictResponse(BaseModel):
    """Per-row numbers in request order, all in seconds."""

    model: str
    version: str
    family: str
    n: int
    expected_watch_time_s: list[float] = Field(description="exact mean E[T] per row")
    point_s: list[float] = Field(description="the model's own point prediction per row")
    std_s: list[float] = Field(description="standard deviation of T per row")
    quick_skip_threshold_s: float
    quick_skip_prob: list[float] = Field(description="P(T <= quick_skip_threshold_s) per row")
    quantiles: QuantilesOut | None = None
    intervals: IntervalsOut | None = None
    params: dict[str, Any] | None = Field(
        default=None, description="family parameters per row (with return_params only)"
    )
    curve: CurveOut | None = Field(default=None, description="with the curve option only")


class ErrorBody(BaseModel):
    """Every native error: what is wrong, and which field and row."""

    error: str
    code: str
    field: str | None = None
    row: int | None = None


class HealthBody(BaseModel):
    live: bool


class FailedModel(BaseModel):
    model: str
    version: str


class ReadyBody(BaseModel):
    ready: bool
    failed_models: list[FailedModel] | None = Field(
        default=None, description="model versions refused at start-up (non-strict start-up only)"
    )


class ModelSummary(BaseModel):
    name: str
    version: str
    family: str
    description: str
    default: bool
    quick_skip_threshold_s: float
    feature_columns: list[str]


class ModelList(BaseModel):
    default: str | None
    models: list[ModelSummary]


FALLBACK_FEATURES: dict[str, list[Scalar]] = {
    "user_id": [12, 40],
    "video_id": [5, 7],
    "duration_ms": [32000, None],
}


def request_examples(features: dict[str, list[Scalar]]) -> dict[str, Any]:
    """OpenAPI examples of both request forms for the given columns."""
    n = len(next(iter(features.values()), []))
    instances = [{k: v[i] for k, v in features.items()} for i in range(n)]
    extras: dict[str, Any] = {
        "quantiles": [0.1, 0.5, 0.9],
        "intervals": [[0, 3], [3, 10], [10, None]],
    }
    return {
        "columnar": {
            "summary": "columnar rows (features)",
            "value": {"features": features, **extras, "return_params": False},
        },
        "rows": {
            "summary": "row objects (instances)",
            "value": {"instances": instances, "quick_skip_threshold_s": 2.0},
        },
        "curve": {
            "summary": "density and CDF on a grid (curve)",
            "value": {"features": features, "curve": {"points": 61, "max_s": 120}},
        },
    }


def predict_request_body(features: dict[str, list[Scalar]] | None = None) -> dict[str, Any]:
    """The ``openapi_extra`` of a predict route: the request schema with examples."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": inline_schema(PredictRequest),
                    "examples": request_examples(features or FALLBACK_FEATURES),
                }
            },
        }
    }


V2Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class V2Tensor(BaseModel):
    """One input tensor: a raw feature column, shape [n] or [n, 1]."""

    name: str
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: V2Datatype
    data: list[Any] | None = Field(
        default=None, description="row-major values; absent when binary_data_size is given"
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description="binary_data_size for the binary tensor extension"
    )


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(default=None, description="binary_data: bool")


class V2InferRequest(BaseModel):
    """An Open Inference Protocol request (JSON form)."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None,
        description=(
            "quantiles, intervals, quick_skip_threshold_s, return_params, binary_data_output"
        ),
    )
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined.

    An ``openapi_extra`` schema is pasted into the document as is, where ``#/$defs/...``
    would not resolve; these documentation models have no recursion, so inlining is finite.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def v2_examples(features: dict[str, list[Scalar]], kinds: dict[str, str]) -> dict[str, Any]:
    """An OpenAPI example of a JSON-form v2 infer request for the given columns."""
    inputs = []
    for name, values in features.items():
        data: list[Any]
        if kinds.get(name) == "string":
            datatype, data = "BYTES", ["" if v is None else str(v) for v in values]
        elif all(isinstance(v, int) for v in values):
            datatype, data = "INT64", list(values)
        else:
            datatype = "FP64"
            data = [v if isinstance(v, (int, float)) else 0.0 for v in values]
        inputs.append({"name": name, "shape": [len(values)], "datatype": datatype, "data": data})
    return {
        "json": {
            "summary": "JSON tensors, one per raw column",
            "value": {
                "inputs": inputs,
                "parameters": {"quantiles": [0.1, 0.5, 0.9], "intervals": [[0, 3], [3, None]]},
            },
        }
    }


def v2_request_body(features: dict[str, list[Scalar]] | None = None) -> dict[str, Any]:
    """The ``openapi_extra`` of the v2 infer routes (JSON form; binary is described in text)."""
    return {
        "requestBody": {
            "required": True,
            "description": (
                "JSON, or with the header Inference-Header-Content-Length: the JSON header "
                "followed by the raw tensors (binary tensor extension)"
            ),
            "content": {
                "application/json": {
                    "schema": inline_schema(V2InferRequest),
                    "examples": v2_examples(features or FALLBACK_FEATURES, {}),
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
