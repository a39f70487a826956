"""Bundling without a server: flavors, schema, dependencies, provenance, errors."""

from __future__ import annotations

import ast
import sqlite3
import tarfile
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest

from nbserve import errors
from nbserve._agent._registry import Registry
from nbserve._bundle import (
    build_bundle,
    flavor_for,
    infer_schema,
    sample_frame,
)
from nbserve._requirements import pinned_requirements, resolved_set
from nbserve._service_template import render_service


def test_flavors_follow_the_model_class(forest):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert flavor_for(forest).name == "sklearn"
    assert flavor_for(make_pipeline(StandardScaler(), forest)).name == "sklearn"

    class Custom:
        def predict(self, X):
            return np.zeros(len(X))

    assert flavor_for(Custom()).name == "picklable"


def test_an_object_without_predict_is_not_servable():
    from nbserve._bundle import served_methods

    weights = {"weights": [1, 2]}
    with pytest.raises(errors.ModelNotServable, match="has no predict") as info:
        served_methods(weights, flavor_for(weights))
    assert info.value.hint and "predict" in info.value.hint
    assert info.value.status == 422


def test_the_served_methods_are_checked_and_named():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from nbserve._bundle import served_methods, service_apis

    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    assert served_methods(clf, flavor_for(clf)) == ["predict", "predict_proba"]
    assert served_methods(clf, flavor_for(clf), "decision_function") == ["decision_function"]
    vectorizer = TfidfVectorizer().fit(["good pasta", "cold soup"])
    with pytest.raises(errors.ModelNotServable, match="has no predict") as info:
        served_methods(vectorizer, flavor_for(vectorizer))
    assert "method='transform'" in info.value.hint  # says what it can serve instead
    with pytest.raises(errors.InvalidArgument, match="public method"):
        served_methods(clf, flavor_for(clf), "_private")

    def price(frame):
        return frame["x"] * 2

    assert flavor_for(price).name == "function" and served_methods(price, flavor_for(price)) == ["__call__"]
    assert service_apis(["transform"]) == [("predict", "transform"), ("transform", "transform")]
    assert service_apis(["predict", "predict_proba"]) == [("predict", "predict"), ("predict_proba", "predict_proba")]
    assert service_apis(["__call__"]) == [("predict", "__call__")]


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ("not data", "cannot read a sample of type str"),
        (np.array([1.0, 2.0]), "must be 2-D"),
        (pd.DataFrame(), "no columns"),
        (pd.DataFrame({"a": []}), "no rows"),
    ],
)
def test_bad_samples_are_rejected_with_a_hint(sample, message):
    with pytest.raises(errors.InvalidArgument, match=message):
        sample_frame(sample)


def test_schema_keeps_names_and_kinds():
    frame = pd.DataFrame({
        "age": [31, 42], "income": [1.5, 2.5], "member": [True, False],
        "plan": pd.Categorical(["a", "b"]), "city": ["x", "y"],
        "joined": pd.to_datetime(["2024-01-01", "2024-02-01"]),
    })
    schema = infer_schema(*sample_frame(frame))
    kinds = {c["name"]: c["kind"] for c in schema["columns"]}
    assert kinds == {"age": "int", "income": "float", "member": "bool", "plan": "category",
                     "city": "string", "joined": "datetime"}
    assert schema["columns"][3]["categories"] == ["a", "b"]
    assert schema["positional"] is False


def test_arrays_get_positional_column_names():
    frame, positional = sample_frame(np.ones((3, 2)))
    assert positional and list(frame.columns) == ["x0", "x1"]


def test_dependencies_are_what_the_model_imports_pinned_to_installed_versions(forest):
    import sklearn

    pins = pinned_requirements(forest)
    assert f"scikit-learn=={sklearn.__version__}" in pins
    assert any(p.startswith("numpy==") for p in pins) and any(p.startswith("pandas==") for p in pins)
    # not a pip freeze: none of the kernel's unrelated packages
    names = {p.split("==")[0].lower() for p in pins}
    assert names <= {"scikit-learn", "numpy", "pandas", "scipy", "joblib", "threadpoolctl"}, names
    assert not {"jupyterlab", "matplotlib", "httpx", "bentoml"} & names


