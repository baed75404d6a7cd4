#!/usr/bin/python3
"""A scripted stand-in for Exchange Online's submission server (smtp.office365.com:587), for
the tests of the refusal explanations (test_explain.py): it speaks enough SMTP for the proxy's
client (greeting, EHLO, STARTTLS with the rig's certificate, AUTH XOAUTH2 / OAUTHBEARER with
the 334 continuation, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and answers each phase with the reply
the test scripted, in Exchange's words, or with Exchange's usual success. It does not check the
token: it stands in for Exchange refusing, not for Exchange validating (the rig's Dovecot and
raw upstream do that).

    ex = ExchangeStandin(port, cert_file, key_file); ex.start()
    ex.script = {"AUTH": "535 5.7.3 Authentication unsuccessful"}   # phases: AUTH MAIL RCPT DATA
    ...; ex.stop()

A script value may also be a function of the transaction so far (a dict: mail_from, rcpts,
data; the address being added for RCPT is rcpts[-1]) returning the reply line, or None for
success: e.g. refuse a device's message at the end of DATA but accept the bounce from <>.
Every message accepted is kept in ex.messages (mail_from, rcpts, data: the bytes between DATA
and the final dot, dot-unstuffed, and time); ex.connections counts the sessions (each one
STARTTLS handshake and one AUTH) and ex.auths the AUTH commands.

For connection reuse (test_upstream_pool.py) it also keeps the connections open now and at most
at once, every command verb by connection (ex.verbs), the AUTH responses, can drop every open
connection (close_all), answer RSET with a scripted reply ("421 ..." then closes), and hold
each DATA verdict for ex.delay seconds. ex.reset() forgets the counts.
"""
import base64
import binascii
import re
import socket
import ssl
import threading
import time

MAX_LINE = 16384
READ_TIMEOUT = 30

OK = {"AUTH": "235 2.7.0 Authentication successful",
      "MAIL": "250 2.1.0 Sender OK",
      "RCPT": "250 2.1.5 Recipient OK",
      "DATA": "250 2.6.0 <standin@exchange.test> [InternalId=1] Queued mail for delivery"}


class _Conn:
    def __init__(self, sock, owner, no):
        self.sock = sock
        self.owner = owner
        self.no = no       # connection number, from 1
        self.buf = b""
        self.tls = False
        self.txn = None

    def send(self, line):
        self.sock.sendall(line.encode() + b"\r\n")

    def line(self):
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                raise ValueError("line too long")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.rstrip(b"\r")

    def reply(self, phase):
        """Send the scripted reply of phase (or success); True if it was a 2xx."""
        with self.owner.lock:
            self.owner.seen.append(phase)
            how = self.owner.script.get(phase)
        if callable(how):
            how = how(dict(self.txn or {}))
        line = how or OK[phase]
        self.send(line)
        return line.startswith("2")

    @staticmethod
    def _addr(ln):
        m = re.search(rb"<([^>]*)>", ln)
        return m.group(1).decode(errors="replace") if m else ""

    def auth_blob(self, b64):
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            blob = b""
        with self.owner.lock:
            self.owner.auth_blobs.append((self.no, blob))

    def run(self):
        self.send("220 exchange.test Microsoft ESMTP MAIL Service ready (stand-in)")
        while True:
            ln = self.line()
            verb = ln.split(b" ", 1)[0].upper()
            with self.owner.lock:
                self.owner.commands.append((self.no, verb.decode("ascii", "replace")))
            if verb in (b"EHLO", b"HELO"):
                caps = ["250-exchange.test Hello [127.0.0.1]", "250-SIZE 157286400",
                        "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250-8BITMIME"]
                caps += ["250-AUTH LOGIN XOAUTH2"] if self.tls else ["250-STARTTLS"]
                for c in caps:
                    self.send(c)
                self.send("250 SMTPUTF8")
            elif verb == b"STARTTLS" and not self.tls:
                self.send("220 2.0.0 SMTP server ready")
                self.sock = self.owner.ctx.wrap_socket(self.sock, server_side=True)
                self.tls, self.buf = True, b""
            elif verb == b"AUTH" and self.tls:
                with self.owner.lock:
                    self.owner.auths += 1
                parts = ln.split(b" ")
                if len(parts) < 3:
                    self.send("334 ")
                    self.auth_blob(self.line())
                else:
                    self.auth_blob(parts[2])
                self.reply("AUTH")
            elif verb == b"MAIL":
                self.txn = {"mail_from": self._addr(ln), "rcpts": [], "data": b""}
                if not self.reply("MAIL"):
                    self.txn = None
            elif verb == b"RCPT":
                if self.txn is None:   # not checked: a stand-in for replies, not a validator
                    self.txn = {"mail_from": None, "rcpts": [], "data": b""}
                self.txn["rcpts"].append(self._addr(ln))
                if not self.reply("RCPT"):
                    self.txn["rcpts"].pop()
            elif verb == b"DATA":
                self.send("354 Start mail input; end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    body_line = self.line()
                    if body_line == b".":
                        break
                    lines.append(body_line[1:] if body_line.startswith(b".") else body_line)
                txn = self.txn or {"mail_from": None, "rcpts": []}
                txn["data"] = b"".join(x + b"\r\n" for x in lines)
                self.txn = txn
                if self.owner.delay:
                    time.sleep(self.owner.delay)
                if self.reply("DATA"):
                    with self.owner.lock:
                        self.owner.messages.append(dict(txn, time=time.time()))
                self.txn = None
            elif verb == b"RSET" and "RSET" in self.owner.script:
                self.txn = None
                self.send(self.owner.script["RSET"])
                if self.owner.script["RSET"].startswith("421"):
                    return
            elif verb in (b"RSET", b"NOOP"):
                if verb == b"RSET":
                    self.txn = None
                self.send("250 2.0.0 OK")
            elif verb == b"QUIT":
                self.send("221 2.0.0 Service closing transmission channel")
                return
            else:
                self.send("500 5.3.3 Unrecognized command")


class ExchangeStandin:
    def __init__(self, port, cert_file, key_file):
        self.port = port
        self.script = {}   # phase -> the reply line to give instead of success
        self.lock = threading.Lock()
        self.delay = 0.0   # seconds before each DATA verdict (to overlap sessions)
        self.reset()
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert_file, key_file)
        self.lsock = None
        self.stopping = False

    def reset(self):
        """Forget what was seen and counted (not the script)."""
        with self.lock:
            self.seen = []         # the phases answered, in order
            self.messages = []     # accepted: {mail_from, rcpts, data, time}
            self.connections = 0   # accepted
            self.auths = 0
            self.open_now = 0
            self.max_open = 0      # open at once, at most
            self.commands = []     # (connection number, verb) in arrival order
            self.auth_blobs = []   # (connection number, decoded AUTH response)
            self.live = []         # connections open now

    def verbs(self, verb):
        """The connection numbers of every `verb` command seen, in order."""
        with self.lock:
            return [n for n, v in self.commands if v == verb]

    def close_all(self):
        """Drop every open connection, as an upstream that times idle sessions out does."""
        with self.lock:
            live = list(self.live)
        for c in live:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            s.settimeout(READ_TIMEOUT)
            with self.lock:
                self.connections += 1
                self.open_now += 1
                self.max_open = max(self.max_open, self.open_now)
                c = _Conn(s, self, self.connections)
                self.live.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.run()
        except (OSError, ValueError, ConnectionError, ssl.SSLError):
            pass
        finally:
            with self.lock:
                self.open_now -= 1
                self.live.remove(c)
            try:
                c.sock.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        if self.lsock is not None:
            self.lsock.close()
            self.lsock = None
