"""The wire formats clients already speak, on real deployments over real HTTP: Open Inference
Protocol V2 through tritonclient's own HTTP client and KServe's InferenceRESTClient, MLflow's four payload forms (and CSV) on
``/invocations``, OpenAI embeddings through the ``openai`` client; canary traffic sent in V2
splits like ``/predict``; bad input in each gets a 4xx that names what is wrong."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import json
import threading
import os
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

import nbserve
from nbserve import _protocols

pytestmark = pytest.mark.slow

TEXTS = ["great pasta", "cold soup and the food was awful", "lovely service", "slow bad service",
         "good food", "the pasta was cold", "warm bread", "bad wine"]
SENTIMENT = [1, 0, 1, 0, 1, 0, 1, 0]


class OneAtATime:
    """A notebook's model that is not thread-safe: it fails when called twice at once, and on
    any row with sepal_length == 99."""

    def __init__(self, model) -> None:
        self.model = model
        self.classes_ = model.classes_
        self._busy = threading.Lock()

    def __getstate__(self) -> dict:
        return {"model": self.model, "classes_": self.classes_}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _busy=threading.Lock())

    def predict(self, X):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("called while another call was running")
        try:
            if (X["sepal_length"] == 99).any():
                raise ValueError("sepal_length 99 is out of range")
            time.sleep(0.002)  # long enough for overlapping calls to meet
            return self.model.predict(X)
        finally:
            self._busy.release()


class Unsure:
    """A notebook's model whose first class's probability is not a number (NaN)."""

    def __init__(self, model) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, X):
        out = self.model.predict_proba(X)
        out[:, 0] = np.nan
        return out


OneAtATime.__module__ = Unsure.__module__ = "__main__"  # pickled by value, as if defined in a notebook


def _post(url: str, **kwargs) -> httpx.Response:
    return httpx.post(url, trust_env=False, timeout=30, **kwargs)


def _columns(frame: pd.DataFrame, datatype: str = "FP64") -> list[dict]:
    return [{"name": c, "shape": [len(frame)], "datatype": datatype, "data": frame[c].tolist()} for c in frame]


@pytest.fixture(scope="module")
def iris_dep(module_home, iris, forest):
    _, X_test, _, _ = iris
    return nbserve.deploy(forest, "proto-iris", X_test, methods=["predict", "predict_proba"], progress=False)


def test_tritonclient_speaks_v2_to_a_frame_model(iris_dep, iris, forest):
    tritonclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    from tritonclient.utils import InferenceServerException

    _, X_test, _, _ = iris
    client = tritonclient.InferenceServerClient(iris_dep.url.split("//", 1)[1])
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("proto-iris") and client.is_model_ready("proto-iris", "1")
    meta = client.get_model_metadata("proto-iris")
    assert [i["name"] for i in meta["inputs"]] == list(X_test.columns)
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"} and meta["versions"] == ["1"]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"predict": [-1], "predict_proba": [-1, 3]}

    rows = X_test.iloc[:7]
    inputs = []
    for column in rows:  # binary tensors (tritonclient's default): the binary data extension
        tensor = tritonclient.InferInput(column, [len(rows)], "FP64")
        tensor.set_data_from_numpy(rows[column].to_numpy())
        inputs.append(tensor)
    result = client.infer("proto-iris", inputs, request_id="r-7",
                          outputs=[tritonclient.InferRequestedOutput("predict"),
                                   tritonclient.InferRequestedOutput("predict_proba")])
    np.testing.assert_array_equal(result.as_numpy("predict"), forest.predict(rows))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), forest.predict_proba(rows), rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r-7"
    pinned = client.infer("proto-iris", inputs, model_version="1")  # .../versions/1/infer
    assert pinned.get_response()["model_version"] == "1"

    with pytest.raises(InferenceServerException, match="no version or alias '9'"):
        client.infer("proto-iris", inputs, model_version="9")
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        client.get_model_metadata("other")
    short = tritonclient.InferInput("sepal_length", [3], "FP64")
    short.set_data_from_numpy(rows["sepal_length"].to_numpy()[:3])
    with pytest.raises(InferenceServerException, match="missing input tensors: sepal_width"):
        client.infer("proto-iris", [short])


def test_v2_json_tensors_and_its_errors(iris_dep, iris, forest):
    _, X_test, _, _ = iris
    rows = X_test.iloc[:4]
    url = f"{iris_dep.url}/v2/models/proto-iris"
    answer = _post(f"{url}/infer", json={"id": "a", "inputs": _columns(rows)})
    assert answer.status_code == 200, answer.text
    out = answer.json()
    assert out["id"] == "a" and out["model_name"] == "proto-iris" and out["model_version"] == "1"
    assert out["outputs"][0] == {"name": "predict", "datatype": "INT64", "shape": [4],
                                 "data": forest.predict(rows).tolist()}
    assert answer.headers["x-nbserve-version"] == "1" and answer.headers["x-nbserve-rows"] == "4"
    table = {"inputs": [{"name": "rows", "shape": [4, 4], "datatype": "FP32", "data": rows.to_numpy().tolist()}]}
    assert _post(f"{url}/infer", json=table).json()["outputs"][0]["data"] == forest.predict(rows).tolist()
    pinned = _post(f"{iris_dep.url}/v/1/v2/models/proto-iris/versions/1/infer", json=table)
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "1"

    bad = {
        "shape and data disagree": ({"inputs": [{**_columns(rows)[0], "shape": [5]}, *_columns(rows)[1:]]},
                                    "has shape [5] (5 values) but 4 values"),
        "a string in a float column": ({"inputs": [*_columns(rows)[:3], {**_columns(rows)[3], "datatype": "BYTES"}]},
                                       "column 'petal_width' takes FP64"),
        "an unknown datatype": ({"inputs": [{**_columns(rows)[0], "datatype": "FLOAT"}]}, "unknown datatype 'FLOAT'"),
        "an extra tensor": ({"inputs": [*_columns(rows), {"name": "x", "shape": [4], "datatype": "FP64",
                                                          "data": [1, 2, 3, 4]}]}, "unexpected input tensors: x"),
        "rows that differ": ({"inputs": [*_columns(rows)[:3], _columns(X_test.iloc[:3])[3]]}, "differ in their first"),
        "no inputs": ({"inputs": []}, "non-empty \"inputs\""),
        "an unknown output": ({"inputs": _columns(rows), "outputs": [{"name": "transform"}]}, "unknown outputs: transform"),
        "a wrong table": ({"inputs": [{"name": "rows", "shape": [2, 3], "datatype": "FP64", "data": [1] * 6}]},
                          "shape [rows, 4]"),
    }
    for case, (body, message) in bad.items():
        refused = _post(f"{url}/infer", json=body)
        assert refused.status_code == 400, (case, refused.status_code, refused.text)
        assert message in refused.json()["error"], (case, refused.json())
    assert _post(f"{url}/infer", content=b"{not json").status_code == 400
    assert httpx.get(f"{url}/infer", trust_env=False).status_code == 405
    assert httpx.get(f"{iris_dep.url}/v2/models/proto-iris/versions/8", trust_env=False).status_code == 404
    assert httpx.get(f"{iris_dep.url}/v2", trust_env=False).json()["name"] == "nbserve"
    # the version that was serving still serves
    assert _post(f"{url}/infer", json={"inputs": _columns(rows)}).status_code == 200


def test_mlflow_payload_forms_answer_what_pyfunc_predict_would(iris_dep, iris, forest):
    _, X_test, _, _ = iris
    rows = X_test.iloc[:5]
    expected = {"predictions": forest.predict(rows).tolist()}  # what mlflow's pyfunc scoring server answers
    url = f"{iris_dep.url}/invocations"
    forms = {
        "dataframe_split": {"dataframe_split": rows.to_dict(orient="split")},
        "dataframe_records": {"dataframe_records": rows.to_dict(orient="records")},
        "instances": {"instances": rows.to_dict(orient="records")},
        "inputs as columns": {"inputs": rows.to_dict(orient="list")},
        "inputs as rows": {"inputs": rows.to_numpy().tolist()},
    }
    for form, body in forms.items():
        answer = _post(url, json=body)
        assert answer.status_code == 200 and answer.json() == expected, (form, answer.text)
    csv = _post(url, content=rows.to_csv(index=False), headers={"content-type": "text/csv"})
    assert csv.json() == expected
    for path in ("/ping", "/health"):
        assert httpx.get(f"{iris_dep.url}{path}", trust_env=False).status_code == 200

    refusals = {
        "two fields": ({"instances": [], "inputs": []}, "exactly one of the fields"),
        "no field": ({"data": []}, "exactly one of the fields"),
        "a missing column": ({"dataframe_records": [{"sepal_length": 1.0}]}, "missing columns: sepal_width"),
        "a short row": ({"dataframe_split": {"columns": list(rows), "data": [[1.0]]}}, "has 4 values"),
        "ragged columns": ({"inputs": {"sepal_length": [1.0], "sepal_width": [1.0, 2.0]}}, "every column as long"),
    }
    for case, (body, message) in refusals.items():
        refused = _post(url, json=body)
        assert refused.status_code == 400, (case, refused.text)
        assert refused.json()["error_code"] == "BAD_REQUEST" and message in refused.json()["message"], case
    assert _post(url, content=b"a", headers={"content-type": "application/xml"}).status_code == 415


@pytest.mark.parametrize("batching", [False, True], ids=["unbatched", "batched"])
def test_each_format_reaches_the_model_as_predict_does_and_its_failures_stay_its_own(module_home, iris, forest,
                                                                                       batching):
    """V2 and MLflow requests are answered in the server process by the function behind
    ``/predict``: the same answers, rows headers and model failures, and never a second model
    call beside one of ``/predict``'s (sync APIs run one at a time in BentoML)."""
    _, X_test, _, _ = iris
    name = f"proto-direct-{int(batching)}"
    dep = nbserve.deploy(OneAtATime(forest), name, X_test, progress=False,
                         **({"batching": True, "max_latency_ms": 5000} if batching else {"batching": False}))
    poisoned = X_test.iloc[[0]].assign(sepal_length=99.0)

    def request(i: int) -> tuple[int, pd.DataFrame, str, httpx.Response]:
        rows = poisoned if i % 10 == 3 else X_test.iloc[i % len(X_test):i % len(X_test) + 1 + i % 3]
        form = ("predict", "v2", "mlflow")[i % 3]
        with httpx.Client(trust_env=False, timeout=60) as client:
            if form == "predict":
                sent = client.post(f"{dep.url}/predict", json={"data": rows.to_dict(orient="records")})
            elif form == "v2":
                sent = client.post(f"{dep.url}/v2/models/{name}/infer", json={"inputs": _columns(rows)})
            else:
                sent = client.post(f"{dep.url}/invocations", json={"dataframe_split": rows.to_dict(orient="split")})
        return i, rows, form, sent

    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(request, range(120)))
    for i, rows, form, sent in answers:
        if i % 10 == 3:  # the model failed on these rows: this request alone gets the error
            assert sent.status_code == 500, (form, sent.text)
            error = sent.json()
            assert "unexpected error" in (error.get("error") or error.get("message", "")), (form, error)
            continue
        assert sent.status_code == 200, (form, sent.text)
        assert sent.headers["x-nbserve-rows"] == str(len(rows)), form
        got = sent.json()
        predicted = {"predict": lambda: got, "v2": lambda: got["outputs"][0]["data"],
                     "mlflow": lambda: got["predictions"]}[form]()
        assert predicted == forest.predict(rows).tolist(), (form, got)
    rows = X_test.iloc[:2]  # the version that was serving still serves
    assert _post(f"{dep.url}/v2/models/{name}/infer", json={"inputs": _columns(rows)}).status_code == 200


