#!/usr/bin/python3
"""Store and forward (issue 4): delivery = spool and direct-then-spool against the rig's real
Dovecot submission upstream, and against a scripted Exchange (exchange_standin.py) for the
replies only Exchange gives.

  * the upstream is down for a while, then back: every device heard 250, `queue` lists the
    messages, and after `queue flush` each arrives exactly once, in the order sent, byte for
    byte; the spool is empty afterwards;
  * Exchange throttles (432 4.3.2) then accepts: the device heard 250, the message arrives once;
  * a permanent refusal (5xx at RCPT or at the end of DATA) of a spooled message: exactly one
    bounce (multipart/report, from <>) to the envelope sender or to bounce_to; none for a
    message from the null sender; in direct-then-spool the device hears the 5xx itself.

The retry backoff starts at 60 s: the tests make the queue try again at once with
`smtp-oauth-proxy --config F queue flush`.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_spool_delivery.py -v TestSpoolDelivery.test_outage_spool
"""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
import test_relay  # noqa: E402
from exchange_standin import ExchangeStandin  # noqa: E402
from spool_case import ALICE, FROM, SpoolCase, make_message, message_id  # noqa: E402

EXCHANGE = None
THROTTLED = "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=AM0PR02]"
SEND_AS_DENIED = ("554 5.2.252 SendAsDenied; scanners@contoso.test not allowed to send as "
                  "copier@contoso.test; STOREDRV.Submission.Exception:SendAsDeniedException")


def setUpModule():
    global EXCHANGE
    test_relay.setUpModule()
    rig = test_relay.RIG
    EXCHANGE = ExchangeStandin(sop_rig.free_port(), rig.cert_file, rig.key_file).start()


def tearDownModule():
    if EXCHANGE is not None:
        EXCHANGE.stop()
    test_relay.tearDownModule()


