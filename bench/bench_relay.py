#!/usr/bin/python3
"""smtp-oauth-proxy benchmark: throughput (proxy vs. straight to the upstream), memory per
session, token requests. Run it through bench/run.sh (which builds a Release binary first):

    bench/run.sh                         # full run, about 6-8 minutes on 2 cores
    /usr/bin/python3 bench/bench_relay.py --binary build-bench/smtp-oauth-proxy [--quick]

Peers (all on 127.0.0.1, from tests/integration/sop_rig.py):
  * the IdP stand-in (Entra-like token endpoint; GET /_stats counts token requests),
  * Dovecot's submission server as the upstream: STARTTLS + AUTH XOAUTH2, validating the JWTs
    locally, relaying every message to
  * Postfix's smtp-sink (a fast C sink that throws mail away), so the sink is not the bottleneck.

Load: one SMTP connection per message, as copiers do (connect, EHLO, MAIL, RCPT, DATA, QUIT; no
pipelining). The SAME client code sends to the proxy (plain SMTP) and straight to Dovecot
("direct": additionally STARTTLS, EHLO, AUTH XOAUTH2 with a token fetched once from the IdP),
which is exactly what the proxy itself does upstream for every device connection.

Each cell (message size x concurrent devices) runs direct and proxy alternately, 3 times
(ABBA order), each run bounded by a message count and a time cap; the median run is reported.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import sop_rig  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"
T_IO = 60.0          # seconds: bound on any single network wait of the load client
FROM = "copier@contoso.test"
RCPT = "alice@contoso.test"


# ---------------------------------------------------------------------------------------------
# messages

def make_message(size, tag):
    """An RFC 5322 message of about `size` bytes: a scan-like base64 body in 76-char lines.
    Returned as wire bytes (CRLF, no line starts with '.') followed by the end-of-data line."""
    head = ("From: Copier 3F <%s>\r\nTo: <%s>\r\nSubject: bench %s\r\n"
            "Message-ID: <bench-%s@contoso.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n" % (FROM, RCPT, tag, tag)).encode()
    line = base64.b64encode(os.urandom(57)) + b"\r\n"          # 76 chars + CRLF
    n = max(1, (size - len(head)) // len(line))
    body = head + line * n
    assert not re.search(rb"\r\n\.", body)
    return body + b".\r\n"


# ---------------------------------------------------------------------------------------------
# the load client (same code for both paths)

class SmtpError(Exception):
    pass


class Client:
    """A minimal blocking SMTP client over a raw socket: one command, one reply (no pipelining)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T_IO)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rf = self.sock.makefile("rb")

    def reply(self):
        lines = []
        while True:
            line = self.rf.readline(4096)
            if not line:
                raise SmtpError("connection closed after %r" % lines)
            lines.append(line)
            if line[3:4] != b"-":
                break
        try:
            return int(lines[-1][:3]), b"".join(lines)
        except ValueError:
            raise SmtpError("bad reply %r" % lines)

    def cmd(self, line, expect):
        if line is not None:
            self.sock.sendall(line + b"\r\n")
        code, text = self.reply()
        if code != expect:
            raise SmtpError("%s -> %r" % ((line or b"<greeting>")[:40], text[:300]))
        return text

    def starttls(self, ctx):
        self.cmd(b"STARTTLS", 220)
        self.rf.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.rf = self.sock.makefile("rb")

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass


def open_session(port, direct, n):
    """Connect, EHLO and, for direct = (ssl_ctx, xoauth2_b64), STARTTLS + AUTH XOAUTH2."""
    c = Client(port)
    try:
        c.cmd(None, 220)
        c.cmd(b"EHLO copier-%d" % n, 250)
        if direct:
            ctx, sasl = direct
            c.starttls(ctx)
            c.cmd(b"EHLO copier-%d" % n, 250)
            c.cmd(b"AUTH XOAUTH2", 334)          # ~2 KB token: the 334 continuation, like the proxy
            c.cmd(sasl, 235)
    except BaseException:
        c.close()
        raise
    return c


def send_txn(c, msg):
    c.cmd(b"MAIL FROM:<" + FROM.encode() + b">", 250)
    c.cmd(b"RCPT TO:<" + RCPT.encode() + b">", 250)
    c.cmd(b"DATA", 354)
    c.sock.sendall(msg)
    c.cmd(None, 250)


def send_one(port, msg, direct, n):
    """One copier connection with one message. direct = (ssl_ctx, xoauth2_b64) or None."""
    c = open_session(port, direct, n)
    try:
        send_txn(c, msg)
        c.cmd(b"QUIT", 221)
    finally:
        c.close()


