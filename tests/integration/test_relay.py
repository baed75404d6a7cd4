#!/usr/bin/python3
"""The real smtp-oauth-proxy binary against real peers on loopback (see sop_rig.py):
devices talk to it with swaks, curl and Python (smtplib and raw sockets); it gets tokens from the
IdP stand-in and submits with STARTTLS + AUTH XOAUTH2 to Dovecot's submission server, which
relays to a sink we read back byte for byte. A few tests use the rig's "raw" upstream instead
(an Exchange-like aiosmtpd server that adds and repairs nothing) to see the proxy's exact bytes.

Needs SOP_BINARY (the built smtp-oauth-proxy; CMake's ctest sets it and SOP_SOURCE_DIR).
Run one test:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
                   tests/integration/test_relay.py -v TestRelay.test_auth_login
"""
import base64
import os
import re
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402

BINARY = os.environ.get("SOP_BINARY", "")
SOURCE_DIR = os.environ.get("SOP_SOURCE_DIR", os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
T = 20          # seconds: a bound on every single network wait
T_FAIL = 45     # seconds: a bound on waiting for a 4xx when a peer is down (retries, backoff)
BUDGET = 420    # seconds for the whole file (ctest kills at 600): later tests fail at once
T0 = time.monotonic()

PASSWORD = "Copier-Pa55-" + base64.b32encode(os.urandom(5)).decode().lower()
USERNAME = "copier3f"
RIG = None
PASSWORD_HASH = None
QUEUED_RE = rb"2\.0\.0 Ok: queued as SINK\d+"   # the sink's verdict, passed on by Dovecot


def setUpModule():
    global RIG, PASSWORD_HASH
    # No binary is a failure, not a skip: CI must not go green without the proxy.
    if not BINARY or not os.access(BINARY, os.X_OK):
        raise RuntimeError("SOP_BINARY is not set or not executable (%r): build the proxy and "
                           "run through ctest, or set SOP_BINARY" % BINARY)
    PASSWORD_HASH = sop_rig.hash_password(PASSWORD)
    RIG = sop_rig.Rig()
    RIG.__enter__()


def tearDownModule():
    if RIG is not None:
        RIG.stop()


def default_devices():
    return [("copier", {"address": "127.0.0.1", "account": "scanners"}),
            ("scanner2", {"username": USERNAME, "password_hash": PASSWORD_HASH,
                          "account": "scanners"})]


class Raw:
    """A raw SMTP client socket: send exact bytes, read replies (code, [lines]) with timeouts."""

    def __init__(self, port, source="127.0.0.1", tls=False, ctx=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=T,
                                             source_address=(source, 0))
        if tls:
            self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _line(self):
        deadline = time.monotonic() + T
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply line")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed; got %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self):
        lines = []
        for _ in range(100):
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines
        raise ValueError("reply too long")

    def cmd(self, line):
        self.send(line + b"\r\n")
        return self.reply()

    def starttls(self, ctx):
        code, _ = self.cmd(b"STARTTLS")
        assert code == 220, code
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class ProxyCase(unittest.TestCase):
    def setUp(self):
        if time.monotonic() - T0 > BUDGET:
            self.fail("time budget of %ds for test_relay.py used up by earlier tests (a proxy "
                      "that hangs?)" % BUDGET)
        self.rig = RIG
        if self.rig.idp_proc is None:
            self.rig.idp_start()
        self.rig.idp_reset()
        self.rig.sink_clear()
        self.tmp = tempfile.mkdtemp(prefix="proxy-", dir=self.rig.dir)
        self.proxy = None
        self.issued_seen = []

    def tearDown(self):
        if self.proxy is not None:
            self.stop_proxy()

    def stop_proxy(self):
        """Stop the proxy (SIGTERM) and check what it left behind, whatever the test did."""
        rc = self.proxy.stop()
        log = self.proxy.log()
        self.assert_no_secrets(log)
        # The ASan+UBSan build reports to stderr (our log) and LeakSanitizer runs at exit: a
        # report, or an unclean exit after SIGTERM, fails the test that caused it.
        self.assertNotRegex(log, r"(Sanitizer|runtime error:)", "sanitizer report in the log")
        self.assertIn(rc, (0, None), "the proxy did not exit cleanly on SIGTERM")

    def assert_no_secrets(self, log):
        try:
            issued = self.rig.idp_stats()["issued"]
        except OSError:
            issued = []
        issued = issued + self.issued_seen
        self.assertNotIn(self.rig.client_secret, log, "client secret in the proxy log")
        self.assertNotIn(PASSWORD, log, "device password in the proxy log")
        plain = base64.b64encode(("\0%s\0%s" % (USERNAME, PASSWORD)).encode()).decode()
        self.assertNotIn(plain, log, "AUTH PLAIN payload in the proxy log")
        self.assertNotIn(base64.b64encode(PASSWORD.encode()).decode(), log,
                         "AUTH LOGIN password in the proxy log")
        for tok in issued:
            self.assertNotIn(tok, log, "an access token in the proxy log")
            self.assertNotIn(tok.split(".")[2], log, "a token's signature in the proxy log")
            self.assertNotIn(sop_rig.xoauth2_b64(self.rig.mailbox, tok)[:60], log,
                             "an XOAUTH2 payload in the proxy log")

    # -- proxy control
    def start_proxy(self, devices=None, tls_listener=False, edit=None, **kw):
        """Write a config for this rig (edit: text -> text) and start the proxy on it."""
        if self.proxy is not None:
            self.stop_proxy()
        self.port = sop_rig.free_port()
        self.tls_port = sop_rig.free_port() if tls_listener else None
        self.cfg = os.path.join(self.tmp, "proxy.ini")
        text = sop_rig.proxy_config(self.rig, self.port, self.tls_port,
                                    devices=default_devices() if devices is None else devices,
                                    state_dir=os.path.join(self.tmp, "state"), **kw)
        if edit is not None:
            new = edit(text)
            self.assertNotEqual(new, text, "the config edit changed nothing")
            text = new
        with open(self.cfg, "w") as f:
            f.write(text)
        os.chmod(self.cfg, 0o600)
        self.proxy = sop_rig.ProxyProcess(BINARY, self.cfg, os.path.join(
            self.tmp, "proxy-%d.log" % self.port))
        self.addCleanup(self.proxy.stop)
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        self.proxy.start(ports=ports)
        return self.proxy

    def log(self):
        return self.proxy.log() if self.proxy else ""

    def wait_log(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        self.fail("no log line matching %r; log tail:\n%s" % (pattern, self.log()[-3000:]))

    def message_log(self):
        """The event=message line(s)."""
        self.wait_log(r"event=message ")
        return [line for line in self.log().splitlines() if "event=message " in line]

    # -- clients
    def smtp(self, source="127.0.0.1", port=None):
        s = smtplib.SMTP("localhost", port or self.port, timeout=T,
                         source_address=(source, 0))
        self.addCleanup(s.close)
        return s

    def raw(self, source="127.0.0.1", port=None, tls=False):
        r = Raw(port or self.port, source, tls=tls, ctx=self.rig.ssl_context())
        self.addCleanup(r.close)
        return r

    def swaks(self, *args, data=None, timeout=90):
        cmd = ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--timeout", str(T),
               "--helo", "copier-3f.test"]
        if data is not None:
            path = os.path.join(self.tmp, "swaks-%d.eml" % time.monotonic_ns())
            with open(path, "wb") as f:
                f.write(data)
            cmd += ["--data", "@" + path]
        r = subprocess.run(cmd + list(args), capture_output=True, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")

    @staticmethod
    def swaks_replies(out):
        """The server replies swaks saw ('<-  250 ...', '<** 550 ...'), without prefixes."""
        # "<-" plain, "<~" inside TLS, "<**" / "<~*" an error reply
        return [re.sub(r"^<(-|~|\*\*|~\*) +", "", ln) for ln in out.splitlines()
                if re.match(r"^<(-|~|\*\*|~\*) ", ln)]

    def assert_final_queued(self, reply_text):
        self.assertRegex(reply_text, r"^250 2\.0\.0 Ok: queued as SINK\d+",
                         "the device must get the upstream's own verdict at the final dot")

    # -- sink
    def one_message(self, raw=False, timeout=10):
        msgs = (self.rig.raw_wait if raw else self.rig.sink_wait)(1, timeout)
        self.assertEqual(len(msgs), 1, "expected exactly one message upstream, got %d"
                         % len(msgs))
        time.sleep(0.2)
        msgs = self.rig.raw_messages() if raw else self.rig.sink_messages()
        self.assertEqual(len(msgs), 1, "a second message arrived upstream")
        return msgs[0]

    def body_of(self, m, helo="relay.test"):
        """Dovecot adds one Received: header naming the proxy's EHLO; the rest is the message."""
        received, rest = sop_rig.split_received(m["data"])
        self.assertRegex(received, rb"\AReceived: from " + re.escape(helo.encode()) +
                         rb" \(\[127\.0\.0\.1\]\)\r\n\tby localhost with ESMTPSA\r\n")
        self.assertIn(b"(envelope-from <%s>)" % m["mail_from"].encode(), received)
        return rest

    def assert_nothing_relayed(self, wait=0.5):
        time.sleep(wait)
        self.assertEqual(self.rig.sink_messages(), [], "a message was relayed")
        self.assertEqual(self.rig.raw_messages(), [], "a message was relayed")

    def assert_wire_clean(self, data):
        """No bare LF, no lone CR: every CR is followed by LF and every LF preceded by CR."""
        self.assertNotRegex(data, rb"\r(?!\n)", "lone CR crossed the proxy")
        self.assertNotRegex(data, rb"(?<!\r)\n", "bare LF crossed the proxy")

    def _try_send(self, s, rcpts=("alice@contoso.test",), msg=None):
        """MAIL/RCPT/DATA/message; stops at the first failure. Returns the reply codes."""
        msg = MSG if msg is None else msg
        codes = []
        code, _ = s.docmd("MAIL FROM:<copier@contoso.test>")
        codes.append(code)
        if code != 250:
            return codes
        for r in rcpts:
            code, _ = s.docmd("RCPT TO:<%s>" % r)
            codes.append(code)
            if code != 250:
                return codes
        code, _ = s.docmd("DATA")
        codes.append(code)
        if code != 354:
            return codes
        s.send(msg + b".\r\n")
        codes.append(s.getreply()[0])
        return codes

    def _send_expect_4xx(self):
        s = smtplib.SMTP("localhost", self.port, timeout=T_FAIL, source_address=("127.0.0.1", 0))
        self.addCleanup(s.close)
        s.ehlo("copier.test")
        codes = self._try_send(s)
        self.assertEqual(codes[-1] // 100, 4, "expected a 4xx, got %r" % codes)
        self.assertFalse(any(c // 100 == 5 for c in codes), codes)
        self.assert_nothing_relayed(0)


MSG = (b"From: Copier 3F <copier@contoso.test>\r\nTo: Alice <alice@contoso.test>\r\n"
       b"Subject: Scan from copier 3F\r\nMessage-ID: <scan-1@copier.contoso.test>\r\n"
       b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
       b"Your scanned document.\r\n")


class TestRelay(ProxyCase):
    # ---------------------------------------------------------------- the main paths
    def test_plain_by_address(self):
        self.start_proxy()
        rc, out = self.swaks("--from", "copier@contoso.test", "--to", "alice@contoso.test",
                             data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        self.assert_final_queued(self.swaks_replies(out)[-2])
        m = self.one_message()
        self.assertEqual(m["mail_from"], "copier@contoso.test")
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test"])
        self.assertEqual(self.body_of(m), MSG)
        lines = self.message_log()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("device=copier", lines[0])
        self.assertIn("account=scanners", lines[0])
        self.assertRegex(lines[0], r'upstream="250 2\.0\.0 Ok: queued as SINK\d+')
        self.assertIn("Login: user=<%s>, method=XOAUTH2" % self.rig.mailbox,
                      self.rig.dovecot_log())
        self.assertEqual(self.rig.idp_stats()["requests"], {self.rig.client_id: 1})

    def test_auth_plain(self):
        # AUTH without TLS is fine from 127.0.0.1: it is in a device's address list
        self.start_proxy()
        rc, out = self.swaks("--from", "scan2@contoso.test", "--to", "bob@contoso.test",
                             "--auth", "PLAIN", "--auth-user", USERNAME,
                             "--auth-password", PASSWORD, data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        replies = self.swaks_replies(out)
        self.assertTrue(any(r.startswith("235") for r in replies), out)
        self.assert_final_queued(replies[-2])
        m = self.one_message()
        self.assertEqual(self.body_of(m), MSG)
        line = self.message_log()[0]
        self.assertIn("device=scanner2", line)
        self.assertIn("account=scanners", line)

    def test_auth_login(self):
        self.start_proxy()
        # the standard prompts, which some copiers insist on
        r = self.raw()
        self.assertEqual(r.reply()[0], 220)
        code, lines = r.cmd(b"EHLO copier.test")
        self.assertEqual(code, 250)
        self.assertTrue(any(re.match(rb"250[- ]AUTH\b.*\bLOGIN\b", ln) for ln in lines), lines)
        self.assertEqual(r.cmd(b"AUTH LOGIN"), (334, [b"334 VXNlcm5hbWU6"]))
        self.assertEqual(r.cmd(base64.b64encode(USERNAME.encode())), (334, [b"334 UGFzc3dvcmQ6"]))
        self.assertEqual(r.cmd(base64.b64encode(PASSWORD.encode()))[0], 235)
        r.cmd(b"QUIT")
        # and swaks over STARTTLS
        rc, out = self.swaks("--from", "scan2@contoso.test", "--to", "bob@contoso.test",
                             "--tls", "--tls-verify", "--tls-ca-path", self.rig.ca_file,
                             "--auth", "LOGIN", "--auth-user", USERNAME,
                             "--auth-password", PASSWORD, data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        self.assert_final_queued(self.swaks_replies(out)[-2])
        self.assertEqual(self.body_of(self.one_message()), MSG)
        self.assertIn("device=scanner2", self.message_log()[0])

    def test_starttls(self):
        self.start_proxy()
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertTrue(s.has_extn("starttls"))
        s.starttls(context=self.rig.ssl_context())  # verified against the rig CA
        s.ehlo("copier.test")
        self.assertFalse(s.has_extn("starttls"))
        s.mail("copier@contoso.test")
        s.rcpt("alice@contoso.test")
        code, msg = s.data(MSG)
        self.assertEqual(code, 250)
        self.assertRegex(msg, QUEUED_RE)
        s.quit()
        self.assertEqual(self.body_of(self.one_message()), MSG)

    def test_starttls_discards_injected_commands(self):
        # bytes pipelined after STARTTLS must be dropped, not run inside TLS (CVE-2011-0411)
        self.start_proxy()
        r = self.raw()
        r.reply()
        r.cmd(b"EHLO copier.test")
        r.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        self.assertEqual(r.reply()[0], 220)
        r.sock = self.rig.ssl_context().wrap_socket(r.sock, server_hostname="localhost")
        r.buf = b""
        self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
        # no MAIL is in effect: RCPT must be refused as out of sequence
        code, _ = r.cmd(b"RCPT TO:<alice@contoso.test>")
        self.assertEqual(code // 100, 5)
        self.assertEqual(r.cmd(b"QUIT")[0], 221)

    def test_implicit_tls(self):
        self.start_proxy(tls_listener=True)
        rc, out = self.swaks("--port", str(self.tls_port), "--tlsc", "--tls-verify",
                             "--tls-ca-path", self.rig.ca_file,
                             "--from", "copier@contoso.test", "--to", "alice@contoso.test",
                             data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        self.assert_final_queued(self.swaks_replies(out)[-2])
        self.assertEqual(self.body_of(self.one_message()), MSG)
        # and Python's SMTP_SSL, with AUTH PLAIN inside TLS
        self.rig.sink_clear()
        s = smtplib.SMTP_SSL("localhost", self.tls_port, timeout=T,
                             context=self.rig.ssl_context())
        self.addCleanup(s.close)
        s.ehlo("scanner.test")
        self.assertFalse(s.has_extn("starttls"))
        s.login(USERNAME, PASSWORD)
        s.sendmail("scan2@contoso.test", ["bob@contoso.test"], MSG)
        s.quit()
        self.assertEqual(self.body_of(self.one_message()), MSG)

    def test_pipelining(self):
        self.start_proxy()
        r = self.raw()
        self.assertEqual(r.reply()[0], 220)
        code, lines = r.cmd(b"EHLO copier.test")
        self.assertIn(b"PIPELINING", [ln[4:] for ln in lines])
        # one write: MAIL, RCPT, RCPT, DATA
        r.send(b"MAIL FROM:<copier@contoso.test>\r\nRCPT TO:<alice@contoso.test>\r\n"
               b"RCPT TO:<bob@contoso.test>\r\nDATA\r\n")
        codes = [r.reply()[0] for _ in range(4)]
        self.assertEqual(codes, [250, 250, 250, 354])
        # one write: the message, the end, RSET, NOOP and QUIT
        r.send(MSG + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 250)
        self.assertRegex(lines[0], rb"^250 " + QUEUED_RE)
        self.assertEqual([r.reply()[0] for _ in range(3)], [250, 250, 221])
        m = self.one_message()
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test", "bob@contoso.test"])
        self.assertEqual(self.body_of(m), MSG)
        # swaks --pipeline too
        self.rig.sink_clear()
        rc, out = self.swaks("--pipeline", "--from", "copier@contoso.test",
                             "--to", "alice@contoso.test,bob@contoso.test",
                             data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.body_of(self.one_message()), MSG)

    def test_20mb_message(self):
        self.start_proxy()
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/" * 1 + b"\r\n"
        body = MSG + line * (20 * 1024 * 1024 // len(line))
        self.assertGreater(len(body), 20 * 1000 * 1000)
        s = self.smtp()
        s.ehlo("copier.test")
        t0 = time.monotonic()
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], body,
                   mail_options=["SIZE=%d" % len(body)])
        s.quit()
        elapsed = time.monotonic() - t0
        m = self.one_message(timeout=30)
        self.assertEqual(len(m["data"]) - len(sop_rig.split_received(m["data"])[0]), len(body))
        self.assertTrue(self.body_of(m) == body, "20 MB message changed on the way")
        self.assertIn("size=%d" % len(body), self.message_log()[0])
        self.assertLess(elapsed, 60)

    def test_size_over_limit_refused(self):
        self.start_proxy()
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertTrue(s.has_extn("size"))
        code, _ = s.docmd("MAIL FROM:<copier@contoso.test> SIZE=%d" % (36 * 1024 * 1024 + 1))
        self.assertEqual(code, 552)
        self.assert_nothing_relayed()

    def test_8bit_body(self):
        self.start_proxy()
        body = (b"From: copier@contoso.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
                b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n\r\n"
                b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln, \xe2\x82\xac 5\r\nlatin1 \xe4\xf6\xfc\xff\r\n"
                b"\x80\x81\xfe control\x01\x7f\r\n")
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertTrue(s.has_extn("8bitmime"))
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], body,
                   mail_options=["BODY=8BITMIME"])
        s.quit()
        m = self.one_message()
        self.assertEqual(self.body_of(m), body)
        self.assertIn("BODY=8BITMIME", m["mail_options"])

    def test_null_sender(self):
        self.start_proxy()
        r = self.raw()
        r.reply()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(MSG + b".\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 250, lines)
        r.cmd(b"QUIT")
        m = self.one_message()
        self.assertEqual(m["mail_from"], "")
        self.assertEqual(self.body_of(m), MSG)

    def test_multiple_recipients(self):
        self.start_proxy()
        rcpts = ["alice@contoso.test", "bob@contoso.test", "carol@example.test"]
        msg_path = os.path.join(self.tmp, "curl.eml")
        with open(msg_path, "wb") as f:
            f.write(MSG)
        cmd = ["curl", "-sS", "--max-time", str(T), "--url", "smtp://127.0.0.1:%d/copier.test"
               % self.port, "--mail-from", "copier@contoso.test", "--upload-file", msg_path]
        for rc_ in rcpts:
            cmd += ["--mail-rcpt", rc_]
        r = subprocess.run(cmd, capture_output=True, timeout=T + 10)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.one_message()
        self.assertEqual(m["rcpt_tos"], rcpts)
        self.assertEqual(self.body_of(m), MSG)
        self.assertIn("rcpts=3", self.message_log()[0])

    def test_refused_recipient(self):
        self.start_proxy()
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        code, msg = s.rcpt("refuse@contoso.test")
        self.assertEqual(code, 550, "the upstream's RCPT verdict must reach the device: %r"
                         % msg)
        self.assertIn(b"5.1.1", msg)
        self.assertEqual(s.rcpt("bob@contoso.test")[0], 250)
        code, msg = s.data(MSG)
        self.assertEqual(code, 250)
        s.quit()
        m = self.one_message()
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test", "bob@contoso.test"])
        self.assertEqual(self.body_of(m), MSG)

    def test_all_recipients_refused(self):
        self.start_proxy()
        s = self.smtp()
        s.ehlo("copier.test")
        s.mail("copier@contoso.test")
        self.assertEqual(s.rcpt("refuse@contoso.test")[0], 550)
        self.assertEqual(s.rcpt("tempfail@contoso.test")[0], 451)
        code, _ = s.docmd("DATA")
        self.assertEqual(code // 100, 5, "DATA without any accepted recipient")
        s.close()
        self.assert_nothing_relayed()

    # ---------------------------------------------------------------- peers failing
    def test_upstream_down(self):
        closed = sop_rig.free_port()  # nothing listens there
        self.start_proxy(upstream_port=closed)
        s = self.smtp()
        s.ehlo("copier.test")
        codes = self._try_send(s)
        self.assertEqual(codes[-1] // 100, 4, "upstream down must be a 4xx: %r" % codes)
        self.assertFalse(any(c // 100 == 5 for c in codes), codes)
        self.assert_nothing_relayed(0)

    def test_upstream_relay_down(self):
        # Dovecot up, its relay (the sink) down: Dovecot answers MAIL with 421 4.4.0
        self.start_proxy()
        self.rig.sink_stop()
        try:
            s = self.smtp()
            s.ehlo("copier.test")
            codes = self._try_send(s)
            self.assertEqual(codes[-1] // 100, 4, codes)
            self.assertFalse(any(c // 100 == 5 for c in codes), codes)
        finally:
            self.rig.sink_start()
        self.assert_nothing_relayed(0)

    def test_upstream_untrusted_certificate(self):
        other = os.path.join(self.tmp, "other-ca")
        os.makedirs(other)
        other_ca, _, _ = sop_rig.make_certs(other)
        # the upstream's certificate is not signed by the CA the proxy trusts
        self.start_proxy(edit=lambda t: t.replace("ca_file = %s" % self.rig.ca_file,
                                                  "ca_file = %s" % other_ca))
        logins = self.rig.dovecot_log().count("Login: user=")
        s = self.smtp()
        s.ehlo("copier.test")
        codes = self._try_send(s)
        self.assertEqual(codes[-1] // 100, 4, codes)
        self.assertFalse(any(c // 100 == 5 for c in codes), codes)
        self.assert_nothing_relayed(0)
        self.assertEqual(self.rig.dovecot_log().count("Login: user="), logins,
                         "the proxy authenticated to an upstream it could not verify")

    def test_idp_down(self):
        self.start_proxy()
        self.rig.idp_stop()
        try:
            self._send_expect_4xx()
        finally:
            self.rig.idp_start()

    def test_idp_error500(self):
        self.start_proxy()
        self.rig.idp_control(mode="error500")
        self._send_expect_4xx()
        self.assertIn("temporarily_unavailable", self.log())

    def test_idp_refuses_client_secret(self):
        bad = os.path.join(self.tmp, "wrong.secret")
        fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"not-the-secret-value\n")
        os.close(fd)
        self.start_proxy(secret_file=bad)
        self._send_expect_4xx()
        log = self.log()
        # IdP errors logged plainly, the secret never
        self.assertIn("invalid_client", log)
        self.assertIn("AADSTS7000215", log)
        self.assertNotIn("not-the-secret-value", log)

    def test_token_rejected_once(self):
        self.start_proxy()
        bad_sigs = self.rig.dovecot_log().count("Bad signature")
        self.rig.idp_control(mode="bad_first_token")
        s = self.smtp()
        s.ehlo("copier.test")
        s.mail("copier@contoso.test")
        s.rcpt("alice@contoso.test")
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        self.assertRegex(msg, QUEUED_RE)
        s.quit()
        self.assertEqual(self.body_of(self.one_message()), MSG)
        stats = self.rig.idp_stats()
        self.assertEqual(stats["requests"], {self.rig.client_id: 2},
                         "exactly one fresh token after Dovecot refused the first")
        self.assertEqual(self.rig.dovecot_log().count("Bad signature"), bad_sigs + 1)

    def test_token_rejected_once_exchange_style(self):
        # the raw upstream answers a bad token like Exchange: "535 5.7.3" at once
        self.start_proxy(upstream_port=self.rig.raw_port)
        self.rig.idp_control(mode="bad_first_token")
        before = self.rig.raw.handler.n_auth_failures
        s = self.smtp()
        s.ehlo("copier.test")
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], MSG)
        s.quit()
        self.assertEqual(self.one_message(raw=True)["data"], MSG)
        self.assertEqual(self.rig.idp_stats()["total"], 2)
        self.assertEqual(self.rig.raw.handler.n_auth_failures - before, 1)

    def test_token_always_rejected_is_4xx(self):
        # the mailbox does not match the token's claim: every token is refused; one retry, 4xx
        self.start_proxy(edit=lambda t: t.replace("mailbox = %s" % self.rig.mailbox,
                                                  "mailbox = nobody@contoso.test"))
        self._send_expect_4xx()
        self.assertEqual(self.rig.idp_stats()["total"], 2, "one retry with a fresh token")

    def test_one_token_for_many_devices(self):
        self.start_proxy()
        errors = []

        def one(i):
            try:
                s = smtplib.SMTP("localhost", self.port, timeout=T,
                                 source_address=("127.0.0.1", 0))
                s.ehlo("copier%d.test" % i)
                s.sendmail("copier@contoso.test", ["alice@contoso.test"],
                           b"Subject: %d\r\n\r\nx\r\n" % i)
                s.quit()
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T + 10)
        self.assertEqual(errors, [])
        self.assertEqual(len(self.rig.sink_wait(10)), 10)
        self.assertEqual(self.rig.idp_stats()["total"], 1, "one token request for all sessions")

    # ---------------------------------------------------------------- who may send
    def test_unknown_device(self):
        # only the copier at 127.0.0.1; a client at 127.0.0.2 is nobody
        self.start_proxy(devices=[("copier", {"address": "127.0.0.1", "account": "scanners"})])
        refused_at = None
        try:
            r = self.raw(source="127.0.0.2")
            code, lines = r.reply()
            if code // 100 == 5:
                refused_at = "connect"
            else:
                r.cmd(b"EHLO stranger.test")
                code, lines = r.cmd(b"MAIL FROM:<stranger@evil.test>")
                self.assertEqual(code // 100, 5, lines)
                refused_at = "MAIL"
                code, _ = r.cmd(b"RCPT TO:<alice@contoso.test>")
                self.assertNotEqual(code, 250)
        except ConnectionError:
            refused_at = refused_at or "connect (closed)"
        self.assertIsNotNone(refused_at)
        self.assert_nothing_relayed()
        self.wait_log(r"ip=127\.0\.0\.2")
        self.assertEqual(self.rig.idp_stats()["total"], 0)

    def test_auth_required_530(self):
        # scanner2 may connect from anywhere but must authenticate
        self.start_proxy()
        s = self.smtp(source="127.0.0.2")
        s.ehlo("scanner.test")
        s.starttls(context=self.rig.ssl_context())
        s.ehlo("scanner.test")
        code, msg = s.docmd("MAIL FROM:<scan2@contoso.test>")
        self.assertEqual(code, 530, msg)
        self.assert_nothing_relayed()

    def test_wrong_password(self):
        self.start_proxy()
        rc, out = self.swaks("--from", "scan2@contoso.test", "--to", "bob@contoso.test",
                             "--auth", "LOGIN", "--auth-user", USERNAME,
                             "--auth-password", "wrong-" + PASSWORD, data=MSG.rstrip(b"\r\n"))
        self.assertNotEqual(rc, 0)
        self.assertTrue(any(r.startswith("535") for r in self.swaks_replies(out)), out)
        s = self.smtp()
        s.ehlo("scanner.test")
        with self.assertRaises(smtplib.SMTPAuthenticationError) as cm:
            s.login("nosuchuser", PASSWORD)
        self.assertEqual(cm.exception.smtp_code, 535)
        self.assert_nothing_relayed()
        # failed logins are logged with the source address (and never with the password)
        self.wait_log(r"event=auth_failed.*ip=127\.0\.0\.1|ip=127\.0\.0\.1.*event=auth_failed")
        self.assertNotIn("wrong-" + PASSWORD, self.log())

    def test_auth_without_tls_outside_protected_network(self):
        self.start_proxy()
        r = self.raw(source="127.0.0.2")
        self.assertEqual(r.reply()[0], 220)
        r.cmd(b"EHLO scanner.test")
        plain = base64.b64encode(("\0%s\0%s" % (USERNAME, PASSWORD)).encode())
        code, lines = r.cmd(b"AUTH PLAIN " + plain)
        self.assertEqual(code // 100, 5, "AUTH without TLS from 127.0.0.2 must be refused: %r"
                         % lines)
        code, lines = r.cmd(b"AUTH LOGIN")
        self.assertEqual(code // 100, 5, lines)
        r.cmd(b"QUIT")
        # with STARTTLS the same login works from there
        s = self.smtp(source="127.0.0.2")
        s.ehlo("scanner.test")
        s.starttls(context=self.rig.ssl_context())
        s.ehlo("scanner.test")
        self.assertEqual(s.login(USERNAME, PASSWORD)[0], 235)
        s.sendmail("scan2@contoso.test", ["bob@contoso.test"], MSG)
        s.quit()
        self.assertEqual(self.body_of(self.one_message()), MSG)

    # ---------------------------------------------------------------- DATA encoding
    def _raw_data(self, payload, source="127.0.0.1"):
        """MAIL/RCPT/DATA, then the payload bytes exactly; returns the reply after it."""
        r = self.raw(source=source)
        r.reply()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(payload)
        return r, r.reply()

    def test_bare_lf_normalised(self):
        # through the raw upstream, which repairs nothing (Dovecot would repair bare LFs itself)
        self.start_proxy(upstream_port=self.rig.raw_port)
        payload = (b"From: copier@contoso.test\nSubject: LF only\n\nline one\nline two\r\n"
                   b"mixed\n.\r\n")
        r, (code, lines) = self._raw_data(payload)
        self.assertEqual(code, 250, lines)
        r.cmd(b"QUIT")
        data = self.one_message(raw=True)["data"]
        self.assertEqual(data, b"From: copier@contoso.test\r\nSubject: LF only\r\n\r\n"
                               b"line one\r\nline two\r\nmixed\r\n")
        self.assert_wire_clean(data)

    def test_bare_lf_dot_cannot_smuggle(self):
        # "\n.\n" inside one DATA must not end it and start a second transaction: one message
        # arrives, and the device gets one reply for its one DATA.
        smuggled = (b"From: copier@contoso.test\r\nSubject: one\r\n\r\nbefore\n.\n"
                    b"MAIL FROM:<ceo@contoso.test>\nRCPT TO:<victim@contoso.test>\nDATA\n"
                    b"From: ceo@contoso.test\nSubject: smuggled\n\nwire money\n.\n"
                    b"after\r\n.\r\n")
        for upstream in (None, self.rig.raw_port):
            with self.subTest(upstream="raw" if upstream else "dovecot"):
                self.rig.sink_clear()
                self.start_proxy(upstream_port=upstream)
                r, (code, lines) = self._raw_data(smuggled)
                self.assertEqual(code, 250, lines)
                code, lines = r.cmd(b"QUIT")
                self.assertEqual(code, 221, (
                    "a second reply for the same DATA (%r): the proxy ended DATA at a bare-LF dot "
                    "and ran the rest as commands. As the receiving side it must take only "
                    "CRLF.CRLF as the end of data, even with bare_lf = normalize (as Postfix's "
                    "smtpd_forbid_bare_newline = normalize does; CVE-2023-51766)" % lines))
                m = self.one_message(raw=bool(upstream))
                self.assertEqual(m["rcpt_tos"], ["alice@contoso.test"])
                data = m["data"] if upstream else self.body_of(m)
                self.assertNotIn(b"victim", str(m["rcpt_tos"]).encode())
                self.assertTrue(data.endswith(b"after\r\n"), data)
                self.assertIn(b"\r\nwire money\r\n", data)
                self.assert_wire_clean(data)
                self.stop_proxy()
                self.assert_no_secrets(self.proxy.log())

    def test_bare_lf_reject_mode(self):
        self.start_proxy(edit=lambda t: t.replace("bare_lf = normalize", "bare_lf = reject"))
        r, (code, lines) = self._raw_data(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n")
        self.assertEqual(code // 100, 5, lines)
        self.assertEqual(r.cmd(b"QUIT")[0], 221)
        self.assert_nothing_relayed()

    def test_dot_stuffing_both_ways(self):
        # device -> proxy: stuffed; proxy -> upstream: stuffed again; sink: the original lines
        original = (b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
                    b" .space dot\r\n...\r\nend\r\n")
        stuffed = b"".join(b"." + ln if ln.startswith(b".") else ln
                           for ln in original.splitlines(keepends=True))
        for upstream in (None, self.rig.raw_port):
            with self.subTest(upstream="raw" if upstream else "dovecot"):
                self.rig.sink_clear()
                self.start_proxy(upstream_port=upstream)
                r, (code, lines) = self._raw_data(stuffed + b".\r\n")
                self.assertEqual(code, 250, lines)
                r.cmd(b"QUIT")
                m = self.one_message(raw=bool(upstream))
                self.assertEqual(m["data"] if upstream else self.body_of(m), original)
                self.stop_proxy()
        # and smtplib, which stuffs by itself
        self.rig.sink_clear()
        self.start_proxy()
        s = self.smtp()
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], original)
        s.quit()
        self.assertEqual(self.body_of(self.one_message()), original)

    def test_line_over_1000_refused(self):
        self.start_proxy()
        ok_line = b"y" * 998 + b"\r\n"      # 1000 octets with CRLF: the limit, allowed
        long_line = b"x" * 999 + b"\r\n"    # 1001 octets: refused
        r, (code, lines) = self._raw_data(b"Subject: long\r\n\r\n" + long_line + b".\r\n")
        self.assertEqual(code // 100, 5, lines)
        self.assertEqual(r.cmd(b"QUIT")[0], 221)
        self.assert_nothing_relayed()
        r, (code, lines) = self._raw_data(b"Subject: long\r\n\r\n" + ok_line + b".\r\n")
        self.assertEqual(code, 250, lines)
        r.cmd(b"QUIT")
        self.assertEqual(self.body_of(self.one_message()), b"Subject: long\r\n\r\n" + ok_line)
        # and a command line over 512 octets
        r = self.raw()
        r.reply()
        code, lines = r.cmd(b"EHLO " + b"h" * 600)
        self.assertEqual(code // 100, 5, lines)

    # ---------------------------------------------------------------- --check
    def run_check(self, cfg_text, name="check.ini"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(cfg_text)
        os.chmod(path, 0o600)
        r = subprocess.run([BINARY, "--config", path, "--check"], capture_output=True,
                           timeout=30)
        return path, r.returncode, r.stdout.decode(errors="replace") + \
            r.stderr.decode(errors="replace")

    def test_check_ok(self):
        text = sop_rig.proxy_config(self.rig, sop_rig.free_port(), sop_rig.free_port(),
                                    devices=default_devices(),
                                    state_dir=os.path.join(self.tmp, "state"))
        path, rc, out = self.run_check(text)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.strip().splitlines()[-1].strip(), "ok", out)

    def test_check_lists_every_error(self):
        text = sop_rig.proxy_config(self.rig, sop_rig.free_port(),
                                    devices=default_devices(),
                                    state_dir=os.path.join(self.tmp, "state"))
        lines = text.splitlines()
        # break five things, each on a line we know
        lines.insert(1, "no_such_key = 1")
        bad = {}
        lines.append("")
        lines.append("[device broken]")
        lines.append("address = 300.1.2.3/40")
        bad["address"] = len(lines)
        lines.append("account = nosuchaccount")
        bad["account"] = len(lines)
        lines.append("")
        lines.append("[device badhash]")
        lines.append("username = someone")
        lines.append("password_hash = not-a-crypt-hash")
        bad["hash"] = len(lines)
        lines.append("account = scanners")
        path, rc, out = self.run_check("\n".join(lines) + "\n")
        self.assertNotEqual(rc, 0, out)
        self.assertNotIn("\nok\n", "\n" + out)
        for what, ln in [("unknown key", 2)] + sorted(bad.items(), key=lambda x: x[1]):
            self.assertIn("%s:%d:" % (path, ln), out, "no error for %s at line %d:\n%s"
                          % (what, ln, out))

    def test_check_refuses_group_readable_secret(self):
        loose = os.path.join(self.tmp, "loose.secret")
        with open(loose, "w") as f:
            f.write(self.rig.client_secret + "\n")
        os.chmod(loose, 0o640)
        text = sop_rig.proxy_config(self.rig, sop_rig.free_port(), devices=default_devices(),
                                    state_dir=os.path.join(self.tmp, "state"),
                                    secret_file=loose)
        path, rc, out = self.run_check(text)
        self.assertNotEqual(rc, 0, out)
        line_no = text.splitlines().index("client_secret_file = %s" % loose) + 1
        self.assertIn("%s:%d:" % (path, line_no), out)
        self.assertNotIn(self.rig.client_secret, out)
        # and a key file readable by others is refused the same way
        key = os.path.join(self.tmp, "loose-key.pem")
        with open(self.rig.key_file, "rb") as src, open(key, "wb") as dst:
            dst.write(src.read())
        os.chmod(key, 0o644)
        text = text.replace("tls_key = %s" % self.rig.key_file, "tls_key = %s" % key) \
                   .replace("client_secret_file = %s" % loose,
                            "client_secret_file = %s" % self.rig.secret_file)
        path, rc, out = self.run_check(text, "check2.ini")
        self.assertNotEqual(rc, 0, out)
        self.assertIn(key, out)

    def test_secrets_never_logged(self):
        # debug logging, every kind of secret in play: client secret, tokens, device password
        self.start_proxy()
        self.rig.idp_control(mode="bad_first_token")   # two tokens, one refused upstream
        s = self.smtp()
        s.ehlo("scanner.test")
        s.starttls(context=self.rig.ssl_context())
        s.ehlo("scanner.test")
        s.login(USERNAME, PASSWORD)
        s.sendmail("scan2@contoso.test", ["bob@contoso.test"], MSG)
        s.quit()
        rc, out = self.swaks("--from", "scan2@contoso.test", "--to", "bob@contoso.test",
                             "--auth", "PLAIN", "--auth-user", USERNAME,
                             "--auth-password", PASSWORD, data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        self.assertEqual(len(self.rig.sink_wait(2)), 2)
        self.issued_seen = self.rig.idp_stats()["issued"]
        self.assertEqual(len(self.issued_seen), 2)
        self.stop_proxy()
        log = self.proxy.log()
        self.assertIn("log_level", open(self.cfg).read())
        self.assertIn(" debug ", log, "the proxy ran at debug level")
        self.assert_no_secrets(log)


if __name__ == "__main__":
    sop_rig.terminate_on_sigterm()
    unittest.main(verbosity=2)
