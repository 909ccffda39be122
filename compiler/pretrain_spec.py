"""Greedy layer-wise pretraining, the spec side: the `pretrain` block of a spec
-> one auto-encoder spec per layer and the fine-tuning spec [PR 1.1, 3.3].

Each spec is the user's own text with statements blanked out (every line and
column kept, so an error in the user's statements points at the user's file)
and a few lines added after it:

- stage k trains layer k as an auto-encoder of the layer below's codes (the
  spec's input for the first layer): the layers below are kept, frozen and
  copied from their own stages (`freeze`, `init ... = from(...)`); layer k's
  input is corrupted by `mask(input, drop)` (denoising) and decoded with the
  transposed weights (tied) into a reconstruction, scored by `cross_entropy`
  (sigmoid decoder, codes and inputs in [0, 1]) or `mse` (linear decoder),
  plus `contractive(layer, input)` with its weight; the target and everything
  above layer k are blanked out, so the stage reads no label;
- fine-tuning is the user's spec with the pretrain block blanked out and
  `init LAYER = from(STAGE)` entries added to its train block.

The pretrain block's other keys are train-block keys for every stage (method,
batch, epochs, ...), copied as written. Pure text -> text: netc/pretrain.py
trains the specs.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import syntax as S
from .errors import Loc, SpecError
from .format import expr_text, quote
from .parse import parse

AE_KEYS = ("layers", "drop", "contractive", "reconstruction")
RECONSTRUCTIONS = ("cross_entropy", "mse")
DECODER = "pretrain_decoder"


@dataclass(frozen=True)
class Stage:
    layer: str  # the layer this stage pretrains ("h1")
    input: str  # what it reconstructs: the spec's input, or the layer below
    loc: Loc  # the layer's name in the pretrain block's `layers`


@dataclass(frozen=True)
class Plan:
    text: str
    file: str
    stages: tuple[Stage, ...]
    drop: float
    contractive: float
    reconstruction: str
    train: tuple[str, ...]  # the stages' train-block lines (the pretrain block's other keys)
    module: S.Module

    def stage_text(self, k: int, folders: list[str]) -> str:
        """Stage k's auto-encoder spec; `folders[j]` is stage j's run folder (j < k)."""
        st = self.stages[k]
        below = [s.layer for s in self.stages[:k]]
        keep = _needed(self.module, st.layer)
        text = _blank(self.text, self.module, lambda s: not (
            isinstance(s, (S.InputDecl, S.Def, S.Use)) or (isinstance(s, S.Block) and s.name == "data")
            or (isinstance(s, S.Assign) and s.name in keep)))
        if self.drop:
            layer = next(s for s in self.module.stmts if isinstance(s, S.Assign) and s.name == st.layer)
            text = _corrupt(text, layer.value, st.input, self.drop)
        decoder = "sigmoid" if self.reconstruction == "cross_entropy" else "identity"
        loss = f"{self.reconstruction}({DECODER}, {st.input})"
        if self.contractive:
            loss += f" + {_num(self.contractive)} * contractive({st.layer}, {st.input})"
        noise = f"input masked with drop = {_num(self.drop)}" if self.drop else "no input noise"
        lines = [f"# ---- netc pretrain, stage {k + 1} of {len(self.stages)}: {st.layer} as an auto-encoder of "
                 f"{st.input} ({noise}, tied weights) ----",
                 f"{DECODER} = {decoder}({st.layer} @ {st.layer}.W' + param([dim({st.input})]))",
                 f"loss = {loss}",
                 "train {"]
        lines += [f"    {line}" for line in self.train]
        for j, name in enumerate(below):
            lines += [f"    freeze {name} = true", f"    init {name} = from({quote(folders[j])})"]
        lines.append("}")
        return _append(text, lines)

    def finetune_text(self, folders: list[str]) -> str:
        """The user's spec, its layers initialized from their stages' runs."""
        text = _blank(self.text, self.module, lambda s: isinstance(s, S.Block) and s.name == "pretrain")
        inits = [f"    init {s.layer} = from({quote(f)})" for s, f in zip(self.stages, folders)]
        train = next((s for s in self.module.stmts if isinstance(s, S.Block) and s.name == "train"), None)
        if train is None:
            return _append(text, ["# ---- netc pretrain: fine-tuning from the pretrained layers ----",
                                  "train {", *inits, "}"])
        at = _offset(text, train.loc.end_line, train.loc.end_col - 1)  # the block's closing brace
        return text[:at] + "\n".join(inits) + "\n" + text[at:]


def plan(text: str, file: str) -> Plan:
    """Read the spec's pretrain block (already validated as values by netc/pretrain_block.py)."""
    module = parse(text, file)
    block = next((s for s in module.stmts if isinstance(s, S.Block) and s.name == "pretrain"), None)
    if block is None:
        raise SpecError("this spec has no pretrain block: add one, e.g. pretrain { layers = [h1, h2] }",
                        None, text)
    entries = {e.key: e for e in block.entries if e.key in AE_KEYS}
    if "layers" not in entries:
        raise SpecError("the pretrain block needs `layers = [...]`: the layers to pretrain, input side first",
                        block.loc, text)
    names = entries["layers"].value
    items = names.items if isinstance(names, S.ListLit) else (names,)
    if not items or not all(isinstance(i, S.Name) for i in items):
        raise SpecError("layers takes a list of layer names, e.g. [h1, h2]", names.loc, text)
    assigned = {s.name: s for s in module.stmts if isinstance(s, S.Assign)}
    inputs = [s.name for s in module.stmts if isinstance(s, S.InputDecl)]
    stages = []
    for k, item in enumerate(items):
        if item.name not in assigned:
            raise SpecError(f"'{item.name}' is not a layer of this spec (no `{item.name} = ...`)", item.loc, text)
        if k == 0 and len(inputs) != 1:
            raise SpecError(f"the first layer reconstructs the spec's input: pretraining needs exactly one "
                            f"input, the spec has {len(inputs)}", item.loc, text)
        below = inputs[0] if k == 0 else items[k - 1].name
        if below not in _names(assigned[item.name].value):
            raise SpecError(f"'{item.name}' does not read '{below}': each layer's auto-encoder reconstructs "
                            f"the codes of the layer below (list the layers input side first)", item.loc, text)
        if any(s.layer == item.name for s in stages):
            raise SpecError(f"'{item.name}' is listed twice", item.loc, text)
        stages.append(Stage(item.name, below, item.loc))
    drop = _number(entries.get("drop"), 0.0)
    contractive = _number(entries.get("contractive"), 0.0)
    rec = entries.get("reconstruction")
    reconstruction = "cross_entropy" if rec is None else S.dotted_name(rec.value) or "?"
    train = tuple(f"{e.key}{'' if e.selector is None else ' ' + e.selector} = {expr_text(e.value)}"
                  for e in block.entries if e.key not in AE_KEYS)
    return Plan(text, file, tuple(stages), drop, contractive, reconstruction, train, module)


