"""Export a trained predictor as an ONNX model (`netc export RUN --format onnx`).

The exported graph is what `Model.predict_raw` computes, so another runtime
(onnxruntime, a browser, a phone) gives the same numbers without netc:

    x (raw features) --input normalization--> the predict graph --> output
                                                          |--> probabilities (softmax/sigmoid models)
                                                          |--> labels (class targets)
                                                          |--> prediction (normalize_target's inverse)

The predict graph is the compiled program's own (`Program.output` after
simplification, random ops replaced by their expected value, as `predict`
runs it), translated node by node through one table keyed by op name
(`TRANSLATE`). An op with no entry is refused with its name and the `.net`
line that made it. Parameters and state become initializers; the batch
dimension is the symbolic "N". The fitted input normalization becomes the
leading nodes (affine kinds and the fixed log/sqrt squashings; uniformize,
a per-feature table lookup, is refused).

onnx is imported only here, and only when exporting: it is an optional extra
(`pip install 'netc[onnx]'`). Nothing is pickled or evaluated: the model is
built with `onnx.helper` from arrays and the op table's attributes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from netc.compiler.errors import NetcError
from netc.compiler.node import Node, toposort
from netc.compiler.ops import _sum_to_axes, expected
from netc.compiler.pipeline import to_host

__all__ = ["OPSET", "TRANSLATE", "require_onnx", "to_onnx", "export", "signature"]

OPSET = 18  # reductions take their axes as an input from 18 on (one form for all of them)
BATCH = "N"  # the symbolic batch dimension's name
OUTPUTS = ("output", "probabilities", "labels", "prediction")
INSTALL = "pip install 'netc[onnx]'"


def require_onnx():
    """The onnx module, or a NetcError (exit 2) saying how to install it."""
    try:
        import onnx
        from onnx import helper, numpy_helper  # noqa: F401
    except ImportError:
        raise NetcError(f"ONNX export needs the onnx package, which is not installed: {INSTALL}") from None
    return onnx


class _Builder:
    """The ONNX graph under construction: nodes, initializers, and the tensor name of
    each netc node. Names are generated ("n<id>", "c<k>"), never taken from a file,
    except the graph input (the spec's input name) and the fixed output names."""

    def __init__(self, onnx, state: dict, batch_ref: str | None):
        self.onnx, self.helper = onnx, onnx.helper
        self.state = state
        self.nodes: list = []
        self.inits: list = []
        self.names: dict[int, str] = {}
        self.batch_ref = batch_ref  # a graph input whose first dimension is N
        self._k = 0
        self._consts: dict = {}

    def fresh(self, stem: str = "t") -> str:
        self._k += 1
        return f"{stem}{self._k}"

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.fresh()
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def array(self, a: np.ndarray, stem: str = "c") -> str:
        name = self.fresh(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(a), name))
        return name

    def const(self, value, dtype: str) -> str:
        """A scalar (or a small list, e.g. axes) as an initializer, shared between uses."""
        a = np.asarray(value, dtype=dtype)
        key = (a.dtype.str, a.shape, a.tobytes())
        if key not in self._consts:
            self._consts[key] = self.array(a)
        return self._consts[key]

    def cast(self, name: str, have: str, want: str) -> str:
        if have == want:
            return name
        return self.op("Cast", [name], to=_onnx_type(self.onnx, want))

    def batch_size(self) -> str:
        """[N] as a 1-D int64 tensor, read from the graph input at run time."""
        if self.batch_ref is None:
            raise NetcError("ONNX export: the output has a batch dimension the inputs do not give")
        return self.op("Shape", [self.batch_ref], start=0, end=1)

    def shape(self, shape: tuple) -> str:
        """A shape as a 1-D int64 tensor, the batch dimension (None) read at run time."""
        if None not in shape:
            return self.const(list(shape), "int64")
        parts = [self.batch_size() if d is None else self.const([d], "int64") for d in shape]
        return self.op("Concat", parts, axis=0)


def _onnx_type(onnx, dtype: str) -> int:
    types = {"float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE,
             "int64": onnx.TensorProto.INT64, "int32": onnx.TensorProto.INT32,
             "bool": onnx.TensorProto.BOOL, "float16": onnx.TensorProto.FLOAT16}
    if dtype not in types:
        raise NetcError(f"ONNX export: no ONNX type for dtype {dtype!r}")
    return types[dtype]


