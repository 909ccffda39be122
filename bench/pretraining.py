"""Greedy layer-wise pretraining with 1,000 labels: test error of the shipped
pair specs/pretrain_1000.net (netc pretrain: two denoising auto-encoders, then
fine-tuning) and specs/random_1000.net (the same network and fine-tuning from
random initialization), same seeds [PR 1.1; Erhan et al. 2010 report a large
gain with few labels].

    python bench/pretraining.py                    # the short defaults: 5 seeds, about 2 minutes on 2 busy cores
    python bench/pretraining.py --seeds 0 1 2 3 4 --unlabelled 50000 --pretrain-epochs 5 --epochs 100

The defaults are shortened so the run finishes in minutes on a busy 2-core
machine: the specs' text is used with four values replaced (each replacement
checked): the training slice [0:50000] -> [0:UNLABELLED] (the images the
auto-encoders see; the labelled ones are always the first 1,000), the pretrain
block's epochs, the fine-tuning epochs, and the validation slice (reported
only: nothing is selected on it). The test error is on all 10,000 t10k
digits, once, on the final parameters. With the full settings above the specs
run as shipped.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED, RANDOM = ROOT / "specs" / "pretrain_1000.net", ROOT / "specs" / "random_1000.net"


def _replace(text: str, pattern: str, new: str, block: str | None = None) -> str:
    """`pattern` -> `new` exactly once (inside `block { ... }` if named)."""
    if block is not None:
        start = text.index(f"\n{block} {{")
        end = text.index("\n}", start)
        return text[:start] + _replace(text[start:end], pattern, new) + text[end:]
    out, n = re.subn(pattern, new, text)
    if n != 1:
        raise SystemExit(f"bench/pretraining.py: expected one match of {pattern!r} in the spec, found {n}")
    return out


def shortened(text: str, unlabelled: int, pretrain_epochs: int, epochs: int, valid: int,
              drop: float | None = None, contractive: float | None = None) -> str:
    text = _replace(text, r'mnist\("train"\)\[0:50000\]', f'mnist("train")[0:{unlabelled}]')
    text = _replace(text, r'mnist\("train"\)\[50000:60000\]', f'mnist("train")[50000:{50000 + valid}]')
    text = _replace(text, r"epochs = \d+", f"epochs = {epochs}", "train")
    if "\npretrain {" in text:
        text = _replace(text, r"epochs = \d+", f"epochs = {pretrain_epochs}", "pretrain")
        if drop is not None:
            text = _replace(text, r"drop = [0-9.]+", f"drop = {drop:g}", "pretrain")
        if contractive is not None:
            text = _replace(text, r"(\n    drop = )", f"\n    contractive = {contractive:g}\\1", "pretrain")
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--unlabelled", type=int, default=10000,
                    help="training images the auto-encoders see (the specs: 50000)")
    ap.add_argument("--pretrain-epochs", type=int, default=2, help="epochs per auto-encoder (the spec: 5)")
    ap.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs, both specs (the specs: 100)")
    ap.add_argument("--valid", type=int, default=1000, help="validation digits, reported only (the specs: 10000)")
    ap.add_argument("--drop", type=float, help="the auto-encoders' masking noise (the spec: 0.25)")
    ap.add_argument("--contractive", type=float,
                    help="weight of the contractive penalty (the spec: none); --drop 0 --contractive 0.1: CAEs")
    args = ap.parse_args(argv)
    import netc

    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print(f"settings: {len(args.seeds)} seeds, {args.unlabelled} unlabelled images, {args.pretrain_epochs} "
          f"epochs per auto-encoder, {args.epochs} fine-tuning epochs on 1000 labels, valid {args.valid}"
          + (f", drop {args.drop:g}" if args.drop is not None else "")
          + (f", contractive {args.contractive:g}" if args.contractive is not None else ""))
    texts = {name: shortened(path.read_text(), args.unlabelled, args.pretrain_epochs, args.epochs, args.valid,
                             args.drop, args.contractive)
             for name, path in (("pretrained", PRETRAINED), ("random", RANDOM))}
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="netc-pretraining-") as tmp:
        for seed in args.seeds:
            t0 = time.perf_counter()
            m = netc.pretrain(texts["pretrained"], out=Path(tmp) / f"pretrained-{seed}", seed=seed)
            t1 = time.perf_counter()
            r = netc.compile(texts["random"], seed=seed).fit(out=Path(tmp) / f"random-{seed}")
            t2 = time.perf_counter()
            row = {"seed": seed, "pretrained": m.summary_["test_error"], "random": r.summary_["test_error"],
                   "train_p": m.summary_["train_loss"], "train_r": r.summary_["train_loss"],
                   "recon": [s["summary"]["train_loss"] for s in m.stages[:-1]],
                   "s_p": t1 - t0, "s_r": t2 - t1}
            rows.append(row)
            print(f"seed {seed}: test error pretrained {row['pretrained']:.4f}  random {row['random']:.4f}  "
                  f"(final train loss {row['train_p']:.4f} / {row['train_r']:.4f}; auto-encoders' final "
                  f"loss {', '.join(f'{v:.2f}' for v in row['recon'])}; {row['s_p']:.0f} s / {row['s_r']:.0f} s)",
                  flush=True)
    p = [r["pretrained"] for r in rows]
    q = [r["random"] for r in rows]
    d = [b - a for a, b in zip(p, q)]

    def ms(v):
        return f"{statistics.mean(v) * 100:.2f}%" + (f" +- {statistics.stdev(v) * 100:.2f}" if len(v) > 1 else "")
    print(f"\ntest error, mean +- std over {len(rows)} seeds: pretrained {ms(p)}, random {ms(q)}; "
          f"random - pretrained {ms(d)} (pretraining better in {sum(x > 0 for x in d)} of {len(d)} seeds)")
    load = os.getloadavg()
    print(f"{time.perf_counter() - t_all:.0f} s in all; load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
