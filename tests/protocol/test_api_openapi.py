"""The OpenAPI document: both request forms with working examples, and fuzzing from it.

Schemathesis generates requests from ``/openapi.json``, valid and deliberately invalid
(negative mode: wrong types, missing fields, out-of-range numbers, arbitrary bodies), for
every route; whatever arrives, the service must never answer 5xx.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from service.app import create_app
from service.config import Settings
from service.runtime.model import SessionConfig
from service.runtime.repository import load_repository
from tests.support import MODELS
from tests.support.api import AppClient


def examples(default: int) -> int:
    """Examples per test; FUZZ_EXAMPLES=5000 makes a long hunt of the same tests."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


REPOSITORY = load_repository(MODELS, SessionConfig(intra_op_threads=1), warmup_rows=4)
APP = create_app(
    Settings(model_repository=MODELS, max_request_rows=500), REPOSITORY, handle_signals=False
)

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)


@pytest.fixture(scope="module")
def client() -> Any:
    c = AppClient(APP, lifespan=False)  # the repository is given: no lifespan needed, and
    # leaving it would mark the shared app as shutting down for the fuzzing below
    yield c
    c.close()


PREDICT = [
    "/v1/predict",
    "/v1/models/{name}/predict",
    "/v1/models/{name}/versions/{version}/predict",
]
INFER = ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]


def test_openapi_documents_both_request_forms_and_the_examples_work(client: AppClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in PREDICT:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        props = body["schema"]["properties"]
        assert {"features", "instances", "quantiles", "intervals", "curve"} <= set(props)
        curve = props["curve"]["anyOf"][0]
        assert curve["properties"]["points"]["maximum"] == 2000, curve
        assert set(body["examples"]) == {"columnar", "rows", "curve"}
        url = path.replace("{name}", "egmn").replace("{version}", "1")
        for example in body["examples"].values():
            r = client.post(url, json=example["value"])
            assert r.status_code == 200, r.text
            assert r.json()["n"] == 2
            assert ("curve" in r.json()) == ("curve" in example["value"])
    for path in INFER:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        url = path.replace("{name}", "egmn").replace("{version}", "1")
        for example in body["examples"].values():
            r = client.post(url, json=example["value"])
            assert r.status_code == 200, r.text
    responses = doc["paths"]["/v1/predict"]["post"]["responses"]
    assert {"200", "404", "413", "422", "503"} <= set(responses)
    answer = doc["components"]["schemas"]["PredictResponse"]["properties"]
    assert "curve" in answer and "CurveOut" in doc["components"]["schemas"]
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()


@schema.parametrize()
@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors(case: Any) -> None:
    if case.method == "POST" and case.path_parameters:
        # a random model name is a 404 before the body is read; aim the bodies at the model
        case.path_parameters = {
            k: {"name": "egmn", "version": "1"}[k] for k in case.path_parameters
        }
    response = case.call()
    SEEN[(case.method, case.path, response.status_code)] += 1
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)


SEEN: Counter[tuple[str, str, int]] = Counter()


def test_the_fuzzing_reached_the_decoders() -> None:
    """Guard against a fuzz run that only ever hit one early rejection."""
    if not SEEN:
        pytest.skip("the fuzzing test did not run in this session")
    predict = {status for (method, path, status) in SEEN if path == "/v1/models/{name}/predict"}
    infer = {status for (method, path, status) in SEEN if path == "/v2/models/{name}/infer"}
    model = {status for (method, path, status) in SEEN if path == "/v1/models/{name}"}
    assert {200, 422} <= predict, SEEN
    assert 400 in infer, SEEN
    assert 404 in model, SEEN


# --------------------------------------------------------------------------- targeted fuzzing
# Schemathesis invents column names, so most of its bodies stop at "missing column". These
# start from a valid request of three real rows and break one column or option at a time.

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _valid_features() -> dict[str, list[Any]]:
    from tests.support.api import request_rows

    features, _ = request_rows(3)
    return features


FEATURES = _valid_features()

#: the settings of every property test here: no deadline (each example is a request), no
#: example database (the tests must not write into the checkout)
FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
COLUMNS = sorted(FEATURES)


@FUZZ
@given(
    column=st.sampled_from(COLUMNS),
    values=st.lists(json_values, min_size=0, max_size=5) | json_values,
    options=st.dictionaries(
        st.sampled_from(
            ["quantiles", "intervals", "quick_skip_threshold_s", "return_params", "curve"]
        ),
        json_values,
        max_size=2,
    ),
    rows=st.booleans(),
)
def test_native_column_and_option_fuzz(
    column: str, values: Any, options: dict[str, Any], rows: bool
) -> None:
    features = {**FEATURES, column: values}
    body: dict[str, Any]
    if rows and isinstance(values, list) and len(values) == 3:
        body = {"instances": [{k: v[i] for k, v in features.items()} for i in range(3)]}
    else:
        body = {"features": features}
    body.update(options)
    client = AppClient(APP, lifespan=False)
    try:
        r = client.post("/v1/predict", json=body)
    finally:
        client.close()
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert r.json()["field"], r.text


V2_INPUTS = [
    {
        "name": k,
        "shape": [3],
        "datatype": "BYTES" if any(isinstance(x, str) for x in v) else "FP64",
        "data": ["" if x is None else str(x) for x in v]
        if any(isinstance(x, str) for x in v)
        else [0.0 if x is None else float(x) for x in v],
    }
    for k, v in FEATURES.items()
]


@FUZZ
@given(
    index=st.integers(0, len(V2_INPUTS) - 1),
    key=st.sampled_from(["shape", "datatype", "data", "parameters", "name"]),
    value=json_values | st.sampled_from(["INT64", "BYTES", "FP32", "BOOL", "UINT8", "FP16"]),
    parameters=st.dictionaries(
        st.sampled_from(["quantiles", "intervals", "return_params", "binary_data_output"]),
        json_values,
        max_size=2,
    ),
)
def test_v2_tensor_fuzz(index: int, key: str, value: Any, parameters: dict[str, Any]) -> None:
    inputs = [dict(t) for t in V2_INPUTS]
    inputs[index][key] = value
    client = AppClient(APP, lifespan=False)
    try:
        r = client.post("/v2/models/egmn/infer", json={"inputs": inputs, "parameters": parameters})
    finally:
        client.close()
    assert r.status_code in (200, 400, 413), r.text