def cpu_total():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def proc_cpu(pid):
    """utime+stime of a process in seconds (0 if gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def run_load(port, msg, conc, max_msgs, cap_s, direct, proxy_pid, keep=False):
    """conc threads, each sending one message per connection until max_msgs were started or
    cap_s passed; in-flight messages finish. keep: each thread keeps one session open instead
    (RSET between messages, as the proxy's pool does upstream). Returns a dict of figures."""
    lock = threading.Lock()
    state = {"started": 0, "ok": 0, "err": 0, "errors": [], "last": 0.0}
    lat = []
    t0 = time.monotonic()
    deadline = t0 + cap_s

    keep_sessions = [None] * conc

    def send(w, n):
        if not keep:
            return send_one(port, msg, direct, n)
        c = keep_sessions[w]
        try:
            if c is None:
                c = keep_sessions[w] = open_session(port, direct, n)
            else:
                c.cmd(b"RSET", 250)
            send_txn(c, msg)
        except BaseException:
            keep_sessions[w] = None
            if c is not None:
                c.close()
            raise

    def worker(w):
        try:
            work(w)
        finally:
            c = keep_sessions[w]
            if c is not None:
                try:
                    c.cmd(b"QUIT", 221)
                except (OSError, SmtpError):
                    pass
                c.close()

    def work(w):
        while True:
            with lock:
                if state["started"] >= max_msgs or time.monotonic() >= deadline:
                    return
                state["started"] += 1
                n = state["started"]
            t = time.monotonic()
            try:
                send(w, n)
                ok = True
            except (OSError, SmtpError) as e:
                ok = False
                err = repr(e)[:300]
            done = time.monotonic()
            with lock:
                if ok:
                    state["ok"] += 1
                    lat.append(done - t)
                    state["last"] = done
                else:
                    state["err"] += 1
                    if len(state["errors"]) < 5:
                        state["errors"].append(err)

    cpu0, cput0 = time.process_time(), cpu_total()
    pcpu0 = proc_cpu(proxy_pid) if proxy_pid else 0.0
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conc)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(cap_s + 2 * T_IO + 10)   # a worker's last message is bounded by T_IO per step
    hung = sum(th.is_alive() for th in threads)
    wall = (state["last"] or time.monotonic()) - t0
    busy1, tot1 = cpu_total()
    machine_busy = (busy1 - cput0[0]) / max(1, tot1 - cput0[1])
    client_cpu = time.process_time() - cpu0
    proxy_cpu = (proc_cpu(proxy_pid) - pcpu0) if proxy_pid else 0.0
    return {"t0": t0, "ok": state["ok"], "err": state["err"], "errors": state["errors"], "hung": hung,
            "wall": wall, "rate": state["ok"] / wall if wall > 0 else 0.0,
            "mb_s": state["ok"] * len(msg) / wall / 1e6 if wall > 0 else 0.0,
            "p50_ms": 1000 * statistics.median(lat) if lat else 0.0,
            "client_cpu": client_cpu / wall if wall > 0 else 0.0,
            "proxy_cpu": proxy_cpu / wall if wall > 0 else 0.0,
            "machine_busy": machine_busy}


# ---------------------------------------------------------------------------------------------
# peers

class SmtpSink:
    """Postfix's smtp-sink; -c prints counters (sess= quit= mesg=) we read back at the end."""

    def __init__(self, d, port):
        self.port = port
        self.out_path = os.path.join(d, "smtp-sink.out")

    def start(self):
        self.out = open(self.out_path, "wb")
        argv = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        argv += ["127.0.0.1:%d" % self.port, "256"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=sop_rig._die_with_parent)
        sop_rig.wait_port(self.port, proc=self.proc, banner=b"220")

    def messages(self):
        with open(self.out_path, "rb") as f:
            data = f.read()
        m = re.findall(rb"mesg=(\d+)", data)
        return int(m[-1]) if m else 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "VmPeak", "VmSize"):
                out[k] = int(v.split()[0])   # kB
    return out


def fmt_kb(kb):
    return "%.1f MB" % (kb / 1024.0)


