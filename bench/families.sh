#!/bin/sh
# The forward of every family against llama's at the same widths (issue 12):
# synth models of hidden 1024, 16 heads of 64 (16 key/value heads), 4 layers,
# MLP 2816 (OPT's fc1/fc2 4224: the same weights per block), then per round,
# the families in turn: `spruce eval` over WINDOWS windows of 512 tokens (wall
# time and CPU time, user + system, of the command: on a shared host the CPU
# time is the steadier) and `spruce run` decoding STEPS tokens (its tokens/s).
# Prints one line per family and round, then per family the best of the
# rounds (shortest eval, most tokens/s) and its ratio to llama's best (on a
# shared host the best is the least noisy), beside the range of the ratios to
# llama within a round.
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
    set -- $FAMILIES
    k=1
    first=$(( (r - 1) % $# + 1 ))
    while [ $k -lt $first ]; do
        shift
        k=$((k + 1))
    done
    order="$*"
    for f in $FAMILIES; do
        case " $order " in *" $f "*) ;; *) order="$order $f" ;; esac
    done
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
echo "family best_eval_s vs_llama same_round_range best_cpu_s vs_llama best_tok_s vs_llama same_round_range"
awk '{ f = $1; r = $2; E[f, r] = $3; if (!(f in e) || $3 < e[f]) e[f] = $3;
       if (!(f in c) || $4 < c[f]) c[f] = $4; if (!(f in t) || $5 > t[f]) t[f] = $5;
       T[f, r] = $5; if (r > R) R = r;
       if (!(f in seen)) { seen[f] = 1; order[n++] = f } }
     END { for (i = 0; i < n; i++) { f = order[i]; elo = tlo = 1e9; ehi = thi = 0;
               for (r = 1; r <= R; r++) { x = E[f, r] / E["llama", r]; y = T[f, r] / T["llama", r];
                   elo = x < elo ? x : elo; ehi = x > ehi ? x : ehi;
                   tlo = y < tlo ? y : tlo; thi = y > thi ? y : thi }
               printf "%s %.2f %.3f %.2f-%.2f %.2f %.3f %.1f %.3f %.2f-%.2f\n", f, e[f],
                      e[f] / e["llama"], elo, ehi, c[f], c[f] / c["llama"], t[f], t[f] / t["llama"],
                      tlo, thi } }' "$LOG"
