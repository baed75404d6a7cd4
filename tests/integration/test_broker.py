#!/usr/bin/python3
"""The token broker with the real binary (same rig and harness as test_relay.py):
`smtp-oauth-proxy --config F token ACCOUNT` asks the running daemon over its control socket (one
refresher per account: no second IdP request) or, without a daemon, uses the token store;
`accounts` shows each account's state (table and --json) from either source; `authorize` gives a
refresh_token account its refresh token, imported from a file (bare or JSON) or from the device
code flow (a "person" approves through the IdP stand-in's /_device), to the daemon or the store,
after which mail relays through Dovecot on the delegated token. No token reaches a log or stderr.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_broker.py -v TestBroker.test_token_from_daemon
"""
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import store_peek  # noqa: E402
import test_relay  # noqa: E402
from test_relay import BINARY, MSG, T, ProxyCase  # noqa: E402

ACCOUNT = "scanners"


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def delegated(text, device_url=None):
    """The rig's client-secret account turned into a delegated one (public client, no secret)."""
    out = []
    for line in text.splitlines():
        if line.startswith("client_secret_file ="):
            continue
        if line.startswith("client_id ="):
            out.append("client_id = %s" % test_relay.RIG.public_client_id)
            out.append("grant = refresh_token")
            if device_url:
                out.append("device_authorization_url = %s" % device_url)
            continue
        out.append(line)
    return "\n".join(out) + "\n"