# ---------------------------------------------------------------------------------------------
# main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(SOURCE, "build-bench", "smtp-oauth-proxy"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--conc", default="1,8,32")
    ap.add_argument("--small-msgs", type=int, default=600, help="message cap per 10 KB run")
    ap.add_argument("--large-msgs", type=int, default=150, help="message cap per 1 MB run")
    ap.add_argument("--cap", type=float, default=15.0, help="time cap per run, seconds")
    ap.add_argument("--big-mb", type=int, default=100, help="the memory test's big message")
    ap.add_argument("--budget", type=float, default=540.0,
                    help="seconds: no new repetition starts after this (the run stays bounded)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs) afterwards")
    ap.add_argument("--quick", action="store_true", help="1 rep, small caps: a smoke test")
    ap.add_argument("--out", default=os.path.join(SOURCE, "build-bench", "bench-results.md"))
    ap.add_argument("--sizes", default="10K,1M", help="message sizes of the throughput section")
    ap.add_argument("--delivery", default="direct",
                    help="the account's delivery mode in the throughput section (issue 4)")
    ap.add_argument("--max-conns", type=int, default=3,
                    help="max_upstream_connections of the account (Exchange allows 3)")
    ap.add_argument("--paths", default="direct,direct-keep,proxy",
                    help="throughput paths: direct (a connection per message), direct-keep "
                    "(min(devices, --max-conns) kept sessions, RSET between messages: what the "
                    "upstream accepts within the connection cap), proxy")
    ap.add_argument("--sections", default="memory,throughput,spool",
                    help="which parts run: memory, throughput, spool")
    ap.add_argument("--spool-conc", default="8,32", help="devices in the spool section")
    ap.add_argument("--spool-variants", default="disk,disk-loop,tmpfs",
                    help="disk (commits on spool_commit_threads), disk-loop (spool_commit_threads "
                    "= 0: fsync on the event loop), tmpfs")
    ap.add_argument("--spool-msgs", type=int, default=600, help="message cap per spool run")
    ap.add_argument("--shm", default="/dev/shm",
                    help="a tmpfs for the spool section's no-fsync-cost comparison")
    a = ap.parse_args()
    if a.quick:
        a.reps, a.small_msgs, a.large_msgs, a.cap, a.big_mb = 1, 40, 6, 5.0, 20
        a.spool_msgs = 60
    a.sections = set(a.sections.split(","))
    a.paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    a.spool_variants = [x.strip() for x in a.spool_variants.split(",") if x.strip()]
    a.sizes = [x.strip() for x in a.sizes.split(",") if x.strip()]
    conc_levels = [int(x) for x in a.conc.split(",")]
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        sys.exit("no proxy binary at %s (bench/run.sh builds it)" % binary)
    sop_rig.terminate_on_sigterm()
    t_start = time.monotonic()

    def log(msg):
        sys.stderr.write("[%6.1fs] %s\n" % (time.monotonic() - t_start, msg))
        sys.stderr.flush()

    # Our own work dir (not /tmp/sop-rig-*: other test runs on a shared machine may sweep
    # those away, and Dovecot dies without its base_dir). The rig without its Dovecot: we start
    # Dovecot ourselves, relaying to smtp-sink.
    workdir = tempfile.mkdtemp(prefix="sop-bench-")
    log("work dir %s" % workdir)
    try:
        with sop_rig.Rig(workdir=workdir, keep=True, with_dovecot=False) as rig:
            sink = SmtpSink(rig.dir, sop_rig.free_port())
            sink.start()
            try:
                return bench(a, rig, sink, conc_levels, binary, log, t_start)
            finally:
                sink.stop()
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


SIZES = {"10K": ("10 KB", 10 * 1024), "1M": ("1 MB", 1024 * 1024)}


def upstream_logins(rig):
    """Successful logins in Dovecot's log: one per upstream connection (each a TLS handshake and
    an XOAUTH2 validation), whoever opened it."""
    return rig.dovecot_log().count("Login: user=")


def accepts(binary, rig, name, proxy_extra=None, account_extra=None):
    """Does this binary's --check accept these keys? Older binaries refuse keys they predate."""
    d = os.path.join(rig.dir, "probe-" + name)
    os.makedirs(d, exist_ok=True)
    cfg = sop_rig.proxy_config(rig, sop_rig.free_port(), devices=[("copiers", {
        "address": "127.0.0.1", "account": "scanners"})], state_dir=os.path.join(d, "state"),
        proxy_extra=proxy_extra, account_extra=account_extra)
    path = os.path.join(d, "probe.ini")
    with open(path, "w") as f:
        f.write(cfg)
    os.chmod(path, 0o600)
    r = subprocess.run([binary, "--config", path, "--check"], capture_output=True, timeout=30)
    return r.returncode == 0