# -- the translation table: op name -> (builder, node, input tensor names) -> tensor name --------


def _args(b: _Builder, n: Node, a: list[str], dtype: str | None = None) -> list[str]:
    """The inputs cast to one dtype (the node's, by default): ONNX does not promote."""
    want = dtype or n.dtype
    return [b.cast(x, i.dtype, want) for x, i in zip(a, n.inputs)]


def _unary(op_type: str) -> Callable:
    return lambda b, n, a: b.op(op_type, _args(b, n, a))


def _binary(op_type: str) -> Callable:
    return lambda b, n, a: b.op(op_type, _args(b, n, a))


def _compare(op_type: str, negate: bool = False) -> Callable:
    """1 where the comparison holds, else 0, in the node's dtype (netc's comparisons are numbers)."""
    def translate(b, n, a):
        x, y = n.inputs
        common = x.dtype if x.dtype == y.dtype else ("float64" if "float64" in (x.dtype, y.dtype) else n.dtype)
        r = b.op(op_type, _args(b, n, a, common))
        if negate:
            r = b.op("Not", [r])
        return b.cast(r, "bool", n.dtype)
    return translate


def _square(b, n, a):
    (x,) = _args(b, n, a)
    return b.op("Mul", [x, x])


def _log1p(b, n, a):
    (x,) = _args(b, n, a)
    return b.op("Log", [b.op("Add", [x, b.const(1, n.dtype)])])


def _expm1(b, n, a):
    (x,) = _args(b, n, a)
    return b.op("Sub", [b.op("Exp", [x]), b.const(1, n.dtype)])


def _softplus(b, n, a):
    """log1p(exp(-|x|)) + max(x, 0), the stable form netc computes."""
    (x,) = _args(b, n, a)
    e = b.op("Exp", [b.op("Neg", [b.op("Abs", [x])])])
    return b.op("Add", [b.op("Log", [b.op("Add", [e, b.const(1, n.dtype)])]),
                        b.op("Max", [x, b.const(0, n.dtype)])])


def _clip(b, n, a):
    (x,) = _args(b, n, a)
    lo, hi = n.attr("lo", -np.inf), n.attr("hi", np.inf)
    return b.op("Clip", [x, b.const(lo, n.dtype) if lo > -np.inf else "",
                         b.const(hi, n.dtype) if hi < np.inf else ""])


def _where(b, n, a):
    c, x, y = a
    cond = b.op("Not", [b.op("Equal", [c, b.const(0, n.inputs[0].dtype)])])
    return b.op("Where", [cond, b.cast(x, n.inputs[1].dtype, n.dtype), b.cast(y, n.inputs[2].dtype, n.dtype)])


def _const(b, n, a):
    return b.const(n.attr("value"), n.attr("dtype") or n.dtype)


def _count(b, n, a):
    known = int(np.prod([d for d in n.attr("dims") if d is not None], dtype=np.int64))
    if None not in n.attr("dims"):
        return b.const(known, n.dtype)
    size = b.op("Squeeze", [b.batch_size(), b.const([0], "int64")])
    size = b.cast(size, "int64", n.dtype)
    return b.op("Mul", [size, b.const(known, n.dtype)])


def _reshape(b, n, a):
    # the batch dimension (None) is the input's first: ONNX's 0 copies it, even for N = 0
    shape = [0 if d is None else d for d in n.attr("shape")]
    return b.op("Reshape", [a[0], b.const(shape, "int64")])


def _slice(b, n, a):
    (ax,) = n.attr("axes")
    return b.op("Slice", [a[0], b.const([n.attr("lo")], "int64"), b.const([n.attr("hi")], "int64"),
                          b.const([ax], "int64")])


def _pad(b, n, a):
    (ax,), rank = n.attr("axes"), n.ndim
    pads = [0] * (2 * rank)
    pads[ax], pads[rank + ax] = n.attr("before"), n.attr("after")
    return b.op("Pad", [a[0], b.const(pads, "int64")])


def _concat(b, n, a):
    return b.op("Concat", _args(b, n, a), axis=n.attr("axes")[0])


