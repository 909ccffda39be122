"""scikit-learn estimators over a netc spec: `NetcClassifier` and `NetcRegressor`.

    from netc.sklearn import NetcClassifier
    clf = NetcClassifier("specs/my.net", epochs=20, lr=0.05)
    cross_val_score(make_pipeline(StandardScaler(), clf), X, y)
    GridSearchCV(clf, {"lr": [0.01, 0.1], "batch": [16, 64]}).fit(X, y)

`spec` is a .net path, spec text, or a function `(n_features, n_outputs) ->
spec text` (n_outputs: the number of classes, or of target columns) for one
spec that serves data of any width. Every other keyword is a train-block key
(`epochs`, `lr`, `batch`, `seed`, `dtype`, `method`, ...) or `device`, set over
the spec's own values; they are the estimator's parameters, so `get_params`,
`set_params`, `clone` and searches see them. `fit` compiles the spec afresh
(same seed, same result) and trains on the arrays; the fitted netc.Model is
`model_`, its per-epoch metrics `history_`.

The only module of netc that imports scikit-learn (a test dependency, not an
install requirement of netc).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d
except ImportError as e:  # pragma: no cover - exercised where scikit-learn is absent
    raise ImportError("netc.sklearn needs scikit-learn, which netc does not install: "
                      "pip install scikit-learn") from e
try:
    from sklearn.utils.validation import validate_data  # scikit-learn >= 1.6
except ImportError:  # pragma: no cover - older scikit-learn
    def validate_data(est, X="no_validation", y="no_validation", reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)

from netc.compiler.errors import DataError, did_you_mean
from netc.runtime.config import TrainConfig

OVERRIDES = tuple(sorted(set(TrainConfig.model_fields) - {"groups"})) + ("device",)


class _NetcEstimator(BaseEstimator):
    """What the classifier and the regressor share: the parameters (`spec` and the
    overrides), compiling and training the spec, predicting through model_."""

    def __init__(self, spec=None, **overrides):
        self.spec = spec  # checked by fit, as scikit-learn asks (init and set_params never raise)
        self._overrides = overrides

    # -- parameters: spec plus whatever overrides were given ------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        return {"spec": self.spec, **self._overrides}

    def set_params(self, **params):
        if "spec" in params:
            self.spec = params.pop("spec")
        self._overrides = {**self._overrides, **params}
        return self

    # -- fitting ------------------------------------------------------------------------------------
    def _text(self, n_features: int, n_outputs: int) -> tuple[str, str]:
        """(spec text, file name) for data of this width."""
        from netc.model import read_spec
        if self.spec is None:
            raise ValueError(f"{type(self).__name__}: give a spec (a .net path, spec text, or a function "
                             f"(n_features, n_outputs) -> spec text)")
        if callable(self.spec):
            return self.spec(n_features, n_outputs), "<spec>"
        return read_spec(self.spec)

    def _fit_model(self, X, t, n_outputs: int):
        from netc.model import Model
        _check_keys(type(self).__name__, self._overrides)
        overrides = dict(self._overrides)
        device = overrides.pop("device", "cpu")
        model = Model(*self._text(X.shape[1], n_outputs), train=overrides or None, device=device)
        classes = model.head.classes
        if isinstance(self, ClassifierMixin) and classes is not None and n_outputs > classes:
            raise ValueError(f"{type(self).__name__}: y has {n_outputs} classes, but the spec's target is "
                             f"class({classes})")
        try:
            model.fit(X, t, progress=False)  # silent, as scikit-learn's estimators are
        except DataError as e:  # the data does not fit the spec (its declared width): scikit-learn's ValueError
            raise ValueError(f"{type(self).__name__}: {e}") from e
        self.model_ = model
        self.history_ = self.model_.history_
        return self

    # -- pickling (joblib, n_jobs): the fitted model travels as its saved .npz, never as code -------
    def __getstate__(self):
        state = super().__getstate__()
        if "model_" in state:
            state = {**state, "model_": _saved(state["model_"])}
        return state

    def __setstate__(self, state):
        if isinstance(state.get("model_"), bytes):
            state = {**state, "model_": _loaded(state["model_"])}
        super().__setstate__(state)

    def _raw(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.model_.predict_raw(X)


class NetcClassifier(ClassifierMixin, _NetcEstimator):
    """A scikit-learn classifier trained by a netc spec with a class(n) target. Labels
    may be any values: `classes_` holds them sorted, the spec sees 0..k-1 (k <= n; with
    k < n only the first k outputs are read). `score` is accuracy."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, t = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__}: y has 1 class ({self.classes_[0]!r}); "
                             f"a classifier needs at least 2 classes")
        return self._fit_model(X, t.astype(np.int64), len(self.classes_))

    def _codes(self, X) -> np.ndarray:
        head, k = self.model_.head, len(self.classes_)
        y = self._raw(X)
        if head.width == 1 or head.width == k:
            from netc.runtime.evaluation import labels
            return labels(head, y)
        return np.argmax(y[:, :k], axis=1)  # the spec has more classes than the data

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.classes_[self._codes(X)]

    def _has_proba(self) -> bool:
        return not hasattr(self, "model_") or self.model_.head.link is not None

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        p = self.model_.predict_proba(X)[:, :len(self.classes_)]
        return p / p.sum(axis=1, keepdims=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


class NetcRegressor(RegressorMixin, _NetcEstimator):
    """A scikit-learn regressor trained by a netc spec with a real [m] target; y of
    shape [n] gives predictions of shape [n]. `score` is R^2."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=[np.float64, np.float32])
        self._1d = y.ndim == 1
        t = y.reshape(len(y), -1).astype(np.float64)
        return self._fit_model(X, t, t.shape[1])

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        y = self.model_.predict(X).astype(np.float64, copy=False)  # in y's units (normalize_target)
        return y.reshape(-1) if self._1d and y.ndim == 2 and y.shape[1] == 1 else y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


def _saved(model) -> bytes:
    """The bytes of `model.save`'s params.npz (plain arrays and JSON)."""
    with tempfile.TemporaryDirectory() as d:
        return Path(model.save(Path(d) / "m")).read_bytes()


def _loaded(blob: bytes):
    import netc
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "params.npz").write_bytes(blob)
        return netc.load(d)


def _check_keys(owner: str, overrides: dict) -> None:
    for k in overrides:
        if k not in OVERRIDES:
            hint = did_you_mean(k, OVERRIDES)
            raise ValueError(f"{owner}: unknown parameter {k!r}; the parameters are spec and the train-block "
                             f"keys {', '.join(OVERRIDES)}" + (f" ({hint})" if hint else ""))
