#!/usr/bin/python3
"""`smtp-oauth-proxy queue ...` against the running daemon (same rig and harness as
test_relay.py), with the rig's real Dovecot upstream: messages committed to the spool while the
daemon is stopped (written here in the spool's documented format, docs/spool.md, with a next
attempt an hour away so they wait) are found at start-up, `queue` lists them (table and JSON,
oldest first), `queue hold` keeps one back (on disk: the envelope says held), `queue release`
lets it go at once, `queue delete` removes one from the spool without delivering it, `queue flush
ID` delivers that one now (byte for byte at the sink, gone from the spool), `queue flush` the
rest.
Messages from devices with delivery = spool while the upstream is down are listed with the
connection failure, and delivered by a flush once it is back. A refused recipient is bounced
(the DSN reaches the sender), a deferred one stays listed with the upstream's words. Bad ids are
refused before anything is sent; without a daemon the commands say so.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \\
              tests/integration/test_queue_cli.py -v TestQueueCli.test_list_hold_release_delete_flush
"""
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import re
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402,F401
import test_relay  # noqa: E402
from test_relay import T, ProxyCase  # noqa: E402


def setUpModule():
    test_relay.setUpModule()


def tearDownModule():
    test_relay.tearDownModule()


def field(name, value):
    if isinstance(value, str):
        value = value.encode()
    return b"%s %d:%s\n" % (name.encode(), len(value), value)


def envelope_record(qid, account, mail_from, rcpts, created, body, next_attempt=0, held=0,
                    attempts=0, last_error=""):
    """An envelope record, version 1, exactly as docs/spool.md describes it."""
    rec = b"sop-spool 1\n" + field("id", qid) + field("account", account)
    rec += field("device", "copier") + field("from", mail_from)
    for r in rcpts:
        rec += field("rcpt", r)
    rec += field("smtputf8", "0") + field("8bitmime", "0") + field("created", str(created))
    rec += field("size", str(len(body)))
    rec += field("body_sha256", hashlib.sha256(body).hexdigest())
    rec += field("attempts", str(attempts)) + field("next_attempt", str(next_attempt))
    rec += field("last_error", last_error) + field("held", str(held))
    return rec + field("end", hashlib.sha256(rec).hexdigest())


