"""Transformed nonlinearities [RV]: Raiko, Valpola & LeCun (2012); Vatanen et
al. (2013). A `transformed` layer computes gamma * (tanh(a) + alpha * a + beta)
with a = u @ W + b; every N updates the trainer re-estimates

    alpha = -mean tanh'(a)                      (zero slope on average)
    beta  = -mean (tanh(a) + alpha a)           (zero output on average)
    gamma = 1 / std(tanh(a) + alpha a + beta)   (unit scale, at most GAMMA_MAX;
                                                 the exact definition is a (check) item)

on a sample of the training set, and changes the layer's consumers so the
network computes the same function: each consumer's weights A are rescaled by
gamma_old / gamma_new, its bias absorbs the constant change, and a linear
shortcut from the layer's input u to the same sum absorbs the linear change
(C <- C - W diag(gamma (alpha_new - alpha_old)) A). Where the spec has no such
shortcut the linear change cannot be compensated, and the run's log says so.
Momentum is reset after each refresh.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netc.compiler.graph import Node, toposort
from netc.compiler.pipeline import Program


GAMMA_MAX = 10.0  # a unit that is almost linear has a tiny residual: do not blow it up


@dataclass
class Consumer:
    A: str  # the weight that reads the layer's output
    bias: str | None  # a rank-1 parameter added to the same sum
    shortcut: str | None  # a weight reading the layer's input, added to the same sum


@dataclass
class Layer:
    name: str
    pre: Node  # a = u @ W + b
    input: Node  # u
    consumers: list[Consumer] = field(default_factory=list)

    def key(self, what: str) -> str:
        return f"{self.name}.{what}"


def find_layers(program: Program) -> list[Layer]:
    spec = program.spec
    roots = [n for n in (spec.loss, spec.output) if n is not None]
    order = toposort(roots)
    users: dict[int, list[Node]] = {}
    for n in order:
        for i in n.inputs:
            users.setdefault(i.id, []).append(n)
    layers = []
    for name in spec.buffers:
        if not name.endswith(".alpha"):
            continue
        p = name[: -len(".alpha")]
        W, b = spec.params.get(f"{p}.W"), spec.params.get(f"{p}.b")
        gamma = spec.buffers.get(f"{p}.gamma")
        if W is None or b is None or gamma is None or f"{p}.beta" not in spec.buffers:
            continue
        pre = next((n for n in order if n.op == "add" and n.inputs[1] is b and n.inputs[0].op == "matmul"
                    and n.inputs[0].inputs[1] is W), None)
        out = next((n for n in order if n.op == "mul" and n.inputs[0] is gamma), None)
        if pre is None or out is None:
            continue
        layer = Layer(p, pre, pre.inputs[0].inputs[0])
        for m in users.get(out.id, []):
            if m.op == "matmul" and m.inputs[0] is out and m.inputs[1].op == "param":
                layer.consumers.append(_consumer(m, layer.input, users))
        layers.append(layer)
    return layers


def _consumer(m: Node, u: Node, users) -> Consumer:
    root = m
    while len(users.get(root.id, [])) == 1 and users[root.id][0].op == "add":
        root = users[root.id][0]
    terms, stack = [], [root]
    while stack:
        n = stack.pop()
        if n.op == "add":
            stack.extend(n.inputs)
        else:
            terms.append(n)
    bias = next((t.name for t in terms if t.op == "param" and t.ndim == 1), None)
    shortcut = next((t.inputs[1].name for t in terms if t.op == "matmul" and t.inputs[0] is u
                     and t.inputs[1].op == "param"), None)
    return Consumer(m.inputs[1].name, bias, shortcut)


class Refresher:
    def __init__(self, program: Program, log):
        self.program = program
        self.layers = find_layers(program)
        self.log = log
        self.warned: set[str] = set()
        inputs = list(program.spec.inputs.values())
        self.fns = [program.function([layer.pre], inputs, name="pre_activation") for layer in self.layers]

    def refresh(self, state: dict, x: np.ndarray) -> None:
        for layer, fn in zip(self.layers, self.fns):
            (a,) = fn(state, x)  # after the refreshes before it: the function may have moved
            self._refresh(layer, state, a.astype(np.float64))
        for name, arr in state.items():  # momentum belongs to the old parametrization
            if name.endswith(".velocity"):
                arr[...] = 0

    def _refresh(self, layer: Layer, state: dict, a: np.ndarray) -> None:
        th = np.tanh(a)
        alpha = -np.mean(1 - th ** 2, axis=0)
        beta = -np.mean(th + alpha * a, axis=0)
        gamma = 1.0 / np.maximum(np.std(th + alpha * a + beta, axis=0), 1.0 / GAMMA_MAX)
        a_old, b_old, g_old = (state[layer.key(k)].astype(np.float64) for k in ("alpha", "beta", "gamma"))
        W, b = state[layer.key("W")].astype(np.float64), state[layer.key("b")].astype(np.float64)
        delta = g_old * (alpha - a_old)  # the change of the linear part, per unit
        eps = g_old * (beta - b_old) + b * delta  # ... and of the constant part
        for c in layer.consumers:
            A = state[c.A].astype(np.float64)
            if c.shortcut is not None:
                state[c.shortcut][...] = state[c.shortcut] - (W * delta) @ A
            elif layer.name not in self.warned:
                self.warned.add(layer.name)
                self.log(f"transforms: no shortcut from the input of '{layer.name}' to the sum that reads it "
                         f"through '{c.A}'; the linear change there is not compensated")
            if c.bias is not None:
                state[c.bias][...] = state[c.bias] - eps @ A
            state[c.A][...] = A * (g_old / gamma)[:, None]
        state[layer.key("alpha")][...] = alpha
        state[layer.key("beta")][...] = beta
        state[layer.key("gamma")][...] = gamma
