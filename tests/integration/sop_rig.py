#!/usr/bin/python3
"""Real peers on loopback for smtp-oauth-proxy's integration tests and demo.

    with Rig() as rig:          # fresh temp dir, free ports on 127.0.0.1
        rig.ca_file             # private CA: the proxy's [upstream] ca_file
        rig.cert_file, rig.key_file   # "localhost" cert (SAN DNS:localhost, IP:127.0.0.1)
        rig.token_url           # the IdP stand-in (idp_standin.py, a child process)
        rig.dovecot_port        # Dovecot submission: STARTTLS + AUTH XOAUTH2/OAUTHBEARER,
                                # validates the IdP's JWTs locally, relays to the sink
        rig.sink_messages()     # what reached the sink (aiosmtpd), byte for byte
        rig.cert_client_id      # an app registered at the IdP with a certificate, not a secret:
        rig.client_cert_file, rig.client_key_file   # its certificate and key (0600)
        rig.other_cert_file, rig.other_key_file     # a good pair the IdP does not know
        rig.google_token_url    # Google's token endpoint at the stand-in (idp_google.py)
        rig.google_key_file     # a service account's JSON key (0600), delegated for rig.mailbox
        rig.google_undelegated_key_file   # another one, without domain-wide delegation

Pieces:
  * CA + server certificate, made with python3-cryptography.
  * IdP stand-in for Entra's token endpoint (client credentials), controllable over HTTP:
    rig.idp_control(mode="down"|"ok"|"error500"|"bad_first_token", expires_in=N),
    rig.idp_stats(), rig.idp_reset(), rig.idp_stop() / rig.idp_start() (process gone entirely).
  * Mail sink: aiosmtpd in a thread of this process; every message is written to
    DIR/sink/NNNNNN.eml (the DATA bytes exactly as received, dot-unstuffed) and
    NNNNNN.json (mail_from, rcpt_tos, mail_options, rcpt_options). Recipients whose local part
    starts with "refuse" get "550 5.1.1", "tempfail" gets "451 4.3.0".
  * Dovecot's submission server as its own instance (own config, base_dir, state_dir, log),
    run in the foreground as a child process: `dovecot -F -c DIR/dovecot/dovecot.conf`.

Also here: ProxyProcess and proxy_config(), which start the real smtp-oauth-proxy binary with a
config that points at this rig, and the `serve` / `demo` command line used by scripts/demo.sh:

    /usr/bin/python3 sop_rig.py serve --dir DIR      # run the rig until SIGTERM (or --timeout)
    /usr/bin/python3 sop_rig.py demo --binary build/smtp-oauth-proxy --dir .demo
"""
import argparse
import base64
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import unittest
import urllib.request
import logging

# aiosmtpd logs a warning about its own use of a deprecated attribute on every AUTH
logging.getLogger("mail.log").setLevel(logging.ERROR)

HERE = os.path.dirname(os.path.abspath(__file__))

# Under CI (.ci/run sets CI=true) a test that would skip because a tool or a kernel feature is
# missing fails instead: a green CI must mean every test ran, on a root that only has what
# scripts/install-deps.sh installs.
if os.environ.get("CI") == "true":
    def _skip_is_failure(self, reason):
        self.fail("would be skipped, and CI runs every test: " + reason)

    unittest.TestCase.skipTest = _skip_is_failure
PYTHON = "/usr/bin/python3"

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CERT_CLIENT_ID = "22222222-3333-4444-5555-666666666666"   # authenticates with a certificate
PUBLIC_CLIENT_ID = "33333333-4444-5555-6666-777777777777" # a public client: delegated access
MAILBOX = "scanners@contoso.test"
SCOPE = "https://outlook.office365.com/.default"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"

def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the test process dies, however it dies (a CI
    timeout's SIGKILL included), so no Dovecot, IdP or proxy outlives its test run."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def terminate_on_sigterm():
    """Turn SIGTERM into SystemExit so context managers and unittest cleanups run."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)


_used_ports = set()
_ports_lock = threading.Lock()


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (and that this process has not handed out)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        with _ports_lock:
            if port not in _used_ports:
                _used_ports.add(port)
                return port
    raise RuntimeError("no free port")


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None, banner=None):
    """Wait until host:port accepts a connection (and, if banner, sends a line starting so)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before port %d answered"
                               % (proc.returncode, port))
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if banner is None:
                    return True
                s.settimeout(max(0.5, min(3.0, deadline - time.monotonic())))
                line = s.recv(512)
                if line.startswith(banner):
                    return True
                last = line
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError("port %s:%d did not answer within %.0fs (%r)" % (host, port, timeout, last))


