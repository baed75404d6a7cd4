#!/usr/bin/python3
"""Upstream connection reuse (proxy/upstream/upstream_pool.c), seen from the upstream: the scripted
Exchange stand-in (exchange_standin.py) counts connections (each one a TLS handshake and an
AUTH), connections open at once and every command, so these tests assert what went over the
wire: one connection for many messages with an RSET before each reused one, never more than
max_upstream_connections at once, a dead idle connection replaced without the device noticing, a
token that expired while idle replaced by a new connection with a new token, and idle_timeout = 0
keeping nothing. Same rig and harness as test_relay.py (delivery = direct, no rate limit).

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \\
              tests/integration/test_upstream_pool.py -v TestUpstreamPool.test_reuse
"""
import os
import re
import signal
import smtplib
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from exchange_standin import ExchangeStandin  # noqa: E402
from test_relay import MSG, T, ProxyCase  # noqa: E402

EXCHANGE = None


def setUpModule():
    global EXCHANGE
    test_relay.setUpModule()
    rig = test_relay.RIG
    EXCHANGE = ExchangeStandin(sop_rig.free_port(), rig.cert_file, rig.key_file).start()


def tearDownModule():
    if EXCHANGE is not None:
        EXCHANGE.stop()
    test_relay.tearDownModule()


def upstream_opts(**kw):
    """A config edit adding keys to [upstream]."""
    def edit(text):
        return text.replace("[upstream]\n", "[upstream]\n" + "".join(
            "%s = %s\n" % (k, v) for k, v in kw.items()), 1)
    return edit


