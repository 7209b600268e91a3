#!/usr/bin/env python3
"""Turns `tokenim bench` JSON results (one object per line; other lines are
skipped) into medians and markdown tables.

  table.py --median FILE     one line per (label, target): medians of the runs
  table.py --markdown FILE   the results table of docs/benchmarks.md
  table.py --compare FILE    tokenim and ejabberd side by side, per label
  table.py --cluster FILE    one node against several (scripts/bench/cluster.sh)
"""
import json
import statistics
import sys
from collections import OrderedDict


def load(path):
    groups = OrderedDict()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            key = (r.get("label") or r.get("scenario"), r.get("target", "tokenim"))
            groups.setdefault(key, []).append(r)
    return groups


def med(runs, field):
    vals = [r[field] for r in runs if isinstance(r.get(field), (int, float))]
    return statistics.median(vals) if vals else None


def total(runs, field):
    return sum(r.get(field) or 0 for r in runs)


def fmt(v, digits=1):
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}" if digits else f"{v:.0f}"


def spread(runs):
    """min-max of the throughput over the runs, when there are several."""
    if len(runs) < 2:
        return ""
    field = {"group": "deliveries_per_sec", "conns": "conns_per_sec"}.get(runs[0]["scenario"], "msgs_per_sec")
    vals = [r[field] for r in runs if isinstance(r.get(field), (int, float))]
    return f" ({fmt(min(vals))} to {fmt(max(vals))})" if vals else ""


def throughput(runs):
    sc = runs[0]["scenario"]
    if sc == "group":
        return med(runs, "deliveries_per_sec"), "deliveries/s"
    if sc == "conns":
        return med(runs, "conns_per_sec"), "conns/s"
    return med(runs, "msgs_per_sec"), "msgs/s"


def extra(runs):
    sc = runs[0]["scenario"]
    if sc == "conns":
        b = med(runs, "server_bytes_per_conn")
        return f"{med(runs, 'connections'):,.0f} conns, {fmt(b and b / 1024, 1)} KiB/conn server RSS"
    if sc == "storm":
        return f"all {med(runs, 'clients'):,.0f} caught up in {fmt(med(runs, 'all_caught_up_secs'), 2)} s"
    if sc == "rate":
        return (f"target {fmt(med(runs, 'target_rate'), 0)}/s, {fmt(med(runs, 'idle'), 0)} idle, "
                f"send lateness p99 {fmt(med(runs, 'sched_lag_p99_ms'), 2)} ms")
    if sc == "pairs":
        return f"P={fmt(med(runs, 'pairs'), 0)} W={fmt(med(runs, 'window'), 0)}"
    if sc == "group":
        return (f"{fmt(med(runs, 'groups'), 0)} groups x {fmt(med(runs, 'members'), 0)}, "
                f"{fmt(med(runs, 'online_per_group'), 0)} online, {fmt(med(runs, 'senders'), 0)} sender(s), "
                f"W={fmt(med(runs, 'window'), 0)}")
    return ""


def errors(runs):
    return "/".join(str(total(runs, k)) for k in ("lost", "duplicated", "out_of_order"))


def median_lines(groups):
    for (label, target), runs in groups.items():
        t, unit = throughput(runs)
        print(f"{label} [{target}] x{len(runs)}: {fmt(t)} {unit}, p50 {fmt(med(runs, 'p50_ms'), 2)} ms, "
              f"p99 {fmt(med(runs, 'p99_ms'), 2)} ms; {extra(runs)}; lost/dup/ooo {errors(runs)}; "
              f"server cpu {fmt(med(runs, 'server_cpu_pct'), 0)}%")


def markdown(groups):
    print("| label | runs | throughput (median) | p50 ms | p99 ms | details | lost/dup/ooo | server CPU | bench CPU | other CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (label, target), runs in groups.items():
        t, unit = throughput(runs)
        name = label if target == "tokenim" else f"{label} ({target})"
        print(f"| {name} | {len(runs)} | {fmt(t)} {unit}{spread(runs)} | {fmt(med(runs, 'p50_ms'), 2)} | "
              f"{fmt(med(runs, 'p99_ms'), 2)} | {extra(runs)} | {errors(runs)} | "
              f"{fmt(med(runs, 'server_cpu_pct'), 0)}% | {fmt(med(runs, 'bench_cpu_pct'), 0)}% | "
              f"{fmt(med(runs, 'other_cpu_pct'), 0)}% |")


def compare(groups):
    labels = OrderedDict()
    for (label, target), runs in groups.items():
        labels.setdefault(label, {})[target] = runs
    print("| scenario | metric | tokenim | ejabberd (xmpp) |")
    print("| --- | --- | --- | --- |")
    for label, by in labels.items():
        some = next(iter(by.values()))
        sc = some[0]["scenario"]
        t_unit = throughput(some)[1]
        rows = [(t_unit + " (median)", lambda r: fmt(throughput(r)[0])),
                ("p50 ms", lambda r: fmt(med(r, "p50_ms"), 2)),
                ("p99 ms", lambda r: fmt(med(r, "p99_ms"), 2))]
        if sc == "conns":
            rows.append(("server RSS per conn", lambda r: fmt((med(r, "server_bytes_per_conn") or 0) / 1024, 1) + " KiB"))
        else:
            rows.append(("send->receive p99 ms", lambda r: fmt(med(r, "recv_p99_ms"), 2)))
            rows.append(("lost/dup/ooo", errors))
        rows.append(("server CPU", lambda r: fmt(med(r, "server_cpu_pct"), 0) + "%"))
        for name, f in rows:
            cells = [f(by[t]) + f" (x{len(by[t])})" if (t in by and name.endswith("(median)")) else (f(by[t]) if t in by else "-")
                     for t in ("tokenim", "xmpp")]
            print(f"| {label} | {name} | {cells[0]} | {cells[1]} |")


def cluster(groups):
    print("| label | nodes | runs | msgs/s (median, range) | ack p50 ms | ack p99 ms | recv p50 ms | recv p99 ms "
          "| lost/dup/ooo | server CPU (all nodes) | db+redis CPU | bench CPU | other CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (label, target), runs in groups.items():
        t, unit = throughput(runs)
        print(f"| {label} | {fmt(med(runs, 'nodes') or 1, 0)} | {len(runs)} | {fmt(t)} {unit}{spread(runs)} | "
              f"{fmt(med(runs, 'p50_ms'), 2)} | {fmt(med(runs, 'p99_ms'), 2)} | "
              f"{fmt(med(runs, 'recv_p50_ms'), 2)} | {fmt(med(runs, 'recv_p99_ms'), 2)} | {errors(runs)} | "
              f"{fmt(med(runs, 'server_cpu_pct'), 0)}% | {fmt(med(runs, 'aux_cpu_pct'), 0)}% | "
              f"{fmt(med(runs, 'bench_cpu_pct'), 0)}% | {fmt(med(runs, 'other_cpu_pct'), 0)}% |")


def main():
    modes = {"--median": median_lines, "--markdown": markdown, "--compare": compare, "--cluster": cluster}
    if len(sys.argv) != 3 or sys.argv[1] not in modes:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    groups = load(sys.argv[2])
    modes[sys.argv[1]](groups)


if __name__ == "__main__":
    main()
