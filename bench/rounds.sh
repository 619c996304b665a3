# bench/rounds.sh: what the round-based benchmark scripts share (sourced).
# round_order R LIST...: LIST rotated by R - 1 places, so that across rounds
# no entry always runs first.
round_order() {
    r=$1
    shift
    skip=$(( (r - 1) % $# )) order= rest= k=0
    for v in "$@"; do
        if [ $k -lt $skip ]; then rest="$rest $v"; else order="$order $v"; fi
        k=$((k + 1))
    done
    echo $order $rest
}
# median_of LOG NAME COLUMN: the median of COLUMN over LOG's lines starting "NAME ".
median_of() {
    grep "^$2 " "$1" | awk -v c="$3" '{print $c}' | sort -n |
        awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
