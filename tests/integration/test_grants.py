#!/usr/bin/python3
"""The ways an account gets its token, with the real binary (same rig and harness as
test_relay.py). Client credentials with a certificate: the proxy signs a fresh RS256 assertion
per token request, the IdP stand-in verifies it (signature by the registered certificate's key,
x5t#S256, aud, iss/sub, lifetime, jti never reused) and Dovecot accepts the token it issued.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_grants.py -v TestCertificate.test_relay_with_certificate
"""
import os
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


def _pem_body(path):
    """The base64 lines of a PEM file (what a leaked key would look like in a log)."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("-----")]


class TestCertificate(ProxyCase):
    def assert_no_key_or_assertion(self, log, key_file):
        stats = self.rig.idp_stats()
        self.assertNotIn("PRIVATE KEY", log)
        for line in _pem_body(key_file):
            self.assertNotIn(line, log, "a line of the private key in the proxy log")
        self.assertTrue(stats["assertions"], "the IdP got no assertion")
        for a in stats["assertions"]:
            self.assertNotIn(a, log, "a client assertion in the proxy log")
            self.assertNotIn(a.split(".")[2], log, "an assertion's signature in the proxy log")
            self.assertNotIn(a.split(".")[0], log, "an assertion's header in the proxy log")
        self.assertNotIn("client_assertion=", log)

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

    def test_relay_with_certificate(self):
        self.start_proxy(client_cert=(self.rig.client_cert_file, self.rig.client_key_file))
        self.wait_log(r"event=certificate account=scanners certificate=\S+app-cert\.pem "
                      r"thumbprint=[0-9A-F]{40}")
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
        stats = self.rig.idp_stats()
        # one token, for the certificate client, after one assertion the stand-in verified
        self.assertEqual(stats["requests"], {self.rig.cert_client_id: 1})
        self.assertEqual(len(stats["verified"]), 1)
        self.assertEqual(len(stats["issued"]), 1)
        self.assertEqual(stats["errors"], [])
        self.assertIn("Login: user=<%s>, method=XOAUTH2" % self.rig.mailbox,
                      self.rig.dovecot_log())
        log = self.log()
        self.assertRegex(log, r"event=token_request account=scanners grant=client_credentials "
                              r"credential=certificate url=http://127\.0\.0\.1:")
        self.assertRegex(log, r"event=token_ok account=scanners status=200")
        self.assertRegex(log, r'event=message .*account=scanners .*upstream="250 ')
        self.assert_no_key_or_assertion(log, self.rig.client_key_file)

    def test_assertion_refused(self):
        # A good certificate and key, but not the one uploaded to the app registration: the IdP
        # refuses the assertion like Entra (AADSTS700027), the device gets a 4xx and nothing is
        # relayed; the log says why without the key or the assertion.
        self.start_proxy(client_cert=(self.rig.other_cert_file, self.rig.other_key_file))
        codes = self.send()
        self.assertEqual(codes[-1] // 100, 4, "expected a 4xx, got %r" % codes)
        self.assertFalse(any(c // 100 == 5 for c in codes), codes)
        self.assertEqual(self.rig.sink_messages(), [])
        self.wait_log(r"event=token_failed account=scanners temporary=0 status=401 "
                      r"duration_ms=\d+ error=invalid_client aadsts=700027")
        stats = self.rig.idp_stats()
        self.assertEqual(stats["verified"], [])
        self.assertIn([self.rig.cert_client_id, "invalid_client"], stats["errors"])
        self.assert_no_key_or_assertion(self.log(), self.rig.other_key_file)


if __name__ == "__main__":
    unittest.main()