def _take(b, n, a):
    return b.op("Gather", [a[0], a[1]], axis=0)


def _one_hot(b, n, a):
    hit = b.op("Equal", [b.op("Unsqueeze", [a[0], b.const([-1], "int64")]),
                         b.const(np.arange(n.attr("n")), n.inputs[0].dtype)])
    return b.cast(hit, "bool", n.dtype)


def _matmul(b, n, a):
    return b.op("MatMul", _args(b, n, a))


def _transpose(b, n, a):
    return b.op("Transpose", [a[0]])  # no perm: all axes reversed, as NumPy's .T


def _reduce(op_type: str) -> Callable:
    def translate(b, n, a):
        axes = n.attr("axes")
        (x,) = _args(b, n, a)
        if not axes:
            return b.op("Identity", [x])
        return b.op(op_type, [x, b.const(list(axes), "int64")], keepdims=int(bool(n.attr("keepdims"))))
    return translate


def _argmax(b, n, a):
    return b.op("ArgMax", [a[0]], axis=n.attr("axes")[0], keepdims=0)


def _sum_to(b, n, a):
    lead, kept = _sum_to_axes(n.inputs[0].shape, n.attr("shape"))
    if not lead + kept:
        return b.op("Identity", [a[0]])
    y = b.op("ReduceSum", [a[0], b.const(list(lead + kept), "int64")], keepdims=1)
    return b.op("Squeeze", [y, b.const(list(lead), "int64")]) if lead else y


def _broadcast(b, n, a):
    x = a[0]
    if n.attr("axes"):
        x = b.op("Unsqueeze", [x, b.const(list(n.attr("axes")), "int64")])
    return b.op("Expand", [x, b.shape(tuple(n.attr("shape")))])


def _softmax(op_type: str) -> Callable:
    return lambda b, n, a: b.op(op_type, _args(b, n, a), axis=n.attr("axes")[0])


def _logsumexp(b, n, a):
    """max + log(sum(exp(x - max))), as netc computes it (stable for large scores)."""
    (x,) = _args(b, n, a)
    axes = b.const(list(n.attr("axes")), "int64")
    m = b.op("ReduceMax", [x, axes], keepdims=1)
    s = b.op("ReduceSum", [b.op("Exp", [b.op("Sub", [x, m])]), axes], keepdims=1)
    y = b.op("Add", [m, b.op("Log", [s])])
    return y if n.attr("keepdims") else b.op("Squeeze", [y, axes])


TRANSLATE: dict[str, Callable] = {
    "const": _const, "count": _count,
    "neg": _unary("Neg"), "exp": _unary("Exp"), "log": _unary("Log"), "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"), "abs": _unary("Abs"), "sign": _unary("Sign"), "sqrt": _unary("Sqrt"),
    "square": _square, "log1p": _log1p, "expm1": _expm1, "softplus": _softplus,
    "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "div": _binary("Div"),
    "pow": _binary("Pow"), "maximum": _binary("Max"), "minimum": _binary("Min"),
    "gt": _compare("Greater"), "ge": _compare("GreaterOrEqual"), "lt": _compare("Less"),
    "le": _compare("LessOrEqual"), "eq": _compare("Equal"), "ne": _compare("Equal", negate=True),
    "clip": _clip, "where": _where,
    "reshape": _reshape, "slice": _slice, "pad": _pad, "concat": _concat, "take": _take,
    "one_hot": _one_hot, "matmul": _matmul, "transpose": _transpose,
    "sum": _reduce("ReduceSum"), "mean": _reduce("ReduceMean"), "max": _reduce("ReduceMax"),
    "min": _reduce("ReduceMin"), "argmax": _argmax, "sum_to": _sum_to, "broadcast": _broadcast,
    "softmax": _softmax("Softmax"), "log_softmax": _softmax("LogSoftmax"), "logsumexp": _logsumexp,
}


# -- input normalization -------------------------------------------------------------------------


