"""Greedy layer-wise pretraining [PR 1.1, 3.3]: `init SELECTOR = from(RUN)`,
`labels = N`, and `netc pretrain` (stages in order, resumable, fine-tuning
from the pretrained weights). Tiny nets on tiny data: seconds."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import netc
from netc.cli import main

ROOT = Path(__file__).resolve().parent.parent

NET = """input x : [6]
target t : class(3)

h1 = dense(x, 5, act = sigmoid)
h2 = dense(h1, 4, act = sigmoid)
y = dense(h2, 3)

loss = nll(softmax(y), t)

data {
    train = npz("d.npz")
    labels = 20
}

train {
    method = sgd(lr = 0.1)
    epochs = 2
    seed = SEED
INIT}
"""

PRETRAIN = """
pretrain {
    layers = [h1, h2]
    drop = 0.25
    contractive = 0.1
    method = sgd(lr = 0.05, momentum = 0.9)
    epochs = 1
}
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A folder holding d.npz (60 examples in [0, 1], 3 classes), as the working directory."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(size=(60, 6)).astype("float32"), t=rng.integers(0, 3, 60))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def spec(folder: Path, name: str, seed: int = 1, init: str = "", pretrain: str = "") -> Path:
    p = folder / name
    p.write_text(NET.replace("SEED", str(seed)).replace("INIT", init) + pretrain)
    return p


def trained(folder: Path) -> netc.Model:
    """A run of NET (seed 1) in runs/a, one epoch."""
    m = netc.compile(spec(folder, "a.net"))
    m.fit(out=folder / "runs" / "a", epochs=1)
    return m


def error_of(path: Path, **kw) -> netc.NetcError:
    with pytest.raises(netc.NetcError) as e:
        netc.compile(path, **kw)
    return e.value


# ---------------------------------------------------------------------------- init ... = from(...)

def test_init_copies_exactly_the_selected_parameters(folder):
    a = trained(folder)
    fresh = netc.compile(spec(folder, "b.net", seed=2))  # what seed 2 draws
    b = netc.compile(spec(folder, "c.net", seed=2, init='    init h1 = from("runs/a")\n'))
    for k in a.params:
        if k.startswith("h1."):
            assert np.array_equal(b.params[k], a.params[k]), k
            assert not np.array_equal(b.params[k], fresh.params[k]), k
        else:
            assert np.array_equal(b.params[k], fresh.params[k]), k


def test_init_without_selector_copies_every_parameter_and_glob_selectors(folder):
    a = trained(folder)
    b = netc.compile(spec(folder, "b.net", seed=2, init='    init = from("runs/a")\n'))
    assert all(np.array_equal(b.params[k], a.params[k]) for k in a.params)
    c = netc.compile(spec(folder, "c.net", seed=2, init='    init params("*.b") = from("runs/a/params.npz")\n'))
    fresh = netc.compile(spec(folder, "d.net", seed=2))
    for k in a.params:
        assert np.array_equal(c.params[k], (a if k.endswith(".b") else fresh).params[k]), k


def test_init_paths_are_relative_to_the_spec(folder, monkeypatch):
    trained(folder)
    path = spec(folder, "b.net", seed=2, init='    init h2 = from("runs/a")\n')
    monkeypatch.chdir(folder / "runs")  # elsewhere: the spec's folder counts
    assert np.array_equal(netc.compile(path).params["h2.W"], netc.load(folder / "runs" / "a").params["h2.W"])


def _located(e: netc.NetcError, line: str, *words: str) -> None:
    text = e.render()
    assert re.search(r"\.net:\d+:\d+: ", text), text
    assert line in text and all(w in text for w in words), text


def test_init_from_a_missing_run_is_located(folder):
    e = error_of(spec(folder, "b.net", init='    init h1 = from("runs/none")\n'))
    _located(e, 'init h1 = from("runs/none")', "runs/none", "no checkpoint here")
    assert e.loc.line == 19 and e.loc.col == 15


