#!/usr/bin/python3
"""Exchange's refusals explained: `smtp-oauth-proxy test ACCOUNT [--to ADDR]` against the rig's
Dovecot (everything works: claims shown, token never shown, the test message arrives), against a
scripted stand-in for Exchange that answers each known refusal (exchange_standin.py), and
against the IdP stand-in refusing with each known AADSTS code. For every refusal the command
prints the meaning and the fix and exits non-zero, and the daemon's log line for a device's
message refused that way carries the same explanation (explain="..." / hint="...").
Same rig and harness as test_relay.py.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_explain.py -v TestExplain.test_exchange_refusals
"""
import os
import re
import smtplib
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from exchange_standin import ExchangeStandin  # noqa: E402
from test_relay import BINARY, MSG, T, ProxyCase  # noqa: E402

EXCHANGE = None

# (phase, Exchange's reply, words of the meaning, words of the fix, the daemon's event)
REFUSALS = [
    ("AUTH", "535 5.7.3 Authentication unsuccessful [DB8PR04CA0011.eurprd04.prod.outlook.com]",
     "refused the token", "New-ServicePrincipal -AppId", "upstream_failed"),
    ("AUTH", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
             "for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
     "disabled for the whole tenant", "Set-TransportConfig -SmtpClientAuthenticationDisabled",
     "upstream_failed"),
    ("AUTH", "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
             "for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.",
     "disabled for the mailbox", "Set-CASMailbox -Identity", "upstream_failed"),
    ("AUTH", "535 5.7.139 Authentication unsuccessful, user is locked by your organization's "
             "security defaults policy. Contact your administrator.",
     "Security Defaults block", "Manage security defaults", "upstream_failed"),
    ("MAIL", "530 5.7.57 Client not authenticated to send mail. [AM0PR02CA0001]",
     "before a successful AUTH", "smtp.office365.com", "mail_refused"),
    ("DATA", "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
     "may not send as this sender", "sender_rewrite", "message"),
    ("DATA", "554 5.2.252 SendAsDenied; scanners@contoso.test not allowed to send as "
             "copier@contoso.test; STOREDRV.Submission.Exception:SendAsDeniedException."
             "MapiExceptionSendAsDenied",
     "SendAsDenied", "Add-RecipientPermission", "message"),
    ("DATA", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=X]",
     "3 connections", "lower the concurrency", "message"),
    ("DATA", "430 4.2.0 STOREDRV; mailbox logon failure; Failed to open mailbox",
     "could not open the mailbox", "Add-MailboxPermission", "message"),
]

# AADSTS code -> (words of the meaning, words of the fix)
AADSTS = {
    7000215: ("client secret is wrong", "New client secret"),
    7000222: ("client secret has expired", "New client secret"),
    700016: ("no application with this client_id", "Application (client) ID"),
    70011: ("scope is not valid", "remove scope"),
}


def setUpModule():
    global EXCHANGE
    test_relay.setUpModule()
    rig = test_relay.RIG
    EXCHANGE = ExchangeStandin(sop_rig.free_port(), rig.cert_file, rig.key_file).start()


def tearDownModule():
    if EXCHANGE is not None:
        EXCHANGE.stop()
    test_relay.tearDownModule()


