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
"""
import socket
import ssl
import threading

MAX_LINE = 16384
READ_TIMEOUT = 30

OK = {"AUTH": "235 2.7.0 Authentication successful",
      "MAIL": "250 2.1.0 Sender OK",
      "RCPT": "250 2.1.5 Recipient OK",
      "DATA": "250 2.6.0 <standin@exchange.test> [InternalId=1] Queued mail for delivery"}


class _Conn:
    def __init__(self, sock, owner):
        self.sock = sock
        self.owner = owner
        self.buf = b""
        self.tls = False

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
        self.owner.seen.append(phase)
        self.send(self.owner.script.get(phase, OK[phase]))

    def run(self):
        self.send("220 exchange.test Microsoft ESMTP MAIL Service ready (stand-in)")
        while True:
            ln = self.line()
            verb = ln.split(b" ", 1)[0].upper()
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
                if len(ln.split(b" ")) < 3:
                    self.send("334 ")
                    self.line()
                self.reply("AUTH")
            elif verb == b"MAIL":
                self.reply("MAIL")
            elif verb == b"RCPT":
                self.reply("RCPT")
            elif verb == b"DATA":
                self.send("354 Start mail input; end with <CRLF>.<CRLF>")
                while self.line() != b".":
                    pass
                self.reply("DATA")
            elif verb in (b"RSET", b"NOOP"):
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
        self.seen = []     # the phases answered, in order
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert_file, key_file)
        self.lsock = None
        self.stopping = False

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
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        c = _Conn(s, self)
        try:
            c.run()
        except (OSError, ValueError, ConnectionError, ssl.SSLError):
            pass
        finally:
            try:
                c.sock.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        if self.lsock is not None:
            self.lsock.close()
            self.lsock = None
