"""The training loop: divergence recovery, early stopping, Polyak averaging, the
inverse-time schedule, crash-safe checkpoints and interrupted runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

import netc
from netc.runtime import checkpoint
from netc.runtime import trainer as trainer_mod
from problems import make_problem


def spec(net: str, train: str, head="input  x : [20]\ntarget t : class(3)\n") -> str:
    body = "\n".join("    " + l.strip() for l in train.strip().splitlines())
    return f"{head}{net.strip()}\ntrain {{\n{body}\n}}\n"


MLP = """
h = dense(x, 16, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
"""

LINEAR_MSE = """
y = dense(x, 3)
loss = mse(y, plus_minus_one(t))
"""

TANH_MSE = """
h = dense(x, 16, act = tanh)
y = dense(h, 3)
loss = mse(y, plus_minus_one(t))
"""


class EpochRecorder:
    """A `log` callback that snapshots the model's state at the end of every epoch
    (the trainer logs the epoch line after validation, before the checkpoint)."""

    def __init__(self, model, stop_after: int | None = None):
        self.model, self.stop_after = model, stop_after
        self.lines: list[str] = []
        self.states: list[dict[str, np.ndarray]] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        words = line.split()
        if len(words) > 1 and words[0] == "epoch" and "/" in words[1]:
            self.states.append({k: v.copy() for k, v in self.model.state.items()})
            if self.stop_after is not None and len(self.states) == self.stop_after:
                raise KeyboardInterrupt


def metrics(out) -> list[dict]:
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- divergence

def test_divergence_recovery_finishes_finite():
    x, t = make_problem()
    # lr = 0.01 trains this model well (checked below); 1.0 is 100x too large
    good = netc.compile(spec(LINEAR_MSE, "method = sgd(lr = 0.01)\nbatch = 10\nepochs = 3"))
    assert good.fit(x, t).summary_["recoveries"] == 0 and 1 - good.score(x, t) < 0.1
    m = netc.compile(spec(LINEAR_MSE, "method = sgd(lr = 1.0)\nbatch = 10\nepochs = 3"))
    lines = []
    s = m.fit(x, t, log=lines.append).summary_
    assert s["recoveries"] > 0
    assert s["epochs"] == 3
    assert np.isfinite(s["train_loss"])
    assert all(np.all(np.isfinite(v)) for v in m.state.values())
    assert np.all(np.isfinite(m.predict_raw(x)))
    assert any("divided the learning rate by 3" in l for l in lines)


@pytest.mark.parametrize("net", [LINEAR_MSE, TANH_MSE], ids=["linear-mse", "tanh-mse"])
def test_divergence_recovery_gives_a_useful_model(net):
    x, t = make_problem()
    m = netc.compile(spec(net, "method = sgd(lr = 1.0)\nbatch = 10\nepochs = 3"))
    initial = float(m.function("loss")(x, t)[0])
    s = m.fit(x, t).summary_
    assert s["recoveries"] > 0
    assert s["train_loss"] < initial
    assert 1 - m.score(x, t) < 0.2


def test_divergence_gives_up_with_a_user_error():
    x, t = make_problem()
    x = x * 1e4  # no rate cut by 3^8 can tame these inputs
    m = netc.compile(spec(LINEAR_MSE, "method = sgd(lr = 1.0)\nbatch = 10\nepochs = 1"))
    with pytest.raises(trainer_mod.Diverged, match="lower method.lr") as e:
        m.fit(x, t)
    assert isinstance(e.value, netc.NetcError)


# ---------------------------------------------------------------------------- early stopping

NOISY_MLP = """
h = dense(x, 32, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t)
"""


def test_early_stopping_restores_best_epoch(tmp_path):
    # the validation labels are the training rule shifted by one class, so the better the
    # model fits the training set, the worse its validation error: the best epoch is an early one
    x, t = make_problem(spread=0.7, seed=1)
    valid_t = (t[150:] + 1) % 3
    m = netc.compile(spec(NOISY_MLP, "method = sgd(lr = 0.005)\nbatch = 10\nepochs = 6\n"
                                     "stop = early(patience = 100000, grow = 2.0)"))
    rec = EpochRecorder(m)
    out = tmp_path / "run"
    s = m.fit(x[:150], t[:150], valid=(x[150:], valid_t), log=rec, out=out).summary_
    rows = metrics(out)
    errors = [r["valid_error"] for r in rows]
    assert len(errors) == 6 and s["stopped"] == "epochs"  # patience never runs out here
    best = int(np.argmin(errors))  # the first of equal minima
    assert best < len(errors) - 1 and errors[-1] > min(errors), errors
    assert s["best_epoch"] == best + 1
    assert 1 - m.score(x[150:], valid_t) == pytest.approx(min(errors))
    assert s["valid_error"] == min(errors)
    for k in m.params:
        np.testing.assert_array_equal(m.params[k], rec.states[best][k])
        assert not np.array_equal(m.params[k], rec.states[-1][k])
    # the final checkpoint holds the restored parameters too
    loaded = netc.load(out)
    for k in m.params:
        np.testing.assert_array_equal(loaded.params[k], rec.states[best][k])


def _expected_stop(ages, errors, patience, grow):
    """The patience rule [PR 3.1] replayed on the recorded validation errors."""
    best = np.inf
    for i, (age, err) in enumerate(zip(ages, errors)):
        if err < best:
            best = err
            patience = max(patience, int(grow * age))
        if age >= patience:
            return i + 1
    return len(ages)


def test_early_stopping_stops_when_patience_runs_out(tmp_path):
    x, t = make_problem(spread=0.4, seed=1)
    m = netc.compile(spec(NOISY_MLP, "method = sgd(lr = 0.3)\nbatch = 10\nepochs = 30\n"
                                     "stop = early(patience = 300, grow = 2.0)"))
    out = tmp_path / "run"
    s = m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), out=out).summary_
    rows = metrics(out)
    ages, errors = [r["age"] for r in rows], [r["valid_error"] for r in rows]
    assert s["stopped"] == "early"
    assert s["epochs"] == len(rows) < 30
    assert len(rows) == _expected_stop(ages, errors, 300, 2.0)
    assert 1 - m.score(x[150:], t[150:]) == pytest.approx(min(errors))


def test_early_stopping_without_valid_set_runs_all_epochs():
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1)\nbatch = 50\nepochs = 4\n"
                               "stop = early(patience = 10, grow = 2.0)"))
    s = m.fit(x, t).summary_
    assert s["epochs"] == 4 and s["stopped"] == "epochs"


# ---------------------------------------------------------------------------- Polyak averaging

def test_polyak_is_mean_of_iterates_after_first_epoch():
    # batch = the whole training set and no shuffling: one deterministic step per epoch,
    # so a plain run records exactly the iterates the averaged run sees
    x, t = make_problem(spread=0.5)
    train = "method = sgd(lr = 0.5)\nbatch = 200\nshuffle = false\nepochs = 6\ndtype = float64"
    plain = netc.compile(spec(MLP, train))
    rec = EpochRecorder(plain)
    plain.fit(x, t, log=rec)
    avg = netc.compile(spec(MLP, train + "\naverage = polyak"))
    s = avg.fit(x, t, valid=(x, t)).summary_
    assert s["epochs"] == 6
    for k in plain.params:
        expected = np.mean([st[k] for st in rec.states[1:]], axis=0)  # epochs 2..6
        np.testing.assert_allclose(avg.params[k], expected, rtol=1e-10, atol=1e-12)
        if k.endswith(".W"):
            assert not np.allclose(avg.params[k], rec.states[-1][k])  # not the last iterate
    # validation during the run already used the averaged parameters
    assert s["valid_error"] == pytest.approx(1 - avg.score(x, t))


def test_polyak_with_minibatches_scores_well(tmp_path):
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1, momentum = 0.5)\nbatch = 10\nepochs = 4\n"
                               "average = polyak"))
    rec = EpochRecorder(m)
    s = m.fit(x[:150], t[:150], valid=(x[150:], t[150:]), log=rec, out=tmp_path / "run").summary_
    assert not np.array_equal(m.params["h.W"], rec.states[-1]["h.W"])
    assert 1 - m.score(x[150:], t[150:]) < 0.1
    assert s["valid_error"] == pytest.approx(1 - m.score(x[150:], t[150:]))
    loaded = netc.load(tmp_path / "run")
    np.testing.assert_array_equal(loaded.params["h.W"], m.params["h.W"])


# ---------------------------------------------------------------------------- schedules

def test_inverse_time_lr_in_metrics(tmp_path):
    x, t = make_problem()
    eps0, tau = 0.2, 16  # tau in updates: 6 updates an epoch here
    m = netc.compile(spec(MLP, f"method = sgd(lr = {eps0})\nbatch = 25\nepochs = 5\n"
                               f"schedule = inverse_time(tau = {tau})"))
    m.fit(x[:150], t[:150], out=tmp_path / "run")
    rows = metrics(tmp_path / "run")
    assert [r["age"] for r in rows] == [150, 300, 450, 600, 750]
    assert [r["steps"] for r in rows] == [6, 12, 18, 24, 30]
    for r in rows:
        assert r["lr"] == pytest.approx(eps0 * tau / max(r["steps"], tau), rel=1e-12)
    assert rows[0]["lr"] == eps0 and rows[-1]["lr"] < eps0


def test_constant_schedule_lr_in_metrics(tmp_path):
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.05)\nbatch = 50\nepochs = 2"))
    m.fit(x, t, out=tmp_path / "run")
    assert [r["lr"] for r in metrics(tmp_path / "run")] == [0.05, 0.05]


def test_inverse_time_steps_use_the_decayed_rate():
    # full-batch steps replayed by hand: w <- w - eps0 tau / max(k, tau) * grad, k updates before the step
    x, t = make_problem(n=100)
    eps0, tau, n = 0.5, 2, 100
    train = (f"method = sgd(lr = {eps0})\nbatch = {n}\nshuffle = false\nepochs = 4\ndtype = float64\n"
             f"schedule = inverse_time(tau = {tau})")
    m = netc.compile(spec(MLP, train))
    ref = netc.compile(spec(MLP, train))
    names = list(ref.params)
    f = ref.function("loss", wrt=names)
    x64 = x.astype(np.float64)
    for k in range(4):
        lr = eps0 * tau / max(k, tau)
        grads = f(x64, t)[1:]
        for name, g in zip(names, grads):
            ref.state[name] -= lr * g
    m.fit(x, t)
    for name in names:
        np.testing.assert_allclose(m.params[name], ref.params[name], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- checkpoints

def _partial_then_crash(f, *args, **kwargs):
    f.write(b"PK\x03\x04" + b"\x00partial" * 64)
    raise OSError(28, "No space left on device")


def _full_then_crash(f, *args, **kwargs):
    _REAL_SAVEZ(f, *args, **kwargs)
    raise OSError(5, "Input/output error")


_REAL_SAVEZ = np.savez


@pytest.mark.parametrize("crash", [_partial_then_crash, _full_then_crash], ids=["partial", "complete"])
def test_crash_while_writing_checkpoint_keeps_previous(tmp_path, monkeypatch, crash):
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1)\nbatch = 20\nepochs = 1"))
    out = tmp_path / "run"
    m.fit(x, t, out=out)
    before = (out / "params.npz").read_bytes()
    saved = {k: v.copy() for k, v in netc.load(out).state.items()}
    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(OSError):
        m.fit(x, t, out=out, epochs=2, force=True)  # the first epoch's checkpoint write crashes
    with pytest.raises(OSError):
        m.save(out)
    monkeypatch.undo()
    assert (out / "params.npz").read_bytes() == before
    with np.load(out / "params.npz", allow_pickle=False) as z:
        assert "meta.json" in z.files
    loaded = netc.load(out)
    for k, v in saved.items():
        np.testing.assert_array_equal(loaded.state[k], v)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl", "model.json", "params.npz", "run.json",
                                                     "spec.net", "summary.json"]


def test_checkpoint_written_every_epoch(tmp_path, monkeypatch):
    """Where checkpoints are cheap against epochs, every epoch's end is saved
    and holds exactly that epoch's state (a share of 1: any age is old enough)."""
    from netc.runtime import trainer
    monkeypatch.setattr(trainer, "CHECKPOINT_SHARE", 1e9)
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1)\nbatch = 20\nepochs = 3"))
    seen = []
    real = checkpoint.save

    def spy(path, arrays, meta):
        seen.append((meta["epoch"], meta["final"], arrays["state/h.W"].copy()))
        return real(path, arrays, meta)

    monkeypatch.setattr(checkpoint, "save", spy)
    rec = EpochRecorder(m)
    m.fit(x, t, out=tmp_path / "run", log=rec)
    assert [(e, f) for e, f, _ in seen] == [(1, False), (2, False), (3, False), (3, True)]
    for (epoch, _, w), st in zip(seen, rec.states):
        np.testing.assert_array_equal(w, st["h.W"])


