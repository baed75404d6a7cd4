#!/usr/bin/python3
"""SIGHUP (`systemctl reload`) against the real binary with sessions in flight (same rig and
harness as test_relay.py): the config is read again and swapped in whole, or refused whole.
A session in the middle of DATA finishes on the config it started with and its message
arrives; the new config's devices and listeners apply to new connections only; an account
whose token settings did not change keeps its token cache (the IdP sees no new request); a
broken config is refused with its FILE:LINE errors and the old one keeps serving. Under the
ASan build, stop_proxy fails any test whose reloads leaked.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_reload.py -v TestReload.test_changed_config_mid_data
"""
import base64
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from test_relay import MSG, PASSWORD, T, USERNAME, ProxyCase  # noqa: E402

NEW_USER = "newdev7c"


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def auth_plain(user):
    return base64.b64encode(("\0%s\0%s" % (user, PASSWORD)).encode())


class TestReload(ProxyCase):
    def rewrite(self, port, devices=None, edit=None, **kw):
        """Write a new config for the running proxy (listening on port)."""
        kw.setdefault("state_dir", os.path.join(self.tmp, "state"))
        text = sop_rig.proxy_config(self.rig, port, devices=devices or test_relay.default_devices(),
                                    **kw)
        if edit is not None:
            text = edit(text)
        with open(self.cfg, "w") as f:
            f.write(text)
        return text

    def reload(self, expect="reloaded"):
        """SIGHUP, then wait for the n-th event=reloaded (or event=reload_refused) line."""
        n = self.log().count("event=%s " % expect)
        self.proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + T
        while self.log().count("event=%s " % expect) <= n:
            self.assertIsNone(self.proxy.proc.poll(), "the proxy exited on SIGHUP:\n" +
                              self.log()[-3000:])
            self.assertLess(time.monotonic(), deadline, "no event=%s; log tail:\n%s"
                            % (expect, self.log()[-3000:]))
            time.sleep(0.05)

    def idp_requests(self):
        return self.rig.idp_stats()["total"]

    def session_in_data(self, user=USERNAME):
        """A device session that logged in as user and is half-way through its body."""
        r = self.raw()
        self.assertEqual(r.reply()[0], 220)
        self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
        self.assertEqual(r.cmd(b"AUTH PLAIN " + auth_plain(user))[0], 235)
        self.assertEqual(r.cmd(b"MAIL FROM:<scan2@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        head, tail = MSG[:40], MSG[40:]
        r.send(head)
        return r, tail

    def send_one(self, port, user=None, rcpt="bob@contoso.test"):
        """One message over smtplib; returns the final reply code (or the AUTH failure's)."""
        s = smtplib.SMTP("localhost", port, timeout=T, source_address=("127.0.0.1", 0))
        self.addCleanup(s.close)
        s.ehlo("copier.test")
        if user:
            try:
                s.login(user, PASSWORD)
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code
        codes = self._try_send(s, rcpts=(rcpt,))
        s.quit()
        return codes[-1]

    def assert_refused(self, port):
        with self.assertRaises(ConnectionRefusedError, msg="port %d still accepts" % port):
            socket.create_connection(("127.0.0.1", port), timeout=T).close()

    def test_changed_config_mid_data(self):
        # scanner2 (USERNAME) is removed by the reload, newdev7c added; the listener moves from
        # self.port to a new port; the account is untouched
        self.start_proxy()
        old_port = self.port
        r, tail = self.session_in_data()  # its MAIL got the token upstream
        requests_before = self.idp_requests()
        self.assertGreaterEqual(requests_before, 1)
        new_port = sop_rig.free_port()
        self.rewrite(new_port, devices=[
            ("copier", {"address": "127.0.0.1", "account": "scanners"}),
            ("newdev", {"username": NEW_USER, "password_hash": test_relay.PASSWORD_HASH,
                        "account": "scanners"})])
        self.reload()
        self.assertRegex(self.log(), r"event=reloaded generation=2 listeners=1 accounts=1 "
                         r"devices=2 token_caches_kept=1")
        self.assertRegex(self.log(), r"event=listener_closed address=127\.0\.0\.1:%d" % old_port)
        # the session in flight finishes on its own config, and its message arrives
        r.send(tail + b".\r\n")
        code, lines = r.reply()
        self.assertEqual(code, 250, lines)
        self.assert_final_queued(lines[-1].decode())
        self.assertEqual(r.cmd(b"QUIT")[0], 221)
        r.close()
        msgs = self.rig.sink_wait(1, T)
        self.assertEqual(self.body_of(msgs[0]), MSG)
        self.assertIn("device=scanner2", self.message_log()[0])
        # its generation is released once it closed
        self.wait_log(r"event=config_released generation=1\b")
        # the removed port refuses, the new one serves; the new device relays, the removed one
        # is refused
        self.assert_refused(old_port)
        self.assertEqual(self.send_one(new_port, user=NEW_USER), 250)
        self.assertEqual(self.send_one(new_port, user=USERNAME), 535)
        self.assertEqual(len(self.rig.sink_wait(2, T)), 2)
        self.assertIn("device=newdev", self.message_log()[-1])
        # the account did not change: its token cache (and token) carried over
        self.assertEqual(self.idp_requests(), requests_before,
                         "a reload that left the account alone asked the IdP again")
        # the daemon's device history follows the new config (scanner2 gone, newdev seen)
        r = subprocess.run([test_relay.BINARY, "--config", self.cfg, "devices", "--json"],
                           capture_output=True, timeout=T)
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["source"], "daemon")
        names = {d["name"]: d for d in doc["devices"]}
        self.assertEqual(sorted(names), ["copier", "newdev"])
        self.assertEqual(names["newdev"]["last_result"], "delivered")

    def test_changed_account_gets_new_token_cache(self):
        self.start_proxy()
        self.assertEqual(self.send_one(self.port), 250)
        before = self.idp_requests()
        # another token endpoint (the same IdP by another name): the account changed, so it
        # gets a new cache and asks for its own token
        self.rewrite(self.port, token_url=self.rig.token_url.replace("127.0.0.1", "localhost"))
        self.reload()
        self.assertIn("token_caches_kept=0", self.log())
        self.assertEqual(self.send_one(self.port), 250)
        self.assertEqual(self.idp_requests(), before + 1)

    def test_broken_config_refused(self):
        self.start_proxy()
        with open(self.cfg) as f:
            good = f.read()
        broken = good.replace("hostname = relay.test\n", "hostname = relay.test\nbogus_key = 1\n")
        line = broken.splitlines().index("bogus_key = 1") + 1
        with open(self.cfg, "w") as f:
            f.write(broken)
        r, tail = self.session_in_data()
        self.reload(expect="reload_refused")
        self.assertRegex(self.log(), r"event=reload_failed error=\"%s:%d: unknown key 'bogus_key'"
                         % (re.escape(self.cfg), line))
        self.assertNotIn("event=reloaded", self.log())
        # nothing changed: the session finishes, the old config serves new sessions
        r.send(tail + b".\r\n")
        self.assertEqual(r.reply()[0], 250)
        self.assertEqual(self.send_one(self.port, user=USERNAME), 250)
        self.assertEqual(len(self.rig.sink_wait(2, T)), 2)
        self.assertIsNone(self.proxy.proc.poll())

    def test_refusals_leave_everything_as_it_was(self):
        self.start_proxy()
        # a new address that cannot be bound: refused whole, no listener changed
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        self.rewrite(self.port, edit=lambda t: t.replace(
            "listen = 127.0.0.1:%d\n" % self.port, "listen = 127.0.0.1:%d\nlisten = 127.0.0.1:%d\n"
            % (self.port, busy.getsockname()[1])))
        self.reload(expect="reload_refused")
        self.assertRegex(self.log(), r"event=reload_failed error=\".*cannot listen on "
                         r"127\.0\.0\.1:%d" % busy.getsockname()[1])
        # a key that needs a restart: named
        self.rewrite(self.port, state_dir=os.path.join(self.tmp, "state2"))
        self.reload(expect="reload_refused")
        self.assertIn("state_dir cannot change on reload; restart the service", self.log())
        self.assertNotIn("event=reloaded", self.log())
        self.assertEqual(self.send_one(self.port), 250)
        # the spool's commit threads start once, with the spool
        self.rewrite(self.port, proxy_extra={"spool_commit_threads": "2"})
        self.reload(expect="reload_refused")
        self.assertIn("spool_commit_threads cannot change on reload; restart the service",
                      self.log())
        self.assertNotIn("event=reloaded", self.log())

    def test_sighup_twice_quickly(self):
        self.start_proxy()
        new_port = sop_rig.free_port()
        self.rewrite(new_port)
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"event=reloaded generation=2")
        # the second may be merged with the first by the kernel: either way the daemon lives
        time.sleep(0.3)
        self.assertIsNone(self.proxy.proc.poll(), self.log()[-3000:])
        self.assertNotIn("reload_refused", self.log())
        self.assert_refused(self.port)
        self.assertEqual(self.send_one(new_port), 250)

    def test_reloads_with_sessions_open(self):
        # sessions of three generations open at once, then closed: each generation is released
        # with its last session; the ASan build's leak check at exit covers the rest
        self.start_proxy()
        sessions = []
        for gen in range(1, 4):
            r = self.raw()
            self.assertEqual(r.reply()[0], 220)
            self.assertEqual(r.cmd(b"EHLO copier.test")[0], 250)
            self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
            sessions.append(r)
            self.rewrite(self.port, proxy_extra={"max_recipients": str(50 + gen)})
            self.reload()
        self.assertRegex(self.log(), r"event=reloaded generation=4 ")
        self.assertNotRegex(self.log(), r"event=config_released")
        for gen, r in enumerate(sessions, 1):
            self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
            self.assertEqual(r.cmd(b"QUIT")[0], 221)
            r.close()
            self.wait_log(r"event=config_released generation=%d\b" % gen)
        self.assertEqual(self.send_one(self.port), 250)


if __name__ == "__main__":
    unittest.main()
