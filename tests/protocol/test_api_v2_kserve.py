"""The v2 routes driven by KServe's own InferenceRESTClient (JSON and binary tensors), and the
gRPC service of a real ``python -m service`` driven by its InferenceGRPCClient (typed and raw
contents).

kserve pins pandas below 3 while the training extra pins pandas 3, so kserve is not in the
dev extra: `make test` runs this module in an environment of its own (the serving extra
plus the ``kserve-client`` extra, see the Makefile), where a missing kserve fails it.
Elsewhere it is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from service.runtime.repository import ModelRepository
from tests.support.api import AppClient, Reference, app_client
from tests.support.hostile import ServiceProcess
from tests.support.v2 import (
    EDGES,
    check_against_reference,
    datatype,
    native_answer,
    tensor_columns,
)

if os.environ.get("WATCHTIME_REQUIRE_KSERVE") == "1":
    # `make test` runs this module in the kserve environment: a missing client fails.
    import kserve
    from kserve.protocol import infer_type
else:
    kserve = pytest.importorskip("kserve")
    infer_type = pytest.importorskip("kserve.protocol.infer_type")


@pytest.fixture(scope="module")
def client(repository: ModelRepository) -> Iterator[AppClient]:
    yield from app_client(repository)


def _rest_client(client: AppClient) -> Any:
    config = kserve.RESTConfig(transport=httpx.ASGITransport(app=client.app), protocol="v2")
    return kserve.InferenceRESTClient(config)


def _request(columns: dict[str, np.ndarray], binary: bool) -> Any:
    inputs = []
    for name, arr in columns.items():
        tensor = kserve.InferInput(name, list(arr.shape), datatype(arr))
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    names = ["expected_watch_time_s", "point_s", "std_s", "quick_skip_prob"]
    outputs = [
        infer_type.RequestedOutput(name, parameters={"binary_data": binary})
        for name in [*names, "quantiles", "interval_mass"]
    ]
    return kserve.InferRequest(
        model_name="egmn",
        infer_inputs=inputs,
        parameters={
            "quantiles": "0.1,0.5,0.9",
            "intervals": "[[0,3],[3,10],[10,null]]",
            "quick_skip_threshold_s": 4,
        },
        request_outputs=outputs,
    )


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_rest_client(client: AppClient, binary: bool) -> None:
    rest = _rest_client(client)
    base = "http://test"
    try:
        assert client.loop.run_until_complete(rest.is_server_live(base))
        assert client.loop.run_until_complete(rest.is_server_ready(base))
        assert client.loop.run_until_complete(rest.is_model_ready(base, "egmn"))
        columns = tensor_columns(32, start=2000)
        columns["duration_ms"][5] = np.nan
        response = client.loop.run_until_complete(
            rest.infer(base, _request(columns, binary), model_name="egmn")
        )
        got = {out.name: out.as_numpy() for out in response.outputs}
        check_against_reference(got, Reference(), columns, 4.0, [0.1, 0.5, 0.9], EDGES)
        partial = {k: v for k, v in columns.items() if k != "tab"}
        with pytest.raises(httpx.HTTPStatusError) as info:
            client.loop.run_until_complete(
                rest.infer(base, _request(partial, binary), model_name="egmn")
            )
        assert info.value.response.status_code == 400
        assert "tab" in info.value.response.json()["error"]
    finally:
        client.loop.run_until_complete(rest.close())


@pytest.mark.parametrize("binary", [False, True], ids=["typed_contents", "raw_contents"])
def test_kserve_grpc_client(grpc_service: ServiceProcess, binary: bool) -> None:
    import asyncio

    import grpc

    async def run() -> None:
        client = kserve.InferenceGRPCClient(f"127.0.0.1:{grpc_service.grpc_port}")
        try:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready("egmn")
            columns = tensor_columns(32, start=2000)
            response = await client.infer(_request(columns, binary))
            got = {out.name: out.as_numpy() for out in response.outputs}
            want = native_answer(grpc_service.port, 32, 2000)
            assert set(got) == set(want)
            for name, value in want.items():
                np.testing.assert_array_equal(got[name], value, err_msg=name)
            partial = {k: v for k, v in columns.items() if k != "tab"}
            with pytest.raises(grpc.RpcError) as info:
                await client.infer(_request(partial, binary))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "input 'tab' is missing" in info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                await client.is_model_ready("nope")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await client.close()

    asyncio.run(run())
