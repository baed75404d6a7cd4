#!/usr/bin/python3
"""The upstream SASL mechanism (upstream_auth = xoauth2 | oauthbearer | auto) with the real
binary (same rig and harness as test_relay.py): OAUTHBEARER (RFC 7628) through Dovecot, auto
choosing XOAUTH2 when both are offered, a mechanism the upstream does not offer (the raw upstream
has XOAUTH2 only) failing with a 4xx and a log line naming what it offers, and a refused
OAUTHBEARER token retried once with a fresh one.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_upstream_auth.py -v TestUpstreamAuth.test_oauthbearer
"""
import base64
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from test_relay import MSG, QUEUED_RE, ProxyCase  # noqa: E402


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def oauthbearer_b64(user, host, port, token):
    raw = "n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01" % (user, host, port, token)
    return base64.b64encode(raw.encode()).decode()


class TestUpstreamAuth(ProxyCase):
    def send_ok(self):
        s = self.smtp()
        s.ehlo("copier.test")
        s.mail("copier@contoso.test")
        s.rcpt("alice@contoso.test")
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        s.quit()
        return msg

    def logins(self, method):
        return self.rig.dovecot_log().count("Login: user=<%s>, method=%s" % (self.rig.mailbox,
                                                                             method))

    def assert_no_oauthbearer_payload(self, log):
        for tok in self.rig.idp_stats()["issued"]:
            b64 = oauthbearer_b64(self.rig.mailbox, "localhost", self.rig.dovecot_port, tok)
            self.assertNotIn(b64[:60], log, "an OAUTHBEARER payload in the proxy log")
            self.assertNotIn(b64[-60:], log, "an OAUTHBEARER payload in the proxy log")

    def test_oauthbearer(self):
        self.start_proxy(edit=lambda t: t.replace("[upstream]\n",
                                                  "[upstream]\nupstream_auth = oauthbearer\n"))
        before_ob, before_x = self.logins("OAUTHBEARER"), self.logins("XOAUTH2")
        self.assertRegex(self.send_ok(), QUEUED_RE)
        self.assertEqual(self.body_of(self.one_message()), MSG)
        self.assertEqual(self.logins("OAUTHBEARER"), before_ob + 1, self.rig.dovecot_log()[-2000:])
        self.assertEqual(self.logins("XOAUTH2"), before_x)
        log = self.log()
        # an Entra-sized token does not fit the AUTH line: "AUTH OAUTHBEARER", 334, the response
        self.assertRegex(log, r'line="AUTH OAUTHBEARER( <redacted>)?"')
        self.assertRegex(log, r"event=upstream_auth_ok session=\S+ account=scanners "
                              r"mech=OAUTHBEARER")
        self.assertNotIn('line="AUTH XOAUTH2', log)
        self.assert_no_oauthbearer_payload(log)

    def test_account_override(self):
        # [upstream] says xoauth2, the account overrides it with oauthbearer
        self.start_proxy(account_extra={"upstream_auth": "oauthbearer"},
                         edit=lambda t: t.replace("[upstream]\n",
                                                  "[upstream]\nupstream_auth = xoauth2\n"))
        before = self.logins("OAUTHBEARER")
        self.send_ok()
        self.one_message()
        self.assertEqual(self.logins("OAUTHBEARER"), before + 1)
        self.wait_log(r"mech=OAUTHBEARER")

    def test_auto_prefers_xoauth2(self):
        # Dovecot offers XOAUTH2 and OAUTHBEARER; auto (the default) takes XOAUTH2
        self.start_proxy()
        with open(self.cfg) as f:
            self.assertNotIn("upstream_auth", f.read())
        before_ob, before_x = self.logins("OAUTHBEARER"), self.logins("XOAUTH2")
        self.send_ok()
        self.one_message()
        self.assertEqual(self.logins("XOAUTH2"), before_x + 1)
        self.assertEqual(self.logins("OAUTHBEARER"), before_ob)
        log = self.log()
        self.assertRegex(log, r'line="AUTH XOAUTH2( <redacted>)?"')
        self.assertNotIn('line="AUTH OAUTHBEARER', log)
        self.assertRegex(log, r"event=upstream_auth_ok session=\S+ account=scanners mech=XOAUTH2")

    def test_oauthbearer_not_offered(self):
        # the raw upstream offers XOAUTH2 only: the device gets a 4xx, the log says what it offers
        self.start_proxy(upstream_port=self.rig.raw_port,
                         account_extra={"upstream_auth": "oauthbearer"})
        before = self.rig.raw.handler.n_auth_attempts
        self._send_expect_4xx()
        m = self.wait_log(r"event=upstream_failed session=\S+ account=scanners op=MAIL "
                          r"reason=.*upstream_auth = oauthbearer but the upstream offers "
                          r"AUTH ([A-Z0-9 ]+)")
        offered = m.group(1).split()
        self.assertIn("XOAUTH2", offered)
        self.assertNotIn("OAUTHBEARER", offered)
        self.assertEqual(self.rig.raw.handler.n_auth_attempts, before, "AUTH was tried anyway")
        self.assertNotIn('line="AUTH OAUTHBEARER', self.log())

    def test_oauthbearer_token_rejected_once(self):
        # Dovecot refuses the first token (334 JSON, answered with ^A, then 535): one fresh
        # token, and the message goes through
        self.start_proxy(account_extra={"upstream_auth": "oauthbearer"})
        bad_sigs = self.rig.dovecot_log().count("Bad signature")
        before = self.logins("OAUTHBEARER")
        self.rig.idp_control(mode="bad_first_token")
        self.assertRegex(self.send_ok(), QUEUED_RE)
        self.assertEqual(self.body_of(self.one_message()), MSG)
        stats = self.rig.idp_stats()
        self.assertEqual(stats["requests"], {self.rig.client_id: 2},
                         "exactly one fresh token after Dovecot refused the first")
        self.assertEqual(self.rig.dovecot_log().count("Bad signature"), bad_sigs + 1)
        self.assertEqual(self.logins("OAUTHBEARER"), before + 1)
        log = self.log()
        self.assertRegex(log, r"event=upstream_auth_retry session=\S+ account=scanners "
                              r"upstream=\S*535")
        self.assertIn('line="AQ=="', log, "the error challenge answered with a single ^A")
        self.assert_no_oauthbearer_payload(log)

    _send_expect_4xx = test_relay.TestRelay._send_expect_4xx
    _try_send = test_relay.TestRelay._try_send


if __name__ == "__main__":
    unittest.main()
