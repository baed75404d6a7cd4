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
import socket
import ssl
import statistics
import subprocess
import sys
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


def send_one(port, msg, direct, n):
    """One copier connection with one message. direct = (ssl_ctx, xoauth2_b64) or None."""
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
        c.cmd(b"MAIL FROM:<" + FROM.encode() + b">", 250)
        c.cmd(b"RCPT TO:<" + RCPT.encode() + b">", 250)
        c.cmd(b"DATA", 354)
        c.sock.sendall(msg)
        c.cmd(None, 250)
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


def run_load(port, msg, conc, max_msgs, cap_s, direct, proxy_pid):
    """conc threads, each sending one message per connection until max_msgs were started or
    cap_s passed; in-flight messages finish. Returns a dict of figures."""
    lock = threading.Lock()
    state = {"started": 0, "ok": 0, "err": 0, "errors": [], "last": 0.0}
    lat = []
    t0 = time.monotonic()
    deadline = t0 + cap_s

    def worker(w):
        while True:
            with lock:
                if state["started"] >= max_msgs or time.monotonic() >= deadline:
                    return
                state["started"] += 1
                n = state["started"]
            t = time.monotonic()
            try:
                send_one(port, msg, direct, n)
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
    return {"ok": state["ok"], "err": state["err"], "errors": state["errors"], "hung": hung,
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
    a = ap.parse_args()
    if a.quick:
        a.reps, a.small_msgs, a.large_msgs, a.cap, a.big_mb = 1, 40, 6, 5.0, 20
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
    import shutil
    import tempfile
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

    port = sop_rig.free_port()
    cfg_path = os.path.join(rig.dir, "proxy.ini")
    cfg = sop_rig.proxy_config(rig, port, devices=[("copiers", {"address": "127.0.0.1",
                                                                "account": "scanners"})],
                               upstream_port=rig.dovecot_port, log_level="info")
    cfg = cfg.replace("max_message_size = 35M", "max_message_size = 200M")
    assert "max_message_size = 200M" in cfg
    with open(cfg_path, "w") as f:
        f.write(cfg)
    os.chmod(cfg_path, 0o600)
    proxy_log = os.path.join(rig.dir, "proxy.log")
    proxy = sop_rig.ProxyProcess(binary, cfg_path, proxy_log)
    proxy.start(ports=[port])
    pid = proxy.proc.pid
    results = {"machine": machine(), "binary": binary}
    sent_ok = 0
    try:
        # ---- 2. memory: before, after 10 KB (first token + first session), 1 MB, big
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

        # ---- 1. throughput, interleaved
        sizes = [("10 KB", 10 * 1024, a.small_msgs), ("1 MB", 1024 * 1024, a.large_msgs)]
        runs = {}
        results["reps_done"] = 0
        for rep in range(a.reps):
            if rep and time.monotonic() - t_start > a.budget:
                log("time budget (%.0fs) used up: stopping after %d repetitions" % (a.budget, rep))
                break
            for label, size, cap_n in sizes:
                msg = make_message(size, "load")
                for conc in conc_levels:
                    order = ("direct", "proxy") if (rep + conc) % 2 == 0 else ("proxy", "direct")
                    for path in order:
                        r = run_load(rig.dovecot_port if path == "direct" else port, msg, conc,
                                     cap_n, a.cap, direct if path == "direct" else None,
                                     pid if path == "proxy" else None)
                        sent_ok += r["ok"]
                        runs.setdefault((label, conc, path), []).append(r)
                        log("rep %d %-5s x%-2d %-6s %6.1f msg/s %6.1f MB/s  ok=%d err=%d "
                            "p50=%.0fms client_cpu=%.0f%% proxy_cpu=%.0f%% machine=%.0f%%%s"
                            % (rep + 1, label, conc, path, r["rate"], r["mb_s"], r["ok"],
                               r["err"], r["p50_ms"], 100 * r["client_cpu"],
                               100 * r["proxy_cpu"], 100 * r["machine_busy"],
                               (" errors=%s" % r["errors"]) if r["err"] else ""))
                        if r["hung"]:
                            log("WARNING: %d client threads still hung" % r["hung"])
                        if r["err"] or r["hung"]:
                            try:
                                sent_ok += check_upstream(rig, direct, log)
                            except UpstreamBroken as e:
                                results["aborted"] = str(e)
                                break
                    if "aborted" in results:
                        break
                if "aborted" in results:
                    break
            if "aborted" in results:
                break
            results["reps_done"] = rep + 1
        results["runs"] = runs
        results["memory_after_load"] = proc_status(pid)
        alive = proxy.proc.poll() is None
    finally:
        proxy.stop()
    time.sleep(0.5)
    stats = rig.idp_stats()
    results["idp"] = {"account_requests": stats["requests"].get(rig.client_id, 0),
                      "total": stats["total"]}
    results["sink_messages"] = sink.messages()
    results["sent_ok"] = sent_ok
    with open(proxy_log, errors="replace") as f:
        plog = f.read()
    results["proxy_log"] = {
        "messages": len(re.findall(r"event=message ", plog)),
        "token_requests": len(re.findall(r"event=token_request ", plog)),
        "warn_or_error": [l for l in plog.splitlines()
                          if re.search(r"Z (warn|error) |event=(upstream_failed|timeout|"
                                       r"session_aborted|too_many_errors|refused)", l)][:10]}
    results["proxy_alive_after_load"] = alive
    report(a, results, conc_levels, log)
    return 0 if ok_overall(results) else 1


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
    return ("aborted" not in res and res["idp"]["account_requests"] == 1 and res["proxy_alive_after_load"]
            and all(r["err"] == 0 and r["hung"] == 0 for rs in res["runs"].values() for r in rs))


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
    out.append("### Throughput (one connection per message; median of %d runs; each run capped "
               "at %d x 10 KB / %d x 1 MB messages or %.0f s)"
               % (max([len(v) for v in res["runs"].values()] or [0]), a.small_msgs, a.large_msgs, a.cap))
    out.append("")
    out.append("| message | devices | direct msg/s | proxy msg/s | proxy/direct | direct p50 ms "
               "| proxy p50 ms | proxy CPU | client CPU (proxy run) | errors |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label in ("10 KB", "1 MB"):
        for conc in conc_levels:
            d = res["runs"].get((label, conc, "direct"))
            p = res["runs"].get((label, conc, "proxy"))
            if not d or not p:
                continue
            dm, pm = median_run(d), median_run(p)
            errs = sum(r["err"] + r["hung"] for r in d + p)
            out.append("| %s | %d | %.1f | %.1f | **%.2f** | %.0f | %.0f | %.0f%% | %.0f%% | %d |"
                       % (label, conc, dm["rate"], pm["rate"],
                          pm["rate"] / dm["rate"] if dm["rate"] else 0.0,
                          dm["p50_ms"], pm["p50_ms"], 100 * pm["proxy_cpu"],
                          100 * pm["client_cpu"], errs))
    out.append("")
    out.append("All runs (msg/s): " + "; ".join(
        "%s x%d %s [%s]" % (k[0], k[1], k[2], ", ".join("%.1f" % r["rate"] for r in v))
        for k, v in sorted(res["runs"].items(), key=lambda kv: (kv[0][0] != "10 KB", kv[0][1],
                                                                 kv[0][2]))))
    out.append("")
    out.append("### Memory of the proxy process (/proc/PID/status)")
    out.append("")
    out.append("| when | VmRSS | VmHWM (peak RSS) |")
    out.append("|---|---:|---:|")
    for label, st in res["memory"]:
        out.append("| %s | %s | %s |" % (label, fmt_kb(st["VmRSS"]), fmt_kb(st["VmHWM"])))
    st = res["memory_after_load"]
    out.append("| after all throughput load (up to 32 concurrent 1 MB sessions) | %s | %s |"
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
    out.append("IdP stand-in requests for the account's client_id over the proxy's whole life "
               "(memory test + all throughput load, %d messages through the proxy and direct): "
               "**%d** (IdP total %d; proxy logged %d event=token_request)."
               % (res["sent_ok"], res["idp"]["account_requests"], res["idp"]["total"],
                  res["proxy_log"]["token_requests"]))
    out.append("")
    out.append("Checks: smtp-sink counted %d messages, the client got 250 for %d; the proxy logged "
               "%d event=message; proxy alive after the load: %s."
               % (res["sink_messages"], res["sent_ok"], res["proxy_log"]["messages"],
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
