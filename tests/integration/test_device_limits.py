#!/usr/bin/python3
"""Cutting a device off (docs/device-limits.md) with the real binary and the rig of
test_relay.py: max_messages_per_hour (the MAIL over it hears 450 4.7.1 naming the device and the
limit, nothing more arrives upstream, the log and the metric name it, a reload and a restart keep
the count),
max_recipients_per_day (the RCPT that would exceed it hears 450 4.7.1, the message goes to the
others), `devices block NAME --reason TEXT` (550 5.7.1 with the reason at MAIL, shown by
`devices`, kept across a restart and a reload, in a 0600 file) and `devices unblock NAME`, and
block_after_refusals against a stand-in for Exchange that refuses messages as spam.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_device_limits.py -v TestDeviceLimits.test_block_unblock
"""
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from exchange_standin import ExchangeStandin  # noqa: E402
from test_relay import BINARY, MSG, T, ProxyCase  # noqa: E402

EXCHANGE = None
SPAM = "550 5.7.708 Access denied, traffic not accepted from this IP. [AM0PR02CA0001]"


def setUpModule():
    global EXCHANGE
    test_relay.setUpModule()
    rig = test_relay.RIG
    EXCHANGE = ExchangeStandin(sop_rig.free_port(), rig.cert_file, rig.key_file).start()


def tearDownModule():
    if EXCHANGE is not None:
        EXCHANGE.stop()
    test_relay.tearDownModule()


def devices(copier=None):
    """copier (127.0.0.1) with its own keys, plotter (127.0.0.2) with [proxy]'s."""
    c = {"address": "127.0.0.1", "account": "scanners"}
    c.update(copier or {})
    return [("copier", c), ("plotter", {"address": "127.0.0.2", "account": "scanners"})]


