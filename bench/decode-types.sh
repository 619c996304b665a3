#!/bin/sh
# Decoding tokens/s in each value type and format on issue 15's model: a
# `spruce synth` LLaMA of hidden 2048, intermediate 5632, 4 layers, 32 heads,
# 4 key/value heads (float32, 713 MB), and the pruner's outputs from it:
# 2:4 saved dense (float32), 2:4 + int8 saved compressed, int4 in groups of
# 128 saved compressed.  Variants: dense float32 (--sparse off), dense bf16
# (--dtype bf16 --sparse off), 2:4 float32, 2:4 + int8 (its own levels),
# int4-g128 (its own levels).  Each round runs every variant in turn, each
# round starting one variant later; prints every run's tokens/s, then per
# variant the median, its ratio to dense float32's median, and the bytes of
# weights held.
# Usage: bench/decode-types.sh [SPRUCE] (default ./spruce); the environment
# sets ROUNDS (3), STEPS (128), THREADS (2), DIR (default a new temporary
# directory; the models are made there once).
set -eu
. "$(dirname "$0")/rounds.sh"
SPRUCE=${1:-./spruce}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-128}
THREADS=${THREADS:-2}
DIR=${DIR:-$(mktemp -d)}
mkdir -p "$DIR"
[ -f "$DIR/dm/config.json" ] || "$SPRUCE" synth "$DIR/dm" --hidden 2048 --intermediate 5632 \
    --layers 4 --heads 32 --kv-heads 4 >/dev/null 2>"$DIR/synth.log"
[ -f "$DIR/dm24d/config.json" ] || "$SPRUCE" prune "$DIR/dm" -o "$DIR/dm24d" \
    --method magnitude --pattern 2:4 >/dev/null 2>&1
[ -f "$DIR/dm24c/config.json" ] || "$SPRUCE" prune "$DIR/dm" -o "$DIR/dm24c" \
    --method magnitude --pattern 2:4 --wbits 8 --sym --save-format compressed >/dev/null 2>&1
[ -f "$DIR/dmq4/config.json" ] || "$SPRUCE" prune "$DIR/dm" -o "$DIR/dmq4" \
    --method magnitude --sparsity 0 --wbits 4 --groupsize 128 --sym --save-format compressed \
    >/dev/null 2>&1
VARIANTS="f32 bf16 f32-2:4 int8-2:4 int4-g128"
args() {
    case $1 in
    f32) echo "$DIR/dm --sparse off" ;;
    bf16) echo "$DIR/dm --sparse off --dtype bf16" ;;
    f32-2:4) echo "$DIR/dm24d" ;;
    int8-2:4) echo "$DIR/dm24c" ;;
    int4-g128) echo "$DIR/dmq4" ;;
    esac
}
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print(d['$1'])"; }
LOG=$DIR/rounds.txt
: > "$LOG"
echo "variant round tokens_per_s weight_bytes"
r=1
while [ $r -le "$ROUNDS" ]; do
    for v in $(round_order $r $VARIANTS); do
        "$SPRUCE" run $(args $v) --prompt-ids '1 400 500' --steps "$STEPS" --threads "$THREADS" \
            --json >"$DIR/out.json" 2>/dev/null
        echo "$v $r $(json tokens_per_s <"$DIR/out.json") $(json weight_bytes <"$DIR/out.json")" |
            tee -a "$LOG"
    done
    r=$((r + 1))
done
echo "variant median_tokens_per_s vs_f32 weight_bytes"
f=$(median_of "$LOG" f32 3)
for v in $VARIANTS; do
    m=$(median_of "$LOG" "$v" 3)
    b=$(grep "^$v " "$LOG" | tail -1 | awk '{print $4}')
    awk "BEGIN { printf \"%s %.1f %.2f %d\\n\", \"$v\", $m, $m / $f, $b }"
done
