"""PyTorch modules on tensors of any shape, and Hugging Face pipelines on texts, served over real
HTTP by real `bentoml serve` processes, answering what the notebook's own calls answer.

The transformers models are tiny BERTs built from a config with a tokenizer written here:
nothing comes from a hub (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1).
"""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads them: never the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'nbserve[torch]')")

import nbserve
from nbserve import errors
from nbserve._agent._rollout import compare_predictions
from nbserve._bundle import build_bundle, flavor_for
from nbserve._kinds import Array, kind_of


class TinyCNN(torch.nn.Module):
    """A module class of the notebook's (saved by value: the server has no tests package)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=3)
        self.drop = torch.nn.Dropout(0.5)  # on in training mode: served answers need eval mode
        self.head = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.conv(x)).flatten(1)))


def _cnn():
    torch.manual_seed(0)
    return TinyCNN(), torch.rand(16, 3, 8, 8)


def _embedder():
    torch.manual_seed(1)
    return torch.nn.EmbeddingBag(50, 8, mode="mean"), torch.randint(0, 50, (10, 12))


def test_a_tensor_sample_is_an_array_of_its_shape_and_dtype():
    _, images = _cnn()
    assert kind_of(images) is Array
    assert Array.describe(images) == {"kind": "array", "shape": [3, 8, 8], "dtype": "float32"}
    _, ids = _embedder()
    assert kind_of(ids) is Array, "a 2-D tensor was never a frame"
    assert Array.describe(ids)["dtype"] == "int64"
    assert kind_of(np.zeros((4, 5))) is None, "a 2-D numpy table stays a frame"
    linear = torch.nn.Linear(5, 1)
    flavor = flavor_for(linear)
    assert flavor.name == "pytorch" and flavor.input_kind(np.zeros((4, 5))) is Array
    rows = np.random.default_rng(0).random((4, 5))  # float64, as numpy makes them
    answered = flavor.call(linear, "__call__", rows)
    assert answered.dtype == np.float32 and answered.shape == (4, 1), "floats in the module's dtype"


def test_a_module_that_returns_a_tuple_is_refused_with_the_reason():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(errors.ModelNotServable, match="not one tensor"):  # before anything is saved
        build_bundle(Pair(), name="pair", sample=torch.zeros(3, 2))


@pytest.mark.slow
def test_a_cnn_is_served_on_image_tensors_and_a_wrong_shape_is_a_422(module_home):
    model, images = _cnn()
    model.train()  # as a notebook leaves it after training
    dep = nbserve.deploy(model, "tiny-cnn", images, progress=False)
    assert model.training, "deploying does not change the notebook's module"
    model.eval()
    with torch.no_grad():
        expected = model(images).numpy()
    served = dep.predict(images)
    assert isinstance(served, np.ndarray) and served.shape == (16, 3)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dep.predict(images[:2].numpy()), expected[:2], rtol=1e-5, atol=1e-6)
    assert dep.schema["kind"] == "array" and dep.schema["shape"] == [3, 8, 8]
    wrong = httpx.post(f"{dep.url}/predict", json={"data": images[:2, :, :5].tolist()}, trust_env=False, timeout=30)
    assert wrong.status_code == 422
    assert "expected shape (batch, 3, 8, 8), got (2, 3, 5, 8)" in wrong.json()["error"]
    assert wrong.json()["expected_shape"] == [None, 3, 8, 8]
    with pytest.raises(errors.SchemaMismatch, match=r"expected shape \(batch, 3, 8, 8\)"):
        dep.predict(torch.zeros(1, 3, 8))
    assert "parity_passed" in set(dep.events()["kind"])
    meta = dep._client.get("/v1/deployments/tiny-cnn/versions/1")["metadata"]
    assert meta["model"]["flavor"] == "pytorch"
    assert meta["model"]["runtime"]["name"] == "onnx", meta["model"]["runtime"]  # traced by torch.onnx, checked
    assert any(p.lower().startswith("torch==") for p in meta["provenance"]["packages"])


@pytest.mark.slow
def test_token_ids_reach_an_embedding_model_as_integers(module_home):
    model, ids = _embedder()
    dep = nbserve.deploy(model, "ids-embed", ids, progress=False)
    with torch.no_grad():
        expected = model(ids[:4]).numpy()
    np.testing.assert_allclose(dep.predict(ids[:4]), expected, rtol=1e-5, atol=1e-6)
    assert dep.schema["dtype"] == "int64" and dep.schema["shape"] == [12]
    floats = httpx.post(f"{dep.url}/predict", json={"data": [[0.5] * 12]}, trust_env=False, timeout=30)
    assert floats.status_code == 422 and "integers" in floats.json()["error"]
    assert "parity_passed" in set(dep.events()["kind"])
    runtime = dep.metadata()["model"]["runtime"]
    assert runtime["name"] == "onnx" and runtime["feed"] == "tensor", runtime  # int64 ids into the graph


# -- Hugging Face pipelines ------------------------------------------------------------------

TEXTS = ["great pasta", "cold soup and the food was awful", "lovely service", "slow bad service",
         "good food", "the pasta was cold"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers",
                                       reason="transformers is not installed (pip install 'nbserve[hf]')")
    words = sorted({w for text in TEXTS for w in text.split()})
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    if "vocab" in inspect.signature(transformers.BertTokenizerFast.__init__).parameters:
        tokenizer = transformers.BertTokenizerFast(vocab=vocab)  # transformers 5 ignores vocab_file=
    else:  # transformers 4
        path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
        path.write_text("\n".join(vocab) + "\n")
        tokenizer = transformers.BertTokenizerFast(vocab_file=str(path))
    assert tokenizer.unk_token_id not in tokenizer(TEXTS[0]).input_ids, "every word is in the vocabulary"
    return tokenizer


def _config(labels: list[str], vocab: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=37, id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)})


def _pipeline(task: str, model_class: str, labels: list[str], tokenizer, **kwargs):
    import transformers

    torch.manual_seed(2)
    model = getattr(transformers, model_class)(_config(labels, tokenizer.vocab_size))
    # a model built from a config is training (dropout on), as one fine-tuned in a notebook is
    # left: nbserve answers the sample in eval mode, as the server does; so do the tests
    assert model.training
    return transformers.pipeline(task, model=model, tokenizer=tokenizer, **kwargs)


def test_pipeline_answers_are_json_and_records_compare_within_tolerance(tokenizer):
    from nbserve._flavor_calls import pipeline_answers

    tagger = _pipeline("token-classification", "BertForTokenClassification", ["O", "B-FOOD", "I-FOOD"], tokenizer)
    assert flavor_for(tagger).name == "transformers"
    tagger.model.eval()
    answers = pipeline_answers(tagger, TEXTS[:2])
    assert len(answers) == 2 and all(isinstance(e["score"], float) for entities in answers for e in entities)
    near = [[{**e, "score": e["score"] * (1 + 1e-9)} for e in entities] for entities in answers]
    import pandas as pd

    inputs = pd.DataFrame({"x": [0, 1]})
    assert compare_predictions(answers, near, inputs)["status"] == "passed", "floats in records: within rtol"
    relabelled = [[{**e, "entity": "B-X"} for e in entities] for entities in answers]
    if any(answers):
        assert compare_predictions(answers, relabelled, inputs)["status"] == "failed", "labels: exact"
    with pytest.raises(errors.InvalidArgument, match="takes texts"):  # before anything is saved
        build_bundle(tagger, name="not-texts", sample=np.zeros((3, 4)))


@pytest.mark.slow
def test_a_text_classification_pipeline_is_served(module_home, tokenizer):
    clf = _pipeline("text-classification", "BertForSequenceClassification", ["NEG", "POS"], tokenizer, top_k=None)
    dep = nbserve.deploy(clf, "hf-sentiment", TEXTS, progress=False)
    assert clf.model.training, "deploying does not change the notebook's model"
    clf.model.eval()
    served = dep.predict(TEXTS[:3])
    expected = clf(TEXTS[:3])  # top_k=None: every label's score, a list per text
    assert isinstance(served, list) and len(served) == 3
    for got, want in zip(served, expected):
        assert [s["label"] for s in got] == [w["label"] for w in want]
        np.testing.assert_allclose([s["score"] for s in got], [w["score"] for w in want], rtol=1e-5)
    assert dep.schema["kind"] == "text"
    bad = httpx.post(f"{dep.url}/predict", json={"data": ["fine", 3]}, trust_env=False, timeout=30)
    assert bad.status_code == 422 and bad.json()["type_errors"][0]["path"] == "data[1]"
    assert "parity_passed" in set(dep.events()["kind"]), "labels and scores replayed before traffic"
    meta = dep._client.get("/v1/deployments/hf-sentiment/versions/1")["metadata"]
    assert meta["model"]["flavor"] == "transformers"
    pins = {p.split("==")[0].lower() for p in meta["provenance"]["packages"]}
    assert {"torch", "transformers", "tokenizers"} <= pins


@pytest.mark.slow
def test_feature_extraction_answers_one_vector_per_text(module_home, tokenizer):
    embed = _pipeline("feature-extraction", "BertModel", ["A", "B"], tokenizer)
    dep = nbserve.deploy(embed, "hf-embed", TEXTS, progress=False)
    embed.model.eval()
    served = dep.predict(TEXTS[:2])
    expected = np.stack([np.asarray(embed(t)[0]).mean(axis=0) for t in TEXTS[:2]])  # mean over tokens
    assert isinstance(served, np.ndarray) and served.shape == (2, 32)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
    assert "parity_passed" in set(dep.events()["kind"]), "vectors compared element by element"


@pytest.mark.slow
def test_token_classification_answers_entities_per_text(module_home, tokenizer):
    tagger = _pipeline("token-classification", "BertForTokenClassification", ["O", "B-FOOD", "I-FOOD"], tokenizer,
                       aggregation_strategy="simple")
    dep = nbserve.deploy(tagger, "hf-tagger", TEXTS, progress=False)
    tagger.model.eval()
    served = dep.predict(TEXTS)
    expected = tagger(TEXTS)
    assert isinstance(served, list) and len(served) == len(TEXTS)
    assert any(expected), "the tiny model tags something, so entities are compared"
    for got, want in zip(served, expected):
        assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in got] == \
            [(e["entity_group"], e["word"], e["start"], e["end"]) for e in want], "the notebook's settings served"
        np.testing.assert_allclose([e["score"] for e in got], [float(e["score"]) for e in want], rtol=1e-5)
    assert "parity_passed" in set(dep.events()["kind"])


def _generator(tokenizer):
    """A tiny GPT-2 that generates greedily, and never a special token: every answer has words."""
    import transformers

    torch.manual_seed(3)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=32, n_layer=2, n_head=2,
                                     n_positions=64, bos_token_id=tokenizer.cls_token_id, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config)
    settings = model.generation_config
    settings.max_new_tokens, settings.do_sample, settings.pad_token_id = 6, False, tokenizer.pad_token_id
    settings.suppress_tokens = list(range(5))
    return transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)


@pytest.mark.slow
def test_a_text_generation_pipeline_answers_openai_completions_and_chat(module_home, tokenizer):
    openai = pytest.importorskip("openai", reason="the openai client is not installed")
    from nbserve._protocol_openai import _chat_prompt

    generator = _generator(tokenizer)
    dep = nbserve.deploy(generator, "hf-generate", TEXTS, progress=False)
    generator.model.eval()
    assert "parity_passed" in set(dep.events()["kind"]), "generated texts replayed before traffic"
    client = openai.OpenAI(base_url=f"{dep.url}/v1", api_key="unused", max_retries=0)

    done = client.completions.create(model="hf-generate", prompt="great pasta", max_tokens=3)
    want = generator("great pasta", max_new_tokens=3, return_full_text=False)[0]["generated_text"]
    assert want and done.choices[0].text == want, "the request's max_tokens reached the pipeline"
    assert done.usage.completion_tokens == len(want.split())

    messages = [{"role": "system", "content": "lovely service"}, {"role": "user", "content": "good food"}]
    chat = client.chat.completions.create(model="hf-generate", messages=messages, max_tokens=4, temperature=0)
    want = generator(_chat_prompt(messages), max_new_tokens=4, return_full_text=False)[0]["generated_text"]
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content == want
    chunks = client.chat.completions.create(model="hf-generate", messages=messages, max_tokens=4, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want

    with pytest.raises(openai.BadRequestError, match="stop sequences"):
        client.completions.create(model="hf-generate", prompt="good food", stop=["."])
    with pytest.raises(openai.BadRequestError, match="max_tokens is an integer"):
        client.completions.create(model="hf-generate", prompt="good food", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="messages is a non-empty list"):
        client.chat.completions.create(model="hf-generate", messages=[])
    # the settings reach the pipeline checked: a request cannot hand it an argument of its choosing
    bad = httpx.post(f"{dep.url}/predict", json={"data": ["good food"]}, trust_env=False, timeout=30,
                     headers={"x-nbserve-generation": '{"device": 1}'})
    assert bad.status_code == 422 and "unknown generation setting 'device'" in bad.json()["error"]
    assert dep.predict(["good food"])[0][0]["generated_text"].startswith("good food"), "/predict as before"
