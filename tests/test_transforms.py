"""Transformed nonlinearities [RV]: a refresh makes every unit's output zero on
average with zero average slope (and, with gamma, the authors' scale), and
leaves the network's noise-free function unchanged for every topology that
`netc check` accepts; the others are refused with the consumer's place."""
from __future__ import annotations

import numpy as np
import pytest

import netc
from netc.compiler.errors import SpecError
from netc.runtime.transforms import GAMMA_EPS, Refresher

HEAD = "input x : [6]\ntarget t : class(3)\n"
TRAIN = "train {\n    method = sgd(lr = 0.05, momentum = 0.5)\n    batch = 10\n    dtype = float64\n%s}\n"

# every topology a refresh must keep the function of: (name, network lines)
ACCEPTED = {
    "shortcut_last": "h = transformed(x, 8)\ny = dense(h, 3) + shortcut(x, 3)",
    "shortcut_first": "h = transformed(x, 8)\ny = shortcut(x, 3) + dense(h, 3)",
    "bias_last": ("def out(h, x) {\n    A = param([8, 3])\n    C = param([6, 3], init = zeros)\n"
                  "    c = param([3], init = zeros)\n    return x @ C + h @ A + c\n}\n"
                  "h = transformed(x, 8)\ny = out(h, x)"),
    "scaled_terms": "h = transformed(x, 8)\ny = 2 * dense(h, 3) - shortcut(x, 3) / 4",
    "dropout_between": "h = transformed(x, 8)\ny = dense(dropout(h, 0.3), 3) + shortcut(x, 3)",
    "noise_between": "h = transformed(x, 8)\ny = dense(gaussian_noise(h, 0.2), 3) + shortcut(x, 3)",
    "several_consumers": ("h = transformed(x, 8)\ng = tanh(dense(h, 4) + shortcut(x, 4))\n"
                          "y = dense(h, 3) + shortcut(x, 3) + dense(g, 3)"),
    "full_shortcuts": "s1 = stack_transformed(x, 8)\ns2 = stack_transformed(s1, 5)\ny = dense(s2, 3)",
    "full_shortcuts_dropout": ("h1 = transformed(x, 8)\nh2 = transformed(concat(x, dropout(h1, 0.2)), 5)\n"
                               "y = dense(concat(concat(x, h1), h2), 3)"),
    "shortcuts_across_layers": ("h1 = transformed(x, 8)\nh2 = transformed(concat(x, h1), 5)\n"
                                "y = dense(h2, 3) + shortcut(x, 3) + shortcut(h1, 3)"),
}

# refused: (network lines, the consumer's line:col, words of the message)
REFUSED = {
    "no_shortcut": ("h = transformed(x, 8)\ny = dense(h, 3)", "4:5", "not 'x'"),
    "input_only_shortcut_deeper": ("h1 = transformed(x, 8)\nh2 = transformed(h1, 5)\n"
                                   "y = dense(h2, 3) + shortcut(x, 3) + shortcut(h1, 3)", "4:6", "not 'x'"),
    "no_bias": ("h = transformed(x, 8)\ny = h @ param([8, 3]) + shortcut(x, 3)", "4:5", "no bias"),
    "read_by_a_penalty": ("h = transformed(x, 8)\ny = dense(h, 3) + shortcut(x, 3)\n"
                          "loss = nll(softmax(y), t) + 0.01 * sparsity_l1(h)", "5:36", "not by a weighted sum"),
    "read_nonlinearly": ("h = transformed(x, 8)\ny = dense(tanh(h), 3) + shortcut(x, 3)", "4:11",
                         "not by a weighted sum"),
}


def spec(net: str, train: str = "", loss: bool = True) -> str:
    body = net + ("\nloss = nll(softmax(y), t)" if loss and "loss =" not in net else "")
    return HEAD + body + "\n" + TRAIN % train


def data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) + 0.5
    return x, np.argmax(x[:, :3], axis=1)


def scrambled(m, seed=1):
    """Random buffers, weights and velocities: a refresh must keep any network's function."""
    rng = np.random.default_rng(seed)
    for k, v in m.state.items():
        if k.endswith(".alpha"):
            v[...] = rng.uniform(-0.8, 0.2, v.shape)
        elif k.endswith((".beta", ".velocity")) or k in m.program.spec.params:
            v[...] = v + rng.normal(scale=0.3, size=v.shape)
        elif k.endswith(".gamma"):
            v[...] = rng.uniform(0.5, 2.0, v.shape)
    return m


def output(m, state, x):
    fn = m.program.function([m.program.output], list(m.program.spec.inputs.values()))
    return np.array(fn(state, x)[0])


def rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("gamma", [False, True], ids=["alpha_beta", "gamma"])
@pytest.mark.parametrize("name", list(ACCEPTED))
def test_refresh_keeps_the_function_of_every_accepted_topology(name, gamma):
    m = scrambled(netc.compile(spec(ACCEPTED[name], f"    transforms = every(5, gamma = {str(gamma).lower()})\n")))
    x, _ = data()
    before = m.predict_raw(x)
    average = {k: v + 0.01 for k, v in m.state.items() if not k.endswith(".velocity")}  # e.g. Polyak's
    avg_before = output(m, average, x)
    olds = {k: m.state[k].copy() for k in m.state if k.endswith((".alpha", ".beta", ".gamma"))}
    drift = Refresher(m.program, gamma=gamma).refresh(m.state, x, others=(average,))
    after = m.predict_raw(x)
    assert rel(after, before) < 1e-6 and drift < 1e-6
    assert rel(output(m, average, x), avg_before) < 1e-6  # an average is re-expressed too
    assert all(not np.allclose(m.state[k], v) for k, v in olds.items() if not (k.endswith(".gamma") and not gamma))
    assert drift == pytest.approx(rel(after, before), abs=1e-15)


def _statistics(m, layer, x):
    """a, tanh(a) of a layer's noise-free pre-activation on x."""
    (fn_layer,) = [l for l in Refresher(m.program).layers if l.name == layer]
    fn = m.program.function([fn_layer.pre], list(m.program.spec.inputs.values()))
    a = np.array(fn(m.state, x)[0])
    return a, np.tanh(a)


@pytest.mark.parametrize("gamma", [False, True])
def test_refresh_centres_every_unit_as_the_authors_define_it(gamma):
    m = scrambled(netc.compile(spec(ACCEPTED["full_shortcuts_dropout"])))
    x, _ = data()
    g_before = m.state["h2.gamma"].copy()
    Refresher(m.program, gamma=gamma).refresh(m.state, x)
    for layer in ("h1", "h2"):
        a, th = _statistics(m, layer, x)
        alpha, beta, g = (m.state[f"{layer}.{k}"] for k in ("alpha", "beta", "gamma"))
        f = th + alpha * a + beta
        np.testing.assert_allclose(np.mean(1 - th ** 2 + alpha, axis=0), 0, atol=1e-12)  # zero mean slope
        np.testing.assert_allclose(np.mean(f, axis=0), 0, atol=1e-12)  # zero mean output
        if gamma:  # Vatanen et al.'s gamma, as in the authors' code (gammatype 1)
            want = (np.mean(f ** 2, 0) * np.mean((1 - th ** 2 + alpha) ** 2, 0) + GAMMA_EPS) ** -0.25
            np.testing.assert_allclose(g, want, rtol=1e-9)
    if not gamma:
        np.testing.assert_array_equal(m.state["h2.gamma"], g_before)  # two transformations: gamma untouched


@pytest.mark.parametrize("name", list(REFUSED))
def test_topologies_a_refresh_cannot_keep_are_refused_with_the_consumers_place(name, tmp_path):
    net, where, words = REFUSED[name]
    path = tmp_path / f"{name}.net"
    path.write_text(spec(net, "    transforms = every(5)\n"))
    with pytest.raises(SpecError) as e:
        netc.compile(path)
    assert f"{path}:{where}:" in str(e.value) and words in str(e.value), str(e.value)
    netc.compile(path.read_text().replace("    transforms = every(5)\n", ""))  # fine without transforms


