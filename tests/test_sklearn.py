"""netc.sklearn: NetcClassifier and NetcRegressor as scikit-learn estimators, checked
by scikit-learn's own estimator checks and used in Pipeline, cross_val_score,
GridSearchCV, clone and pickle. scikit-learn is a test dependency only.

The estimator checks feed data of many widths (1 to 20 features) and 2 to 3
classes, so they run on specs given as functions of the data's shape; every
check applies and none is skipped (the two scikit-learn skips itself: array-API
input without SCIPY_ARRAY_API, pandas input without pandas). A spec with a fixed
input width cannot pass the checks that use other widths: it refuses them with
a ValueError naming the declared width (tested below)."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from test_api import SPEC  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from netc.sklearn import NetcClassifier, NetcRegressor  # noqa: E402
from problems import make_problem  # noqa: E402


def mlp_classifier(n_features: int, n_classes: int) -> str:
    """A spec for data of any width (module level: estimators holding it pickle)."""
    return (f"input x : [{n_features}]\ntarget t : class({n_classes})\nh = dense(x, 16, act = tanh)\n"
            f"y = dense(h, {n_classes})\nloss = nll(softmax(y), t)\n")


def mlp_regressor(n_features: int, n_outputs: int) -> str:
    return (f"input x : [{n_features}]\ntarget t : [{n_outputs}]\nh = dense(x, 16, act = tanh)\n"
            f"y = dense(h, {n_outputs})\nloss = mse(y, t)\n")


FIXED = SPEC  # the fixed-width classifier of test_api.py


@parametrize_with_checks([NetcClassifier(mlp_classifier, epochs=10, lr=0.1, batch=16),
                          NetcRegressor(mlp_regressor, epochs=20, lr=0.02, batch=16)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def test_parameters_are_the_spec_and_the_overrides_and_clone_keeps_them():
    c = NetcClassifier(FIXED, epochs=3, lr=0.05)
    assert c.get_params() == {"spec": FIXED, "epochs": 3, "lr": 0.05}
    assert c.set_params(batch=8, lr=0.2) is c and c.get_params() == {"spec": FIXED, "epochs": 3, "lr": 0.2, "batch": 8}
    d = clone(c)
    assert d is not c and d.get_params() == c.get_params() and not hasattr(d, "model_")


def test_an_unknown_parameter_is_refused_by_fit_with_a_suggestion(problem):
    with pytest.raises(ValueError, match=r"unknown parameter 'epoch'.*did you mean 'epochs'"):
        NetcClassifier(FIXED, epoch=3).fit(*problem)
    with pytest.raises(ValueError, match="give a spec"):
        NetcClassifier().fit(*problem)


def test_fit_returns_self_with_the_fitted_attributes(problem):
    x, t = problem
    c = NetcClassifier(FIXED, epochs=4)
    assert c.fit(x, t) is c
    assert c.n_features_in_ == 20 and list(c.classes_) == [0, 1, 2]
    assert [r["epoch"] for r in c.history_] == [1, 2, 3, 4] and c.model_.summary_["epochs"] == 4
    assert c.score(x, t) == pytest.approx(accuracy_score(t, c.predict(x))) and c.score(x, t) > 0.9


@pytest.mark.parametrize("names", [np.array(["cat", "dog", "emu"]), np.array([-5, 7, 100])], ids=["str", "int"])
def test_labels_of_any_values_map_to_classes_and_back(problem, names):
    x, t = problem
    y = names[t]
    c = NetcClassifier(FIXED).fit(x, y)
    np.testing.assert_array_equal(c.classes_, np.sort(names))
    pred = c.predict(x)
    assert pred.dtype == y.dtype and set(pred) <= set(names) and np.mean(pred == y) > 0.9
    p = c.predict_proba(x)
    np.testing.assert_array_equal(c.classes_[np.argmax(p, axis=1)], pred)


def test_fewer_classes_than_the_spec_has_are_fine_more_are_refused(problem):
    x, t = problem
    two = t < 2
    c = NetcClassifier(FIXED).fit(x[two], np.where(t[two] == 0, "no", "yes"))
    assert set(c.predict(x)) <= {"no", "yes"} and c.predict_proba(x).shape == (len(x), 2)
    np.testing.assert_allclose(c.predict_proba(x).sum(axis=1), 1)
    with pytest.raises(ValueError, match=r"y has 4 classes, but the spec's target is class\(3\)"):
        NetcClassifier(FIXED).fit(x, np.arange(len(x)) % 4)


def test_a_fixed_width_spec_refuses_other_widths_with_a_value_error(problem):
    x, t = problem
    with pytest.raises(ValueError, match=r"declared \[20\]"):
        NetcClassifier(FIXED).fit(x[:, :5], t)
    c = NetcClassifier(FIXED).fit(x, t)
    with pytest.raises(ValueError, match="X has 5 features, but NetcClassifier is expecting 20"):
        c.predict(x[:, :5])


def test_pipeline_cross_val_score_and_grid_search(problem):
    x, t = problem
    x = x * 30 + 50  # far from standardized: the scaler in the pipeline matters
    pipe = make_pipeline(StandardScaler(), NetcClassifier(FIXED, epochs=3))
    scores = cross_val_score(pipe, x, t, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    grid = GridSearchCV(NetcClassifier(FIXED, epochs=1),
                        {"lr": [1e-5, 0.1], "batch": [10, 50], "seed": [0, 1], "epochs": [1, 2]}, cv=2)
    grid.fit(StandardScaler().fit_transform(x), t)
    assert grid.best_params_["lr"] == 0.1  # 1e-5 does not learn in two epochs
    assert len(grid.cv_results_["params"]) == 16 and grid.best_score_ > 0.85
    assert grid.best_estimator_.get_params()["lr"] == 0.1 and hasattr(grid.best_estimator_, "model_")
    search = GridSearchCV(pipe, {"netcclassifier__epochs": [1, 3]}, cv=2).fit(x, t)
    assert search.best_estimator_[-1].get_params()["epochs"] in (1, 3)


def test_same_parameters_same_model(problem):
    x, t = problem
    a, b = NetcClassifier(FIXED, seed=4).fit(x, t), NetcClassifier(FIXED, seed=4).fit(x, t)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    c = NetcClassifier(FIXED, seed=5).fit(x, t)
    assert not np.array_equal(a.predict_proba(x), c.predict_proba(x))


def test_pickle_carries_the_model_as_its_saved_arrays(problem):
    x, t = problem
    c = NetcClassifier(FIXED, epochs=2).fit(x, t)
    d = pickle.loads(pickle.dumps(c))
    np.testing.assert_array_equal(d.predict_proba(x), c.predict_proba(x))
    np.testing.assert_array_equal(d.classes_, c.classes_)
    assert d.get_params() == c.get_params()


def test_regressor_one_and_several_outputs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    w = rng.normal(size=(5, 2))
    y = x @ w + 0.05 * rng.normal(size=(120, 2))
    one = NetcRegressor(mlp_regressor, epochs=40, lr=0.02, batch=8).fit(x, y[:, 0])
    p = one.predict(x)
    assert p.shape == (120,) and p.dtype == np.float64
    assert one.score(x, y[:, 0]) == pytest.approx(r2_score(y[:, 0], p)) and one.score(x, y[:, 0]) > 0.9
    assert one.score(x, y[:, 0]) == pytest.approx(one.model_.score(x, y[:, 0]), rel=1e-5)  # Model.score is R^2 too
    two = NetcRegressor(mlp_regressor, epochs=40, lr=0.02, batch=8).fit(x, y)
    assert two.predict(x).shape == (120, 2) and two.score(x, y) > 0.9


def test_netc_does_not_import_scikit_learn_and_says_how_to_get_it():
    code = ("import sys, netc\nm = netc.compile('input x : [2]\\ntarget t : class(2)\\ny = dense(x, 2)\\n"
            "loss = nll(softmax(y), t)\\n')\nassert 'sklearn' not in sys.modules, 'netc imported sklearn'\n"
            "sys.modules['sklearn'] = None\n"
            "try:\n    import netc.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "netc.sklearn needs scikit-learn" in out.stdout and "pip install scikit-learn" in out.stdout