def test_bentoml_requests_are_answered_in_process_as_its_route_would(module_home, iris, forest):
    """``{"data": ...}`` to an API is answered in the server process (Protocols -> Serving.call);
    a body with anything more goes to BentoML's route. Both answer alike, NaN as null included
    (so parity passes for a model that answers NaN), and BentoML's own 400s stay its own."""
    _, X_test, _, _ = iris
    dep = nbserve.deploy(Unsure(forest), "proto-unsure", X_test, method="predict_proba", progress=False)
    rows = X_test.iloc[:3].to_dict(orient="records")
    in_process = _post(f"{dep.url}/predict", json={"data": rows})
    routed = _post(f"{dep.url}/predict", json={"data": rows, "note": "BentoML ignores it"})
    for answer in (in_process, routed):
        assert answer.status_code == 200, answer.text
        assert answer.json() == [[None, *p[1:]] for p in forest.predict_proba(X_test.iloc[:3]).tolist()]
        assert answer.headers["x-nbserve-rows"] == "3"
        assert answer.headers["server"] == "BentoML Service/proto-unsure"
    assert in_process.content == routed.content
    missing = _post(f"{dep.url}/predict", json={"data": [{"sepal_length": 1.0}]})
    assert missing.status_code == 422 and missing.json()["missing_columns"] == ["sepal_width", "petal_length",
                                                                                 "petal_width"]
    for body in ({"rows": rows}, [1]):
        refused = _post(f"{dep.url}/predict", json=body)
        assert refused.status_code == 400 and "validation error" in refused.json()["error"], refused.text
    with pytest.raises(Exception):  # not JSON: BentoML's own answer, as before
        _post(f"{dep.url}/predict", content=b"{nope").raise_for_status()
    import bentoml

    with bentoml.SyncHTTPClient(dep.url) as client:  # BentoML's client, in-process path and all
        got = client.predict(data=X_test.iloc[:2])
    assert np.asarray(got)[:, 1:].tolist() == forest.predict_proba(X_test.iloc[:2])[:, 1:].tolist()


