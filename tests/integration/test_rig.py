#!/usr/bin/python3
"""The integration rig itself, checked with direct clients (no proxy involved):
the IdP stand-in, Dovecot submission with XOAUTH2/OAUTHBEARER, the sink, the raw upstream.

Run alone:  /usr/bin/python3 tests/integration/test_rig.py [-v] [TestRig.test_name]
"""
import base64
import json
import os
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import unittest
import urllib.error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402

import jwt  # noqa: E402

T = 20  # seconds: every network wait in here is bounded by this


class RigCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rig = sop_rig.Rig()
        cls.rig.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.rig.stop()

    def setUp(self):
        self.rig.idp_reset()
        self.rig.sink_clear()

    def smtp(self, port=None, host="localhost", auth=True, token=None, user=None):
        """smtplib session to Dovecot: EHLO, STARTTLS (verified), EHLO, AUTH XOAUTH2 via 334."""
        s = smtplib.SMTP(host, port or self.rig.dovecot_port, timeout=T)
        self.addCleanup(s.close)
        s.ehlo("tester.test")
        s.starttls(context=self.rig.ssl_context())
        s.ehlo("tester.test")
        if auth:
            token = token or self.rig.fetch_token()["access_token"]
            code, _ = s.docmd("AUTH", "XOAUTH2")
            self.assertEqual(code, 334)
            code, msg = s.docmd(sop_rig.xoauth2_b64(user or self.rig.mailbox, token))
            self.assertEqual(code, 235, msg)
        return s


class TestIdp(RigCase):
    def test_token_shape(self):
        r = self.rig.fetch_token()
        self.assertEqual(r["token_type"], "Bearer")
        self.assertEqual(r["expires_in"], r["ext_expires_in"])
        self.assertGreater(r["expires_in"], 3000)
        tok = r["access_token"]
        # like Entra's: 1.5-2.5 KB, so XOAUTH2 must go through the 334 continuation
        self.assertTrue(1500 <= len(tok) <= 2500, len(tok))
        hdr = jwt.get_unverified_header(tok)
        self.assertEqual(hdr["alg"], "RS256")
        self.assertTrue(hdr["kid"])
        with open(os.path.join(self.rig.keydir, "default", "RS256", hdr["kid"]), "rb") as f:
            claims = jwt.decode(tok, f.read(), algorithms=["RS256"],
                                audience="https://outlook.office365.com")
        self.assertEqual(claims["email"], self.rig.mailbox)
        self.assertEqual(claims["appid"], self.rig.client_id)
        self.assertTrue(claims["iss"].startswith("https://sts.windows.net/"))
        now = time.time()
        self.assertTrue(claims["nbf"] <= now <= claims["exp"])
        self.assertEqual(self.rig.idp_stats()["requests"], {self.rig.client_id: 1})

    def test_wrong_secret_is_entra_401(self):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.rig.fetch_token(secret="wrong")
        self.assertEqual(cm.exception.code, 401)
        body = json.loads(cm.exception.read())
        self.assertEqual(body["error"], "invalid_client")
        self.assertTrue(body["error_description"].startswith("AADSTS7000215: Invalid client "
                                                             "secret provided"))
        self.assertEqual(body["error_codes"], [7000215])
        self.assertEqual(self.rig.idp_stats()["issued"], [])

    def test_wrong_scope_refused(self):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.rig.fetch_token(scope="https://graph.microsoft.com/.default")
        self.assertEqual(cm.exception.code, 400)
        self.assertEqual(json.loads(cm.exception.read())["error"], "invalid_scope")

    def test_modes(self):
        self.rig.idp_control(mode="error500")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.rig.fetch_token()
        self.assertEqual(cm.exception.code, 500)
        self.rig.idp_control(mode="down")
        with self.assertRaises((ConnectionError, urllib.error.URLError, OSError)):
            self.rig.fetch_token()
        self.rig.idp_control(mode="ok", expires_in=120)
        self.assertEqual(self.rig.fetch_token()["expires_in"], 120)
        self.rig.idp_control(expires_in=3599)
        self.assertEqual(self.rig.idp_stats()["total"], 3)

    def test_bad_first_token_only_first(self):
        self.rig.idp_control(mode="bad_first_token")
        t1 = self.rig.fetch_token()["access_token"]
        t2 = self.rig.fetch_token()["access_token"]
        kid = jwt.get_unverified_header(t1)["kid"]
        self.assertEqual(kid, jwt.get_unverified_header(t2)["kid"])
        with open(os.path.join(self.rig.keydir, "default", "RS256", kid), "rb") as f:
            key = f.read()
        with self.assertRaises(jwt.InvalidSignatureError):
            jwt.decode(t1, key, algorithms=["RS256"], audience="https://outlook.office365.com")
        jwt.decode(t2, key, algorithms=["RS256"], audience="https://outlook.office365.com")

    def test_stop_and_start(self):
        self.smtp().quit()  # Dovecot has the signing key cached now
        self.rig.idp_stop()
        try:
            with self.assertRaises((urllib.error.URLError, ConnectionError)):
                self.rig.fetch_token(timeout=3)
        finally:
            self.rig.idp_start()
        # a fresh process, the same signing key (kept in a file): Dovecot still takes its tokens
        s = self.smtp()
        s.quit()


