#!/bin/sh
# The forward of every family against llama's at the same widths (issue 12):
# synth models of hidden 1024, 16 heads of 64 (16 key/value heads), 4 layers,
# MLP 2816 (OPT's fc1/fc2 4224: the same weights per block), then per round,
# the families in turn: `spruce eval` over WINDOWS windows of 512 tokens (wall
# time and CPU time, user + system, of the command: on a shared host the CPU
# time is the steadier) and `spruce run` decoding STEPS tokens (its tokens/s).
# Prints one line per family and round, then per family the median of the
# rounds and its ratio to llama's median, beside the best (shortest eval, most
# tokens/s) and its ratio to llama's best.  On a shared host single runs vary
# by 10-20%: read the medians of many rounds.
# Usage: bench/families.sh [SPRUCE] (default ./spruce); the environment sets
# ROUNDS (3), WINDOWS (16), STEPS (64), THREADS (2), DIR (default a new
# temporary directory; the models are kept there and reused).
set -eu
SPRUCE=${1:-./spruce}
ROUNDS=${ROUNDS:-3}
WINDOWS=${WINDOWS:-16}
STEPS=${STEPS:-64}
THREADS=${THREADS:-2}
DIR=${DIR:-$(mktemp -d)}
mkdir -p "$DIR"
FAMILIES="llama mistral qwen2 qwen3 phi3 gemma2 gemma3 opt"
common="--hidden 1024 --heads 16 --vocab 512 --layers 4 --max-position 2048"
for f in $FAMILIES; do
    [ -f "$DIR/$f/config.json" ] && continue   # synth's messages: $DIR/synth.log
    if [ "$f" = opt ]; then
        "$SPRUCE" synth "$DIR/$f" --family opt $common --intermediate 4224 >/dev/null 2>>"$DIR/synth.log"
    else
        "$SPRUCE" synth "$DIR/$f" --family "$f" $common --kv-heads 16 --intermediate 2816 \
            >/dev/null 2>>"$DIR/synth.log"
    fi
done
[ -f "$DIR/eval.u16" ] || "$SPRUCE" synth "$DIR/tokens" $common --eval "$DIR/eval.u16" \
    --count $((WINDOWS * 512)) >/dev/null 2>>"$DIR/synth.log"
LOG=$DIR/rounds.txt
: > "$LOG"
echo "family round eval_s eval_cpu_s decode_tok_s"
r=1
while [ $r -le "$ROUNDS" ]; do
    # each round starts one family later, so that no family always runs first
    skip=$(( (r - 1) % $(echo $FAMILIES | wc -w) ))
    order= rest= k=0
    for f in $FAMILIES; do
        if [ $k -lt $skip ]; then rest="$rest $f"; else order="$order $f"; fi
        k=$((k + 1))
    done
    order="$order $rest"
    for f in $order; do
        /usr/bin/time -o "$DIR/time" -f "%e %U %S" "$SPRUCE" eval "$DIR/$f" \
            --data "$DIR/eval.u16" --seqlen 512 --threads "$THREADS" >/dev/null 2>&1
        read -r e u sy < "$DIR/time"
        tps=$("$SPRUCE" run "$DIR/$f" --prompt "1 2 3 4" --steps "$STEPS" --threads "$THREADS" \
              --json 2>/dev/null | sed -n 's/.*"tokens_per_s": *\([0-9.e+-]*\).*/\1/p')
        awk "BEGIN { printf \"%s %d %.2f %.2f %.1f\\n\", \"$f\", $r, $e, $u + $sy, $tps }" |
            tee -a "$LOG"
    done
    r=$((r + 1))
done
echo "family median_eval_s vs_llama median_cpu_s vs_llama median_tok_s vs_llama best_eval_s vs_llama best_tok_s vs_llama"
awk 'function median(f, col,    i, j, k, v, x) {
         k = 0
         for (i = 1; i <= R; i++)
             if ((f, i) in V) { v[++k] = V[f, i, col] }
         for (i = 2; i <= k; i++) {   # insertion sort
             x = v[i]
             for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]
             v[j + 1] = x
         }
         return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
     }
     { f = $1; r = $2; V[f, r] = 1; V[f, r, 3] = $3; V[f, r, 4] = $4; V[f, r, 5] = $5;
       if (r > R) R = r;
       if (!(f in e) || $3 < e[f]) e[f] = $3; if (!(f in t) || $5 > t[f]) t[f] = $5;
       if (!(f in seen)) { seen[f] = 1; order[n++] = f } }
     END { le = median("llama", 3); lc = median("llama", 4); lt = median("llama", 5);
           for (i = 0; i < n; i++) { f = order[i];
               me = median(f, 3); mc = median(f, 4); mt = median(f, 5);
               printf "%s %.2f %.3f %.2f %.3f %.1f %.3f %.2f %.3f %.1f %.3f\n", f, me, me / le,
                      mc, mc / lc, mt, mt / lt, e[f], e[f] / e["llama"], t[f], t[f] / t["llama"] } }' \
    "$LOG"
