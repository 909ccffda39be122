"""The pipeline's stages and the ways to look at them."""
from __future__ import annotations

import re

import netc
from netc.cli import main
from netc.compiler.graph import toposort
from netc.compiler.pipeline import dot, dump

SPEC = """input x : [6]
target t : class(3)
h = dense(x, 5, act = tanh)
y = dense(h, 3)
loss = nll(softmax(y), t) + 1e-3 * l2(weights)
"""


def test_every_stage_is_kept_and_grows_with_the_gradients():
    prog = netc.compile(SPEC).program
    sizes = {k: len(toposort(v)) for k, v in prog.stages.items()}
    assert list(sizes) == ["elaborate", "simplify", "differentiate", "simplify_grads"]
    assert sizes["differentiate"] > sizes["simplify"]
    assert prog.rules_fired.get("log_of_softmax") == 1


def test_dump_and_dot_cover_every_node_and_edge():
    prog = netc.compile(SPEC).program
    roots = prog.stages["simplify_grads"]
    nodes = toposort(roots)
    text = dump(roots)
    assert len([l for l in text.splitlines() if l.startswith("%")]) == len(nodes)
    g = dot(roots)
    assert g.startswith("digraph netc {") and g.rstrip().endswith("}")
    assert len(re.findall(r"^  n\d+ \[label=", g, re.M)) == len(nodes)
    assert len(re.findall(r"^  n\d+ -> n\d+;", g, re.M)) == sum(len(n.inputs) for n in nodes)


def test_emit_dot_from_the_command_line(tmp_path, capsys):
    spec = tmp_path / "s.net"
    spec.write_text(SPEC)
    assert main(["compile", str(spec), "--emit", "dot", "--after", "elaborate"]) == 0
    out = capsys.readouterr().out
    assert "digraph" in out and "h.W" in out and "log_softmax" not in out  # before the rewrite
    assert main(["compile", str(spec), "--emit", "dot", "--after", "simplify"]) == 0
    assert "log_softmax" in capsys.readouterr().out
