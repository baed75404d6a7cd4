#!/usr/bin/python3
"""Logging to the journal, without the system's journald: the real binary, in a private mount
namespace (`unshare -r -m`) where a directory of this test's is bind-mounted over /run/systemd,
sends its entries with libsystemd's sd_journal_sendv to /run/systemd/journal/socket. libsystemd
has no setting for that path, hence the namespace, with a private /run in it. As root the
namespace needs no user namespace (`unshare -m`), which also works inside a chroot (CI's), where
the kernel refuses user namespaces. Without it these tests are skipped (a failure under CI=true: see sop_rig).

TestJournal: that socket is a datagram socket this test binds and reads in journald's native
protocol, so the exact entries are checked. TestRealJournald: a real systemd-journald of its
own (same trick, its journal files in the test's directory) receives them, and `journalctl -D`
finds them by field, as an administrator would.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_journal.py -v
"""
import json
import os
import shutil
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sop_rig import Rig, free_port, proxy_config, terminate_on_sigterm, wait_port  # noqa: E402
from sop_rig import _die_with_parent  # noqa: E402

BINARY = os.environ.get("SOP_BINARY", "")
T = 20  # seconds: a bound on every single wait
# Inside the namespace a private /run first: /run/systemd and /run/log then exist even where the
# root has none (a chroot's), and the host's journal socket is out of reach.
PRIVATE_RUN = ("mount -t tmpfs -o mode=755 sop-test-run /run && "
               "mkdir -p /run/systemd /run/log && ")
# A private mount namespace: root has CAP_SYS_ADMIN already; others map themselves to root in a
# user namespace first.
NS_CMD = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
MSG = b"Subject: journal test\r\n\r\nhello\r\n"


def parse_native(data):
    """journald's native protocol: "NAME=value\\n", or "NAME\\n" + le64 length + value + "\\n"
    for a value holding a newline. Returns [(name, value bytes)] in order."""
    fields = []
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            i = nl + 1
        else:
            name = line
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 1 + 8
            value = data[start:start + size]
            if data[start + size:start + size + 1] != b"\n":
                raise ValueError("bad binary field %r" % name)
            i = start + size + 1
        fields.append((name.decode(), value))
    return fields