def test_notebook_classes_carry_the_modules_their_code_uses():
    import scipy.special

    class Squash:  # defined here, like a class in a notebook cell
        def predict(self, X):
            return scipy.special.expit(np.asarray(X).sum(axis=1))

    Squash.__module__ = "__main__"  # cloudpickle pickles __main__ classes by value
    pins = {p.split("==")[0].lower() for p in pinned_requirements(Squash())}
    assert "scipy" in pins


_MEMOIZED_MODULE_NAME = """
from scipy import stats  # imported first, as other code in a kernel may have done:
from scipy.spatial.distance import jensenshannon  # "scipy" then reaches the pickle memoized
import numpy as np
from nbserve._requirements import pinned_requirements

def make():
    import scipy.special

    class Squash:
        def predict(self, X):
            return scipy.special.expit(np.asarray(X).sum(axis=1))

    Squash.__module__ = "__main__"
    return Squash()

print(sorted(p.split("==")[0].lower() for p in pinned_requirements(make())))
"""


def test_a_module_name_seen_earlier_in_the_pickle_is_still_found():
    """cloudpickle refers back to a memoized string for ``subimport(name)`` when the name
    already appeared in the pickle; the scan must follow the memo (a fresh interpreter, so
    what this test process imported does not decide the outcome)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEMOIZED_MODULE_NAME], capture_output=True, text=True,
                         check=True)
    assert "scipy" in out.stdout, out.stdout


def test_a_model_that_cannot_predict_its_sample_is_refused_before_saving(forest, iris):
    _, X_test, _, _ = iris
    with pytest.raises(errors.ModelNotServable, match="predict failed on the sample"):
        build_bundle(forest, name="bad", sample=X_test.drop(columns=["petal_width"]))


def test_rendered_service_is_valid_python_with_names_quoted():
    source = render_service(
        deployment="a-b_c", model_tag="a-b_c:xyz", loader_module="bentoml.sklearn",
        apis=[("predict", "self.model.predict(frame)"), ("predict_proba", "self.model.predict_proba(frame)")],
    )
    tree = ast.parse(source)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    # only the model's own service class: the rest is nbserve_serving.py, a module of its own
    assert classes == ["ABCService"]
    assert "'a-b_c:xyz'" in source and "def predict_proba" in source


# A notebook model that counts how often it is pickled, defined as a notebook cell defines it
# (its code's globals are __main__'s, so nothing of this test module travels with it).
_NOTEBOOK = {"__name__": "__main__", "np": np}
exec(  # noqa: S102 - a fixed class, as a notebook cell would define it
    "class Counted:\n"
    "    pickled = 0\n"
    "    def predict(self, X):\n"
    "        return np.zeros(len(X))\n"
    "    def __reduce__(self):\n"
    "        type(self).pickled += 1\n"
    "        return (type(self), ())\n",
    _NOTEBOOK,
)
Counted = _NOTEBOOK["Counted"]


def test_a_model_is_pickled_once_to_find_its_code_and_packages(iris):
    """Finding the notebook code and the packages to pin share one cloudpickle (a large
    model was pickled four times in the kernel: twice for that, once more to save it)."""
    _, X_test, _, _ = iris
    Counted.pickled = 0
    bundle = build_bundle(Counted(), name="counted", sample=X_test)
    try:
        assert bundle.metadata["model"]["code_by_value"] == ["__main__"]
        assert Counted.pickled <= 3, "a plain pickle (is it notebook code?), cloudpickle, BentoML's save"
    finally:
        bundle.cleanup()


def test_build_bundle_writes_an_offline_bento(forest, iris):
    _, X_test, _, _ = iris
    steps = []
    bundle = build_bundle(forest, name="unit-iris", sample=X_test, description="unit",
                          on_step=lambda key, detail: steps.append(key))
    try:
        assert [s for s in steps] == ["runtime", "dependencies", "saving", "building"]  # compiled to ONNX
        assert bundle.archive.is_file() and bundle.flavor == "sklearn"
        with tarfile.open(bundle.archive) as archive:
            names = archive.getnames()
            requirements = archive.extractfile(
                next(n for n in names if n.endswith("env/python/requirements.txt"))
            ).read().decode().split()
        assert any(n.endswith("src/nbserve_service.py") for n in names)
        assert any(n.endswith("src/reference.parquet") for n in names)
        assert any(n.endswith("src/nbserve_bundle.json") for n in names)
        # the pins and what they need at the kernel's versions (+ bentoml itself): what an image
        # built from this Bento (bentoml containerize) and a serving environment install
        pins = pinned_requirements(forest)
        assert bundle.metadata["model"]["runtime"]["name"] == "onnx"  # runtime="auto": compiled, so it needs onnxruntime
        pins = sorted([*pins, f"onnxruntime=={version('onnxruntime')}"], key=str.lower)
        resolved = resolved_set(pins)
        assert sorted(requirements) == sorted(resolved + [f"bentoml=={bentoml_version()}"])
        for needed in ("scipy", "joblib", "threadpoolctl"):  # scikit-learn's, not pinned by the model itself
            assert f"{needed}=={version(needed)}" in requirements
        meta = bundle.metadata
        assert meta["reference_rows"] == len(X_test)
        assert meta["provenance"]["packages"] == pins
        assert meta["provenance"]["resolved"] == resolved
        assert meta["sample_row"] == X_test.iloc[0].to_dict()
    finally:
        bundle.cleanup()
    assert not bundle.archive.exists()


def test_the_resolved_set_follows_installed_requirements_and_leaves_foreign_pins_to_the_installer():
    sklearn = version("scikit-learn")
    resolved = resolved_set([f"scikit-learn=={sklearn}"])
    assert f"scikit-learn=={sklearn}" in resolved and f"numpy=={version('numpy')}" in resolved
    assert not any(pin.lower().startswith(("bentoml==", "nbserve==")) for pin in resolved)
    # a version the kernel does not have: kept as asked, its requirements left to uv
    assert resolved_set(["scikit-learn==1.5.2"]) == ["scikit-learn==1.5.2"]
    # when a dependency's version is pinned otherwise, that pin wins and is not followed
    other = resolved_set([f"scikit-learn=={sklearn}", "scipy==1.0.0"])
    assert "scipy==1.0.0" in other and f"scipy=={version('scipy')}" not in other
    assert resolved_set(["not a pin", "no-such-dist==1"]) == ["no-such-dist==1"]


def bentoml_version() -> str:
    from importlib.metadata import version

    return version("bentoml")


def test_registry_versions_are_immutable_and_events_append_only(tmp_path):
    registry = Registry(tmp_path / "r.sqlite")
    registry.create_deployment("iris", 40000)
    v1 = registry.add_version("iris", "iris:a", {"k": 1}, "me")
    v2 = registry.add_version("iris", "iris:b", {"k": 2}, "me")
    assert (v1.number, v2.number) == (1, 2)
    registry.set_version_status("iris", 1, "live")  # runtime state may change...
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):  # ...what was deployed may not
        registry._db.execute("UPDATE versions SET bento_tag = 'x' WHERE number = 1")
    event = registry.add_event("deployed", "v1 is live", deployment="iris", version=1)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        registry._db.execute("DELETE FROM events WHERE id = ?", (event.id,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        registry._db.execute("UPDATE events SET message = 'x'")
    registry.close()
    reopened = Registry(tmp_path / "r.sqlite")  # survives a restart
    assert [v.number for v in reopened.list_versions("iris")] == [1, 2]
    assert reopened.get_version("iris", 1).status == "live"


def test_errors_round_trip_through_json():
    err = errors.DeploymentNotFound("no deployment named 'x'", hint="deploy first", known=["a"])
    again = errors.error_from_payload(err.status, err.to_payload())
    assert type(again) is errors.DeploymentNotFound and again.status == 404
    assert again.message == err.message and again.hint == err.hint and again.details == {"known": ["a"]}
    odd = errors.error_from_payload(502, "<html>bad gateway</html>")
    assert isinstance(odd, errors.AgentError)
    assert all(issubclass(getattr(errors, name), errors.NbserveError)
               for name in errors.__all__ if name[0].isupper() and name != "NbserveWarning")
    assert issubclass(errors.NbserveWarning, UserWarning)


def _service_helpers(columns: list[dict]) -> dict:
    """What every generated service uses (request check, batcher), configured for a schema as
    a Bento's bundle file would, without bentoml serving anything."""
    from nbserve import _serving

    _serving.configure({"schema": {"columns": columns}})
    return vars(_serving)


