#!/bin/sh
# Seed corpus of the mask file fuzz target (tests/fuzz/fuzz_masks.c): small
# mask files written by spruce, and damaged copies of one of them (cut short,
# one byte changed in the superblock, the root group's header and a dataset's
# header).  Run from the top directory of a build:
#   tests/data/masks/make-corpus.sh [SPRUCE]      (default ./spruce)
set -eu
spruce=${1:-./spruce}
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/spruce-corpus.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$spruce" synth "$work/m" --hidden 16 --intermediate 32 --layers 1 --heads 2 --kv-heads 1 \
    --vocab 32 >/dev/null
"$spruce" prune "$work/m" -o "$work/p24" --method magnitude --pattern 2:4 \
    --masks "$out/prune-2of4.h5" >/dev/null
"$spruce" prune "$work/m" -o "$work/pu" --method magnitude --sparsity 0.6 \
    --masks "$out/prune-unstructured.h5" >/dev/null
"$spruce" masks export "$work/p24" -o "$out/export.h5" >/dev/null
src=$out/prune-2of4.h5
size=$(wc -c <"$src")
head -c $((size / 2)) "$src" >"$out/cut-half.h5"
head -c 1024 "$src" >"$out/cut-1k.h5"
# one byte changed: XOR 0x5a at the offset (superblock, root header, first dataset header)
for off in 13 140 700 950; do
    cp "$src" "$out/byte-$off.h5"
    b=$(od -An -tu1 -j "$off" -N1 "$src" | tr -d ' ')
    printf "$(printf '\\%03o' $((b ^ 90)))" |
        dd of="$out/byte-$off.h5" bs=1 seek="$off" conv=notrunc status=none
done
