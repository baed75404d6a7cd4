#!/usr/bin/python3
"""Two proxy instances behind a real HAProxy (PROXY protocol v2), the rig's Dovecot upstream.

HAProxy runs in the foreground (-db) on loopback with its own config in a temp dir: `mode tcp`,
servers a and b with `send-proxy-v2`, health-checked with `option httpchk GET /healthz` on each
instance's metrics_listen (`check port`: the checks send no PROXY header). Each
instance has its own state dir and `listen = 127.0.0.1:PORT proxy_protocol`, `trusted_proxies =
127.0.0.1` (HAProxy connects from there), `delivery = direct-then-spool`.

- A device known by address 127.0.0.2 (the client socket bound to it) is recognised through
  HAProxy: the instance logs ip=127.0.0.2 (never HAProxy's 127.0.0.1) and its account delivers.
- A device at an unknown address (127.0.0.3) is refused as unknown: 554, naming 127.0.0.3.
- A direct connection to a proxy_protocol listener from 127.0.0.4 (not in trusted_proxies) is
  closed without a reply, and logged with that address. From the trusted address: a malformed
  header, and no header at all (cut after 5 s), are closed the same way.
- listen_tls with proxy_protocol: a v1 header, then the TLS handshake; the session has the
  header's address.
- Failover: devices keep sending through HAProxy while instance b is stopped with SIGTERM (it
  finishes the messages in flight). Every message a device heard 250 for reaches the sink; b is
  started again on its state dir afterwards, so anything it had spooled is delivered too.
  Delivery is at least once (a message whose final dot was cut may arrive twice); the test
  counts duplicates and only requires every acknowledged message to arrive.
- HAProxy's own health checks on the SMTP port with send-proxy-v2 (a plain TCP check and
  `option smtpchk`) come with a PROXY v2 LOCAL header: answered (220, EHLO) from the balancer's
  address although no device has it, so both checks pass; logged at debug with proxy_local=1,
  never as an unknown device, and not counted in sessions_total.

Run:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 tests/integration/test_haproxy.py -v
"""
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402

BINARY = os.environ.get("SOP_BINARY", "")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
T = 20          # seconds: a bound on every single network wait
RIG = None

HAPROXY_CFG = """\
global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch 1
frontend smtp
    bind 127.0.0.1:{front}
    default_backend relays
backend relays
    balance roundrobin
    option httpchk GET /healthz
    server a 127.0.0.1:{pa} send-proxy-v2 check port {ma} inter 1s fall 1 rise 1
    server b 127.0.0.1:{pb} send-proxy-v2 check port {mb} inter 1s fall 1 rise 1
"""


# Health checks that carry a PROXY v2 LOCAL header (HAProxy sends one on a check when the server
# line has send-proxy-v2 and no check port): a TCP connect check and an SMTP one (banner, EHLO).
# The frontend (start_haproxy waits for it) relays to no server: only the checks reach a.
HAPROXY_CHECKS_CFG = """\
global
    maxconn 64
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
    timeout check 5s
frontend smtp
    bind 127.0.0.1:{front}
    default_backend nowhere
backend nowhere
backend tcp_checks
    server a 127.0.0.1:{pa} send-proxy-v2 check inter 300ms fall 1 rise 1
backend smtp_checks
    option smtpchk EHLO haproxy.test
    server a 127.0.0.1:{pa} send-proxy-v2 check inter 300ms fall 1 rise 1
"""


def setUpModule():
    global RIG
    if not BINARY or not os.access(BINARY, os.X_OK):
        raise RuntimeError("SOP_BINARY is not set or not executable (%r)" % BINARY)
    if not os.access(HAPROXY, os.X_OK):
        raise unittest.SkipTest("haproxy is not installed (scripts/install-deps.sh)")
    RIG = sop_rig.Rig()
    RIG.__enter__()


def tearDownModule():
    if RIG is not None:
        RIG.stop()


def message(tag):
    return ("From: Copier <copier@contoso.test>\r\nTo: Alice <alice@contoso.test>\r\n"
            "Subject: ha %s\r\nMessage-ID: <ha-%s@copier.test>\r\n\r\nscan %s\r\n"
            % (tag, tag, tag)).encode()