def test_the_serving_module_names_the_bento_files_as_the_builder_does():
    from nbserve import _serving, _service_template

    assert (_serving.BUNDLE_FILE, _serving.BATCHING_ENV, _serving.VERSION_ENV) == (
        _service_template.BUNDLE_FILE, _service_template.BATCHING_ENV, _service_template.VERSION_ENV)
    assert f"from {_service_template.SERVING_MODULE} import" in render_service(
        deployment="c", model_tag="c:1", loader_module="bentoml.sklearn", apis=[("predict", "x")])


def _conform_for(columns: list[dict]):
    return _service_helpers(columns)["_conform"]


def test_request_check_fast_path_and_conversions_agree():
    conform = _conform_for([{"name": "a", "kind": "float", "dtype": "float64"},
                            {"name": "n", "kind": "int", "dtype": "int64"},
                            {"name": "b", "kind": "bool", "dtype": "bool"}])
    exact = pd.DataFrame({"a": [1.5, None], "n": [2, 3], "b": [True, False]})
    assert conform(exact) is exact  # already the deploy-time dtypes: passed through, not copied
    reordered = conform(exact[["b", "n", "a"]])
    assert list(reordered.columns) == ["a", "n", "b"]
    ints = conform(pd.DataFrame({"a": [1, 2], "n": [2.0, 3.0], "b": [True, False]}))  # JSON 1 / 2.0
    assert [str(d) for d in ints.dtypes] == ["float64", "int64", "bool"] and ints["n"].tolist() == [2, 3]
    fractional = conform(pd.DataFrame({"a": [1.0], "n": [2.5], "b": [True]}))
    assert fractional.status_code == 422 and b"type_errors" in fractional.body
    text = conform(pd.DataFrame({"a": ["x"], "n": [1], "b": [True]}))
    assert text.status_code == 422 and b'"a"' in text.body


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])  # float32: pandas' path, always
def test_records_of_a_uniform_schema_make_the_frame_pandas_would(dtype):
    """The in-process path builds a uniform schema's records straight into an array: after
    the request check it must be the frame (or the 422) BentoML's pd.DataFrame(records) gives."""
    kind = "int" if dtype == "int64" else "float"
    helpers = _service_helpers([{"name": n, "kind": kind, "dtype": dtype} for n in ("a", "b", "c")])
    records_frame, conform = helpers["_records_frame"], helpers["_conform"]
    nan = float("nan")
    cases = [
        [{"a": 1.5, "b": 2.0, "c": -3.25}], [{"c": 3, "a": 1, "b": 2}, {"b": 5, "c": 6, "a": 4}],
        [{"a": 1.0, "b": 2, "c": nan}], [{"a": 1.0, "b": 2.0}], [{"a": 1, "b": 2, "c": 3, "d": 4}],
        [{"a": True, "b": 2.0, "c": 3.0}], [{"a": "1", "b": 2.0, "c": 3.0}], [{"a": None, "b": 2.0, "c": 3.0}],
        [{"a": 2 ** 70, "b": 1, "c": 1}], [{"a": 0.5, "b": 1, "c": 1}], [[1.0, 2.0, 3.0]], [],
    ]
    for records in cases:
        want = conform(pd.DataFrame(records))
        have = conform(records_frame(records))
        if isinstance(want, pd.DataFrame):
            assert isinstance(have, pd.DataFrame), (records, have.body)
            pd.testing.assert_frame_equal(have, want, check_index_type=False)
        else:
            assert not isinstance(have, pd.DataFrame) and (have.status_code, have.body) == (
                want.status_code, want.body), records
    fast = records_frame([{"a": 1, "b": 2, "c": 3}])
    assert fast.to_numpy().dtype == ("int64" if dtype == "float32" else dtype)  # the array path, or pandas' ints