# ---------------------------------------------------------------------------------------------
# certificates

def make_certs(d, names=("localhost",), ips=("127.0.0.1",)):
    """Private CA + a server certificate signed by it. Returns (ca, cert, key) paths; key 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sop test rig"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "sop test rig CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i))
                                              for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (os.path.join(d, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    os.chmod(ca_path, 0o644)
    os.chmod(cert_path, 0o644)
    return ca_path, cert_path, key_path


def make_client_cert(d, name, days=365):
    """A self-signed RSA certificate as an admin makes one for an Entra app registration
    (openssl req -x509 -newkey rsa:2048 ... -subj /CN=smtp-oauth-proxy). Returns (cert, key)
    paths; the key is mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smtp-oauth-proxy")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = (os.path.join(d, name + ext) for ext in (".pem", ".key"))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def make_google_key(d, name, email):
    """A service account's JSON key as Google's console downloads it (mode 0600), and its public
    key for the stand-in. Returns (json path, public PEM path)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    import idp_google

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    doc = {"type": "service_account", "project_id": "contoso-mail",
           "private_key_id": idp_google.key_id(key.public_key()), "private_key": pem,
           "client_email": email, "client_id": str(100000000000000000000 + secrets.randbelow(
               10 ** 20)), "auth_uri": "https://accounts.google.com/o/oauth2/auth",
           "token_uri": "https://oauth2.googleapis.com/token",
           "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
           "universe_domain": "googleapis.com"}
    path, pub_path = (os.path.join(d, name + ext) for ext in (".json", ".pub.pem"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.chmod(path, 0o600)
    with open(pub_path, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, pub_path


# ---------------------------------------------------------------------------------------------
# mail sink (aiosmtpd)

class SinkHandler:
    def __init__(self, directory):
        self.dir = directory
        self.lock = threading.Lock()
        self.n = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # Like a real MTA: with enhanced status codes Dovecot passes our replies through clean.
        session.host_name = hostname
        return responses[:-1] + ["250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("refuse"):
            return "550 5.1.1 Recipient address rejected: User unknown"
        if local.startswith("tempfail"):
            return "451 4.3.0 Recipient temporarily unavailable, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.n += 1
            n = self.n
        base = os.path.join(self.dir, "%06d" % n)
        # aiosmtpd keeps the null sender as "<>"; everything else comes without brackets
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        meta = {"mail_from": mail_from, "rcpt_tos": envelope.rcpt_tos,
                "mail_options": envelope.mail_options, "rcpt_options": envelope.rcpt_options,
                "peer": list(session.peer) if session.peer else None,
                "helo": session.host_name, "size": len(envelope.original_content),
                "time": time.time()}
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.replace(base + ".eml.tmp", base + ".eml")
        os.replace(base + ".json.tmp", base + ".json")  # the .json appears last
        return "250 2.0.0 Ok: queued as SINK%06d" % n


class Sink:
    def __init__(self, directory, port):
        self.dir = directory
        self.port = port
        self.controller = None
        os.makedirs(directory, exist_ok=True)

    def start(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        class TolerantSMTP(SMTP):
            # Be a lenient sink: a too-long line must reach the test, not die here.
            line_length_limit = 1 << 20

        class SinkController(Controller):
            def factory(self):
                return TolerantSMTP(self.handler, **self.SMTP_kwargs)

        self.handler = SinkHandler(self.dir)
        self.controller = SinkController(self.handler, hostname="127.0.0.1", port=self.port,
                                         ready_timeout=10, data_size_limit=200 * 1024 * 1024,
                                         decode_data=False, enable_SMTPUTF8=True,
                                         ident="sink.test ESMTP rig sink")
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            try:
                self.controller.stop()
            finally:
                self.controller = None


class RawUpstreamHandler(SinkHandler):
    """An Exchange-like XOAUTH2 upstream written in Python (aiosmtpd): STARTTLS required, AUTH
    XOAUTH2 only, the JWT checked with the IdP's public key. Unlike Dovecot it changes nothing in
    a message (no Received: header, no line-ending repair), so it shows the proxy's exact bytes.
    A refused token gets Exchange's immediate "535 5.7.3 Authentication unsuccessful"."""

    def __init__(self, directory, keydir, audience="https://outlook.office365.com"):
        super().__init__(directory)
        self.keydir = keydir
        self.audience = audience
        self.n_auth_attempts = 0
        self.n_auth_failures = 0

    def _check(self, blob):
        import jwt as pyjwt
        parts = blob.split(b"\x01")
        if len(parts) != 4 or parts[2:] != [b"", b""] or not parts[0].startswith(b"user=") \
                or not parts[1].startswith(b"auth=Bearer "):
            return None
        user = parts[0][5:].decode("utf-8", "replace")
        token = parts[1][len(b"auth=Bearer "):].decode("ascii", "replace")
        try:
            kid = pyjwt.get_unverified_header(token).get("kid", "default")
            if "/" in kid or kid.startswith("."):
                return None
            with open(os.path.join(self.keydir, "default", "RS256", kid), "rb") as f:
                key = f.read()
            claims = pyjwt.decode(token, key, algorithms=["RS256"], audience=self.audience)
        except Exception:
            return None
        return user if claims.get("email") == user else None

    async def auth_XOAUTH2(self, server, args):
        from aiosmtpd.smtp import AuthResult, MISSING
        self.n_auth_attempts += 1
        if len(args) == 2:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False,
                                  message="501 5.5.2 Cannot decode base64")
        else:
            blob = await server.challenge_auth("", encode_to_b64=False)
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        user = self._check(blob)
        if user is None:
            self.n_auth_failures += 1
            return AuthResult(success=False, handled=False,
                              message="535 5.7.3 Authentication unsuccessful")
        return AuthResult(success=True, auth_data=user)

