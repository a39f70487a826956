"""Save bench/runtime.py's wine forest as an MLflow model, for `mlflow models serve` (run by the
Python of a venv with mlflow and the same scikit-learn: the forest is fitted again there, the same
data and random_state giving the same trees).

    .venv-mlflow/bin/python bench/_mlflow_wine.py OUT_DIR
"""

import sys

import mlflow.sklearn
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier

X, y = load_wine(return_X_y=True, as_frame=True)
forest = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
# pickled, as BentoML saves it (mlflow 3 defaults to skops, which refuses a tree on load)
mlflow.sklearn.save_model(forest, sys.argv[1], input_example=X.head(2),
                          serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
print(forest.predict(X.head(1)).tolist())
