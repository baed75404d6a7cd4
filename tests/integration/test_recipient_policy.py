#!/usr/bin/python3
"""Who may send where (allow_recipients, docs/recipient-policy.md) with the real binary and the
rig of test_relay.py: Penn's two-line rule ([proxy] allows the campus domain and its subdomains,
a registered device anyone). In one message the device hears 250 for the allowed recipients and
550 5.7.1 naming the device and its rule for the others, and the upstream receives the message
for the allowed ones only, in every delivery mode.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_recipient_policy.py -v
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from test_relay import MSG, T, ProxyCase  # noqa: E402,F401

PENN = "@contoso.test, @.contoso.test"


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestRecipientPolicy(ProxyCase):
    def start_penn(self, delivery="direct"):
        devices = [("copier3", {"address": "127.0.0.1", "account": "scanners"}),
                   ("registered", {"address": "127.0.0.2", "account": "scanners",
                                   "allow_recipients": "*"})]
        self.start_proxy(devices=devices, proxy_extra={"allow_recipients": PENN},
                         account_extra={"delivery": delivery})

    def mixed_message(self):
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        code, msg = s.rcpt("x@Gmail.test")
        self.assertEqual(code, 550)
        self.assertEqual(msg, b"5.7.1 <x@Gmail.test>: device copier3 may send only to "
                         b"@contoso.test, @.contoso.test")
        self.assertEqual(s.rcpt("Bob@Lab.CONTOSO.test")[0], 250)  # a subdomain, any case
        code, msg = s.rcpt("eve@notcontoso.test")
        self.assertEqual(code, 550, msg)
        self.assertIn(b"5.7.1", msg)
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        s.quit()
        m = self.one_message(timeout=T)
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test", "Bob@Lab.CONTOSO.test"])
        self.assertEqual(self.body_of(m), MSG)
        log = self.log()
        self.assertIn("event=rcpt_refused", log)
        self.assertIn("device=copier3 rcpt=<x@Gmail.test> reason=allow_recipients", log)

    def test_penn_rule_direct(self):
        self.start_penn("direct")
        self.mixed_message()

    def test_penn_rule_direct_then_spool(self):
        self.start_penn("direct-then-spool")
        self.mixed_message()

    def test_penn_rule_spool(self):
        self.start_penn("spool")
        self.mixed_message()

    def test_registered_device_sends_anywhere(self):
        self.start_penn()
        s = self.smtp(source="127.0.0.2")
        s.ehlo("lab.test")
        self.assertEqual(s.mail("lab@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("x@gmail.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        s.quit()
        m = self.one_message(timeout=T)
        self.assertEqual(m["rcpt_tos"], ["x@gmail.test", "alice@contoso.test"])

    def test_every_recipient_refused(self):
        self.start_penn()
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("x@gmail.test")[0], 550)
        self.assertEqual(s.rcpt("contoso.test@gmail.test")[0], 550)
        code, _ = s.docmd("DATA")
        self.assertEqual(code, 554, "DATA without any accepted recipient")
        # the transaction is still open: RSET and a next message work
        self.assertEqual(s.rset()[0], 250)
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        s.quit()
        m = self.one_message(timeout=T)
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test"])

    def test_default_is_anyone(self):
        self.start_proxy()  # no allow_recipients anywhere: as before
        s = self.smtp()
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("x@gmail.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        s.quit()
        self.assertEqual(self.one_message(timeout=T)["rcpt_tos"], ["x@gmail.test"])
        self.assertNotIn("event=rcpt_refused", self.log())


if __name__ == "__main__":
    unittest.main()
