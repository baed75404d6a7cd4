#!/usr/bin/python3
"""Graph accounts (upstream = graph): messages/s through the proxy against the Graph stand-in
(tests/integration/graph_standin.py, relaying to Postfix's smtp-sink) at 1, 8 and 32 devices,
and as the baseline in the same run the stand-in's own rate: Python threads posting the same
messages' base64 straight to sendMail with one token (what the stand-in can take at all; the
stand-in is Python, so it is the ceiling). Reported: both rates, their ratio, the proxy's CPU per
message, and Graph requests per message. Then the proxy's peak RSS while twenty devices send a
20 MB scan each at once (every one a draft with two uploaded attachments), against its RSS
before.

  bench/bench_graph.py --binary build-bench/smtp-oauth-proxy [--msgs 300] [--conc 1,8,32]
                       [--reps 2] [--big 20] [--big-size 20]

Every run is bounded by --msgs and by timeouts; nothing leaves 127.0.0.1.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import sop_rig  # noqa: E402
from bench_sink import proc_cpu, tool  # noqa: E402

RUN_TIMEOUT = 300  # seconds: a bound on one load run


def message(i, size, sender):
    """From: the mailbox, so the baseline's sendMail is allowed as is (Graph refuses another
    sender); the proxy's sender_rewrite = header then leaves it alone."""
    body = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return (b"From: <%s>\r\nTo: <someone@bench.test>\r\nSubject: bench %d\r\n"
            b"Message-ID: <bench-%d@bench.test>\r\n\r\n" % (sender.encode(), i, i) + body)