def _normalization(b: _Builder, norm, x: str, dtype: str) -> str:
    """The fitted normalizer's nodes after tensor `x` (runtime/normalize.py computes the
    same in `dtype`)."""
    if norm.kind == "pipeline":
        for s in norm.steps:
            x = _normalization(b, s, x, dtype)
        return x
    arr = {k: np.asarray(v, np.float64) for k, v in norm.arrays.items()}
    if norm.kind == "none":
        return x
    if norm.kind in ("center", "standardize"):
        y = b.op("Sub", [x, b.array(arr["mean"].astype(dtype), "norm")])
        return b.op("Div", [y, b.array(arr["scale"].astype(dtype), "norm")]) if norm.kind == "standardize" else y
    if norm.kind in ("log", "sqrt"):  # sign(x) f(|x|): odd, as netc's
        ax = b.op("Abs", [x])
        f = b.op("Log", [b.op("Add", [ax, b.const(1, dtype)])]) if norm.kind == "log" else b.op("Sqrt", [ax])
        return b.op("Mul", [b.op("Sign", [x]), f])
    if norm.kind in ("pca", "whiten", "zca"):
        m = arr["matrix"] if norm.kind == "zca" else \
            arr["axes"] * arr["scale"] if norm.kind == "whiten" else arr["axes"]
        y = b.op("Sub", [x, b.array(arr["mean"].astype(dtype), "norm")])
        return b.op("MatMul", [y, b.array(m.astype(dtype), "norm")])
    raise NetcError(f"ONNX export: the input normalization '{norm.kind}' has no ONNX translation "
                    f"(only none, center, standardize, pca, whiten, zca, log and sqrt do); export a model "
                    f"trained without it, or apply it to the data before the exported model")


# -- the model -----------------------------------------------------------------------------------


def _refuse(model, n: Node) -> NetcError:
    spec = model.program.spec
    loc = n.loc
    source = None
    if loc is not None:
        source = spec.source if loc.file == spec.file else spec.used.get(loc.file)
    where = "" if loc is not None else " (made by the compiler, not a .net line)"
    return NetcError(f"ONNX export: op '{n.op}' has no ONNX translation{where}; "
                     f"supported ops: {', '.join(sorted(TRANSLATE))}", loc, source)


def to_onnx(model, *, opset: int = OPSET):
    """The ONNX ModelProto of `model`'s predictor (input normalization included), checked
    by onnx's checker. Outputs: "output" (predict_raw), "probabilities" (predict_proba,
    softmax/sigmoid models), "labels" (predict, class targets), "prediction" (predict, real
    targets scaled by normalize_target)."""
    onnx = require_onnx()
    helper = onnx.helper
    prog = model.program
    if prog.output is None:
        raise NetcError("ONNX export: this spec has no output to predict")
    if model.state is None:
        raise NetcError("ONNX export: this model has no parameters (compiled with allocate=False)")
    spec, dtype = prog.spec, prog.spec.graph.float_dtype
    (out,) = expected(spec.graph, [prog.output])
    order = toposort([out])
    first = next(iter(spec.inputs.values()), None)
    read = [n for n in order if n.op == "input"]
    if any(n.name in spec.targets for n in read):
        raise NetcError("ONNX export: the output reads a target")
    feeds = [n for n in spec.inputs.values() if any(r.id == n.id for r in read)]
    state = {k: np.asarray(to_host(v)) for k, v in model.state.items()}  # a device="gpu" model's too
    b = _Builder(onnx, state, feeds[0].name if feeds else None)
    graph_inputs = [_graph_input(b, model, f, first is not None and f.id == first.id) for f in feeds]
    for n in order:
        if n.id in b.names:
            continue
        if n.op in ("param", "state"):
            if n.name not in b.state:
                raise NetcError(f"ONNX export: the model's state has no array '{n.name}'")
            b.names[n.id] = b.array(b.state[n.name].astype(n.dtype, copy=False), "w")
            continue
        translate = TRANSLATE.get(n.op)
        if translate is None:
            raise _refuse(model, n)
        b.names[n.id] = translate(b, n, [b.names[i.id] for i in n.inputs])
    outputs = _outputs(b, model, out, dtype)
    value_infos = []
    for name, tensor, dt, shape in outputs:
        b.nodes.append(helper.make_node("Identity", [tensor], [name]))
        value_infos.append(helper.make_tensor_value_info(name, _onnx_type(onnx, dt), shape))
    graph = helper.make_graph(b.nodes, "netc_predict", graph_inputs, value_infos, b.inits,
                              doc_string=f"netc predictor of {spec.file}")
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="netc", doc_string="exported by netc export --format onnx")
    proto.ir_version = min(proto.ir_version, 8)  # readable by onnxruntime >= 1.15
    onnx.checker.check_model(proto)
    return proto


