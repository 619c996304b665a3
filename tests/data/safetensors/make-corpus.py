#!/usr/bin/env python3
"""Write the safetensors test corpus: a few valid files (also the fuzzer's seeds)
and one broken file per check of the header parser.  Run from anywhere:
    python3 tests/data/safetensors/make-corpus.py
tests/test_ckpt.c knows which error each broken file must give."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def header_bytes(obj, pad=True):
    h = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return h


def st(name, obj, data=b"", hlen=None, pad=True, raw=None):
    """Write 8-byte length + header + data; hlen overrides the length field."""
    h = header_bytes(obj, pad)
    n = len(h) if hlen is None else hlen
    body = struct.pack("<Q", n) + h + data if raw is None else raw
    with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
        f.write(body)


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


# --- valid files (seeds) ---
st("valid_f32", {"__metadata__": {"format": "pt", "note": "spruce test"},
                 "a": t("F32", [2, 3], 0, 24), "b": t("F32", [4], 24, 40)},
   f32(1, 2, 3, 4, 5, 6) + f32(-1, 0.5, 0, 7))
st("valid_f16", {"w": t("F16", [2, 2], 0, 8)}, struct.pack("<4H", 0x3c00, 0xc000, 0x0000, 0x7bff))
st("valid_bf16", {"w": t("BF16", [3], 0, 6)}, struct.pack("<3H", 0x3f80, 0xc040, 0x0001))
st("valid_empty_tensor", {"e": t("F32", [0, 5], 0, 0), "s": t("F32", [], 0, 4)}, f32(3.5))
st("valid_other_dtypes", {"i": t("I64", [2], 0, 16), "m": t("BOOL", [3], 16, 19),
                          "q": t("Q4_K", [7], 19, 26), "f": t("F32", [1], 28, 32)},
   struct.pack("<2q", -5, 9) + b"\x01\x00\x01" + b"1234567" + b"\0\0" + f32(2.0))
st("valid_empty_header", {}, b"")

# --- broken files ---
st("empty", None, raw=b"")
st("short", None, raw=b"\x10\x00\x00")
st("hlen_past_end", {"a": t("F32", [1], 0, 4)}, f32(1), hlen=4096)
st("hlen_huge", {"a": t("F32", [1], 0, 4)}, f32(1), hlen=0xFFFFFFFFFFFFFFFF)
st("hlen_tiny", None, raw=struct.pack("<Q", 1) + b"{")
st("bad_json", b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]', f32(1), pad=False)
st("not_object", [1, 2, 3])
st("duplicate_key", b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                    b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32(1, 2))
st("bad_utf8", b'{"\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1))
st("nul_in_header", b'{"a\x00b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(1))
st("entry_not_object", {"a": [1, 2]})
st("missing_dtype", {"a": {"shape": [1], "data_offsets": [0, 4]}}, f32(1))
st("dtype_not_string", {"a": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}}, f32(1))
st("missing_shape", {"a": {"dtype": "F32", "data_offsets": [0, 4]}}, f32(1))
st("offsets_wrong_length", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}, f32(1))
st("negative_shape", {"a": t("F32", [-1, 4], 0, 16)}, f32(1, 2, 3, 4))
st("float_shape", {"a": t("F32", [2.0, 2], 0, 16)}, f32(1, 2, 3, 4))
st("shape_overflow", {"a": t("F32", [2**40, 2**40], 0, 4)}, f32(1))
st("too_many_dims", {"a": t("F32", [1] * 9, 0, 4)}, f32(1))
st("negative_offset", {"a": t("F32", [1], -4, 0)}, f32(1))
st("begin_after_end", {"a": t("F32", [1], 8, 4)}, f32(1, 2))
st("range_past_end", {"a": t("F32", [2], 0, 8)}, f32(1))
st("truncated_data", {"a": t("F32", [4], 0, 16), "b": t("F32", [4], 16, 32)}, f32(1, 2, 3, 4, 5, 6))
st("shape_bytes_mismatch", {"a": t("F32", [2, 3], 0, 20)}, f32(1, 2, 3, 4, 5))
st("bf16_odd_bytes", {"a": t("BF16", [2], 0, 3)}, b"\0\0\0")
st("overlap", {"a": t("F32", [2], 0, 8), "b": t("F32", [2], 4, 12)}, f32(1, 2, 3))
st("metadata_not_object", {"__metadata__": "pt", "a": t("F32", [1], 0, 4)}, f32(1))
st("metadata_not_string", {"__metadata__": {"format": 1}, "a": t("F32", [1], 0, 4)}, f32(1))
