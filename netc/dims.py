"""Binding a spec's sizes from the data (`input x : [_]`, `target t : class(_)`).

`fit` calls `bind` before anything is written: the sizes are read from the
training split, written into the spec text in place of each `_`
(compiler/free_dims.py), and the model is compiled again from that bound text,
which is what the run folder and the checkpoints store.

The rules:
- an input's `_` takes the size of that axis of the training examples after the
  input normalization (pca(dims/variance) changes the width); the first input is
  the one the data feeds;
- a real target's `_` takes the number of target values per record (with other
  declared sizes, the quotient);
- class(_) counts the classes as the largest training label + 1: labels are the
  codes 0..n-1 (a code may be absent from the training split, then that class
  is never predicted); a label that is negative, not a whole number or not
  finite is refused with its record, and so is a single class.
Validation and test labels are then checked against the bound count as for any
class(n) target.
"""
from __future__ import annotations

import math

import numpy as np

from netc.compiler.errors import DataError, SpecError
from netc.compiler.pipeline import bind_sizes
from netc.runtime import data, normalize
from netc.runtime.splits import Splits, load_splits

RESIZING = ("pca", "whiten")  # input normalizations that may keep fewer features than they are given
MAX_CLASSES = 1 << 20  # more is a labelling mistake (codes, not counts), and a huge output layer


def bind(model, x, t) -> tuple[str, Splits | None]:
    """(the spec text with the data's sizes, the data block's splits as loaded, or None
    for arrays) for `model`, an unbound netc.Model (its `free` sizes not yet known)."""
    spec = model.program.spec
    splits = None
    if x is None:
        if model.data_cfg.train is None:
            raise SpecError("the spec has no training data: add data { train = ... } or pass arrays to fit",
                            spec.block_locs.get("data"), model.text)
        splits = load_splits(model.data_cfg, model.base_dir, None)  # checked against the target once bound
        train = splits.train
    else:
        train = data.arrays(x, t, "fit(x, t)")
    values = sizes(spec, train, model.data_cfg.normalize)
    return bind_sizes(model.text, values), splits


def bound_by_data_block(model, what: str):
    """`model` with the sizes its data block's training split gives, for commands that need
    concrete sizes before any training (compile, gradcheck, lr-probe); the model itself
    where it has none to bind. Without a data block, refused where the first `_` is."""
    if not model.free:
        return model
    if model.data_cfg.train is None:
        f = model.free[0]
        raise SpecError(f"{what} needs concrete sizes, and `_` takes {f.describe()} from the data: add "
                        f"data {{ train = ... }} or write the size", f.loc, model.text)
    model._bind(None, None)
    model._loaded = None  # the command reads its data itself
    return model


def sizes(spec, train: data.Dataset, normalization) -> list[tuple]:
    """[(FreeDim, size)] for every `_` of `spec`, read from the training split."""
    out = []
    first = next(iter(spec.inputs), None)
    width = None
    for f in spec.free:
        if f.target:
            node = spec.targets[f.name]
            out.append((f, _classes(f, train) if f.axis is None else _target_width(f, node, spec, train)))
            continue
        if f.name != first:
            raise DataError(f"input '{f.name}' declares a size from the data (`_` at {f.loc}), but only the "
                            f"first input, '{first}', is fed from the data")
        if width is None:
            width = _features(train, normalization)
        declared = spec.inputs[f.name].shape[1:]
        if len(width) != len(declared):
            raise DataError(f"{train.name}: examples have shape {list(width)}, but input '{f.name}' declares "
                            f"{len(declared)} ax{'es' if len(declared) != 1 else 'is'} ({f.loc})")
        out.append((f, width[f.axis]))
    for name, node in spec.inputs.items():  # the sizes written beside a `_`
        free = {f.axis for f in spec.free if f.name == name and not f.target}
        if name != first or not free:
            continue
        for axis, d in enumerate(node.shape[1:]):
            if axis not in free and d != width[axis]:
                raise DataError(f"{train.name}: examples have size {width[axis]} on axis {axis + 1} "
                                f"(shape {list(width)}), but input '{name}' declares {d} there")
    return out


def _features(train: data.Dataset, normalization) -> tuple[int, ...]:
    """The shape of one example as the network sees it (after the input normalization)."""
    shape = tuple(train.x.shape[1:])
    steps = normalize.parse(normalization)
    if len(shape) != 1 or all(s.kind not in RESIZING for s in steps):
        return shape
    try:
        return (normalize.fit(normalization, train.x).out_width(shape[0]),)
    except ValueError as e:
        raise DataError(f"{train.name}: {e}") from None


def _target_width(f, node, spec, train: data.Dataset) -> int:
    if train.t is None:
        raise DataError(f"{train.name}: no targets, but target '{f.name}' takes its width from them")
    per_record = int(np.prod(np.shape(train.t)[1:], dtype=np.int64))
    free = [g for g in spec.free if g.name == f.name and g.target]
    if len(free) != 1:
        raise DataError(f"target '{f.name}' declares more than one size from the data ({f.loc}); "
                        f"a target's values are read flat, so only one `_` can be found from them")
    known = math.prod(d for i, d in enumerate(node.shape[1:]) if i != f.axis)
    if per_record % known:
        raise DataError(f"{train.name}: {per_record} target values per record do not fill target '{f.name}' "
                        f"declared with {known} values per `_`")
    return per_record // known


def _classes(f, train: data.Dataset) -> int:
    """The largest training label + 1 (the rule of this module's docstring)."""
    if train.t is None:
        raise DataError(f"{train.name}: no targets, but target '{f.name}' is class(_): the number of classes "
                        f"comes from the training labels")
    t = np.asarray(train.t)
    if t.dtype.kind not in "biuf":
        raise DataError(f"{train.name}: targets have non-numeric dtype {t.dtype}")
    t = t.reshape(len(t), -1)
    if t.shape[1] != 1:
        raise DataError(f"{train.name}: {t.shape[1]} target values per record, but target '{f.name}' is "
                        f"class(_): one label per record")
    t = t[:, 0]
    with np.errstate(invalid="ignore"):
        ok = t >= 0
        if t.dtype.kind == "f":
            ok &= t == np.floor(t)
    if not ok.all():
        i = int(np.argmin(ok))
        raise DataError(f"{train.record(i)}: label {t[i]} cannot be a class: class(_) counts the classes as "
                        f"the largest label + 1, so labels are whole numbers 0, 1, 2, ...")
    top = t.max()
    if top >= MAX_CLASSES:
        i = int(np.argmax(t))
        raise DataError(f"{train.record(i)}: label {int(top)} would make {int(top) + 1:,} classes (class(_) "
                        f"counts the largest label + 1; at most {MAX_CLASSES:,}): labels must be codes "
                        f"0..n-1; recode them, e.g. with numpy.unique(labels, return_inverse=True)")
    if top < 1:
        raise DataError(f"{train.name}: every training label is 0: class(_) needs at least two classes")
    return int(top) + 1