class TestDovecot(RigCase):
    def test_tls_verified_by_name_and_ip(self):
        for host in ("localhost", "127.0.0.1"):
            s = smtplib.SMTP(host, self.rig.dovecot_port, timeout=T)
            try:
                s.ehlo("t")
                self.assertTrue(s.has_extn("starttls"))
                s.starttls(context=self.rig.ssl_context())
                cert = s.sock.getpeercert()
                self.assertIn(("DNS", "localhost"), cert["subjectAltName"])
                self.assertIn(("IP Address", "127.0.0.1"), cert["subjectAltName"])
                s.ehlo("t")
                self.assertIn("XOAUTH2", s.esmtp_features["auth"].split())
                self.assertIn("OAUTHBEARER", s.esmtp_features["auth"].split())
            finally:
                s.close()
        # a client that trusts only the system store refuses the rig's certificate
        s = smtplib.SMTP("localhost", self.rig.dovecot_port, timeout=T)
        try:
            s.ehlo("t")
            with self.assertRaises(ssl.SSLCertVerificationError):
                s.starttls(context=ssl.create_default_context())
        finally:
            s.close()

    def test_xoauth2_continuation_relays_byte_for_byte(self):
        s = self.smtp()
        body = (b"From: Copier <copier@contoso.test>\r\nTo: a@contoso.test\r\n"
                b"Subject: scan\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                b"\r\n.a line that starts with a dot\r\n\xc3\xa4\xc3\xb6\xc3\xbc 8-bit\r\n"
                b"..two dots\r\nlast\r\n")
        # smtplib dot-stuffs on the way out; the sink must see the original
        s.sendmail("copier@contoso.test", ["a@contoso.test"], body,
                   mail_options=["BODY=8BITMIME"])
        s.quit()
        msgs = self.rig.sink_wait(1)
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(m["mail_from"], "copier@contoso.test")
        self.assertEqual(m["rcpt_tos"], ["a@contoso.test"])
        self.assertIn("BODY=8BITMIME", m["mail_options"])
        received, rest = sop_rig.split_received(m["data"])
        self.assertEqual(rest, body)
        # what Dovecot adds: exactly one Received: header, nothing else
        self.assertRegex(received, rb"\AReceived: from tester\.test \(\[127\.0\.0\.1\]\)\r\n"
                                   rb"\tby localhost with ESMTPSA\r\n\tid \S+\r\n"
                                   rb"\t\(envelope-from <copier@contoso\.test>\)\r\n"
                                   rb"\tfor <a@contoso\.test>; [^\r\n]+\r\n\Z")

    def test_initial_response_too_long_for_dovecot(self):
        # Why the proxy must use the 334 continuation for Entra-sized tokens.
        s = self.smtp(auth=False)
        tok = self.rig.fetch_token()["access_token"]
        code, msg = s.docmd("AUTH", "XOAUTH2 " + sop_rig.xoauth2_b64(self.rig.mailbox, tok))
        self.assertEqual((code, msg), (500, b"5.5.2 Line too long"))

    def test_untrusted_key_refused_535(self):
        self.rig.idp_control(mode="bad_first_token")
        bad = self.rig.fetch_token()["access_token"]
        s = self.smtp(auth=False)
        self.assertEqual(s.docmd("AUTH", "XOAUTH2")[0], 334)
        code, msg = s.docmd(sop_rig.xoauth2_b64(self.rig.mailbox, bad))
        self.assertEqual(code, 334)
        self.assertEqual(json.loads(base64.b64decode(msg))["status"], "401")
        code, msg = s.docmd("")
        self.assertEqual(code, 535, msg)
        # and then a good token works on the same connection
        good = self.rig.fetch_token()["access_token"]
        self.assertEqual(s.docmd("AUTH", "XOAUTH2")[0], 334)
        self.assertEqual(s.docmd(sop_rig.xoauth2_b64(self.rig.mailbox, good))[0], 235)
        self.assertIn("Bad signature", self.rig.dovecot_log())

    def test_user_must_match_claim(self):
        tok = self.rig.fetch_token()["access_token"]
        s = self.smtp(auth=False)
        self.assertEqual(s.docmd("AUTH", "XOAUTH2")[0], 334)
        self.assertEqual(s.docmd(sop_rig.xoauth2_b64("other@contoso.test", tok))[0], 334)
        self.assertEqual(s.docmd("")[0], 535)

    def test_mail_without_auth_refused(self):
        s = self.smtp(auth=False)
        code, _ = s.docmd("MAIL FROM:<a@contoso.test>")
        self.assertEqual(code, 530)

    def test_oauthbearer_with_curl(self):
        tok = self.rig.fetch_token()["access_token"]
        msg = b"Subject: curl\r\n\r\nvia curl and OAUTHBEARER\r\n"
        r = subprocess.run(
            ["curl", "-sS", "--max-time", str(T), "--url",
             "smtp://localhost:%d" % self.rig.dovecot_port, "--ssl-reqd", "--cacert",
             self.rig.ca_file, "--user", self.rig.mailbox + ":", "--oauth2-bearer", tok,
             "--mail-from", "curl@contoso.test", "--mail-rcpt", "b@contoso.test",
             "--upload-file", "-"], input=msg, capture_output=True, timeout=T + 5)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.rig.sink_wait(1)
        self.assertEqual(len(m), 1)
        self.assertEqual(sop_rig.split_received(m[0]["data"])[1], msg)
        self.assertIn("method=OAUTHBEARER", self.rig.dovecot_log())

    def test_recipients_passed_through(self):
        s = self.smtp()
        s.mail("")  # null sender
        self.assertEqual(s.rcpt("a@contoso.test")[0], 250)
        code, msg = s.rcpt("refuse@contoso.test")
        self.assertEqual(code, 550)
        self.assertTrue(msg.startswith(b"5.1.1 "), msg)
        self.assertEqual(s.rcpt("tempfail@contoso.test")[0], 451)
        self.assertEqual(s.rcpt("b@contoso.test")[0], 250)
        code, msg = s.data(b"Subject: multi\r\n\r\nx\r\n")
        self.assertEqual(code, 250)
        self.assertRegex(msg, rb"^2\.0\.0 Ok: queued as SINK\d+$")
        s.quit()
        m = self.rig.sink_wait(1)
        self.assertEqual(m[0]["mail_from"], "")
        self.assertEqual(m[0]["rcpt_tos"], ["a@contoso.test", "b@contoso.test"])
        received, rest = sop_rig.split_received(m[0]["data"])
        self.assertEqual(rest, b"Subject: multi\r\n\r\nx\r\n")
        self.assertIn(b"(envelope-from <>)", received)

    def test_dovecot_ends_data_at_bare_lf_dot(self):
        # Dovecot 2.3 takes "\n.\n" (and "\r\n.\n", "\n.\r\n") as the end of DATA, so whatever
        # the proxy lets through shows up at the sink as a cut-off message: the smuggling test in
        # test_relay depends on this.
        s = self.smtp()
        s.mail("a@contoso.test")
        s.rcpt("b@contoso.test")
        self.assertEqual(s.docmd("DATA")[0], 354)
        s.send(b"Subject: s\r\n\r\nbefore\n.\nNOOP\r\nafter\r\n.\r\n")
        self.assertEqual(s.getreply()[0], 250)   # message ended at \n.\n
        self.assertEqual(s.getreply()[0], 250)   # NOOP ran as a command
        m = self.rig.sink_wait(1)
        self.assertEqual(sop_rig.split_received(m[0]["data"])[1], b"Subject: s\r\n\r\nbefore\r\n")

    def test_20mb_message(self):
        s = self.smtp()
        big = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n") * (20 * 1024 * 1024 // 74)
        s.sendmail("a@contoso.test", ["b@contoso.test"], b"Subject: big\r\n\r\n" + big)
        s.quit()
        m = self.rig.sink_wait(1)
        self.assertEqual(sop_rig.split_received(m[0]["data"])[1], b"Subject: big\r\n\r\n" + big)

    def test_relay_down_is_4xx(self):
        self.rig.sink_stop()
        try:
            s = self.smtp()
            code, msg = s.docmd("MAIL FROM:<a@contoso.test>")
            self.assertEqual(code // 100, 4, msg)
        finally:
            self.rig.sink_start()

    def test_concurrent_sessions(self):
        # 20 sessions of one user at once (mail_max_userip_connections is raised for load)
        tok = self.rig.fetch_token()["access_token"]
        sessions = [self.smtp(token=tok) for _ in range(20)]
        for i, s in enumerate(sessions):
            s.sendmail("a@contoso.test", ["b@contoso.test"], b"Subject: %d\r\n\r\nx\r\n" % i)
        for s in sessions:
            s.quit()
        self.assertEqual(len(self.rig.sink_wait(20)), 20)

    def test_stop_and_start(self):
        self.rig.dovecot_stop()
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.rig.dovecot_port), timeout=3).close()
        self.rig.dovecot_start()
        self.smtp().quit()


