#!/usr/bin/python3
"""A crash leaves no secret on disk: the daemon, run with cores allowed (RLIMIT_CORE unlimited)
and holding the client secret and an access token (one message relayed first), is killed with
SIGABRT and leaves no core file in its working directory, because it makes itself non-dumpable
at start (prctl PR_SET_DUMPABLE 0, proxy/main.c). So that this test can fail, a control process
run the same way (a dumpable Python that aborts itself) must leave a core there; if this
machine's kernel.core_pattern sends cores elsewhere (a pipe to systemd-coredump or apport, an
absolute path), no core can be observed in the directory and the test is skipped with the reason.

Run:  SOP_BINARY=build/smtp-oauth-proxy /usr/bin/python3 tests/integration/test_core_secrets.py -v
"""
import os
import resource
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402

BINARY = os.path.abspath(os.environ.get("SOP_BINARY", "")) if os.environ.get("SOP_BINARY") else ""
T = 20  # seconds: a bound on every single wait
RIG = None


def setUpModule():
    global RIG
    if not BINARY or not os.access(BINARY, os.X_OK):
        raise RuntimeError("SOP_BINARY is not set or not executable (%r)" % BINARY)
    RIG = sop_rig.Rig(with_dovecot=False)
    RIG.__enter__()


def tearDownModule():
    if RIG is not None:
        RIG.stop()


def cores_allowed():
    """preexec_fn: cores of any size, and die with the test."""
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    sop_rig._die_with_parent()


def core_files(d):
    return sorted(n for n in os.listdir(d) if n == "core" or n.startswith("core."))


def wait_exit(p, timeout=T):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        raise


def wait_core(d, timeout=10.0):
    """A core is written while the dying process is a zombie: give the kernel a moment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if core_files(d):
            return core_files(d)
        time.sleep(0.05)
    return core_files(d)


class TestCoreSecrets(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sop-core-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.procs = []
        self.addCleanup(self.kill_all)

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)

    def core_pattern_usable(self):
        try:
            with open("/proc/sys/kernel/core_pattern") as f:
                pattern = f.read().strip()
        except OSError as e:
            self.skipTest("cannot read /proc/sys/kernel/core_pattern: %s" % e)
        if pattern.startswith("|") or "/" in pattern:
            self.skipTest("kernel.core_pattern is %r: cores do not land in the process's "
                          "directory, so their absence proves nothing here" % pattern)
        return pattern

    def control_dir(self):
        """The control: a dumpable process aborted the same way leaves a core in its cwd."""
        d = os.path.join(self.tmp, "control")
        os.mkdir(d)
        p = subprocess.Popen([sys.executable, "-c",
                              "import os, signal; os.kill(os.getpid(), signal.SIGABRT)"],
                             cwd=d, preexec_fn=cores_allowed, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        rc = wait_exit(p)
        self.assertEqual(rc, -signal.SIGABRT)
        cores = wait_core(d)
        if not cores:
            self.skipTest("a dumpable process with RLIMIT_CORE unlimited left no core in its "
                          "directory (core_pattern %r; a container or a read-only limit?): "
                          "cores cannot be observed on this machine"
                          % open("/proc/sys/kernel/core_pattern").read().strip())
        return cores

    def test_daemon_holding_secrets_leaves_no_core(self):
        pattern = self.core_pattern_usable()
        self.assertTrue(self.control_dir(), "the control left no core (pattern %r)" % pattern)

        run = os.path.join(self.tmp, "daemon")
        os.mkdir(run)
        port = sop_rig.free_port()
        cfg = os.path.join(self.tmp, "proxy.ini")
        with open(cfg, "w") as f:
            f.write(sop_rig.proxy_config(
                RIG, port, devices=[("copier", {"address": "127.0.0.1", "account": "scanners"})],
                state_dir=os.path.join(self.tmp, "state"), upstream_port=RIG.raw_port))
        os.chmod(cfg, 0o600)
        log_path = os.path.join(self.tmp, "proxy.log")
        # An AddressSanitizer build sets its own RLIMIT_CORE to 0 unless told not to: the
        # daemon must run with cores allowed for its own reason to be what stops them.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"), "disable_coredump=0")
                                       if x)
        with open(log_path, "wb") as logf:
            p = subprocess.Popen([BINARY, "--config", cfg], cwd=run, preexec_fn=cores_allowed,
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 start_new_session=True, env=env)
        self.procs.append(p)

        def log():
            with open(log_path, errors="replace") as lf:
                return lf.read()

        deadline = time.monotonic() + T
        while "event=ready" not in log():
            self.assertIsNone(p.poll(), "the proxy exited: %s" % log()[-3000:])
            self.assertLess(time.monotonic(), deadline, "no event=ready: %s" % log()[-3000:])
            time.sleep(0.05)
        sop_rig.wait_port(port, timeout=T, proc=p)

        # One message through: the daemon now holds the client secret (read at start) and the
        # access token it fetched and used.
        with smtplib.SMTP("127.0.0.1", port, timeout=T) as s:
            s.ehlo("copier.test")
            s.sendmail("copier@contoso.test", ["alice@contoso.test"],
                       b"Subject: core\r\n\r\nbody\r\n")
        RIG.raw_wait(1, timeout=T)
        self.assertIn("event=token_ok", log())
        with open("/proc/%d/limits" % p.pid) as f:
            self.assertRegex(f.read(), r"Max core file size\s+unlimited")

        os.kill(p.pid, signal.SIGABRT)
        rc = wait_exit(p)
        self.assertEqual(rc, -signal.SIGABRT, "the daemon did not die of SIGABRT")
        time.sleep(0.5)  # the control's core appeared within this; a core here would too
        self.assertEqual(wait_core(run, timeout=1.0), [],
                         "the daemon left a core file holding its secrets")


if __name__ == "__main__":
    unittest.main()