def test_a_float32_schema_gets_float32_columns_with_or_without_missing_values():
    """JSON parses numbers to float64: the request check casts them to the sample's float32,
    also where a value is missing (the model sees what the kernel's sample had)."""
    helpers = _service_helpers([{"name": n, "kind": "float", "dtype": "float32"} for n in ("a", "b")])
    conform = helpers["_conform"]
    for frame in (pd.DataFrame({"a": [1.5, 2.0], "b": [3.0, 4.0]}), pd.DataFrame({"a": [1.5, None], "b": [3, 4]})):
        conformed = conform(frame)
        assert [str(d) for d in conformed.dtypes] == ["float32", "float32"], frame


def test_deploy_progress_shows_a_warning_after_live_without_failing(capsys):
    from nbserve._display import Progress

    show = Progress("Deploying churn")
    show.step("starting")
    show.step("live", "http://127.0.0.1:1 (v1)")
    show.warn("v1: a batch of 64 rows takes 80.0 ms, over max_latency_ms=20")
    show.finish(True)
    html_text = show.html()
    assert "&#9888; Warning: <code>v1: a batch of 64 rows" in html_text
    assert html_text.count("&#10004;") == 2 and "&#10008;" not in html_text  # starting and live done
    assert "  warning: v1: a batch of 64 rows" in capsys.readouterr().err


