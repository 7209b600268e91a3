#!/usr/bin/env bash
# Runs one `tokenim bench` scenario RUNS times (default 3), each against a
# fresh release server, and appends every JSON result, tagged with LABEL, to
# OUT (default docs/bench/results.jsonl). Prints the median of the runs.
#
#   scripts/bench/run.sh LABEL SCENARIO [bench options...]
#   e.g. scripts/bench/run.sh pairs-p16 pairs --pairs 16 --window 1 --messages 50000
#
# Env: RUNS, OUT, BENCH_PORT, TOKENIM (binary), NO_BUILD=1 to skip the build.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
label=$1
scenario=$2
shift 2
RUNS=${RUNS:-3}
OUT=${OUT:-$ROOT/docs/bench/results.jsonl}
mkdir -p "$(dirname "$OUT")"
[ -n "${NO_BUILD:-}" ] || build_tokenim >&2
trap stop_tokenim EXIT
tmp=$(mktemp)
for i in $(seq "$RUNS"); do
    start_tokenim
    echo "== $label run $i/$RUNS: tokenim bench $scenario $*" >&2
    "$TOKENIM" bench "$scenario" --url "$TOKENIM_URL" --admin-token "$BENCH_ADMIN" \
        --server-pid "$TOKENIM_PID" --label "$label" "$@" | tee "$tmp.out" >&2
    tail -n 1 "$tmp.out" >>"$tmp"
    stop_tokenim
done
cat "$tmp" >>"$OUT"
python3 "$(dirname "$0")/table.py" --median "$tmp"
rm -f "$tmp" "$tmp.out"
