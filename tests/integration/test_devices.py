#!/usr/bin/python3
"""`smtp-oauth-proxy devices` with the real binary (same rig and harness as test_relay.py):
traffic of known shape from two devices (one message refused), then the command asks the
running daemon, and again with the daemon stopped (from STATE_DIR/devices.state): the same
exact figures both ways. A restart keeps the history; stale_after marks the silent devices; a
torn state file is reported and set aside, never half-used; a reload (SIGHUP) keeps the history
of the devices it keeps and counts the ones it adds.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_devices.py -v TestDevices.test_devices_after_traffic
"""
import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from test_relay import MSG, PASSWORD, PASSWORD_HASH, T, USERNAME, ProxyCase  # noqa: E402,F401


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


LONG = b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n"  # a line over 1000 octets: refused


class TestDevices(ProxyCase):
    def devices(self):
        """copier (address), scanner2 (username) and plotter, which never sends."""
        return test_relay.default_devices() + [
            ("plotter", {"address": "127.0.0.2", "account": "scanners"})]

    def run_cmd(self, *args):
        r = subprocess.run([test_relay.BINARY, "--config", self.cfg] + list(args),
                           capture_output=True, timeout=T * 3)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def devices_json(self):
        rc, out, err = self.run_cmd("devices", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        return doc, {d["name"]: d for d in doc["devices"]}

    def send(self, login=False):
        s = self.smtp()
        s.ehlo("copier.test")
        if login:
            s.login(USERNAME, PASSWORD)
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        s.quit()

    def send_refused(self):
        """As scanner2 (AUTH PLAIN), a message with a line over 1000 octets: the proxy refuses
        it at the final dot."""
        r = self.raw()
        r.reply()
        r.cmd(b"EHLO copier.test")
        plain = base64.b64encode(("\0%s\0%s" % (USERNAME, PASSWORD)).encode())
        self.assertEqual(r.cmd(b"AUTH PLAIN " + plain)[0], 235)
        self.assertEqual(r.cmd(b"MAIL FROM:<copier@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"RCPT TO:<alice@contoso.test>")[0], 250)
        self.assertEqual(r.cmd(b"DATA")[0], 354)
        code, lines = r.cmd(LONG + b".")
        self.assertEqual(code // 100, 5, lines)
        r.cmd(b"QUIT")

    def state_file(self):
        return os.path.join(self.tmp, "state", "devices.state")

    def test_devices_after_traffic(self):
        t_start = time.time()
        self.start_proxy(devices=self.devices())
        # nothing sent yet: everyone "never", nobody stale (the history only just began)
        doc, d = self.devices_json()
        self.assertEqual(doc["source"], "daemon")
        self.assertEqual(doc["stale_after"], 365 * 86400)
        self.assertEqual(list(d), ["copier", "scanner2", "plotter"])
        for dev in d.values():
            self.assertIsNone(dev["last_seen"], dev)
            self.assertEqual((dev["msgs_24h"], dev["msgs_30d"], dev["stale"]), (0, 0, False))

        self.send()
        self.send()
        self.send(login=True)
        self.send_refused()
        self.rig.sink_wait(3, T)
        t_sent = time.time()

        doc, d = self.devices_json()
        self.assertEqual(doc["source"], "daemon")
        c, s, p = d["copier"], d["scanner2"], d["plotter"]
        self.assertEqual((c["account"], c["match"], c["username"]), ("scanners", "address", None))
        self.assertEqual((s["match"], s["username"]), ("username", USERNAME))
        self.assertEqual((c["msgs_24h"], c["msgs_30d"]), (2, 2))
        self.assertEqual((s["msgs_24h"], s["msgs_30d"]), (2, 2))
        self.assertEqual(c["last_result"], "delivered")
        self.assertRegex(c["last_reply"], r"^250 2\.0\.0 Ok: queued as SINK\d+")
        self.assertEqual(s["last_result"], "refused")
        self.assertRegex(s["last_reply"], r"^5\d\d ")
        for dev in (c, s):
            self.assertGreaterEqual(dev["last_seen"], int(t_start) - 1)
            self.assertLessEqual(dev["last_seen"], t_sent + 1)
            self.assertFalse(dev["stale"])
        self.assertIsNone(p["last_seen"])
        self.assertIsNone(p["last_result"])
        self.assertEqual((p["msgs_24h"], p["msgs_30d"], p["stale"]), (0, 0, False))
        live = d

        # the table
        rc, out, err = self.run_cmd("devices")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("source: the running daemon"), out)
        self.assertEqual(lines[1].split(), ["DEVICE", "ACCOUNT", "MATCH", "LAST-SEEN", "MSGS-24H",
                                            "MSGS-30D", "LAST-RESULT", "STALE", "BLOCKED"])
        rows = {ln.split()[0]: ln.split() for ln in lines[2:5]}
        self.assertEqual(rows["copier"][:3], ["copier", "scanners", "address"])
        self.assertEqual(rows["copier"][4:7], ["2", "2", "delivered"])
        self.assertEqual(rows["scanner2"][4:7], ["2", "2", "refused"])
        self.assertEqual(rows["plotter"][3:7], ["never", "0", "0", "-"])
        self.assertEqual([rows[n][-2:] for n in ("copier", "scanner2", "plotter")],
                         [["no", "no"]] * 3)  # STALE, BLOCKED
        self.assertIn("scanner2: last reply: 5", out)

        # stopped: the same figures from the state file, written at shutdown
        self.stop_proxy()
        self.proxy = None
        st = os.stat(self.state_file())
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        with open(self.state_file(), "rb") as f:
            self.assertRegex(f.read(), rb"\nend sha256=[0-9a-f]{64}\n\Z")
        doc, d = self.devices_json()
        self.assertEqual(doc["source"], "file")
        self.assertEqual(d, live)
        rc, out, err = self.run_cmd("devices")
        self.assertEqual(rc, 0, err)
        self.assertIn("source: %s (no daemon running" % self.state_file(), out)

        # restarted with stale_after = 2s: the history is kept; after 2 quiet seconds the devices
        # that did not send again are stale, plotter too (watched for 2 s, never seen)
        self.start_proxy(devices=self.devices(), proxy_extra={"stale_after": "2s"})
        self.assertIn("event=device_state_loaded", self.log())
        time.sleep(max(0.0, t_sent + 2.2 - time.time()))
        self.send()
        doc, d = self.devices_json()
        self.assertEqual(doc["stale_after"], 2)
        self.assertEqual((d["copier"]["msgs_24h"], d["copier"]["stale"]), (3, False))
        self.assertEqual((d["scanner2"]["msgs_30d"], d["scanner2"]["stale"]), (2, True))
        self.assertEqual(d["scanner2"]["last_result"], "refused")
        self.assertEqual((d["plotter"]["last_seen"], d["plotter"]["stale"]), (None, True))
        rc, out, err = self.run_cmd("devices")
        rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[2:5]}
        self.assertEqual([rows[n][-2] for n in ("copier", "scanner2", "plotter")],
                         ["no", "yes", "yes"])

    def test_removed_devices_and_torn_file(self):
        self.start_proxy(devices=self.devices())
        self.send()
        self.stop_proxy()
        self.proxy = None
        with open(self.state_file(), "rb") as f:
            good = f.read()
        self.assertIn(b'"plotter"', good)

        # a torn file: reported and ignored by the command, set aside by the daemon
        with open(self.state_file(), "wb") as f:
            f.write(good[:len(good) // 2])
        rc, out, err = self.run_cmd("devices", "--json")
        self.assertEqual(rc, 0, err)
        self.assertIn("no end marker", err)
        doc = json.loads(out)
        self.assertEqual(doc["source"], "none")
        self.assertEqual([x["msgs_30d"] for x in doc["devices"]], [0, 0, 0])

        # restarted without plotter: the torn file is set aside, the history starts again, and
        # the file written at shutdown no longer names plotter
        self.start_proxy(devices=test_relay.default_devices())
        self.wait_log(r"event=device_state_ignored reason=\".*no end marker.*\" moved_to=")
        self.assertTrue(os.path.exists(self.state_file() + ".bad"))
        doc, d = self.devices_json()
        self.assertEqual(list(d), ["copier", "scanner2"])
        self.assertEqual(d["copier"]["msgs_30d"], 0)
        self.send()
        self.stop_proxy()
        self.proxy = None
        with open(self.state_file(), "rb") as f:
            text = f.read()
        self.assertNotIn(b"plotter", text)
        doc, d = self.devices_json()
        self.assertEqual((doc["source"], d["copier"]["msgs_30d"]), ("file", 1))

    def test_reload_keeps_history(self):
        self.start_proxy()
        self.send()
        # the reloaded config drops scanner2 and adds plotter (127.0.0.2)
        with open(self.cfg, "w") as f:
            f.write(sop_rig.proxy_config(
                self.rig, self.port, state_dir=os.path.join(self.tmp, "state"),
                devices=[test_relay.default_devices()[0],
                         ("plotter", {"address": "127.0.0.2", "account": "scanners"})]))
        n = self.log().count("event=reloaded ")
        self.proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + T
        while self.log().count("event=reloaded ") <= n:
            self.assertLess(time.monotonic(), deadline, self.log()[-3000:])
            time.sleep(0.05)
        s = self.smtp(source="127.0.0.2")
        s.ehlo("plotter.test")
        self.assertEqual(s.sendmail("plotter@contoso.test", ["alice@contoso.test"], MSG), {})
        s.quit()
        doc, d = self.devices_json()
        self.assertEqual(list(d), ["copier", "plotter"])
        self.assertEqual((d["copier"]["msgs_24h"], d["copier"]["last_result"]), (1, "delivered"))
        self.assertEqual((d["plotter"]["msgs_24h"], d["plotter"]["last_result"]), (1, "delivered"))
        self.stop_proxy()
        self.proxy = None
        with open(self.state_file(), "rb") as f:
            text = f.read()
        self.assertNotIn(b"scanner2", text)
        doc, d = self.devices_json()
        self.assertEqual((d["copier"]["msgs_30d"], d["plotter"]["msgs_30d"]), (1, 1))


if __name__ == "__main__":
    unittest.main()
