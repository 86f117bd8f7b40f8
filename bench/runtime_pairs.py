#!/usr/bin/env python3
"""Alternated runs of `benches/runtime.rs` lines, braid alone, compared round by round.

This shared 2-core VM switches between a fast and a slow mode for seconds at a time, and a
single run varies by 5-10%, so comparing two lines (say 4 links against 1, or one build
against another) needs them run in turns, many times, and the rounds where any of them ran in
the slow mode dropped. Each configuration is `LABEL|BINARY|ENV|LINE`:

    cargo bench -p braid --bench runtime --no-run
    B=$(ls -t target/release/deps/runtime-* | grep -v '\\.d$' | head -1)
    bench/runtime_pairs.py --rounds 20 --mb 1000 \\
        "1 link|$B||braid plaintext, 1 link" \\
        "4 links|$B||braid plaintext, 4 links" \\
        "4 links warm|$B|BENCH_WARM_MB=300|braid plaintext, 4 links"

The first configuration is the baseline: for every other one the script prints the mean and
median of its per-round ratio to it (and the standard error of the mean), over the rounds in
which the baseline ran at least `--fast` Gbit/s (default 28: the slow mode gives 10-20; the
other lines may be slower by nature, as a cold 4-link start is). With `BENCH_VERBOSE`-style output (the bench prints each end's thread CPU), the
medians of those are printed too. Docs: docs/BENCHMARKS.md, session 7.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys


def run(binary, env, line, mb):
    e = dict(os.environ)
    for kv in env.split():
        k, v = kv.split("=", 1)
        e[k] = v
    e.update(BENCH_MB=str(mb), BENCH_NO_RAW="1", BENCH_ROUNDS="1", BENCH_ONLY="=" + line,
             BENCH_VERBOSE="1")
    out = subprocess.run([binary, "--bench"], env=e, capture_output=True, text=True,
                         timeout=600).stdout
    gbit = re.search(r"^braid .*?\s([\d.]+)\s+\d+%", out, re.M)
    snd = re.findall(r"sender thread: ([\d.]+) ms", out)
    rcv = re.findall(r"receiver thread: ([\d.]+) ms", out)
    if not gbit:
        return None
    return float(gbit.group(1)), (float(snd[-1]) if snd else None), (float(rcv[-1]) if rcv else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--mb", type=int, default=1000)
    ap.add_argument("--fast", type=float, default=28.0)
    ap.add_argument("configs", nargs="+", help="LABEL|BINARY|ENV|LINE")
    a = ap.parse_args()
    cfgs = [c.split("|", 3) for c in a.configs]
    if any(len(c) != 4 for c in cfgs):
        sys.exit("each configuration is LABEL|BINARY|ENV|LINE")
    res = {c[0]: [] for c in cfgs}
    for i in range(a.rounds):
        order = cfgs if i % 2 == 0 else cfgs[:1] + cfgs[1:][::-1]
        for label, binary, env, line in order:
            res[label].append(run(binary, env, line, a.mb))
        print(" ".join(f"{c[0]}={res[c[0]][-1][0] if res[c[0]][-1] else 'FAILED'}" for c in cfgs),
              flush=True)
    base = cfgs[0][0]
    kept = [i for i in range(a.rounds)
            if all(res[c[0]][i] for c in cfgs) and res[base][i][0] >= a.fast]
    print(f"rounds kept (baseline at >= {a.fast} Gbit/s, none failed): {len(kept)} of {a.rounds}")
    if not kept:
        return
    for label, *_ in cfgs:
        g = [res[label][i][0] for i in kept]
        r = [res[label][i][0] / res[base][i][0] for i in kept]
        se = statistics.stdev(r) / len(r) ** 0.5 if len(r) > 1 else 0.0
        cpu = ""
        s = [res[label][i][1] for i in kept if res[label][i][1] is not None]
        v = [res[label][i][2] for i in kept if res[label][i][2] is not None]
        if s and v:
            cpu = f" | sender CPU {statistics.median(s):.1f} ms, receiver {statistics.median(v):.1f} ms"
        print(f"{label:16s} {statistics.median(g):6.2f} Gbit/s  ratio mean {statistics.mean(r):.3f}"
              f" median {statistics.median(r):.3f} (se {se:.3f}){cpu}")


if __name__ == "__main__":
    main()
