#!/usr/bin/python3
"""The proxy's own cost: Postfix's smtp-source straight to smtp-sink, against smtp-source to the
proxy (upstream_auth = none, delivery = direct, plain text both sides) in front of the same
smtp-sink. Both paths run alternately in the same run, at 1, 8 and 32 concurrent devices, one
message per connection as copiers send; reported as messages/s, the proxy's rate as a share of
the direct one, and the proxy's CPU per message (its utime+stime over the messages).

  bench/bench_sink.py --binary build-bench/smtp-oauth-proxy [--msgs 2000] [--size 10240]
                      [--conc 1,8,32] [--reps 3]

Every run is bounded by --msgs and by a timeout; nothing leaves 127.0.0.1.
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from sop_rig import free_port, wait_port  # noqa: E402

RUN_TIMEOUT = 180  # seconds: a bound on one smtp-source run


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tool(name):
    for d in ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/lib/postfix"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if not p:
        sys.exit("bench_sink: %s not found (package postfix, see scripts/install-deps.sh)" % name)
    return p


def source(port, msgs, conc, size):
    """smtp-source: msgs messages of size bytes over conc sessions, one per connection. Returns
    the wall time in seconds."""
    t0 = time.monotonic()
    subprocess.run([tool("smtp-source"), "-m", str(msgs), "-s", str(conc), "-l", str(size),
                    "-f", "copier@bench.test", "-t", "someone@bench.test", "-M", "bench.test",
                    "127.0.0.1:%d" % port], check=True, timeout=RUN_TIMEOUT,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--msgs", type=int, default=2000)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="sop-bench-sink-")
    procs = []
    try:
        sink_port, proxy_port = free_port(), free_port()
        sink = subprocess.Popen([tool("smtp-sink"), "-u", "nobody", "-R", d, "-c",
                                 "127.0.0.1:%d" % sink_port, "512"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sink)
        wait_port(sink_port, proc=sink)
        state = os.path.join(d, "state")
        os.makedirs(state, mode=0o700)
        conf = os.path.join(d, "proxy.conf")
        with open(conf, "w") as f:
            f.write("[proxy]\nlisten = 127.0.0.1:%d\nhostname = relay.bench.test\n"
                    "log_level = warn\nstate_dir = %s\nmax_connections = 1000\n"
                    "max_connections_per_ip = 1000\n"
                    "[account sink]\nupstream_host = 127.0.0.1\nupstream_port = %d\n"
                    "upstream_auth = none\nupstream_tls = opportunistic\n"
                    "mailbox = copier@bench.test\ndelivery = direct\nrate_limit = 0\n"
                    "max_upstream_connections = 0\n"
                    "[device bench]\naddress = 127.0.0.1\naccount = sink\n"
                    % (proxy_port, state, sink_port))
        proxy = subprocess.Popen([a.binary, "--config", conf], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(d, "proxy.log"), "wb"))
        procs.append(proxy)
        wait_port(proxy_port, proc=proxy)
        source(proxy_port, 20, 1, a.size)  # warm up: the pool's first connections

        print("| devices | direct msg/s | via proxy msg/s | proxy / direct | proxy CPU per msg |")
        print("|---:|---:|---:|---:|---:|")
        for conc in [int(c) for c in a.conc.split(",")]:
            direct, via, cpu = [], [], []
            for _ in range(a.reps):
                direct.append(a.msgs / source(sink_port, a.msgs, conc, a.size))
                c0 = proc_cpu(proxy.pid)
                via.append(a.msgs / source(proxy_port, a.msgs, conc, a.size))
                cpu.append((proc_cpu(proxy.pid) - c0) / a.msgs * 1e6)
            dm, vm = statistics.median(direct), statistics.median(via)
            print("| %d | %.0f | %.0f | %.2f | %.0f us |" % (conc, dm, vm, vm / dm,
                                                           statistics.median(cpu)))
            sys.stdout.flush()
        if proxy.poll() is not None:
            sys.exit("bench_sink: the proxy died; see %s/proxy.log" % d)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
