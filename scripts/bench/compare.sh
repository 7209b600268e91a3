#!/usr/bin/env bash
# tokenim against ejabberd on this machine, same scenarios, same client:
# installs and starts ejabberd (ejabberd-setup.sh), then runs `conns`,
# `pairs` and `rate` RUNS times (default 3) against each, tokenim on a fresh
# release server every run, and writes the side-by-side table to
# docs/bench/compare.md (raw results in docs/bench/compare.jsonl).
#
# Env: RUNS, CMP_CONNS (default 5000), CMP_SECS (seconds of sending per
# pairs run, default 5), CMP_RATES (default "500 2000"), EJ_DB (sqlite).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-3}
CMP_CONNS=${CMP_CONNS:-5000}
CMP_SECS=${CMP_SECS:-5}
CMP_RATES=${CMP_RATES:-"500 2000"}
OUT=${OUT:-$ROOT/docs/bench/compare.jsonl}
MD=${MD:-$ROOT/docs/bench/compare.md}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"

[ -n "${NO_BUILD:-}" ] || build_tokenim
EJ="$(dirname "$0")/ejabberd-setup.sh"
"$EJ" wipe
"$EJ" start
EJ_PID=$("$EJ" pid)
trap 'stop_tokenim; "$EJ" stop' EXIT

scenarios=(
    "conns|conns -n $CMP_CONNS --hold 2"
    "pairs-p1-w1|pairs --pairs 1 --window 1 --messages 1000000 --duration $CMP_SECS"
    "pairs-p16-w1|pairs --pairs 16 --window 1 --messages 1000000 --duration $CMP_SECS"
    "pairs-p256-w1|pairs --pairs 256 --window 1 --messages 1000000 --duration $CMP_SECS"
)
for r in $CMP_RATES; do
    scenarios+=("rate-$r|rate --pairs 64 --rate $r --duration $CMP_SECS")
done

for s in "${scenarios[@]}"; do
    label=${s%%|*}
    args=${s#*|}
    for i in $(seq "$RUNS"); do
        start_tokenim
        echo "== $label run $i/$RUNS tokenim: $args" >&2
        # shellcheck disable=SC2086
        "$TOKENIM" bench $args --url "$TOKENIM_URL" --admin-token "$BENCH_ADMIN" \
            --server-pid "$TOKENIM_PID" --label "$label" --quiet | tail -n 1 >>"$OUT"
        stop_tokenim
        echo "== $label run $i/$RUNS ejabberd: $args" >&2
        # shellcheck disable=SC2086
        "$TOKENIM" bench $args --target xmpp --xmpp-addr 127.0.0.1:5222 \
            --server-pid "$EJ_PID" --label "$label" --quiet | tail -n 1 >>"$OUT"
    done
done

{
    echo "<!-- written by scripts/bench/compare.sh on $(date -u +%Y-%m-%dT%H:%MZ); medians of $RUNS runs -->"
    python3 "$(dirname "$0")/table.py" --compare "$OUT"
} >"$MD"
cat "$MD"