def test_epoch_checkpoints_cost_a_bounded_share_of_the_run(tmp_path, monkeypatch):
    """A checkpoint that takes longer than the epochs it would save is not
    written at every epoch's end: the first and the final one always are, and
    the run's result is the same as with every checkpoint."""
    import time as _time
    x, t = make_problem()
    text = spec(MLP, "method = sgd(lr = 0.1, momentum = 0.5)\nbatch = 20\nepochs = 8")
    seen = []
    real = checkpoint.save

    def slow(path, arrays, meta):
        seen.append((meta["epoch"], meta["final"]))
        _time.sleep(0.05)  # a slow disk: each epoch below takes a few ms
        return real(path, arrays, meta)

    monkeypatch.setattr(checkpoint, "save", slow)
    a = netc.compile(text).fit(x, t, out=tmp_path / "slow", progress=False)
    assert seen[0] == (1, False) and seen[-1] == (8, True)
    assert len(seen) < 9, seen  # some epoch ends were skipped
    monkeypatch.setattr(checkpoint, "save", real)
    b = netc.compile(text).fit(x, t, out=tmp_path / "every", progress=False)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert len((tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()) == 8  # every epoch's row


# ---------------------------------------------------------------------------- interruption

def test_keyboard_interrupt_after_epoch_leaves_its_checkpoint(tmp_path):
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1, momentum = 0.5)\nbatch = 20\nepochs = 5"))
    rec = EpochRecorder(m, stop_after=1)  # Ctrl-C right after epoch 1 is reported
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        m.fit(x, t, out=out, log=rec)
    assert len(rec.states) == 1
    assert any("interrupted" in l for l in rec.lines)
    loaded = netc.load(out)
    for k, v in rec.states[0].items():
        np.testing.assert_array_equal(loaded.state[k], v)
    meta = json.loads((out / "model.json").read_text())
    assert meta["epoch"] == 1 and meta["age"] == 200
    assert [r["epoch"] for r in metrics(out)] == [1]
    np.testing.assert_array_equal(loaded.predict_raw(x), m.predict_raw(x))


