#!/usr/bin/env python3
"""An independent reader of compressed-tensors checkpoints, written with numpy
from the layout's definition (compressed-tensors 0.14: the sparse-bitmask and
sparse-24-bitmask sparsity compressors, the int-quantized and pack-quantized
quantization formats), not from spruce's code.

usage: read_compressed.py COMPRESSED_DIR DENSE_DIR

Decodes every compressed linear layer of COMPRESSED_DIR to dense float32 and
compares it, and every tensor stored as is, with DENSE_DIR (a checkpoint that
holds the same weights uncompressed).  Prints one line per layout seen and
exits 0 when every tensor agrees bit for bit (after the dequantization
w = (q - zero_point) * scale, computed in the scale's dtype), 1 otherwise.
"""
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I8": np.int8, "U8": np.uint8, "BF16": "bf16"}


def bf16_to_f32(raw):
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """name -> numpy array (BF16 widened to float32 exactly)."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            a, b = info["data_offsets"]
            f.seek(base + a)
            raw = f.read(b - a)
            dt = DTYPES[info["dtype"]]
            if dt == "bf16":
                arr = bf16_to_f32(np.frombuffer(raw, dtype="<u2"))
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<"))
            out[name] = (arr.reshape(info["shape"]), info["dtype"])
    return out


def read_dir(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for fn in files:
        tensors.update(read_safetensors(os.path.join(d, fn)))
    return tensors


def unpack_bitmask(bm, rows, cols):
    """numpy.packbits(axis=-1, bitorder='little') undone: column c is bit c % 8
    of byte c // 8 of its row."""
    bits = np.unpackbits(bm.reshape(rows, -1), axis=1, bitorder="little")
    return bits[:, :cols].astype(bool)


def unpack_int32(words, bits, n, axis):
    """pack_to_int32 undone: element j of the packed axis is in word
    j // (32 / bits) at bit (j % (32 / bits)) * bits, stored as q + 2^(bits-1)."""
    per = 32 // bits
    w = words.astype(np.int64) & 0xFFFFFFFF
    if axis == 0:
        w = w.T
    parts = [(w >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    u = np.stack(parts, axis=2).reshape(w.shape[0], w.shape[1] * per)[:, :n]
    q = (u - (1 << (bits - 1))).astype(np.int8)
    return q.T if axis == 0 else q


def dequantize(q, scale, zp, sdtype):
    """w = (q - zp) * scale in the scale's dtype; scale (rows, groups)."""
    rows, cols = q.shape
    groups = scale.shape[1]
    g = cols // groups
    s = np.repeat(scale, g, axis=1)
    z = np.zeros_like(s) if zp is None else np.repeat(zp.astype(np.float32), g, axis=1)
    if sdtype == "BF16":
        # torch computes in bfloat16: (q - zp) is exact, the product is rounded to bf16
        prod = (q.astype(np.float32) - z) * s
        u = prod.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return bf16_to_f32(u.astype(np.uint16))
    dt = np.float16 if sdtype == "F16" else np.float32
    return ((q.astype(dt) - z.astype(dt)) * s.astype(dt)).astype(np.float32)


def main():
    cdir, ddir = sys.argv[1], sys.argv[2]
    with open(os.path.join(cdir, "config.json")) as f:
        qc = json.load(f).get("quantization_config")
    if not qc or qc.get("quant_method") != "compressed-tensors":
        print("%s: config.json has no compressed-tensors quantization_config" % cdir)
        return 1
    qfmt = qc.get("format")
    sc = qc.get("sparsity_config") or {}
    sfmt = sc.get("format")
    wargs = None
    if qc.get("config_groups"):
        groups = list(qc["config_groups"].values())
        assert len(groups) == 1, "one config group expected"
        wargs = groups[0]["weights"]
        assert wargs["type"] == "int" and wargs["strategy"] in ("channel", "group")
    comp = read_dir(cdir)
    dense = read_dir(ddir)
    bad = 0
    seen = set()
    prefixes = {k.rsplit(".", 1)[0] for k in comp if k.endswith((".bitmask", ".weight_packed",
                                                                   ".weight_scale"))}
    for name, (ref, rdt) in dense.items():
        prefix = name[: -len(".weight")] if name.endswith(".weight") else None
        if prefix not in prefixes:
            if name not in comp:
                print("missing tensor %s" % name)
                bad += 1
            elif comp[name][1] != rdt or not np.array_equal(comp[name][0].view(np.uint8),
                                                            ref.view(np.uint8)):
                print("tensor %s stored as is differs" % name)
                bad += 1
            continue
        rows, cols = ref.shape
        t = lambda s: comp[prefix + "." + s]
        if sfmt in ("sparse-bitmask", "sparse-24-bitmask"):
            shape = t("shape")[0].reshape(-1)
            assert list(shape) == [rows, cols], "%s: shape %s" % (prefix, shape)
            mask = unpack_bitmask(t("bitmask")[0], rows, cols)
            vals = t("compressed")[0].reshape(-1)
            if sfmt == "sparse-24-bitmask":
                assert t("compressed")[0].shape == (rows, cols // 2)
                m4 = mask.reshape(rows, cols // 4, 4).sum(axis=2)
                assert (m4 == 2).all(), "%s: a group of four without two bits" % prefix
            else:
                offs = t("row_offsets")[0]
                assert (offs == np.concatenate([[0], np.cumsum(mask.sum(axis=1))[:-1]])).all()
            assert vals.size == mask.sum(), "%s: %d values for %d bits" % (prefix, vals.size,
                                                                         mask.sum())
            w = np.zeros((rows, cols), dtype=vals.dtype)
            w[mask] = vals
            seen.add(sfmt + "/" + t("compressed")[1])
        elif qfmt == "pack-quantized":
            w = unpack_int32(t("weight_packed")[0], wargs["num_bits"], cols, 1)
            assert list(t("weight_shape")[0].reshape(-1)) == [rows, cols]
            seen.add("pack-quantized/%d" % wargs["num_bits"])
        else:
            w = t("weight")[0]
            seen.add("int-quantized/%d" % wargs["num_bits"])
        if wargs:
            scale, sdtype = t("weight_scale")
            zp = None
            if not wargs["symmetric"]:
                z, zdt = t("weight_zero_point")
                zp = unpack_int32(z, wargs["num_bits"], rows, 0) if zdt == "I32" else z
            w = dequantize(w.astype(np.int8), scale.reshape(rows, -1), zp, sdtype)
        w = w.astype(np.float32)
        r = ref.astype(np.float32)
        if not np.array_equal(w, r):
            d = np.argwhere(w != r)[0]
            print("%s: (%d, %d) decodes to %r, the dense checkpoint has %r"
                  % (prefix, d[0], d[1], w[tuple(d)], r[tuple(d)]))
            bad += 1
        # pruned weights stay +0.0
        if (np.signbit(w) & (w == 0)).any():
            print("%s: a negative zero" % prefix)
            bad += 1
    for s in sorted(seen):
        print("layout", s)
    print("tensors", len(dense), "differing", bad)
    return 1 if bad or not seen else 0


if __name__ == "__main__":
    sys.exit(main())
