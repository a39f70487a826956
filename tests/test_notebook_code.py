"""Code that lives with the notebook is saved with the model.

A Pipeline holding a transformer class defined in a notebook cell failed when its server
started (``AttributeError: Can't get attribute 'Clip' on <module '_bentoml_impl.worker.service'>``):
framework savers pickle classes by reference, and a server is not the notebook. Classes and
functions from ``__main__`` or from ``.py`` files beside the notebook are now saved by value.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

import nbserve
from nbserve._requirements import notebook_code

pytestmark = pytest.mark.slow

FEATURIZE = '''
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Ratios(BaseEstimator, TransformerMixin):
    """Adds petal and sepal length/width ratios: code from a module beside the notebook."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        return np.column_stack([X, X[:, 0] / X[:, 1], X[:, 2] / (X[:, 3] + 0.1)])
'''

NOTEBOOK_CELLS = [
    "import json, numpy as np, nbserve\n"
    "from sklearn.base import BaseEstimator, TransformerMixin\n"
    "from sklearn.datasets import load_iris\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.pipeline import make_pipeline\n"
    "from featurize import Ratios",
    "class Clip(BaseEstimator, TransformerMixin):\n"
    "    def __init__(self, hi=6.0):\n"
    "        self.hi = hi\n"
    "    def fit(self, X, y=None):\n"
    "        return self\n"
    "    def transform(self, X):\n"
    "        return np.clip(X, 0, self.hi)",
    "X, y = load_iris(return_X_y=True, as_frame=True)\n"
    "X.columns = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']\n"
    "model = make_pipeline(Clip(), Ratios(), LogisticRegression(max_iter=1000)).fit(X, y)\n"
    "dep = nbserve.deploy(model, 'nb-code', X.sample(40, random_state=0), progress=False)\n"
    "json.dump({'rows': X.to_dict('records'), 'expected': model.predict(X).tolist()},\n"
    "          open('expected.json', 'w'))",
]


def test_notebook_code_names_main_and_modules_beside_the_notebook(tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (tmp_path / "featurize_unit.py").write_text(FEATURIZE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import featurize_unit

    class Local(featurize_unit.Ratios):
        pass

    Local.__module__ = "__main__"
    assert notebook_code(make_pipeline(StandardScaler(), LogisticRegression())) == []
    assert notebook_code(make_pipeline(featurize_unit.Ratios(), LogisticRegression())) == ["featurize_unit"]
    assert notebook_code(make_pipeline(Local(), LogisticRegression())) == ["__main__", "featurize_unit"]
    assert notebook_code(lambda frame: frame) == ["__main__"]  # only cloudpickle can take it
    sys.modules.pop("featurize_unit", None)


def test_a_notebook_defined_transformer_serves_after_its_kernel_and_module_are_gone(fresh_home, tmp_path):
    import nbformat
    import papermill

    (tmp_path / "featurize.py").write_text(FEATURIZE)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in NOTEBOOK_CELLS]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "train.ipynb")
    papermill.execute_notebook(str(tmp_path / "train.ipynb"), str(tmp_path / "train.out.ipynb"),
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    # the kernel is gone, and so is the module file: the server needs neither
    (tmp_path / "featurize.py").unlink()
    expected = json.loads((tmp_path / "expected.json").read_text())

    dep = nbserve.get("nb-code")
    assert dep.status == "serving"
    import pandas as pd

    served = dep.predict(pd.DataFrame(expected["rows"]))
    np.testing.assert_array_equal(served, np.asarray(expected["expected"]))
    meta = dep._client.get("/v1/deployments/nb-code/versions/1")
    assert set(meta["metadata"]["model"]["code_by_value"]) == {"__main__", "featurize"}
    assert meta["metadata"]["model"]["flavor"] == "picklable"
    packages = " ".join(meta["metadata"]["provenance"]["packages"])
    assert "scikit-learn==" in packages and "numpy==" in packages  # the code's own imports, pinned
