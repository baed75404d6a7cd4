#!/usr/bin/python3
"""A private Postfix instance on loopback: stand-ins for Exchange Online's MX endpoint (direct
send: no AUTH, STARTTLS offered or not, only the tenant's accepted domain taken) and for a
certificate-based connector (relays to any domain only for a client certificate it trusts).

    pf = Postfix(DIR, sink_port, cert, key, trusted_client_certs=[PEM path, ...])
    pf.start()
    pf.ports["mx"]          STARTTLS offered (smtpd_tls_security_level = may), no AUTH
    pf.ports["mx_plain"]    no STARTTLS at all
    pf.ports["mx_smtps"]    TLS from the first byte (smtpd_tls_wrappermode)
    pf.ports["connector"]   asks for a client certificate; relays beyond contoso.test only for a
                            certificate listed in relay_clientcerts (permit_tls_clientcerts)
    pf.stop()

Its own config_directory, queue_directory and data_directory under DIR, run in the foreground
(what `postfix -c DIR/conf start-fg` does, the master our child), logging to DIR/postfix.log; mail is delivered to sink_port (the
rig's aiosmtpd sink) for every domain. Replies are worded like Exchange Online's where the proxy
explains them: an outside recipient at the MX gets 550 5.7.54, at the connector without a
trusted certificate 550 5.7.64. Needs root (Postfix's master insists) and the postfix package.
"""
import hashlib
import os
import shutil
import signal
import ssl
import subprocess
import time

import sop_rig

ACCEPTED_DOMAIN = "contoso.test"
OUTSIDE_DOMAIN = "outside.example"
MX_REFUSAL = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
CONNECTOR_REFUSAL = "550 5.7.64 TenantAttribution; Relay Access Denied"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
MASTER = "/usr/lib/postfix/sbin/master"

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.{accepted}
mydomain = {accepted}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {accepted}
local_header_rewrite_clients =
alias_maps =
alias_database =
biff = no
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
default_transport = smtp:[127.0.0.1]:{sink}
relay_transport = smtp:[127.0.0.1]:{sink}
smtp_tls_security_level = none
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_fingerprint_digest = sha256
smtpd_tls_received_header = yes
relay_clientcerts = texthash:{d}/conf/relay_clientcerts
mx_relay = permit_auth_destination, check_recipient_access texthash:{d}/conf/mx_refuse, reject
connector_relay = permit_tls_clientcerts, check_recipient_access texthash:{d}/conf/connector_refuse,
    reject
smtpd_relay_restrictions = $mx_relay
"""

MASTER_CF = """\
127.0.0.1:{mx} inet n - n - - smtpd
127.0.0.1:{mx_plain} inet n - n - - smtpd -o smtpd_tls_security_level=none
127.0.0.1:{mx_smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt
127.0.0.1:{connector} inet n - n - - smtpd -o smtpd_tls_ask_ccert=yes -o smtpd_relay_restrictions=$connector_relay
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def cert_fingerprint(pem_path):
    """SHA-256 of the certificate's DER, as Postfix's relay_clientcerts writes it (AB:CD:...)."""
    with open(pem_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    h = hashlib.sha256(der).hexdigest().upper()
    return ":".join(h[i:i + 2] for i in range(0, len(h), 2))


def available():
    """'' when a private Postfix can run here, else why not."""
    if os.geteuid() != 0:
        return "Postfix's master runs as root only"
    if not os.access(POSTFIX, os.X_OK) or not os.path.isdir("/usr/lib/postfix/sbin"):
        return "postfix is not installed (scripts/install-deps.sh)"
    return ""


class Postfix:
    def __init__(self, d, sink_port, cert, key, trusted_client_certs=()):
        self.dir = d
        self.proc = None
        self.ports = {name: sop_rig.free_port() for name in ("mx", "mx_plain", "mx_smtps",
                                                             "connector")}
        for sub in ("conf", "queue", "data"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        os.chmod(d, 0o755)
        shutil.chown(os.path.join(d, "data"), "postfix")  # master's lock lives there
        # smtpd reads the certificate and key as root, before it drops privileges
        conf = os.path.join(d, "conf")
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(d=d, accepted=ACCEPTED_DOMAIN, sink=sink_port, cert=cert,
                                   key=key))
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(**self.ports))
        with open(os.path.join(conf, "mx_refuse"), "w") as f:
            f.write("%s %s\n" % (OUTSIDE_DOMAIN, MX_REFUSAL))
        with open(os.path.join(conf, "connector_refuse"), "w") as f:
            f.write("%s %s\n" % (OUTSIDE_DOMAIN, CONNECTOR_REFUSAL))
        with open(os.path.join(conf, "relay_clientcerts"), "w") as f:
            for i, pem in enumerate(trusted_client_certs):
                f.write("%s connector-cert-%d\n" % (cert_fingerprint(pem), i))
        self.conf = conf
        self.log = os.path.join(d, "postfix.log")

    def start(self, timeout=30.0):
        self.stdio = open(os.path.join(self.dir, "postfix.stdio"), "ab")
        # What `postfix start-fg` does, with the master as our own child: the integrity check
        # (it also makes the queue's directories), then the master in the foreground (-s), so
        # that PR_SET_PDEATHSIG reaches the master itself if this process dies.
        r = subprocess.run([POSTFIX, "-c", self.conf, "check"], stdin=subprocess.DEVNULL,
                           stdout=self.stdio, stderr=subprocess.STDOUT, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("postfix check failed:\n%s" % self.log_text()[-3000:])
        self.proc = subprocess.Popen([MASTER, "-c", self.conf, "-s"],
                                     stdin=subprocess.DEVNULL, stdout=self.stdio,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=sop_rig._die_with_parent)
        try:
            for port in self.ports.values():
                if port == self.ports["mx_smtps"]:
                    sop_rig.wait_port(port, timeout=timeout, proc=self.proc)
                else:
                    sop_rig.wait_port(port, timeout=timeout, proc=self.proc, banner=b"220")
        except Exception as e:
            tail = self.log_text()[-3000:] + self._read(os.path.join(self.dir, "postfix.stdio"))
            self.stop()
            raise RuntimeError("postfix did not start: %s\n%s" % (e, tail)) from None

    @staticmethod
    def _read(path):
        try:
            with open(path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_text(self):
        return self._read(self.log)

    def wait_log(self, needle, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout=15.0):
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            subprocess.run([POSTFIX, "-c", self.conf, "stop"], capture_output=True, timeout=30)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # master's children are in its session's group
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.stdio.close()