class TestRawUpstream(RigCase):
    def raw(self):
        s = smtplib.SMTP("localhost", self.rig.raw_port, timeout=T)
        self.addCleanup(s.close)
        s.ehlo("tester.test")
        return s

    def test_requires_starttls_and_xoauth2(self):
        s = self.raw()
        self.assertNotIn("auth", s.esmtp_features)
        self.assertEqual(s.docmd("MAIL FROM:<a@b>")[0], 530)
        s.starttls(context=self.rig.ssl_context())
        s.ehlo("tester.test")
        self.assertEqual(s.esmtp_features["auth"].split(), ["XOAUTH2"])
        self.assertIn("enhancedstatuscodes", s.esmtp_features)
        self.assertEqual(s.docmd("MAIL FROM:<a@b>")[0], 530)

    def test_exact_bytes_and_exchange_535(self):
        s = self.raw()
        s.starttls(context=self.rig.ssl_context())
        s.ehlo("tester.test")
        self.rig.idp_control(mode="bad_first_token")
        bad = self.rig.fetch_token()["access_token"]
        self.assertEqual(s.docmd("AUTH", "XOAUTH2")[0], 334)
        self.assertEqual(s.docmd(sop_rig.xoauth2_b64(self.rig.mailbox, bad)),
                         (535, b"5.7.3 Authentication unsuccessful"))
        good = self.rig.fetch_token()["access_token"]
        # initial response on the AUTH line is fine here (like Exchange)
        self.assertEqual(s.docmd("AUTH", "XOAUTH2 " + sop_rig.xoauth2_b64(self.rig.mailbox,
                                                                          good))[0], 235)
        # raw bytes (smtplib.sendmail would repair line endings itself)
        s.mail("a@contoso.test")
        s.rcpt("b@contoso.test")
        self.assertEqual(s.docmd("DATA")[0], 354)
        s.send(b"Subject: raw\r\n\r\nbare\nlf and lone\rcr kept\r\n..dot\r\n.\r\n")
        self.assertEqual(s.getreply()[0], 250)
        s.quit()
        m = self.rig.raw_wait(1)
        # the raw upstream adds nothing and repairs nothing: the client's exact bytes
        self.assertEqual(m[0]["data"], b"Subject: raw\r\n\r\nbare\nlf and lone\rcr kept\r\n"
                                       b".dot\r\n")
        self.assertEqual(self.rig.raw.handler.n_auth_failures, 1)


if __name__ == "__main__":
    sop_rig.terminate_on_sigterm()
    unittest.main(verbosity=2)
