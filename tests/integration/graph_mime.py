"""MIME handling of graph_standin.py: what Graph does to a message it sends, at the byte level
so the device's bytes reach the sink unchanged except where Graph changes them.

  prepare_outgoing(mime, mailbox, send_as) -> (from, recipients, bytes to relay)
      recipients from To, Cc and Bcc (deduplicated, in order); the Bcc header (with its folded
      lines) taken off; no From header: "From: mailbox" added; a From that is neither the
      mailbox nor in send_as: from is None (the caller answers ErrorSendAsDenied).
  splice_segments(mime, atts) -> the draft with attachment parts added, in segments: inside a
      top-level multipart/mixed before its closing delimiter; any other message becomes a
      multipart/mixed whose first part is the original body with its Content-* headers.
  attachment_chunks(att) -> one base64 part in pieces (Content-Disposition attachment or
      inline, Content-ID for inline ones).
  smtp_send(smtp, from, rcpts, segments) -> the segments streamed through DATA; memory stays
      at the attachments' own bytes whatever their size.
  peek_message_id(mime) -> the Message-ID header's value, or None.
"""
import base64
import email.utils
import re
import secrets
import smtplib
from email import policy as email_policy
from email.parser import BytesHeaderParser

_BLANK = re.compile(rb"\r?\n\r?\n")


def split_header(mime):
    """(header block including its last line break, body starting with the blank line).
    No blank line: all header."""
    m = _BLANK.search(mime)
    if not m:
        return mime, b""
    cut = m.start() + (2 if mime[m.start():m.start() + 2] == b"\r\n" else 1)
    return mime[:cut], mime[cut:]


def _fields(header):
    """[(name lower, raw bytes of the field with its folded lines)] of a header block."""
    out = []
    for line in re.split(rb"(?<=\n)", header):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1].append(line)
        else:
            out.append((line.split(b":", 1)[0].strip().lower(), [line]))
    return [(n, b"".join(ls)) for n, ls in out]


def _parsed(header):
    return BytesHeaderParser(policy=email_policy.compat32).parsebytes(header)


def peek_message_id(mime):
    if not mime:
        return None
    v = _parsed(split_header(mime)[0]).get("Message-ID")
    return str(v).strip() if v else None


def prepare_outgoing(mime, mailbox, send_as):
    header, body = split_header(mime)
    msg = _parsed(header)
    rcpts, seen = [], set()
    for name in ("To", "Cc", "Bcc"):
        for _, addr in email.utils.getaddresses([str(v) for v in msg.get_all(name) or []]):
            if addr and "@" in addr and addr.lower() not in seen:
                seen.add(addr.lower())
                rcpts.append(addr)
    nl = b"\r\n" if header.endswith(b"\r\n") or b"\r\n" in header else b"\n"
    froms = [a for _, a in email.utils.getaddresses([str(v) for v in msg.get_all("From") or []])
             if a]
    if not froms:
        header = b"From: " + mailbox.encode() + nl + header
        from_addr = mailbox
    elif froms[0].lower() == mailbox.lower() or froms[0].lower() in send_as:
        from_addr = froms[0]
    else:
        return None, rcpts, mime
    kept = b"".join(raw for name, raw in _fields(header) if name != b"bcc")
    return from_addr, rcpts, kept + body


def attachment_chunks(att):
    """One attachment as a base64 MIME part, in pieces (each line CRLF-ended): its headers,
    then the base64 lines (Content-Disposition attachment or inline, Content-ID if any)."""
    name = att["name"].replace("\\", "\\\\").replace('"', '\\"')
    lines = [b"Content-Type: %s; name=\"%s\"" % (att["contentType"].encode(), name.encode()),
             b"Content-Disposition: %s; filename=\"%s\"" % (
                 b"inline" if att.get("isInline") else b"attachment", name.encode()),
             b"Content-Transfer-Encoding: base64"]
    if att.get("contentId"):
        lines.append(b"Content-ID: <%s>" % att["contentId"].strip("<>").encode())
    yield b"\r\n".join(lines) + b"\r\n\r\n"
    data = memoryview(att["data"])
    step = 57 * 4096   # 4096 lines of 76 characters at a time
    for a in range(0, len(data), step):
        yield base64.encodebytes(data[a:a + step]).replace(b"\n", b"\r\n")


def splice_segments(mime, atts):
    """The message with the attachments added, as [(bytes, False) | (iterator, True)]: the
    True ones are base64 parts, safe to send as they are (no line starts with a dot)."""
    if not atts:
        return [(mime, False)]
    header, body = split_header(mime)
    msg = _parsed(header)
    ctype = (msg.get_content_type() or "").lower()
    boundary = msg.get_boundary() if ctype == "multipart/mixed" else None
    if boundary:
        close = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"--")
        found = list(close.finditer(body))
        if found:
            at = found[-1].start()
            out = [(header + body[:at], False)]
            for att in atts:
                out.append((iter([b"\r\n--" + boundary.encode() + b"\r\n"]), True))
                out.append((attachment_chunks(att), True))
            out.append((body[at:], False))
            return out
    # wrap: the old body with its Content-* headers becomes the first part
    fields = _fields(header)
    content = b"".join(raw for n, raw in fields if n.startswith(b"content-"))
    rest = b"".join(raw for n, raw in fields if not n.startswith(b"content-") and
                    n != b"mime-version")
    if not content:
        content = b"Content-Type: text/plain; charset=us-ascii\r\n"
    b = ("=_graph_standin_" + secrets.token_hex(12)).encode()
    body = body[2:] if body.startswith(b"\r\n") else body[1:]   # the blank line
    # the CRLF before a delimiter belongs to it: one more keeps the body's own last line break
    out = [(rest + b"MIME-Version: 1.0\r\n" +
            b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n" +
            b"--" + b + b"\r\n" + content + b"\r\n" + body + b"\r\n", False)]
    for att in atts:
        out.append((iter([b"--" + b + b"\r\n"]), True))
        out.append((attachment_chunks(att), True))
    out.append((b"--" + b + b"--\r\n", False))
    return out


def smtp_send(s, from_addr, rcpts, segments):
    """MAIL, RCPT, DATA on smtplib.SMTP s with the segments streamed (no copy of the whole
    message): dot-stuffing and CRLF repair only where needed. Returns {rcpt: refusal}."""
    s.ehlo_or_helo_if_needed()
    code, resp = s.mail(from_addr)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, resp, from_addr)
    refused = {}
    for r in rcpts:
        code, resp = s.rcpt(r)
        if code not in (250, 251):
            refused[r] = (code, resp)
    if len(refused) == len(rcpts):
        s.rset()
        raise smtplib.SMTPRecipientsRefused(refused)
    code, resp = s.docmd("data")
    if code != 354:
        raise smtplib.SMTPDataError(code, resp)
    tail, size = b"\r\n", 0
    for data, safe in segments:
        for piece in (data if safe else [_quote(data)]):
            if piece:
                s.sock.sendall(piece)
                size += len(piece)
                tail = (tail + piece)[-2:]
    s.sock.sendall((b"" if tail == b"\r\n" else b"\r\n") + b".\r\n")
    code, resp = s.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, resp)
    return refused, size


def _quote(data):
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return re.sub(rb"(?m)^\.", b"..", data)
