#!/bin/sh
# The seed corpus of tests/fuzz/fuzz_tokens.c: each file's first byte chooses
# the format (0 .u16, 1 .u32, 2 .txt), the rest is the token file.
#   tests/data/tokens/make-corpus.sh     (run from anywhere; rewrites the seeds)
set -eu
cd "$(dirname "$0")"
p() { printf "$2" >"$1"; }
p u16-ids        '\000\001\000\002\000\377\377'
p u16-odd        '\000\001\000\002'
p u16-empty      '\000'
p u32-ids        '\001\001\000\000\000\377\377\377\377'
p u32-short      '\001\001\000\000'
p txt-ids        '\0021 2 3\n4\t5\r\n'
p txt-big        '\0024294967295 4294967296\n'
p txt-word       '\0021 2 x3\n'
p txt-blank      '\002 \n\t\n'
p txt-nul        '\0021\0002\n'