def knows_issue4(binary, rig):
    """Issue 4's account keys (delivery, rate_limit, ...)? Without them the benchmark runs
    without the keys and skips the spool."""
    return accepts(binary, rig, "issue4", account_extra={
        "delivery": "spool", "rate_limit": "0", "max_upstream_connections": "3"})


def knows_per_ip_limit(binary, rig):
    """max_connections_per_ip (issue 13; default 20)? The benchmark's devices all come from
    127.0.0.1, so a binary that has the limit gets it lifted."""
    return accepts(binary, rig, "per-ip", proxy_extra={"max_connections_per_ip": "1000"})


PER_IP = {}  # binary -> {"max_connections_per_ip": "1000"} or {}


def start_proxy(rig, binary, name, state_dir, extra, proxy_extra=None):
    """The proxy on a config of the rig's: one device by address, one account (+ extra keys)."""
    if binary not in PER_IP:
        PER_IP[binary] = ({"max_connections_per_ip": "1000"} if knows_per_ip_limit(binary, rig)
                          else {})
    proxy_extra = dict(proxy_extra or {}, **PER_IP[binary])
    port = sop_rig.free_port()
    cfg = sop_rig.proxy_config(rig, port, devices=[("copiers", {"address": "127.0.0.1",
                                                                "account": "scanners"})],
                               upstream_port=rig.dovecot_port, log_level="info",
                               state_dir=state_dir, account_extra=extra,
                               proxy_extra=proxy_extra)
    cfg = cfg.replace("max_message_size = 35M", "max_message_size = 200M")
    assert "max_message_size = 200M" in cfg
    cfg_path = os.path.join(rig.dir, name + ".ini")
    with open(cfg_path, "w") as f:
        f.write(cfg)
    os.chmod(cfg_path, 0o600)
    proxy = sop_rig.ProxyProcess(binary, cfg_path, os.path.join(rig.dir, name + ".log"))
    proxy.start(ports=[port])
    return proxy, port


def queued_files(state_dir):
    try:
        return sum(1 for n in os.listdir(os.path.join(state_dir, "spool", "queue"))
                   if n.endswith(".env"))
    except OSError:
        return 0


