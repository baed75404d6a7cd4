#!/usr/bin/python3
"""Issue 11's upstream kinds with the real binary against real peers on loopback:

  * a password upstream: Dovecot's submission server with AUTH PLAIN and LOGIN from a
    passwd-file (STARTTLS on one port, TLS from the first byte on another), relaying to the rig's
    sink: the message arrives byte for byte; a wrong password gives the device 454 and a log
    line that names the cause and never the password;
  * direct send: a private Postfix as the tenant's MX endpoint (no AUTH; STARTTLS offered on one
    port, not at all on another, SMTPS on a third): a recipient in the accepted domain arrives,
    one outside it is refused 550 5.7.54 and explained; opportunistic TLS with and without
    STARTTLS; upstream_auth_policy enabled (sends without AUTH, logged) and required (refuses);
  * a certificate-based connector: the same Postfix relays to an outside domain only for the
    client certificate it trusts (permit_tls_clientcerts); without it 550 5.7.64, explained;
    --check refuses a key that does not match its certificate;
  * http_proxy: a forward-proxy stand-in that every token (and discovery) request goes through,
    loopback IdP included, and `authorize`'s device code flow too; the account's own http_proxy
    wins over [proxy]'s; without one the environment's http_proxy still never applies to a
    loopback IdP;
  * `test ACCOUNT [--to ADDR]` on each kind: a password account (AUTH PLAIN, the password never
    shown), direct send (an outside recipient's 550 5.7.54 explained), the connector with its
    certificate, opportunistic TLS to a server without STARTTLS; and delivery = direct logs a
    refused recipient with its explanation (event=rcpt_refused);
  * every address: a name whose first address ([::1], where nothing listens) refuses: the
    proxy, in a private mount namespace whose /etc/resolv.conf points at a DNS stand-in on
    127.0.0.1 (dns_standin.py) answering AAAA ::1 and A 127.0.0.1, logs that address and
    delivers over the second. The namespace changes nothing outside the proxy's process; the
    IPv6-first order is the proxy's own (RFC 8305), so the first address always fails.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \\
              tests/integration/test_upstream_kinds.py -v TestDirectSend
"""
import base64
import os
import re
import secrets
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import postfix_standin  # noqa: E402
from dns_standin import DnsStandin  # noqa: E402
from exchange_standin import ExchangeStandin  # noqa: E402
from http_proxy_standin import HttpProxy  # noqa: E402

BINARY = os.environ.get("SOP_BINARY", "")
T = 20
BUDGET = 480
T0 = time.monotonic()

RIG = None
PWD = None       # the password Dovecot
PF = None        # the Postfix MX / connector
PF_CA = None
CONNECTOR_CERT = CONNECTOR_KEY = None
USER = "relay-user"
PASSWORD = "Relay-" + secrets.token_urlsafe(12)
WRONG_PASSWORD = "Wrong-" + secrets.token_urlsafe(12)
SKIP_POSTFIX = ""

MSG_TMPL = ("From: <copier@contoso.test>\r\nTo: <{to}>\r\nSubject: kinds {tag}\r\n"
            "Message-ID: <{tag}@copier.contoso.test>\r\nDate: Sun, 06 Dec 2026 04:00:00 +0000\r\n"
            "\r\nScan {tag}.\r\n.leading dot line\r\nlast line\r\n")

PASSWORD_DOVECOT_CONF = """\
# smtp-oauth-proxy test: a private Dovecot submission server taking AUTH PLAIN and LOGIN.
instance_name = sop-kinds-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
protocols = submission
listen = 127.0.0.1
hostname = localhost
submission_host = localhost
shutdown_clients = yes
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
  chroot =
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
submission_relay_host = 127.0.0.1
submission_relay_port = {sink_port}
submission_relay_ssl = no
submission_relay_connect_timeout = 5s
submission_max_mail_size = 157286400
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener submissions {{
    address = 127.0.0.1
    port = {smtps_port}
    ssl = yes
  }}
}}
"""


class PasswordDovecot(sop_rig.Dovecot):
    """sop_rig's Dovecot instance with a passwd-file passdb (PLAIN, LOGIN) and an SMTPS port."""

    def __init__(self, d, cert, key, sink_port):
        port, self.smtps_port = sop_rig.free_port(), sop_rig.free_port()
        super().__init__(d, port, cert, key, sink_port, keys=d)
        with open(self.conf, "w") as f:
            f.write(PASSWORD_DOVECOT_CONF.format(d=d, port=port, smtps_port=self.smtps_port,
                                                 cert=cert, key=key, sink_port=sink_port))
        users = os.path.join(d, "users")
        with open(users, "w") as f:
            f.write("%s:{PLAIN}%s::::::\n" % (USER, PASSWORD))
        os.chmod(users, 0o644)


