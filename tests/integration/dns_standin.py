#!/usr/bin/python3
"""A DNS stand-in on loopback (UDP): answers A and AAAA for the names it is given, NXDOMAIN for
every other name, and counts the questions. Enough for libevent's evdns, which asks A and AAAA
at once and may mix the case of the name (0x20): the question is echoed as asked and matched
without regard to case.

    dns = DnsStandin({"dual.sop.test": ["::1", "127.0.0.1"]})   # a thread on 127.0.0.1:PORT
    dns.port, dns.questions  ->  [("dual.sop.test", "AAAA"), ...]
    dns.stop()
"""
import ipaddress
import socket
import struct
import threading

QTYPES = {1: "A", 28: "AAAA"}


def _qname(msg, off):
    labels = []
    for _ in range(128):
        n = msg[off]
        off += 1
        if n == 0:
            return ".".join(labels), off
        if n & 0xC0 or off + n > len(msg):
            raise ValueError("compressed or cut name in a question")
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    raise ValueError("name too long")


class DnsStandin:
    def __init__(self, records, host="127.0.0.1", port=0):
        self.records = {k.lower().rstrip("."): [ipaddress.ip_address(a) for a in v]
                        for k, v in records.items()}
        self.questions = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, msg):
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if qd != 1:
            return None
        name, off = _qname(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        question = msg[12:off + 4]
        key = name.lower().rstrip(".")
        self.questions.append((key, QTYPES.get(qtype, str(qtype))))
        answers = []
        if key in self.records and qclass == 1:
            for a in self.records[key]:
                if (qtype == 1 and a.version == 4) or (qtype == 28 and a.version == 6):
                    answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(a.packed))
                                   + a.packed)
        rcode = 0 if key in self.records else 3  # NXDOMAIN
        hdr = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x0080 | rcode, 1,
                          len(answers), 0, 0)
        return hdr + question + b"".join(answers)

    def _serve(self):
        while self.running:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                reply = self._answer(msg)
            except (ValueError, struct.error, IndexError):
                reply = None
            if reply:
                self.sock.sendto(reply, peer)

    def stop(self):
        self.running = False
        self.thread.join(5)
        self.sock.close()
