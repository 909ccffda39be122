"""The `pretrain` block's keys, checked where the spec is checked (`netc check`,
netc.compile): the auto-encoder settings here, every other key as a train-block
key of the stages (runtime/config.py). netc/pretrain.py runs the stages."""
from __future__ import annotations

from netc.compiler.blocks import BlockEntry, Symbol
from netc.compiler.errors import ErrorList, Loc, SpecError
from netc.compiler.pretrain_spec import AE_KEYS, RECONSTRUCTIONS
from netc.runtime.config import TrainConfig, from_block

KEYS = {
    "layers": "the layers to pretrain, input side first, e.g. [h1, h2]: layer k is trained as an auto-encoder "
              "of layer k-1's codes (the first, of the input) [PR 1.1]",
    "drop": "masking noise on each auto-encoder's input (denoising, Vincent et al. 2008); default 0 (none)",
    "contractive": "weight of contractive(layer, its input) (Rifai et al. 2011) [PR 1.2]; default 0 (none)",
    "reconstruction": "cross_entropy (sigmoid decoder; inputs and codes in [0, 1]; the default) or mse "
                      "(linear decoder)",
}
assert tuple(KEYS) == AE_KEYS


def check(entries: list[BlockEntry], source: str | None, loc: Loc | None) -> TrainConfig:
    """Every key of the block, located; returns the stages' train settings."""
    errors: list[SpecError] = []
    seen = {}
    for e in entries:
        if e.key not in AE_KEYS:
            continue
        try:
            if e.key in seen:
                raise SpecError(f"'{e.key}' is set twice", e.loc, source)
            seen[e.key] = e
            if e.selector is not None:
                raise SpecError(f"'{e.key}' cannot be set per parameter group", e.loc, source)
            v = e.value
            if e.key == "layers":
                items = v if isinstance(v, list) else [v]
                if not items or not all(isinstance(i, Symbol) for i in items):
                    raise SpecError("layers takes a list of layer names, e.g. [h1, h2]", e.loc, source)
            elif e.key in ("drop", "contractive"):
                top = 1 if e.key == "drop" else float("inf")
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < top:
                    rng = "0 <= drop < 1" if e.key == "drop" else "a number >= 0"
                    raise SpecError(f"{e.key} takes {rng}, got {v!r}", e.loc, source)
            elif str(v) not in RECONSTRUCTIONS or not isinstance(v, Symbol):
                raise SpecError(f"reconstruction takes {' or '.join(RECONSTRUCTIONS)}, got {v!r}", e.loc, source)
        except SpecError as err:
            errors.append(err)
    if "layers" not in seen:
        errors.append(SpecError("the pretrain block needs `layers = [...]`: the layers to pretrain, input side "
                                "first", loc, source))
    cfg = None
    try:
        cfg = from_block(TrainConfig, [e for e in entries if e.key not in AE_KEYS], source, loc)
    except ErrorList as el:
        errors += list(el.errors)
    except SpecError as err:
        errors.append(err)
    if errors:
        raise errors[0] if len(errors) == 1 else ErrorList(errors)
    return cfg


def describe() -> str:
    """`netc doc pretrain`: the auto-encoder keys (the others are the train block's)."""
    lines = [f"  {k:<14} {v}" for k, v in KEYS.items()]
    lines.append("  (any train-block key: method, batch, epochs, ... for every stage; `netc doc train`)")
    return "\n".join(lines)
