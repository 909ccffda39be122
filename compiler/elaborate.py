"""Elaborate a parsed spec into a graph: resolve names, expand `def`s, name
parameters by call path, check shapes, and collect the data/train blocks.

The values it computes with are in values.py, the builtins in builtins.py, the
block values in blocks.py; the result is a spec.Spec.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable

from . import free_dims, sources, syntax as S
from .blocks import BlockEntry, block_entry, select_params
from .builtins import builtins_env
from .errors import ErrorList, Loc, NetcError, SpecError, did_you_mean
from .graph import BATCH, Graph, Node, shape_str
from .numbers import arith, literal
from .parse import parse
from .spec import Spec
from .values import Builtin, Env, ParamSet, UserFn, as_tensor, bind, kind_of, sizes, whole_number

MAX_ERRORS = 20
BLOCKS = ("data", "train", "search", "pretrain")  # pretrain: read by netc/pretrain.py


class _Poisoned(Exception):
    """A use of a name whose definition already failed: not reported twice."""


_POISON = object()


# ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def prelude_module() -> S.Module:
    text = resources.files("netc.compiler").joinpath("prelude.net").read_text()
    return parse(text, "<prelude>")


def elaborate(module: S.Module, float_dtype: str = "float32",
              check_block: Callable[[str, list[BlockEntry], Loc], None] | None = None,
              read_use: sources.Reader = sources.read_use, probe_run: int = 0) -> Spec:
    """Syntax tree -> Spec. Raises SpecError, or ErrorList for several independent errors.

    `check_block(name, entries, loc)` validates a data/train/search block (the
    runtime owns their schemas); its errors are reported with the others.
    `read_use(path, shown, loc)` reads a `use`d file (a checkpoint's spec reads
    only the files embedded in it); every file read is kept in `Spec.used`.
    A `_` in an input's or target's declaration (a size the data gives) stands for
    free_dims.probe(probe_run, k) and is listed in `Spec.free` (free_dims.py).
    """
    ctx = _Context(Graph(float_dtype), module, check_block, read_use)
    ctx.probe_run = probe_run
    return ctx.run()


class _Context:
    def __init__(self, G: Graph, module: S.Module, check_block=None, read_use: sources.Reader = sources.read_use):
        self.G = G
        self.check_block = check_block
        self.read_use = read_use
        self.module = module
        self.spec = Spec(G, module.file, module.source)
        self.errors: list[NetcError] = []
        self.scope: list[tuple[str, str]] = []  # ("assign"|"call", name)
        self.call_stack: list[str] = []
        self.assigned: list[S.Expr] = []  # value expressions of the assignments being evaluated
        self.sources = {module.file: module.source}
        self.globals = Env(builtins_env())
        self.probe_run = 0  # which stand-in sizes a `_` takes (free_dims.PROBES)

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
        text = self.read_use(path, st.path, st.loc)
        self.sources[str(path)] = text
        self.spec.used[str(path)] = text
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
                dims = self._declared(name, t, "an input's shape", False)
                node = G("input", name=name, shape=(BATCH, *dims), dtype=G.float_dtype, loc=st.loc)
                sp.inputs[name] = node
                self.globals.vars[name] = node
            case S.TargetDecl(name=name, type=t):
                self._fresh(name, st.loc)
                if isinstance(t, S.Call) and isinstance(t.func, S.Name) and t.func.name == "class":
                    if len(t.args) != 1 or t.kwargs:
                        raise SpecError("class(n) takes the number of classes", t.loc)
                    n = self._free(name, None, t.args[0], True) if free_dims.is_free(t.args[0]) else \
                        whole_number(self.eval(t.args[0], self.globals), t.args[0].loc, "the number of classes")
                    node = G("input", name=name, shape=(BATCH,), dtype="int64", classes=n, loc=st.loc)
                else:
                    dims = self._declared(name, t, "a target's shape", True)
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
                    raise SpecError(f"'{name}' must be a tensor expression, got {kind_of(value)}", v.loc)
            case S.Block(name=name, entries=entries):
                if name not in BLOCKS:
                    raise SpecError(f"unknown block '{name}'; expected data, train, search or pretrain", st.loc,
                                    hint=did_you_mean(name, list(BLOCKS)))
                if name in sp.blocks:
                    raise SpecError(f"a second '{name}' block", st.loc)
                sp.blocks[name] = [block_entry(e) for e in entries]
                sp.block_locs[name] = st.loc
                if self.check_block is not None:
                    self.check_block(name, sp.blocks[name], st.loc)

    def _declared(self, name: str, t: S.Expr, what: str, target: bool) -> tuple[int, ...]:
        """A declaration's sizes; each `_` among them is a size the data gives."""
        items = free_dims.declared_items(t)
        if not any(free_dims.is_free(i) for i in items):
            return sizes(self.eval(t, self.globals), t.loc, what)
        vals = [self._free(name, k, i, target) if free_dims.is_free(i) else self.eval(i, self.globals)
                for k, i in enumerate(items)]
        return sizes(vals, t.loc, what)

    def _free(self, name: str, axis: int | None, e: S.Expr, target: bool) -> int:
        """A stand-in size for one `_` (free_dims.py); the data binds it before training."""
        self.spec.free.append(free_dims.FreeDim(name, axis, e.loc, target))
        return free_dims.probe(self.probe_run, len(self.spec.free) - 1)

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
                v = as_tensor(self.G, self.eval(x, env), x.loc, "'")
                return G("transpose", v, loc=e.loc)
            case S.Attr(obj=o, name=attr):
                dotted = S.dotted_name(e)
                if dotted and dotted in self.spec.params:
                    return self.spec.params[dotted]
                v = self.eval(o, env)
                if attr == "T" and isinstance(v, Node):
                    return G("transpose", v, loc=e.loc)
                raise SpecError(f"{kind_of(v)} has no attribute '{attr}'" if not dotted else
                                f"no parameter named '{dotted}'", e.loc,
                                hint=did_you_mean(dotted or attr, self.spec.params))
            case S.ListLit(items=items):
                return [self.eval(i, env) for i in items]
            case S.Index(obj=o, lo=lo, hi=hi, is_slice=is_slice):
                v = self.eval(o, env)
                if isinstance(v, list) and not is_slice:
                    i = whole_number(self.eval(lo, env), lo.loc, "an index")
                    if not -len(v) <= i < len(v):
                        raise SpecError(f"index {i} is out of range for a list of {len(v)}", lo.loc)
                    return v[i]
                if isinstance(v, Node) and is_slice and v.ndim >= 2:  # features lo:hi of the last axis
                    bounds = {k: whole_number(self.eval(b, env), b.loc, "a slice bound")
                              for k, b in (("lo", lo), ("hi", hi)) if b is not None}
                    return self.G("slice", v, axis=-1, loc=e.loc, **bounds)
                raise SpecError(f"cannot index {kind_of(v)}" + ("; slice the last axis as x[lo:hi]"
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
            if n == free_dims.FREE:
                raise SpecError("`_` stands for a size the data gives, and only in a declaration: "
                                "input x : [_], target t : class(_) or [_]", loc,
                                hint="use dim(x) for an input's width, classes(t) for a target's "
                                     "number of classes") from None
            if n in ("loguniform", "uniform", "intrange", "choice"):  # netc/search_space.py reads them in blocks
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
        ta = as_tensor(self.G, a, loc, _SYMBOL[op], allow_number=True)
        tb = as_tensor(self.G, b, loc, _SYMBOL[op], allow_number=True)
        return self.G(op, ta, tb, loc=loc)

    def _map1(self, f, v, loc, what):
        if isinstance(v, ParamSet):
            return ParamSet(tuple(f(p) for p in v.nodes))
        return f(as_tensor(self.G, v, loc, what))

    # -- calls -----------------------------------------------------------------
    def _call(self, e: S.Call, env: Env):
        if isinstance(e.func, S.Name) and e.func.name == "params":
            return self._select(e)
        if (isinstance(e.func, S.Name) and e.func.name in ("param", "buffer")
                and env.lookup(e.func.name) is self.globals.parent.vars[e.func.name]):
            args = [self.eval(a, env) for a in e.args]
            kwargs = {k: self.eval(v, env) for k, v in e.kwargs}
            direct = bool(self.assigned) and self.assigned[-1] is e
            return self.param(args, kwargs, e.loc, direct, kind=e.func.name.replace("buffer", "state"))
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
            raise SpecError(f"'{name}' is {kind_of(f)}, not a function", loc)
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
        pattern = S.dotted_name(a) or (a.value if isinstance(a, S.Str) else None)
        if pattern is None:
            raise SpecError("params(...) takes a layer name like h1 or a pattern like \"h*.W\"", a.loc)
        return ParamSet(select_params(self.spec.params, pattern, a.loc))

    # -- parameters --------------------------------------------------------------
    def param(self, args, kwargs, loc, direct=False, kind="param"):
        a = bind(kind if kind == "param" else "buffer", ["shape", "init"], {"init": None}, args, kwargs, loc)
        dims = sizes(a["shape"], loc, "a parameter's shape")
        default = "glorot" if kind == "param" and len(dims) >= 2 else "zeros"  # biases start at 0
        init = a["init"] if a["init"] is not None else self.globals.lookup(default)
        if isinstance(init, (UserFn, Builtin)):
            init = self.apply(init, [list(dims)], {}, loc, "init")
        if isinstance(init, (int, float)):
            init = {"dist": "constant", "value": float(init)}
        if not (isinstance(init, dict) and "dist" in init):
            raise SpecError(f"init must be an initialization such as glorot or fan_in, got {kind_of(init)}", loc)
        name = _param_name(self.scope, {**self.spec.params, **self.spec.buffers}, direct)
        node = self.G(kind, name=name, shape=tuple(dims), init=init, loc=loc)
        if kind == "param":
            self.spec.params[name] = node
        else:
            self.spec.buffers[name] = node
        return node

_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@", "pow": "^"}


def _callee_name(e: S.Expr) -> str:
    return S.dotted_name(e) or "expression"


def _param_name(scope: list[tuple[str, str]], taken, direct: bool) -> str:
    """A parameter's name: its assignments' names joined by dots (`h1.W`), or, when
    that is taken (a `def` called twice), the whole call path with a counter."""
    assigns = [n for kind, n in scope if kind == "assign"]
    if not direct:
        assigns = assigns + ["param"]
    first = ".".join(assigns)
    if first not in taken:
        return first
    segs = [n for _, n in scope] + ([] if direct else ["param"])
    calls = [i for i, (kind, _) in enumerate(scope) if kind == "call"]
    name = ".".join(segs)
    k = 2
    while name in taken:
        if calls:
            segs[calls[-1]] = f"{scope[calls[-1]][1]}_{k}"
        else:
            segs[-1] = f"{segs[-1].split('_')[0]}_{k}"
        name = ".".join(segs)
        k += 1
    return name
