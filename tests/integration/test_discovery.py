#!/usr/bin/python3
"""provider = oauth2 with issuer = ..., the real binary (same rig and harness as test_relay.py):
at start-up the proxy reads the issuer's OpenID Connect discovery document from the IdP
stand-in (idp_discovery.py), takes the token endpoint from it, and relays through Dovecot with
the token it gets there. A document that names another issuer (a lying or mixed-up IdP) stops
both --check and the daemon with a line naming the account, the issuer and why.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_discovery.py -v TestDiscovery.test_relay_via_discovery
"""
import os
import re
import smtplib
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from test_relay import BINARY, MSG, QUEUED_RE, T, ProxyCase, default_devices  # noqa: E402

SCOPE = "https://outlook.office365.com/.default"


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestDiscovery(ProxyCase):
    def issuer(self):
        return "%s/%s/v2.0" % (self.rig.idp_base, self.rig.tenant)

    def to_issuer(self, text, issuer=None):
        """The generated account (provider = microsoft, tenant, token_url) as provider = oauth2
        with issuer and an explicit scope: the token endpoint comes only from discovery."""
        new = text.replace("provider = microsoft\ntenant = %s\n" % self.rig.tenant,
                           "provider = oauth2\nissuer = %s\nscope = %s\n"
                           % (issuer or self.issuer(), SCOPE))
        new = new.replace("token_url = %s\n" % self.rig.token_url, "")
        self.assertNotIn("token_url", new)
        self.assertNotIn("tenant", new)
        return new

    def config_text(self):
        return self.to_issuer(sop_rig.proxy_config(
            self.rig, sop_rig.free_port(), devices=default_devices(),
            state_dir=os.path.join(self.tmp, "state")))

    def run_binary(self, text, *args):
        """Write text as a config and run the binary on it; (rc, stdout + stderr)."""
        path = os.path.join(self.tmp, "discovery.ini")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        r = subprocess.run([BINARY, "--config", path] + list(args), capture_output=True,
                           timeout=T, stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")

    def test_relay_via_discovery(self):
        self.start_proxy(edit=self.to_issuer)
        self.wait_log(r"event=discovered account=scanners issuer=%s token_url=%s "
                      r"device_authorization_url=%s/%s/oauth2/v2\.0/devicecode"
                      % (re.escape(self.issuer()), re.escape(self.rig.token_url),
                         re.escape(self.rig.idp_base), re.escape(self.rig.tenant)))
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
        # one discovery document at start-up, one token from the endpoint it named
        self.assertEqual(stats["discovery_gets"], 1)
        self.assertEqual(stats["requests"], {self.rig.client_id: 1})
        self.assertEqual(stats["errors"], [])
        log = self.log()
        self.assertRegex(log, r"event=token_request account=scanners grant=client_credentials "
                              r"credential=secret url=%s" % re.escape(self.rig.token_url))
        self.assertIn("Login: user=<%s>, method=XOAUTH2" % self.rig.mailbox,
                      self.rig.dovecot_log())
        self.stop_proxy()  # checks the log for secrets and tokens, and a clean exit
        self.assertEqual(self.rig.idp_stats()["discovery_gets"], 1)

    def test_check_discovers(self):
        rc, out = self.run_binary(self.config_text(), "--check")
        self.assertEqual(rc, 0, out)
        self.assertIn("ok", [line.strip() for line in out.splitlines()], out)
        self.assertIn("event=discovered account=scanners", out)
        self.assertEqual(self.rig.idp_stats()["discovery_gets"], 1)
        self.assertEqual(self.rig.idp_stats()["requests"], {})

    def test_lying_issuer_refused(self):
        evil = "%s/evil-tenant/v2.0" % self.rig.idp_base
        self.rig.idp_control(discovery_issuer=evil)
        text = self.config_text()
        want = ("account scanners: issuer %s: the discovery document names issuer \"%s\", not "
                "the configured one" % (self.issuer(), evil))
        for args in (["--check"], []):
            rc, out = self.run_binary(text, *args)
            self.assertNotEqual(rc, 0, out)
            self.assertIn(want, out)
            self.assertRegex(out, r"discovery\.ini line \d+: account scanners: ")
            self.assertNotIn("\nok\n", "\n" + out)
            self.assertNotIn("event=ready", out)
            self.assertNotIn(self.rig.client_secret, out)
        stats = self.rig.idp_stats()
        self.assertEqual(stats["discovery_gets"], 2)
        self.assertEqual(stats["requests"], {}, "a token request after a refused document")

    def test_unknown_issuer_path(self):
        # An issuer the IdP has no document for: the daemon names the URL and the status.
        issuer = "%s/%s/v1.0" % (self.rig.idp_base, self.rig.tenant)
        rc, out = self.run_binary(self.to_issuer(sop_rig.proxy_config(
            self.rig, sop_rig.free_port(), devices=default_devices(),
            state_dir=os.path.join(self.tmp, "state")), issuer=issuer))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("account scanners: issuer %s: %s/.well-known/openid-configuration: "
                      "HTTP 404" % (issuer, issuer), out)
        self.assertNotIn(self.rig.client_secret, out)


if __name__ == "__main__":
    sop_rig.terminate_on_sigterm()
    unittest.main(verbosity=2)
