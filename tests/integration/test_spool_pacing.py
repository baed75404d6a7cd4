#!/usr/bin/python3
"""Pacing to Exchange's limit (issue 4): 35 messages sent within a few seconds to an account with
rate_limit = 30 (the default delivery = direct-then-spool). Every device hears 250 at once (the
excess is spooled, never refused); at the upstream no more than 30 messages start in any 60 s
(the sink's arrival times); all 35 arrive within about 70 s. The only minute-long test.

Run:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 tests/integration/test_spool_pacing.py -v
"""
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_relay  # noqa: E402
from spool_case import SpoolCase, make_message, message_id  # noqa: E402

N = 35
RATE = 30
WINDOW = 60.0
SLACK = 1.0     # seconds: the sink sees a message a little after the proxy started it


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


class TestSpoolPacing(SpoolCase):
    def test_35_messages_paced_to_30_per_minute(self):
        self.start_spool_proxy("direct-then-spool", rate_limit=str(RATE))
        msgs = [make_message("paced-%02d" % i, size=1500) for i in range(N)]
        results = [None] * N
        t0 = time.time()

        def device(k):
            for i in range(k, N, 5):
                t = time.monotonic()
                results[i] = (self.device_send(msgs[i]), time.monotonic() - t)

        threads = [threading.Thread(target=device, args=(k,), daemon=True) for k in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        sent_in = time.time() - t0
        for i, r in enumerate(results):
            self.assertIsNotNone(r, "message %d was not answered" % i)
            self.assert_accepted(r[0], "message %d" % i)
        self.assertLess(sent_in, 20, "the devices waited for the pace (%.1f s)" % sent_in)

        msgs_up = self.sink_settled(N, timeout=WINDOW + 25, settle=1.0)
        self.assertEqual(len(msgs_up), N, "delivered %d times" % len(msgs_up))
        self.assertEqual(sorted(message_id(b) for b in self.upstream_bodies(msgs_up)),
                         sorted(message_id(m) for m in msgs))
        times = sorted(m["time"] for m in msgs_up)
        for i in range(len(times) - RATE):
            span = times[i + RATE] - times[i]
            self.assertGreaterEqual(span, WINDOW - SLACK,
                                    "%d messages within %.1f s at the upstream (rate_limit = %d)"
                                    % (RATE + 1, span, RATE))
        self.assertLessEqual(times[-1] - t0, WINDOW + 15,
                             "the last message arrived %.1f s after the first was sent"
                             % (times[-1] - t0))
        sys.stderr.write("\npacing: %d sent in %.1f s; at the upstream: first %.1f s, 30th "
                         "%.1f s, 31st %.1f s, last %.1f s after the first send\n"
                         % (N, sent_in, times[0] - t0, times[RATE - 1] - t0, times[RATE] - t0,
                            times[-1] - t0))
        self.wait_spool_empty()


if __name__ == "__main__":
    unittest.main()