def test_keyboard_interrupt_mid_epoch_keeps_last_completed_epoch(tmp_path, monkeypatch):
    x, t = make_problem()
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1)\nbatch = 10\nepochs = 3"))

    class Interrupting(trainer_mod.Progress):
        calls = 0

        def update(self, n, **kw):
            Interrupting.calls += 1
            if Interrupting.calls == 25:  # the 5th step of epoch 2 (20 steps an epoch)
                raise KeyboardInterrupt
            super().update(n, **kw)

    monkeypatch.setattr(trainer_mod, "Progress", Interrupting)
    rec = EpochRecorder(m)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        m.fit(x, t, out=out, log=rec)
    assert len(rec.states) == 1
    meta = json.loads((out / "model.json").read_text())
    loaded = netc.load(out)
    assert meta["epoch"] == 1
    assert meta["age"] == 200
    for k, v in rec.states[0].items():
        np.testing.assert_array_equal(loaded.state[k], v)


def test_cli_interrupt_exits_130(tmp_path, monkeypatch, capsys):
    x, t = make_problem()
    np.savez(tmp_path / "d.npz", x=x, t=t)
    (tmp_path / "s.net").write_text(spec(MLP, "method = sgd(lr = 0.1)\nbatch = 20\nepochs = 3").replace(
        "train {", 'data {\n    train = npz("d.npz")\n}\ntrain {'))

    def interrupt(self, train, valid=None, test=None, epochs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod.Run, "fit", interrupt)
    from netc.cli import main
    assert main(["train", str(tmp_path / "s.net"), "--out", str(tmp_path / "r"), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_validation_every_n_examples_and_early_stop_inside_an_epoch(tmp_path):
    x, t = make_problem(n=400, spread=0.7, seed=1)
    valid_t = (t[300:] + 1) % 3  # fitting the training rule makes validation worse: stop early
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.05)\nbatch = 10\nepochs = 5\n"
                                "valid_every = 50\nstop = early(patience = 150, grow = 1.0)"))
    lines = []
    s = m.fit(x[:300], t[:300], valid=(x[300:], valid_t), out=tmp_path, log=lines.append).summary_
    rows = metrics(tmp_path)
    partial = [r for r in rows if r.get("partial")]
    assert any("raised to 100" in l for l in lines)  # at least the validation set's size
    ages = [r["age"] for r in partial]
    assert ages == [100 * (k + 1) for k in range(len(ages))]
    # patience 150 examples from the best (age 100 at the latest): stopped inside the first epoch
    assert s["stopped"] == "early" and s["age"] < 300


