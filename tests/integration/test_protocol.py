#!/usr/bin/python3
"""The device side's protocol edges with the real binary (same rig and harness as
test_relay.py): sequence errors and the small verbs, the error cap, the command timeout, the
recipient and connection limits, several messages and RSET on one connection, EHLO inside a
transaction, and sender rewriting (checked at the raw upstream, which changes nothing).

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_protocol.py -v TestProtocol.test_command_timeout
"""
import base64
import os
import re
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from test_relay import MSG, PASSWORD, USERNAME, ProxyCase  # noqa: E402


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestProtocol(ProxyCase):
    def greeted(self, **kw):
        r = self.raw(**kw)
        self.assertEqual(r.reply()[0], 220)
        return r

    def test_sequence_errors_and_small_verbs(self):
        self.start_proxy()
        r = self.greeted()
        self.assertEqual(r.cmd(b"MAIL FROM:<a@contoso.test>"),
                         (503, [b"503 5.5.1 Send EHLO or HELO first"]))
        self.assertEqual(r.cmd(b"HELO copier.test"), (250, [b"250 relay.test"]))
        self.assertEqual(r.cmd(b"RCPT TO:<b@contoso.test>")[0], 503)
        self.assertEqual(r.cmd(b"DATA")[0], 503)
        self.assertEqual(r.cmd(b"NOOP"), (250, [b"250 2.0.0 OK"]))
        self.assertEqual(r.cmd(b"HELP")[0], 214)
        self.assertEqual(r.cmd(b"VRFY alice")[0], 252)
        self.assertEqual(r.cmd(b"EXPN staff")[0], 502)
        self.assertEqual(r.cmd(b"BDAT 10 LAST")[0], 502)
        self.assertEqual(r.cmd(b"FROB x"), (500, [b"500 5.5.1 Command unrecognized"]))
        self.assertEqual(r.cmd(b"RSET"), (250, [b"250 2.0.0 OK"]))
        self.assertEqual(r.cmd(b"MAIL FROM:<a@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"MAIL FROM:<a@contoso.test>"),
                         (503, [b"503 5.5.1 Nested MAIL command"]))
        self.assertEqual(r.cmd(b"DATA"), (554, [b"554 5.5.1 No valid recipients"]))
        self.assertEqual(r.cmd(b"MAIL FROM:<a@contoso.test> FROB=1")[0], 503)
        self.assertEqual(r.cmd(b"QUIT")[0], 221)
        self.assert_nothing_relayed()

    def test_unsupported_mail_parameter(self):
        self.start_proxy()
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<a@contoso.test> FROB=1")[0], 555)
        self.assertEqual(r.cmd(b"MAIL FROM:<a@contoso.test> BODY=9BIT")[0], 501)
        self.assertEqual(r.cmd(b"MAIL FROM:<\xc3\xa9@contoso.test>")[0], 553)

    def test_too_many_errors_closes_the_session(self):
        self.start_proxy(proxy_extra={"max_errors": "3"})
        r = self.greeted()
        self.assertEqual(r.cmd(b"FROB 1")[0], 500)
        self.assertEqual(r.cmd(b"FROB 2")[0], 500)
        code, lines = r.cmd(b"FROB 3")
        self.assertEqual(code, 500)
        self.assertEqual(r.reply(), (421, [b"421 4.7.0 Too many errors, closing connection"]))
        with self.assertRaises((ConnectionError, OSError)):
            r.cmd(b"NOOP")
        self.wait_log(r"event=too_many_errors session=\w+ ip=127\.0\.0\.1 errors=3")

    def test_command_timeout(self):
        self.start_proxy(edit=lambda t: t.replace("command_timeout = 30s", "command_timeout = 2s"))
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        t0 = time.monotonic()
        self.assertEqual(r.reply(), (421, [b"421 4.4.2 Timeout, closing connection"]))
        self.assertGreater(time.monotonic() - t0, 1.5)
        with self.assertRaises((ConnectionError, OSError)):
            r.cmd(b"NOOP")
        self.wait_log(r"event=timeout session=\w+ ip=127\.0\.0\.1 state=HELO")

    def test_max_recipients(self):
        self.start_proxy(proxy_extra={"max_recipients": "2"})
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<a@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<b@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<c@contoso.test>"),
                         (452, [b"452 4.5.3 Too many recipients"]))
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(MSG + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        m = self.one_message()
        self.assertEqual(m["rcpt_tos"], ["a@contoso.test", "b@contoso.test"])

    def test_max_connections(self):
        self.start_proxy(proxy_extra={"max_connections": "2"})
        a, b = self.greeted(), self.greeted()
        c = self.raw()
        self.assertEqual(c.reply(), (421, [b"421 4.7.0 Too many connections, try again later"]))
        self.wait_log(r"reason=\"max_connections reached\"")
        a.cmd(b"QUIT")
        a.close()
        time.sleep(0.3)
        self.assertEqual(self.greeted().cmd(b"NOOP")[0], 250)
        b.cmd(b"QUIT")

    def test_two_messages_and_rset_on_one_connection(self):
        self.start_proxy()
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        # a transaction abandoned with RSET sends nothing
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<nobody@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RSET"), (250, [b"250 2.0.0 OK"]))
        for to in (b"alice", b"bob"):
            self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
            self.assertEqual(r.cmd(b"RCPT TO:<" + to + b"@contoso.test>")[0], 250)
            self.assertEqual(r.cmd(b"DATA")[0], 354)
            r.send(MSG + b".\r\n")
            code, lines = r.reply()
            self.assertEqual(code, 250, lines)
        self.assertEqual(r.cmd(b"QUIT")[0], 221)
        msgs = self.rig.sink_wait(2, 10)
        self.assertEqual(sorted(m["rcpt_tos"][0] for m in msgs),
                         ["alice@contoso.test", "bob@contoso.test"])
        for m in msgs:
            self.assertEqual(self.body_of(m), MSG)
        # one upstream connection (and one token) served both messages
        self.wait_log(r"event=disconnect .*messages=2")
        self.assertEqual(len(re.findall(r"event=upstream_connected", self.log())), 1)
        self.assertEqual(len(self.message_log()), 2)

    def test_auth_after_a_message_relays_as_the_new_device(self):
        # one message as the device known by its address, then AUTH as another device on the
        # same connection: the second message is that device's (its account, its log line)
        self.start_proxy()
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        for step in ("copier", "auth", "scanner2"):
            if step == "auth":
                plain = base64.b64encode(b"\0" + USERNAME.encode() + b"\0" + PASSWORD.encode())
                self.assertEqual(r.cmd(b"AUTH PLAIN " + plain)[0], 235)
                continue
            self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
            self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
            self.assertEqual(r.cmd(b"DATA")[0], 354)
            r.send(MSG + b".\r\n")
            self.assertEqual(r.reply()[0], 250)
        r.cmd(b"QUIT")
        self.rig.sink_wait(2, 10)
        self.wait_log(r"event=disconnect .*messages=2")
        devices = [re.search(r"device=(\S+)", ln).group(1) for ln in self.message_log()]
        self.assertEqual(devices, ["copier", "scanner2"])

    def test_ehlo_inside_a_transaction_resets_it(self):
        self.start_proxy()
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 503)
        self.assert_nothing_relayed()

    def test_sender_rewrite_envelope(self):
        self.start_proxy(upstream_port=self.rig.raw_port,
                         edit=lambda t: t.replace("sender_rewrite = off",
                                                  "sender_rewrite = envelope"))
        rc, out = self.swaks("--from", "copier@contoso.test", "--to", "alice@contoso.test",
                             data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        m = self.one_message(raw=True)
        self.assertEqual(m["mail_from"], self.rig.mailbox)
        self.assertEqual(m["data"], MSG)  # headers untouched
        self.assertIn('from="%s"' % self.rig.mailbox, self.message_log()[0])

    def test_sender_rewrite_header(self):
        self.start_proxy(upstream_port=self.rig.raw_port,
                         edit=lambda t: t.replace("sender_rewrite = off",
                                                  "sender_rewrite = header"))
        rc, out = self.swaks("--from", "copier@contoso.test", "--to", "alice@contoso.test",
                             data=MSG.rstrip(b"\r\n"))
        self.assertEqual(rc, 0, out)
        m = self.one_message(raw=True)
        self.assertEqual(m["mail_from"], self.rig.mailbox)
        want = MSG.replace(b"From: Copier 3F <copier@contoso.test>\r\n",
                           b"From: <" + self.rig.mailbox.encode() + b">\r\n"
                           b"Reply-To: Copier 3F <copier@contoso.test>\r\n")
        self.assertNotEqual(want, MSG)
        self.assertEqual(m["data"], want)

    def test_sender_rewrite_header_two_froms_and_an_empty_one(self):
        # docs/header-rewrite.md: exactly one From: (the mailbox) reaches the upstream; the
        # usable original values share one Reply-To:; an empty From: adds nothing to it
        self.start_proxy(upstream_port=self.rig.raw_port,
                         edit=lambda t: t.replace("sender_rewrite = off",
                                                  "sender_rewrite = header"))
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(b"From: Copier 3F <copier@contoso.test>\r\nFrom:\r\nSubject: two\r\n"
               b"From: spoof@elsewhere.test\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(r.reply()[0], 250)
        m = self.one_message(raw=True)
        box = self.rig.mailbox.encode()
        self.assertEqual(m["data"], b"From: <" + box + b">\r\n"
                         b"Reply-To: Copier 3F <copier@contoso.test>\r\n"
                         b" , spoof@elsewhere.test\r\nSubject: two\r\n\r\nbody\r\n")

    def test_sender_rewrite_header_obsolete_colon_and_no_from(self):
        # docs/header-rewrite.md: "From : x" (white space before the colon, RFC 5322 4.5) is the
        # From: and the fields after it stay headers; a message with no From: gets the mailbox's
        # first, with no Reply-To:
        self.start_proxy(upstream_port=self.rig.raw_port,
                         edit=lambda t: t.replace("sender_rewrite = off",
                                                  "sender_rewrite = header"))
        box = self.rig.mailbox.encode()
        cases = [
            (b"From : Copier 3F <copier@contoso.test>\r\nSubject : obs\r\nTo: alice@contoso.test"
             b"\r\n\r\nbody\r\n",
             b"From: <" + box + b">\r\nReply-To: Copier 3F <copier@contoso.test>\r\n"
             b"Subject : obs\r\nTo: alice@contoso.test\r\n\r\nbody\r\n"),
            (b"To: alice@contoso.test\r\nSubject: no sender\r\n\r\nbody\r\n",
             b"From: <" + box + b">\r\nTo: alice@contoso.test\r\nSubject: no sender\r\n\r\n"
             b"body\r\n"),
        ]
        for data, want in cases:
            with self.subTest(data=data[:20]):
                self.rig.sink_clear()
                r = self.greeted()
                r.cmd(b"EHLO copier.test")
                self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
                self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
                self.assertEqual(r.cmd(b"DATA")[0], 354)
                r.send(data + b".\r\n")
                self.assertEqual(r.reply()[0], 250)
                self.assertEqual(self.one_message(raw=True)["data"], want)
                self.assertEqual(r.cmd(b"QUIT")[0], 221)
                r.close()

    def test_nul_in_message_is_refused_and_the_session_goes_on(self):
        # a NUL anywhere in DATA: 554 5.6.0 at the final dot, nothing upstream (not even a
        # spooled copy), and the next message on the same connection goes through
        for delivery in ("direct", "direct-then-spool"):
            with self.subTest(delivery=delivery):
                self.rig.sink_clear()
                self.start_proxy(upstream_port=self.rig.raw_port,
                                 account_extra={"delivery": delivery})
                r = self.greeted()
                r.cmd(b"EHLO copier.test")
                self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
                self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
                self.assertEqual(r.cmd(b"DATA")[0], 354)
                r.send(b"From: copier@contoso.test\r\nSubject: nul\r\n\r\nbe\x00fore\r\n"
                       b"after\r\n.\r\n")
                self.assertEqual(r.reply(), (554, [b"554 5.6.0 Message refused: NUL byte in "
                                                   b"message"]))
                self.assert_nothing_relayed(wait=1.0)
                self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
                self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
                self.assertEqual(r.cmd(b"DATA")[0], 354)
                r.send(MSG + b".\r\n")
                self.assertEqual(r.reply()[0], 250)
                self.assertEqual(self.one_message(raw=True)["data"], MSG)
                self.assertEqual(r.cmd(b"QUIT")[0], 221)
                r.close()

    def test_null_sender_is_never_rewritten(self):
        self.start_proxy(upstream_port=self.rig.raw_port,
                         edit=lambda t: t.replace("sender_rewrite = off",
                                                  "sender_rewrite = envelope"))
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(MSG + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(self.one_message(raw=True)["mail_from"], "")

    def test_sigterm_lets_a_message_in_flight_finish(self):
        self.start_proxy()
        idle = self.greeted()
        idle.cmd(b"EHLO idle.test")
        busy = self.greeted()
        busy.cmd(b"EHLO copier.test")
        self.assertEqual(busy.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(busy.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(busy.cmd(b"DATA")[0], 354)
        busy.send(MSG[:40])
        self.proxy.proc.send_signal(signal.SIGTERM)
        # the idle session is told at once; no new session is accepted
        self.assertEqual(idle.reply(),
                         (421, [b"421 4.3.2 Service shutting down, try again later"]))
        self.wait_log(r"event=stopping signal=15 sessions_open=2")
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        # the message in flight is finished and delivered, then that session is closed too
        busy.send(MSG[40:] + b".\r\n")
        code, lines = busy.reply()
        self.assertEqual(code, 250, lines)
        self.assertEqual(busy.reply()[0], 421)
        self.assertEqual(self.proxy.proc.wait(10), 0)
        self.assertEqual(self.body_of(self.one_message()), MSG)

    def test_starttls_session_is_freed_after_quit(self):
        # the 221 leaves through the TLS filter's lower bufferevent; the session must still be
        # freed right after, not linger until shutdown
        self.start_proxy()
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        r.starttls(self.rig.ssl_context())
        r.buf = b""
        self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
        self.assertEqual(r.cmd(b"QUIT"), (221, [b"221 2.0.0 Bye"]))
        # this session's id (the harness's port probe connects and disconnects too)
        sid = re.findall(r"event=connect session=(\w+)", self.log())[-1]
        self.wait_log(r"event=disconnect session=%s " % sid, timeout=2)

    def test_client_vanishing_mid_message_delivers_nothing(self):
        self.start_proxy(upstream_port=self.rig.raw_port)
        r = self.greeted()
        r.cmd(b"EHLO copier.test")
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        r.send(MSG + b"half a message")
        r.sock.shutdown(socket.SHUT_RDWR)
        r.close()
        self.wait_log(r"event=disconnect session=\w+ ip=127\.0\.0\.1 messages=0")
        self.assert_nothing_relayed(wait=1.0)


if __name__ == "__main__":
    unittest.main()