class TestDeviceLimits(ProxyCase):
    def setUp(self):
        super().setUp()
        EXCHANGE.script = {}
        EXCHANGE.reset()

    def start(self, copier=None, proxy_extra=None, **kw):
        self.mport = sop_rig.free_port()
        extra = {"metrics_listen": "127.0.0.1:%d" % self.mport}
        extra.update(proxy_extra or {})
        return self.start_proxy(devices=devices(copier), proxy_extra=extra, **kw)

    def run_cmd(self, *args):
        r = subprocess.run([BINARY, "--config", self.cfg] + list(args), capture_output=True,
                           timeout=T * 3, stdin=subprocess.DEVNULL)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        self.assertNotRegex(err, r"(Sanitizer|runtime error:)", "sanitizer report")
        return r.returncode, out, err

    def devices_json(self):
        rc, out, err = self.run_cmd("devices", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        return doc, {d["name"]: d for d in doc["devices"]}

    def metric(self, device, limit):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=T) as r:
            text = r.read().decode()
        m = re.search(r'^smtp_oauth_proxy_device_limit_refusals_total\{device="%s",limit="%s"\} '
                      r'(\d+)$' % (device, limit), text, re.M)
        self.assertIsNotNone(m, text[-2000:])
        return int(m.group(1))

    def session(self, source="127.0.0.1"):
        s = self.smtp(source=source)
        s.ehlo("copier.test")
        return s

    def send_one(self, source="127.0.0.1", rcpts=("alice@contoso.test",)):
        """One message; (code, text) of the first refusal, or (250, final reply)."""
        s = self.session(source)
        code, msg = s.mail("copier@contoso.test")
        if code != 250:
            s.quit()
            return code, msg
        for r in rcpts:
            code, msg = s.rcpt(r)
            if code != 250:
                s.quit()
                return code, msg
        code, msg = s.data(MSG)
        s.quit()
        return code, msg

    def reload(self, text=None):
        if text is not None:
            with open(self.cfg, "w") as f:
                f.write(text)
        n = self.log().count("event=reloaded ")
        self.proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + T
        while self.log().count("event=reloaded ") <= n:
            self.assertLess(time.monotonic(), deadline, self.log()[-3000:])
            time.sleep(0.05)

    # -- max_messages_per_hour

    def test_messages_per_hour(self):
        # copier: its own limit of 2; plotter: [proxy]'s default of 3
        self.start(copier={"max_messages_per_hour": "2"},
                   proxy_extra={"max_messages_per_hour": "3"})
        for _ in range(2):
            self.assertEqual(self.send_one()[0], 250)
        code, msg = self.send_one()
        self.assertEqual(code, 450)
        self.assertEqual(msg, b"4.7.1 Device copier has reached its max_messages_per_hour (2), "
                              b"try again later")
        self.rig.sink_wait(2, T)
        time.sleep(0.3)
        self.assertEqual(len(self.rig.sink_messages()), 2, "a message over the limit arrived")
        self.wait_log(r"event=device_limit session=\S+ device=copier "
                      r"limit=max_messages_per_hour max=2")
        self.assertEqual(self.metric("copier", "max_messages_per_hour"), 1)
        # the other device has its own count and [proxy]'s limit
        for _ in range(3):
            self.assertEqual(self.send_one(source="127.0.0.2")[0], 250)
        code, msg = self.send_one(source="127.0.0.2")
        self.assertEqual(code, 450, msg)
        self.assertIn(b"Device plotter has reached its max_messages_per_hour (3)", msg)
        # a reload keeps the counts (by device name)
        self.reload()
        code, msg = self.send_one()
        self.assertEqual(code, 450, msg)
        self.assertEqual(self.metric("copier", "max_messages_per_hour"), 2)
        self.assertEqual(self.metric("plotter", "max_messages_per_hour"), 1)
        self.assertEqual(len(self.rig.sink_messages()), 5)

    def test_restart_keeps_counts(self):
        self.start(copier={"max_messages_per_hour": "2", "max_recipients_per_day": "3"})
        self.assertEqual(self.send_one()[0], 250)
        self.assertEqual(self.send_one(rcpts=("a@contoso.test", "b@contoso.test"))[0], 250)
        self.stop_proxy()
        self.proxy = None
        path = os.path.join(self.tmp, "state", "device_limits.state")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.start(copier={"max_messages_per_hour": "2", "max_recipients_per_day": "3"})
        self.wait_log(r"event=device_limits_loaded path=\S+device_limits\.state")
        code, msg = self.send_one()
        self.assertEqual(code, 450, msg)
        self.assertIn(b"max_messages_per_hour (2)", msg)
        # a bad file is set aside, the counts start from zero, and the daemon says so
        self.stop_proxy()
        self.proxy = None
        with open(path, "w") as f:
            f.write("garbage\n")
        self.start(copier={"max_messages_per_hour": "2", "max_recipients_per_day": "3"})
        self.wait_log(r"event=device_limits_ignored reason=\"\S+device_limits\.state:1: not a "
                      r"device limits file\" moved_to=\S+\.bad")
        self.assertEqual(self.send_one()[0], 250)

    def test_refused_mail_not_counted(self):
        # a MAIL the upstream refuses gives its count back: only what got through counts
        self.start(copier={"max_messages_per_hour": "1"}, upstream_port=EXCHANGE.port)
        EXCHANGE.script = {"MAIL": "550 5.7.60 SMTP; Client does not have permissions to send "
                                   "as this sender"}
        self.assertEqual(self.send_one()[0], 550)
        EXCHANGE.script = {}
        self.assertEqual(self.send_one()[0], 250)
        self.assertEqual(len(EXCHANGE.messages), 1)
        code, msg = self.send_one()
        self.assertEqual(code, 450, msg)
        self.assertEqual(len(EXCHANGE.messages), 1)

    # -- max_recipients_per_day

    def test_recipients_per_day(self):
        self.start(copier={"max_recipients_per_day": "3"})
        code, msg = self.send_one(rcpts=("alice@contoso.test", "bob@contoso.test"))
        self.assertEqual(code, 250, msg)
        s = self.session()
        self.assertEqual(s.mail("copier@contoso.test")[0], 250)
        # refused upstream: not counted
        self.assertEqual(s.rcpt("refuse-1@contoso.test")[0], 550)
        self.assertEqual(s.rcpt("carol@contoso.test")[0], 250)   # the third
        code, msg = s.rcpt("dave@contoso.test")                   # the fourth
        self.assertEqual(code, 450)
        self.assertEqual(msg, b"4.7.1 <dave@contoso.test>: device copier has reached its "
                              b"max_recipients_per_day (3), try again later")
        code, msg = s.data(MSG)
        self.assertEqual(code, 250, msg)
        s.quit()
        msgs = self.rig.sink_wait(2, T)
        self.assertEqual(sorted(m["rcpt_tos"] for m in msgs),
                         [["alice@contoso.test", "bob@contoso.test"], ["carol@contoso.test"]])
        self.wait_log(r"event=device_limit session=\S+ device=copier "
                      r"limit=max_recipients_per_day max=3")
        self.assertEqual(self.metric("copier", "max_recipients_per_day"), 1)
        # the next message hears it at its first RCPT; the plotter (no limit) is unaffected
        code, msg = self.send_one()
        self.assertEqual(code, 450, msg)
        self.assertEqual(self.send_one(source="127.0.0.2")[0], 250)

    # -- devices block / unblock

    def test_block_unblock(self):
        self.start()
        self.assertEqual(self.send_one()[0], 250)
        t0 = int(time.time())
        rc, out, err = self.run_cmd("devices", "block", "copier", "--reason",
                                    "stolen copier\x01, ticket 42")
        self.assertEqual(rc, 0, err)
        self.assertIn("device copier blocked", out)
        want = b"5.7.1 Device copier is blocked: stolen copier?, ticket 42"
        code, msg = self.send_one()
        self.assertEqual((code, msg), (550, want))
        self.assertEqual(self.send_one(source="127.0.0.2")[0], 250)  # the others still send
        self.rig.sink_wait(2, T)
        self.wait_log(r"event=device_blocked device=copier by=admin peer_uid=\d+ "
                      r"reason=\"stolen copier\?, ticket 42\"")
        self.wait_log(r"event=device_limit session=\S+ device=copier limit=blocked by=admin")
        self.assertEqual(self.metric("copier", "blocked"), 1)
        doc, d = self.devices_json()
        self.assertEqual((d["copier"]["blocked"], d["copier"]["blocked_by"],
                          d["copier"]["blocked_reason"]),
                         (True, "admin", "stolen copier?, ticket 42"))
        self.assertLessEqual(abs(d["copier"]["blocked_since"] - t0), 5)
        self.assertFalse(d["plotter"]["blocked"])
        rc, out, err = self.run_cmd("devices")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"copier: blocked since \d{4}-\d\d-\d\dT\S+Z by admin: "
                              r"stolen copier\?, ticket 42")
        path = os.path.join(self.tmp, "state", "device_blocks.state")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        # a reload and a restart keep it
        self.reload()
        self.assertEqual(self.send_one(), (550, want))
        self.stop_proxy()
        self.proxy = None
        doc, d = self.devices_json()   # no daemon: from the file
        self.assertEqual((doc["source"], d["copier"]["blocked_reason"]),
                         ("file", "stolen copier?, ticket 42"))
        rc, out, err = self.run_cmd("devices", "unblock", "copier")
        self.assertEqual(rc, 1)
        self.assertIn("the daemon is not running", err)
        self.start()
        self.wait_log(r"event=device_blocks_loaded path=\S+ blocked=1")
        self.assertEqual(self.send_one(), (550, want))
        # unblock: mail flows again
        rc, out, err = self.run_cmd("devices", "unblock", "copier")
        self.assertEqual(rc, 0, err)
        self.assertIn("device copier unblocked", out)
        self.assertEqual(self.send_one()[0], 250)
        self.rig.sink_wait(3, T)
        self.wait_log(r"event=device_unblocked device=copier by=admin")
        doc, d = self.devices_json()
        self.assertFalse(d["copier"]["blocked"])
        rc, out, err = self.run_cmd("devices", "unblock", "copier")
        self.assertEqual(rc, 1)
        self.assertIn("device copier is not blocked", err)

    def test_block_errors(self):
        self.start()
        rc, out, err = self.run_cmd("devices", "block", "nosuch")
        self.assertEqual(rc, 2)
        self.assertIn('no device "nosuch"', err)
        self.assertIn("(devices: copier, plotter)", err)
        rc, out, err = self.run_cmd("devices", "block", "copier", "--why", "x")
        self.assertEqual(rc, 2)
        self.assertIn("usage:", err)
        rc, out, err = self.run_cmd("devices", "unblock", "../etc")
        self.assertEqual(rc, 2)
        # the daemon checks too: a raw request for an unknown device
        import socket
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(os.path.join(self.tmp, "state", "control.sock"))
        sock.sendall(b"device-block nosuch\nsome reason\n")
        reply = sock.recv(4096)
        sock.close()
        self.assertEqual(reply, b"error unknown device (valid: copier, plotter)\n")
        # a default reason when none is given
        rc, out, err = self.run_cmd("devices", "block", "plotter")
        self.assertEqual(rc, 0, err)
        code, msg = self.send_one(source="127.0.0.2")
        self.assertEqual((code, msg),
                         (550, b"5.7.1 Device plotter is blocked: blocked by an administrator"))

    # -- block_after_refusals

    def test_auto_block_after_spam_refusals(self):
        self.start(copier={"block_after_refusals": "2"}, upstream_port=EXCHANGE.port)
        # a refusal that is not about spam does not count
        EXCHANGE.script = {"DATA": "550 5.6.0 Message content rejected"}
        self.assertEqual(self.send_one()[0], 550)
        EXCHANGE.script = {"DATA": SPAM}
        for _ in range(2):
            code, msg = self.send_one()
            self.assertEqual(code, 550)
            self.assertIn(b"5.7.708", msg)
        self.wait_log(r"event=device_blocked device=copier by=auto refusals=2 "
                      r"last=\"550 5\.7\.708 Access denied")
        EXCHANGE.script = {}
        code, msg = self.send_one()
        self.assertEqual(code, 550)
        self.assertEqual(msg, b"5.7.1 Device copier is blocked: automatic: 2 spam refusals, last: "
                              + SPAM.encode())
        doc, d = self.devices_json()
        self.assertEqual((d["copier"]["blocked"], d["copier"]["blocked_by"]), (True, "auto"))
        # the plotter (no block_after_refusals) is not blocked by the same refusals
        EXCHANGE.script = {"DATA": SPAM}
        for _ in range(3):
            self.assertEqual(self.send_one(source="127.0.0.2")[0], 550)
        EXCHANGE.script = {}
        self.assertEqual(self.send_one(source="127.0.0.2")[0], 250)
        # unblocked, the count starts again
        rc, out, err = self.run_cmd("devices", "unblock", "copier")
        self.assertEqual(rc, 0, err)
        EXCHANGE.script = {"DATA": SPAM}
        self.assertEqual(self.send_one()[0], 550)
        EXCHANGE.script = {}
        self.assertEqual(self.send_one()[0], 250)

    def test_auto_block_from_the_queue(self):
        # delivery = spool: the device hears 250 queued; the queue runner's refusal counts
        self.start(copier={"block_after_refusals": "2"}, upstream_port=EXCHANGE.port,
                   account_extra={"delivery": "spool"})
        # the message refused as spam; its bounce (from <>) accepted
        EXCHANGE.script = {"DATA": lambda t: SPAM if t["mail_from"] else None}
        for i in range(2):
            code, msg = self.send_one()
            self.assertEqual(code, 250, msg)
            self.assertIn(b"queued as", msg)
            self.wait_log(r"(?s)(event=queue_bounced.*){%d}" % (i + 1))
        self.wait_log(r"event=device_blocked device=copier by=auto refusals=2 "
                      r"last=\"550 5\.7\.708 Access denied")
        code, msg = self.send_one()
        self.assertEqual(code, 550, msg)
        self.assertTrue(msg.startswith(b"5.7.1 Device copier is blocked: automatic: 2 spam "
                                       b"refusals, last: 550 5.7.708"), msg)


if __name__ == "__main__":
    unittest.main()