class FakeJournal:
    """What a process sees as /run/systemd once d is bind-mounted there: journal/socket.
    A thread reads the socket all the time, as journald does: an unread datagram socket holds
    only net.unix.max_dgram_qlen entries (10 here), and then the proxy's next log line waits."""

    def __init__(self, d, listen=True):
        self.dir = d
        os.makedirs(os.path.join(d, "journal"))
        self.sock = None
        self.entries = []  # one [(name, value)] per datagram
        self.lock = threading.Lock()
        self.closed = False
        if listen:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(os.path.join(d, "journal", "socket"))
            self.sock.settimeout(0.1)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self):
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            e = parse_native(data)
            with self.lock:
                self.entries.append(e)

    def wait(self, pred, timeout=T):
        """Wait until pred(fields dict) holds for an entry; returns it or None."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                for e in self.entries:
                    if pred(dict(e)):
                        return dict(e)
            if not self.sock or time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def close(self):
        self.closed = True
        if self.sock:
            self.reader.join(5)
            self.sock.close()


def unshare_works():
    """The namespace trick: unshare(1) present, user and mount namespaces allowed here."""
    if not shutil.which("unshare"):
        return False
    d = tempfile.mkdtemp(prefix="sop-ns-")
    try:
        os.mkdir(os.path.join(d, "x"))
        r = subprocess.run(NS_CMD + ["sh", "-c",
                            PRIVATE_RUN + 'mount --bind "$0" /run/systemd && test -d /run/systemd/x', d],
                           capture_output=True, timeout=T)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


def setUpModule():
    global RIG, UNSHARE
    # No binary is a failure, not a skip: CI must not go green without the proxy.
    if not BINARY or not os.access(BINARY, os.X_OK):
        raise RuntimeError("SOP_BINARY is not set or not executable (%r)" % BINARY)
    UNSHARE = unshare_works()
    RIG = Rig(with_dovecot=False)
    RIG.__enter__()


def tearDownModule():
    RIG.__exit__(None, None, None)


class JournalCase(unittest.TestCase):
    """The proxy with a config of its own, started with or without a namespace."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sop-journal-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.port = free_port()
        self.conf = os.path.join(self.tmp, "proxy.conf")
        with open(self.conf, "w") as f:
            f.write(proxy_config(RIG, self.port, upstream_port=RIG.raw_port,
                                 state_dir=os.path.join(self.tmp, "state"), log_level="info",
                                 devices=[("copier", {"address": "127.0.0.1",
                                                      "account": "scanners"})]))
        self.logpath = os.path.join(self.tmp, "stderr.log")

    def need_unshare(self):
        if not UNSHARE:
            self.skipTest("%s (a private mount namespace) not available here"
                          % " ".join(NS_CMD))

    def start(self, journal=None, env_extra=None, journal_stream_of_stderr=False):
        """The proxy, its stderr to a file; inside a namespace with journal's dir as
        /run/systemd when journal is given."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("SOP_LOG_TARGET", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
        env.update(env_extra or {})
        logf = open(self.logpath, "wb")
        self.addCleanup(logf.close)
        if journal_stream_of_stderr:
            st = os.fstat(logf.fileno())
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        cmd = [BINARY, "--config", self.conf]
        if journal is not None:
            cmd = NS_CMD + ["sh", "-c",
                   PRIVATE_RUN + 'mount --bind "$0" /run/systemd && exec "$@"', journal.dir] + cmd
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             start_new_session=True, preexec_fn=_die_with_parent)
        self.addCleanup(self.kill, p)
        wait_port(self.port, timeout=T, proc=p)
        return p

    def kill(self, p):
        if p.poll() is None:
            p.kill()
            p.wait(10)

    def stderr_text(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def journal(self, listen=True):
        j = FakeJournal(os.path.join(self.tmp, "run-systemd"), listen=listen)
        self.addCleanup(j.close)
        return j

    def send_mail(self):
        s = smtplib.SMTP("localhost", self.port, timeout=T, source_address=("127.0.0.1", 0))
        try:
            s.sendmail("copier@contoso.test", ["alice@contoso.test"], MSG)
            s.quit()
        finally:
            s.close()

    def check_entries(self, j):
        """The entries of one mail: connect, message, disconnect share a SESSION; message has
        DEVICE and ACCOUNT; every entry is one event with the stderr text as MESSAGE."""
        msg = j.wait(lambda e: e.get("EVENT") == b"message")
        self.assertIsNotNone(msg, (j.entries, self.stderr_text()))
        session = msg.get("SESSION", b"")
        self.assertRegex(session, rb"^[0-9a-f]{8,}$")
        self.assertEqual(msg["DEVICE"], b"copier")
        self.assertEqual(msg["ACCOUNT"], b"scanners")
        self.assertEqual(msg["PRIORITY"], b"6")
        self.assertEqual(msg["SYSLOG_IDENTIFIER"], b"smtp-oauth-proxy")
        self.assertTrue(msg["MESSAGE"].startswith(b"event=message session=" + session + b" "),
                        msg["MESSAGE"])
        self.assertIn(b" result=delivered", msg["MESSAGE"])
        self.assertIsNotNone(j.wait(lambda e: e.get("EVENT") == b"disconnect" and
                                    e.get("SESSION") == session))
        # (wait_port's probe connected first: that is a session of its own)
        connect = j.wait(lambda e: e.get("EVENT") == b"connect" and e.get("SESSION") == session)
        self.assertIsNotNone(connect, j.entries)
        self.assertNotIn("DEVICE", connect)
        for e in j.entries:
            names = [n for n, _ in e]
            self.assertEqual(len(names), len(set(names)), e)  # each field once per entry
            d = dict(e)
            self.assertIn("EVENT", d, e)
            self.assertTrue(d["MESSAGE"].startswith(b"event=" + d["EVENT"]), e)
            self.assertNotIn(b"\n", d["MESSAGE"])
            self.assertNotIn(RIG.client_secret.encode(), d["MESSAGE"])



class TestJournal(JournalCase):
    def test_journal_stream_of_stderr_means_journal(self):
        # What systemd does for a service with StandardError=journal: JOURNAL_STREAM names
        # the stream stderr is. No override.
        self.need_unshare()
        j = self.journal()
        self.start(journal=j, journal_stream_of_stderr=True)
        self.assertIsNotNone(j.wait(lambda e: e.get("EVENT") == b"ready"), self.stderr_text())
        self.send_mail()
        self.check_entries(j)
        self.assertEqual(self.stderr_text(), "")  # nothing doubled on stderr

    def test_override_journal(self):
        self.need_unshare()
        j = self.journal()
        self.start(journal=j, env_extra={"SOP_LOG_TARGET": "journal"})
        self.send_mail()
        self.check_entries(j)
        self.assertEqual(self.stderr_text(), "")

    def test_override_stderr_wins_over_journal_stream(self):
        self.need_unshare()
        j = self.journal()
        self.start(journal=j, env_extra={"SOP_LOG_TARGET": "stderr"},
                   journal_stream_of_stderr=True)
        self.send_mail()
        self.assertIsNone(j.wait(lambda e: True, timeout=1))
        self.assertRegex(self.stderr_text(), r"(?m)^\S+Z info event=message session=\S+ "
                                             r"device=copier account=scanners ")

    def test_inherited_journal_stream_of_another_file_means_stderr(self):
        # JOURNAL_STREAM inherited from a service by a process whose stderr is elsewhere.
        self.need_unshare()
        j = self.journal()
        st = os.stat(self.conf)
        self.start(journal=j, env_extra={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
        self.send_mail()
        self.assertIsNone(j.wait(lambda e: True, timeout=1))
        self.assertRegex(self.stderr_text(), r"(?m)^\S+Z info event=message ")

    def test_journal_gone_falls_back_to_stderr(self):
        # No journald socket (libsystemd would drop entries silently): every line goes to
        # stderr, in the stderr format.
        self.need_unshare()
        j = self.journal(listen=False)
        self.start(journal=j, env_extra={"SOP_LOG_TARGET": "journal"})
        self.send_mail()
        deadline = time.monotonic() + T
        while "event=disconnect" not in self.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = self.stderr_text()
        self.assertRegex(text, r"(?m)^\S+Z info event=ready ")
        self.assertRegex(text, r"(?m)^\S+Z info event=message session=\S+ device=copier ")
        self.assertRegex(text, r"(?m)^\S+Z info event=disconnect ")

    def test_journal_refusing_falls_back_to_stderr(self):
        # The socket exists but nobody reads it (journald stopped): sd_journal_sendv fails,
        # and each line goes to stderr instead; still never two copies of one event.
        self.need_unshare()
        j = self.journal()
        j.sock.close()  # the socket file stays
        j.sock = None
        self.start(journal=j, env_extra={"SOP_LOG_TARGET": "journal"})
        self.send_mail()
        deadline = time.monotonic() + T
        while "event=disconnect" not in self.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = self.stderr_text()
        self.assertEqual(len([ln for ln in text.splitlines() if " event=ready " in ln]), 1, text)
        self.assertRegex(text, r"(?m)^\S+Z info event=message session=\S+ device=copier ")

    def test_default_without_systemd_is_stderr(self):
        # No namespace needed: no JOURNAL_STREAM, no override.
        self.start()
        self.send_mail()
        deadline = time.monotonic() + T
        while "event=disconnect" not in self.stderr_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertRegex(self.stderr_text(), r"(?m)^\S+Z info event=message session=\S+ "
                                             r"device=copier account=scanners ")


JOURNALD = "/lib/systemd/systemd-journald"


class TestRealJournald(JournalCase):
    """A private systemd-journald, started by this test, instead of the test's socket."""

    def start_journald(self):
        self.need_unshare()
        if not os.access(JOURNALD, os.X_OK) or not shutil.which("journalctl"):
            self.skipTest("systemd-journald or journalctl not installed")
        d = os.path.join(self.tmp, "jd")
        for sub in ("run-systemd/journal", "run-log", "var-log-journal"):
            os.makedirs(os.path.join(d, sub))
        # Its sockets appear in d/run-systemd/journal, its files in d/run-log/journal; the
        # host's /run/log and /var/log/journal are hidden from it.
        script = (PRIVATE_RUN + 'mount --bind "$0/run-systemd" /run/systemd && '
                  'mount --bind "$0/run-log" /run/log && '
                  '{ [ ! -d /var/log/journal ] || mount --bind "$0/var-log-journal" '
                  '/var/log/journal; } && exec "$1"')
        out = open(os.path.join(self.tmp, "journald.log"), "wb")
        self.addCleanup(out.close)
        jd = subprocess.Popen(NS_CMD + ["sh", "-c", script, d, JOURNALD],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              start_new_session=True, preexec_fn=_die_with_parent)
        self.addCleanup(self.kill, jd)
        sock = os.path.join(d, "run-systemd", "journal", "socket")
        deadline = time.monotonic() + T
        while not os.path.exists(sock) and time.monotonic() < deadline:
            if jd.poll() is not None:
                self.skipTest("systemd-journald does not run here (exit %s)" % jd.returncode)
            time.sleep(0.05)
        self.assertTrue(os.path.exists(sock), "journald made no socket")
        self.journal_files = os.path.join(d, "run-log", "journal")

        class Dir:  # what start() binds over /run/systemd
            dir = os.path.join(d, "run-systemd")
        return Dir

    def journalctl(self, *matches, wait=True):
        """Entries matching, as dicts of str; with wait, once there are any (journald writes
        asynchronously)."""
        deadline = time.monotonic() + (T if wait else 0)
        while True:
            r = subprocess.run(["journalctl", "-D", self.journal_files, "--no-pager", "-o",
                                "json"] + list(matches), capture_output=True, text=True,
                               timeout=T)
            entries = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
            if entries or time.monotonic() > deadline:
                return entries
            time.sleep(0.2)

    def test_journal_stream_of_stderr_means_journal(self):
        j = self.start_journald()
        self.start(journal=j, journal_stream_of_stderr=True)
        self.send_mail()
        msgs = self.journalctl("EVENT=message", "ACCOUNT=scanners", "DEVICE=copier")
        self.assertEqual(len(msgs), 1, self.stderr_text())
        m = msgs[0]
        self.assertEqual(m["PRIORITY"], "6")
        self.assertEqual(m["SYSLOG_IDENTIFIER"], "smtp-oauth-proxy")
        self.assertEqual(m["_TRANSPORT"], "journal")
        self.assertTrue(m["MESSAGE"].startswith("event=message session=%s device=copier "
                                                "account=scanners " % m["SESSION"]), m)
        # the whole connection, by its SESSION
        events = [e["EVENT"] for e in self.journalctl("SESSION=" + m["SESSION"])]
        self.assertEqual(events[0], "connect")
        self.assertIn("message", events)
        self.assertEqual(self.stderr_text(), "")

    def test_override_journal(self):
        j = self.start_journald()
        self.start(journal=j, env_extra={"SOP_LOG_TARGET": "journal"})
        self.assertTrue(self.journalctl("EVENT=ready", "-p", "info"))
        self.assertFalse(self.journalctl("EVENT=ready", "-p", "warning", wait=False))


if __name__ == "__main__":
    terminate_on_sigterm()
    unittest.main()