class BrokerCase(ProxyCase):
    def setUp(self):
        super().setUp()
        self.key_path = os.path.join(self.tmp, "store.key")
        self.key = os.urandom(32)
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        self.sock_path = os.path.join(self.tmp, "state", "control.sock")
        self.tok_path = os.path.join(self.tmp, "state", "tokens", ACCOUNT + ".tok")
        self.outputs = []  # every command's stdout+stderr, checked for secrets at the end

    def tearDown(self):
        super().tearDown()
        self.assert_no_secrets_in(self.outputs_text(), "command output")

    def outputs_text(self):
        return "\n".join(self.outputs)

    def start(self, edit=None):
        return self.start_proxy(proxy_extra={"key_file": self.key_path}, edit=edit)

    def stop(self):
        self.stop_proxy()
        self.proxy = None

    def write_config(self, edit=None):
        """The config start() would write, without starting a daemon."""
        self.cfg = os.path.join(self.tmp, "proxy.ini")
        text = sop_rig.proxy_config(self.rig, sop_rig.free_port(),
                                    devices=test_relay.default_devices(),
                                    state_dir=os.path.join(self.tmp, "state"),
                                    proxy_extra={"key_file": self.key_path})
        with open(self.cfg, "w") as f:
            f.write(edit(text) if edit else text)
        os.chmod(self.cfg, 0o600)

    def run_cmd(self, *args, timeout=T * 3):
        r = subprocess.run([BINARY, "--config", self.cfg] + list(args), capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        self.outputs.append(err)
        self.assertNotRegex(err, r"(Sanitizer|runtime error:)", "sanitizer report")
        return r.returncode, out, err

    def token(self):
        rc, out, err = self.run_cmd("token", ACCOUNT)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "", "a token command that works says nothing on stderr")
        self.assertTrue(out.endswith("\n") and out.count("\n") == 1, repr(out[:40]))
        return out.strip()

    def idp_total(self):
        return self.rig.idp_stats()["total"]

    def secrets(self):
        st = self.rig.idp_stats()
        return st["issued"] + st.get("refresh", {}).get("issued", []) + [self.rig.client_secret]

    def assert_no_secrets_in(self, text, what):
        try:
            secrets = self.secrets()
        except OSError:
            return
        for s in secrets:
            self.assertNotIn(s, text, "a token or secret in the %s" % what)
            if "." in s:
                self.assertNotIn(s.split(".")[-1], text, "a token's signature in the %s" % what)

    def send(self, n_expected):
        s = self.smtp()
        s.ehlo("copier.test")
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], MSG)
        s.quit()
        msgs = self.rig.sink_wait(n_expected, T)
        self.assertEqual(len(msgs), n_expected, "message not delivered")

    def control(self, data, timeout=T):
        """Raw bytes to the control socket; the whole reply."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        self.addCleanup(s.close)
        s.connect(self.sock_path)
        if data:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # it answered and closed first (busy): its answer is still to be read
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # closed with our bytes unread, after its answer
                if out:
                    return out
                raise
            if not chunk:
                return out
            out += chunk


class TestBroker(BrokerCase):
    def test_token_from_daemon(self):
        self.start()
        st = os.stat(self.sock_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, "control socket mode")
        self.assertEqual(st.st_uid, os.getuid())
        self.wait_log(r"event=control_listening path=\S+/state/control\.sock")
        tok = self.token()
        stats = self.rig.idp_stats()
        self.assertEqual(stats["issued"], [tok], "not the token the IdP issued")
        self.assertEqual(stats["total"], 1)
        # the second command and a device's message use the daemon's cached token
        self.assertEqual(self.token(), tok)
        self.send(1)
        self.assertEqual(self.idp_total(), 1, "the daemon asked the IdP a second time")
        self.assertIn("Login: user=<%s>, method=XOAUTH2" % self.rig.mailbox,
                      self.rig.dovecot_log())
        self.wait_log(r"event=control_request cmd=token account=scanners peer_uid=%d"
                      % os.getuid())
        self.assert_no_secrets_in(self.log(), "proxy log")
        self.stop()
        self.assertFalse(os.path.exists(self.sock_path), "the socket file outlived the daemon")

    def test_state_dir_created(self):
        # no key_file and a state_dir that does not exist yet: the daemon makes it for its socket
        state = os.path.join(self.tmp, "fresh-state")
        self.start_proxy(edit=lambda t: t.replace("state_dir = %s\n" % os.path.join(
            self.tmp, "state"), "state_dir = %s\n" % state))
        self.assertEqual(stat.S_IMODE(os.stat(state).st_mode), 0o700)
        self.sock_path = os.path.join(state, "control.sock")
        self.assertEqual(self.token(), self.rig.idp_stats()["issued"][0])

    def test_token_without_daemon(self):
        # nothing stored: the command asks the IdP itself and stores the token...
        self.write_config()
        tok = self.token()
        self.assertEqual(self.rig.idp_stats()["issued"], [tok])
        self.assertEqual(store_peek.read(self.tok_path, self.key, ACCOUNT)["access_token"], tok)
        # ...which the next command, and the daemon after it, reuse
        self.assertEqual(self.token(), tok)
        self.assertEqual(self.idp_total(), 1, "a valid stored token was not used")
        self.start()
        self.send(1)
        self.assertEqual(self.idp_total(), 1)
        self.stop()
        self.assertEqual(self.token(), tok)
        self.assertEqual(self.idp_total(), 1)

    def test_token_with_issuer_without_daemon(self):
        # provider = oauth2 with issuer: the command discovers the token endpoint, as the daemon
        # does at start-up
        issuer = "%s/%s/v2.0" % (self.rig.idp_base, self.rig.tenant)

        def to_issuer(text):
            new = text.replace("provider = microsoft\ntenant = %s\n" % self.rig.tenant,
                               "provider = oauth2\nissuer = %s\nscope = "
                               "https://outlook.office365.com/.default\n" % issuer)
            return new.replace("token_url = %s\n" % self.rig.token_url, "")
        self.write_config(edit=to_issuer)
        tok = self.token()
        self.assertEqual(self.rig.idp_stats()["issued"], [tok])

    def test_accounts(self):
        self.start()
        self.send(1)
        rc, out, err = self.run_cmd("accounts")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertRegex(lines[0], r"^source: the running daemon \(\S+control\.sock\)$")
        self.assertRegex(lines[1], r"^ACCOUNT +GRANT +MAILBOX +TOKEN-EXPIRES +LAST-REFRESH +"
                                   r"REAUTHORIZE$")
        self.assertRegex(lines[2], r"^scanners +client_credentials +%s +\d{4}-\d\d-\d\dT"
                                   r"\d\d:\d\d:\d\dZ +ok \S+Z +no$" % re.escape(self.rig.mailbox))
        rc, out, err = self.run_cmd("accounts", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["source"], "daemon")
        a = doc["accounts"][0]
        self.assertEqual((a["name"], a["provider"], a["grant"], a["mailbox"]),
                         ("scanners", "microsoft", "client_credentials", self.rig.mailbox))
        self.assertAlmostEqual(a["token_expires"], time.time() + 3599, delta=60)
        self.assertEqual((a["last_result"], a["last_error"], a["reauthorize"]), ("ok", None, False))
        self.assertAlmostEqual(a["last_attempt"], time.time(), delta=60)
        self.assertEqual((a["requests"], a["failures"]), (1, 0))
        daemon_expiry = a["token_expires"]

        # offline: what the store holds
        self.stop()
        rc, out, err = self.run_cmd("accounts", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["source"], "store")
        a = doc["accounts"][0]
        self.assertAlmostEqual(a["token_expires"], daemon_expiry, delta=2)
        self.assertEqual((a["refresh_token_stored"], a["reauthorize"], a["last_result"]),
                         (False, False, None))
        rc, out, err = self.run_cmd("accounts")
        self.assertEqual(rc, 0, err)
        self.assertIn("source: the token store (no daemon running", out)
        self.assertRegex(out, r"\nscanners +client_credentials +\S+ +\S+Z +- +no\n")
        self.assertEqual(self.idp_total(), 1, "accounts asked the IdP")

    def test_errors(self):
        self.start()
        for cmd in (["token", "nobody"], ["authorize", "nobody"]):
            rc, out, err = self.run_cmd(*cmd)
            self.assertEqual(rc, 1, err)
            self.assertEqual(out, "")
            self.assertIn('no account "nobody"', err)
            self.assertIn("(accounts: scanners)", err)
        rc, out, err = self.run_cmd("authorize", ACCOUNT, "--refresh-token", "/nonexistent")
        self.assertEqual(rc, 1)
        self.assertIn("grant = client_credentials", err)
        rc, out, err = self.run_cmd("frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("unknown command 'frobnicate'", err)
        rc, out, err = self.run_cmd("token")
        self.assertEqual(rc, 2)
        self.assertIn("usage:", err)
        # the daemon's side of the protocol
        self.assertEqual(self.control(b"token nobody\n"), b"error unknown account (valid: "
                                                          b"scanners)\n")
        self.assertRegex(self.control(b"shutdown now\n"), rb"^error unknown request")
        self.assertRegex(self.control(b"token\n"), rb"^error token needs an argument\n$")
        self.assertRegex(self.control(b"x" * 5000), rb"^error request line longer than 4096")
        self.assertRegex(self.control(b"token sc\x01anners\n"), rb"^error malformed request\n$")
        self.assertRegex(self.control(b"refresh-token scanners\n\x01\n"),
                         rb"^error malformed payload")
        # a peer that says nothing is dropped after the idle timeout
        t0 = time.monotonic()
        self.assertEqual(self.control(b"tok", timeout=15), b"")
        self.assertLess(time.monotonic() - t0, 10)
        self.wait_log(r"event=control_timeout peer_uid=\d+")
        # the daemon still answers
        self.assertRegex(self.control(b"token scanners\n"), rb"^ok\n\S+\n$")
        self.assert_no_secrets_in(self.log(), "proxy log")

    def test_connection_cap_and_peer_check(self):
        self.start()
        # 16 idle peers at once are served; the 17th hears "busy" at once
        idle = []
        for _ in range(16):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.connect(self.sock_path)
            idle.append(s)
        time.sleep(0.3)
        self.assertEqual(self.control(b"accounts\n"),
                         b"error busy: too many control connections\n")
        rc, out, err = self.run_cmd("token", ACCOUNT)
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("busy: too many control connections", err)
        for s in idle:
            s.close()
        time.sleep(0.3)
        self.assertRegex(self.control(b"token scanners\n"), rb"^ok\n")
        # a peer that is neither the daemon's user nor root is refused, even if the socket's
        # mode would let it in (the mode is the first gate, SO_PEERCRED the second)
        os.chmod(self.sock_path, 0o666)
        os.chmod(self.tmp, 0o755)
        os.chmod(os.path.dirname(self.sock_path), 0o755)
        probe = "\n".join([
            "import socket, sys",
            "s = socket.socket(socket.AF_UNIX)",
            "s.settimeout(10)",
            "s.connect(sys.argv[1])",
            "try:",
            "    s.sendall(b'token scanners\\n')",
            "    data = s.recv(100)",
            "except OSError:",  # closed before or after our request: no answer either way
            "    data = b''",
            "sys.stdout.write(repr(data))"])
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            "/usr/bin/python3", "-c", probe, self.sock_path],
                           capture_output=True, timeout=T)
        self.assertEqual((r.returncode, r.stdout), (0, b"b''"), r.stderr)
        self.wait_log(r"event=control_refused peer_uid=65534 reason=\"neither our user nor "
                      r"root\"")
        self.assertNotRegex(self.log(), r"event=control_request cmd=token .*peer_uid=65534")

    def test_socket_in_use_or_stale(self):
        # a socket file nobody answers on (a daemon that was killed) is replaced
        os.makedirs(os.path.dirname(self.sock_path), mode=0o700, exist_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(self.sock_path)
        s.close()
        self.start()
        self.wait_log(r"event=control_stale_socket_removed")
        self.token()
        # a second daemon on the same control socket refuses to start, and leaves it alone
        cfg2 = os.path.join(self.tmp, "second.ini")
        with open(cfg2, "w") as f:
            f.write(sop_rig.proxy_config(self.rig, sop_rig.free_port(),
                                         devices=test_relay.default_devices(), state_dir=os.path.join(self.tmp, "state")))
        r = subprocess.run([BINARY, "--config", cfg2], capture_output=True, timeout=T)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"another smtp-oauth-proxy is running", r.stderr)
        self.token()


class TestAuthorize(BrokerCase):
    def mint(self):
        return self.rig._idp_req("POST", "/_mint_refresh_token", {
            "client_id": self.rig.public_client_id, "mailbox": self.rig.mailbox})["refresh_token"]

    def rt_file(self, content, mode=0o600):
        path = os.path.join(self.tmp, "rt-%d" % time.monotonic_ns())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(path, mode)
        return path

    def refresh(self):
        return self.rig.idp_stats()["refresh"]

    def stored_state(self):
        rc, out, err = self.run_cmd("accounts", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["source"], "store")
        a = doc["accounts"][0]
        return a["refresh_token_stored"], a["reauthorize"]

    def test_import_without_daemon(self):
        self.write_config(edit=delegated)
        self.assertEqual(self.stored_state(), (False, True))
        rt = self.mint()
        # as sasl-xoauth2 keeps it
        path = self.rt_file(json.dumps({"access_token": "old", "refresh_token": rt,
                                        "expiry": "0"}) + "\n")
        rc, out, err = self.run_cmd("authorize", ACCOUNT, "--refresh-token", path)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^account scanners authorized: refresh token stored; access token "
                              r"valid until \d{4}-\d\d-\d\dT\S+Z\n$")
        # verified with the IdP: the refresh token was used once and its successor is stored
        ref = self.refresh()
        self.assertEqual(ref["used"], [rt])
        stored = store_peek.read(self.tok_path, self.key, ACCOUNT)
        self.assertEqual(stored["refresh_token"], ref["issued"][-1])
        self.assertIsNotNone(stored["access_token"])
        self.assertEqual(self.stored_state(), (True, False))
        # the daemon starts on it and a device's mail goes out as the mailbox
        self.start(edit=delegated)
        self.send(1)
        self.assertIn("Login: user=<%s>, method=XOAUTH2" % self.rig.mailbox,
                      self.rig.dovecot_log())
        self.assert_no_secrets_in(self.log(), "proxy log")

    def test_import_to_daemon(self):
        self.start(edit=delegated)
        # nothing stored yet: the daemon knows a person is needed, and says what to run
        rc, out, err = self.run_cmd("accounts", "--json")
        self.assertEqual(rc, 0, err)
        self.assertTrue(json.loads(out)["accounts"][0]["reauthorize"])
        rc, out, err = self.run_cmd("accounts")
        self.assertRegex(out, r"\nscanners +refresh_token +\S+ +- +\S.* +yes\n")
        self.assertIn("scanners: a person must authorize it again: smtp-oauth-proxy --config %s "
                      "authorize scanners\n" % self.cfg, out)
        rt = self.mint()
        rc, out, err = self.run_cmd("authorize", ACCOUNT, "--refresh-token",
                                    self.rt_file("  %s \n\n" % rt))
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^account scanners authorized: refresh token handed to the running "
                              r"daemon; access token valid until \S+Z\n$")
        self.wait_log(r"event=refresh_token_imported account=scanners peer_uid=\d+")
        self.assertEqual(self.refresh()["used"], [rt])
        self.send(1)
        self.assertEqual(self.refresh()["used"], [rt], "the daemon did not use the new token")
        rc, out, err = self.run_cmd("accounts", "--json")
        a = json.loads(out)["accounts"][0]
        self.assertEqual((a["grant"], a["last_result"], a["reauthorize"]),
                         ("refresh_token", "ok", False))
        self.assertEqual(store_peek.read(self.tok_path, self.key, ACCOUNT)["refresh_token"],
                         self.refresh()["issued"][-1])
        self.assert_no_secrets_in(self.log(), "proxy log")

    def test_import_refused(self):
        self.write_config(edit=delegated)
        rt = self.mint()
        rc, out, err = self.run_cmd("authorize", ACCOUNT, "--refresh-token",
                                    self.rt_file(rt, mode=0o644))
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"readable")
        rc, out, err = self.run_cmd("authorize", ACCOUNT, "--refresh-token",
                                    self.rt_file('{"access_token": "x"}'))
        self.assertEqual(rc, 1)
        self.assertIn('JSON without a "refresh_token" string', err)
        # a token the IdP does not know: stored, but the command says the IdP refused it
        rc, out, err = self.run_cmd("authorize", ACCOUNT, "--refresh-token",
                                    self.rt_file("0.AXoA-not-a-real-one"))
        self.assertEqual(rc, 1)
        self.assertIn("did not take it", err)
        self.assertIn("invalid_grant", err)
        self.assertEqual(self.refresh()["used"], [])
        self.assertFalse(os.path.exists(self.sock_path))

    def device_url(self):
        return "%s/%s/oauth2/v2.0/devicecode" % (self.rig.idp_base, self.rig.tenant)

    def device_flow(self, action):
        """Run authorize in the device code flow; play the person; (rc, stdout, stderr)."""
        p = subprocess.Popen([BINARY, "--config", self.cfg, "authorize", ACCOUNT],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        line = p.stderr.readline().decode()
        m = re.search(r"open the page (\S+) and enter the code ([A-Z]+)", line)
        self.assertIsNotNone(m, line)
        self.assertEqual(m.group(1), "%s/devicelogin" % self.rig.idp_base)
        self.rig._idp_req("POST", "/_device", {"user_code": m.group(2), "action": action,
                                                "mailbox": self.rig.mailbox})
        out, err = p.communicate(timeout=T * 2)
        err = line + err.decode(errors="replace")
        self.outputs.append(err)
        return p.returncode, out.decode(), err

    def test_device_flow(self):
        edit = lambda text: delegated(text, self.device_url())  # noqa: E731
        self.write_config(edit=edit)
        rc, out, err = self.device_flow("approve")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^account scanners authorized: refresh token stored; access token "
                              r"valid until \S+Z\n$")
        stored = store_peek.read(self.tok_path, self.key, ACCOUNT)
        self.assertEqual(stored["refresh_token"], self.refresh()["issued"][-1])
        # with a daemon running, the next authorization goes to it
        self.start(edit=edit)
        self.send(1)
        rc, out, err = self.device_flow("approve")
        self.assertEqual(rc, 0, err)
        self.assertIn("handed to the running daemon", out)
        self.send(2)
        self.assert_no_secrets_in(self.log(), "proxy log")

    def test_device_flow_declined(self):
        self.write_config(edit=lambda text: delegated(text, self.device_url()))
        rc, out, err = self.device_flow("decline")
        self.assertEqual(rc, 1)
        self.assertEqual(out, "")
        self.assertRegex(err, r"account scanners not authorized: .*declined")
        self.assertFalse(os.path.exists(self.tok_path))

    def test_no_device_url(self):
        self.write_config(edit=lambda t: delegated(t).replace(
            "provider = microsoft", "provider = oauth2"))
        rc, out, err = self.run_cmd("authorize", ACCOUNT)
        self.assertEqual(rc, 1)
        self.assertIn("has no device_authorization_url", err)


if __name__ == "__main__":
    unittest.main()
