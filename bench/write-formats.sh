#!/bin/sh
# Writing a pruned checkpoint in each layout (issue 14: writing the compressed
# layout is no slower than writing the dense one).  A synth bf16 model (hidden
# 2048, MLP 5632, 4 layers, 16 heads, vocabulary 4096: 425 MB) pruned 2:4 by
# magnitude (no calibration: the command is reading, pruning by magnitude and
# writing, the same work in every variant but the writing), saved dense,
# compressed (sparse-24-bitmask) and compressed with 8-bit values (--wbits 8
# --sym: int-quantized).  Each round runs the variants in turn, each round
# starting one variant later; prints the wall seconds of every run, then per
# variant the median and its ratio to dense's median, and the bytes written.
# Usage: bench/write-formats.sh [SPRUCE] (default ./spruce); the environment
# sets ROUNDS (5), THREADS (2), DIR (default a new temporary directory).
set -eu
. "$(dirname "$0")/rounds.sh"
SPRUCE=${1:-./spruce}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-2}
DIR=${DIR:-$(mktemp -d)}
mkdir -p "$DIR"
[ -f "$DIR/m/config.json" ] || "$SPRUCE" synth "$DIR/m" --hidden 2048 --intermediate 5632 \
    --layers 4 --heads 16 --kv-heads 16 --vocab 4096 --dtype bf16 >/dev/null 2>"$DIR/synth.log"
VARIANTS="dense compressed dense-int8 compressed-int8"
args() {
    case $1 in
    dense) echo "--save-format dense" ;;
    compressed) echo "--save-format compressed" ;;
    dense-int8) echo "--save-format dense --wbits 8 --sym" ;;
    compressed-int8) echo "--save-format compressed --wbits 8 --sym" ;;
    esac
}
LOG=$DIR/rounds.txt
: > "$LOG"
echo "variant round wall_s"
r=1
while [ $r -le "$ROUNDS" ]; do
    for v in $(round_order $r $VARIANTS); do
        rm -rf "$DIR/out-$v"
        /usr/bin/time -o "$DIR/time" -f "%e" "$SPRUCE" prune "$DIR/m" -o "$DIR/out-$v" \
            --method magnitude --pattern 2:4 --threads "$THREADS" $(args $v) >/dev/null 2>&1
        echo "$v $r $(cat "$DIR/time")" | tee -a "$LOG"
    done
    r=$((r + 1))
done
echo "variant median_wall_s vs_dense bytes_written   (the -int8 variants: vs dense-int8)"
med() { median_of "$LOG" "$1" 3; }
for v in $VARIANTS; do
    case $v in *-int8) d=$(med dense-int8) ;; *) d=$(med dense) ;; esac
    m=$(med $v)
    b=$(du -cb "$DIR/out-$v"/*.safetensors | tail -1 | cut -f1)
    awk "BEGIN { printf \"%s %.2f %.3f %d\\n\", \"$v\", $m, $m / $d, $b }"
done