def setUpModule():
    global RIG, PWD, PF, PF_CA, CONNECTOR_CERT, CONNECTOR_KEY, SKIP_POSTFIX
    if not BINARY or not os.access(BINARY, os.X_OK):
        raise RuntimeError("SOP_BINARY is not set or not executable (%r)" % BINARY)
    RIG = sop_rig.Rig()
    RIG.__enter__()
    try:
        PWD = PasswordDovecot(os.path.join(RIG.dir, "pwdovecot"), RIG.cert_file, RIG.key_file,
                              RIG.sink_port)
        PWD.start()
        SKIP_POSTFIX = postfix_standin.available()
        if not SKIP_POSTFIX:
            pfcerts = os.path.join(RIG.dir, "pfcerts")
            os.makedirs(pfcerts)
            PF_CA, cert, key = sop_rig.make_certs(
                pfcerts, names=("mx.contoso.test", "dual.sop.test", "localhost"),
                ips=("127.0.0.1",))
            CONNECTOR_CERT, CONNECTOR_KEY = sop_rig.make_client_cert(RIG.dir, "connector")
            PF = postfix_standin.Postfix(os.path.join(RIG.dir, "postfix"), RIG.sink_port, cert,
                                         key, trusted_client_certs=[CONNECTOR_CERT])
            PF.start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    for x in (PF, PWD):
        if x is not None:
            try:
                x.stop()
            except Exception as e:  # keep stopping the rest
                sys.stderr.write("stop: %r\n" % (e,))
    if RIG is not None:
        RIG.stop()


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)


def strip_received(data):
    """The message as the device sent it: the upstream's one Received: header taken off."""
    received, rest = sop_rig.split_received(data)
    return received, rest


class NsProxyProcess(sop_rig.ProxyProcess):
    """The proxy in a private mount namespace where resolv is bind-mounted over /etc/resolv.conf
    (root only, like test_journal's namespace). Nothing outside the process sees it: unshare and
    sh exec in place, so the proxy keeps the process (SIGTERM reaches it, PDEATHSIG holds)."""

    def __init__(self, binary, config_path, log_path, resolv):
        super().__init__(binary, config_path, log_path)
        self.resolv = resolv

    def start(self, ports=(), timeout=15.0):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
             self.resolv, self.binary, "--config", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
            start_new_session=True, preexec_fn=sop_rig._die_with_parent)
        deadline = time.monotonic() + timeout
        while "event=ready" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("proxy (in its namespace) not ready; log:\n%s"
                                   % self.log()[-4000:])
            time.sleep(0.05)
        for p in ports:
            sop_rig.wait_port(p, timeout=max(1.0, deadline - time.monotonic()), proc=self.proc)
        return self


