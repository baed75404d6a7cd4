#!/usr/bin/python3
"""Running as a systemd service, without systemd running: the unit passes `systemd-analyze
verify` (with the installed binary and man pages), `cmake --install` puts every file where the
unit and the man pages say, and the real binary speaks the sd_notify protocol to a socket this
test binds: READY=1, STATUS=sessions=N total=M queued=Q held=H, WATCHDOG=1 at half of
WATCHDOG_USEC, STOPPING=1, RELOADING=1 with MONOTONIC_USEC then READY=1 on SIGHUP.

Run one:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 \
              tests/integration/test_service.py -v TestNotify
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sop_rig import Rig, free_port, proxy_config, terminate_on_sigterm, wait_port  # noqa: E402
from sop_rig import _die_with_parent  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("SOP_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "..", ".."))
BINARY = os.path.abspath(os.environ.get("SOP_BINARY") or os.path.join(SOURCE, "build",
                                                                     "smtp-oauth-proxy"))
BUILD = os.path.dirname(BINARY)
UNIT = os.path.join(SOURCE, "systemd", "smtp-oauth-proxy.service")
UNIT_NAME = "smtp-oauth-proxy.service"


def unit_dir():
    """Where CMake installs the unit (pkg-config systemd, else lib/systemd/system)."""
    try:
        out = subprocess.run(["pkg-config", "--variable=systemdsystemunitdir", "systemd"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        out = ""
    return out or "/usr/lib/systemd/system"


class Installed:
    """DESTDIR=tmp cmake --install BUILD --prefix /usr, as a package build does it."""
    dest = None

    @classmethod
    def get(cls):
        if cls.dest is None:
            d = tempfile.mkdtemp(prefix="sop-install-")
            env = dict(os.environ, DESTDIR=d)
            r = subprocess.run(["cmake", "--install", BUILD, "--prefix", "/usr"], env=env,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise AssertionError("cmake --install failed:\n%s%s" % (r.stdout, r.stderr))
            cls.dest = d
        return cls.dest

    @classmethod
    def cleanup(cls):
        if cls.dest:
            shutil.rmtree(cls.dest, ignore_errors=True)
            cls.dest = None


def tearDownModule():
    Installed.cleanup()


class TestInstall(unittest.TestCase):
    def test_install_puts_every_file_in_place(self):
        d = Installed.get()
        sbin = os.path.join(d, "usr/sbin/smtp-oauth-proxy")
        self.assertTrue(os.access(sbin, os.X_OK), sbin)
        unit = os.path.join(d, unit_dir().lstrip("/"), UNIT_NAME)
        with open(unit) as f, open(UNIT) as g:
            self.assertEqual(f.read(), g.read())
        for page in ("man8/smtp-oauth-proxy.8", "man5/smtp-oauth-proxy.conf.5"):
            self.assertTrue(os.path.isfile(os.path.join(d, "usr/share/man", page)), page)
        ex = sorted(os.path.basename(p) for p in glob.glob(
            os.path.join(d, "usr/share/doc/smtp-oauth-proxy/examples/*.conf")))
        want = sorted(os.path.basename(p) for p in glob.glob(
            os.path.join(SOURCE, "examples/*.conf")))
        self.assertTrue(want)
        self.assertEqual(ex, want)

    def test_installed_unit_names_installed_binary(self):
        with open(UNIT) as f:
            text = f.read()
        self.assertIn("ExecStart=/usr/sbin/smtp-oauth-proxy --config "
                      "/etc/smtp-oauth-proxy/smtp-oauth-proxy.conf\n", text)
        self.assertIn("ExecStartPre=/usr/sbin/smtp-oauth-proxy --config "
                      "/etc/smtp-oauth-proxy/smtp-oauth-proxy.conf --check\n", text)
        self.assertIn("ExecReload=/usr/sbin/smtp-oauth-proxy --config "
                      "/etc/smtp-oauth-proxy/smtp-oauth-proxy.conf --check\n"
                      "ExecReload=/bin/kill -HUP $MAINPID\n", text)

    def test_example_configs_have_only_known_keys(self):
        # --check on an example fails for files that do not exist on this machine, never for
        # an unknown section or key.
        for p in glob.glob(os.path.join(SOURCE, "examples/*.conf")):
            r = subprocess.run([BINARY, "--config", p, "--check"], capture_output=True,
                               text=True, timeout=30)
            for line in r.stdout.splitlines() + r.stderr.splitlines():
                self.assertNotIn("unknown", line, p)

    def test_conf_man_page_names_every_documented_key(self):
        import re
        with open(os.path.join(SOURCE, "docs/configuration.md")) as f:
            keys = set(re.findall(r"(?m)^\| `([a-z_]+)` \|", f.read()))
        with open(os.path.join(SOURCE, "man/smtp-oauth-proxy.conf.5")) as f:
            page = set(re.findall(r"(?m)^\.B ([a-z_]+)$", f.read()))
        self.assertGreater(len(keys), 30)
        self.assertEqual(sorted(keys - page), [])

    def test_man_pages_render_without_warnings(self):
        groff = shutil.which("groff")
        if not groff:
            self.skipTest("groff not installed")
        for page in ("smtp-oauth-proxy.8", "smtp-oauth-proxy.conf.5"):
            r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z",
                                os.path.join(SOURCE, "man", page)],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual((r.returncode, r.stderr), (0, ""), page)


class TestUnit(unittest.TestCase):
    def analyze(self, *args):
        exe = shutil.which("systemd-analyze")
        if not exe:
            self.fail("systemd-analyze not installed (package systemd, see install-deps.sh)")
        return subprocess.run([exe] + list(args), capture_output=True, text=True, timeout=120)

    def installed_unit_copy(self):
        """The installed unit with ExecStart pointing into DESTDIR (verify checks that the
        binary exists), in a directory of its own named as systemd would find it."""
        d = Installed.get()
        with open(os.path.join(d, unit_dir().lstrip("/"), UNIT_NAME)) as f:
            text = f.read()
        text = text.replace("/usr/sbin/smtp-oauth-proxy",
                            os.path.join(d, "usr/sbin/smtp-oauth-proxy"))
        udir = os.path.join(d, "verify")
        os.makedirs(udir, exist_ok=True)
        path = os.path.join(udir, UNIT_NAME)
        with open(path, "w") as f:
            f.write(text)
        return d, path

    def test_systemd_analyze_verify(self):
        d, path = self.installed_unit_copy()
        # Documentation=man:... is checked with man(1): point it at the installed pages.
        env = dict(os.environ, MANPATH=os.path.join(d, "usr/share/man"))
        man = "yes" if shutil.which("man") else "no"
        exe = shutil.which("systemd-analyze")
        if not exe:
            self.fail("systemd-analyze not installed (package systemd, see install-deps.sh)")
        r = subprocess.run([exe, "verify", "--man=" + man, path], capture_output=True,
                           text=True, timeout=120, env=env)
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))

    def test_systemd_analyze_security_offline(self):
        _, path = self.installed_unit_copy()
        r = self.analyze("security", "--offline=true", "--threshold=30", path)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        line = [ln for ln in out.splitlines() if "Overall exposure level" in ln]
        self.assertTrue(line, out)
        score = float(line[0].split(":")[1].split()[0])
        sys.stderr.write("\nsystemd-analyze security: %s\n" % line[0].strip())
        self.assertLessEqual(score, 2.5, out)


class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (monotonic time, {key: value})

    def wait(self, pred, timeout, only_new=False):
        """Receive until pred(fields) holds for a message (one already received counts unless
        only_new); returns it, or None at timeout."""
        for _, m in ([] if only_new else self.messages):
            if pred(m):
                return m
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            fields = dict(ln.split("=", 1) for ln in data.decode().split("\n") if "=" in ln)
            self.messages.append((time.monotonic(), fields))
            if pred(fields):
                return fields
        return None

    def close(self):
        self.sock.close()


class TestNotify(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rig = Rig(with_dovecot=False)
        cls.rig.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.rig.__exit__(None, None, None)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sop-svc-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.port = free_port()
        self.conf = os.path.join(self.tmp, "proxy.conf")
        with open(self.conf, "w") as f:
            f.write(proxy_config(self.rig, self.port, upstream_port=self.rig.raw_port,
                                 state_dir=os.path.join(self.tmp, "state"), log_level="info",
                                 devices=[("copier", {"address": "127.0.0.1",
                                                      "account": "scanners"})]))
        self.notify = NotifySocket(self.tmp)
        self.addCleanup(self.notify.close)

    def start(self, watchdog_usec=None):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["NOTIFY_SOCKET"] = self.notify.path
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.logf = open(os.path.join(self.tmp, "proxy.log"), "wb")
        self.addCleanup(self.logf.close)
        p = subprocess.Popen([BINARY, "--config", self.conf], env=env, stdin=subprocess.DEVNULL,
                             stdout=self.logf, stderr=self.logf, start_new_session=True,
                             preexec_fn=_die_with_parent)
        self.addCleanup(self.kill, p)
        return p

    def kill(self, p):
        if p.poll() is None:
            p.kill()
            p.wait(10)

    def log(self):
        with open(os.path.join(self.tmp, "proxy.log"), errors="replace") as f:
            return f.read()

    def test_ready_watchdog_status_stopping(self):
        p = self.start(watchdog_usec=2000000)
        ready = self.notify.wait(lambda m: "READY" in m, 15)
        self.assertIsNotNone(ready, self.log())
        self.assertEqual(ready["READY"], "1")
        # READY only once the listener is bound: it answers at once.
        wait_port(self.port, timeout=2, proc=p)
        self.assertRegex(ready.get("STATUS", ""), r"^sessions=0 total=\d+ queued=0 held=0$")
        # WATCHDOG_USEC=2 s: WATCHDOG=1 every second, from the loop.
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            n = sum(1 for _, m in self.notify.messages if m.get("WATCHDOG") == "1")
            if n >= 2:
                break
            self.notify.wait(lambda m: m.get("WATCHDOG") == "1", deadline - time.monotonic(),
                             only_new=True)
        n = sum(1 for _, m in self.notify.messages if m.get("WATCHDOG") == "1")
        self.assertGreaterEqual(n, 2, self.notify.messages)
        self.assertIn("event=watchdog interval_ms=1000", self.log())
        # An open session shows in STATUS within the status interval (1 s).
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
            self.assertTrue(c.recv(512).startswith(b"220"))
            st = self.notify.wait(lambda m: m.get("STATUS", "").startswith("sessions=1 "), 8)
            self.assertIsNotNone(st, self.notify.messages)
            self.assertRegex(st["STATUS"], r"^sessions=1 total=\d+ queued=0 held=0$")
            c.sendall(b"QUIT\r\n")
            c.recv(512)
        p.send_signal(signal.SIGTERM)
        self.assertIsNotNone(self.notify.wait(lambda m: m.get("STOPPING") == "1", 10),
                             self.notify.messages)
        self.assertEqual(p.wait(35), 0, self.log())
        # Watchdog pings kept coming, never faster than half the period.
        times = [t for t, m in self.notify.messages if m.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(g > 0.8 for g in gaps), gaps)

    def test_no_watchdog_without_watchdog_usec(self):
        p = self.start()
        self.assertIsNotNone(self.notify.wait(lambda m: "READY" in m, 15), self.log())
        self.assertIsNone(self.notify.wait(lambda m: "WATCHDOG" in m, 2))
        self.assertNotIn("event=watchdog", self.log())
        p.send_signal(signal.SIGTERM)
        self.assertIsNotNone(self.notify.wait(lambda m: m.get("STOPPING") == "1", 10))
        self.assertEqual(p.wait(35), 0, self.log())

    def test_reload_notifies_reloading_then_ready(self):
        p = self.start()
        self.assertIsNotNone(self.notify.wait(lambda m: "READY" in m, 15), self.log())
        for broken in (False, True):
            if broken:
                with open(self.conf, "a") as f:
                    f.write("[proxy]\nbogus = 1\n")
            before = time.clock_gettime(time.CLOCK_MONOTONIC)
            n = len(self.notify.messages)
            p.send_signal(signal.SIGHUP)
            rel = self.notify.wait(lambda m: m.get("RELOADING") == "1", 10, only_new=True)
            self.assertIsNotNone(rel, self.notify.messages)
            # systemd's protocol: the monotonic time the reload started, in microseconds
            usec = int(rel["MONOTONIC_USEC"])
            self.assertLessEqual(abs(usec / 1e6 - before), 5)
            ready = self.notify.wait(lambda m: m.get("READY") == "1", 15, only_new=True)
            self.assertIsNotNone(ready, self.notify.messages[n:])
            self.assertRegex(ready.get("STATUS", ""), r"^sessions=0 total=\d+ queued=0 held=0$")
            self.assertIn("event=reload_failed" if broken else "event=reloaded", self.log())
            self.assertIsNone(p.poll())
        wait_port(self.port, timeout=2, proc=p)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(35), 0, self.log())


if __name__ == "__main__":
    terminate_on_sigterm()
    unittest.main()
