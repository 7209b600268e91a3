#!/usr/bin/env bash
# The two plots of docs/benchmarks.md, measured and drawn by `tokenim bench`:
#   docs/bench/latency-vs-rate.svg   p50/p99 send->ack latency against the
#                                    achieved rate (`rate` at several R)
#   docs/bench/memory-vs-conns.svg   server RSS per connection and in total
#                                    against N (`conns` at several N)
# Env: RATES, CONNS (lists), RUNS (default 1 per point), RATE_PAIRS (256),
# RATE_SECS (5).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RATES=${RATES:-"1000 2000 5000 10000 15000 20000"}
CONNS=${CONNS:-"1000 2500 5000 10000 19000"}
RATE_PAIRS=${RATE_PAIRS:-256}
RATE_SECS=${RATE_SECS:-5}
export RUNS=${RUNS:-1}
DIR=$ROOT/docs/bench
export OUT=$DIR/plots.jsonl
mkdir -p "$DIR"
: >"$OUT"
[ -n "${NO_BUILD:-}" ] || build_tokenim
export NO_BUILD=1
for r in $RATES; do
    "$(dirname "$0")/run.sh" "plot-rate-$r" rate --pairs "$RATE_PAIRS" --rate "$r" \
        --duration "$RATE_SECS" --quiet
done
for n in $CONNS; do
    "$(dirname "$0")/run.sh" "plot-conns-$n" conns -n "$n" --hold 2 --quiet
done
"$TOKENIM" bench plot "$OUT" --only scenario=rate -o "$DIR/latency-vs-rate.svg" \
    --x msgs_per_sec --y p50_ms,p99_ms,recv_p99_ms --log-y \
    --title "tokenim: latency against load ($RATE_PAIRS pairs, open loop)" \
    --xlabel "messages per second (persisted, acked and delivered)" --ylabel "milliseconds"
"$TOKENIM" bench plot "$OUT" --only scenario=conns -o "$DIR/memory-vs-conns.svg" \
    --x connections --y server_bytes_per_conn --y-scale 0.0009765625 \
    --title "tokenim: server memory per idle connection" \
    --xlabel "authenticated idle WebSocket connections" --ylabel "KiB of server RSS per connection"
"$TOKENIM" bench plot "$OUT" --only scenario=conns -o "$DIR/rss-vs-conns.svg" \
    --x connections --y server_rss_after --y-scale 0.00000095367431640625 \
    --title "tokenim: server RSS against idle connections" \
    --xlabel "authenticated idle WebSocket connections" --ylabel "MiB"