def test_the_docs_page_lists_each_protocol_with_a_request_that_works(iris_dep):
    document = httpx.get(f"{iris_dep.url}/docs.json", trust_env=False, timeout=30).json()
    assert "/predict" in document["paths"], "BentoML's own routes stay"
    for path in ("/v2/models/proto-iris/infer", "/invocations"):
        example = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        tried = _post(f"{iris_dep.url}{path}", json=example)  # what Swagger's "Try it out" sends
        assert tried.status_code == 200, (path, tried.text)
    assert "/v1/embeddings" not in document["paths"], "a model of rows answers no embeddings"
    assert "get" in document["paths"]["/v2/models/proto-iris"]


def test_a_canary_splits_v2_traffic_like_predict(module_home, iris, forest, tree):
    _, X_test, _, _ = iris
    nbserve.deploy(forest, "proto-canary", X_test, progress=False)
    dep = nbserve.deploy(tree, "proto-canary", X_test, canary=50, progress=False)
    body = {"inputs": _columns(X_test.iloc[:2])}
    seen = {"1": 0, "2": 0}
    with httpx.Client(trust_env=False, timeout=30) as client:
        for _ in range(200):
            answer = client.post(f"{dep.url}/v2/models/proto-canary/infer", json=body)
            assert answer.status_code == 200
            seen[answer.headers["x-nbserve-version"]] += 1
            # the version the protocol names is the one that answered
            assert answer.json()["model_version"] == answer.headers["x-nbserve-version"]
        pinned = client.post(f"{dep.url}/v2/models/proto-canary/versions/2/infer", json=body)
    assert 60 <= seen["2"] <= 140, seen  # 50% of 200: far outside these only by a broken split
    assert pinned.headers["x-nbserve-version"] == "2", "a named version is never split"
    schema = httpx.get(f"{dep.url}/schema", trust_env=False).json()
    for protocol, request in schema["requests"].items():  # each ready request works as written
        sent = _post(f"{dep.url}{request['path']}", json=request["body"])
        assert sent.status_code == 200, (protocol, sent.text)
    dep.promote()