# ---------------------------------------------------------------------------- text surgery

def _offset(text: str, line: int, col: int) -> int:
    """The index in `text` of 1-based (line, col)."""
    at = 0
    for _ in range(line - 1):
        at = text.index("\n", at) + 1
    return at + col - 1


def _blank(text: str, module: S.Module, drop) -> str:
    """`text` with the statements `drop` selects replaced by spaces (newlines kept),
    each from its first character to the last (a block: its closing brace)."""
    chars = list(text)
    for s in module.stmts:
        if drop(s) and s.loc.end_line is not None:
            lo, hi = _offset(text, s.loc.line, s.loc.col), _offset(text, s.loc.end_line, s.loc.end_col)
            hi = max(hi, text.find("\n", hi) if text.find("\n", hi) >= 0 else len(text))  # a trailing comment
            chars[lo:hi] = [c if c == "\n" else " " for c in chars[lo:hi]]
    return "\n".join(line.rstrip(" \t") for line in "".join(chars).split("\n"))


def _corrupt(text: str, expr: S.Expr, name: str, drop: float) -> str:
    """Every read of `name` in `expr` (not `name.W`, not a called function) -> mask(name, drop)."""
    spots = []

    def walk(e):
        match e:
            case S.Name(name=n) if n == name:
                spots.append(e.loc)
            case S.Attr():
                return  # h1.W is a parameter, not the layer's output
            case S.Call(func=f, args=args, kwargs=kwargs):
                if not isinstance(f, S.Name):
                    walk(f)
                for a in args:
                    walk(a)
                for _, v in kwargs:
                    walk(v)
            case _:
                for v in vars(e).values():
                    for x in v if isinstance(v, tuple) else (v,):
                        if isinstance(x, S.Expr):
                            walk(x)
    walk(expr)
    for loc in sorted(spots, key=lambda l: (l.line, l.col), reverse=True):
        at = _offset(text, loc.line, loc.col)
        text = text[:at] + f"mask({name}, drop = {_num(drop)})" + text[at + len(name):]
    return text


def _append(text: str, lines: list[str]) -> str:
    return text.rstrip(" \t") + ("" if text.endswith("\n") else "\n") + "\n" + "\n".join(lines) + "\n"


def _names(e) -> set[str]:
    """Every bare name read in an expression."""
    out = set()

    def walk(x):
        if isinstance(x, S.Name):
            out.add(x.name)
        elif isinstance(x, S.Expr):
            for v in vars(x).values():
                for y in v if isinstance(v, tuple) else (v,):
                    walk(y[1] if isinstance(y, tuple) else y)
    walk(e)
    return out


def _needed(module: S.Module, layer: str) -> set[str]:
    """The assignments `layer` depends on (itself included), through other assignments."""
    assigned = {s.name: s for s in module.stmts if isinstance(s, S.Assign)}
    keep, todo = set(), [layer]
    while todo:
        n = todo.pop()
        if n in keep or n not in assigned:
            continue
        keep.add(n)
        todo += list(_names(assigned[n].value))
    return keep


def _number(entry: S.Entry | None, default: float) -> float:
    if entry is None:
        return default
    v = entry.value
    if isinstance(v, S.Num):
        return float(v.value)
    raise SpecError(f"{entry.key} takes a number", v.loc)


def _num(v: float) -> str:
    return f"{v:g}"