def _graph_input(b: _Builder, model, f: Node, normalized: bool):
    """The graph input for the spec's input `f`: raw features (the width the normalizer was
    fitted on) followed by the normalizer's nodes where `normalized` (the first input, as
    Model.predict_raw normalizes it)."""
    if f.name in OUTPUTS:
        raise NetcError(f"ONNX export: input '{f.name}' has the name of an output; rename it in the spec")
    dtype = model.program.spec.graph.float_dtype
    norm = model.normalizer if normalized and model.normalizer.kind != "none" else None
    shape = [BATCH] + list(f.shape[1:]) if f.shape and f.shape[0] is None else list(f.shape)
    if norm is not None and norm.in_width is not None and len(shape) == 2:
        shape[1] = norm.in_width
    info = b.helper.make_tensor_value_info(f.name, _onnx_type(b.onnx, dtype if norm else f.dtype), shape)
    b.names[f.id] = f.name if norm is None else b.cast(_normalization(b, norm, f.name, dtype), dtype, f.dtype)
    return info


def _outputs(b: _Builder, model, out: Node, dtype: str) -> list[tuple]:
    """(name, tensor, dtype, shape) of each graph output, computed as evaluation.py's
    predict_raw / probabilities / labels compute them."""
    shape = [BATCH if d is None else d for d in out.shape]
    y = b.names[out.id]
    rows = [("output", y, out.dtype, shape)]
    head = model.head
    if head.width is not None and out.ndim == 2 and head.link is not None:
        p = b.cast(y, out.dtype, dtype)
        if not head.applied:
            p = b.op("Softmax", [p], axis=-1) if head.link == "softmax" else b.op("Sigmoid", [p])
        width = head.width
        if head.link == "sigmoid" and head.width == 1:
            p = b.op("Concat", [b.op("Sub", [b.const(1, dtype), p]), p], axis=1)
            width = 2
        rows.append(("probabilities", p, dtype, [BATCH, width]))
    if head.labels:
        if head.width == 1:
            threshold = 0.5 if head.applied and head.link == "sigmoid" else 0
            col = b.op("Squeeze", [y, b.const([1], "int64")])
            lab = b.cast(b.op("Greater", [col, b.const(threshold, out.dtype)]), "bool", "int64")
        else:
            lab = b.op("ArgMax", [y], axis=-1, keepdims=0)
        rows.append(("labels", lab, "int64", [BATCH]))
    scaler = getattr(model, "target_scaler", None)
    if scaler is not None and scaler.kind != "none" and not head.labels:  # Model.predict: back to t's units
        arr = {k: np.asarray(v, np.float64).astype(out.dtype) for k, v in scaler.arrays.items()}
        z = b.op("Mul", [y, b.array(arr["scale"], "tnorm")]) if "scale" in arr else y
        rows.append(("prediction", b.op("Add", [z, b.array(arr["mean"], "tnorm")]), out.dtype, shape))
    return rows


def signature(proto) -> str:
    """'x [N, 20] float32 -> output [N, 3] float32, labels [N] int64': what the model takes and gives."""
    import onnx

    def one(v) -> str:
        t = v.type.tensor_type
        dims = ", ".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
        return f"{v.name} [{dims}] {onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)}"
    return f"{', '.join(map(one, proto.graph.input))} -> {', '.join(map(one, proto.graph.output))}"


def export(model, path: str | Path, *, format: str = "onnx") -> tuple[Path, str]:  # noqa: A002 - the CLI's word
    """Write `model`'s predictor to `path` (parents created); returns the path and its signature."""
    if format != "onnx":
        raise NetcError(f"unknown export format {format!r}; choose 'onnx'")
    proto = to_onnx(model)
    path = Path(path)
    if path.is_dir():
        raise NetcError(f"{path}: is a folder; give the file to write, e.g. {path / 'model.onnx'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path, signature(proto)
