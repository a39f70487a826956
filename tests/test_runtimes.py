"""The compiled runtime: real skl2onnx, real onnxruntime in the kernel and in real bentoml serve
processes, the agent's real parity replay.

A scikit-learn forest compiles and serves from ONNX with the forest's labels and its
probabilities within the documented tolerance; a text pipeline whose compiled graph lowercases
text differently (onnxruntime's StringNormalizer leaves "É" as it is, Python lowercases it) is
caught by the replay of the reference sample and served natively, with a ``runtime_fallback``
event naming the differing row; ``runtime="onnx"`` refuses it instead, and the version that was
serving keeps serving; ``runtime="native"`` serves the native model kept in every Bento.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import nbserve
from nbserve import errors
from nbserve._runtimes import TOLERANCE, choose_runtime

pytest.importorskip("skl2onnx", reason="the compiled runtime needs nbserve[fast] (skl2onnx)")
pytest.importorskip("onnxruntime", reason="the compiled runtime needs nbserve[fast] (onnxruntime)")

ASCII = ["good pasta", "cold soup", "great wine", "awful service", "lovely dessert", "rude staff"] * 3
ACCENTED = ["ÉCOLE bien", "école mal", "Straße gut", "strasse schlecht", "ÜBER alles", "über nichts"] * 3
LABELS = [1, 0, 1, 0, 1, 0] * 3


def _text_model(texts):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, LABELS)


def _answered(model, inputs):
    return {"predict": model.predict(inputs), "predict_proba": model.predict_proba(inputs)}


# -- the choice, in the kernel -------------------------------------------------------------


def test_a_forest_compiles_with_float32_input_as_scikit_learn_compares_its_thresholds(iris, forest):
    _, X_test, _, _ = iris
    chosen = choose_runtime("auto", forest, flavor="sklearn", kind="frame", inputs=X_test,
                            answered=_answered(forest, X_test))
    assert chosen.name == "onnx", chosen.reason
    assert chosen.spec["feed"] == "tensor" and chosen.spec["dtype"] == "float32"
    assert chosen.describe()["tolerance"] == TOLERANCE


def test_a_text_pipeline_compiles_and_one_that_answers_otherwise_falls_back_naming_the_row():
    plain = _text_model(ASCII)
    chosen = choose_runtime("auto", plain, flavor="sklearn", kind="text", inputs=ASCII, answered=_answered(plain, ASCII))
    assert chosen.name == "onnx" and chosen.spec["feed"] == "strings", chosen.reason

    accented = _text_model(ACCENTED)
    chosen = choose_runtime("auto", accented, flavor="sklearn", kind="text", inputs=ACCENTED,
                            answered=_answered(accented, ACCENTED))
    assert chosen.name == "native" and chosen.tried
    assert "differs on" in chosen.reason and "row 0" in chosen.reason, chosen.reason
    assert chosen.describe()["fallback"] == chosen.reason


@pytest.mark.parametrize("objective", ["multiclass", "binary", "regression"])
def test_a_lightgbm_booster_compiles_for_each_objective(objective):
    lgb = pytest.importorskip("lightgbm", reason="LightGBM is in the test extra")
    pytest.importorskip("onnxmltools", reason="LightGBM Boosters compile through nbserve[fast] (onnxmltools)")
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    loader, params = {"multiclass": (load_wine, {"num_class": 3}), "binary": (load_breast_cancer, {}),
                      "regression": (load_diabetes, {})}[objective]
    X, y = loader(return_X_y=True, as_frame=True)
    booster = lgb.train({"objective": objective, **params, "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y),
                        num_boost_round=20)
    chosen = choose_runtime("auto", booster, flavor="lightgbm", kind="frame", inputs=X,
                            answered={"predict": booster.predict(X)})
    assert chosen.name == "onnx", chosen.reason
    assert chosen.details["converter"].startswith("onnxmltools")


def _lightgbm_estimators():
    lgb = pytest.importorskip("lightgbm", reason="LightGBM is in the test extra")
    pytest.importorskip("onnxmltools", reason="LightGBM's estimators compile through nbserve[fast] (onnxmltools)")
    from sklearn.datasets import load_diabetes, load_wine
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    params = {"n_estimators": 20, "verbose": -1, "n_jobs": 1}
    wine, diabetes = load_wine(return_X_y=True, as_frame=True), load_diabetes(return_X_y=True, as_frame=True)
    return {"classifier": (lgb.LGBMClassifier(**params).fit(*wine), wine[0]),
            "regressor": (lgb.LGBMRegressor(**params).fit(*diabetes), diabetes[0]),
            "pipeline": (make_pipeline(StandardScaler(), lgb.LGBMClassifier(**params)).fit(*wine), wine[0])}


@pytest.mark.parametrize("shape", ["classifier", "regressor", "pipeline"])
def test_lightgbm_estimators_alone_or_in_a_pipeline_compile_through_skl2onnx(shape):
    """LGBMClassifier and LGBMRegressor are scikit-learn estimators (the sklearn flavor):
    skl2onnx converts them, alone or as a pipeline's step, with onnxmltools' converters."""
    model, X = _lightgbm_estimators()[shape]
    chosen = _chosen_as_deploy_would(model, X, flavor="sklearn")
    assert chosen.name == "onnx", chosen.reason
    assert chosen.details["converter"].startswith("skl2onnx")


def _chosen_as_deploy_would(model, X, *, flavor):
    """The runtime deploy picks: the model's flavor checked, its methods' answers on X replayed."""
    from nbserve._flavors import flavor_for

    found = flavor_for(model)
    assert found.name == flavor
    methods = ["predict", "predict_proba"] if hasattr(model, "predict_proba") else ["predict"]
    answered = {m: np.asarray(found.call(model, m, X)) for m in methods}
    return choose_runtime("auto", model, flavor=flavor, kind="frame", inputs=X, answered=answered)


def _xgboost_models():
    xgb = pytest.importorskip("xgboost", reason="XGBoost is in the test extra (xgboost-cpu)")
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    params = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1}
    wine, cancer, diabetes = (load(return_X_y=True, as_frame=True) for load in
                              (load_wine, load_breast_cancer, load_diabetes))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(*cancer), num_boost_round=20)
    return {"multiclass": (xgb.XGBClassifier(**params).fit(*wine), wine[0]),
            "binary": (xgb.XGBClassifier(**params).fit(*cancer), cancer[0]),
            "regression": (xgb.XGBRegressor(**params).fit(*diabetes), diabetes[0]),
            "booster": (booster, cancer[0])}


@pytest.mark.parametrize("shape", ["multiclass", "binary", "regression", "booster"])
def test_an_xgboost_model_compiles_for_each_objective(shape):
    pytest.importorskip("onnxmltools", reason="XGBoost models compile through nbserve[fast] (onnxmltools)")
    model, X = _xgboost_models()[shape]
    chosen = _chosen_as_deploy_would(model, X, flavor="xgboost")
    assert chosen.name == "onnx", chosen.reason
    assert chosen.details["converter"].startswith("onnxmltools")


def test_what_nothing_converts_is_native_without_a_fallback(iris, forest):
    _, X_test, _, _ = iris
    chosen = choose_runtime("auto", forest, flavor="picklable", kind="frame", inputs=X_test,
                            answered=_answered(forest, X_test))
    assert chosen.name == "native" and not chosen.tried and "picklable" in chosen.reason
    assert "fallback" not in chosen.describe() and chosen.describe()["native_because"] == chosen.reason
    chosen = choose_runtime("auto", forest, flavor="sklearn", kind="frame", inputs=X_test,
                            answered={"apply": forest.apply(X_test)})
    assert chosen.name == "native" and "apply has no ONNX equivalent" in chosen.reason
    assert choose_runtime("native", forest, flavor="sklearn", kind="frame", inputs=X_test,
                          answered=_answered(forest, X_test)).describe() == {"name": "native", "asked": "native"}


def test_without_the_fast_extra_auto_serves_natively_and_says_how_to_get_it_once(iris, forest, monkeypatch):
    from nbserve import _bundle
    from nbserve._flavors import flavor_named

    _, X_test, _, _ = iris
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    monkeypatch.setitem(_bundle._SAID, "missing_extra", False)
    steps = []
    for _ in range(2):
        chosen = _bundle._runtime_for("auto", forest, flavor_named("sklearn"), {}, X_test,
                                      _answered(forest, X_test), lambda step, detail: steps.append(detail))
        assert chosen.name == "native" and not chosen.tried and "fallback" not in chosen.describe()
    assert steps == ["serving the model itself: onnxruntime not installed; for the compiled runtime: "
                     "pip install 'nbserve[fast]'"]
    with pytest.raises(errors.ModelNotServable, match="runtime='onnx': onnxruntime not installed"):
        _bundle._runtime_for("onnx", forest, flavor_named("sklearn"), {}, X_test, _answered(forest, X_test),
                             lambda step, detail: None)


def test_a_wrong_runtime_is_refused_before_anything_is_built(fresh_home, iris, forest):
    from nbserve._local import find_agent

    _, X_test, _, _ = iris
    with pytest.raises(errors.InvalidArgument, match="runtime must be one of auto, onnx, native"):
        nbserve.deploy(forest, "never", X_test, runtime="tensorrt", progress=False)
    assert find_agent(fresh_home) is None, "refused before connecting: no agent was started for it"


# -- served, through real servers ---------------------------------------------------------


@pytest.fixture(scope="module")
def wine():
    from sklearn.datasets import load_wine
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_wine(return_X_y=True, as_frame=True)
    return X, RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)


@pytest.mark.slow
def test_a_compiled_forest_serves_the_notebook_answers_and_says_which_runtime(module_home, wine):
    X, forest = wine
    dep = nbserve.deploy(forest, "wine-fast", X, progress=False)
    runtime = dep.metadata()["model"]["runtime"]
    assert runtime["name"] == "onnx" and runtime["asked"] == "auto", runtime
    np.testing.assert_array_equal(dep.predict(X), forest.predict(X))
    proba = dep.predict(X, endpoint="predict_proba")
    np.testing.assert_allclose(proba, forest.predict_proba(X), **TOLERANCE)
    assert proba.max() <= 1.0, "float32 sums clipped: never a probability above 1"
    events = dep.events()
    passed = [d for k, d in zip(events["kind"], events["data"]) if k == "parity_passed"]
    assert passed and passed[-1]["rtol"] == TOLERANCE["rtol"], "the replay used the version's tolerance"
    assert dep.history()["runtime"].tolist() == ["onnx"]
    assert "onnx (compiled, parity-checked)" in dep.model_card().to_markdown()

    # the native model is in the same kind of Bento: a redeploy serves it, no retraining
    dep = nbserve.deploy(forest, "wine-fast", X, progress=False, runtime="native")
    assert dep.metadata()["model"]["runtime"] == {"name": "native", "asked": "native"}
    np.testing.assert_array_equal(dep.predict(X, endpoint="predict_proba"), forest.predict_proba(X))
    assert dep.history()["runtime"].tolist() == ["onnx", "native"]


@pytest.mark.slow
def test_a_compiled_model_that_answers_otherwise_serves_natively_and_onnx_refuses_it(module_home):
    model = _text_model(ACCENTED)
    dep = nbserve.deploy(model, "accents", ACCENTED, progress=False)
    runtime = dep.metadata()["model"]["runtime"]
    assert runtime["name"] == "native" and "differs on" in runtime["fallback"], runtime
    events = dep.events()
    fallback = events[events["kind"] == "runtime_fallback"]
    assert len(fallback) == 1 and "serves the native model" in fallback["message"].iloc[0]
    assert dep.predict(ACCENTED).tolist() == model.predict(ACCENTED).tolist()

    with pytest.raises(errors.ModelNotServable, match="runtime='onnx': the compiled predict"):
        nbserve.deploy(model, "accents", ACCENTED, progress=False, runtime="onnx")
    dep = nbserve.get("accents")
    assert dep.version == 1 and dep.status == "serving"  # v1 keeps serving
    assert dep.predict(pd.Series(ACCENTED[:2])).tolist() == model.predict(ACCENTED[:2]).tolist()


@pytest.mark.slow
def test_a_compiled_lightgbm_booster_serves_its_probabilities(module_home):
    lgb = pytest.importorskip("lightgbm", reason="LightGBM is in the test extra")
    pytest.importorskip("onnxmltools", reason="LightGBM Boosters compile through nbserve[fast] (onnxmltools)")
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y),
                        num_boost_round=20)
    dep = nbserve.deploy(booster, "cancer-fast", X, progress=False)
    assert dep.metadata()["model"]["runtime"]["name"] == "onnx"
    np.testing.assert_allclose(dep.predict(X.head(50)), booster.predict(X.head(50)), **TOLERANCE)


@pytest.mark.slow
def test_xgboost_models_deploy_compiled_and_a_booster_through_a_dmatrix(module_home):
    pytest.importorskip("onnxmltools", reason="XGBoost models compile through nbserve[fast] (onnxmltools)")
    models = _xgboost_models()
    classifier, X = models["multiclass"]
    dep = nbserve.deploy(classifier, "wine-xgb", X, progress=False)
    assert dep.metadata()["model"]["runtime"]["name"] == "onnx"
    assert dep.predict(X.head(30)).tolist() == classifier.predict(X.head(30)).tolist()

    booster, X = models["booster"]  # a Booster answers a DMatrix, which nbserve builds from the frame
    dep = nbserve.deploy(booster, "cancer-xgb", X, progress=False, runtime="native")
    assert dep.metadata()["model"]["runtime"]["name"] == "native"
    import xgboost
    np.testing.assert_allclose(dep.predict(X.head(30)), booster.predict(xgboost.DMatrix(X.head(30))), **TOLERANCE)


@pytest.mark.slow
def test_a_pipeline_ending_in_an_lgbm_classifier_deploys_compiled(module_home):
    model, X = _lightgbm_estimators()["pipeline"]
    dep = nbserve.deploy(model, "wine-lgbm", X, progress=False)
    assert dep.metadata()["model"]["runtime"]["name"] == "onnx"
    assert dep.predict(X.head(30)).tolist() == model.predict(X.head(30)).tolist()