class TestExplain(ProxyCase):
    def setUp(self):
        super().setUp()
        EXCHANGE.script = {}
        self.outputs = []

    def tearDown(self):
        super().tearDown()
        self.assert_no_token_in("\n".join(self.outputs), "command output")

    def assert_no_token_in(self, text, what):
        st = self.rig.idp_stats()
        self.assertNotIn(self.rig.client_secret, text, "the client secret in the %s" % what)
        for tok in st["issued"]:
            self.assertNotIn(tok, text, "a token in the %s" % what)
            self.assertNotIn(tok.split(".")[2], text, "a token's signature in the %s" % what)
            self.assertNotIn(tok.split(".")[1][:40], text, "a token's payload in the %s" % what)

    def write_config(self, upstream_port=None):
        """The config start_proxy would write, without starting a daemon."""
        self.cfg = os.path.join(self.tmp, "proxy.ini")
        text = sop_rig.proxy_config(self.rig, sop_rig.free_port(),
                                    devices=test_relay.default_devices(),
                                    state_dir=os.path.join(self.tmp, "state"),
                                    upstream_port=upstream_port)
        with open(self.cfg, "w") as f:
            f.write(text)
        os.chmod(self.cfg, 0o600)

    def run_test(self, *args):
        r = subprocess.run([BINARY, "--config", self.cfg, "test", "scanners"] + list(args),
                           capture_output=True, timeout=T * 3, stdin=subprocess.DEVNULL)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        self.outputs += [out, err]
        self.assertNotRegex(err, r"(Sanitizer|runtime error:)", "sanitizer report")
        return r.returncode, out, err

    def device_send(self):
        """One message from the copier; the code of the first refusal (0: all accepted)."""
        s = smtplib.SMTP("localhost", self.port, timeout=T, source_address=("127.0.0.1", 0))
        self.addCleanup(s.close)
        s.ehlo("copier.test")
        for step in (lambda: s.mail("copier@contoso.test"),
                     lambda: s.rcpt("alice@contoso.test"), lambda: s.data(MSG)):
            code, _ = step()
            if code >= 400:
                break
        else:
            code = 0
        try:
            s.quit()
        except smtplib.SMTPException:
            pass
        return code

    def log_since(self, n, pattern):
        """Wait for pattern in the daemon's log after its first n characters."""
        deadline = time.monotonic() + T
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log()[n:])
            if m:
                return m
            time.sleep(0.05)
        self.fail("no log line matching %r; log tail:\n%s" % (pattern, self.log()[-3000:]))

    # -- against the rig's Dovecot: everything works
    def test_success_shows_claims_not_token(self):
        self.write_config()
        rc, out, err = self.run_test()
        self.assertEqual(rc, 0, out + err)
        # a one-hour token, read within the second it was issued, shows 60 (the minutes are
        # whole ones, rounded down)
        self.assertRegex(out, r"token: ok, expires \S+Z \(in (58|59|60) min\)")
        self.assertRegex(out, r"\n  aud +https://outlook\.office365\.com\n")
        self.assertRegex(out, r"\n  roles +SMTP\.SendAsApp\n")
        self.assertRegex(out, r"\n  appid +%s\n" % re.escape(self.rig.client_id))
        self.assertRegex(out, r"\n  tid +[0-9a-f-]{36}\n")
        self.assertRegex(out, r"\n  email +%s\n" % re.escape(self.rig.mailbox))
        self.assertRegex(out, r"\n  exp +\S+Z \(in (58|59|60) min\)\n")
        self.assertIn("-> AUTH XOAUTH2 as %s (token not shown)" % self.rig.mailbox, out)
        self.assertRegex(out, r"\n  <- 235 ")
        self.assertIn("ok: token and AUTH worked", out)
        self.assertNotIn("meaning:", out)
        self.assertEqual(self.rig.sink_messages(), [])
        self.assertTrue(self.rig.idp_stats()["issued"], "no token was issued")

    def test_success_sends_test_message(self):
        self.write_config()
        rc, out, err = self.run_test("--to", "alice@contoso.test")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("the upstream accepted the test message for alice@contoso.test", out)
        self.assertIn("ok: token, AUTH and the test message all worked", out)
        m = self.one_message()
        self.assertEqual(m["mail_from"], self.rig.mailbox)
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test"])
        self.assertIn(b"\r\nSubject: smtp-oauth-proxy test\r\n", m["data"])
        self.assertRegex(m["data"], rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} [\d:]{8} \+0000\r\n")
        self.assertRegex(m["data"], rb"\r\nMessage-ID: <[0-9a-f]{16}\.test@relay\.test>\r\n")
        self.assertIn(b"\r\nFrom: <%s>\r\n" % self.rig.mailbox.encode(), m["data"])

    def test_bad_arguments(self):
        self.write_config()
        for args in ([], ["--to"], ["--to", "a b@x"], ["--from", "<x@y>", "--to", "a@b"]):
            r = subprocess.run([BINARY, "--config", self.cfg, "test"] +
                               (["scanners"] if args else []) + args, capture_output=True,
                               timeout=T, stdin=subprocess.DEVNULL)
            self.assertEqual(r.returncode, 2, args)
        rc, out, err = (lambda r: (r.returncode, r.stdout, r.stderr))(subprocess.run(
            [BINARY, "--config", self.cfg, "test", "nosuch"], capture_output=True, timeout=T))
        self.assertEqual(rc, 1)
        self.assertIn(b"no account", err)

    # -- against the Exchange stand-in: each refusal, from `test` and from the daemon
    def test_exchange_refusals(self):
        self.start_proxy(upstream_port=EXCHANGE.port)  # its config serves `test` too
        for phase, reply, meaning, fix, event in REFUSALS:
            with self.subTest(reply=reply[:20]):
                EXCHANGE.script = {phase: reply}
                rc, out, err = self.run_test("--to", "alice@contoso.test")
                self.assertEqual(rc, 1, out + err)
                self.assertIn("  <- " + reply, out)
                self.assertIn("FAILED at %s" % ("message" if phase == "DATA" else phase), out)
                m = re.search(r"\n  meaning: (.*)\n  fix: +(.*)\n", out)
                self.assertIsNotNone(m, out)
                self.assertIn(meaning, m.group(1))
                self.assertIn(fix, m.group(2))
                self.assertNotIn("{mailbox}", out)
                self.assertIn("test FAILED", out)

                n = len(self.log())
                code = self.device_send()
                self.assertEqual(code // 100, 4 if phase == "AUTH" or reply[0] == "4"
                                 else 5, "device heard %d" % code)
                line = self.log_since(n, r"[^\n]*event=%s [^\n]*" % event).group(0)
                self.assertRegex(line, r'explain="[^"]*%s[^"]*; fix: [^"]*%s' %
                                 (re.escape(meaning), re.escape(fix)))

    def test_unknown_refusal_not_explained(self):
        self.write_config(upstream_port=EXCHANGE.port)
        EXCHANGE.script = {"AUTH": "535 5.7.8 Error: authentication failed: \x1b[31mred"}
        rc, out, err = self.run_test()
        self.assertEqual(rc, 1)
        self.assertIn("  <- 535 5.7.8 Error: authentication failed: ?[31mred", out)
        self.assertIn("(no explanation known for 535 5.7.8)", out)
        self.assertNotIn("\x1b", out)

    # -- the IdP refuses: AADSTS codes, from `test` and from the daemon's token_failed
    def test_aadsts_refusals(self):
        for code, (meaning, fix) in AADSTS.items():
            with self.subTest(aadsts=code):
                self.rig.idp_reset()
                self.rig.idp_control(refuse=code)
                self.write_config()
                rc, out, err = self.run_test()
                self.assertEqual(rc, 1, out + err)
                self.assertIn("token: FAILED", out)
                self.assertIn("aadsts=%d" % code, out)
                m = re.search(r"\n  meaning: (.*)\n  fix: +(.*)\n", out)
                self.assertIsNotNone(m, out)
                self.assertIn(meaning, m.group(1))
                self.assertIn(fix, m.group(2))
                self.assertNotIn("-> connect", out, "no upstream without a token")

                self.start_proxy()
                self.assertEqual(self.device_send() // 100, 4)
                line = self.wait_log(r"[^\n]*event=token_failed [^\n]*aadsts=%d[^\n]*" % code)
                self.assertRegex(line.group(0), r'hint="[^"]*%s[^"]*; fix: [^"]*%s' %
                                 (re.escape(meaning), re.escape(fix)))
                self.stop_proxy()
                self.proxy = None


if __name__ == "__main__":
    unittest.main()