def test_init_from_a_corrupt_run_is_refused_by_the_hostile_reader(folder):
    (folder / "runs" / "bad").mkdir(parents=True)
    (folder / "runs" / "bad" / "params.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    e = error_of(spec(folder, "b.net", init='    init h1 = from("runs/bad")\n'))
    _located(e, 'from("runs/bad")', "not a netc checkpoint")
    np.savez(folder / "runs" / "bad" / "params.npz", x=np.zeros(3))  # an .npz, but not netc's
    _located(error_of(spec(folder, "c.net", init='    init h1 = from("runs/bad")\n')), 'from("runs/bad")',
             "meta.json")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_init_from_a_run_holding_non_finite_weights_is_located_at_the_from(folder, bad):
    """Weights that are not finite (tampered, or saved as that run diverged) are refused at
    the from(...) naming the run and the field, not reported later at the user's layer."""
    trained(folder)
    ck = folder / "runs" / "a" / "params.npz"
    with np.load(ck, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["a/state/h1.W"] = arrays["a/state/h1.W"].copy()
    arrays["a/state/h1.W"][0, 0] = bad
    np.savez(ck, **arrays)
    e = error_of(spec(folder, "b.net", init='    init h1 = from("runs/a")\n'))
    _located(e, 'from("runs/a")', "runs/a", "'state/h1.W'", "not finite")
    assert netc.compile(spec(folder, "c.net", init='    init h2 = from("runs/a")\n')) is not None  # h2 is fine


def test_init_of_a_parameter_the_run_lacks_is_located(folder):
    trained(folder)
    text = NET.replace("SEED", "1").replace("INIT", '    init h3 = from("runs/a")\n').replace(
        "y = dense(h2, 3)", "h3 = dense(h2, 4)\ny = dense(h3, 3)")
    (folder / "b.net").write_text(text)
    e = error_of(folder / "b.net")
    _located(e, 'init h3 = from("runs/a")', "'h3.W' is not in runs/a", "h1.W")


def test_init_with_another_shape_names_both_shapes(folder):
    trained(folder)
    (folder / "b.net").write_text(NET.replace("SEED", "1").replace("INIT", '    init h1 = from("runs/a")\n')
                                  .replace("dense(x, 5", "dense(x, 7"))
    _located(error_of(folder / "b.net"), 'from("runs/a")', "'h1.W' is [6, 5] in runs/a but [6, 7] in this spec")


@pytest.mark.parametrize("value, words", [("3", "init takes from"), ('mnist("train")', "got mnist(...)"),
                                          ('from("a", "b")', "init takes from"), ("from(h1)", "init takes from")])
def test_init_takes_from_a_run_only(folder, value, words):
    _located(error_of(spec(folder, "b.net", init=f"    init h1 = {value}\n")), f"init h1 = {value}", words)


def test_init_selecting_nothing_is_located(folder):
    trained(folder)
    _located(error_of(spec(folder, "b.net", init='    init h9 = from("runs/a")\n')), "init h9", "selects no parameter")


def test_a_run_started_from_another_needs_it_no_more_once_saved(folder):
    trained(folder)
    b = netc.compile(spec(folder, "b.net", seed=2, init='    init h1 = from("runs/a")\n'))
    b.fit(out=folder / "runs" / "b", epochs=1)
    (folder / "runs" / "a" / "params.npz").unlink()
    loaded = netc.load(folder / "runs" / "b")  # its own checkpoint, not runs/a, holds its parameters
    assert all(np.array_equal(loaded.params[k], b.params[k]) for k in b.params)
    loaded.fit(epochs=1)  # continues from the loaded parameters: nothing is copied again
    resumed = netc.resume(folder / "runs" / "b", epochs=2)
    assert resumed.summary_["epochs"] == 2
    finished = netc.resume(folder / "runs" / "b")
    assert finished.resumed == "finished"
    finished.fit(epochs=1)  # trains on from its checkpoint's parameters, copies nothing


def test_init_set_from_python_is_refused(folder):
    with pytest.raises(netc.NetcError, match="write it in the spec's train block"):
        netc.compile(spec(folder, "b.net"), train={"init": "runs/a"})


# ---------------------------------------------------------------------------- labels = N

def test_labels_keeps_the_first_n_for_a_supervised_spec(folder):
    m = netc.compile(spec(folder, "b.net")).fit(epochs=2)
    assert m.summary_["age"] == 2 * 20  # labels = 20 of the 60 examples, two epochs
    auto = NET.replace("SEED", "1").replace("INIT", "").replace("target t : class(3)\n", "").replace(
        "loss = nll(softmax(y), t)", "loss = mse(dense(h2, 6), x)")
    (folder / "ae.net").write_text(auto)
    assert netc.compile(folder / "ae.net").fit(epochs=1).summary_["age"] == 60  # no target: every example


def test_labels_above_the_training_set_is_a_data_error(folder):
    (folder / "b.net").write_text(NET.replace("SEED", "1").replace("INIT", "").replace("labels = 20", "labels = 61"))
    with pytest.raises(netc.DataError, match="labels = 61, but the training set has 60 examples"):
        netc.compile(folder / "b.net").fit()


# ---------------------------------------------------------------------------- netc pretrain

def test_pretrain_runs_the_stages_in_order_and_fine_tunes_from_them(folder):
    lines = []
    m = netc.pretrain(spec(folder, "p.net", pretrain=PRETRAIN), log=lines.append)
    out = folder / "runs" / "p-pretrain"
    stages = [ln for ln in lines if ln.startswith("stage ")]
    assert [s.split(":")[0] for s in stages] == ["stage 1/3", "stage 2/3", "stage 3/3"]
    assert [r["stage"] for r in m.stages] == ["h1", "h2", "finetune"]
    assert [r["how"] for r in m.stages] == ["trained"] * 3
    h1, h2 = netc.load(out / "h1"), netc.load(out / "h2")
    assert h1.summary_["age"] == 60 and h2.summary_["age"] == 60  # the auto-encoders: every example
    assert m.summary_["age"] == 2 * 20  # fine-tuning: the 20 labels
    # stage 2 trained h2 on h1's codes with h1 frozen at stage 1's values
    assert all(np.array_equal(h2.params[k], h1.params[k]) for k in ("h1.W", "h1.b"))
    assert not np.array_equal(h2.params["h2.W"], netc.compile(spec(folder, "q.net")).params["h2.W"])
    # the fine-tuning run starts from the stages' weights (its spec says so, and compiles to them)
    text = (out / "finetune" / "spec.net").read_text()
    assert f'init h1 = from("{out / "h1"}")' in text and f'init h2 = from("{out / "h2"}")' in text
    start = netc.compile(text)
    for k in ("h1.W", "h1.b"):
        assert np.array_equal(start.params[k], h1.params[k])
    for k in ("h2.W", "h2.b"):
        assert np.array_equal(start.params[k], h2.params[k])
    assert not np.array_equal(m.params["h2.W"], h2.params["h2.W"])  # and fine-tuning moved them


def test_pretrain_skips_finished_stages_and_resumes_the_rest(folder):
    path = spec(folder, "p.net", pretrain=PRETRAIN)
    netc.pretrain(path)
    out = folder / "runs" / "p-pretrain"
    stamps = {s: (out / s / "params.npz").stat().st_mtime_ns for s in ("h1", "h2", "finetune")}
    m = netc.pretrain(path)
    assert [r["how"] for r in m.stages] == ["skipped (finished)"] * 3
    assert stamps == {s: (out / s / "params.npz").stat().st_mtime_ns for s in stamps}
    import shutil
    shutil.rmtree(out / "finetune")  # as if killed before fine-tuning
    m = netc.pretrain(path)
    assert [r["how"] for r in m.stages] == ["skipped (finished)", "skipped (finished)", "trained"]
    assert stamps["h2"] == (out / "h2" / "params.npz").stat().st_mtime_ns


def test_pretrain_refuses_a_folder_of_another_spec_unless_forced(folder):
    path = spec(folder, "p.net", pretrain=PRETRAIN)
    netc.pretrain(path)
    with pytest.raises(netc.NetcError, match="another --seed"):
        netc.pretrain(path, seed=5)
    changed = spec(folder, "p.net", pretrain=PRETRAIN.replace("drop = 0.25", "drop = 0.5"))
    with pytest.raises(netc.NetcError, match=r"h1 holds a run of this stage with another spec.*--force"):
        netc.pretrain(changed)
    m = netc.pretrain(changed, force=True)
    assert [r["how"] for r in m.stages] == ["trained"] * 3
    assert "mask(x, drop = 0.5)" in (folder / "runs" / "p-pretrain" / "h1" / "spec.net").read_text()


@pytest.mark.parametrize("block, line, words", [
    ("layers = [h1, h9]", "layers = [h1, h9]", "'h9' is not a layer of this spec"),
    ("layers = [h2, h1]", "layers = [h2, h1]", "'h2' does not read 'x'"),
    ("layers = [h1, h1]", "layers = [h1, h1]", "'h1' does not read 'h1'"),
    ("drop = 1.5", "drop = 1.5", "drop takes 0 <= drop < 1"),
    ("reconstruction = hinge", "reconstruction = hinge", "reconstruction takes cross_entropy or mse"),
    ("epochs = 0", "epochs = 0", "greater than or equal to 1"),
    ("methd = sgd(lr = 0.1)", "methd", "unknown key 'methd'"),
])
def test_pretrain_block_errors_are_located(folder, block, line, words):
    key = block.split()[0]
    text = re.sub(rf"    {key} = [^\n]*\n", f"    {block}\n", PRETRAIN) if f"    {key} =" in PRETRAIN else \
        PRETRAIN.replace("    epochs = 1\n", f"    {block}\n")
    path = spec(folder, "p.net", pretrain=text)
    with pytest.raises(netc.NetcError) as e:
        netc.pretrain(path)
    _located(e.value, line, words)


def test_pretrain_needs_layers_and_a_tied_weight(folder):
    path = spec(folder, "p.net", pretrain="\npretrain {\n    epochs = 1\n}\n")
    with pytest.raises(netc.NetcError, match="needs `layers"):
        netc.pretrain(path)
    (folder / "q.net").write_text(NET.replace("SEED", "1").replace("INIT", "").replace(
        "h1 = dense(x, 5, act = sigmoid)", "h1 = sigmoid(x @ param([6, 5]))") + PRETRAIN)
    with pytest.raises(netc.NetcError) as e:
        netc.pretrain(folder / "q.net")
    _located(e.value, "layers = [h1, h2]", "no weight matrix 'h1.W'")


def test_a_weight_that_cannot_be_tied_is_refused_before_any_stage_trains(folder):
    (folder / "q.net").write_text(NET.replace("SEED", "1").replace("INIT", "").replace(
        "h1 = dense(x, 5, act = sigmoid)",
        "def layer(x, n) {\n    W = param([n, dim(x)])\n    return sigmoid(x @ W')\n}\nh1 = layer(x, 5)") + PRETRAIN)
    with pytest.raises(netc.NetcError) as e:
        netc.pretrain(folder / "q.net")
    _located(e.value, "layers = [h1, h2]", "the auto-encoder of 'h1'", "[inputs, units]", "[6, 5]")
    assert not (folder / "runs").exists()


def test_netc_pretrain_command(folder, capsys):
    path = spec(folder, "p.net", pretrain=PRETRAIN)
    assert main(["pretrain", str(path), "--out", "runs/x", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"h1 +trained", out) and re.search(r"finetune +trained", out)
    assert main(["pretrain", str(path), "--out", "runs/x", "--no-progress"]) == 0
    assert "skipped (finished)" in capsys.readouterr().out
    assert main(["doc", "pretrain"]) == 0 and "layers" in capsys.readouterr().out
    assert main(["pretrain", str(spec(folder, "n.net"))]) == 2  # no pretrain block: a user error


def test_the_shipped_pair_differs_only_by_the_pretrain_block():
    def body(path):
        text = path.read_text()
        text = text.split("\npretrain {")[0]
        return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert body(ROOT / "specs" / "pretrain_1000.net") == body(ROOT / "specs" / "random_1000.net")
    assert "\npretrain {" in (ROOT / "specs" / "pretrain_1000.net").read_text()


def test_stage_specs_keep_the_users_lines_and_read_no_label():
    from netc.compiler.pretrain_spec import plan
    user = NET.replace("SEED", "1").replace("INIT", "") + PRETRAIN.replace("drop = 0.25", "drop = 0.5").replace(
        "contractive = 0.1", "reconstruction = mse")
    p = plan(user, "u.net")
    one, two = p.stage_text(0, ["/r/h1"]), p.stage_text(1, ["/r/h1", "/r/h2"])
    lines, first, second = user.splitlines(), one.splitlines(), two.splitlines()
    at = lines.index("h2 = dense(h1, 4, act = sigmoid)")
    assert first[at - 1] == "h1 = dense(mask(x, drop = 0.5), 5, act = sigmoid)" and first[at] == ""
    assert second[at - 1] == lines[at - 1] and second[at] == "h2 = dense(mask(h1, drop = 0.5), 4, act = sigmoid)"
    for text in (one, two):  # no target, nothing above the layer, the user's train block gone
        assert "target" not in text and "y = dense" not in text and "nll" not in text and "lr = 0.1)" not in text
    assert "pretrain_decoder = identity(h2 @ h2.W' + param([dim(h1)]))" in two
    assert "loss = mse(pretrain_decoder, h1)" in two and "contractive" not in two
    assert 'freeze h1 = true' in two and 'init h1 = from("/r/h1")' in two and "init h2" not in two
    finetune = p.finetune_text(["/r/h1", "/r/h2"]).splitlines()
    assert finetune[:len(lines) - 12] == lines[:len(lines) - 12]  # the user's text up to its train block
    assert "pretrain {" not in "\n".join(finetune)