class TestUpstreamPool(ProxyCase):
    def setUp(self):
        super().setUp()
        EXCHANGE.script = {}
        EXCHANGE.delay = 0.0
        EXCHANGE.reset()

    def start(self, edit=None, **account):
        return self.start_proxy(upstream_port=EXCHANGE.port, edit=edit,
                                account_extra=account or None)

    def send(self, s, n=1, tag=""):
        """n messages over an open device session; every one must get 250."""
        for i in range(n):
            msg = MSG.replace(b"Subject: Scan from copier 3F",
                              b"Subject: scan %s%d" % (tag.encode(), i))
            self.assertEqual(s.sendmail("copier@contoso.test", ["alice@contoso.test"], msg), {})

    def session(self):
        s = smtplib.SMTP("localhost", self.port, timeout=T, source_address=("127.0.0.1", 0))
        self.addCleanup(s.close)
        s.ehlo("copier.test")
        return s

    def wait_for(self, cond, what, timeout=T):
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.05)

    def tokens_by_connection(self):
        """{connection number: [bearer token of each AUTH on it]}."""
        out = {}
        with EXCHANGE.lock:
            blobs = list(EXCHANGE.auth_blobs)
        for no, blob in blobs:
            parts = blob.split(b"\x01")
            self.assertTrue(parts[1].startswith(b"auth=Bearer "), blob[:20])
            out.setdefault(no, []).append(parts[1][len(b"auth=Bearer "):].decode())
        return out

    # ------------------------------------------------------------------------------------
    def test_reuse(self):
        """20 messages from one device over 4 sessions: one upstream connection, one AUTH, an
        RSET before each of the 19 later messages."""
        self.start()
        for k in range(4):
            s = self.session()
            self.send(s, 5, tag="s%d-" % k)
            s.quit()
        self.assertEqual(len(EXCHANGE.verbs("MAIL")), 20)
        self.assertEqual(EXCHANGE.seen.count("DATA"), 20)
        self.assertEqual(EXCHANGE.connections, 1, EXCHANGE.commands[:12])
        self.assertEqual(len(EXCHANGE.verbs("AUTH")), 1)
        self.assertEqual(len(EXCHANGE.verbs("RSET")), 19)
        # on the wire: an RSET right before every MAIL but the first
        with EXCHANGE.lock:
            verbs = [v for _, v in EXCHANGE.commands]
        mails = [i for i, v in enumerate(verbs) if v == "MAIL"]
        for i in mails[1:]:
            self.assertEqual(verbs[i - 1], "RSET", verbs[max(0, i - 6):i + 1])
        self.assertEqual(len(self.rig.idp_stats()["issued"]), 1)
        log = self.log()
        self.assertEqual(log.count("event=upstream_connected "), 1)
        self.assertEqual(log.count("event=message "), 20)
        # the shared connection's log lines carry the session of the message they carry
        sessions = set(re.findall(r"event=message session=(\S+)", log))
        self.assertEqual(len(sessions), 4)
        for sid in sessions:
            self.assertIn("event=upstream_send session=%s line=\"RSET\"" % sid, log)
            self.assertIn("event=upstream_send session=%s line=\"MAIL FROM:" % sid, log)

    def test_cap(self):
        """6 devices at once, max_upstream_connections = 2: never more than 2 upstream
        connections, every message arrives."""
        EXCHANGE.delay = 0.15  # each verdict takes a moment, so the devices overlap
        self.start(max_upstream_connections="2")
        errors = []
        start = threading.Barrier(6)

        def device(k):
            try:
                s = smtplib.SMTP("localhost", self.port, timeout=T * 2,
                                 source_address=("127.0.0.1", 0))
                s.ehlo("copier%d.test" % k)
                start.wait(T)
                self.send(s, 3, tag="d%d-" % k)
                s.quit()
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append((k, repr(e)))

        threads = [threading.Thread(target=device, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T * 4)
        self.assertEqual(errors, [])
        self.assertEqual(EXCHANGE.seen.count("DATA"), 18)
        self.assertLessEqual(EXCHANGE.max_open, 2)
        self.assertEqual(EXCHANGE.max_open, 2, "the devices never overlapped")
        self.assertEqual(EXCHANGE.connections, 2)
        self.assertEqual(self.log().count("event=message "), 18)

    def test_dead_idle_connection_replaced(self):
        """The upstream drops an idle connection, then another answers RSET with 421: each
        time the next message goes over a new connection and the device only sees 250s."""
        self.start()
        s = self.session()
        self.send(s, 1, tag="a")
        self.wait_for(lambda: EXCHANGE.open_now == 1, "the idle connection")
        EXCHANGE.close_all()
        self.wait_for(lambda: EXCHANGE.open_now == 0, "the upstream to drop it")
        self.send(s, 1, tag="b")
        self.assertEqual(EXCHANGE.connections, 2)
        # a connection that looks alive but whose RSET fails
        EXCHANGE.script = {"RSET": "421 4.4.2 exchange.test Connection dropped due to timeout"}
        self.send(s, 1, tag="c")
        s.quit()
        self.assertEqual(EXCHANGE.connections, 3)
        self.assertEqual(EXCHANGE.seen.count("DATA"), 3)
        self.assertEqual(EXCHANGE.verbs("RSET"), [2])
        self.assertEqual(len(EXCHANGE.verbs("AUTH")), 3)
        log = self.log()
        self.assertRegex(log, r"event=upstream_reuse_failed session=\S+ account=scanners "
                              r"conn=\d+ reason=")
        self.assertNotIn("event=upstream_failed", log)
        self.assertRegex(log, r"event=upstream_idle_lost session=\S+ host=localhost ")
        self.assertEqual(log.count("result=delivered"), 3)

    def test_token_expired_while_idle(self):
        """A connection whose token nears its expiry is not reused: a new connection
        authenticates with a new token."""
        # 32 s tokens: the proxy's cache hands one out for 2 s (it keeps a 30 s margin), the
        # pool reuses its connection for 12 s (a 20 s margin)
        self.rig.idp_control(expires_in=32)
        self.addCleanup(self.rig.idp_control, expires_in=3599)  # /_reset keeps it
        self.start()
        s = self.session()
        t0 = time.monotonic()
        self.send(s, 2, tag="early")  # the second reuses the connection
        self.assertEqual(EXCHANGE.connections, 1)
        self.assertEqual(len(EXCHANGE.verbs("RSET")), 1)
        time.sleep(max(0, 13 - (time.monotonic() - t0)))
        self.send(s, 1, tag="late")
        s.quit()
        self.assertEqual(EXCHANGE.connections, 2)
        tokens = self.tokens_by_connection()
        self.assertEqual(sorted(tokens), [1, 2])
        self.assertEqual(len(tokens[1]), 1)
        self.assertEqual(len(tokens[2]), 1)
        self.assertNotEqual(tokens[1][0], tokens[2][0], "the new connection reused the old token")
        issued = self.rig.idp_stats()["issued"]
        self.issued_seen += issued
        self.assertEqual(len(issued), 2)
        self.assertEqual([tokens[1][0], tokens[2][0]], issued)
        self.assertRegex(self.log(), r"event=upstream_closed account=scanners conn=1 "
                                     r"reason=token_expiring")

    def test_idle_timeout_zero_keeps_nothing(self):
        self.start(edit=upstream_opts(idle_timeout="0"))
        s = self.session()
        self.send(s, 3)
        s.quit()
        self.assertEqual(EXCHANGE.connections, 3)
        self.assertEqual(EXCHANGE.verbs("RSET"), [])
        # the proxy's QUIT follows each 250 at once, but reaches the stand-in a moment later
        self.wait_for(lambda: EXCHANGE.verbs("QUIT") == [1, 2, 3], "a QUIT on every connection")
        self.wait_for(lambda: EXCHANGE.open_now == 0, "every connection closed")

    def test_idle_timeout_closes(self):
        """An idle connection is closed (QUIT) once idle_timeout passes."""
        self.start(edit=upstream_opts(idle_timeout="1s"))
        s = self.session()
        self.send(s, 1)
        self.wait_for(lambda: EXCHANGE.verbs("QUIT") == [1], "the idle connection's QUIT", 5)
        self.assertRegex(self.log(), r"event=upstream_closed account=scanners conn=1 "
                                     r"reason=idle_timeout")
        self.send(s, 1)  # a new one serves the next message
        s.quit()
        self.assertEqual(EXCHANGE.connections, 2)

    def test_reload_retires_idle_connections(self):
        """After a reload an idle connection of the old configuration is closed, not reused;
        the new one is then reused as usual."""
        self.start()
        s = self.session()
        self.send(s, 1, tag="before")
        s.quit()
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"event=reloaded generation=2 ")
        s = self.session()  # a session on the new generation
        self.send(s, 2, tag="after")
        s.quit()
        self.assertEqual(EXCHANGE.connections, 2)
        self.assertEqual(EXCHANGE.verbs("QUIT")[:1], [1])  # the old one was told goodbye
        self.assertEqual(EXCHANGE.verbs("RSET"), [2])      # the new one reused once
        self.assertRegex(self.log(), r"event=upstream_closed account=scanners conn=1 "
                                     r"reason=reload")


if __name__ == "__main__":
    unittest.main()