class KindsCase(unittest.TestCase):
    """A proxy per test with one device (127.0.0.1, by address) sending as the account under
    test; helpers to send and to read what arrived."""

    def setUp(self):
        if time.monotonic() - T0 > BUDGET:
            self.fail("time budget of %ds used up by earlier tests" % BUDGET)
        self.rig = RIG
        if self.rig.idp_proc is None:
            self.rig.idp_start()
        self.rig.idp_reset()
        self.rig.sink_clear()
        self.tmp = tempfile.mkdtemp(prefix="kinds-", dir=self.rig.dir)
        self.proxy = None
        self.pw_file = os.path.join(self.tmp, "relay.password")
        write_secret(self.pw_file, PASSWORD)
        self.extra_secrets = []

    def tearDown(self):
        if self.proxy is not None:
            rc = self.proxy.stop()
            log = self.proxy.log()
            self.assert_no_secrets(log)
            self.assertNotRegex(log, r"(Sanitizer|runtime error:)", "sanitizer report in the log")
            self.assertIn(rc, (0, None), "the proxy did not exit cleanly on SIGTERM")

    def need_postfix(self):
        if SKIP_POSTFIX:
            self.skipTest(SKIP_POSTFIX)

    def assert_no_secrets(self, log):
        for secret in [PASSWORD, WRONG_PASSWORD, self.rig.client_secret] + self.extra_secrets:
            self.assertNotIn(secret, log, "a password or secret in the proxy log")
            self.assertNotIn(base64.b64encode(secret.encode()).decode(), log,
                             "a base64 password in the proxy log")
        for user_pw in ((USER, PASSWORD), (USER, WRONG_PASSWORD)):
            plain = base64.b64encode(("\0%s\0%s" % user_pw).encode()).decode()
            self.assertNotIn(plain, log, "an AUTH PLAIN payload in the proxy log")
        try:
            issued = self.rig.idp_stats()["issued"]
        except OSError:
            issued = []
        for tok in issued:
            self.assertNotIn(tok, log, "an access token in the proxy log")

    # -- config and process
    def config_text(self, account, proxy_extra="", upstream_extra="", name="kinds"):
        self.port = sop_rig.free_port()
        state = os.path.join(self.tmp, "state")
        os.makedirs(state, mode=0o700, exist_ok=True)
        return ("[proxy]\nlisten = 127.0.0.1:%d\nhostname = relay.test\nlog_level = debug\n"
                "state_dir = %s\ncommand_timeout = 30s\n%s\n"
                "[upstream]\nca_file = %s\nconnect_timeout = 10s\ntimeout = 30s\n%s\n"
                "[account %s]\nmailbox = copier@contoso.test\nrate_limit = 0\n%s\n"
                "[device copier]\naddress = 127.0.0.1\naccount = %s\n"
                % (self.port, state, proxy_extra, self.rig.ca_file, upstream_extra, name,
                   account, name))

    def write_config(self, text):
        self.cfg = os.path.join(self.tmp, "proxy.ini")
        with open(self.cfg, "w") as f:
            f.write(text)
        os.chmod(self.cfg, 0o600)
        return self.cfg

    def start_proxy(self, account, proxy_cls=sop_rig.ProxyProcess, env=None, **kw):
        self.write_config(self.config_text(account, **kw))
        log = os.path.join(self.tmp, "proxy-%d.log" % self.port)
        if proxy_cls is sop_rig.ProxyProcess:
            self.proxy = sop_rig.ProxyProcess(BINARY, self.cfg, log)
        else:
            self.proxy = proxy_cls(BINARY, self.cfg, log)
        if env is not None:
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update(env)
            try:
                self.proxy.start(ports=[self.port])
            finally:
                os.environ.clear()
                os.environ.update(saved)
        else:
            self.proxy.start(ports=[self.port])
        return self.proxy

    def check(self, text):
        """--check on a config: (rc, output)."""
        self.write_config(text)
        r = subprocess.run([BINARY, "--config", self.cfg, "--check"], capture_output=True,
                           timeout=60)
        return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")

    def log(self):
        return self.proxy.log() if self.proxy else ""

    def run_cmd(self, *args, timeout=T * 3):
        """A command on the config written last: (rc, stdout, stderr); no secret and no sanitizer
        report in its output."""
        r = subprocess.run([BINARY, "--config", self.cfg] + list(args), capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        self.assert_no_secrets(out + err)
        self.assertNotRegex(err, r"(Sanitizer|runtime error:)", "sanitizer report")
        return r.returncode, out, err

    def run_test_cmd(self, account, *args):
        """`test kinds [args]` on a config with account (no daemon)."""
        self.write_config(self.config_text(account))
        return self.run_cmd("test", "kinds", *args)

    def wait_log(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            time.sleep(0.05)
        self.fail("no log line matching %r; log tail:\n%s" % (pattern, self.log()[-4000:]))

    # -- the device
    def send(self, rcpts, tag=None):
        """One message from the device: (MAIL/RCPT replies, final (code, text) or None, body)."""
        tag = tag or secrets.token_hex(6)
        body = MSG_TMPL.format(to=rcpts[0], tag=tag).encode()
        s = smtplib.SMTP("127.0.0.1", self.port, timeout=T + 40)
        try:
            s.ehlo("copier.contoso.test")
            code, msg = s.mail("copier@contoso.test")
            replies = [(code, msg)]
            ok = 0
            for r in rcpts:
                code, msg = s.rcpt(r)
                replies.append((code, msg))
                ok += code // 100 == 2
            final = None
            if ok:
                try:
                    final = s.data(body)
                except smtplib.SMTPDataError as e:
                    final = (e.smtp_code, e.smtp_error)
            s.quit()
        finally:
            s.close()
        return replies, final, body

    def one_arrival(self, timeout=15):
        msgs = self.rig.sink_wait(1, timeout=timeout)
        self.assertEqual(len(msgs), 1, "expected exactly one message at the sink: %r" % (msgs,))
        return msgs[0]

    def assert_arrived(self, body, rcpts, timeout=15):
        m = self.one_arrival(timeout)
        self.assertEqual(m["mail_from"], "copier@contoso.test")
        self.assertEqual(m["rcpt_tos"], rcpts)
        received, rest = strip_received(m["data"])
        self.assertTrue(received, "no Received: header from the upstream")
        self.assertEqual(rest, body.replace(b"\r\n..", b"\r\n."),
                         "the message did not arrive byte for byte")
        return received

    def nothing_arrived(self, wait=1.0):
        time.sleep(wait)
        self.assertEqual(self.rig.sink_messages(), [])


# ---------------------------------------------------------------------------------------------

class TestPassword(KindsCase):
    """upstream_auth = plain | login against Dovecot's submission server."""

    def account(self, mech, port=None, tls="starttls", pw_file=None):
        return ("upstream_host = localhost\nupstream_port = %d\nupstream_auth = %s\n"
                "upstream_tls = %s\nupstream_username = %s\nupstream_password_file = %s\n"
                "delivery = direct\n"
                % (port or PWD.port, mech, tls, USER, pw_file or self.pw_file))

    def logins(self, method):
        return PWD.log_text().count("Login: user=<%s>, method=%s" % (USER, method))

    def test_plain(self):
        before = self.logins("PLAIN")
        self.start_proxy(self.account("plain"))
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.assert_arrived(body, ["alice@contoso.test"])
        self.assertEqual(self.logins("PLAIN"), before + 1, PWD.log_text()[-2000:])
        log = self.log()
        self.assertRegex(log, r"event=upstream_connected session=\S+ host=localhost port=%d "
                              r"tls=\"TLSv1\.[23] " % PWD.port)
        self.assertRegex(log, r'line="AUTH PLAIN <redacted>"')
        self.assertRegex(log, r"event=upstream_auth_ok session=\S+ account=kinds mech=PLAIN")
        self.assertIn("event=upstream_connecting", log)

    def test_login(self):
        before = self.logins("LOGIN")
        self.start_proxy(self.account("login"))
        replies, final, body = self.send(["bob@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.assert_arrived(body, ["bob@contoso.test"])
        self.assertEqual(self.logins("LOGIN"), before + 1)
        log = self.log()
        self.assertIn('line="AUTH LOGIN"', log)
        self.assertIn('line="<user name>"', log)
        self.assertIn('line="<redacted>"', log)
        self.assertRegex(log, r"mech=LOGIN")

    def test_wrong_password(self):
        bad = os.path.join(self.tmp, "wrong.password")
        write_secret(bad, WRONG_PASSWORD)
        self.start_proxy(self.account("plain", pw_file=bad))
        replies, final, body = self.send(["alice@contoso.test"])
        # direct delivery: the device hears the 4xx at MAIL and may try again later
        self.assertEqual(replies[0][0], 454, replies)
        self.assertIn(b"4.7.0", replies[0][1])
        self.assertIsNone(final)
        self.nothing_arrived()
        m = self.wait_log(r"event=upstream_failed session=\S+ account=kinds op=MAIL "
                          r"reason=\"AUTH PLAIN refused: 535 5\.7\.8 [^\"]*\(check "
                          r"upstream_username and the password in upstream_password_file\)\"")
        self.assertNotIn("auth_retry", self.log(), "a password is not retried like a token")
        self.assertIn("Password mismatch", PWD.log_text())

    def test_implicit_tls(self):
        self.start_proxy(self.account("login", port=PWD.smtps_port, tls="implicit"))
        replies, final, body = self.send(["carol@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.assert_arrived(body, ["carol@contoso.test"])
        log = self.log()
        self.assertRegex(log, r"event=upstream_connecting session=\S+ host=localhost port=%d "
                              r"tls=implicit" % PWD.smtps_port)
        self.assertRegex(log, r"event=upstream_connected session=\S+ host=localhost port=%d "
                              r"tls=\"TLSv1\.[23] " % PWD.smtps_port)
        # TLS first: the greeting came over TLS, so there was no STARTTLS at all
        self.assertNotIn('line="STARTTLS"', log)

    def test_check_says_what_is_missing(self):
        rc, out = self.check(self.config_text(
            "upstream_host = localhost\nupstream_port = %d\nupstream_auth = login\n" % PWD.port))
        self.assertEqual(rc, 1, out)
        self.assertIn("[account kinds]: upstream_auth = login needs upstream_username and "
                      "upstream_password_file (a file of mode 0600 holding the password), in the "
                      "account or in [upstream]", out)
        os.chmod(self.pw_file, 0o644)
        rc, out = self.check(self.config_text(self.account("plain")))
        self.assertEqual(rc, 1, out)
        self.assertIn("upstream_password_file: %s: mode 0644 is readable or writable by "
                      "group/others; run: chmod 600 %s" % (self.pw_file, self.pw_file), out)
        self.assertNotIn(PASSWORD, out)
        os.chmod(self.pw_file, 0o600)
        rc, out = self.check(self.config_text(self.account("plain")))
        self.assertEqual((rc, out.strip()), (0, "ok"))

    def test_test_command(self):
        rc, out, err = self.run_test_cmd(self.account("plain"))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("account kinds: upstream_auth plain, mailbox copier@contoso.test, upstream "
                      "localhost:%d\n" % PWD.port, out)
        self.assertIn("token: none needed (upstream_auth = plain: upstream_username and the "
                      "password in upstream_password_file)\n", out)
        self.assertIn("-> connect localhost port %d, EHLO, STARTTLS, EHLO\n" % PWD.port, out)
        self.assertIn("-> AUTH PLAIN as %s (password not shown)\n" % USER, out)
        self.assertRegex(out, r"\n  <- 235 ")
        self.assertIn("ok: AUTH worked (add --to ADDR to send a message)", out)
        self.assertNotIn("claims", out)
        self.assertEqual(self.rig.idp_stats()["total"], 0, "a password account asked the IdP")
        # and a message, over TLS from the first byte with LOGIN
        rc, out, err = self.run_test_cmd(self.account("login", port=PWD.smtps_port,
                                                      tls="implicit"),
                                         "--to", "carol@contoso.test")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("-> connect localhost port %d, TLS, EHLO (upstream_tls = implicit)\n"
                      % PWD.smtps_port, out)
        self.assertIn("-> AUTH LOGIN as %s (password not shown)\n" % USER, out)
        self.assertIn("the upstream accepted the test message for carol@contoso.test", out)
        self.assertIn("ok: AUTH and the test message worked", out)
        m = self.one_arrival()
        self.assertEqual(m["rcpt_tos"], ["carol@contoso.test"])
        self.assertIn(b"\r\nSubject: smtp-oauth-proxy test\r\n", m["data"])

    def test_test_command_wrong_password(self):
        bad = os.path.join(self.tmp, "wrong.password")
        write_secret(bad, WRONG_PASSWORD)
        rc, out, err = self.run_test_cmd(self.account("plain", pw_file=bad))
        self.assertEqual(rc, 1, out + err)
        self.assertIn("-> AUTH PLAIN as %s (password not shown)\n" % USER, out)
        self.assertRegex(out, r"\n  <- 535 5\.7\.8 .*\nFAILED at AUTH\n")
        self.assertIn("test FAILED", out)

    def test_test_command_explains_for_a_password(self):
        # Exchange's 535 5.7.3 means something else for a password than for a token
        ex = ExchangeStandin(sop_rig.free_port(), self.rig.cert_file, self.rig.key_file).start()
        self.addCleanup(ex.stop)
        ex.script = {"AUTH": "535 5.7.3 Authentication unsuccessful [DB8PR04CA0011]"}
        rc, out, err = self.run_test_cmd(self.account("login", port=ex.port))
        self.assertEqual(rc, 1, out + err)
        self.assertIn("  <- 535 5.7.3 Authentication unsuccessful [DB8PR04CA0011]\n"
                      "FAILED at AUTH\n", out)
        m = re.search(r"\n  meaning: (.*)\n  fix: +(.*)\n", out)
        self.assertIsNotNone(m, out)
        self.assertIn("refused upstream_username and the password", m.group(1))
        self.assertNotIn("New-ServicePrincipal", out)


class TestDirectSend(KindsCase):
    """upstream_auth = none to the tenant's MX endpoint (Postfix standing in)."""

    def setUp(self):
        super().setUp()
        self.need_postfix()

    def account(self, port_name="mx", tls="starttls", extra=""):
        return ("upstream_host = localhost\nupstream_port = %d\nupstream_auth = none\n"
                "upstream_tls = %s\nupstream_ca_file = %s\n%s"
                % (PF.ports[port_name], tls, PF_CA, extra))

    def test_accepted_domain_over_starttls(self):
        self.start_proxy(self.account() + "delivery = direct\n")
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        received = self.assert_arrived(body, ["alice@contoso.test"])
        self.assertRegex(received, rb"\(using TLSv1\.[23] with cipher ")
        log = self.log()
        self.assertRegex(log, r"event=upstream_connected session=\S+ host=localhost port=%d "
                              r"tls=\"TLSv1\.[23] " % PF.ports["mx"])
        self.assertNotIn('line="AUTH', log)
        self.assertRegex(log, r"event=upstream_authenticated session=\S+ account=kinds conn=1 "
                              r"mech=none")

    def test_outside_recipient_refused_and_explained(self):
        # direct-then-spool (the default): every recipient refused for good, the device hears it
        self.start_proxy(self.account())
        replies, final, body = self.send(["bob@outside.example"])
        heard = [r for r in replies[1:]] + ([final] if final else [])
        self.assertTrue(any(code == 550 and b"5.7.54" in text for code, text in heard), heard)
        self.nothing_arrived()
        self.wait_log(r"event=deliver session=\S+ account=kinds .*upstream=\"550 5\.7\.54 .*"
                      r" explain=\"Exchange Online relays nothing to this recipient: its domain "
                      r"is not an accepted domain of the tenant")
        self.assertIn("Mail flow > Connectors", self.log())

    def test_direct_mode_logs_a_refused_recipient(self):
        # delivery = direct: the device hears the 550 at RCPT, and the log says what it means
        self.start_proxy(self.account() + "delivery = direct\n")
        replies, final, body = self.send(["bob@outside.example"])
        self.assertEqual(replies[1][0], 550, replies)
        self.assertIn(b"5.7.54", replies[1][1])
        self.assertIsNone(final)
        self.nothing_arrived()
        self.wait_log(r"event=rcpt_refused session=\S+ account=kinds upstream=\"550 5\.7\.54 "
                      r"[^\"]*\" explain=\"Exchange Online relays nothing to this recipient: its "
                      r"domain is not an accepted domain of the tenant[^\n]*; fix: send to the "
                      r"tenant's own domains only")

    def test_test_command_outside_recipient(self):
        rc, out, err = self.run_test_cmd(self.account(), "--to", "bob@outside.example")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("token: none needed (upstream_auth = none: no AUTH)\n", out)
        self.assertIn("-> no AUTH (upstream_auth = none)\n", out)
        self.assertIn("-> RCPT TO:<bob@outside.example>\n", out)
        self.assertIn("  <- 550 5.7.54 ", out)
        self.assertIn("FAILED at RCPT\n", out)
        m = re.search(r"\n  meaning: (.*)\n  fix: +(.*)\n", out)
        self.assertIsNotNone(m, out)
        self.assertIn("Exchange Online relays nothing to this recipient", m.group(1))
        self.assertIn("send to the tenant's own domains only", m.group(2))
        self.assertIn("test FAILED", out)
        self.nothing_arrived()

    def test_test_command_accepted_domain(self):
        rc, out, err = self.run_test_cmd(self.account(), "--to", "alice@contoso.test")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("-> connect localhost port %d, EHLO, STARTTLS, EHLO\n" % PF.ports["mx"], out)
        self.assertNotIn("-> AUTH", out)
        self.assertIn("ok: the connection (without AUTH) and the test message worked", out)
        self.assertRegex(self.one_arrival()["data"], rb"\(using TLSv1\.[23] with cipher ")

    def test_test_command_opportunistic_without_starttls(self):
        rc, out, err = self.run_test_cmd(self.account("mx_plain", tls="opportunistic"),
                                         "--to", "alice@contoso.test")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("-> connect localhost port %d, EHLO, STARTTLS if offered, EHLO "
                      "(upstream_tls = opportunistic)\n" % PF.ports["mx_plain"], out)
        self.assertIn("  (no STARTTLS offered: the session goes on in plain text, as upstream_tls "
                      "= opportunistic allows)\n", out)
        self.assertIn("ok: the connection (without AUTH) and the test message worked", out)
        self.assertNotIn(b"using TLS", self.one_arrival()["data"])

    def test_test_command_policy_enabled_without_auth(self):
        rc, out, err = self.run_test_cmd(self.password_account("enabled"))
        self.assertEqual(rc, 0, out + err)
        self.assertIn("-> no AUTH: upstream_auth = plain but the upstream offers AUTH none; "
                      "upstream_auth_policy = enabled goes on without it\n", out)
        rc, out, err = self.run_test_cmd(self.password_account("required"))
        self.assertEqual(rc, 1, out + err)
        self.assertIn("FAILED at AUTH: upstream_auth = plain but the upstream offers AUTH none\n",
                      out)

    def test_opportunistic_with_starttls(self):
        self.start_proxy(self.account(tls="opportunistic") + "delivery = direct\n")
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        received = self.assert_arrived(body, ["alice@contoso.test"])
        self.assertRegex(received, rb"\(using TLSv1\.[23] with cipher ")
        self.assertRegex(self.log(), r"event=upstream_connected session=\S+ host=localhost "
                                     r"port=%d tls=\"TLSv1\.[23] " % PF.ports["mx"])
        self.assertIn('line="STARTTLS"', self.log())

    def test_opportunistic_without_starttls(self):
        self.start_proxy(self.account("mx_plain", tls="opportunistic") + "delivery = direct\n")
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        received = self.assert_arrived(body, ["alice@contoso.test"])
        self.assertNotIn(b"using TLS", received)
        log = self.log()
        self.assertRegex(log, r"event=upstream_connected session=\S+ host=localhost port=%d "
                              r"tls=none reason=\"no STARTTLS offered\"" % PF.ports["mx_plain"])
        self.assertNotIn('line="STARTTLS"', log)

    def test_starttls_mode_refuses_a_server_without_it(self):
        self.start_proxy(self.account("mx_plain") + "delivery = direct\n")
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(replies[0][0], 451, replies)
        self.nothing_arrived()
        self.wait_log(r"event=upstream_failed session=\S+ account=kinds op=MAIL "
                      r"reason=\"upstream does not offer STARTTLS\"")

    def test_implicit_tls(self):
        self.start_proxy(self.account("mx_smtps", tls="implicit") + "delivery = direct\n")
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        received = self.assert_arrived(body, ["alice@contoso.test"])
        self.assertRegex(received, rb"\(using TLSv1\.[23] with cipher ")
        self.assertNotIn('line="STARTTLS"', self.log())

    def password_account(self, policy):
        return ("upstream_host = localhost\nupstream_port = %d\nupstream_auth = plain\n"
                "upstream_auth_policy = %s\nupstream_username = %s\n"
                "upstream_password_file = %s\nupstream_ca_file = %s\ndelivery = direct\n"
                % (PF.ports["mx"], policy, USER, self.pw_file, PF_CA))

    def test_policy_enabled_sends_without_auth(self):
        self.start_proxy(self.password_account("enabled"))
        for i in range(2):  # the second message reuses the connection: logged once
            self.rig.sink_clear()
            replies, final, body = self.send(["alice@contoso.test"])
            self.assertEqual(final[0], 250, final)
            self.assert_arrived(body, ["alice@contoso.test"])
        log = self.log()
        lines = re.findall(r"event=upstream_unauthenticated session=\S+ account=kinds "
                           r"host=localhost reason=\"upstream_auth = plain but the upstream "
                           r"offers AUTH none\" policy=enabled", log)
        self.assertEqual(len(lines), 1, log[-3000:])
        self.assertNotIn('line="AUTH', log)

    def test_policy_required_refuses_without_auth(self):
        self.start_proxy(self.password_account("required"))
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(replies[0][0], 454, replies)
        self.nothing_arrived()
        self.wait_log(r"event=upstream_failed session=\S+ account=kinds op=MAIL "
                      r"reason=\"upstream_auth = plain but the upstream offers AUTH none\"")

    def test_check_refuses_secrets_in_clear(self):
        rc, out = self.check(self.config_text(
            "upstream_host = localhost\nupstream_port = 25\nupstream_auth = plain\n"
            "upstream_tls = opportunistic\nupstream_username = u\n"
            "upstream_password_file = %s\n" % self.pw_file))
        self.assertEqual(rc, 1, out)
        self.assertIn("upstream_tls = opportunistic sends in plain text when the upstream offers "
                      "no STARTTLS, and upstream_auth = plain would send the password in it; use "
                      "upstream_tls = starttls or implicit, or upstream_auth = none", out)
        rc, out = self.check(self.config_text(self.account(tls="opportunistic")))
        self.assertEqual((rc, out.strip()), (0, "ok"))


class TestConnector(KindsCase):
    """A certificate-based connector (Postfix with permit_tls_clientcerts)."""

    def setUp(self):
        super().setUp()
        self.need_postfix()

    def account(self, cert=None, key=None):
        a = ("upstream_host = localhost\nupstream_port = %d\nupstream_auth = none\n"
             "upstream_ca_file = %s\n" % (PF.ports["connector"], PF_CA))
        if cert:
            a += "upstream_client_certificate = %s\nupstream_client_key = %s\n" % (cert, key)
        return a

    def test_relays_for_the_trusted_certificate(self):
        self.start_proxy(self.account(CONNECTOR_CERT, CONNECTOR_KEY) + "delivery = direct\n")
        replies, final, body = self.send(["partner@outside.example"])
        self.assertEqual(final[0], 250, (replies, final))
        received = self.assert_arrived(body, ["partner@outside.example"])
        self.assertRegex(received, rb"\(using TLSv1\.[23] with cipher ")
        self.assertRegex(self.log(), r"event=upstream_connected session=\S+ host=localhost "
                                     r"port=%d tls=\"TLSv1\.[23] [^\"]+\" client_certificate=yes"
                         % PF.ports["connector"])

    def test_refused_without_a_certificate_and_explained(self):
        self.start_proxy(self.account())
        replies, final, body = self.send(["partner@outside.example"])
        heard = replies[1:] + ([final] if final else [])
        self.assertTrue(any(code == 550 and b"5.7.64" in text for code, text in heard), heard)
        self.nothing_arrived()
        self.wait_log(r"event=deliver session=\S+ account=kinds .*upstream=\"550 5\.7\.64 .*"
                      r"explain=\"relay access denied \(TenantAttribution\)")
        self.assertIn("TlsSenderCertificateName", self.log())

    def test_test_command(self):
        rc, out, err = self.run_test_cmd(self.account(CONNECTOR_CERT, CONNECTOR_KEY),
                                         "--to", "partner@outside.example")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("-> connect localhost port %d, EHLO, STARTTLS, EHLO, client certificate "
                      "%s\n" % (PF.ports["connector"], CONNECTOR_CERT), out)
        self.assertIn("the upstream accepted the test message for partner@outside.example", out)
        m = self.one_arrival()
        self.assertEqual(m["rcpt_tos"], ["partner@outside.example"])
        # without the certificate: refused, and explained
        self.rig.sink_clear()
        rc, out, err = self.run_test_cmd(self.account(), "--to", "partner@outside.example")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("FAILED at RCPT\n", out)
        m = re.search(r"\n  meaning: (.*)\n  fix: +(.*)\n", out)
        self.assertIsNotNone(m, out)
        self.assertIn("relay access denied (TenantAttribution)", m.group(1))
        self.assertIn("TlsSenderCertificateName", m.group(2))
        self.nothing_arrived()

    def test_refused_with_another_certificate(self):
        self.start_proxy(self.account(self.rig.other_cert_file, self.rig.other_key_file)
                         + "delivery = direct\n")
        replies, final, body = self.send(["partner@outside.example"])
        self.assertEqual(replies[1][0], 550, replies)
        self.assertIn(b"5.7.64", replies[1][1])
        self.nothing_arrived()

    def test_check_key_must_match(self):
        rc, out = self.check(self.config_text(self.account(CONNECTOR_CERT,
                                                           self.rig.other_key_file)))
        self.assertEqual(rc, 1, out)
        self.assertIn("account kinds: upstream TLS: %s: private key does not match certificate %s"
                      % (self.rig.other_key_file, CONNECTOR_CERT), out)
        rc, out = self.check(self.config_text(self.account(CONNECTOR_CERT, CONNECTOR_KEY)))
        self.assertEqual((rc, out.strip()), (0, "ok"))


class TestHttpProxy(KindsCase):
    """http_proxy: every HTTP request of the proxy goes through it, loopback IdP included."""

    def setUp(self):
        super().setUp()
        self.px = HttpProxy()
        self.addCleanup(self.px.stop)

    def xoauth2_account(self, extra=""):
        return ("provider = microsoft\ntenant = %s\nclient_id = %s\nclient_secret_file = %s\n"
                "token_url = %s\nupstream_host = localhost\nupstream_port = %d\n"
                "delivery = direct\n%s"
                % (self.rig.tenant, self.rig.client_id, self.rig.secret_file, self.rig.token_url,
                   self.rig.dovecot_port, extra))

    def config_text(self, account, **kw):
        # Dovecot's XOAUTH2 checks the token's email claim: the account's mailbox is the rig's
        return super().config_text(account, **kw).replace(
            "mailbox = copier@contoso.test", "mailbox = %s" % self.rig.mailbox)

    def token_posts(self):
        return [r for r in self.px.requests if r == ("POST", self.rig.token_url)]

    def test_token_through_the_proxy(self):
        self.start_proxy(self.xoauth2_account(), proxy_extra="http_proxy = %s" % self.px.url)
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.one_arrival()
        self.assertEqual(len(self.token_posts()), 1, self.px.requests)
        self.assertEqual(self.rig.idp_stats()["requests"], {self.rig.client_id: 1})

    def test_account_proxy_wins(self):
        dead = "http://127.0.0.1:%d" % sop_rig.free_port()
        self.start_proxy(self.xoauth2_account("http_proxy = %s\n" % self.px.url),
                         proxy_extra="http_proxy = %s" % dead)
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.assertEqual(len(self.token_posts()), 1, self.px.requests)

    def test_dead_proxy_is_a_token_failure(self):
        dead = "http://127.0.0.1:%d" % sop_rig.free_port()
        self.start_proxy(self.xoauth2_account(), proxy_extra="http_proxy = %s" % dead)
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(replies[0][0] // 100, 4, replies)
        self.assertEqual(self.rig.idp_stats()["requests"], {}, "the IdP was reached directly")
        self.wait_log(r"event=token_failed account=kinds ")

    def test_discovery_through_the_proxy(self):
        issuer = "%s/%s/v2.0" % (self.rig.idp_base, self.rig.tenant)
        account = self.xoauth2_account().replace(
            "provider = microsoft\ntenant = %s\n" % self.rig.tenant,
            "provider = oauth2\nissuer = %s\nscope = %s\n" % (issuer, sop_rig.SCOPE))
        account = account.replace("token_url = %s\n" % self.rig.token_url, "")
        self.start_proxy(account, proxy_extra="http_proxy = %s" % self.px.url)
        self.assertIn(("GET", issuer + "/.well-known/openid-configuration"), self.px.requests)
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.assertEqual(len(self.token_posts()), 1, self.px.requests)

    def test_authorize_through_the_proxy(self):
        key = os.path.join(self.tmp, "store.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
        device_url = "%s/%s/oauth2/v2.0/devicecode" % (self.rig.idp_base, self.rig.tenant)
        account = ("provider = microsoft\ntenant = %s\nclient_id = %s\ngrant = refresh_token\n"
                   "token_url = %s\ndevice_authorization_url = %s\nhttp_proxy = %s\n"
                   "upstream_host = localhost\nupstream_port = %d\n"
                   % (self.rig.tenant, self.rig.public_client_id, self.rig.token_url, device_url,
                      self.px.url, self.rig.dovecot_port))
        self.write_config(self.config_text(account, proxy_extra="key_file = %s" % key))
        p = subprocess.Popen([BINARY, "--config", self.cfg, "authorize", "kinds"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        line = p.stderr.readline().decode()
        m = re.search(r"open the page (\S+) and enter the code ([A-Z]+)", line)
        self.assertIsNotNone(m, line)
        self.assertEqual(self.px.requests[0], ("POST", device_url), self.px.requests)
        self.rig._idp_req("POST", "/_device", {"user_code": m.group(2), "action": "approve",
                                                "mailbox": self.rig.mailbox})
        out, err = p.communicate(timeout=T * 3)
        out, err = out.decode(errors="replace"), line + err.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out + err)
        self.assertRegex(out, r"^account kinds authorized: refresh token stored")
        self.assertTrue(all(r[0] == "POST" and r[1] in (device_url, self.rig.token_url)
                            for r in self.px.requests), self.px.requests)
        self.assertTrue(self.token_posts(), self.px.requests)
        refresh = self.rig.idp_stats()["refresh"]["issued"]
        self.assertTrue(refresh, "no refresh token was issued")
        for rt in refresh:
            self.assertNotIn(rt, out + err)
        self.assert_no_secrets(out + err)

    def test_environment_proxy_not_for_loopback(self):
        env = dict(os.environ, http_proxy=self.px.url, https_proxy=self.px.url,
                   HTTP_PROXY=self.px.url, no_proxy="")
        self.start_proxy(self.xoauth2_account(), env=env)
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, final)
        self.assertEqual(self.px.requests, [], "a loopback IdP went through the environment's "
                                               "proxy")


def unshare_works():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return False
    if not os.path.isfile("/etc/resolv.conf"):
        return False
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        "mount --bind /etc/resolv.conf /etc/resolv.conf"],
                       capture_output=True, timeout=20)
    return r.returncode == 0


class TestEveryAddress(KindsCase):
    """A name with an address that refuses ([::1]) before one that takes the mail (127.0.0.1)."""

    def setUp(self):
        super().setUp()
        self.need_postfix()
        if not unshare_works():
            self.skipTest("needs root, /etc/resolv.conf and a private mount namespace "
                          "(unshare -m, mount: util-linux, mount) to give the proxy its own "
                          "/etc/resolv.conf")
        self.dns = DnsStandin({"dual.sop.test": ["::1", "127.0.0.1"]})
        self.addCleanup(self.dns.stop)
        self.resolv = os.path.join(self.tmp, "resolv.conf")
        with open(self.resolv, "w") as f:
            f.write("nameserver 127.0.0.1:%d\noptions timeout:2 attempts:2\n" % self.dns.port)
        os.chmod(self.resolv, 0o644)

    def test_first_address_refuses(self):
        port = PF.ports["mx"]
        # nothing listens on [::1]:port (Postfix is on 127.0.0.1 only): the first address refuses
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", port))
        account = ("upstream_host = dual.sop.test\nupstream_port = %d\nupstream_auth = none\n"
                   "upstream_ca_file = %s\ndelivery = direct\n" % (port, PF_CA))
        resolv = self.resolv
        self.start_proxy(account, proxy_cls=lambda b, c, l: NsProxyProcess(b, c, l, resolv))
        replies, final, body = self.send(["alice@contoso.test"])
        self.assertEqual(final[0], 250, (replies, final))
        self.assert_arrived(body, ["alice@contoso.test"])
        log = self.log()
        self.assertRegex(log, r"event=upstream_resolved session=\S+ host=dual\.sop\.test "
                              r"addresses=\[::1\],127\.0\.0\.1")
        failed = re.findall(r"event=upstream_connect_failed session=\S+ host=dual\.sop\.test "
                            r"port=%d address=(\S+) error=\"([^\"]+)\"" % port, log)
        self.assertEqual(failed, [("[::1]", "Connection refused")], log[-3000:])
        self.assertRegex(log, r"event=upstream_tcp_connected session=\S+ host=dual\.sop\.test "
                              r"port=%d address=127\.0\.0\.1" % port)
        # the certificate was checked against the name, not an address
        self.assertRegex(log, r"event=upstream_connected session=\S+ host=dual\.sop\.test "
                              r"port=%d tls=\"TLSv1\.[23] " % port)
        asked = {q for q in self.dns.questions if q[0] == "dual.sop.test"}
        self.assertEqual(asked, {("dual.sop.test", "A"), ("dual.sop.test", "AAAA")})


if __name__ == "__main__":
    unittest.main()