def test_divergence_names_the_first_layer_with_non_finite_values():
    x, t = make_problem()
    m = netc.compile(spec("h = dense(x, 16, act = exp)\ny = dense(h, 3)\nloss = nll(softmax(y), t)",
                          "method = sgd(lr = 1e3)\nbatch = 10\nrecover = false"))
    with pytest.raises(trainer_mod.Diverged) as e:
        m.fit(x * 10, t, epochs=1)  # x * 30 overflows exp at the initial parameters: LossNotFinite, not this
    assert "the first non-finite values are in layer 'h'" in str(e.value)
    assert ":3:" in str(e.value)  # the spec line of `h = dense(...)`


def test_training_state_round_trips_through_plain_arrays():
    """Everything a run changes (TrainState) saves as numeric arrays and comes back
    equal, with the generator at the same position and the live arrays kept."""
    from netc.runtime.averaging import AverageState
    from netc.runtime.train_state import EpochCursor, TrainState
    rng = np.random.default_rng(5)
    arrays = {"h.W": rng.normal(size=(4, 3)).astype(np.float32), "h.b": np.zeros(3, np.float32)}
    ts = TrainState.fresh(arrays, seed=7)
    ts.rng.permutation(10)  # move the generator
    ts.step, ts.age, ts.epoch, ts.next_check = 12, 240, 1, 300
    ts.rate.base = 0.05
    ts.watch.initial, ts.watch.ema, ts.watch.n, ts.watch.recoveries = 1.1, 0.9, 12, 1
    ts.watch.best_epoch_loss, ts.watch.healthy, ts.watch.healthy_age = 0.95, {k: v + 1 for k, v in arrays.items()}, 200
    ts.best.score, ts.best.epoch, ts.best.patience = 0.25, 1, 480
    ts.best.arrays = {k: v * 2 for k, v in arrays.items()}
    ts.average = AverageState({k: v - 1 for k, v in arrays.items()}, 3, {})
    ts.missed = rng.random(20) < 0.5
    ts.cursor = EpochCursor([np.arange(5), np.arange(5, 10), np.arange(10, 12)], 2, 3.5, 10)
    saved = ts.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in saved.values())
    live = {k: np.zeros_like(v) for k, v in arrays.items()}
    back = TrainState.from_arrays(saved, live)
    assert back.arrays is live and all(np.array_equal(live[k], arrays[k]) for k in arrays)
    again = back.to_arrays()
    assert saved.keys() == again.keys() and all(np.array_equal(saved[k], again[k]) for k in saved)
    assert np.array_equal(back.rng.integers(0, 1 << 30, 8), ts.rng.integers(0, 1 << 30, 8))
    assert back.rate.base == 0.05 and back.watch.ema == 0.9 and back.watch.initial == 1.1
    assert back.best.patience == 480 and back.average.count == 3 and back.cursor.index == 2
    assert [list(b) for b in back.cursor.order] == [list(b) for b in ts.cursor.order]
    # a state before any step: no optional parts
    fresh = TrainState.fresh({k: v.copy() for k, v in arrays.items()}, seed=7)
    back = TrainState.from_arrays(fresh.to_arrays(), {k: np.zeros_like(v) for k, v in arrays.items()})
    assert back.average is None and back.missed is None and back.cursor is None and back.rate.base is None


