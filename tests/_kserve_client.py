"""KServe's own V2 REST client against a deployment, run in the venv that has kserve.

kserve 0.21 needs pandas < 3 and protobuf < 7, which the test venv does not have, so this script runs
under ``.venv-kserve`` (made by scripts/test) and answers the test as one JSON line after a marker:
``python tests/_kserve_client.py BASE_URL MODEL ROWS_JSON``.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

MARKER = "NBSERVE-ANSWER:"


def _request(model: str, rows: dict[str, list[float]], binary: bool, request_id: str,
             outputs: tuple[str, ...] = ()) -> InferRequest:
    inputs = []
    for column, values in rows.items():
        tensor = InferInput(column, [len(values)], "FP64")
        tensor.set_data_from_numpy(np.asarray(values, dtype=np.float64), binary_data=binary)
        inputs.append(tensor)
    return InferRequest(model, inputs, request_id=request_id,
                        request_outputs=[RequestedOutput(name) for name in outputs] or None)


def _outputs(response) -> dict:
    return {"id": response.id, "model_name": response.model_name,  # from_bytes drops model_version
            "outputs": {o.name: o.as_numpy().tolist() for o in response.outputs}}


async def main(base_url: str, model: str, rows: dict[str, list[float]]) -> dict:
    async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=30)) as client:
        answer = {
            "live": await client.is_server_live(base_url),
            "ready": await client.is_server_ready(base_url),
            "model_ready": await client.is_model_ready(base_url, model),
            "other_ready": await client.is_model_ready(base_url, "no-such-model"),
            "json": _outputs(await client.infer(base_url, _request(model, rows, False, "k-1"), model_name=model)),
            "binary": _outputs(await client.infer(base_url, _request(model, rows, True, "k-2", ("predict", "predict_proba")), model_name=model)),
        }
        short = dict(list(rows.items())[:1])
        try:
            await client.infer(base_url, _request(model, short, False, "k-3"), model_name=model)
            answer["missing"] = None
        except httpx.HTTPStatusError as refused:
            answer["missing"] = {"status": refused.response.status_code, "message": str(refused)}
        return answer


if __name__ == "__main__":
    url, name, payload = sys.argv[1:4]
    print(MARKER + json.dumps(asyncio.run(main(url, name, json.loads(payload)))))