def test_openai_embeddings_from_a_text_model(module_home):
    openai = pytest.importorskip("openai", reason="the openai client is not installed")
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    embedder = make_pipeline(TfidfVectorizer(), TruncatedSVD(n_components=4, random_state=0)).fit(TEXTS)
    dep = nbserve.deploy(embedder, "proto-embed", TEXTS, method="transform", progress=False)
    client = openai.OpenAI(base_url=f"{dep.url}/v1", api_key="unused", max_retries=0)
    expected = embedder.transform(TEXTS[:2])
    answer = client.embeddings.create(model="proto-embed", input=TEXTS[:2])  # base64, the client's default
    assert [d.index for d in answer.data] == [0, 1] and answer.model == "proto-embed"
    np.testing.assert_allclose([d.embedding for d in answer.data], expected, rtol=1e-5, atol=1e-6)
    one = client.embeddings.create(model="proto-embed", input=TEXTS[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, expected[0], rtol=1e-5, atol=1e-6)
    assert [m.id for m in client.models.list()] == ["proto-embed"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.embeddings.create(model="another", input="x")
    with pytest.raises(openai.BadRequestError, match="non-empty list of strings"):
        client.embeddings.create(model="proto-embed", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="vectors of 4 dimensions"):
        client.embeddings.create(model="proto-embed", input="x", dimensions=8)
    raw = _post(f"{dep.url}/v1/embeddings", json={"model": "proto-embed", "input": ["warm bread"],
                                                  "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, embedder.transform(["warm bread"])[0], rtol=1e-5, atol=1e-6)

    # a text model that does not answer vectors: told so, in OpenAI's error shape
    classifier = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, SENTIMENT)
    labels = nbserve.deploy(classifier, "proto-labels", TEXTS, progress=False)
    refused = _post(f"{labels.url}/v1/embeddings", json={"model": "proto-labels", "input": "x"})
    assert refused.status_code == 400 and "one vector of numbers per text" in refused.json()["error"]["message"]
    # the same text model over V2 (BYTES) and MLflow
    v2 = _post(f"{labels.url}/v2/models/proto-labels/infer",
               json={"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS[:2]}]})
    assert v2.json()["outputs"][0]["data"] == classifier.predict(TEXTS[:2]).tolist()
    wrong = _post(f"{labels.url}/v2/models/proto-labels/infer",
                  json={"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]})
    assert wrong.status_code == 400 and "takes BYTES" in wrong.json()["error"]
    mlflow = _post(f"{labels.url}/invocations", json={"instances": TEXTS[2:4]})
    assert mlflow.json() == {"predictions": classifier.predict(TEXTS[2:4]).tolist()}

    # captured and monitored like /predict: the request log says which protocol each came in
    _post(f"{dep.url}/predict", json={"data": TEXTS[:1]})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        protocols = set(labels.traffic()["protocol"]) | set(dep.traffic()["protocol"])
        if {"openai", "v2", "mlflow", "bentoml"} <= protocols:
            break
        time.sleep(0.5)
    assert {"openai", "v2", "mlflow", "bentoml"} <= protocols
    texts = labels.traffic().query("protocol == 'v2'")
    assert list(texts["token_count"]) == [2.0, 7.0], "V2's BYTES read back as the texts they were"


def test_protocol_of_names_each_path():
    assert [_protocols.protocol_of(p) for p in
            ("/predict", "/v2/models/m/infer", "/v/3/v2/models/m/infer", "/invocations", "/ping",
             "/v1/embeddings", "/v/2/predict_proba", "/v2")] == \
        ["bentoml", "v2", "v2", "mlflow", "mlflow", "openai", "bentoml", "v2"]


# -- the adapters alone (no server): forms the deployments above do not send ----------------------

_FRAME = _protocols.Served({"deployment": "m", "schema": {"columns": [
    {"name": "age", "kind": "int", "dtype": "int64"}, {"name": "city", "kind": "string", "dtype": "object"}]}})


def _v2(served, body: dict, headers: dict | None = None, raw: bytes | None = None):
    import json

    return _protocols.OpenInference().handle(served, "POST", f"/v2/models/{served.name}/infer", headers or {},
                                             raw if raw is not None else json.dumps(body).encode())


def test_v2_binary_tensors_strings_and_nested_data_become_rows():
    import json
    import struct

    ages = np.asarray([31, 47], dtype="<i8").tobytes()
    cities = b"".join(struct.pack("<I", len(c)) + c for c in (b"Lyon", "Zürich".encode()))
    head = json.dumps({"inputs": [
        {"name": "age", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": len(ages)}},
        {"name": "city", "shape": [2, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(cities)}},
    ]}).encode()
    call = _v2(_FRAME, {}, {"inference-header-content-length": str(len(head))}, head + ages + cities)
    assert isinstance(call, _protocols.Call) and call.apis == ("predict",)
    assert call.data == {"age": [31, 47], "city": ["Lyon", "Zürich"]}, "a frame's columns, as /predict takes them"
    answer = call.finish({"predict": [0.5, 1.5]})
    assert answer.payload["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [2], "data": [0.5, 1.5]}]
    nested = _v2(_FRAME, {"inputs": [{"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [[1], [2]]},
                                     {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]})
    assert nested.data == {"age": [1, 2], "city": ["a", "b"]}
    table = _v2(_FRAME, {"inputs": [{"name": "t", "shape": [2, 2], "datatype": "BYTES", "data": [["1", "a"], ["2", "b"]]}]})
    assert table.status == 400 and "column 'age' takes INT64" in table.payload["error"]
    wrong = _v2(_FRAME, {"inputs": [{"name": "age", "shape": [1], "datatype": "FP32", "data": [1.5]},
                                    {"name": "city", "shape": [1], "datatype": "BYTES", "data": ["a"]}]})
    assert wrong.status == 400 and "column 'age' takes INT64" in wrong.payload["error"]
    truncated = _v2(_FRAME, {}, {"inference-header-content-length": "9999"}, head)
    assert truncated.status == 400
    deep = _v2(_FRAME, {}, raw=b"[" * 100_000)  # nested past the parser: a 400, not a crash
    assert deep.status == 400 and "not JSON" in deep.payload["error"]


def test_v2_arrays_records_and_images_take_one_tensor():
    arrays = _protocols.Served({"deployment": "a", "schema": {"kind": "array", "shape": [2, 2], "dtype": "float32"}})
    call = _v2(arrays, {"inputs": [{"name": "x", "shape": [1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert call.data == [[[1, 2], [3, 4]]]
    assert _v2(arrays, {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": list("abcd")}]}).status == 400
    meta = _protocols.OpenInference().metadata(arrays, "3")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2, 2]}] and meta["versions"] == ["3"]
    records = _protocols.Served({"deployment": "r", "schema": {"kind": "records"}})
    call = _v2(records, {"inputs": [{"name": "doc", "shape": [1], "datatype": "BYTES", "data": ['{"total": 3}']}]})
    assert call.data == [{"total": 3}]
    assert _v2(records, {"inputs": [{"name": "doc", "shape": [1], "datatype": "BYTES", "data": ["{no"]}]}).status == 400
    entities = call.finish({"predict": [[{"word": "pasta"}], []]}).payload["outputs"][0]
    assert entities["datatype"] == "BYTES" and entities["data"] == ['[{"word": "pasta"}]', "[]"]
    images = _protocols.Served({"deployment": "i", "schema": {"kind": "images"}})
    import json
    import struct

    head = json.dumps({"inputs": [{"name": "f", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 7}}]}).encode()
    call = _v2(images, {}, {"inference-header-content-length": str(len(head))}, head + struct.pack("<I", 3) + b"\x89PN")
    assert call.data == [base64.b64encode(b"\x89PN").decode()]


def test_mlflow_forms_for_a_text_model_and_what_capture_reads_back():
    texts = _protocols.Served({"deployment": "t", "schema": {"kind": "text"}})
    mlflow = _protocols.MLflowScoring()
    assert mlflow.data_of(texts, {"instances": ["a", "b"]}) == ["a", "b"]
    assert mlflow.data_of(texts, {"inputs": {"review": ["a"]}}) == ["a"]
    assert mlflow.data_of(texts, {"dataframe_split": {"columns": ["review"], "data": [["a"], ["b"]]}}) == ["a", "b"]
    assert mlflow.data_of(texts, {"dataframe_records": [{"review": "a"}]}) == ["a"]
    csv = mlflow.handle(_FRAME, "POST", "/invocations", {"content-type": "text/csv"}, b"age,city\n3,Lyon\n,Oslo\n")
    assert csv.data == [{"age": 3, "city": "Lyon"}, {"age": None, "city": "Oslo"}]
    schema = _FRAME.schema
    assert _protocols.captured("/invocations", {"dataframe_records": [{"age": 1, "city": "x"}]},
                               {"predictions": [7]}, schema) == ([{"age": 1, "city": "x"}], [7])
    assert _protocols.captured("/v/2/predict", {"data": [1]}, [0], schema) == ([1], [0])
    assert _protocols.captured("/v2/models/m/infer", {"inputs": "nonsense"}, None, schema) is None
    assert _protocols.captured("/metadata", None, None, schema) is None


KSERVE_PYTHON = Path(os.environ.get("NBSERVE_KSERVE_PYTHON", Path(__file__).parents[1] / ".venv-kserve/bin/python"))


@pytest.mark.skipif(not KSERVE_PYTHON.exists(), reason=(
    f"no {KSERVE_PYTHON}: kserve needs pandas < 3 and protobuf < 7, so scripts/test installs it in a venv "
    "of its own (or set NBSERVE_KSERVE_PYTHON)"))
def test_kserve_inference_rest_client_speaks_v2_to_a_frame_model(iris_dep, iris, forest):
    _, X_test, _, _ = iris
    rows = X_test.iloc[:5]
    script = Path(__file__).parent / "_kserve_client.py"
    done = subprocess.run([str(KSERVE_PYTHON), str(script), iris_dep.url, "proto-iris",
                           json.dumps({c: rows[c].tolist() for c in rows})],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_PROXY": "*"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("NBSERVE-ANSWER:")]
    assert done.returncode == 0 and lines, done.stderr[-2000:]
    answer = json.loads(lines[-1].removeprefix("NBSERVE-ANSWER:"))

    assert answer["live"] is True and answer["ready"] is True
    assert answer["model_ready"] is True and answer["other_ready"] is False
    for form, request_id in (("json", "k-1"), ("binary", "k-2")):  # JSON data, and the binary data extension
        got = answer[form]
        assert got["id"] == request_id and got["model_name"] == "proto-iris"
        assert got["outputs"]["predict"] == forest.predict(rows).tolist()
    assert list(answer["json"]["outputs"]) == ["predict"]  # the first method unless outputs are asked for
    np.testing.assert_allclose(answer["binary"]["outputs"]["predict_proba"], forest.predict_proba(rows),
                               rtol=1e-5, atol=1e-6)
    assert answer["missing"]["status"] == 400
    assert "missing input tensors: sepal_width" in answer["missing"]["message"]