def spool_commit(state_dir, account, mail_from, rcpts, created, body, **kw):
    """Commit a message the way the spool does (body first, then the envelope). The daemon
    must not be running: it owns the spool."""
    qid = secrets.token_hex(8)
    root = os.path.join(state_dir, "spool")
    for d in ("", "tmp", "queue", "corrupt"):
        os.makedirs(os.path.join(root, d), mode=0o700, exist_ok=True)
    q = os.path.join(root, "queue")
    trailer = b"SOP-END %s %016x\n" % (qid.encode(), len(body))
    for name, data in (("%s.body" % qid, body + trailer),
                       ("%s.env" % qid, envelope_record(qid, account, mail_from, rcpts, created,
                                                        body, **kw))):
        fd = os.open(os.path.join(q, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return qid


def body(n):
    return (b"From: copier@contoso.test\r\nTo: alice@contoso.test\r\nSubject: queued %d\r\n"
            b"Message-ID: <queued-%d@copier.test>\r\n\r\nscan number %d\r\n" % (n, n, n))


class TestQueueCli(ProxyCase):
    def run_cmd(self, *args):
        r = subprocess.run([test_relay.BINARY, "--config", self.cfg] + list(args),
                           capture_output=True, timeout=T * 3)
        return r.returncode, r.stdout.decode(), r.stderr.decode()

    def queue_json(self):
        rc, out, err = self.run_cmd("queue", "--json")
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["source"], "daemon")
        return doc, {m["id"]: m for m in doc["queue"]}

    def metrics(self):
        """The queue's figures from /metrics."""
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.mport, timeout=T) as r:
            text = r.read().decode()
        return {m.group(1): float(m.group(2)) for m in
                re.finditer(r"^smtp_oauth_proxy_(queue_\w+) (\S+)$", text, re.M)}

    def spooled(self, qid):
        return os.path.exists(os.path.join(self.state, "spool", "queue", qid + ".env"))

    def env_text(self, qid):
        with open(os.path.join(self.state, "spool", "queue", qid + ".env"), "rb") as f:
            return f.read()

    def wait_gone(self, qid, timeout=T):
        deadline = time.monotonic() + timeout
        while self.spooled(qid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(self.spooled(qid), "message %s still in the spool" % qid)

    def test_list_hold_release_delete_flush(self):
        self.state = os.path.join(self.tmp, "state")
        os.makedirs(self.state, mode=0o700, exist_ok=True)
        now = int(time.time())
        later = now + 3600   # nobody delivers them until they are flushed
        a = spool_commit(self.state, "scanners", "copier@contoso.test", ["alice@contoso.test"],
                         now - 300, body(1), next_attempt=later, attempts=2,
                         last_error="451 4.4.1 Upstream server unavailable (connect: refused)")
        b = spool_commit(self.state, "scanners", "copier@contoso.test",
                         ["alice@contoso.test", "bob@contoso.test"], now - 200, body(2),
                         next_attempt=later, attempts=1)
        c = spool_commit(self.state, "scanners", "", ["carol@contoso.test"], now - 100, body(3),
                         next_attempt=later)
        d = spool_commit(self.state, "scanners", "copier@contoso.test", ["dave@contoso.test"],
                         now - 50, body(4), next_attempt=later)
        self.mport = sop_rig.free_port()
        self.start_proxy(proxy_extra={"metrics_listen": "127.0.0.1:%d" % self.mport})
        self.wait_log(r"event=queue_recovered messages=4 ")
        m = self.metrics()
        self.assertEqual((m["queue_messages"], m["queue_held"], m["queue_delivered_total"],
                          m["queue_deferred_total"], m["queue_bounced_total"]), (4, 0, 0, 0, 0))
        self.assertGreaterEqual(m["queue_oldest_age_seconds"], 300)

        # the table: a header, one row per message, oldest first, and the summary
        rc, out, err = self.run_cmd("queue")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertRegex(lines[1], r"^ID +ACCOUNT +SENDER +RECIPIENTS +SIZE +AGE +ATTEMPTS +"
                                   r"STATE +LAST-ERROR$")
        self.assertEqual([ln.split()[0] for ln in lines[2:6]], [a, b, c, d])
        self.assertRegex(lines[2], r"^%s +scanners +<copier@contoso\.test> +alice@contoso\.test "
                                   r"+\d+ +5m0\ds +2 +queued +451 4\.4\.1 Upstream server "
                                   r"unavailable \(connect: refused\)$" % a)
        self.assertIn("alice@contoso.test (+1)", lines[3])
        self.assertRegex(lines[4], r"^%s +scanners +<> +carol@contoso\.test " % c)
        self.assertEqual(lines[6], "4 messages (0 held, 0 sending)")

        doc, msgs = self.queue_json()
        self.assertEqual([m["id"] for m in doc["queue"]], [a, b, c, d])
        self.assertEqual(doc["messages"], 4)
        m = msgs[b]
        self.assertEqual((m["account"], m["device"], m["from"], m["rcpts"], m["nrcpts"]),
                         ("scanners", "copier", "copier@contoso.test",
                          ["alice@contoso.test", "bob@contoso.test"], 2))
        self.assertEqual((m["size"], m["created"], m["attempts"], m["next_attempt"], m["state"]),
                         (len(body(2)), now - 200, 1, later, "queued"))

        # hold: on disk first, and it survives in the listing
        rc, out, err = self.run_cmd("queue", "hold", a)
        self.assertEqual((rc, out), (0, "%s held\n" % a), err)
        self.assertIn(b"\nheld 1:1\n", self.env_text(a))
        doc, msgs = self.queue_json()
        self.assertEqual((msgs[a]["state"], doc["held"]), ("held", 1))
        self.assertEqual(self.metrics()["queue_held"], 1)
        # a held message is not flushed
        rc, out, err = self.run_cmd("queue", "flush", a)
        self.assertEqual(rc, 1)
        self.assertIn("is held", err)
        # release: due at once, delivered through Dovecot, removed from the spool
        rc, out, err = self.run_cmd("queue", "release", a)
        self.assertEqual((rc, out), (0, "%s released\n" % a), err)
        msg = self.one_message(timeout=T)
        self.assertEqual(sop_rig.split_received(msg["data"])[1], body(1))
        self.wait_gone(a)
        self.wait_log(r"event=queue_delivered queue_id=%s account=scanners attempts=3 " % a)
        self.rig.sink_clear()

        # delete: gone from the spool, nothing delivered
        rc, out, err = self.run_cmd("queue", "delete", c)
        self.assertEqual((rc, out), (0, "%s deleted\n" % c), err)
        self.assertFalse(self.spooled(c))
        self.assertFalse(os.path.exists(os.path.join(self.state, "spool", "queue", c + ".body")))
        rc, out, err = self.run_cmd("queue", "delete", c)
        self.assertEqual(rc, 1)
        self.assertIn("no message %s in the queue" % c, err)

        # flush one: delivered now through Dovecot, byte for byte, and removed from the spool
        rc, out, err = self.run_cmd("queue", "flush", b)
        self.assertEqual((rc, out), (0, "%s due now\n" % b), err)
        msg = self.one_message(timeout=T)
        self.assertEqual(msg["mail_from"], "copier@contoso.test")
        self.assertEqual(sorted(msg["rcpt_tos"]), ["alice@contoso.test", "bob@contoso.test"])
        self.assertEqual(sop_rig.split_received(msg["data"])[1], body(2))
        self.wait_gone(b)
        self.wait_log(r"event=queue_delivered queue_id=%s account=scanners attempts=2 " % b)

        # flush the rest
        self.rig.sink_clear()
        rc, out, err = self.run_cmd("queue", "flush")
        self.assertEqual((rc, out), (0, "every message not held: due now\n"), err)
        msg = self.one_message(timeout=T)
        self.assertEqual(sop_rig.split_received(msg["data"])[1], body(4))
        self.wait_gone(d)
        doc, msgs = self.queue_json()
        self.assertEqual((doc["queue"], doc["messages"]), ([], 0))
        rc, out, err = self.run_cmd("queue")
        self.assertEqual(rc, 0, err)
        self.assertIn("the queue is empty", out)
        m = self.metrics()
        self.assertEqual((m["queue_messages"], m["queue_held"], m["queue_oldest_age_seconds"],
                          m["queue_delivered_total"], m["queue_bounced_total"]), (0, 0, 0, 3, 0))

    def test_refused_bounced_tempfail_listed(self):
        """One message to a recipient the upstream refuses (550), one it accepts and one it
        defers (451): the accepted one arrives, a DSN from <> reaches the sender, and the queue
        keeps only the deferred recipient, with its attempt and the upstream's words."""
        self.state = os.path.join(self.tmp, "state")
        os.makedirs(self.state, mode=0o700, exist_ok=True)
        now = int(time.time())
        qid = spool_commit(self.state, "scanners", "copier@contoso.test",
                           ["refuse-x@contoso.test", "alice@contoso.test",
                            "tempfail-y@contoso.test"], now - 60, body(5))
        self.start_proxy()
        msgs = self.rig.sink_wait(2, T)
        self.assertEqual(len(msgs), 2, msgs)
        orig = [m for m in msgs if m["mail_from"] == "copier@contoso.test"]
        dsn = [m for m in msgs if m["mail_from"] == ""]
        self.assertEqual(len(orig), 1)
        self.assertEqual(orig[0]["rcpt_tos"], ["alice@contoso.test"])
        self.assertEqual(len(dsn), 1)
        self.assertEqual(dsn[0]["rcpt_tos"], ["copier@contoso.test"])
        text = dsn[0]["data"]
        self.assertIn(b"Final-Recipient: rfc822; refuse-x@contoso.test", text)
        self.assertNotIn(b"Final-Recipient: rfc822; alice@contoso.test", text)
        self.assertIn(b"Status: 5.1.1", text)
        self.assertIn(b"X-Queue-ID: %s" % qid.encode(), text)
        self.wait_log(r"event=queue_retry queue_id=%s account=scanners attempts=1 rcpts=1 "
                      r"next_in=\d+s conn_failure=0 " % qid)
        doc, msgs = self.queue_json()
        self.assertEqual(list(msgs), [qid])
        m = msgs[qid]
        self.assertEqual((m["rcpts"], m["attempts"], m["state"]),
                         (["tempfail-y@contoso.test"], 1, "queued"))
        self.assertRegex(m["last_error"], r"^451 4\.3\.0 ")
        self.assertGreater(m["next_attempt"], now + 30)
        self.assertIn(b"\nrcpt 23:tempfail-y@contoso.test\nsmtputf8", self.env_text(qid))

    def test_spooled_by_devices_upstream_down_then_back(self):
        """delivery = spool with the upstream down: each device hears 250 with its queue id, the
        queue lists the messages with the connection failure, one is held; the upstream comes
        back (a reload points the account at Dovecot), `queue flush` delivers the other, the
        held one waits until released."""
        closed = sop_rig.free_port()
        self.start_proxy(upstream_port=closed, account_extra={"delivery": "spool"})
        self.state = os.path.join(self.tmp, "state")
        ids = []
        for n in (6, 7):
            s = self.smtp()
            s.ehlo("copier.test")
            self.assertEqual(s.mail("copier@contoso.test")[0], 250)
            self.assertEqual(s.rcpt("alice@contoso.test")[0], 250)
            code, reply = s.data(body(n))
            self.assertEqual(code, 250, reply)
            m = re.match(rb"2\.0\.0 Ok: queued as ([0-9a-f]{16})$", reply)
            self.assertIsNotNone(m, reply)
            ids.append(m.group(1).decode())
            s.quit()
        first, second = ids
        self.wait_log(r"event=queue_retry queue_id=%s account=scanners attempts=1 rcpts=1 "
                      r"next_in=\d+s conn_failure=1 " % first)
        doc, msgs = self.queue_json()
        self.assertEqual([m["id"] for m in doc["queue"]], ids)
        self.assertEqual((msgs[first]["attempts"], msgs[first]["state"]), (1, "queued"))
        self.assertIn("Connection refused", msgs[first]["last_error"])
        # the run stopped at the first: the second was not tried against a dead upstream
        self.assertEqual(msgs[second]["attempts"], 0)
        rc, out, err = self.run_cmd("queue", "hold", second)
        self.assertEqual(rc, 0, err)

        with open(self.cfg) as f:
            text = f.read()
        with open(self.cfg, "w") as f:
            f.write(text.replace("port = %d\n" % closed, "port = %d\n" % self.rig.dovecot_port))
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.wait_log(r"event=reloaded ")
        rc, out, err = self.run_cmd("queue", "flush")
        self.assertEqual(rc, 0, err)
        msg = self.one_message(timeout=T)
        self.assertEqual(sop_rig.split_received(msg["data"])[1], body(6))
        self.wait_gone(first)
        self.assertTrue(self.spooled(second))
        self.rig.sink_clear()
        rc, out, err = self.run_cmd("queue", "release", second)
        self.assertEqual(rc, 0, err)
        msg = self.one_message(timeout=T)
        self.assertEqual(sop_rig.split_received(msg["data"])[1], body(7))
        self.wait_gone(second)

    def test_bad_ids_and_no_daemon(self):
        self.start_proxy()
        for bad in ("0123", "0123456789ABCDEF", "../../etc/passwd", "0123456789abcdeg"):
            rc, out, err = self.run_cmd("queue", "hold", bad)
            self.assertEqual(rc, 2, err)
            self.assertIn("is not a queue id", err)
        for args in (("queue", "hold"), ("queue", "delete", "0123456789abcdef", "x"),
                     ("queue", "flush", "a", "b"), ("queue", "purge"), ("queue", "--xml")):
            rc, out, err = self.run_cmd(*args)
            self.assertEqual(rc, 2, args)
            self.assertIn("usage:", err)
        rc, out, err = self.run_cmd("queue", "release", "0123456789abcdef")
        self.assertEqual(rc, 1)
        self.assertIn("no message 0123456789abcdef in the queue", err)
        self.stop_proxy()
        self.proxy = None
        for args in (("queue",), ("queue", "--json"), ("queue", "flush"),
                     ("queue", "delete", "0123456789abcdef")):
            rc, out, err = self.run_cmd(*args)
            self.assertEqual(rc, 1, args)
            self.assertIn("the daemon is not running (control socket ", err)
            self.assertIn("queue commands act on the running daemon", err)
            self.assertEqual(out, "")


if __name__ == "__main__":
    unittest.main()