def test_compiled_functions_are_memoized_on_the_program():
    """Program.function is the one way to compiled code: the same request is the same function."""
    m = netc.compile(spec(MLP, "method = sgd(lr = 0.1)"))
    prog = m.program
    a = prog.function([prog.loss], prog.spec.feeds)
    assert prog.function([prog.loss], prog.spec.feeds) is a
    assert prog.named("evaluate") is prog.evaluate and prog.step is prog.named("train_step")
    x, t = make_problem(n=20)
    m.fit(x, t, epochs=1, out=None)
    assert prog.function([prog.loss], prog.spec.feeds) is a  # statistics, evaluation: no recompiling


@pytest.mark.parametrize("method", ["sgd", "lbfgs"])
@pytest.mark.parametrize("second", ["input z : [2]\n", "target u : class(3)\n"])
def test_a_second_input_or_target_is_refused_at_its_declaration(method, second):
    """Training feeds one input and one target: a step that reads another declaration is
    a SpecError located at it, not a KeyError (nor the rate fed in its place)."""
    from netc.compiler.errors import SpecError
    read = " + dense(z, 3)" if second.startswith("input") else ""
    spec = (f"input x : [3]\ntarget t : class(3)\n{second}y = dense(x, 3){read}\nloss = nll(softmax(y), t)\n"
            f"train {{ method = {method}() }}\n")
    m = netc.compile(spec, backend="numpy")
    with pytest.raises(SpecError) as e:
        m.fit(np.zeros((8, 3), np.float32), np.arange(8) % 3, epochs=1)
    name = second.split()[1]
    assert e.value.loc.line == 3 and f"{second.split()[0]} '{name}': a second" in str(e.value), str(e.value)


@pytest.mark.parametrize("entry", ["batch = true", "epochs = false", "threads = true", "seed = true",
                                   "method = sgd(momentum = true)", "decay = true"])
def test_true_or_false_where_a_number_is_expected_is_refused_where_written(entry):
    """pydantic alone reads `batch = true` as 1 and `momentum = true` as 1.0; a flag is
    accepted only by a key that takes one (shuffle, nesterov, ...)."""
    from netc.compiler.errors import SpecError
    head = "input x : [3]\ntarget t : class(3)\ny = dense(x, 3)\nloss = nll(softmax(y), t)\ntrain {\n"
    with pytest.raises(SpecError) as e:
        netc.compile(f"{head}    {entry}\n}}\n", backend="numpy")
    key = entry.split("(")[-1].split(" = ")[0]
    assert ":6:" in str(e.value) and key in str(e.value) and "not " in str(e.value), str(e.value)
    m = netc.compile(f"{head}    shuffle = false\n    method = sgd(momentum = 0.5, nesterov = true)\n}}\n",
                     backend="numpy")
    assert m.train_cfg.shuffle is False and m.train_cfg.method.nesterov is True