class TestSpoolDelivery(SpoolCase):
    def setUp(self):
        super().setUp()
        EXCHANGE.script = {}
        with EXCHANGE.lock:
            EXCHANGE.messages.clear()
        self.addCleanup(self.dovecot_up)

    def dovecot_up(self):
        if self.rig.dovecot.proc is None:
            self.rig.dovecot_start()

    def exchange_wait(self, n, timeout=20, settle=1.0):
        deadline = time.monotonic() + timeout
        while len(EXCHANGE.messages) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle)
        with EXCHANGE.lock:
            return list(EXCHANGE.messages)

    # ------------------------------------------------------------ upstream down, then back
    def outage_then_back(self, delivery, n=6):
        self.rig.dovecot_stop()
        self.start_spool_proxy(delivery)
        sent = []
        for i in range(n):
            msg = make_message("outage-%s-%d" % (delivery, i))
            self.assert_accepted(self.device_send(msg), "message %d while the upstream is down"
                                 % i)
            sent.append(msg)
        ids = self.wait_spooled(n)
        self.assertEqual(len(ids), n, ids)

        # `queue` lists every one of them, with its account, sender and recipient
        listing = self.queue_list()
        self.assertEqual(sorted(m["id"] for m in listing), ids, listing)
        for m in listing:
            self.assertEqual(m["account"], "scanners", m)
            self.assertEqual(m["from"], FROM, m)
            self.assertEqual(m["rcpts"], [ALICE], m)
            self.assertIn(m["state"], ("queued", "sending"), m)
        rc, text, err = self.queue()
        self.assertEqual(rc, 0, err)
        for i in ids:
            self.assertIn(i, text, "the plain listing misses %s:\n%s" % (i, text))
        self.assertEqual(self.rig.sink_messages(), [])

        # back: everything arrives once, in the order the devices sent it, byte for byte
        self.rig.dovecot_start()
        self.queue_flush()
        msgs = self.sink_settled(n)
        got = self.upstream_bodies(msgs)
        self.assertEqual([message_id(b) for b in got], [message_id(b) for b in sent],
                         "not delivered exactly once in order")
        self.assertEqual(got, sent, "a message changed on its way through the spool")
        for m in msgs:
            self.assertEqual(m["mail_from"], FROM)
            self.assertEqual(m["rcpt_tos"], [ALICE])
        self.wait_spool_empty()
        self.assertEqual(self.queue_list(), [])

    def test_outage_spool(self):
        self.outage_then_back("spool")

    def test_outage_direct_then_spool(self):
        self.outage_then_back("direct-then-spool")

    # ------------------------------------------------------------ Exchange throttles, then not
    def test_throttled_then_accepted(self):
        EXCHANGE.script = {"DATA": THROTTLED}
        self.start_spool_proxy("direct-then-spool", upstream_port=EXCHANGE.port)
        msg = make_message("throttled")
        self.assert_accepted(self.device_send(msg), "a throttled message (direct-then-spool)")
        self.assertIn("DATA", EXCHANGE.seen, "the proxy did not try the upstream first")
        self.assertEqual(len(self.wait_spooled(1)), 1)
        [queued] = self.queue_list()
        self.assertIn("4.3.2", queued.get("last_error") or "", queued)
        self.assertEqual(EXCHANGE.messages, [])

        EXCHANGE.script = {}
        self.queue_flush()
        got = self.exchange_wait(1)
        self.assertEqual(len(got), 1, "delivered %d times" % len(got))
        self.assertEqual(got[0]["data"], msg)
        self.assertEqual(got[0]["mail_from"], FROM)
        self.assertEqual(got[0]["rcpts"], [ALICE])
        self.wait_spool_empty()

    # ------------------------------------------------------------ bounces
    def assert_dsn(self, m, to, refused, status, original):
        """m: what arrived upstream; exactly the bounce issue 4 asks for."""
        data = sop_rig.split_received(m["data"])[1] if "rcpt_tos" in m else m["data"]
        self.assertEqual(m["mail_from"], "", "a bounce must come from the null sender <>")
        self.assertEqual(m.get("rcpt_tos", m.get("rcpts")), [to])
        self.assertRegex(data, rb"(?mi)^Content-Type: multipart/report;")
        self.assertRegex(data, rb"(?i)report-type=\"?delivery-status")
        self.assertRegex(data, rb"(?mi)^Content-Type: message/delivery-status")
        self.assertRegex(data, rb"(?mi)^Final-Recipient: rfc822; ?" + refused.encode())
        self.assertRegex(data, rb"(?mi)^Action: failed")
        self.assertRegex(data, rb"(?mi)^Status: " + status.encode())
        self.assertRegex(data, rb"(?mi)^Auto-Submitted: auto-replied")
        # the original's header block, never its body
        self.assertIn(b"Message-ID: <%s>" % message_id(original).encode(), data)
        self.assertNotIn(original.split(b"\r\n\r\n", 1)[1][:200], data)

    def test_rcpt_refused_bounces_to_sender(self):
        """One recipient refused at RCPT (550 5.1.1 from the sink through Dovecot), one
        accepted: the message goes to the one, a single bounce for the other to the sender."""
        self.start_spool_proxy("spool")
        msg = make_message("refused-rcpt")
        self.assert_accepted(self.device_send(msg, rcpts=(ALICE, "refuse-1@contoso.test")))
        msgs = self.sink_settled(2)
        self.assertEqual(len(msgs), 2, [(m["mail_from"], m["rcpt_tos"]) for m in msgs])
        orig = [m for m in msgs if m["mail_from"] == FROM]
        dsns = [m for m in msgs if m["mail_from"] == ""]
        self.assertEqual(len(orig), 1)
        self.assertEqual(orig[0]["rcpt_tos"], [ALICE])
        self.assertEqual(self.upstream_bodies(orig)[0], msg)
        self.assertEqual(len(dsns), 1, "expected exactly one bounce")
        self.assert_dsn(dsns[0], FROM, "refuse-1@contoso.test", "5.1.1", msg)
        self.wait_spool_empty()

    def test_rcpt_refused_bounces_to_bounce_to(self):
        self.start_spool_proxy("spool", bounce_to="postmaster@contoso.test")
        msg = make_message("refused-bounce-to")
        self.assert_accepted(self.device_send(msg, rcpts=("refuse-2@contoso.test",)))
        msgs = self.sink_settled(1)
        self.assertEqual(len(msgs), 1, [(m["mail_from"], m["rcpt_tos"]) for m in msgs])
        self.assert_dsn(msgs[0], "postmaster@contoso.test", "refuse-2@contoso.test", "5.1.1",
                        msg)
        self.wait_spool_empty()

    def test_null_sender_never_bounced(self):
        self.start_spool_proxy("spool", bounce_to="postmaster@contoso.test")
        msg = make_message("null-sender")
        self.assert_accepted(self.device_send(msg, mail_from="",
                                              rcpts=("refuse-3@contoso.test",)))
        qid = self.wait_log(r"event=message .*result=queued .*queue_id=([0-9a-f]{16})").group(1)
        self.wait_spool_empty()   # tried, refused for good, given up
        self.wait_log(r"event=deliver .*queue_id=%s .*result=refused .*5\.1\.1" % qid)
        time.sleep(1.5)
        self.assertEqual(self.rig.sink_messages(), [], "a message from <> was bounced")
        self.assertNotIn("event=queue_bounced", self.log())
        self.wait_log(r"event=queue_refused_not_bounced queue_id=%s .*null sender" % qid)
        self.assertEqual(self.queue_list(), [])

    def test_data_refused_bounces_once(self):
        """Exchange refuses the message at the end of DATA (SendAsDenied) but takes the
        bounce: one DSN to the sender, from <>, with the upstream's reply in it."""
        EXCHANGE.script = {"DATA": lambda txn: SEND_AS_DENIED if txn["mail_from"] else None}
        self.start_spool_proxy("spool", upstream_port=EXCHANGE.port)
        msg = make_message("refused-data")
        self.assert_accepted(self.device_send(msg))
        got = self.exchange_wait(1, settle=1.5)
        self.assertEqual(len(got), 1, [(m["mail_from"], m["rcpts"]) for m in got])
        self.assert_dsn(got[0], FROM, ALICE, "5.2.252", msg)
        self.assertIn(b"SendAsDenied", got[0]["data"])
        self.wait_spool_empty()

    def test_direct_then_spool_5xx_reaches_device(self):
        """A permanent refusal is the device's to see in direct-then-spool: no spool, no DSN."""
        self.start_spool_proxy("direct-then-spool")
        replies = self.device_send(make_message("dts-refused-rcpt"),
                                   rcpts=("refuse-4@contoso.test",))
        self.assertEqual(replies[-1][0] // 100, 5, replies)
        self.assertIn("5.1.1", replies[-1][1])
        time.sleep(1.0)
        self.assertEqual(self.rig.sink_messages(), [])
        self.assertEqual(self.spool_files(), [])

        self.start_spool_proxy("direct-then-spool", upstream_port=EXCHANGE.port)
        EXCHANGE.script = {"DATA": SEND_AS_DENIED}
        replies = self.device_send(make_message("dts-refused-data"))
        self.assertEqual(replies[-1][0], 554, replies)
        self.assertIn("5.2.252", replies[-1][1])
        EXCHANGE.script = {}
        time.sleep(1.0)
        self.assertEqual(EXCHANGE.messages, [], "a bounce or a retry reached the upstream")
        self.assertEqual(self.spool_files(), [])


if __name__ == "__main__":
    unittest.main()