def wait_drained(state_dir, timeout):
    """Wait until the spool holds no message; the time it happened (None: not within timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if queued_files(state_dir) == 0:
            return time.monotonic()
        time.sleep(0.05)
    return None


def bench(a, rig, sink, conc_levels, binary, log, t_start):
    # mail_max_userip_connections is 200 in the rig's config (all sessions are one user, one IP):
    # above our 32 (+ the proxy's 32) concurrent sessions.
    rig.dovecot = sop_rig.Dovecot(os.path.join(rig.dir, "dovecot"), rig.dovecot_port,
                                  rig.cert_file, rig.key_file, sink.port, rig.keydir)
    with open(rig.dovecot.conf) as f:
        conf = f.read()
    m = re.search(r"mail_max_userip_connections = (\d+)", conf)
    assert m and int(m.group(1)) >= 2 * max(conc_levels), "dovecot would cap the sessions"
    size_limit = int(re.search(r"submission_max_mail_size = (\d+)", conf).group(1))
    assert size_limit > a.big_mb * 1024 * 1024 + 65536, "dovecot's SIZE is below the big message"
    rig.dovecot.start()
    log("dovecot on %d relaying to smtp-sink on %d; idp %s"
        % (rig.dovecot_port, sink.port, rig.token_url))

    # The direct client's token, then zero the IdP's counters: from here on, every token
    # request the IdP sees is the proxy's.
    tok = rig.fetch_token()["access_token"]
    rig.idp_reset()
    direct = (rig.ssl_context(), sop_rig.xoauth2_b64(rig.mailbox, tok).encode())

    results = {"machine": machine(), "binary": binary, "runs": {}, "spool_runs": {},
               "issue4": knows_issue4(binary, rig)}
    # Issue 4's pacing would cap a benchmark at 30 msg/min: off here (rate_limit = 0); the
    # connection cap stays at Exchange's 3 unless --max-conns says otherwise.
    extra = ({"delivery": a.delivery, "rate_limit": "0",
              "max_upstream_connections": str(a.max_conns)} if results["issue4"] else None)
    log("binary %s issue 4's keys (delivery, rate_limit, ...): %s"
        % ("knows" if results["issue4"] else "does not know", extra))
    proxy, port = start_proxy(rig, binary, "proxy", os.path.join(rig.dir, "proxy-state"), extra)
    proxy_log = proxy.log_path
    pid = proxy.proc.pid
    sent_ok = 0
    alive = False
    try:
        if "memory" in a.sections:
            # before, after 10 KB (first token + first session), 1 MB, big
            mem = [("at start (listening)", proc_status(pid))]
            for label, size in (("after a 10 KB message", 10 * 1024),
                                ("after a 1 MB message", 1024 * 1024),
                                ("after a %d MB message" % a.big_mb, a.big_mb * 1024 * 1024)):
                msg = make_message(size, "mem-%d" % size)
                t = time.monotonic()
                send_one(port, msg, None, 0)
                sent_ok += 1
                dt = time.monotonic() - t
                del msg
                mem.append((label, proc_status(pid)))
                log("memory: %s (%.1fs): %s" % (label, dt, mem[-1][1]))
            results["memory"] = mem

        # warm the direct path once (and check it works) before timing
        send_one(rig.dovecot_port, make_message(10240, "warm"), direct, 0)
        sent_ok += 1

        if "throughput" in a.sections:
            sent_ok += throughput(a, rig, port, pid, direct, conc_levels, results, log, t_start)
        results["memory_after_load"] = proc_status(pid)
        alive = proxy.proc.poll() is None
    finally:
        proxy.stop()
    time.sleep(0.5)
    stats = rig.idp_stats()
    results["idp"] = {"account_requests": stats["requests"].get(rig.client_id, 0),
                      "total": stats["total"]}
    with open(proxy_log, errors="replace") as f:
        plog = f.read()
    results["proxy_log"] = {
        "messages": len(re.findall(r"event=message ", plog)),
        "token_requests": len(re.findall(r"event=token_request ", plog)),
        "warn_or_error": warnings_of(plog)}
    results["proxy_alive_after_load"] = alive

    if "spool" in a.sections and "aborted" not in results:
        if results["issue4"]:
            sent_ok += spool_section(a, rig, binary, results, log, t_start)
        else:
            results["spool_skipped"] = "this binary has no delivery = spool (before issue 4)"
    time.sleep(0.5)
    results["sink_messages"] = sink.messages()
    results["sent_ok"] = sent_ok
    report(a, results, conc_levels, log)
    return 0 if ok_overall(results) else 1


def warnings_of(plog):
    return [l for l in plog.splitlines()
            if re.search(r"Z (warn|error) |event=(upstream_failed|timeout|"
                         r"session_aborted|too_many_errors|refused)", l)][:10]


def log_run(log, rep, label, conc, path, r):
    log("rep %d %-5s x%-2d %-11s %6.1f msg/s %6.1f MB/s  ok=%d err=%d p50=%.0fms "
        "client_cpu=%.0f%% proxy_cpu=%.0f%% machine=%.0f%% upstream_logins=%s%s%s"
        % (rep + 1, label, conc, path, r["rate"], r["mb_s"], r["ok"], r["err"], r["p50_ms"],
           100 * r["client_cpu"], 100 * r["proxy_cpu"], 100 * r["machine_busy"],
           r.get("logins", "?"),
           (" drained after %.1fs, delivered %.1f msg/s" % (r["drain_s"], r["delivered_rate"])
            if r.get("drain_s") is not None else ""),
           (" errors=%s" % r["errors"]) if r["err"] else ""))


def throughput(a, rig, port, pid, direct, conc_levels, results, log, t_start):
    """Direct and proxy runs interleaved (ABBA), per size and concurrency. Returns the 250s."""
    sent_ok = 0
    runs = results["runs"]
    sizes = [(SIZES[s][0], SIZES[s][1], a.small_msgs if s == "10K" else a.large_msgs)
             for s in a.sizes]
    results["reps_done"] = 0
    for rep in range(a.reps):
        if rep and time.monotonic() - t_start > a.budget:
            log("time budget (%.0fs) used up: stopping after %d repetitions" % (a.budget, rep))
            break
        for label, size, cap_n in sizes:
            msg = make_message(size, "load")
            for conc in conc_levels:
                k = (rep + conc) % len(a.paths)   # rotate the order: spread the drift
                order = a.paths[k:] + a.paths[:k]
                if (rep + conc) % 2:
                    order = order[::-1]
                for path in order:
                    l0 = upstream_logins(rig)
                    up = path != "proxy"
                    # kept sessions: as many as the proxy may open upstream (Exchange: 3)
                    n = min(conc, a.max_conns) if path == "direct-keep" else conc
                    r = run_load(rig.dovecot_port if up else port, msg, n, cap_n, a.cap,
                                 direct if up else None, None if up else pid,
                                 keep=path == "direct-keep")
                    r["logins"] = upstream_logins(rig) - l0
                    sent_ok += r["ok"]
                    runs.setdefault((label, conc, path), []).append(r)
                    log_run(log, rep, label, conc, path, r)
                    if r["hung"]:
                        log("WARNING: %d client threads still hung" % r["hung"])
                    if r["err"] or r["hung"]:
                        try:
                            sent_ok += check_upstream(rig, direct, log)
                        except UpstreamBroken as e:
                            results["aborted"] = str(e)
                            return sent_ok
        results["reps_done"] = rep + 1
    return sent_ok


def spool_section(a, rig, binary, results, log, t_start):
    """delivery = spool: the device hears 250 once the message and its envelope are fsynced.
    The same load with state_dir on disk and on a tmpfs (where fsync costs nothing), proxies
    started afresh for each (fresh spool), alternating which goes first. Each run: the rate of
    250s the devices hear, then the time until the queue has delivered everything."""
    sent_ok = 0
    msg = make_message(10 * 1024, "spool")
    conc_levels = [int(x) for x in a.spool_conc.split(",")]
    shm = tempfile.mkdtemp(prefix="sop-bench-", dir=a.shm)
    # disk: the commits (four fsyncs each) on the committer's threads (spool_commit_threads,
    # default 4); disk-loop: on the event loop (spool_commit_threads = 0); tmpfs: fsync is free
    variants = {"disk": (os.path.join(rig.dir, "spool-disk"), None),
                "disk-loop": (os.path.join(rig.dir, "spool-disk"), {"spool_commit_threads": "0"}),
                "tmpfs": (shm, None)}
    stores = [(k,) + variants[k] for k in a.spool_variants]
    results["spool_fs"] = {k: fs_type(d) for k, d, _ in stores}
    results["fsync_ms"] = {k: fsync_ms(d) for k, d, _ in stores}
    extra = {"delivery": "spool", "rate_limit": "0", "max_upstream_connections": str(a.max_conns)}
    try:
        for rep in range(a.reps):
            if rep and time.monotonic() - t_start > a.budget + 240:
                log("spool: time budget used up after %d repetitions" % rep)
                break
            for store, d, pextra in (stores if rep % 2 == 0 else stores[::-1]):
                state = os.path.join(d, "state-%s-%d" % (store, rep))
                proxy, port = start_proxy(rig, binary, "spool-%s-%d" % (store, rep), state, extra,
                                          pextra)
                pid = proxy.proc.pid
                try:
                    for conc in conc_levels:
                        l0 = upstream_logins(rig)
                        r = run_load(port, msg, conc, a.spool_msgs, a.cap, None, pid)
                        done = wait_drained(state, 180)
                        r["drain_s"] = (done - r["t0"] - r["wall"]) if done else None
                        r["delivered_rate"] = r["ok"] / (done - r["t0"]) if done else 0.0
                        r["logins"] = upstream_logins(rig) - l0
                        if done is None:
                            r["err"] += queued_files(state)
                            r["errors"].append("not drained within 180 s")
                        sent_ok += r["ok"]
                        results["spool_runs"].setdefault((store, conc), []).append(r)
                        log_run(log, rep, "spool", conc, store, r)
                    results.setdefault("spool_warnings", []).extend(warnings_of(proxy.log()))
                finally:
                    proxy.stop()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    return sent_ok


def fsync_ms(d, n=100):
    """Median time of what a commit does per file, on directory d: write 10 KB + fsync, rename,
    fsync the directory. On a VM the host's cache may make this far cheaper than a real disk."""
    os.makedirs(d, exist_ok=True)
    times = []
    for i in range(n):
        tmp, dst = os.path.join(d, "fsync-probe.tmp"), os.path.join(d, "fsync-probe")
        t = time.monotonic()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"x" * 10240)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, dst)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        times.append(time.monotonic() - t)
    os.unlink(os.path.join(d, "fsync-probe"))
    return 1000 * statistics.median(times)


