#!/usr/bin/python3
"""Shared by the store-and-forward tests (test_spool_*.py, issue 4): a ProxyCase (test_relay.py)
with the account's delivery mode set, a device client that sends exact bytes and keeps every
reply, the `queue` command, and what is left in STATE_DIR/spool.

The messages are unique (a Message-ID and a random body per message) so that what arrived
upstream can be matched to what a device sent, byte for byte and in order.
"""
import base64
import json
import os
import re
import socket
import subprocess
import time

import sop_rig
from test_relay import BINARY, T, ProxyCase

FROM = "copier@contoso.test"
ALICE = "alice@contoso.test"


def make_message(tag, size=2048, dot_lines=True):
    """A unique message of about size bytes (CRLF; unstuffed: as the upstream must get it).
    With dot_lines some body lines start with '.', so the device must dot-stuff them and the
    proxy must stuff them again upstream."""
    head = ("From: Copier 3F <%s>\r\nTo: Alice <%s>\r\nSubject: Scan %s\r\n"
            "Message-ID: <%s@copier.contoso.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n" % (FROM, ALICE, tag, tag))
    body = b""
    i = 0
    while len(head) + len(body) < size:
        line = base64.b64encode(os.urandom(45))
        if dot_lines and i % 7 == 3:
            line = b"." + line
        body += line + b"\r\n"
        i += 1
    return head.encode() + body


def message_id(data):
    m = re.search(rb"^Message-ID: <([^>]+)>", data, re.M | re.I)
    return m.group(1).decode() if m else None


def stuff(msg):
    """DATA wire form: dot-stuffed, then the end-of-data line."""
    return re.sub(rb"(?m)^\.", b"..", msg) + b".\r\n"


class Device:
    """One copier connection: plain SMTP, one command at a time; every reply kept."""

    def __init__(self, port, timeout=T, helo=b"copier-3f.test"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=("127.0.0.1", 0))
        self.rf = self.sock.makefile("rb")
        self.replies = []
        try:
            code, _ = self.reply()
            if code != 220:
                raise ConnectionError("greeting %r" % self.replies)
            self.cmd(b"EHLO " + helo)
        except BaseException:
            self.close()
            raise

    def reply(self):
        lines = []
        for _ in range(100):
            line = self.rf.readline(4096)
            if not line:
                raise ConnectionError("connection closed after %r" % lines)
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        text = b"\n".join(lines).decode(errors="replace")
        self.replies.append(text)
        return int(lines[-1][:3]), text

    def cmd(self, line):
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def send(self, msg, mail_from=FROM, rcpts=(ALICE,)):
        """One transaction; stops at the first refusal. Returns [(code, text)]: the last one is
        the verdict the device shows."""
        out = [self.cmd(b"MAIL FROM:<" + mail_from.encode() + b">")]
        if out[-1][0] != 250:
            return out
        for r in rcpts:
            out.append(self.cmd(b"RCPT TO:<" + r.encode() + b">"))
            if out[-1][0] != 250:
                return out
        out.append(self.cmd(b"DATA"))
        if out[-1][0] != 354:
            return out
        self.sock.sendall(stuff(msg))
        out.append(self.reply())
        return out

    def quit(self):
        try:
            self.cmd(b"QUIT")
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass


class SpoolCase(ProxyCase):
    """ProxyCase with the spool's helpers."""

    def start_spool_proxy(self, delivery, upstream_port=None, **account):
        """The proxy with the account's delivery mode; no pacing unless asked for."""
        extra = {"delivery": delivery, "rate_limit": "0"}
        extra.update(account)
        return self.start_proxy(account_extra=extra, upstream_port=upstream_port)

    def device_send(self, msg, mail_from=FROM, rcpts=(ALICE,), timeout=T):
        d = Device(self.port, timeout=timeout)
        try:
            return d.send(msg, mail_from, rcpts)
        finally:
            d.quit()

    def assert_accepted(self, replies, what="the message"):
        self.assertEqual(replies[-1][0], 250, "the device did not hear 250 for %s: %r"
                         % (what, replies))
        self.assertFalse([r for r in replies if r[0] >= 400], replies)

    # -- the spool on disk
    @property
    def spool_dir(self):
        return os.path.join(self.tmp, "state", "spool")

    def spool_ids(self):
        """Queue ids of the committed messages (ID.env in spool/queue), sorted."""
        try:
            names = os.listdir(os.path.join(self.spool_dir, "queue"))
        except FileNotFoundError:
            return []
        return sorted(n[:-4] for n in names if n.endswith(".env"))

    def spool_files(self):
        """Every file left in spool/queue and spool/tmp."""
        out = []
        for sub in ("queue", "tmp"):
            try:
                out += [sub + "/" + n for n in os.listdir(os.path.join(self.spool_dir, sub))]
            except FileNotFoundError:
                pass
        return sorted(out)

    def wait_spool_empty(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.spool_files():
                return
            time.sleep(0.05)
        self.fail("the spool still holds %r; queue:\n%s\nlog tail:\n%s"
                  % (self.spool_files(), self.queue("--json")[1], self.log()[-3000:]))

    def wait_spooled(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.spool_ids()
            if len(ids) >= n:
                return ids
            time.sleep(0.05)
        self.fail("%d message(s) in the spool, expected %d; log tail:\n%s"
                  % (len(self.spool_ids()), n, self.log()[-3000:]))

    # -- `smtp-oauth-proxy --config F queue ...` (the running daemon, over the control socket)
    def queue(self, *args):
        r = subprocess.run([BINARY, "--config", self.cfg, "queue"] + list(args),
                           capture_output=True, timeout=T, stdin=subprocess.DEVNULL)
        out = r.stdout.decode(errors="replace")
        err = r.stderr.decode(errors="replace")
        self.assertNotRegex(err, r"(Sanitizer|runtime error:)", "sanitizer report")
        return r.returncode, out, err

    def queue_list(self):
        """`queue --json`: the queued messages as the daemon lists them."""
        rc, out, err = self.queue("--json")
        self.assertEqual(rc, 0, "queue --json failed: %s%s" % (out, err))
        doc = json.loads(out)
        self.assertIsInstance(doc.get("queue"), list, out)   # {"queue": [...], "messages": N}
        self.assertEqual(doc.get("messages"), len(doc["queue"]), out)
        return doc["queue"]

    def queue_flush(self, *ids):
        rc, out, err = self.queue("flush", *ids)
        self.assertEqual(rc, 0, "queue flush failed: %s%s" % (out, err))

    # -- upstream
    def upstream_bodies(self, msgs):
        """What arrived at the sink through Dovecot, without Dovecot's Received: header."""
        return [sop_rig.split_received(m["data"])[1] for m in msgs]

    def sink_settled(self, n, timeout=30, settle=1.0):
        """Wait for n messages at the sink, then a moment more: a duplicate would show."""
        msgs = self.rig.sink_wait(n, timeout)
        self.assertGreaterEqual(len(msgs), n, "only %d of %d messages arrived upstream; "
                                "log tail:\n%s" % (len(msgs), n, self.log()[-3000:]))
        time.sleep(settle)
        return self.rig.sink_messages()