def test_netc_check_refuses_with_the_place(tmp_path, capsys):
    from netc.cli import main
    path = tmp_path / "t.net"
    path.write_text(spec(REFUSED["no_shortcut"][0], "    transforms = every(5)\n"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4:5: transforms: this sum reads 'h' but not 'x'" in err
    path.write_text(spec(ACCEPTED["full_shortcuts"], "    transforms = every(5, gamma = true)\n"))
    assert main(["check", str(path)]) == 0


def test_transforms_without_transformed_layers_are_refused_at_the_train_block():
    with pytest.raises(SpecError, match="needs `transformed` layers") as e:
        netc.compile(spec("y = dense(x, 3)", "    transforms = every(5)\n"))
    assert e.value.loc is not None and e.value.loc.line == 5


def test_momentum_is_kept_and_carries_the_same_motion_of_the_function():
    """A velocity v in the old coefficients becomes J v (the Jacobian of the re-expression):
    moving along it changes the function as moving along v did, to first order."""
    m = scrambled(netc.compile(spec(ACCEPTED["full_shortcuts_dropout"])))
    x, _ = data()
    names = list(m.program.spec.params)
    v_old = {k: m.state[f"{k}.velocity"].copy() for k in names}
    eps = 1e-5

    def moved(state, v):
        s = {k: a.copy() for k, a in state.items()}
        for k in names:
            s[k] += eps * v[k]
        return output(m, s, x)

    f0 = output(m, m.state, x)
    f_old = moved(m.state, v_old)
    Refresher(m.program, gamma=True).refresh(m.state, x)
    v_new = {k: m.state[f"{k}.velocity"].copy() for k in names}
    f_new = moved(m.state, v_new)
    f_kept = moved(m.state, v_old)  # the velocity left as it was
    motion = np.max(np.abs(f_old - f0))
    assert np.max(np.abs(f_new - f_old)) < 1e-3 * motion  # the same motion, to first order
    assert np.max(np.abs(f_kept - f_old)) > 0.05 * motion  # (what an untransformed velocity would do)
    assert all(np.any(v_new[k] != 0) for k in names)  # kept, not zeroed


def test_each_refresh_draws_a_fresh_seeded_sample(monkeypatch):
    x, t = data(100)
    seen = []
    real = Refresher.refresh

    def recording(self, state, xs, others=()):
        seen.append(xs.copy())
        return real(self, state, xs, others)

    monkeypatch.setattr(Refresher, "refresh", recording)
    net = spec(ACCEPTED["shortcut_last"], "    transforms = every(3, sample = 20)\n")
    m = netc.compile(net).fit(x, t, epochs=1)
    first = seen[:]
    assert len(first) == 4  # before updates 0, 3, 6, 9 of 10
    rows = [{tuple(r) for r in s} for s in first]
    assert all(len(r) == 20 and r <= {tuple(v) for v in x} for r in rows)  # 20 distinct training examples
    assert all(a != b for a, b in zip(rows, rows[1:]))  # a fresh sample each time
    seen.clear()
    netc.compile(net).fit(x, t, epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, seen))  # seeded: the same run draws the same
    drift = m.history_[0]["transform_drift"]
    assert drift is not None and drift < 1e-9  # metrics record the largest output change (float64)


def test_training_with_transforms_learns_and_keeps_the_function_at_each_refresh():
    x, t = data(400)
    m = netc.compile(spec(ACCEPTED["full_shortcuts_dropout"], "    transforms = every(5, gamma = true)\n"))
    start = float(m.function("loss")(x, t)[0])
    m.fit(x, t, epochs=5)
    assert float(m.function("loss")(x, t)[0]) < 0.5 * start
    assert 1 - m.score(x, t) < 0.15
    assert all(r["transform_drift"] < 1e-9 for r in m.history_)
    assert m.refresh_transforms(x) < 1e-9


def test_refresh_transforms_reports_the_output_change():
    m = scrambled(netc.compile(spec(ACCEPTED["shortcut_last"])))
    x, _ = data()
    before = m.predict_raw(x)
    assert m.refresh_transforms(x) < 1e-12
    np.testing.assert_allclose(m.predict_raw(x), before, rtol=1e-9, atol=1e-12)


def test_early_stopping_restores_the_validated_network_buffers_included(tmp_path):
    x, t = data(300, seed=3)
    net = spec(ACCEPTED["full_shortcuts"], "    transforms = every(4, gamma = true)\n"
                                           "    stop = early(patience = 2000, grow = 1.5)\n    epochs = 12\n")
    m = netc.compile(net.replace("lr = 0.05", "lr = 0.3")).fit(x[:200], t[:200], valid=(x[200:], t[200:]),
                                                                out=tmp_path / "run")
    best = min(m.history_, key=lambda r: r["valid_error"])  # the first best, as early stopping keeps it
    assert best is not m.history_[-1]
    assert float(m.function("loss")(x[200:], t[200:])[0]) == pytest.approx(best["valid_loss"], rel=1e-12)
    with np.load(tmp_path / "run" / "params.npz") as z:
        assert not np.array_equal(z["a/live/s1.alpha"], z["a/state/s1.alpha"])  # refreshed after the best
        assert "a/best/arrays/s1.gamma" in z.files  # the best copy holds the buffers (resume keeps it)
    loaded = netc.load(tmp_path / "run")
    assert float(loaded.function("loss")(x[200:], t[200:])[0]) == pytest.approx(best["valid_loss"], rel=1e-12)


def test_polyak_average_is_one_network_through_refreshes():
    x, t = data(300, seed=4)
    net = spec(ACCEPTED["full_shortcuts"], "    transforms = every(4, gamma = true)\n    average = polyak\n"
                                           "    epochs = 3\n")
    m = netc.compile(net).fit(x[:200], t[:200], valid=(x[200:], t[200:]))
    last = m.history_[-1]["valid_loss"]
    assert float(m.function("loss")(x[200:], t[200:])[0]) == pytest.approx(last, rel=1e-12)
