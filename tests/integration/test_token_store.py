#!/usr/bin/python3
"""The encrypted token store with the real binary (same rig and harness as test_relay.py): with
key_file set, a restart reuses the stored access token instead of asking the IdP again; the
file is mode 0600 in a 0700 directory and holds no token in clear; a corrupted file, or one
sealed under another key, is reported and ignored (a fresh token is fetched, mail still flows);
a key file others can read, or of the wrong size, stops the proxy at start-up naming file:line.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_token_store.py -v TestTokenStore.test_restart_reuses_token
"""
import os
import stat
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from test_relay import BINARY, MSG, T, ProxyCase  # noqa: E402


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestTokenStore(ProxyCase):
    def make_key(self, name="store.key", size=32, mode=0o600):
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(path, mode)
        return path

    def token_file(self):
        return os.path.join(self.tmp, "state", "tokens", "scanners.tok")

    def send(self, n_expected):
        s = self.smtp()
        s.ehlo("copier.test")
        s.sendmail("copier@contoso.test", ["alice@contoso.test"], MSG)
        s.quit()
        msgs = self.rig.sink_wait(n_expected, T)
        self.assertEqual(len(msgs), n_expected, "message not delivered")

    def idp_requests(self):
        return self.rig.idp_stats()["total"]

    def issued(self):
        toks = self.rig.idp_stats()["issued"]
        self.issued_seen.extend(t for t in toks if t not in self.issued_seen)
        return toks

    def assert_sealed(self):
        path = self.token_file()
        st = os.stat(path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, "token file mode")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700,
                         "tokens directory mode")
        with open(path, "rb") as f:
            data = f.read()
        self.assertEqual(data[0], 1, "format version byte")
        for tok in self.issued():
            self.assertNotIn(tok.encode(), data, "the token in clear in the token file")
            for part in tok.split("."):
                self.assertNotIn(part.encode(), data, "part of the token in clear in the file")
        leftovers = [n for n in os.listdir(os.path.dirname(path)) if n != "scanners.tok"]
        self.assertEqual(leftovers, [], "temp files left in the tokens directory")
        return data

    def test_restart_reuses_token(self):
        key = self.make_key()
        self.start_proxy(proxy_extra={"key_file": key})
        self.wait_log(r"event=token_store dir=\S+/state/tokens")
        self.send(1)
        self.assertEqual(self.idp_requests(), 1)
        self.wait_log(r"event=token_saved account=scanners")
        self.assert_sealed()
        self.stop_proxy()

        self.start_proxy(proxy_extra={"key_file": key})
        self.wait_log(r"event=token_loaded account=scanners expires_in=\d+s source=token_store")
        self.send(2)
        self.assertEqual(self.idp_requests(), 1, "the restart asked the IdP again")
        self.assertNotIn("token_store_unreadable", self.log())

    def _corrupted_restart(self, damage, key2=None):
        key = self.make_key()
        self.start_proxy(proxy_extra={"key_file": key})
        self.send(1)
        self.assertEqual(self.idp_requests(), 1)
        before = self.assert_sealed()
        self.stop_proxy()
        damage(self.token_file(), before)
        self.start_proxy(proxy_extra={"key_file": key2() if key2 else key})
        m = self.wait_log(r"event=token_store_unreadable account=scanners file=\S+scanners\.tok "
                          r"reason=\"([^\"]+)\"")
        self.send(2)
        self.assertEqual(self.idp_requests(), 2, "a fresh token was not fetched")
        self.assertNotIn("event=token_loaded", self.log())
        # the fresh token replaced the bad file
        self.wait_log(r"event=token_saved account=scanners")
        self.assertNotEqual(self.assert_sealed(), before)
        return m.group(1)

    def test_corrupted_file_is_reported_and_replaced(self):
        def flip(path, data):
            b = bytearray(data)
            b[len(b) // 2] ^= 0x20
            with open(path, "wb") as f:
                f.write(bytes(b))
        reason = self._corrupted_restart(flip)
        self.assertIn("authentication failed", reason)

    def test_torn_file_is_reported(self):
        def tear(path, data):
            with open(path, "wb") as f:
                f.write(data[:len(data) // 3])
        self.assertIn("authentication failed", self._corrupted_restart(tear))

    def test_other_key_is_reported(self):
        reason = self._corrupted_restart(lambda p, d: None,
                                         key2=lambda: self.make_key("other.key"))
        self.assertIn("wrong key", reason)

    def test_no_key_file_persists_nothing(self):
        self.start_proxy()
        self.send(1)
        self.stop_proxy()
        self.assertFalse(os.path.exists(os.path.dirname(self.token_file())),
                         "a tokens directory without key_file")
        self.start_proxy()
        self.send(2)
        self.assertEqual(self.idp_requests(), 2)

    def _refused(self, key, want):
        self.start_proxy(proxy_extra={"key_file": self.make_key()})  # writes self.cfg
        self.stop_proxy()
        self.proxy = None
        with open(self.cfg) as f:
            lines = f.read().splitlines()
        n = next(i for i, ln in enumerate(lines) if ln.startswith("key_file ="))
        lines[n] = "key_file = %s" % key
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        r = subprocess.run([BINARY, "--config", self.cfg], capture_output=True, timeout=T)
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode(errors="replace")
        self.assertIn("%s:%d: key_file: %s: %s" % (self.cfg, n + 1, key, want), err)

    def test_key_file_group_readable_refused(self):
        self._refused(self.make_key("open.key", mode=0o640),
                      "mode 0640 is readable or writable by group/others")

    def test_key_file_wrong_size_refused(self):
        self._refused(self.make_key("hex.key", size=64),
                      "must be exactly 32 random bytes (it has 64)")


if __name__ == "__main__":
    unittest.main()