def fs_type(path):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return r.stdout.strip() or "?"


class UpstreamBroken(Exception):
    pass


def check_upstream(rig, direct, log):
    """After a run with errors: is the upstream itself still sound? If the direct path fails
    too, the figures mean nothing from here on: stop (the bench stays bounded)."""
    try:
        send_one(rig.dovecot_port, make_message(1024, "health"), direct, 0)
    except (OSError, SmtpError) as e:
        log("upstream health check failed: %r; dovecot log tail:\n%s"
            % (e, rig.dovecot_log()[-2000:]))
        raise UpstreamBroken("the upstream (Dovecot) itself fails: %r" % (e,))
    log("upstream health check ok: the errors above are the proxy's")
    return 1


def ok_overall(res):
    all_runs = list(res["runs"].values()) + list(res["spool_runs"].values())
    # one token for the main proxy's whole life (none if no message went through it)
    return ("aborted" not in res
            and res["idp"]["account_requests"] == (1 if res["proxy_log"]["messages"] else 0)
            and res["proxy_alive_after_load"]
            and all(r["err"] == 0 and r["hung"] == 0 for rs in all_runs for r in rs))


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {"nproc": os.cpu_count(), "cpu": model, "mem_mb": mem,
            "kernel": os.uname().release,
            "dovecot": subprocess.run([sop_rig.DOVECOT, "--version"], capture_output=True,
                                      text=True).stdout.strip()}


