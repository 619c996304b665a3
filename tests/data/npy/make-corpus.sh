#!/bin/sh
# The seed corpus of tests/fuzz/fuzz_npy.c: small .npy files, good and broken.
#   tests/data/npy/make-corpus.sh     (run from anywhere; rewrites the seeds)
set -eu
cd "$(dirname "$0")"
# npy NAME VERSION HEADER PAYLOAD_BYTES: a file with that header (padded to a
# multiple of 64 with spaces and '\n' for version 1) and that many data bytes
npy() {
    name=$1 ver=$2 hdr=$3 payload=$4
    len=$(printf '%s' "$hdr" | wc -c)
    if [ "$ver" = 1 ]; then
        pad=$(( (64 - (10 + len + 1) % 64) % 64 ))
        total=$(( len + pad + 1 ))
        { printf '\223NUMPY\001\000'
          printf "\\$(printf %03o $((total % 256)))\\$(printf %03o $((total / 256)))"
          printf '%s' "$hdr"; printf "%${pad}s" ''; printf '\n'
          head -c "$payload" /dev/zero | tr '\000' '\077'; } >"$name"
    else
        total=$(( len + 1 ))
        { printf '\223NUMPY\002\000'
          printf "\\$(printf %03o $((total % 256)))\\$(printf %03o $((total / 256)))\\000\\000"
          printf '%s\n' "$hdr"
          head -c "$payload" /dev/zero | tr '\000' '\077'; } >"$name"
    fi
}
npy good       1 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" 24
npy good-v2    2 "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }" 4
npy reordered  1 "{'shape': (3,2), 'fortran_order': False, 'descr': '<f4'}" 24
npy f8         1 "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }" 48
npy fortran    1 "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }" 24
npy one-d      1 "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }" 24
npy three-d    1 "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }" 24
npy dup-key    1 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'shape': (3, 2)}" 24
npy short      1 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" 20
npy huge       1 "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483647, 2147483647), }" 8
npy no-close   1 "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), " 24
