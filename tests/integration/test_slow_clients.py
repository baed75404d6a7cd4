#!/usr/bin/python3
"""Slow clients (issue 13): command_timeout and data_timeout are per-record deadlines, counted
from the start of the wait for a line (the reply before it, or the end of the line before it),
not read timeouts that every byte restarts. A client that trickles a line one byte at a time is
cut with 421 4.4.2 like a silent one; one that pauses between whole lines, each in time, is not;
a body cut in the middle is aborted, nothing of it delivered. 60 tricklers against
max_connections = 50 are all cut within the deadline and a real device gets through afterwards.

Same rig and harness as test_relay.py. Run one:
    SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \\
        tests/integration/test_slow_clients.py -v TestSlowClients.test_trickled_command_is_cut
"""
import os
import select
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from test_relay import MSG, ProxyCase  # noqa: E402

TIMEOUT_421 = b"421 4.4.2 "
STEP = 0.5  # seconds between two trickled bytes


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def short_command_timeout(text):
    return text.replace("command_timeout = 30s", "command_timeout = 2s")


def trickle_until_reply(sock, data, step=STEP, limit=10.0):
    """Send data one byte every step seconds (then keep sending 'x') until the server says
    something; return (seconds from the call, bytes received). Bounded by limit."""
    t0 = time.monotonic()
    i = 0
    got = b""
    while time.monotonic() - t0 < limit:
        b = data[i:i + 1] if i < len(data) else b"x"
        i += 1
        try:
            sock.sendall(b)
        except OSError:
            break
        r, _, _ = select.select([sock], [], [], step)
        if r:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            got += chunk
            if b"\n" in got or not chunk:
                break
    return time.monotonic() - t0, got