def scan(i, size_mb):
    half = size_mb * 1024 * 1024 // 2
    parts = [b"From: <copier@bench.test>\r\nTo: <someone@bench.test>\r\nSubject: scan %d\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
             b"--b\r\nContent-Type: text/plain\r\n\r\nscan\r\n" % i]
    for k in range(2):
        b64 = base64.encodebytes(os.urandom(half * 3 // 4)).replace(b"\n", b"\r\n")
        parts.append(b"--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;"
                     b" filename=\"p%d.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" % k +
                     b64)
    parts.append(b"--b--\r\n")
    return b"".join(parts)


def run_threads(n_msgs, conc, one):
    """one(i) for i in range(n_msgs) over conc threads. Returns (wall seconds, failures)."""
    lock = threading.Lock()
    state = {"next": 0, "fail": 0}

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= n_msgs:
                    return
                state["next"] += 1
            try:
                if not one(i):
                    with lock:
                        state["fail"] += 1
            except Exception:  # noqa: BLE001
                with lock:
                    state["fail"] += 1
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(RUN_TIMEOUT)
    return time.monotonic() - t0, state["fail"]


def smtp_send(port, data):
    s = smtplib.SMTP("127.0.0.1", port, timeout=120)
    try:
        s.ehlo("bench.test")
        s.mail("copier@bench.test")
        s.rcpt("someone@bench.test")
        code, _ = s.data(data)
        return code == 250
    finally:
        s.close()


def graph_post(url, token, b64):
    req = urllib.request.Request(url, data=b64, method="POST", headers={
        "Authorization": "Bearer " + token, "Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status == 202
    except urllib.error.HTTPError as e:
        sys.stderr.write("bench_graph: sendMail: %d %s\n" % (e.code, e.read()[:300]))
        return False


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--msgs", type=int, default=300)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--big", type=int, default=20, help="concurrent large scans")
    ap.add_argument("--big-size", type=int, default=20, help="MB per scan")
    a = ap.parse_args()

    d = tempfile.mkdtemp(prefix="sop-bench-graph-")
    procs = []
    rig = sop_rig.Rig(workdir=os.path.join(d, "rig"), with_dovecot=False)
    try:
        rig.start()
        sink_port, proxy_port = sop_rig.free_port(), sop_rig.free_port()
        sink = subprocess.Popen([tool("smtp-sink"), "-u", "nobody", "-c",
                                 "127.0.0.1:%d" % sink_port, "512"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(sink)
        sop_rig.wait_port(sink_port, proc=sink)
        graph = sop_rig.start_graph_standin(rig, mailboxes=(), sink_port=sink_port)
        graph.control(concurrency_limit=0)  # the baseline's threads are not the proxy's slots
        state = os.path.join(d, "state")
        os.makedirs(state, mode=0o700)
        conf = os.path.join(d, "proxy.conf")
        with open(conf, "w") as f:
            f.write("[proxy]\nlisten = 127.0.0.1:%d\nhostname = relay.bench.test\n"
                    "log_level = warn\nstate_dir = %s\nmax_connections = 1000\n"
                    "max_connections_per_ip = 1000\nmax_message_size = 100M\n"
                    "[account g]\nprovider = microsoft\ntenant = %s\nclient_id = %s\n"
                    "client_secret_file = %s\nmailbox = %s\ntoken_url = %s\n"
                    "upstream = graph\ngraph_url = %s\ndelivery = direct-then-spool\n"
                    "sender_rewrite = header\n"
                    "[device bench]\naddress = 127.0.0.1\naccount = g\n"
                    % (proxy_port, state, rig.tenant, rig.client_id, rig.secret_file,
                       rig.mailbox, rig.token_url, graph.url))
        proxy = subprocess.Popen([a.binary, "--config", conf], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(d, "proxy.log"), "wb"))
        procs.append(proxy)
        sop_rig.wait_port(proxy_port, proc=proxy)
        token = rig.fetch_token(scope=sop_rig.GRAPH_SCOPE)["access_token"]
        send_url = "%s/v1.0/users/%s/sendMail" % (graph.url, rig.mailbox)
        msgs = [message(i, a.size, rig.mailbox) for i in range(64)]
        b64s = [base64.b64encode(m) for m in msgs]
        run_threads(10, 1, lambda i: smtp_send(proxy_port, msgs[i % 64]))  # warm up

        print("| devices | stand-in alone msg/s | via proxy msg/s | proxy / alone | "
              "proxy CPU per msg | Graph requests per msg |")
        print("|---:|---:|---:|---:|---:|---:|")
        for conc in [int(c) for c in a.conc.split(",")]:
            alone, via, cpu, reqs = [], [], [], []
            for _ in range(a.reps):
                wall, fail = run_threads(a.msgs, conc,
                                         lambda i: graph_post(send_url, token, b64s[i % 64]))
                alone.append((a.msgs - fail) / wall)
                r0 = graph.stats()["requests"]
                c0 = proc_cpu(proxy.pid)
                wall, fail = run_threads(a.msgs, conc,
                                         lambda i: smtp_send(proxy_port, msgs[i % 64]))
                if fail:
                    sys.exit("bench_graph: %d messages failed through the proxy; log tail:\n%s"
                             % (fail, open(os.path.join(d, "proxy.log"), errors="replace")
                                .read()[-2000:]))
                via.append(a.msgs / wall)
                cpu.append((proc_cpu(proxy.pid) - c0) / a.msgs * 1e6)
                reqs.append((graph.stats()["requests"] - r0) / a.msgs)
            am, vm = statistics.median(alone), statistics.median(via)
            print("| %d | %.0f | %.0f | %.2f | %.0f us | %.2f |" % (
                conc, am, vm, vm / am, statistics.median(cpu), statistics.median(reqs)))
            sys.stdout.flush()

        before = vm_hwm_kb(proxy.pid)
        scans = [scan(i, a.big_size) for i in range(a.big)]
        graph.control(concurrency_limit=4)  # Graph's own limit again: the proxy must keep to it
        graph.reset()  # the peaks below are the scans' alone
        r0 = graph.stats()["requests"]
        wall, fail = run_threads(a.big, a.big, lambda i: smtp_send(proxy_port, scans[i]))
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:  # queued ones are still being sent
            st = graph.stats()
            if sum(1 for m in st.get("messages", []) if m.get("kind") == "send") >= a.big:
                break
            time.sleep(0.5)
        after = vm_hwm_kb(proxy.pid)
        reqs = (graph.stats()["requests"] - r0) / max(1, a.big)
        print("\n%d concurrent %d MB scans: %d failed, %.1f s; proxy peak RSS %.1f MB before, "
              "%.1f MB after (+%.1f MB); %.1f Graph requests per scan"
              % (a.big, a.big_size, fail, wall, before / 1024, after / 1024,
                 (after - before) / 1024, reqs))
        if proxy.poll() is not None:
            sys.exit("bench_graph: the proxy died; see %s/proxy.log" % d)
        st = graph.stats()
        print("Graph requests in flight for the mailbox at most: %s; throttled: %s"
              % (json.dumps(st.get("peak_in_flight")), json.dumps(st.get("throttled"))))
        graph.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        rig.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