class TestHAProxy(unittest.TestCase):
    def setUp(self):
        self.rig = RIG
        self.rig.idp_reset()
        self.rig.sink_clear()
        self.tmp = tempfile.mkdtemp(prefix="ha-", dir=self.rig.dir)
        self.haproxy = None
        self.front = sop_rig.free_port()
        self.ports = {"a": sop_rig.free_port(), "b": sop_rig.free_port()}
        self.metrics = {"a": sop_rig.free_port(), "b": sop_rig.free_port()}
        self.tls_port = sop_rig.free_port()
        self.proxies = {}
        self.addCleanup(self.cleanup)
        for name in ("a", "b"):
            self.proxies[name] = self.start_proxy(name)

    def cleanup(self):
        if self.haproxy is not None:
            if self.haproxy.poll() is None:
                self.haproxy.kill()
            self.haproxy.wait(10)
            self.haproxy = None
        for name, p in list(self.proxies.items()):
            rc = p.stop(timeout=30)
            log = p.log()
            self.assertNotRegex(log, r"(Sanitizer|runtime error:)", "sanitizer report (%s)" % name)
            self.assertIn(rc, (0, None), "instance %s did not exit cleanly" % name)
        self.proxies = {}

    # -- pieces
    def config(self, name):
        devices = [("copier", {"address": "127.0.0.2", "account": "scanners"})]
        text = sop_rig.proxy_config(
            self.rig, self.ports[name],
            listen_tls_port=self.tls_port if name == "a" else None,
            devices=devices, state_dir=os.path.join(self.tmp, "state-" + name),
            proxy_extra={"trusted_proxies": "127.0.0.1", "max_connections_per_ip": "100",
                         "metrics_listen": "127.0.0.1:%d" % self.metrics[name]},
            account_extra={"delivery": "direct-then-spool"})
        text = re.sub(r"(?m)^(listen(_tls)? = 127\.0\.0\.1:\d+)$", r"\1 proxy_protocol", text)
        self.assertEqual(text.count("proxy_protocol"), 2 if name == "a" else 1)
        return text

    def start_proxy(self, name, run=1):
        path = os.path.join(self.tmp, "proxy-%s.conf" % name)
        with open(path, "w") as f:
            f.write(self.config(name))
        # a log of its own per run: start() waits for this run's event=ready
        p = sop_rig.ProxyProcess(BINARY, path,
                                 os.path.join(self.tmp, "proxy-%s-%d.log" % (name, run)))
        p.start()  # not wait_port: a bare connect would wait out the header timeout
        return p

    def start_haproxy(self, template=HAPROXY_CFG):
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(template.format(front=self.front, pa=self.ports["a"], pb=self.ports["b"],
                                    ma=self.metrics["a"], mb=self.metrics["b"]))
        self.haproxy_log = open(os.path.join(self.tmp, "haproxy.log"), "wb")
        self.addCleanup(self.haproxy_log.close)
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdin=subprocess.DEVNULL,
                                        stdout=self.haproxy_log, stderr=self.haproxy_log,
                                        start_new_session=True)
        sop_rig.wait_port(self.front, timeout=T, proc=self.haproxy)

    def wait_log(self, name, pattern, timeout=T):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.proxies[name].log())
            if m:
                return m
            time.sleep(0.05)
        self.fail("instance %s logged nothing matching %r; tail:\n%s"
                  % (name, pattern, self.proxies[name].log()[-3000:]))

    def logs(self):
        return "".join(p.log() for p in self.proxies.values())

    def send_via_haproxy(self, tag, source="127.0.0.2"):
        """One message through HAProxy from source; True if the device heard 250 at the dot."""
        with smtplib.SMTP("127.0.0.1", self.front, timeout=T,
                          source_address=(source, 0)) as s:
            s.ehlo("copier.test")
            s.sendmail("copier@contoso.test", ["alice@contoso.test"], message(tag))
        return True

    def assert_closed_silently(self, sock):
        sock.settimeout(T)
        try:
            data = sock.recv(512)
        except ConnectionResetError:
            data = b""
        self.assertEqual(data, b"", "the connection must be closed without a reply")

    # -- tests
    def test_device_by_address_through_haproxy(self):
        self.start_haproxy()
        # enough messages that both instances take some (round robin)
        for i in range(4):
            self.send_via_haproxy("known-%d" % i)
        msgs = self.rig.sink_wait(4, timeout=T)
        self.assertEqual(len(msgs), 4)
        for name in ("a", "b"):
            self.wait_log(name, r"event=connect session=\w+ ip=127\.0\.0\.2 ")
            self.wait_log(name, r"event=message session=\w+ device=copier account=scanners")

        # an address no device has: refused as unknown, naming the device's address
        with self.assertRaises(smtplib.SMTPConnectError) as cm:
            smtplib.SMTP("127.0.0.1", self.front, timeout=T, source_address=("127.0.0.3", 0))
        self.assertEqual(cm.exception.smtp_code, 554)
        self.assertIn(b"[127.0.0.3]", cm.exception.smtp_error)
        self.assertRegex(self.logs(), r"event=refused session=\w+ ip=127\.0\.0\.3 "
                         r"reason=\"unknown device\"")

    def test_untrusted_and_malformed_are_closed_silently(self):
        pa = self.ports["a"]
        # not in trusted_proxies
        with socket.create_connection(("127.0.0.1", pa), timeout=T,
                                      source_address=("127.0.0.4", 0)) as s:
            s.sendall(b"PROXY TCP4 127.0.0.2 127.0.0.1 5555 %d\r\n" % pa)
            self.assert_closed_silently(s)
        self.wait_log("a", r"event=refused ip=127\.0\.0\.4 listener=127\.0\.0\.1:%d "
                      r"reason=\"proxy protocol: not in trusted_proxies\"" % pa)
        # trusted, but no header: an SMTP command
        with socket.create_connection(("127.0.0.1", pa), timeout=T) as s:
            s.sendall(b"EHLO copier.test\r\n")
            self.assert_closed_silently(s)
        self.wait_log("a", r"event=refused ip=127\.0\.0\.1 listener=127\.0\.0\.1:%d "
                      r"reason=\"proxy protocol: not a PROXY protocol header\"" % pa)
        # trusted, a v2 header with a bad version
        with socket.create_connection(("127.0.0.1", pa), timeout=T) as s:
            s.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12))
            self.assert_closed_silently(s)
        self.wait_log("a", r"reason=\"proxy protocol: v2 header: unsupported version\"")
        # trusted, half a header and then nothing: cut after the header timeout
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", pa), timeout=T) as s:
            s.sendall(b"PROXY TCP4 127.0.0.2")
            self.assert_closed_silently(s)
        self.assertGreater(time.monotonic() - t0, 3.0)
        self.wait_log("a", r"event=refused ip=127\.0\.0\.1 listener=127\.0\.0\.1:%d "
                      r"reason=\"proxy protocol: no complete header within 5 seconds\"" % pa)
        self.assertNotIn("event=connect", self.proxies["a"].log(),
                         "no session may start for any of these")

    def test_listen_tls_header_before_handshake(self):
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=T) as raw:
            raw.sendall(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 %d\r\n" % self.tls_port)
            with self.rig.ssl_context().wrap_socket(raw, server_hostname="localhost") as s:
                s.settimeout(T)
                self.assertTrue(s.recv(512).startswith(b"220 "))
                s.sendall(b"QUIT\r\n")
                self.assertTrue(s.recv(512).startswith(b"221"))
        self.wait_log("a", r"event=connect session=\w+ ip=127\.0\.0\.2 listener=127\.0\.0\.1:%d "
                      r"tls=1" % self.tls_port)

    def test_health_checks_with_local_header(self):
        pa = self.ports["a"]
        self.start_haproxy(HAPROXY_CHECKS_CFG)
        local = (r"debug event=connect session=\w+ ip=127\.0\.0\.1 listener=127\.0\.0\.1:%d "
                 r"tls=0 proxy_local=1" % pa)
        # a few rounds of both checks: the SMTP one said EHLO and was answered 250
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            log = self.proxies["a"].log()
            if (len(re.findall(local, log)) >= 6
                    and len(re.findall(r"event=command session=\w+ verb=\"?EHLO", log)) >= 2
                    and len(re.findall(r"event=disconnect [^\n]*proxy_local=1", log)) >= 6):
                break
            time.sleep(0.1)
        log = self.proxies["a"].log()
        self.assertGreaterEqual(len(re.findall(local, log)), 6, log[-3000:])
        self.assertGreaterEqual(len(re.findall(r"event=command session=\w+ verb=\"?EHLO", log)), 2,
                                log[-3000:])
        self.assertRegex(log, r"event=reply session=\w+ reply=\"?220 relay\.test")
        self.assertRegex(log, r"debug event=proxy_header listener=127\.0\.0\.1:%d "
                         r"proxy=127\.0\.0\.1 ip=127\.0\.0\.1 version=2 proxy_local=1" % pa)
        # never an unknown device, nor a session above debug
        self.assertNotIn("unknown device", log)
        self.assertNotRegex(log, r"(info|warn) event=(connect|disconnect|refused) "
                            r"session=\w+ ip=127\.0\.0\.1")
        # both checks pass: HAProxy never took the server down
        time.sleep(1.0)  # a few more rounds
        self.haproxy.kill()
        self.haproxy.wait(10)
        self.haproxy = None
        self.haproxy_log.flush()
        with open(os.path.join(self.tmp, "haproxy.log"), errors="replace") as f:
            hlog = f.read()
        self.assertNotRegex(hlog, r"Server \w+/a is DOWN", hlog[-3000:])
        # not in the metrics as device sessions
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics["a"],
                                    timeout=T) as r:
            text = r.read().decode()
        m = re.search(r'sessions_total\{listener="127\.0\.0\.1:%d"\} (\d+)' % pa, text)
        self.assertEqual(int(m.group(1)) if m else 0, 0, text)

    def test_failover_loses_nothing_acknowledged(self):
        self.start_haproxy()
        acked, lock = [], threading.Lock()
        failures = []
        stop = threading.Event()
        deadline = time.monotonic() + 120

        def device(n):
            i = 0
            while not stop.is_set() and time.monotonic() < deadline and i < 40:
                tag = "d%d-%d" % (n, i)
                i += 1
                try:
                    self.send_via_haproxy(tag)
                except (smtplib.SMTPException, OSError) as e:
                    failures.append((tag, repr(e)))  # the device would send it again
                    continue
                with lock:
                    acked.append(tag)

        threads = [threading.Thread(target=device, args=(n,), daemon=True) for n in range(3)]
        for t in threads:
            t.start()
        # stop b once both instances have delivered some messages
        while time.monotonic() < deadline:
            log_a, log_b = self.proxies["a"].log(), self.proxies["b"].log()
            if log_a.count("event=message ") >= 3 and log_b.count("event=message ") >= 3:
                break
            time.sleep(0.05)
        rc = self.proxies["b"].stop(timeout=60)
        self.assertEqual(rc, 0, "b did not exit cleanly on SIGTERM")
        b_log = self.proxies["b"].log()
        with lock:
            acked_at_stop = len(acked)
        # keep sending through HAProxy with b gone, then stop
        while time.monotonic() < deadline:
            with lock:
                if len(acked) >= acked_at_stop + 15:
                    break
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(T * 3)
            self.assertFalse(t.is_alive(), "a device thread hangs")
        # b comes back on its state dir: whatever it had spooled is delivered
        self.proxies["b"] = self.start_proxy("b", run=2)
        self.assertGreater(len(acked), acked_at_stop + 10,
                           "devices could not send after b stopped: %r" % failures[-5:])
        want = set(acked)
        got = {}
        until = time.monotonic() + 90
        while time.monotonic() < until:
            got = {}
            for m in self.rig.sink_messages():
                tag = re.search(rb"Subject: ha (\S+)", m["data"])
                if tag:
                    got[tag.group(1).decode()] = got.get(tag.group(1).decode(), 0) + 1
            if want <= set(got):
                break
            time.sleep(0.2)
        missing = sorted(want - set(got))
        self.assertEqual(missing, [], "acknowledged but never delivered; b's log tail:\n%s"
                         % b_log[-3000:])
        dups = sorted(t for t, n in got.items() if n > 1)
        sys.stderr.write("failover: %d acknowledged, %d failed (resent by a device), %d "
                         "delivered twice %s\n" % (len(acked), len(failures), len(dups), dups))
        self.assertIn("event=stopping", b_log)


if __name__ == "__main__":
    unittest.main()