def closed_soon(sock, limit=5.0):
    """True once the server closed the connection (EOF or reset), within limit seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], 0.2)
        if r:
            try:
                if not sock.recv(4096):
                    return True
            except OSError:
                return True
    return False


class TestSlowClients(ProxyCase):
    def greeted(self):
        r = self.raw()
        self.assertEqual(r.reply()[0], 220)
        return r

    def test_trickled_command_is_cut(self):
        """EHLO one byte every 0.5 s, never an LF: cut 2 s after the greeting, not after 2 s of
        silence (which never comes)."""
        self.start_proxy(edit=short_command_timeout)
        r = self.greeted()
        elapsed, got = trickle_until_reply(r.sock, b"EHLO x")
        self.assertTrue(got.startswith(TIMEOUT_421), got)
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 3.5, "the trickler lasted %.1fs" % elapsed)
        self.assertTrue(closed_soon(r.sock), "the session stayed open after its 421")
        self.wait_log(r"event=timeout session=\w+ ip=127\.0\.0\.1 state=INIT")

    def test_trickled_command_after_reply_is_cut(self):
        """The deadline of a later command counts from the reply before it."""
        self.start_proxy(edit=short_command_timeout)
        r = self.greeted()
        self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
        elapsed, got = trickle_until_reply(r.sock, b"MAIL FROM:<a@contoso.test>")
        self.assertTrue(got.startswith(TIMEOUT_421), got)
        self.assertLess(elapsed, 3.5, "the trickler lasted %.1fs" % elapsed)
        self.assertTrue(closed_soon(r.sock))
        self.assert_nothing_relayed()

    def test_trickled_auth_response_is_cut(self):
        """An AUTH LOGIN answer to a 334 is a line under command_timeout too."""
        self.start_proxy(edit=short_command_timeout)
        r = self.greeted()
        self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
        self.assertEqual(r.cmd(b"AUTH LOGIN")[0], 334)
        elapsed, got = trickle_until_reply(r.sock, b"Y29waWVyM2Y=")
        self.assertTrue(got.startswith(TIMEOUT_421), got)
        self.assertLess(elapsed, 3.5, "the trickler lasted %.1fs" % elapsed)
        self.wait_log(r"event=timeout session=\w+ ip=127\.0\.0\.1 state=AUTH-USER")

    def test_pauses_between_whole_commands_are_fine(self):
        """1.5 s before each command (under the 2 s deadline), 7+ s in all: not cut."""
        self.start_proxy(edit=short_command_timeout)
        r = self.greeted()
        t0 = time.monotonic()
        for line, code in ((b"EHLO copier.test", 250), (b"NOOP", 250),
                           (b"MAIL FROM:<copier@contoso.test>", 250),
                           (b"RCPT TO:<a@contoso.test>", 250), (b"DATA", 354)):
            time.sleep(1.5)
            self.assertEqual(r.cmd(line)[0], code, line)
        time.sleep(1.5)
        r.send(MSG + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        time.sleep(1.5)
        self.assertEqual(r.cmd(b"QUIT")[0], 221)
        self.assertGreater(time.monotonic() - t0, 8)
        self.one_message()
        self.assertNotIn("event=timeout", self.log())

    def test_normal_client_unaffected(self):
        self.start_proxy(edit=short_command_timeout)
        s = self.smtp()
        s.ehlo("copier.test")
        s.sendmail("copier@contoso.test", ["a@contoso.test"], MSG)
        s.quit()
        self.one_message()
        self.assertNotIn("event=timeout", self.log())

    def test_trickled_data_line_is_cut_and_aborted(self):
        """data_timeout = 3s: whole body lines 1 s apart go on for longer than 3 s (the deadline is
        per line, not per message); then one line trickled a byte every 0.5 s is cut ~3 s after
        the line before it, and nothing of the message is delivered."""
        self.start_proxy(edit=short_command_timeout, proxy_extra={"data_timeout": "3s"})
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<a@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(b"Subject: slow\r\n\r\n")
        for i in range(4):  # 4 s of whole lines, each in time
            time.sleep(1.0)
            r.send(b"line %d\r\n" % i)
        elapsed, got = trickle_until_reply(r.sock, b"a line that never ends")
        self.assertTrue(got.startswith(TIMEOUT_421), got)
        self.assertGreater(elapsed, 2.5)
        self.assertLess(elapsed, 4.5, "the trickler lasted %.1fs" % elapsed)
        self.assertTrue(closed_soon(r.sock))
        self.wait_log(r"event=timeout session=\w+ ip=127\.0\.0\.1 state=DATA")
        self.assert_nothing_relayed(wait=1.0)

    def test_silent_in_data_is_cut(self):
        self.start_proxy(edit=short_command_timeout, proxy_extra={"data_timeout": "2s"})
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        r.cmd(b"MAIL FROM:<copier@contoso.test>")
        r.cmd(b"RCPT TO:<a@contoso.test>")
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(b"Subject: half\r\n\r\nhalf a bo")
        t0 = time.monotonic()
        code, lines = r.reply()
        self.assertEqual(code, 421)
        self.assertTrue(lines[0].startswith(TIMEOUT_421), lines)
        self.assertLess(time.monotonic() - t0, 3.5)
        self.assert_nothing_relayed(wait=1.0)

    def test_sixty_tricklers_are_all_cut(self):
        """max_connections = 50, 60 connections: 10 refused at once, the 50 that trickle are all
        cut within the 2 s deadline (+ slack), then a real device sends a message."""
        n, cap = 60, 50
        # all from 127.0.0.1: lift the per-address cap so that max_connections is what binds
        self.start_proxy(edit=short_command_timeout,
                         proxy_extra={"max_connections": str(cap), "max_connections_per_ip": "100"})
        socks, t_greet, refused = [], {}, 0
        # the start-up probe's session must be gone before the count starts
        self.wait_log(r"event=disconnect ")
        time.sleep(0.2)
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                socks.append(s)
            for s in socks:
                buf = b""
                deadline = time.monotonic() + 10
                while b"\n" not in buf and time.monotonic() < deadline:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                if buf.startswith(b"220"):
                    t_greet[s] = time.monotonic()
                else:
                    self.assertTrue(buf.startswith(b"421 4.7.0"), buf)
                    refused += 1
            self.assertEqual(len(t_greet), cap)
            self.assertEqual(refused, n - cap)
            alive = dict(t_greet)
            cut = {}
            t0 = time.monotonic()
            i = 0
            while alive and time.monotonic() - t0 < 10:
                for s in list(alive):
                    try:
                        s.sendall(b"EHLO x"[i:i + 1] or b"x")
                    except OSError:
                        pass
                i += 1
                end = time.monotonic() + STEP
                while alive and time.monotonic() < end:
                    r, _, _ = select.select(list(alive), [], [], max(0.0, end - time.monotonic()))
                    for s in r:
                        try:
                            data = s.recv(4096)
                        except OSError:
                            data = b""
                        cut[s] = (time.monotonic() - alive.pop(s), data)
            self.assertFalse(alive, "%d tricklers still connected after 10 s" % len(alive))
            worst = max(t for t, _ in cut.values())
            for t, data in cut.values():
                self.assertTrue(data.startswith(TIMEOUT_421), data)
            self.assertLess(worst, 3.5, "the slowest trickler lasted %.1fs" % worst)
            print("\n50 tricklers cut after %.2f..%.2f s" % (min(t for t, _ in cut.values()), worst),
                  file=sys.stderr)
        finally:
            for s in socks:
                s.close()
        time.sleep(0.3)
        sm = self.smtp()
        sm.ehlo("copier.test")
        sm.sendmail("copier@contoso.test", ["a@contoso.test"], MSG)
        sm.quit()
        self.one_message()
        self.assertEqual(self.log().count("event=timeout "), cap)


if __name__ == "__main__":
    unittest.main()
