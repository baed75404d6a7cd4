#!/usr/bin/python3
"""provider = google: a Workspace service account with domain-wide delegation, with the real
binary (same rig and harness as test_relay.py). The proxy signs an RS256 assertion with the key
from the service account's JSON key file, naming the mailbox (sub); the stand-in's Google token
endpoint (idp_google.py) verifies it and issues a token Dovecot accepts for that mailbox.
Refusals reach the device as 4xx and the log says what the Workspace admin should fix.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_google.py -v TestGoogle.test_relay_with_service_account
"""
import json
import os
import re
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from test_relay import MSG, QUEUED_RE, T, T_FAIL, ProxyCase  # noqa: E402


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def google_account(key_file, mailbox, token_url):
    """A config edit: the rig's Entra account becomes a Google service account."""
    def edit(text):
        head, sep, rest = text.partition("[account scanners]\n")
        section, nl, tail = rest.partition("\n\n")
        keep = [ln for ln in section.splitlines()
                if not re.match(r"(provider|tenant|client_id|client_secret_file|token_url|"
                                r"mailbox) = ", ln)]
        lines = ["provider = google", "service_account_key = %s" % key_file,
                 "mailbox = %s" % mailbox, "token_url = %s" % token_url] + keep
        return head + sep + "\n".join(lines) + nl + tail
    return edit


class TestGoogle(ProxyCase):
    def key(self, path):
        with open(path) as f:
            return json.load(f)

    def assert_no_key_or_assertion(self, log, key_file):
        pem = self.key(key_file)["private_key"]
        self.assertNotIn("PRIVATE KEY", log)
        for line in pem.splitlines():
            if not line.startswith("-----"):
                self.assertNotIn(line, log, "a line of the service account's key in the log")
        stats = self.rig.idp_stats()
        self.assertTrue(stats["google_assertions"], "the stand-in got no assertion")
        for a in stats["google_assertions"]:
            for part in a.split("."):
                self.assertNotIn(part, log, "a part of an assertion in the proxy log")
        self.assertNotIn("assertion=", log)

    def start_google(self, key_file, mailbox=None):
        mailbox = mailbox or self.rig.mailbox
        return self.start_proxy(edit=google_account(key_file, mailbox, self.rig.google_token_url))

    def send(self):
        s = smtplib.SMTP("localhost", self.port, timeout=T_FAIL, source_address=("127.0.0.1", 0))
        self.addCleanup(s.close)
        s.ehlo("copier.test")
        codes = [s.mail("copier@contoso.test")[0]]
        if codes[-1] == 250:
            codes.append(s.rcpt("alice@contoso.test")[0])
        if codes[-1] == 250:
            codes.append(s.data(MSG)[0])
        try:
            s.quit()
        except smtplib.SMTPException:
            pass
        return codes

    def test_relay_with_service_account(self):
        key = self.key(self.rig.google_key_file)
        self.start_google(self.rig.google_key_file)
        self.wait_log(r"event=service_account account=scanners client_email=%s key_id=%s "
                      r"client_id=%s sub=%s token_url=%s" % (
                          re.escape(key["client_email"]), key["private_key_id"],
                          key["client_id"], re.escape(self.rig.mailbox),
                          re.escape(self.rig.google_token_url)))
        s = smtplib.SMTP("localhost", self.port, timeout=T, source_address=("127.0.0.1", 0))
        self.addCleanup(s.close)
        s.ehlo("copier.test")
        s.mail("copier@contoso.test")
        s.rcpt("alice@contoso.test")
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        self.assertRegex(msg, QUEUED_RE)
        s.quit()
        m = self.rig.sink_wait(1)
        self.assertEqual(len(m), 1)
        self.assertEqual(m[0]["rcpt_tos"], ["alice@contoso.test"])
        self.assertTrue(m[0]["data"].endswith(MSG), m[0]["data"][-200:])
        # the stand-in verified one assertion (signature with the registered public key, kid,
        # aud = its own URL, lifetime) for the mailbox, and issued one token
        stats = self.rig.idp_stats()
        self.assertEqual(stats["google_errors"], [])
        self.assertEqual(len(stats["google_verified"]), 1)
        v = stats["google_verified"][0]
        self.assertEqual(v["sub"], self.rig.mailbox)
        self.assertEqual(v["iss"], key["client_email"])
        self.assertEqual(v["kid"], key["private_key_id"])
        self.assertEqual(v["aud"], self.rig.google_token_url)
        self.assertEqual(v["scope"], "https://mail.google.com/")
        self.assertEqual(v["exp"] - v["iat"], 3600)
        self.assertEqual(len(stats["issued"]), 1)
        self.assertEqual(stats["requests"], {}, "no Entra token request")
        self.assertIn("Login: user=<%s>, method=XOAUTH2" % self.rig.mailbox,
                      self.rig.dovecot_log())
        log = self.log()
        self.assertRegex(log, r"event=token_request account=scanners grant=service_account "
                              r"credential=service_account_key url=http://127\.0\.0\.1:\d+"
                              r"/google/token")
        self.assertRegex(log, r"event=token_ok account=scanners status=200")
        self.assertRegex(log, r'event=message .*account=scanners .*upstream="250 ')
        self.assert_no_key_or_assertion(log, self.rig.google_key_file)

    def assert_refused(self, key_file, pattern):
        codes = self.send()
        self.assertEqual(codes[-1] // 100, 4, "expected a 4xx, got %r" % codes)
        self.assertFalse(any(c // 100 == 5 for c in codes), codes)
        self.assertEqual(self.rig.sink_messages(), [])
        self.wait_log(pattern)
        stats = self.rig.idp_stats()
        self.assertEqual(stats["google_verified"], [])
        self.assertEqual(stats["issued"], [])
        self.assert_no_key_or_assertion(self.log(), key_file)
        return stats

    def test_mailbox_not_in_domain(self):
        # The assertion is good but names a user Google does not know: invalid_grant "Invalid
        # email or User ID"; the log says which mailbox to check.
        self.start_google(self.rig.google_key_file, mailbox="nobody@contoso.test")
        stats = self.assert_refused(
            self.rig.google_key_file,
            r"event=token_failed account=scanners temporary=0 status=400 duration_ms=\d+ "
            r"error=invalid_grant hint=\"mailbox nobody@contoso\.test is not a user of the "
            r"Workspace domain \(or is suspended\): check mailbox =\" "
            r"description=\"Invalid email or User ID\"")
        self.assertEqual([e[1:] for e in stats["google_errors"]],
                         [["invalid_grant", "Invalid email or User ID"]])

    def test_no_domain_wide_delegation(self):
        # A service account the Workspace admin never delegated: unauthorized_client, and the
        # log names the client ID and the scope to enter in the Admin console.
        key = self.key(self.rig.google_undelegated_key_file)
        self.start_google(self.rig.google_undelegated_key_file)
        self.assert_refused(
            self.rig.google_undelegated_key_file,
            r"event=token_failed account=scanners temporary=0 status=401 duration_ms=\d+ "
            r"error=unauthorized_client hint=\"domain-wide delegation is not granted: in the "
            r"Admin console \(Security > Access and data control > API controls > Manage "
            r"Domain Wide Delegation\) add client ID %s with scope https://mail\.google\.com/\""
            % key["client_id"])


if __name__ == "__main__":
    unittest.main()
