#!/bin/sh
# The cost of quantizing while pruning a whole checkpoint (issue 14: under
# 10%).  A synth float32 model (hidden 1024, MLP 2816, 4 layers, 16 heads,
# vocabulary 512) pruned with SparseGPT 2:4 on NSAMPLES x 512 calibration
# tokens, without quantization, with --wbits 4 --groupsize 128 and with
# --wbits 8, in rounds that each start one variant later; saved dense.
# Prints every run's wall seconds and the pruner's own seconds (the sum of
# the layers' seconds in the --json summary: the sweeps, where the rounding
# runs), then per variant the medians and their ratios to the unquantized
# run's.
# Usage: bench/quant-cost.sh [SPRUCE] (default ./spruce); the environment sets
# ROUNDS (5), NSAMPLES (32), THREADS (2), DIR (default a new temporary directory).
set -eu
. "$(dirname "$0")/rounds.sh"
SPRUCE=${1:-./spruce}
ROUNDS=${ROUNDS:-5}
NSAMPLES=${NSAMPLES:-32}
THREADS=${THREADS:-2}
DIR=${DIR:-$(mktemp -d)}
mkdir -p "$DIR"
[ -f "$DIR/m/config.json" ] || "$SPRUCE" synth "$DIR/m" --hidden 1024 --intermediate 2816 \
    --layers 4 --heads 16 --kv-heads 16 --vocab 512 --calib "$DIR/calib.u16" \
    --count $((NSAMPLES * 512)) >/dev/null 2>"$DIR/synth.log"
VARIANTS="none w4g128 w8"
args() {
    case $1 in
    none) echo "" ;;
    w4g128) echo "--wbits 4 --groupsize 128" ;;
    w8) echo "--wbits 8" ;;
    esac
}
LOG=$DIR/rounds.txt
: > "$LOG"
echo "variant round wall_s pruner_s"
r=1
while [ $r -le "$ROUNDS" ]; do
    for v in $(round_order $r $VARIANTS); do
        /usr/bin/time -o "$DIR/time" -f "%e" "$SPRUCE" prune "$DIR/m" -o "$DIR/out" --force \
            --calib "$DIR/calib.u16" --seqlen 512 --nsamples "$NSAMPLES" --pattern 2:4 \
            --threads "$THREADS" --json $(args $v) > "$DIR/summary.json" 2>/dev/null
        p=$(python3 -c "import json,sys; j=json.load(open('$DIR/summary.json')); print(sum(l['seconds'] for l in j['layers']))" 2>/dev/null || echo 0)
        echo "$v $r $(cat "$DIR/time") $p" | tee -a "$LOG"
    done
    r=$((r + 1))
done
echo "variant median_wall_s vs_none median_pruner_s vs_none"
med() { median_of "$LOG" "$1" "$2"; }
w0=$(med none 3) p0=$(med none 4)
for v in $VARIANTS; do
    w=$(med $v 3) p=$(med $v 4)
    awk "BEGIN { printf \"%s %.2f %.3f %.2f %.3f\\n\", \"$v\", $w, $w / $w0, $p, $p / $p0 }"
done
