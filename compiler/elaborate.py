"""Elaborate a parsed spec into a graph: resolve names, expand `def`s, name
parameters by call path, check shapes, and collect the data/train blocks.

Values during elaboration: Nodes (tensors), Python numbers, strings, lists
(shape literals), functions (user `def`s and builtins), ParamSets (selectors
like `weights`) and init descriptors (dicts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from . import syntax as S
from .blocks import BlockEntry, block_entry, select_params
from .differentiate import grad as _grad
from .errors import ErrorList, Loc, NetcError, SpecError, did_you_mean
from .graph import BATCH, Graph, Node, shape_str
from .numbers import arith, literal
from .ops import language_ops
from .parse import parse
from .simplify import simplify
from .spec import Spec

MAX_ERRORS = 20
MAX_TENSOR = 2 ** 28  # values in one declared tensor (1 GiB of float32)


@dataclass(frozen=True)
class ParamSet:
    """A selection of parameters (`weights`, `biases`, `params(h2)`); ops map over it."""
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class UserFn:
    d: S.Def
    env: "Env"


@dataclass(frozen=True)
class Builtin:
    name: str
    fn: Callable  # (ctx, args: list, kwargs: dict, loc) -> value
    doc: str = ""


class _Poisoned(Exception):
    """A use of a name whose definition already failed: not reported twice."""


_POISON = object()


class Env:
    def __init__(self, parent: "Env | None" = None):
        self.vars: dict[str, Any] = {}
        self.parent = parent

    def lookup(self, name: str):
        e = self
        while e is not None:
            if name in e.vars:
                return e.vars[name]
            e = e.parent
        raise KeyError(name)

    def names(self):
        e, out = self, set()
        while e is not None:
            out |= set(e.vars)
            e = e.parent
        return out


# ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def prelude_module() -> S.Module:
    text = resources.files("netc.compiler").joinpath("prelude.net").read_text()
    return parse(text, "<prelude>")


def elaborate(module: S.Module, float_dtype: str = "float32",
              check_block: Callable[[str, list[BlockEntry], Loc], None] | None = None) -> Spec:
    """Syntax tree -> Spec. Raises SpecError, or ErrorList for several independent errors.

    `check_block(name, entries, loc)` validates a data/train/search block (the
    runtime owns their schemas); its errors are reported with the others.
    """
    ctx = _Context(Graph(float_dtype), module, check_block)
    return ctx.run()


class _Context:
    def __init__(self, G: Graph, module: S.Module, check_block=None):
        self.G = G
        self.check_block = check_block
        self.module = module
        self.spec = Spec(G, module.file, module.source)
        self.errors: list[NetcError] = []
        self.scope: list[tuple[str, str]] = []  # ("assign"|"call", name)
        self.call_stack: list[str] = []
        self.assigned: list[S.Expr] = []  # value expressions of the assignments being evaluated
        self.sources = {module.file: module.source}
        self.globals = Env(self._builtins())

    # -- driver --------------------------------------------------------------
    def run(self) -> Spec:
        prelude = prelude_module()
        for st in prelude.stmts:
            if isinstance(st, S.Def):
                self.globals.vars[st.name] = UserFn(st, self.globals)
        self._hoist(self.module, seen=[self.module.file])
        for st in self.module.stmts:
            if len(self.errors) >= MAX_ERRORS:
                break
            try:
                try:
                    self._stmt(st)
                except RecursionError:
                    raise SpecError("this statement is nested too deeply", st.loc) from None
            except _Poisoned:
                if isinstance(st, S.Assign):
                    self.globals.vars[st.name] = _POISON
            except NetcError as e:
                self._record(e)
                if isinstance(st, (S.Assign, S.InputDecl, S.TargetDecl)):
                    self.globals.vars[st.name] = _POISON
        if not self.errors:
            self._finish()
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ErrorList(self.errors)
        return self.spec

    def _record(self, e: NetcError):
        if isinstance(e, ErrorList):
            for x in e.errors:
                self._record(x)
            return
        if e.source is None and e.loc is not None:
            e.source = self.sources.get(e.loc.file)
        self.errors.append(e)

    def _hoist(self, module: S.Module, seen: list[str]):
        """Bind every `def` (and those of `use`d files) before the statements run."""
        for st in module.stmts:
            if isinstance(st, S.Def):
                self.globals.vars[st.name] = UserFn(st, self.globals)
                if module is self.module:
                    self.spec.functions[st.name] = self.globals.vars[st.name]
            elif isinstance(st, S.Use):
                try:
                    self._use(module, st, seen)
                except NetcError as e:
                    self._record(e)

    def _use(self, module: S.Module, st: S.Use, seen: list[str]):
        base = Path(module.file).parent if not module.file.startswith("<") else Path.cwd()
        path = (base / st.path).resolve()
        if str(path) in seen:
            chain = " -> ".join(Path(p).name for p in seen + [str(path)])
            raise SpecError(f"circular use: {chain}", st.loc)
        try:
            text = path.read_text()
        except OSError as e:
            raise SpecError(f"cannot read {st.path!r}: {e.strerror or e}", st.loc) from None
        self.sources[str(path)] = text
        used = parse(text, str(path))
        self._hoist(used, seen + [str(path)])

    def _finish(self):
        sp = self.spec
        if "loss" in sp.named:
            sp.loss = sp.named["loss"]
            if sp.loss.shape != ():
                raise SpecError(f"the loss must be a scalar, but it has shape {shape_str(sp.loss.shape)}; "
                                f"average it with mean(...)", sp.loss.loc, self.module.source)
        out = sp.named.get("output") or sp.named.get("y")
        if out is None:
            tensors = [n for k, n in sp.named.items() if k != "loss" and n.shape and n.shape[0] is BATCH]
            out = tensors[-1] if tensors else None
        sp.output = out

    # -- statements ------------------------------------------------------------
    def _stmt(self, st: S.Stmt):
        G, sp = self.G, self.spec
        match st:
            case S.Def() | S.Use():
                return
            case S.InputDecl(name=name, type=t):
                self._fresh(name, st.loc)
                dims = self._dims(self.eval(t, self.globals), t.loc, "an input's shape")
                node = G("input", name=name, shape=(BATCH, *dims), dtype=G.float_dtype, loc=st.loc)
                sp.inputs[name] = node
                self.globals.vars[name] = node
            case S.TargetDecl(name=name, type=t):
                self._fresh(name, st.loc)
                if isinstance(t, S.Call) and isinstance(t.func, S.Name) and t.func.name == "class":
                    if len(t.args) != 1 or t.kwargs:
                        raise SpecError("class(n) takes the number of classes", t.loc)
                    n = self._int(self.eval(t.args[0], self.globals), t.args[0].loc, "the number of classes")
                    node = G("input", name=name, shape=(BATCH,), dtype="int64", classes=n, loc=st.loc)
                else:
                    dims = self._dims(self.eval(t, self.globals), t.loc, "a target's shape")
                    node = G("input", name=name, shape=(BATCH, *dims), dtype=G.float_dtype, loc=st.loc)
                sp.targets[name] = node
                self.globals.vars[name] = node
            case S.Assign(name=name, value=v):
                if name in sp.named or name in sp.inputs or name in sp.targets:
                    raise SpecError(f"'{name}' is already defined", st.loc)
                value = self._assign(name, v, self.globals)
                self.globals.vars[name] = value
                if isinstance(value, Node):
                    sp.named[name] = value
                elif name in ("loss", "output"):
                    raise SpecError(f"'{name}' must be a tensor expression, got {_kind(value)}", v.loc)
            case S.Block(name=name, entries=entries):
                if name not in ("data", "train", "search"):
                    raise SpecError(f"unknown block '{name}'; expected data, train or search", st.loc,
                                    hint=did_you_mean(name, ["data", "train", "search"]))
                if name in sp.blocks:
                    raise SpecError(f"a second '{name}' block", st.loc)
                sp.blocks[name] = [block_entry(e) for e in entries]
                sp.block_locs[name] = st.loc
                if self.check_block is not None:
                    self.check_block(name, sp.blocks[name], st.loc)

    def _fresh(self, name: str, loc: Loc):
        if name in self.spec.named or name in self.spec.inputs or name in self.spec.targets:
            raise SpecError(f"'{name}' is already defined", loc)

    def _assign(self, name: str, expr: S.Expr, env: Env):
        self.scope.append(("assign", name))
        self.assigned.append(expr)
        try:
            return self.eval(expr, env)
        finally:
            self.scope.pop()
            self.assigned.pop()

    # -- expressions -------------------------------------------------------------
    def eval(self, e: S.Expr, env: Env):
        G = self.G
        match e:
            case S.Num(value=v):
                return literal(e)
            case S.Str(value=v):
                return v
            case S.Name(name=n):
                return self._name(n, e.loc, env)
            case S.BinOp(op=op, left=l, right=r):
                a, b = self.eval(l, env), self.eval(r, env)
                try:
                    return self._binop(op, a, b, e.loc)
                except SpecError as err:
                    if isinstance(a, Node) and isinstance(b, Node) and "shape" in err.message:
                        err.message += (f" (left: `{self._text(l)}` is {shape_str(a.shape)}, "
                                        f"right: `{self._text(r)}` is {shape_str(b.shape)})")
                    raise
            case S.Neg(operand=x):
                v = self.eval(x, env)
                if isinstance(v, (int, float)):
                    return -v
                return self._map1(lambda t: G("neg", t, loc=e.loc), v, e.loc, "-")
            case S.Transpose(operand=x):
                v = self._tensor(self.eval(x, env), x.loc, "'")
                return G("transpose", v, loc=e.loc)
            case S.Attr(obj=o, name=attr):
                dotted = _dotted(e)
                if dotted and dotted in self.spec.params:
                    return self.spec.params[dotted]
                v = self.eval(o, env)
                if attr == "T" and isinstance(v, Node):
                    return G("transpose", v, loc=e.loc)
                raise SpecError(f"{_kind(v)} has no attribute '{attr}'" if not dotted else
                                f"no parameter named '{dotted}'", e.loc,
                                hint=did_you_mean(dotted or attr, self.spec.params))
            case S.ListLit(items=items):
                return [self.eval(i, env) for i in items]
            case S.Index(obj=o, lo=lo, hi=hi, is_slice=is_slice):
                v = self.eval(o, env)
                if isinstance(v, list) and not is_slice:
                    i = self._int(self.eval(lo, env), lo.loc, "an index")
                    if not -len(v) <= i < len(v):
                        raise SpecError(f"index {i} is out of range for a list of {len(v)}", lo.loc)
                    return v[i]
                if isinstance(v, Node) and is_slice and v.ndim >= 2:  # features lo:hi of the last axis
                    bounds = {k: self._int(self.eval(b, env), b.loc, "a slice bound")
                              for k, b in (("lo", lo), ("hi", hi)) if b is not None}
                    return self.G("slice", v, axis=-1, loc=e.loc, **bounds)
                raise SpecError(f"cannot index {_kind(v)}" + ("; slice the last axis as x[lo:hi]"
                                                              if isinstance(v, Node) else ""), e.loc)
            case S.Call():
                return self._call(e, env)
        raise SpecError(f"cannot evaluate {type(e).__name__}", e.loc)

    def _text(self, e: S.Expr) -> str:
        """The source text of an expression (its first line, if it spans several)."""
        src = self.sources.get(e.loc.file)
        if src is None:
            return "..."
        lines = src.splitlines()
        line = lines[e.loc.line - 1] if 0 < e.loc.line <= len(lines) else ""
        end = e.loc.end_col - 1 if e.loc.end_line == e.loc.line and e.loc.end_col else len(line)
        return line[e.loc.col - 1:end]

    def _name(self, n: str, loc: Loc, env: Env):
        if n == "weights" or n == "biases":
            want = 2 if n == "weights" else 1
            return ParamSet(tuple(p for p in self.spec.params.values()
                                  if (p.ndim >= 2) == (want == 2)))
        if n in ("true", "false"):
            return n == "true"
        try:
            v = env.lookup(n)
        except KeyError:
            if n in ("loguniform", "uniform", "intrange", "choice"):  # netc/search.py reads them in blocks
                raise SpecError(f"{n}(...) is a search distribution: it can stand for a value in the data and "
                                f"train blocks, not in the network", loc) from None
            raise SpecError(f"unknown name '{n}'", loc, hint=did_you_mean(n, env.names())) from None
        if v is _POISON:
            raise _Poisoned()
        return v

    def _binop(self, op: str, a, b, loc: Loc):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return arith(op, a, b, loc, "@ needs tensors, not numbers")
        if isinstance(a, ParamSet) or isinstance(b, ParamSet):
            if op == "matmul":
                raise SpecError("@ cannot take a parameter selector", loc)
            ps, other, first = (a, b, True) if isinstance(a, ParamSet) else (b, a, False)
            if isinstance(other, ParamSet):
                raise SpecError("cannot combine two parameter selectors elementwise", loc)
            return ParamSet(tuple(self._binop(op, p, other, loc) if first else self._binop(op, other, p, loc)
                                  for p in ps.nodes))
        ta = self._tensor(a, loc, _SYMBOL[op], allow_number=True)
        tb = self._tensor(b, loc, _SYMBOL[op], allow_number=True)
        return self.G(op, ta, tb, loc=loc)

    def _map1(self, f, v, loc, what):
        if isinstance(v, ParamSet):
            return ParamSet(tuple(f(p) for p in v.nodes))
        return f(self._tensor(v, loc, what))

    def _tensor(self, v, loc: Loc, what: str, allow_number=False):
        if isinstance(v, Node):
            return v
        if allow_number and isinstance(v, (int, float)) and not isinstance(v, bool):
            return self.G.const(v)
        raise SpecError(f"{what} needs a tensor, got {_kind(v)}", loc)

    # -- calls -----------------------------------------------------------------
    def _call(self, e: S.Call, env: Env):
        if isinstance(e.func, S.Name) and e.func.name == "params":
            return self._select(e)
        if (isinstance(e.func, S.Name) and e.func.name in ("param", "buffer")
                and env.lookup(e.func.name) is self.globals.parent.vars[e.func.name]):
            args = [self.eval(a, env) for a in e.args]
            kwargs = {k: self.eval(v, env) for k, v in e.kwargs}
            direct = bool(self.assigned) and self.assigned[-1] is e
            return self._param(args, kwargs, e.loc, direct, kind=e.func.name.replace("buffer", "state"))
        f = self.eval(e.func, env)
        args = [self.eval(a, env) for a in e.args]
        kwargs = {}
        for k, v in e.kwargs:
            if k in kwargs:
                raise SpecError(f"argument '{k}' given twice", v.loc)
            kwargs[k] = self.eval(v, env)
        return self.apply(f, args, kwargs, e.loc, _callee_name(e.func))

    def apply(self, f, args: list, kwargs: dict, loc: Loc, name: str = "function"):
        if isinstance(f, Builtin):
            return f.fn(self, args, kwargs, loc)
        if not isinstance(f, UserFn):
            raise SpecError(f"'{name}' is {_kind(f)}, not a function", loc)
        d = f.d
        if d.name in self.call_stack:
            chain = " -> ".join(self.call_stack[self.call_stack.index(d.name):] + [d.name])
            raise SpecError(f"recursive call to '{d.name}' ({chain}); functions may not call themselves", loc)
        local = Env(f.env)
        names = [p.name for p in d.params]
        if len(args) > len(names):
            raise SpecError(f"'{d.name}' takes {len(names)} argument{'s' * (len(names) != 1)}, got {len(args)}", loc)
        for k in kwargs:
            if k not in names:
                raise SpecError(f"'{d.name}' has no argument '{k}'", loc,
                                hint=did_you_mean(k, names) or f"its arguments are: {', '.join(names)}")
        self.call_stack.append(d.name)
        self.scope.append(("call", d.name))
        mark = len(self.G)
        try:
            for i, p in enumerate(d.params):
                if i < len(args):
                    if p.name in kwargs:
                        raise SpecError(f"argument '{p.name}' of '{d.name}' given twice", loc)
                    local.vars[p.name] = args[i]
                elif p.name in kwargs:
                    local.vars[p.name] = kwargs[p.name]
                elif p.default is not None:
                    local.vars[p.name] = self.eval(p.default, local)
                else:
                    raise SpecError(f"'{d.name}' needs argument '{p.name}'", loc)
            for st in d.body:
                local.vars[st.name] = self._assign(st.name, st.value, local)
            return self.eval(d.result, local)
        except SpecError as e:
            if e.loc is not None and e.loc.file == "<prelude>" and loc is not None and loc.file != "<prelude>":
                # the user wrote the call, not the prelude line: point at the call
                e.message = f"in {d.name}(...): {e.message} (prelude line {e.loc.line})"
                e.loc, e.source = loc, None
            raise
        finally:
            self.scope.pop()
            self.call_stack.pop()
            if d.loc.file == "<prelude>" and loc is not None and loc.file != "<prelude>":
                self.G.locate_new(mark, loc, replacing="<prelude>")  # the user's line, not the prelude's

    def _select(self, e: S.Call):
        if len(e.args) != 1 or e.kwargs:
            raise SpecError("params(...) takes one layer name or glob pattern", e.loc)
        a = e.args[0]
        pattern = _dotted(a) or (a.value if isinstance(a, S.Str) else None)
        if pattern is None:
            raise SpecError("params(...) takes a layer name like h1 or a pattern like \"h*.W\"", a.loc)
        return ParamSet(select_params(self.spec.params, pattern, a.loc))

    # -- parameters --------------------------------------------------------------
    def _param_name(self, direct: bool) -> str:
        taken = {**self.spec.params, **self.spec.buffers}
        assigns = [n for kind, n in self.scope if kind == "assign"]
        if not direct:
            assigns = assigns + ["param"]
        first = ".".join(assigns)
        if first not in taken:
            return first
        segs = [n for _, n in self.scope] + ([] if direct else ["param"])
        calls = [i for i, (kind, _) in enumerate(self.scope) if kind == "call"]
        name = ".".join(segs)
        k = 2
        while name in taken:
            if calls:
                segs[calls[-1]] = f"{self.scope[calls[-1]][1]}_{k}"
            else:
                segs[-1] = f"{segs[-1].split('_')[0]}_{k}"
            name = ".".join(segs)
            k += 1
        return name

    def _param(self, args, kwargs, loc, direct=False, kind="param"):
        a = _bind(kind if kind == "param" else "buffer", ["shape", "init"], {"init": None}, args, kwargs, loc)
        dims = self._dims(a["shape"], loc, "a parameter's shape")
        default = "glorot" if kind == "param" and len(dims) >= 2 else "zeros"  # biases start at 0
        init = a["init"] if a["init"] is not None else self.globals.lookup(default)
        if isinstance(init, (UserFn, Builtin)):
            init = self.apply(init, [list(dims)], {}, loc, "init")
        if isinstance(init, (int, float)):
            init = {"dist": "constant", "value": float(init)}
        if not (isinstance(init, dict) and "dist" in init):
            raise SpecError(f"init must be an initialization such as glorot or fan_in, got {_kind(init)}", loc)
        name = self._param_name(direct)
        node = self.G(kind, name=name, shape=tuple(dims), init=init, loc=loc)
        if kind == "param":
            self.spec.params[name] = node
        else:
            self.spec.buffers[name] = node
        return node

    # -- checks ------------------------------------------------------------------
    def _int(self, v, loc, what) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise SpecError(f"{what} must be a whole number, got {_show(v)}", loc)
        return int(v)

    def _dims(self, v, loc, what) -> tuple[int, ...]:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, list):
            raise SpecError(f"{what} must be a list of sizes like [784], got {_kind(v)}", loc)
        dims = tuple(self._int(d, loc, "a size") for d in v)
        if any(d <= 0 for d in dims):
            raise SpecError(f"{what} has a size that is not positive: {list(dims)}", loc)
        total = 1
        for d in dims:
            total *= d
        if total > MAX_TENSOR:
            raise SpecError(f"{what} {list(dims)} has {total:,} values, more than netc allows ({MAX_TENSOR:,})", loc)
        return dims

    # -- blocks ----------------------------------------------------------------
    # -- builtins ------------------------------------------------------------------
    def _builtins(self) -> Env:
        env = Env()
        v = env.vars
        for name, op in language_ops().items():
            v[name] = Builtin(name, _op_builtin(name, op), op.doc)
        v["param"] = Builtin("param", lambda c, a, k, loc: c._param(a, k, loc),
                             "param(shape, init = glorot): a trainable tensor named by where it is assigned")
        v["dim"] = Builtin("dim", _dim, "dim(x, axis = -1): the size of one axis of x")
        v["buffer"] = Builtin("buffer", lambda c, a, k, loc: c._param(a, k, loc, kind="state"),
                              "buffer(shape, init = zeros): a tensor kept with the model but not trained "
                              "(set by the trainer, e.g. the transformation statistics)")
        v["grad"] = Builtin("grad", _grad_builtin, "grad(e, x): the derivative of scalar e with respect to x")
        v["jacobian"] = Builtin("jacobian", _jacobian_builtin,
                                "jacobian(y, x): per-example d y/d x, [B, m, n] for y [B, m] and x [B, n]")
        v["gaussian_init"] = Builtin("gaussian_init", _init("normal", "std"), "gaussian_init(std): N(0, std^2)")
        v["uniform_init"] = Builtin("uniform_init", _init("uniform", "limit"), "uniform_init(limit): U(-limit, limit)")
        v["constant_init"] = Builtin("constant_init", _init("constant", "value"), "constant_init(value)")
        for const, val in (("pi", math.pi), ("e", math.e)):
            v[const] = val
        return env


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@", "pow": "^"}


def _bind(fname, names, defaults, args, kwargs, loc) -> dict:
    if len(args) > len(names):
        raise SpecError(f"'{fname}' takes at most {len(names)} arguments, got {len(args)}", loc)
    out = dict(zip(names, args))
    for k, val in kwargs.items():
        if k not in names:
            raise SpecError(f"'{fname}' has no argument '{k}'", loc,
                            hint=did_you_mean(k, names) or f"its arguments are: {', '.join(names)}")
        if k in out:
            raise SpecError(f"argument '{k}' of '{fname}' given twice", loc)
        out[k] = val
    for n in names:
        if n not in out:
            if n not in defaults:
                raise SpecError(f"'{fname}' needs argument '{n}'", loc)
            out[n] = defaults[n]
    return out


def _op_builtin(name, op):
    params, defaults = op.lang
    tensors = [p for p in params if p not in defaults]

    def call(ctx: _Context, args, kwargs, loc):
        a = _bind(name, list(params), defaults, args, kwargs, loc)
        attrs = {k: a[k] for k in params if k in defaults}
        if name == "one_hot" and attrs.get("n") is None:
            t = a["t"]
            attrs["n"] = t.attr("classes") if isinstance(t, Node) else None
            if attrs["n"] is None:
                raise SpecError("one_hot(t, n) needs n unless t is a class(n) target", loc)
        for k in ("axis",):
            if k in attrs and attrs[k] is not None:
                ax = attrs[k]
                attrs[k] = tuple(ctx._int(x, loc, "an axis") for x in ax) if isinstance(ax, list) else ctx._int(ax, loc, "an axis")
        if "n" in attrs:
            attrs["n"] = ctx._int(attrs["n"], loc, "n")
        vals = [a[t] for t in tensors]
        sets = [v for v in vals if isinstance(v, ParamSet)]
        if sets:
            if name in ("sum", "mean") and len(vals) == 1:
                parts = [ctx.G(name, p, loc=loc, **attrs) for p in sets[0].nodes]
                if not parts:
                    return ctx.G.const(0.0)
                total = parts[0]
                for p in parts[1:]:
                    total = ctx.G("add", total, p, loc=loc)
                return total if name == "sum" else ctx.G("div", total, float(len(parts)), loc=loc)
            if len(sets) > 1:
                raise SpecError("cannot combine two parameter selectors elementwise", loc)
            return ParamSet(tuple(
                ctx.G(name, *[p if isinstance(v, ParamSet) else ctx._tensor(v, loc, name, True) for v in vals],
                      loc=loc, **attrs) for p in sets[0].nodes))
        ins = [ctx._tensor(v, loc, f"{name}()", allow_number=True) for v in vals]
        if all(i.op == "const" for i in ins) and all(isinstance(v, (int, float)) for v in vals) and op.kind == "elementwise":
            from .evaluate import evaluate
            return float(evaluate([ctx.G(name, *ins, loc=loc, **attrs)], {})[0])
        return ctx.G(name, *ins, loc=loc, **attrs)
    return call


def _dim(ctx: _Context, args, kwargs, loc):
    a = _bind("dim", ["x", "axis"], {"axis": -1}, args, kwargs, loc)
    x = ctx._tensor(a["x"], loc, "dim()")
    ax = ctx._int(a["axis"], loc, "an axis")
    if not -x.ndim <= ax < x.ndim:
        raise SpecError(f"axis {ax} is out of range for shape {shape_str(x.shape)}", loc)
    d = x.shape[ax]
    if d is None:
        raise SpecError("the batch dimension has no size at compile time", loc)
    return d


def _grad_builtin(ctx: _Context, args, kwargs, loc):
    a = _bind("grad", ["e", "x"], {}, args, kwargs, loc)
    e, x = ctx._tensor(a["e"], loc, "grad()"), a["x"]
    (e,) = simplify(ctx.G, [e])  # differentiate the stabilized forms, not the naive ones
    if isinstance(x, ParamSet):
        return ParamSet(tuple(_grad(ctx.G, e, list(x.nodes))))
    return _grad(ctx.G, e, [ctx._tensor(x, loc, "grad()")])[0]


def _jacobian_builtin(ctx: _Context, args, kwargs, loc):
    from .jacobian import jacobian
    a = _bind("jacobian", ["y", "x"], {}, args, kwargs, loc)
    y, x = ctx._tensor(a["y"], loc, "jacobian()"), ctx._tensor(a["x"], loc, "jacobian()")
    return jacobian(ctx.G, y, x, loc)


def _init(dist: str, key: str):
    def make(ctx, args, kwargs, loc):
        a = _bind(f"{dist}_init", [key], {}, args, kwargs, loc)
        val = a[key]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
            raise SpecError(f"{key} must be a finite number, got {_kind(val)}", loc)
        if key != "value" and val < 0:
            raise SpecError(f"{key} must be >= 0, got {val:g}", loc)
        return {"dist": dist, key: float(val)}
    return make


_dotted = S.dotted_name


def _callee_name(e: S.Expr) -> str:
    return _dotted(e) or "expression"


def _kind(v) -> str:
    if isinstance(v, Node):
        return f"a tensor {shape_str(v.shape)}"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return f"the number {v:g}"
    if isinstance(v, str):
        return f"the string {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, ParamSet):
        return "a parameter selector"
    if isinstance(v, (UserFn, Builtin)):
        return "a function"
    if isinstance(v, dict):
        return "an initialization"
    return type(v).__name__


def _show(v) -> str:
    return _kind(v)
