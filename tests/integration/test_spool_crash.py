#!/usr/bin/python3
"""kill -9 of the proxy under load (issue 4): several devices send to an account with
delivery = spool while the queue delivers to the rig's Dovecot; the proxy is killed (SIGKILL)
half-way and started again on the same state_dir. Every message a device heard 250 for must
then arrive upstream, byte for byte (less Dovecot's Received: header); a message may arrive
twice only if it was being delivered at the kill (at most max_upstream_connections of them).
The figures (250s, deliveries, duplicates) are printed.

Run:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 tests/integration/test_spool_crash.py -v
"""
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from spool_case import Device, SpoolCase, make_message, message_id  # noqa: E402
from test_relay import BINARY  # noqa: E402

DEVICES = 8
MESSAGES = 200
KILL_AFTER = 90        # 250s heard before the kill
MAX_CONNS = 3
LOAD_TIMEOUT = 90      # seconds: bound on the load phase


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestSpoolCrash(SpoolCase):
    def test_kill9_under_load(self):
        self.start_spool_proxy("spool", max_upstream_connections=str(MAX_CONNS))
        rnd = random.Random(4)
        msgs = [make_message("crash-%03d" % i, size=rnd.choice((600, 3000, 20000, 70000)))
                for i in range(MESSAGES)]
        lock = threading.Lock()
        state = {"next": 0, "ok": [], "failed": [], "killed": False}
        deadline = time.monotonic() + LOAD_TIMEOUT

        def worker():
            while time.monotonic() < deadline:
                with lock:
                    if state["next"] >= MESSAGES or state["killed"]:
                        return
                    i = state["next"]
                    state["next"] += 1
                try:
                    d = Device(self.port, timeout=20)
                    try:
                        replies = d.send(msgs[i])
                    finally:
                        d.close()
                    good = replies[-1][0] == 250
                except OSError:
                    good = False
                with lock:
                    (state["ok"] if good else state["failed"]).append(i)
                    if not good and not state["killed"]:
                        self.fail_reason = "message %d refused before the kill" % i

        self.fail_reason = None
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(DEVICES)]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            with lock:
                if len(state["ok"]) >= KILL_AFTER or state["next"] >= MESSAGES:
                    break
            time.sleep(0.01)
        # kill -9: no clean-up of any kind in the proxy
        p = self.proxy
        with lock:
            state["killed"] = True   # no new message starts; failures from here on are expected
        p.proc.kill()
        p.proc.wait(10)
        delivered_before = len(self.rig.sink_messages())
        for t in threads:
            t.join(30)
        self.assertFalse([t for t in threads if t.is_alive()], "a device thread hung")
        self.assertIsNone(self.fail_reason)
        p.logf.close()
        p.proc = None
        acked = sorted(state["ok"])
        queued_at_kill = len(self.spool_ids())

        # the same config, the same state_dir
        self.proxy = sop_rig.ProxyProcess(BINARY, self.cfg, os.path.join(
            self.tmp, "proxy-restarted.log"))
        self.proxy.start(ports=[self.port])
        # every committed message found again, none torn (quarantined) by the kill
        m = self.wait_log(r"event=queue_recovered messages=(\d+) held=\d+ quarantined=(\d+)")
        self.assertEqual(int(m.group(1)), queued_at_kill, "recovered a different number than the "
                         "spool held at the kill")
        self.assertEqual(int(m.group(2)), 0, "a message was quarantined after kill -9")

        want = {message_id(msgs[i]): msgs[i] for i in acked}
        end = time.monotonic() + 120
        while time.monotonic() < end:
            got_ids = {message_id(b) for b in self.upstream_bodies(self.rig.sink_messages())}
            if set(want) <= got_ids and not self.spool_ids():
                break
            time.sleep(0.2)
        time.sleep(1.0)
        arrived = self.upstream_bodies(self.rig.sink_messages())
        by_id = {}
        for b in arrived:
            by_id.setdefault(message_id(b), []).append(b)
        missing = sorted(set(want) - set(by_id))
        self.assertEqual(missing, [], "messages the devices heard 250 for were lost")
        for mid, body in want.items():
            for b in by_id[mid]:
                self.assertEqual(b, body, "%s changed on its way" % mid)
        sent_ids = {message_id(m) for m in msgs}
        self.assertEqual(set(by_id) - sent_ids, set(), "something nobody sent arrived")
        dups = {mid: len(v) for mid, v in by_id.items() if len(v) > 1}
        extra = sorted(set(by_id) - set(want))   # committed, but the device never heard 250
        for mid in extra:
            self.assertEqual(by_id[mid][0], msgs[int(mid.split("-")[1].split("@")[0])])
        sys.stderr.write(
            "\nkill -9 under load: %d devices, %d messages started, %d heard 250 before the "
            "kill, %d failed (in flight at the kill), %d in the spool at the kill, %d delivered "
            "before it; after the restart: %d distinct delivered, %d duplicates %s, %d delivered "
            "that no device heard 250 for\n"
            % (DEVICES, state["next"], len(acked), len(state["failed"]), queued_at_kill,
               delivered_before, len(by_id), sum(v - 1 for v in dups.values()), dups, len(extra)))
        self.assertLessEqual(sum(v - 1 for v in dups.values()), MAX_CONNS,
                             "more duplicates than messages that can be in flight upstream")
        self.assertTrue(all(v == 2 for v in dups.values()), dups)
        self.wait_spool_empty()


if __name__ == "__main__":
    unittest.main()