def test_batcher_merges_arrays_and_frames_and_isolates_a_failing_request():
    """The generated service's batch step on its own: rows merged, answers split back in order."""
    namespace = _service_helpers([])
    calls = []

    def double(rows):
        calls.append(len(rows))
        if (np.asarray(rows) < 0).any():
            raise ValueError("negative")
        return np.asarray(rows)[:, 0] * 2

    batcher = namespace["_Batcher"](double, namespace["_jsonable"], max_batch_size=64, max_latency_ms=100)
    parts = batcher._run([np.array([[1.0], [2.0]]), np.array([[3.0]])])  # positional requests: ndarrays
    assert [p.tolist() for p in parts] == [[2.0, 4.0], [6.0]] and calls == [3]
    assert [p.batch_rows for p in parts] == [3, 3]
    frames = [pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": [-1.0]}), pd.DataFrame({"x": [5.0]})]
    calls.clear()
    parts = batcher._run(frames)  # the merged call fails: each request is answered alone
    assert calls == [3, 1, 1, 1]
    assert parts[0].tolist() == [2.0] and isinstance(parts[1], ValueError) and parts[2].tolist() == [10.0]
    with pytest.raises(ValueError):
        batcher._run([pd.DataFrame({"x": [-1.0]})])  # a batch of one fails as itself

    # Other kinds of input: lists (texts, records, images) joined, JSON answers split back.
    shout = namespace["_Batcher"](lambda texts: [{"text": t.upper()} for t in texts], namespace["_plain"],
                                  max_batch_size=64, max_latency_ms=100)
    parts = shout._run([["a", "b"], ["c"]])
    assert [list(p) for p in parts] == [[{"text": "A"}, {"text": "B"}], [{"text": "C"}]]
    assert [p.batch_rows for p in parts] == [3, 3]
    texts = shout._run([pd.Series(["x"]), pd.Series(["y", "z"])])  # texts kept as the sample's Series
    assert [list(p) for p in texts] == [[{"text": "X"}], [{"text": "Y"}, {"text": "Z"}]]


def test_names_bentoml_reads_as_service_settings_are_refused_before_a_build():
    """A deployment named "workers" failed deep in `bentoml build` with a schema error: BentoML
    reads a service of that name as its own `workers` setting."""
    from nbserve._names import check_name
    from nbserve.errors import InvalidArgument

    for name in ("workers", "traffic", "logging", "resources"):
        with pytest.raises(InvalidArgument, match="BentoML reads a service of that name") as caught:
            check_name(name)
        assert f"{name}-model" in caught.value.hint
    assert check_name("workers-model") == "workers-model"


def test_parity_compares_a_vector_per_row_element_by_element():
    from nbserve._agent._rollout import compare_predictions

    inputs = pd.DataFrame({"x": [1, 2]})
    same = compare_predictions([[0.1, 0.9], [0.5, 0.5]], [[0.1 + 1e-9, 0.9], [0.5, 0.5]], inputs)
    assert same["status"] == "passed"
    other = compare_predictions([[0.1, 0.9], [0.5, 0.5]], [[0.1, 0.9], [0.5, 0.6]], inputs)
    assert other["status"] == "failed" and other["examples"][0]["row"] == 1
    assert compare_predictions([[1, 2]], [[1, 2, 3]], inputs.head(1))["status"] == "failed"
    # a model's NaN comes back as JSON's null (BentoML writes it so): the same answer, not a mismatch
    nan = float("nan")
    assert compare_predictions([[nan, 0.5], nan], [[None, 0.5], None], inputs)["status"] == "passed"
    assert compare_predictions([[nan, 0.5]], [[0.0, 0.5]], inputs.head(1))["status"] == "failed"
