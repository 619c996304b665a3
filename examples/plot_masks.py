#!/usr/bin/env python3
"""Plot a spruce mask file: sparsity of every mask, and a heat map of one mask.

    python3 examples/plot_masks.py masks.h5 out.png [--tensor NAME] [--block 32]

Needs h5py, numpy and matplotlib (Debian: python3-h5py python3-matplotlib).
In a mask file every dataset is one tensor's mask, numpy bool, True = kept.
"""
import argparse
import re
import sys

import h5py
import numpy as np
import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def natural_key(name):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def load(path, pick):
    """Per mask (name, sparsity, size) in layer order, the mask named pick (the
    first when pick is None) as a bool array, and the root attributes.  Masks
    are read one at a time: a 7B model's masks do not fit in memory at once."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") not in (b"spruce-masks", "spruce-masks"):
            sys.exit(f"{path}: not a spruce mask file (root attribute format is "
                     f"{f.attrs.get('format')!r})")
        stats, chosen = [], None
        # h5py lists names alphabetically (layer 10 before layer 2): sort the
        # numbers inside names as numbers.
        for name in sorted(f, key=natural_key):
            d = f[name]
            if not isinstance(d, h5py.Dataset):
                continue
            if d.dtype != np.bool_ or d.ndim != 2:
                sys.exit(f"{path}: dataset {name}: dtype {d.dtype}, rank {d.ndim}; "
                         "expected a 2-D bool mask")
            keep = d[()]
            stats.append((name, 1.0 - keep.mean(), keep.size))
            if chosen is None and (pick is None or pick == name):
                chosen = (name, keep)
        if pick is not None and chosen is None:
            sys.exit(f"{path}: no mask named {pick}")
        return stats, chosen, dict(f.attrs)


def short(name):
    """model.layers.3.self_attn.q_proj.weight -> 3.q_proj"""
    parts = name.split(".")
    layer = next((p for p in parts if p.isdigit()), "")
    proj = parts[-2] if len(parts) >= 2 else name
    return f"{layer}.{proj}" if layer else proj


def block_density(keep, block):
    """Fraction kept in each block x block tile (partial edge tiles count only their cells)."""
    r, c = keep.shape
    rb, cb = -(-r // block), -(-c // block)
    pad = np.zeros((rb * block, cb * block), dtype=np.float32)
    cnt = np.zeros_like(pad)
    pad[:r, :c] = keep
    cnt[:r, :c] = 1
    s = pad.reshape(rb, block, cb, block).sum(axis=(1, 3))
    n = cnt.reshape(rb, block, cb, block).sum(axis=(1, 3))
    return s / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("masks", help="mask file (.h5) written by spruce")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--tensor", help="mask to draw as a heat map (default: the first)")
    ap.add_argument("--block", type=int, default=0,
                    help="tile size for the heat map (default: fit about 256 tiles per side)")
    args = ap.parse_args()

    stats, chosen, attrs = load(args.masks, args.tensor)
    if not stats:
        sys.exit(f"{args.masks}: no masks")
    names = [m[0] for m in stats]
    sparsity = np.array([m[1] for m in stats])
    sizes = np.array([m[2] for m in stats], dtype=np.float64)
    total = float((sparsity * sizes).sum() / sizes.sum())
    pick, keep = chosen
    block = args.block or max(1, max(keep.shape) // 256)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5),
                                   gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(names))
    ax1.bar(x, 100 * sparsity, color="tab:green")
    ax1.axhline(100 * total, color="k", lw=0.8, ls="--", label=f"all masks: {100 * total:.1f}%")
    ax1.set_xticks(x)
    ax1.set_xticklabels([short(n) for n in names], rotation=90, fontsize=6)
    ax1.set_ylabel("sparsity (% pruned)")
    ax1.set_ylim(0, 100)
    title = attrs.get("method", "")
    ax1.set_title(f"{args.masks}: sparsity per mask {('(' + title + ')') if title else ''}")
    ax1.legend(loc="lower right")

    dens = block_density(keep, block)
    im = ax2.imshow(1.0 - dens, cmap="viridis", vmin=0, vmax=1, aspect="auto",
                    interpolation="nearest", extent=(0, keep.shape[1], keep.shape[0], 0))
    ax2.set_title(f"{pick}\n{keep.shape[0]} x {keep.shape[1]}, "
                  f"sparsity per {block}x{block} tile", fontsize=9)
    ax2.set_xlabel("input column")
    ax2.set_ylabel("output row")
    ax2.tick_params(labelsize=7)
    fig.colorbar(im, ax=ax2, label="fraction pruned")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"{args.out}: {len(names)} masks, overall sparsity {100 * total:.2f}%")


if __name__ == "__main__":
    main()
