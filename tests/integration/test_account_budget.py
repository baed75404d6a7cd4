#!/usr/bin/python3
"""The daily recipient budget per account (issue 13, docs/account-budget.md) with the real binary
and a small limit (daily_recipient_limit = 5; the 5 % reserve rounds down to none): deliveries up
to the budget arrive at the sink; the next message is held in the queue (direct-then-spool and
spool: the device hears 250 queued) or refused for now (direct: 451 4.7.1); `accounts` and
/metrics show used and limit; the count survives a restart; a damaged state file is set aside
and ignored; once the recipients of the window age out (the persisted minutes moved back a day
while the daemon is stopped), the held messages are delivered.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_account_budget.py -v
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from spool_case import ALICE, Device, SpoolCase, make_message, message_id, stuff  # noqa: E402,E501
from test_metrics import parse_exposition, promtool_check  # noqa: E402
from test_relay import BINARY, T  # noqa: E402

LIMIT = 5
P = "smtp_oauth_proxy_"
BOB = "bob@contoso.test"
CAROL = "carol@contoso.test"
DAN = "dan@contoso.test"
ERIN = "erin@contoso.test"
HOLD_RE = r"event=account_budget_hold account=scanners used=(\d+) limit=5 "


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestAccountBudget(SpoolCase):
    def start_budget(self, delivery, limit=LIMIT):
        self.mport = sop_rig.free_port()
        self.start_proxy(account_extra={"delivery": delivery, "rate_limit": "0",
                                        "daily_recipient_limit": str(limit)},
                         proxy_extra={"metrics_listen": "127.0.0.1:%d" % self.mport})
        sop_rig.wait_port(self.mport, timeout=T)

    @property
    def state_file(self):
        return os.path.join(self.tmp, "state", "account-budget.state")

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=T) as r:
            text = r.read().decode()
        series = parse_exposition(text)
        if shutil.which("promtool"):  # test_metrics requires it; here it is a bonus
            promtool_check(self, text)
        acct = frozenset({"account": "scanners"}.items())
        return {n: series.get((P + n, acct)) for n in
                ("account_recipients_24h", "account_recipient_limit",
                 "account_budget_held_total")}

    def accounts(self, *args):
        r = subprocess.run([BINARY, "--config", self.cfg, "accounts"] + list(args),
                           capture_output=True, timeout=T, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotRegex(r.stderr.decode(), r"(Sanitizer|runtime error:)")
        return r.stdout.decode()

    def assert_used(self, used, daemon=True):
        out = self.accounts()
        self.assertIn("scanners: recipients last 24h: %d of %d\n" % (used, LIMIT), out)
        a = json.loads(self.accounts("--json"))["accounts"][0]
        self.assertEqual((a["recipients_24h"], a["recipient_limit"]), (used, LIMIT))
        if daemon:
            m = self.metrics()
            self.assertEqual((m["account_recipients_24h"], m["account_recipient_limit"]),
                             (used, LIMIT))

    def hold_lines(self):
        return re.findall(HOLD_RE, self.log())

    def age_out_state(self):
        """Move every counted minute back a day (and a minute): the daemon is stopped."""
        self.assertIsNone(self.proxy.proc)
        with open(self.state_file) as f:
            lines = f.read().splitlines()
        out = []
        for ln in lines:
            parts = ln.split()
            if len(parts) == 3 and parts[0] == "scanners":
                parts[1] = str(int(parts[1]) - 1441)
            out.append(" ".join(parts))
        with open(self.state_file, "w") as f:
            f.write("\n".join(out) + "\n")

    def restart(self):
        self.proxy.start(ports=[self.port])
        sop_rig.wait_port(self.mport, timeout=T)

    def test_direct_then_spool_holds_then_delivers(self):
        self.start_budget("direct-then-spool")
        # 2 + 3 recipients: the budget's 5, delivered at once (the sink's own 250)
        first = [make_message("budget-1", 800), make_message("budget-2", 800)]
        r = self.device_send(first[0], rcpts=(ALICE, BOB))
        self.assertRegex(r[-1][1], r"^250 .*queued as SINK\d+", r)
        r = self.device_send(first[1], rcpts=(CAROL, DAN, ERIN))
        self.assertRegex(r[-1][1], r"^250 .*queued as SINK\d+", r)
        self.assertEqual(len(self.sink_settled(2, settle=0.3)), 2)
        self.assertEqual(self.hold_lines(), [])

        # the next ones: 250 from the proxy's spool, held there, not at the sink
        held = [make_message("budget-3", 800), make_message("budget-4", 800)]
        for msg in held:
            r = self.device_send(msg, rcpts=(ALICE,))
            self.assert_accepted(r)
            self.assertRegex(r[-1][1], r"^250 2\.0\.0 Ok: queued as [0-9a-f]{16}$", r)
        self.assertEqual(len(self.wait_spooled(2)), 2)
        deadline = time.monotonic() + T
        while len(re.findall(r"event=queue_budget_hold queue_id=\S+ account=scanners rcpts=1 "
                             r"next_in=\d+s", self.log())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        self.assertEqual(len(self.rig.sink_messages()), 2, "a held message was delivered")
        self.assertEqual(self.hold_lines(), ["5"], "one hold line per hold, not per message")
        self.assertEqual(len(self.spool_ids()), 2)
        q = self.queue_list()
        self.assertEqual([m["state"] for m in q], ["budget", "budget"], q)
        rc, out, _ = self.queue()
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"\n[0-9a-f]{16} +scanners .* budget +- *\n")
        self.assert_used(5)
        self.assertEqual(self.metrics()["account_budget_held_total"], 2)

        # a restart remembers the day: still 5 used, still held
        self.proxy.stop()
        with open(self.state_file) as f:
            text = f.read()
        self.assertRegex(text, r"\Asmtp-oauth-proxy account-budget 1\n(scanners \d+ \d+\n)+"
                               r"end \d+\n\Z")
        self.assertEqual(os.stat(self.state_file).st_mode & 0o777, 0o600)
        self.assert_used(5, daemon=False)  # offline: from the file
        self.restart()
        self.wait_log(r"event=account_budget_loaded account=scanners used=5 limit=5")
        self.assert_used(5)
        time.sleep(1.0)
        self.assertEqual(len(self.rig.sink_messages()), 2, "a held message was delivered")
        self.assertEqual(len(self.spool_ids()), 2)

        # the day passes (the persisted minutes moved back): the held messages go
        self.proxy.stop()
        self.age_out_state()
        self.restart()
        msgs = self.sink_settled(4, settle=0.5)
        self.assertEqual(len(msgs), 4)
        ids = [message_id(b) for b in self.upstream_bodies(msgs)]
        # the held two after the first two; between them, queued in the same second, a restart
        # goes by their random ids (README, known limits)
        self.assertEqual(ids[:2], ["budget-1@copier.contoso.test", "budget-2@copier.contoso.test"])
        self.assertEqual(sorted(ids[2:]),
                         ["budget-3@copier.contoso.test", "budget-4@copier.contoso.test"])
        self.wait_spool_empty()
        self.assert_used(2)

    def test_spool_holds(self):
        self.start_budget("spool")
        for i in range(3):
            r = self.device_send(make_message("spool-%d" % i, 600), rcpts=(ALICE, BOB))
            self.assert_accepted(r)
        # 2 + 2 delivered; the third (2 more) would make 6: held
        msgs = self.sink_settled(2, settle=1.0)
        self.assertEqual(len(msgs), 2)
        self.assertEqual(len(self.spool_ids()), 1)
        self.assertEqual(self.hold_lines(), ["4"])
        self.assert_used(4)
        self.assertEqual(self.metrics()["account_budget_held_total"], 1)

        # a reload that raises the limit releases the held message at once
        with open(self.cfg) as f:
            text = f.read()
        with open(self.cfg, "w") as f:
            f.write(text.replace("daily_recipient_limit = 5\n", "daily_recipient_limit = 10\n"))
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"event=reloaded ")
        self.assertEqual(len(self.sink_settled(3, settle=0.3)), 3)
        self.wait_spool_empty()
        self.wait_log(r"event=account_budget_resume account=scanners used=4 limit=10")
        m = self.metrics()
        self.assertEqual((m["account_recipients_24h"], m["account_recipient_limit"]), (6, 10))

    def test_direct_hears_451(self):
        # a damaged state file: logged, set aside, ignored; the daemon starts all the same
        os.makedirs(os.path.join(self.tmp, "state"), mode=0o700, exist_ok=True)
        with open(os.path.join(self.tmp, "state", "account-budget.state"), "w") as f:
            f.write("smtp-oauth-proxy account-budget 1\nscanners 12 3\n")  # no end line
        self.start_budget("direct")
        self.wait_log(r"event=account_budget_state_ignored path=\S+ reason=\"no end line: the "
                      r"file was cut short\" .* moved_to=\S+\.bad")
        self.assertTrue(os.path.exists(self.state_file + ".bad"))
        self.assert_used(0)

        r = self.device_send(make_message("direct-1", 600), rcpts=(ALICE, BOB, CAROL))
        self.assertRegex(r[-1][1], r"^250 .*queued as SINK\d+", r)
        # 3 used: the next message's third recipient would pass the limit
        r = self.device_send(make_message("direct-2", 600), rcpts=(DAN, ERIN, ALICE))
        self.assertEqual([c for c, _ in r], [250, 250, 250, 451], r)
        self.assertEqual(r[-1][1], "451 4.7.1 The daily recipient budget of account scanners "
                         "is used (3 of 5 in 24 hours), try again later")
        # the device goes on with the two accepted ones
        dev = Device(self.port)
        try:
            out = [dev.cmd(b"MAIL FROM:<copier@contoso.test>"), dev.cmd(b"RCPT TO:<" +
                   DAN.encode() + b">"), dev.cmd(b"RCPT TO:<" + ERIN.encode() + b">"),
                   dev.cmd(b"RCPT TO:<" + ALICE.encode() + b">")]
            self.assertEqual([c for c, _ in out], [250, 250, 250, 451], out)
            self.assertEqual(dev.cmd(b"DATA")[0], 354)
            dev.sock.sendall(stuff(make_message("direct-3", 600)))
            code, text = dev.reply()
            self.assertEqual(code, 250, text)
            # the budget is used: the next MAIL hears 451 at once
            code, text = dev.cmd(b"MAIL FROM:<copier@contoso.test>")
            self.assertEqual(code, 451, text)
            self.assertIn("4.7.1 The daily recipient budget of account scanners is used "
                          "(5 of 5 in 24 hours)", text)
        finally:
            dev.quit()
        msgs = self.sink_settled(2, settle=0.5)
        self.assertEqual([sorted(m["rcpt_tos"]) for m in msgs],
                         [sorted([ALICE, BOB, CAROL]), sorted([DAN, ERIN])])
        self.assert_used(5)
        self.assertEqual(self.metrics()["account_budget_held_total"], 3)
        # one hold line per hold start: direct-2's third recipient; after a MAIL that fitted
        # (event=account_budget_resume), direct-3's; the last MAIL is the same hold
        self.assertEqual(self.hold_lines(), ["3", "3"])
        self.assertEqual(len(re.findall(r"event=account_budget_resume account=scanners used=3 "
                                        r"limit=5", self.log())), 1)


if __name__ == "__main__":
    unittest.main()
