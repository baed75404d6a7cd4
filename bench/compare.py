#!/usr/bin/python3
"""Before/after: the same throughput load (bench_relay.py) through several proxy binaries, their
runs interleaved (A B C, A B C, ...) so the machine's noise falls on all of them alike, with the
upstream's own rate over kept sessions measured in every run as the baseline.

  bench/compare.py --bin before=/tmp/old/smtp-oauth-proxy --bin after=build-bench/smtp-oauth-proxy
                   [--reps 3] [--conc 1,8,32] [--sizes 10K,1M] [--small-msgs 300] [--cap 10]

Prints, per message size and device count, each binary's median msg/s through the proxy and as
a share of the kept-session baseline, and the ratio of each binary to the first.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def one_run(binary, a, out):
    subprocess.run(["/usr/bin/python3", os.path.join(HERE, "bench_relay.py"), "--binary", binary,
                    "--sections", "throughput", "--paths", "direct-keep,proxy",
                    "--sizes", a.sizes, "--conc", a.conc, "--reps", "1",
                    "--small-msgs", str(a.small_msgs), "--large-msgs", str(a.large_msgs),
                    "--cap", str(a.cap), "--out", out],
                   check=True, stdout=subprocess.DEVNULL, timeout=1800)
    text = open(out).read()
    line = re.search(r"All runs \(msg/s\): (.*)", text).group(1)
    res = {}
    for size, conc, path, v in re.findall(r"(\d+ [KM]B) x(\d+) ([\w-]+) \[([\d.]+)\]", line):
        res[(size, int(conc), path)] = float(v)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH, the first is the base")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--sizes", default="10K,1M")
    ap.add_argument("--small-msgs", type=int, default=300)
    ap.add_argument("--large-msgs", type=int, default=60)
    ap.add_argument("--cap", type=float, default=10.0)
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bin]
    runs = {name: [] for name, _ in bins}
    with tempfile.TemporaryDirectory(prefix="sop-compare-") as d:
        for rep in range(a.reps):
            for name, path in bins:
                runs[name].append(one_run(path, a, os.path.join(d, "%s-%d.md" % (name, rep))))
                sys.stderr.write("rep %d %s done\n" % (rep + 1, name))
    keys = sorted({(s, c) for r in runs[bins[0][0]] for (s, c, p) in r},
                  key=lambda k: (k[0].endswith("MB"), k[1]))
    print("| message | devices | " + " | ".join(
        "%s msg/s | %s / kept" % (n, n) for n, _ in bins) + " | " + " | ".join(
        "%s / %s" % (n, bins[0][0]) for n, _ in bins[1:]) + " |")
    print("|---|---:|" + "---:|" * (2 * len(bins) + len(bins) - 1))
    for size, conc in keys:
        proxy = {n: statistics.median(r[(size, conc, "proxy")] for r in runs[n]) for n, _ in bins}
        kept = {n: statistics.median(r[(size, conc, "direct-keep")] for r in runs[n])
                for n, _ in bins}
        cells = []
        for n, _ in bins:
            cells += ["%.0f" % proxy[n], "%.2f" % (proxy[n] / kept[n])]
        cells += ["%.2f" % (proxy[n] / proxy[bins[0][0]]) for n, _ in bins[1:]]
        print("| %s | %d | %s |" % (size, conc, " | ".join(cells)))

if __name__ == "__main__":
    main()
