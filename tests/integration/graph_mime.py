"""MIME handling of graph_standin.py: what Graph does to a message it sends, at the byte level
so the device's bytes reach the sink unchanged except where Graph changes them.

  prepare_outgoing(mime, mailbox, send_as) -> (from, recipients, bytes to relay)
      recipients from To, Cc and Bcc (deduplicated, in order); the Bcc header (with its folded
      lines) taken off; no From header: "From: mailbox" added; a From that is neither the
      mailbox nor in send_as: from is None (the caller answers ErrorSendAsDenied).
  splice_parts(mime, parts) -> the draft with attachment parts added: inside a top-level
      multipart/mixed before its closing delimiter; any other message becomes a
      multipart/mixed whose first part is the original body with its Content-* headers.
  build_attachment_part(att) -> one base64 part (Content-Disposition attachment or inline,
      Content-ID for inline ones).
  peek_message_id(mime) -> the Message-ID header's value, or None.
"""
import base64
import email.utils
import re
import secrets
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


def build_attachment_part(att):
    name = att["name"].replace("\\", "\\\\").replace('"', '\\"')
    lines = [b"Content-Type: %s; name=\"%s\"" % (att["contentType"].encode(), name.encode()),
             b"Content-Disposition: %s; filename=\"%s\"" % (
                 b"inline" if att.get("isInline") else b"attachment", name.encode()),
             b"Content-Transfer-Encoding: base64"]
    if att.get("contentId"):
        lines.append(b"Content-ID: <%s>" % att["contentId"].strip("<>").encode())
    enc = base64.encodebytes(att["data"]).replace(b"\n", b"\r\n")
    return b"\r\n".join(lines) + b"\r\n\r\n" + enc


def splice_parts(mime, parts):
    header, body = split_header(mime)
    msg = _parsed(header)
    ctype = (msg.get_content_type() or "").lower()
    boundary = msg.get_boundary() if ctype == "multipart/mixed" else None
    if boundary:
        close = re.compile(rb"(?:^|\r?\n)--" + re.escape(boundary.encode()) + rb"--")
        found = list(close.finditer(body))
        if found:
            at = found[-1].start()
            add = b"".join(b"\r\n--" + boundary.encode() + b"\r\n" + p for p in parts)
            return header + body[:at] + add + body[at:]
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
    out = [rest, b"MIME-Version: 1.0\r\n",
           b"Content-Type: multipart/mixed; boundary=\"" + b + b"\"\r\n\r\n",
           b"--" + b + b"\r\n" + content + b"\r\n" + body + b"\r\n"]
    out += [b"--" + b + b"\r\n" + p for p in parts]
    out.append(b"--" + b + b"--\r\n")
    return b"".join(out)