def median_run(rs):
    """The run with the median rate (for an even count, the lower middle)."""
    s = sorted(rs, key=lambda r: r["rate"])
    return s[(len(s) - 1) // 2]




def report(a, res, conc_levels, log):
    m = res["machine"]
    out = []
    out.append("Machine: %d CPUs, %s, %d MB RAM, Linux %s; Dovecot %s; upstream relay target "
               "Postfix smtp-sink." % (m["nproc"], m["cpu"], m["mem_mb"], m["kernel"],
                                       m["dovecot"]))
    out.append("")
    if res.get("aborted"):
        out.append("**ABORTED**: %s" % res["aborted"])
        out.append("")
    if res["runs"]:
        out.append("### Throughput (one device connection per message; median of %d runs; each "
                   "run capped at %d x 10 KB / %d x 1 MB messages or %.0f s)"
                   % (max([len(v) for v in res["runs"].values()] or [0]), a.small_msgs,
                      a.large_msgs, a.cap))
        out.append("")
        out.append("Proxy: %s." % ("delivery = %s, rate_limit = 0, max_upstream_connections = %d"
                                   % (a.delivery, a.max_conns) if res["issue4"] else
                                   "a binary without issue 4 (one upstream connection per "
                                   "device connection)"))
        out.append("")
        out.append("| message | devices | direct msg/s | direct, kept sessions (at most %d) msg/s "
                   "| proxy "
                   "msg/s | proxy/direct | proxy/kept | direct p50 ms | proxy p50 ms | proxy CPU "
                   "| client CPU (proxy run) | upstream logins per 1000 msgs (proxy) | errors |"
                   % a.max_conns)
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

        def rate(rs):
            return median_run(rs)["rate"] if rs else 0.0

        for label in ("10 KB", "1 MB"):
            for conc in conc_levels:
                d = res["runs"].get((label, conc, "direct"), [])
                kp = res["runs"].get((label, conc, "direct-keep"), [])
                p = res["runs"].get((label, conc, "proxy"))
                if not p:
                    continue
                pm = median_run(p)
                errs = sum(r["err"] + r["hung"] for r in d + kp + p)
                logins = sum(r["logins"] for r in p) * 1000.0 / max(1, sum(r["ok"] for r in p))
                out.append("| %s | %d | %s | %s | %.1f | **%s** | **%s** | %s | %.0f | %.0f%% | "
                           "%.0f%% | %.1f | %d |"
                           % (label, conc, "%.1f" % rate(d) if d else "-",
                              "%.1f" % rate(kp) if kp else "-", pm["rate"],
                              "%.2f" % (pm["rate"] / rate(d)) if d and rate(d) else "-",
                              "%.2f" % (pm["rate"] / rate(kp)) if kp and rate(kp) else "-",
                              "%.0f" % median_run(d)["p50_ms"] if d else "-", pm["p50_ms"],
                              100 * pm["proxy_cpu"], 100 * pm["client_cpu"], logins, errs))
        out.append("")
        out.append("All runs (msg/s): " + "; ".join(
            "%s x%d %s [%s]" % (k[0], k[1], k[2], ", ".join("%.1f" % r["rate"] for r in v))
            for k, v in sorted(res["runs"].items(), key=lambda kv: (kv[0][0] != "10 KB",
                                                                     kv[0][1], kv[0][2]))))
        out.append("")
    if res["spool_runs"]:
        out.append("### Spool mode (delivery = spool, 10 KB; the device hears 250 after the "
                   "fsyncs; median of %d runs, each capped at %d messages or %.0f s)"
                   % (max(len(v) for v in res["spool_runs"].values()), a.spool_msgs, a.cap))
        out.append("")
        out.append("state_dir file systems: %s (stat -f; ext4 shows as ext2/ext3). One "
                   "write + fsync + rename + directory fsync there, median: %s."
                   % (", ".join("%s = %s" % kv for kv in res.get("spool_fs", {}).items()),
                      ", ".join("%s %.2f ms" % kv for kv in res.get("fsync_ms", {}).items())))
        out.append("")
        out.append("| state_dir | devices | accepted msg/s (250 to the device) | p50 ms | "
                   "delivered msg/s (until the queue is empty) | proxy CPU | direct msg/s "
                   "(throughput section) | upstream logins per 1000 msgs | errors |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for store in a.spool_variants:
            for conc in sorted({k[1] for k in res["spool_runs"]}):
                rs = res["spool_runs"].get((store, conc))
                if not rs:
                    continue
                rm = median_run(rs)
                dl = sorted(r["delivered_rate"] for r in rs)[(len(rs) - 1) // 2]
                d = res["runs"].get(("10 KB", conc, "direct"))
                logins = sum(r["logins"] for r in rs) * 1000.0 / max(1, sum(r["ok"] for r in rs))
                out.append("| %s | %d | %.1f | %.0f | %.1f | %.0f%% | %s | %.1f | %d |"
                           % (store, conc, rm["rate"], rm["p50_ms"], dl, 100 * rm["proxy_cpu"],
                              "%.1f" % median_run(d)["rate"] if d else "-", logins,
                              sum(r["err"] + r["hung"] for r in rs)))
        out.append("")
        out.append("All spool runs (accepted msg/s / delivered msg/s): " + "; ".join(
            "%s x%d [%s]" % (k[0], k[1], ", ".join("%.1f/%.1f" % (r["rate"], r["delivered_rate"])
                                                    for r in v))
            for k, v in sorted(res["spool_runs"].items())))
        out.append("")
        if res.get("spool_warnings"):
            out.append("Spool proxies' warnings/errors (first 10):")
            out.extend("    " + l for l in res["spool_warnings"][:10])
            out.append("")
    elif res.get("spool_skipped"):
        out.append("Spool section skipped: %s." % res["spool_skipped"])
        out.append("")
    if res.get("memory"):
        out.append("### Memory of the proxy process (/proc/PID/status)")
        out.append("")
        out.append("| when | VmRSS | VmHWM (peak RSS) |")
        out.append("|---|---:|---:|")
        for label, st in res["memory"]:
            out.append("| %s | %s | %s |" % (label, fmt_kb(st["VmRSS"]), fmt_kb(st["VmHWM"])))
        st = res["memory_after_load"]
        out.append("| after all throughput load | %s | %s |"
                   % (fmt_kb(st["VmRSS"]), fmt_kb(st["VmHWM"])))
        mem = dict(res["memory"])
        big_label = res["memory"][-1][0]
        growth = mem[big_label]["VmHWM"] - mem["after a 1 MB message"]["VmHWM"]
        out.append("")
        out.append("Peak growth from the big message over the 1 MB one: %s (the message: %d MB)."
                   % (fmt_kb(growth), a.big_mb))
        out.append("")
    out.append("### Token requests")
    out.append("")
    out.append("IdP stand-in requests for the account's client_id over the main proxy's life "
               "(memory test + throughput load): **%d** (IdP total %d; proxy logged %d "
               "event=token_request). Each spool-section proxy starts with an empty state_dir "
               "and fetches its own." % (res["idp"]["account_requests"], res["idp"]["total"],
                                         res["proxy_log"]["token_requests"]))
    out.append("")
    out.append("Checks: smtp-sink counted %d messages, the clients got 250 for %d (proxy and "
               "direct, all sections); the main proxy logged %d event=message; alive after the "
               "load: %s." % (res["sink_messages"], res["sent_ok"], res["proxy_log"]["messages"],
                              res["proxy_alive_after_load"]))
    if res["proxy_log"]["warn_or_error"]:
        out.append("")
        out.append("Proxy warnings/errors (first 10):")
        out.extend("    " + l for l in res["proxy_log"]["warn_or_error"])
    text = "\n".join(out) + "\n"
    print(text)
    try:
        os.makedirs(os.path.dirname(a.out), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
        log("results also in %s" % a.out)
    except OSError as e:
        log("cannot write %s: %s" % (a.out, e))


if __name__ == "__main__":
    sys.exit(main())
