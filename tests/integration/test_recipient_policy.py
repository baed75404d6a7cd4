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
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
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


DNSMASQ = "/usr/sbin/dnsmasq"


class TestFcrdns(ProxyCase):
    """require_fcrdns against a real DNS server on loopback (dnsmasq): copier.test is 127.0.0.2
    both ways; 127.0.0.3 and 127.0.0.4 claim liar.test, which is 127.0.0.9."""

    @classmethod
    def setUpClass(cls):
        if not os.access(DNSMASQ, os.X_OK):
            raise RuntimeError("%s is missing: scripts/install-deps.sh installs dnsmasq-base"
                               % DNSMASQ)
        cls.dns_port = sop_rig.free_port()
        cls.dns_log = open(os.path.join(test_relay.RIG.dir, "dnsmasq.log"), "ab")
        cls.dns = subprocess.Popen(
            [DNSMASQ, "--no-daemon", "--port=%d" % cls.dns_port, "--listen-address=127.0.0.1",
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             "--log-queries", "--local=/test/", "--local=/127.in-addr.arpa/",
             "--host-record=copier.test,127.0.0.2",
             "--ptr-record=3.0.0.127.in-addr.arpa,liar.test",
             "--ptr-record=4.0.0.127.in-addr.arpa,liar.test",
             "--host-record=liar.test,127.0.0.9"],
            stdin=subprocess.DEVNULL, stdout=cls.dns_log, stderr=cls.dns_log,
            start_new_session=True)
        cls.addClassCleanup(cls.stop_dns)
        sop_rig.wait_port(cls.dns_port, timeout=test_relay.T, proc=cls.dns)

    @classmethod
    def stop_dns(cls):
        p, cls.dns = cls.dns, None
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        cls.dns_log.close()

    def start_fcrdns(self):
        dev = {"account": "scanners", "allow_recipients": "*", "require_fcrdns": "external"}
        devices = [("copier", dict(dev, address="127.0.0.2")),
                   ("liar", dict(dev, address="127.0.0.3")),
                   ("liar2", dict(dev, address="127.0.0.4", require_fcrdns="session"))]
        self.start_proxy(devices=devices,
                         proxy_extra={"allow_recipients": PENN,
                                      "dns_server": "127.0.0.1:%d" % self.dns_port})

    def test_confirmed_device_sends_anywhere(self):
        self.start_fcrdns()
        s = self.smtp(source="127.0.0.2")
        s.ehlo("copier.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("x@gmail.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        s.quit()
        self.assertEqual(self.one_message(timeout=T)["rcpt_tos"],
                         ["x@gmail.test", "alice@contoso.test"])
        self.assertRegex(self.log(), r"event=fcrdns session=\S+ ip=127\.0\.0\.2 "
                         r"name=copier\.test result=pass")

    def test_liar_refused_for_external_recipients(self):
        self.start_fcrdns()
        s = self.smtp(source="127.0.0.3")
        s.ehlo("liar.test")
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)  # not external
        code, msg = s.rcpt("x@gmail.test")
        self.assertEqual((code, msg), (550, b"5.7.25 Reverse DNS of [127.0.0.3] does not match"))
        self.assertEqual(s.rcpt("bob@lab.contoso.test")[0], 250)
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        # a second message in the session: the verdict holds
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("y@gmail.test")[0], 550)
        s.rset()
        s.quit()
        self.assertEqual(self.one_message(timeout=T)["rcpt_tos"],
                         ["alice@contoso.test", "bob@lab.contoso.test"])
        self.assertRegex(self.log(), r"event=fcrdns session=\S+ ip=127\.0\.0\.3 "
                         r"name=liar\.test result=fail reason=\"the PTR name resolves elsewhere\"")

    def test_liar_session_refused_at_mail(self):
        self.start_fcrdns()
        s = self.smtp(source="127.0.0.4")
        s.ehlo("liar.test")
        code, msg = s.mail("copier@contoso.test")
        self.assertEqual((code, msg), (550, b"5.7.25 Reverse DNS of [127.0.0.4] does not match"))
        code, msg = s.mail("copier@contoso.test")
        self.assertEqual(code, 550, msg)
        s.quit()
        self.assert_nothing_relayed()


class TestFcrdnsTimeout(ProxyCase):
    def test_silent_dns_server_counts_as_failure(self):
        """A name server that never answers: MAIL waits the bound (10 s), then goes on with the
        check failed (logged), so external recipients are refused."""
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))  # reads nothing, answers nothing
        self.start_proxy(
            devices=[("copier", {"address": "127.0.0.2", "account": "scanners",
                                 "allow_recipients": "*", "require_fcrdns": "yes"})],
            proxy_extra={"allow_recipients": PENN,
                         "dns_server": "127.0.0.1:%d" % silent.getsockname()[1]})
        s = self.smtp(source="127.0.0.2")
        s.ehlo("copier.test")
        t0 = time.monotonic()
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        waited = time.monotonic() - t0
        self.assertGreater(waited, 9.0)
        self.assertLess(waited, T)
        self.assertEqual(s.rcpt("x@gmail.test")[0], 550)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        self.assertEqual(s.data(MSG)[0], 250)
        s.quit()
        self.assertEqual(self.one_message(timeout=T)["rcpt_tos"], ["alice@contoso.test"])
        self.assertIn('ip=127.0.0.2 result=fail reason="no answer in time"', self.log())


if __name__ == "__main__":
    unittest.main()
