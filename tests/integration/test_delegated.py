#!/usr/bin/python3
"""grant = refresh_token (a delegated mailbox) with the real binary: the IdP stand-in rotates
refresh tokens on every use and revokes a token once its successor has been used
(idp_delegated.py), so a proxy that ever uses a token it has not persisted loses the mailbox on
its next restart. The token store is read back with store_peek.py, from the format's
description, not through the proxy.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_delegated.py -v TestDelegated.test_rotation_persisted
"""
import os
import signal
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import store_peek  # noqa: E402
import test_relay  # noqa: E402
from test_relay import MSG, T, T_FAIL, ProxyCase  # noqa: E402

ACCOUNT = "scanners"


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def delegated(text):
    """The rig's client-secret account turned into a delegated one (public client, no secret)."""
    out = []
    for line in text.splitlines():
        if line.startswith("client_secret_file ="):
            continue
        if line.startswith("client_id ="):
            out.append("client_id = %s" % test_relay.RIG.public_client_id)
            out.append("grant = refresh_token")
            continue
        out.append(line)
    return "\n".join(out) + "\n"


class TestDelegated(ProxyCase):
    def setUp(self):
        super().setUp()
        self.key_path = os.path.join(self.tmp, "store.key")
        self.key = os.urandom(32)
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        self.tok_path = os.path.join(self.tmp, "state", "tokens", ACCOUNT + ".tok")

    def start(self):
        # Every message on a connection of its own (idle_timeout = 0), so that each one after
        # a pause needs a token: these tests are about refreshing; reuse is test_upstream_pool's.
        def edit(text):
            return delegated(text).replace("[upstream]\n", "[upstream]\nidle_timeout = 0\n", 1)
        return self.start_proxy(proxy_extra={"key_file": self.key_path}, edit=edit)

    def seed(self):
        """A refresh token an admin already has, put where `authorize` would put it."""
        rt = self.rig._idp_req("POST", "/_mint_refresh_token", {
            "client_id": self.rig.public_client_id, "mailbox": self.rig.mailbox})["refresh_token"]
        store_peek.write(self.tok_path, self.key, ACCOUNT, refresh_token=rt)
        return rt

    def stored(self):
        return store_peek.read(self.tok_path, self.key, ACCOUNT)

    def refresh_stats(self):
        return self.rig.idp_stats()["refresh"]

    def assert_no_refresh_tokens_logged(self):
        log = self.log()
        for rt in self.refresh_stats()["issued"]:
            self.assertNotIn(rt, log, "a refresh token in the proxy log")
            self.assertNotIn(rt[:24], log, "part of a refresh token in the proxy log")

    def send(self, n_expected):
        s = self.smtp()
        s.ehlo("copier.test")
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], MSG)
        s.quit()
        msgs = self.rig.sink_wait(n_expected, T)
        self.assertEqual(len(msgs), n_expected, "message not delivered")

    def kill9(self):
        self.proxy.proc.send_signal(signal.SIGKILL)
        self.proxy.proc.wait(10)
        self.proxy.stop()  # closes the log; returncode -9 is expected here
        self.proxy = None

    def test_rotation_persisted(self):
        rt0 = self.seed()
        # 31 s tokens are inside the proxy's 30 s margin within a second: every message after a
        # pause needs a refresh, and each refresh rotates the refresh token.
        self.rig.idp_control(expires_in=31)
        self.start()
        for i in range(1, 4):
            self.send(i)
            st = self.refresh_stats()
            self.assertEqual(len(st["used"]), i)
            self.assertEqual(st["rejected"], [])
            # the store holds the newest refresh token, sealed
            self.assertEqual(self.stored()["refresh_token"], st["issued"][-1])
            time.sleep(1.2)
        st = self.refresh_stats()
        self.assertEqual(st["used"][0], rt0)
        # each refresh used the token the one before it brought
        self.assertEqual(st["used"][1:], st["issued"][1:3])
        self.assertRegex(self.log(), r"event=token_ok account=scanners .*refresh_token=rotated")
        self.assertRegex(self.log(), r"event=token_request account=scanners grant=refresh_token "
                                     r"credential=refresh_token")
        with open(self.tok_path, "rb") as f:
            data = f.read()
        for rt in st["issued"]:
            self.assertNotIn(rt.encode(), data, "a refresh token in clear in the store file")
        self.assert_no_refresh_tokens_logged()

    def test_kill9_loses_no_refresh_token(self):
        """kill -9 at the worst moment (the IdP has rotated, the proxy may not have persisted),
        and after several rotations; every restart must still hold a token the IdP accepts."""
        self.seed()
        self.rig.idp_control(expires_in=31)
        delivered = 0
        for rnd in range(3):
            self.start()
            # a few rotations in this life of the proxy
            for _ in range(2):
                delivered += 1
                self.send(delivered)
                time.sleep(1.2)
            # the next refresh is answered, then the proxy dies before it can do anything else
            self.rig.idp_control(kill_after_refresh=self.proxy.proc.pid)
            s = smtplib.SMTP("localhost", self.port, timeout=T_FAIL,
                             source_address=("127.0.0.1", 0))
            try:
                s.ehlo("copier.test")
                self._try_send(s)
            except (smtplib.SMTPException, OSError):
                pass  # the proxy died under the device: it never heard 250
            finally:
                s.close()
            self.proxy.proc.wait(10)
            self.assertEqual(self.proxy.proc.returncode, -signal.SIGKILL, "not killed: round %d"
                             % rnd)
            self.proxy.stop()
            self.proxy = None
            self.assertEqual(self.refresh_stats()["rejected"], [])
            # what the store holds now is a token the IdP still honours
            rt = self.stored()["refresh_token"]
            self.assertIsNotNone(rt)
        # one more life: a message relays with what the store held
        self.start()
        delivered += 1
        self.send(delivered)
        st = self.refresh_stats()
        self.assertEqual(st["rejected"], [], "the proxy used a revoked refresh token")
        self.assert_no_refresh_tokens_logged()

    def test_invalid_grant_asks_for_authorize(self):
        self.seed()
        self.rig.idp_control(expires_in=31)
        self.start()
        self.send(1)
        self.rig.idp_control(refresh_mode="invalid_grant")
        time.sleep(1.2)  # the 31 s token is now inside the margin: the next message refreshes
        self.rig.sink_clear()
        self._send_expect_4xx()
        m = self.wait_log(r"event=reauthorize_needed account=scanners reason=\"[^\n]*"
                          r"invalid_grant[^\n]*fix=\"([^\"]+)\"")
        self.assertEqual(m.group(1), "smtp-oauth-proxy --config %s authorize scanners" % self.cfg)
        self.assertIn("aadsts=70043", m.group(0))
        # the store still holds the last good refresh token (a refusal does not erase it)
        self.assertEqual(self.stored()["refresh_token"], self.refresh_stats()["issued"][-1])
        self.assert_no_refresh_tokens_logged()

    def test_nothing_stored(self):
        self.start()
        self._send_expect_4xx()
        m = self.wait_log(r"event=reauthorize_needed account=scanners reason=\"no refresh token "
                          r"is stored\"[^\n]*fix=\"([^\"]+)\"")
        self.assertEqual(m.group(1), "smtp-oauth-proxy --config %s authorize scanners" % self.cfg)
        self.assertEqual(self.rig.idp_stats()["total"], 0, "nothing to send, nothing sent")

    def test_test_command_leaves_the_refresh_token_to_the_daemon(self):
        """`test` while the daemon runs takes the daemon's token. Refreshing on its own would
        rotate the refresh token behind the daemon's back: twice, and the IdP revokes the one
        the daemon holds (its next refresh would get invalid_grant)."""
        self.seed()
        self.rig.idp_control(expires_in=31)  # every use after a pause needs a refresh
        self.start()
        self.send(1)
        for _ in range(2):
            time.sleep(1.2)
            r = subprocess.run([test_relay.BINARY, "--config", self.cfg, "test", ACCOUNT],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("token: ok, from the running daemon", r.stdout)
            for rt in self.refresh_stats()["issued"]:
                self.assertNotIn(rt, r.stdout + r.stderr)
        time.sleep(1.2)
        self.send(2)  # the daemon refreshes with the refresh token it holds
        self.assertEqual(self.refresh_stats()["rejected"], [])
        self.assertEqual(self.stored()["refresh_token"], self.refresh_stats()["issued"][-1])

    def test_config_needs_key_file(self):
        self.start_proxy(proxy_extra={"key_file": self.key_path}, edit=delegated)
        self.stop_proxy()
        self.proxy = None
        with open(self.cfg) as f:
            text = f.read()
        with open(self.cfg, "w") as f:
            f.write("\n".join(ln for ln in text.splitlines() if not ln.startswith("key_file")))
        r = subprocess.run([test_relay.BINARY, "--config", self.cfg, "--check"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("[account scanners]: grant = refresh_token keeps its refresh token in the "
                      "token store: set key_file in [proxy]", r.stderr)


if __name__ == "__main__":
    unittest.main()