class RawUpstream(Sink):
    def __init__(self, directory, port, cert, key, keydir):
        super().__init__(directory, port)
        self.cert, self.key, self.keydir = cert, key, keydir

    def start(self):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        class TolerantSMTP(SMTP):
            line_length_limit = 1 << 20

            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                # Exchange takes an Entra-sized token on the AUTH line (RFC 4954: 12288)
                self.command_size_limits["AUTH"] = 12288

        class RawController(Controller):
            def factory(self):
                return TolerantSMTP(self.handler, **self.SMTP_kwargs)

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        self.handler = RawUpstreamHandler(self.dir, self.keydir)
        self.controller = RawController(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10,
            data_size_limit=157286400, decode_data=False, enable_SMTPUTF8=True,
            ident="rawup.test Microsoft ESMTP MAIL Service ready (rig)", tls_context=ctx,
            require_starttls=True, auth_required=True, auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN", "PLAIN"])
        self.controller.start()


def read_sink(directory):
    """[{mail_from, rcpt_tos, mail_options, rcpt_options, data (bytes), path}] in arrival order."""
    out = []
    if not os.path.isdir(directory):
        return out
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        base = os.path.join(directory, name[:-5])
        with open(base + ".json") as f:
            meta = json.load(f)
        with open(base + ".eml", "rb") as f:
            meta["data"] = f.read()
        meta["path"] = base + ".eml"
        out.append(meta)
    return out


# ---------------------------------------------------------------------------------------------
# Dovecot submission

DOVECOT_CONF = """\
# smtp-oauth-proxy test rig: a private Dovecot instance, never the system one.
instance_name = sop-rig-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
protocols = submission
listen = 127.0.0.1
hostname = localhost
submission_host = localhost
shutdown_clients = yes
# Submission sessions count against this per user+IP; a load test opens many at once.
mail_max_userip_connections = 200
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = xoauth2 oauthbearer
auth_verbose = yes
auth_debug = {auth_debug}
auth_failure_delay = {failure_delay}
# Dovecot's auth penalty grows the wait per source IP after failed logins (up to 15 s each):
# tests refuse tokens on purpose and every client here is 127.0.0.1, so later tests would wait
# on earlier ones. Closing anvil's penalty socket turns it off (the documented way); the fixed
# auth_failure_delay above still applies.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/dovecot-oauth2.conf.ext
}}
# uids below first_valid_uid (500) are refused: nobody is 65534.
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
# Submission never stores mail, but it sets up a mail user and fails without a location.
mail_location = maildir:~/Maildir
submission_relay_host = 127.0.0.1
submission_relay_port = {sink_port}
submission_relay_ssl = no
submission_relay_connect_timeout = 30s
# Exchange Online advertises SIZE 157286400.
submission_max_mail_size = 157286400
submission_max_recipients = 0
service submission-login {{
  inet_listener submission {{
    address = 127.0.0.1
    port = {port}
  }}
  process_min_avail = 2
}}
service anvil {{
  chroot =
}}
"""

OAUTH2_CONF = """\
introspection_mode = local
local_validation_key_dict = fs:posix:prefix={keys}/
username_attribute = email
"""


class Dovecot:
    def __init__(self, d, port, cert, key, sink_port, keys, auth_debug=False, failure_delay="2s"):
        self.dir = d
        self.port = port
        self.proc = None
        os.makedirs(d, exist_ok=True)
        for sub in ("run", "state", "home"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
            os.chmod(os.path.join(d, sub), 0o755)
        os.chmod(os.path.join(d, "home"), 0o1777)  # homes made on demand as uid nobody
        os.chmod(d, 0o755)
        self.conf = os.path.join(d, "dovecot.conf")
        self.log = os.path.join(d, "dovecot.log")
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(d=d, port=port, cert=cert, key=key, sink_port=sink_port,
                                        auth_debug="yes" if auth_debug else "no",
                                        failure_delay=failure_delay))
        with open(os.path.join(d, "dovecot-oauth2.conf.ext"), "w") as f:
            f.write(OAUTH2_CONF.format(keys=keys))

    def start(self, timeout=20.0):
        self.stdio = open(os.path.join(self.dir, "dovecot.stdio"), "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=self.stdio, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        try:
            wait_port(self.port, timeout=timeout, proc=self.proc, banner=b"220")
        except Exception as e:
            tail = self.log_text()[-3000:] + self._stdio_text()[-2000:]
            self.stop()
            raise RuntimeError("dovecot did not start: %s\n%s" % (e, tail)) from None

    def _stdio_text(self):
        try:
            with open(os.path.join(self.dir, "dovecot.stdio"), "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_text(self):
        try:
            with open(self.log, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=10.0):
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait(5)
        # children left behind (should be none): the session is ours alone
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        self.stdio.close()


# ---------------------------------------------------------------------------------------------
# the rig

class Rig:
    """All real peers. Use as a context manager; everything lives in one temp dir."""

    def __init__(self, workdir=None, keep=False, auth_debug=False, dovecot_failure_delay="2s",
                 with_dovecot=True):
        self._own_dir = workdir is None
        keep = keep or bool(os.environ.get("SOP_KEEP"))  # SOP_KEEP=1: leave the dir to look at
        self.dir = workdir or tempfile.mkdtemp(prefix="sop-rig-")
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)  # dovecot's auth (uid dovecot) reads the key dict below
        self.keep = keep
        self.auth_debug = auth_debug
        self.failure_delay = dovecot_failure_delay
        self.with_dovecot = with_dovecot
        self.tenant = TENANT
        self.client_id = CLIENT_ID
        self.cert_client_id = CERT_CLIENT_ID
        self.public_client_id = PUBLIC_CLIENT_ID  # delegated: device code, refresh tokens
        self.mailbox = MAILBOX
        self.client_secret = "rig~" + secrets.token_urlsafe(30)
        self.idp_proc = None
        self.sink = None
        self.raw = None
        self.dovecot = None
        self.started = False

    # -- lifecycle
    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        d = self.dir
        self.ca_file, self.cert_file, self.key_file = make_certs(d)
        self.secret_file = os.path.join(d, "scanners.secret")
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.client_secret + "\n")
        os.chmod(self.secret_file, 0o600)
        self.client_cert_file, self.client_key_file = make_client_cert(d, "app-cert")
        self.other_cert_file, self.other_key_file = make_client_cert(d, "unregistered-cert")
        self.google_email = "smtp-relay@contoso-mail.iam.gserviceaccount.com"
        self.google_key_file, self.google_pub_file = make_google_key(
            d, "google-sa", self.google_email)
        self.google_undelegated_email = "no-delegation@contoso-mail.iam.gserviceaccount.com"
        self.google_undelegated_key_file, self.google_undelegated_pub_file = make_google_key(
            d, "google-sa-undelegated", self.google_undelegated_email)
        self.keydir = os.path.join(d, "keys")
        self.idp_port = free_port()
        self.sink_port = free_port()
        self.dovecot_port = free_port()
        self.sink_dir = os.path.join(d, "sink")
        self.idp_start()
        self.sink = Sink(self.sink_dir, self.sink_port)
        self.sink.start()
        self.raw_port = free_port()
        self.raw_dir = os.path.join(d, "rawup")
        self.raw = RawUpstream(self.raw_dir, self.raw_port, self.cert_file, self.key_file,
                               self.keydir)
        self.raw.start()
        if self.with_dovecot:
            self.dovecot = Dovecot(os.path.join(d, "dovecot"), self.dovecot_port, self.cert_file,
                                   self.key_file, self.sink_port, self.keydir,
                                   auth_debug=self.auth_debug, failure_delay=self.failure_delay)
            self.dovecot.start()
        self.started = True
        return self

    def stop(self):
        for fn in (self.dovecot_stop, self.sink_stop, self.raw_stop, self.idp_stop):
            try:
                fn()
            except Exception as e:  # keep stopping the rest
                sys.stderr.write("rig: stop: %r\n" % (e,))
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- IdP
    @property
    def token_url(self):
        return "http://127.0.0.1:%d/%s/oauth2/v2.0/token" % (self.idp_port, self.tenant)

    @property
    def google_token_url(self):
        return "http://127.0.0.1:%d/google/token" % self.idp_port

    @property
    def idp_base(self):
        return "http://127.0.0.1:%d" % self.idp_port

    def idp_start(self, timeout=10.0):
        if self.idp_proc is not None and self.idp_proc.poll() is None:
            return
        self.idp_log = open(os.path.join(self.dir, "idp.log"), "ab")
        self.idp_proc = subprocess.Popen(
            [PYTHON, os.path.join(HERE, "idp_standin.py"), "--port", str(self.idp_port),
             "--keydir", self.keydir,
             "--keyfile", os.path.join(self.dir, "idp-signing-key.pem"),
             "--google-sa", "%s:%s:%s" % (self.google_email, self.google_pub_file, self.mailbox),
             "--google-sa", "%s:%s:" % (self.google_undelegated_email,
                                        self.google_undelegated_pub_file),
             "--client", "%s:@%s:%s" % (self.client_id, self.secret_file, self.mailbox),
             "--cert-client", "%s:%s:%s" % (self.cert_client_id, self.client_cert_file,
                                            self.mailbox),
             "--public-client", self.public_client_id],
            stdin=subprocess.DEVNULL, stdout=self.idp_log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._idp_req("GET", "/_health", timeout=2)
                return
            except (OSError, urllib.error.URLError):
                if self.idp_proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("IdP stand-in did not start:\n" + self._read(
                        os.path.join(self.dir, "idp.log")))
                time.sleep(0.05)

    def idp_stop(self):
        p, self.idp_proc = self.idp_proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.idp_log.close()

    def _idp_req(self, method, path, obj=None, timeout=5):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(self.idp_base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def idp_control(self, **kw):
        """mode="ok"|"down"|"error500"|"bad_first_token", expires_in=N, delay=S"""
        return self._idp_req("POST", "/_control", kw)

    def idp_stats(self):
        return self._idp_req("GET", "/_stats")

    def idp_reset(self):
        return self._idp_req("POST", "/_reset", {})

    def fetch_token(self, secret=None, client_id=None, scope=SCOPE, timeout=10):
        """A token straight from the IdP, as the proxy would get it. Raises HTTPError on 4xx."""
        form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                       "client_id": client_id or self.client_id,
                                       "client_secret": secret or self.client_secret,
                                       "scope": scope}).encode()
        req = urllib.request.Request(self.token_url, data=form, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    # -- sink
    def sink_messages(self):
        return read_sink(self.sink_dir)

    def sink_wait(self, n, timeout=10.0):
        """Wait until at least n messages are in the sink; returns them (maybe fewer on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.sink_messages()
            if len(msgs) >= n or time.monotonic() > deadline:
                return msgs
            time.sleep(0.05)

    def sink_clear(self):
        """Forget what reached the sink and the raw upstream so far."""
        for d in (self.sink_dir, self.raw_dir):
            for name in os.listdir(d) if os.path.isdir(d) else ():
                if name.endswith((".json", ".eml")):
                    os.unlink(os.path.join(d, name))

    def raw_messages(self):
        """What reached the raw (Exchange-like, aiosmtpd) upstream: the proxy's exact bytes."""
        return read_sink(self.raw_dir)

    def raw_wait(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.raw_messages()
            if len(msgs) >= n or time.monotonic() > deadline:
                return msgs
            time.sleep(0.05)

    def raw_stop(self):
        if self.raw is not None:
            self.raw.stop()

    def sink_stop(self):
        if self.sink is not None:
            self.sink.stop()

    def sink_start(self):
        self.sink.start()

    # -- dovecot
    def dovecot_stop(self):
        if self.dovecot is not None:
            self.dovecot.stop()

    def dovecot_start(self):
        self.dovecot.start()

    def dovecot_log(self):
        return self.dovecot.log_text() if self.dovecot else ""

    def ssl_context(self):
        """A client context that trusts the rig CA (and checks host names)."""
        return ssl.create_default_context(cafile=self.ca_file)

    @staticmethod
    def _read(path):
        try:
            with open(path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def env(self):
        return {"SOP_RIG_DIR": self.dir, "SOP_RIG_CA": self.ca_file,
                "SOP_RIG_CERT": self.cert_file, "SOP_RIG_KEY": self.key_file,
                "SOP_RIG_IDP_PORT": str(self.idp_port), "SOP_RIG_TOKEN_URL": self.token_url,
                "SOP_RIG_DOVECOT_PORT": str(self.dovecot_port),
                "SOP_RIG_SINK_PORT": str(self.sink_port), "SOP_RIG_SINK_DIR": self.sink_dir,
                "SOP_RIG_RAW_PORT": str(self.raw_port), "SOP_RIG_RAW_DIR": self.raw_dir,
                "SOP_RIG_TENANT": self.tenant, "SOP_RIG_CLIENT_ID": self.client_id,
                "SOP_RIG_SECRET_FILE": self.secret_file, "SOP_RIG_MAILBOX": self.mailbox,
                "SOP_RIG_CERT_CLIENT_ID": self.cert_client_id,
                "SOP_RIG_CLIENT_CERT": self.client_cert_file,
                "SOP_RIG_CLIENT_KEY": self.client_key_file}


# ---------------------------------------------------------------------------------------------
# Dovecot's additions to a message

RECEIVED_RE = re.compile(
    rb"\AReceived: from [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def split_received(data):
    """Dovecot submission prepends one Received: header (folded). Returns (received, rest)."""
    m = RECEIVED_RE.match(data)
    if not m:
        return b"", data
    return m.group(0), data[m.end():]


# ---------------------------------------------------------------------------------------------
# SASL helpers for direct clients

def xoauth2_b64(user, token):
    return base64.b64encode(("user=%s\x01auth=Bearer %s\x01\x01" % (user, token)).encode()).decode()


def hash_password(password):
    """crypt(3) yescrypt hash, as `mkpasswd -m yescrypt` makes it."""
    r = subprocess.run(["mkpasswd", "-m", "yescrypt", "--stdin"], input=password.encode(),
                       capture_output=True, timeout=20, check=True)
    return r.stdout.decode().strip()


# ---------------------------------------------------------------------------------------------
# the proxy under test

def proxy_config(rig, listen_port, listen_tls_port=None, devices=(), state_dir=None,
                 upstream_port=None, token_url=None, proxy_extra=None, account_extra=None,
                 secret_file=None, tls=True, log_level="debug", client_cert=None):
    """The proxy's INI config pointing at this rig. devices: [(name, {key: value})].
    client_cert=(cert, key): the account signs assertions as rig.cert_client_id instead of
    using the client secret."""
    state_dir = state_dir or os.path.join(rig.dir, "proxy-state")
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    lines = ["[proxy]", "listen = 127.0.0.1:%d" % listen_port]
    if listen_tls_port:
        lines.append("listen_tls = 127.0.0.1:%d" % listen_tls_port)
    lines += ["hostname = relay.test"]
    if tls:
        lines += ["tls_cert = %s" % rig.cert_file, "tls_key = %s" % rig.key_file]
    lines += ["max_message_size = 35M", "log_level = %s" % log_level,
              "state_dir = %s" % state_dir, "bare_lf = normalize", "command_timeout = 30s"]
    for k, v in (proxy_extra or {}).items():
        lines.append("%s = %s" % (k, v))
    lines += ["", "[upstream]", "host = localhost",
              "port = %d" % (upstream_port or rig.dovecot_port), "ca_file = %s" % rig.ca_file,
              "", "[account scanners]", "provider = microsoft", "tenant = %s" % rig.tenant,
              "client_id = %s" % (rig.cert_client_id if client_cert else rig.client_id)]
    if client_cert:
        lines += ["client_certificate = %s" % client_cert[0], "client_key = %s" % client_cert[1]]
    else:
        lines += ["client_secret_file = %s" % (secret_file or rig.secret_file)]
    lines += ["mailbox = %s" % rig.mailbox, "token_url = %s" % (token_url or rig.token_url),
              "sender_rewrite = off"]
    # The relay core's tests expect the device to hear the upstream's verdict and no pacing;
    # the spool's tests ask for delivery and rate_limit explicitly.
    extra = {"delivery": "direct", "rate_limit": "0"}
    extra.update(account_extra or {})
    for k, v in extra.items():
        if v is not None:
            lines.append("%s = %s" % (k, v))
    for name, kv in devices:
        lines += ["", "[device %s]" % name]
        for k, v in kv.items():
            lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


class ProxyProcess:
    """smtp-oauth-proxy --config FILE, stderr captured to a file."""

    def __init__(self, binary, config_path, log_path):
        self.binary = binary
        self.config_path = config_path
        self.log_path = log_path
        self.proc = None

    def start(self, ports=(), timeout=15.0):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "--config", self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=self.logf, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("proxy exited with %s before it was ready; log:\n%s"
                                   % (self.proc.returncode, self.log()[-4000:]))
            if "event=ready" in self.log():
                break
            if time.monotonic() > deadline:
                raise TimeoutError("proxy logged no event=ready within %.0fs; log:\n%s"
                                   % (timeout, self.log()[-4000:]))
            time.sleep(0.05)
        for p in ports:
            wait_port(p, timeout=max(1.0, deadline - time.monotonic()), proc=self.proc)
        return self

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=5.0):
        p, self.proc = self.proc, None
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.logf.close()
        return p.returncode


# ---------------------------------------------------------------------------------------------
# Microsoft Graph stand-in (graph_standin.py, a child process)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class GraphStandin:
    """graph_standin.py as a child process, relaying to an SMTP sink. The control handle:
    g.url (the graph_url for the proxy), g.port, g.control(**kw) (POST /_control: fail=RULE,
    delay=, concurrency_limit=, ...; see graph_standin.py), g.fail(error=..., count=...),
    g.stats(), g.reset(), g.requests() (the JSON-lines request log), g.stop() / g.start()
    (same port). Also a context manager."""

    def __init__(self, d, keydir, sink_port, port=None, mailboxes=(), send_as=None,
                 extra_args=()):
        self.dir = d
        os.makedirs(d, exist_ok=True)
        self.keydir, self.sink_port = keydir, sink_port
        self.port = port or free_port()
        self.mailboxes, self.send_as = list(mailboxes), dict(send_as or {})
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(d, "graph-requests.jsonl")
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [PYTHON, os.path.join(HERE, "graph_standin.py"), "--port", str(self.port),
                "--keydir", self.keydir, "--sink", "127.0.0.1:%d" % self.sink_port,
                "--log", self.log_path]
        for m in self.mailboxes:
            args += ["--mailbox", m]
        for m, addrs in self.send_as.items():
            args += ["--send-as", "%s:%s" % (m, ",".join(addrs))]
        self.stdio = open(os.path.join(self.dir, "graph.log"), "ab")
        self.proc = subprocess.Popen(args + self.extra_args, stdin=subprocess.DEVNULL,
                                     stdout=self.stdio, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._req("GET", "/_health", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("Graph stand-in did not start:\n" + Rig._read(
                        os.path.join(self.dir, "graph.log")))
                time.sleep(0.05)

    def stop(self):
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.stdio.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _req(self, method, path, obj=None, timeout=10):
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def control(self, **kw):
        return self._req("POST", "/_control", kw)

    def fail(self, **rule):
        """One fault rule, e.g. fail(status=429, count=2, retry_after=3) or
        fail(error="ErrorAccessDenied", kind="sendMail")."""
        return self.control(fail=rule)

    def stats(self):
        return self._req("GET", "/_stats")

    def reset(self):
        """Counters, messages, drafts and faults cleared; requests() starts again from here."""
        r = self._req("POST", "/_reset", {})
        try:
            self._log_offset = os.path.getsize(self.log_path)
        except OSError:
            self._log_offset = 0
        return r

    def requests(self):
        """Every request logged since start or the last reset(): [{method, path, kind,
        mailbox, status, code, req_bytes, resp_bytes, ...}] (graph_standin.py)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(getattr(self, "_log_offset", 0))
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []


def start_graph_standin(rig, mailboxes=None, send_as=None, roles=None, sink_port=None,
                        port=None, extra_args=()):
    """A Graph stand-in that trusts rig's IdP and relays to rig's sink (or sink_port). The IdP
    is told to issue Graph tokens (scope GRAPH_SCOPE) with roles (default Mail.Send and
    Mail.ReadWrite). Returns the started GraphStandin: stop it (addCleanup(g.stop)), or use
    `with start_graph_standin(rig) as g:`. mailboxes: the known ones (default rig.mailbox;
    () for any). rig.idp_reset() turns the IdP's Graph tokens off again: then
    rig.idp_control(graph_scope=True) (and graph_roles=[...] for other permissions)."""
    ctl = {"graph_scope": True}
    if roles is not None:
        ctl["graph_roles"] = list(roles)
    rig.idp_control(**ctl)
    g = GraphStandin(os.path.join(rig.dir, "graph"), rig.keydir, sink_port or rig.sink_port,
                     port=port, mailboxes=[rig.mailbox] if mailboxes is None else mailboxes,
                     send_as=send_as, extra_args=extra_args)
    return g.start()


# ---------------------------------------------------------------------------------------------
# command line: serve / demo

def _cmd_serve(a):
    os.makedirs(a.dir, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *x: stop.set())
    signal.signal(signal.SIGINT, lambda *x: stop.set())
    with Rig(workdir=os.path.abspath(a.dir), keep=True) as rig:
        env = rig.env()
        with open(os.path.join(a.dir, "rig.env.tmp"), "w") as f:
            for k, v in env.items():
                f.write("%s=%s\n" % (k, v))
        os.replace(os.path.join(a.dir, "rig.env.tmp"), os.path.join(a.dir, "rig.env"))
        sys.stderr.write("rig up: dovecot 127.0.0.1:%d, idp %s, sink 127.0.0.1:%d\n"
                         % (rig.dovecot_port, rig.token_url, rig.sink_port))
        stop.wait(a.timeout)
    return 0


def _run(cmd, timeout=60, input=None):
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input)
    return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def _cmd_demo(a):
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        sys.stderr.write("demo: no proxy binary at %s (build it first)\n" % binary)
        return 2
    d = os.path.abspath(a.dir)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    ok = True
    with Rig(workdir=os.path.join(d, "rig"), keep=True) as rig:
        port = free_port()
        password = "demo-" + secrets.token_hex(6)
        devices = [("copier", {"address": "127.0.0.1", "account": "scanners"}),
                   ("scanner2", {"username": "copier3f", "password_hash": hash_password(password),
                                 "account": "scanners"})]
        # the device by address is 127.0.0.1; the AUTH device connects from 127.0.0.2 too
        cfg = os.path.join(d, "proxy.ini")
        with open(cfg, "w") as f:
            f.write(proxy_config(rig, port, devices=devices,
                                 state_dir=os.path.join(d, "state"), log_level="info"))
        os.chmod(cfg, 0o600)
        print("== proxy config (%s)" % cfg)
        print(open(cfg).read())
        proxy = ProxyProcess(binary, cfg, os.path.join(d, "proxy.log"))
        try:
            proxy.start(ports=[port])
            print("== 1. a copier, plain SMTP, known by its address 127.0.0.1")
            rc, out = _run(["swaks", "--server", "127.0.0.1", "--port", str(port),
                            "--from", "copier@contoso.test", "--to", "alice@contoso.test",
                            "--helo", "copier-3f", "--header", "Subject: Scan from copier 3F",
                            "--body", "Scanned document attached (demo).", "--timeout", "60"],
                           timeout=90)
            print(out)
            ok &= rc == 0
            print("== 2. a scanner with AUTH LOGIN over STARTTLS")
            rc, out = _run(["swaks", "--server", "127.0.0.1", "--port", str(port),
                            "--from", "scan2@contoso.test", "--to", "bob@contoso.test",
                            "--helo", "scanner-2", "--tls", "--tls-verify",
                            "--tls-ca-path", rig.ca_file,
                            "--auth", "LOGIN", "--auth-user", "copier3f",
                            "--auth-password", password, "--auth-hide-password",
                            "--header", "Subject: Scan to mail",
                            "--body", "Second demo message (AUTH LOGIN).", "--timeout", "60"],
                           timeout=90)
            print(out)
            ok &= rc == 0
        except Exception as e:
            print("demo: %s" % e)
            ok = False
        finally:
            proxy.stop()
        print("== proxy log lines for the messages (%s)" % proxy.log_path)
        for line in proxy.log().splitlines():
            if "event=" in line and ("message" in line or "ready" in line or "auth" in line
                                     or "token" in line):
                print(line)
        print("== the upstream (Dovecot submission) saw XOAUTH2 logins and relayed:")
        for line in rig.dovecot_log().splitlines():
            if "Login: user=" in line or "relayed message" in line:
                print(line)
        msgs = rig.sink_messages()
        print("== what arrived at the upstream's relay sink (%d message(s))" % len(msgs))
        for m in msgs:
            print("-- MAIL FROM:<%s> RCPT TO:%s" % (m["mail_from"], m["rcpt_tos"]))
            print(m["data"].decode(errors="replace"))
        if len(msgs) != 2:
            print("demo: FAILED: expected 2 messages at the sink, got %d" % len(msgs))
            ok = False
    print("demo: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="smtp-oauth-proxy test rig")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the rig until SIGTERM; writes DIR/rig.env")
    s.add_argument("--dir", required=True)
    s.add_argument("--timeout", type=float, default=3600)
    s = sub.add_parser("demo", help="the README's end-to-end demo")
    s.add_argument("--binary", required=True)
    s.add_argument("--dir", default=".demo")
    a = ap.parse_args(argv)
    if a.cmd == "demo":
        terminate_on_sigterm()
    return _cmd_serve(a) if a.cmd == "serve" else _cmd_demo(a)


if __name__ == "__main__":
    sys.exit(main())
