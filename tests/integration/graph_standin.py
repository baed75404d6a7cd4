#!/usr/bin/python3
"""A stand-in for Microsoft Graph v1.0's mail sending (sendMail, drafts, upload sessions), for
the tests of graph accounts (issue 12). HTTP on loopback only, threaded (stdlib http.server);
what it accepts it relays to an SMTP sink (smtplib) as the message Graph would send.

Runs alone (the rig starts it with sop_rig.start_graph_standin()):
    /usr/bin/python3 graph_standin.py --port 0 --port-file P --keydir KEYS \
        --sink 127.0.0.1:2525 --log requests.jsonl [--mailbox scanners@contoso.test ...]

Graph behaviour followed (Microsoft's docs: user-sendmail, outlook-send-mime-message,
user-post-messages, message-send, attachment-createuploadsession, outlook-large-attachments,
throttling-limits, errors), and where the stand-in chooses because the docs say nothing:

  Every /v1.0 call needs "Authorization: Bearer JWT": RS256 signed by the IdP stand-in's key
  (looked up by kid in --keydir, idp_standin.py writes KEYDIR/default/RS256/<kid>, or --key-file),
  not expired, aud one of --audience (default https://graph.microsoft.com and Graph's app id
  00000003-0000-0000-c000-000000000000). Failures: 401 InvalidAuthenticationToken with Graph's
  words ("Access token is empty.", "CompactToken parsing failed with error code: 80049217",
  "Access token validation failure. Invalid audience.", "Lifetime validation failed, the token
  is expired.", "Access token validation failure.") and a WWW-Authenticate header; a token for
  https://outlook.office365.com is refused this way. "roles" must hold Mail.Send (sendMail,
  send) and Mail.ReadWrite (drafts, attachments, upload sessions), else 403 ErrorAccessDenied
  "Access is denied. Check credentials and try again.".
  Every error is Graph's shape {"error":{"code","message","innerError":{"date","request-id",
  "client-request-id"}}} with request-id / client-request-id headers.

  POST /v1.0/users/{mb}/sendMail, Content-Type text/plain, body = base64 of the MIME (whitespace
       ignored, as .NET's Convert.FromBase64String does; anything else: 400
       ErrorMimeContentInvalidBase64String) -> 202, empty body. Another Content-Type: 400
       (the stand-in takes MIME only, not Graph's JSON message).
  Request size: a body over 4 MB (4194304; /_control max_request) -> 413 RequestEntityTooLarge "The
       maximum request length supported is 4MB." (the status and text users report from Graph;
       the code is the stand-in's). With "Expect: 100-continue" the 413 comes before the body.
  Recipients come from To/Cc/Bcc (none: 400 ErrorInvalidRecipients); the relayed copy has no
       Bcc header (as an MTA sends it). From: the mailbox, or an address allowed by --send-as
       MB:ADDR,... ; no From header: "From: mailbox" is added; another From: 403
       ErrorSendAsDenied. The envelope sender at the sink is that From address.
  Unknown mailbox (when --mailbox is given): 404 ErrorInvalidUser.
  Message size: more than the mailbox's limit (150 MB, --max-message-size, /_control) -> 400
       ErrorMessageSizeExceeded (Exchange maps that code to 400).
  Drafts: POST /v1.0/users/{mb}/messages (text/plain base64 MIME) -> 201 {"id": ...};
       POST .../messages/{id}/attachments (JSON fileAttachment with contentBytes) -> 201;
       POST .../messages/{id}/attachments/createUploadSession {"AttachmentItem":{...}} -> 201
       {"uploadUrl","expirationDateTime","nextExpectedRanges":["0-"]}; an attachment under 3 MB
       -> 400 ErrorAttachmentSizeShouldNotBeLessThanMinimumSize (as Graph; /_control
       min_upload_session_size=0 turns it off);
       PUT uploadUrl WITHOUT Authorization (with one: 401), Content-Range bytes a-b/N, in order
       (else 416 invalidRange), each fragment a multiple of 320 KiB except the last (else 400
       invalidRequest: the rule of Graph's OneDrive upload sessions, which issue 12 asks for;
       Outlook's own example uses 2 MiB fragments; /_control chunk_multiple=0 turns it off),
       at most 4 MB each (413) -> 200 {"expirationDateTime","nextExpectedRanges":["NEXT"]}
       (Outlook gives the next start only), the last -> 201 with a Location header;
       DELETE uploadUrl -> 204 (session cancelled);
       POST .../messages/{id}/send -> 202: the draft's MIME with each attachment added as a
       base64 MIME part is relayed; the draft is gone afterwards (Graph moves it to Sent Items);
       DELETE .../messages/{id} -> 204. Unknown draft or session: 404 ErrorItemNotFound.
  Throttling: more than 4 requests in flight for one mailbox (/_control concurrency_limit;
       upload PUTs count for their mailbox) -> 429 ApplicationThrottled "Application is over
       its MailboxConcurrency limit." with Retry-After: 1. Peaks are kept per mailbox
       (peak_in_flight: admitted at once; peak_attempted: including the refused one). Graph's
       10,000 requests per 10 minutes per mailbox is not enforced.
  Injected errors (/_control "fail") use the codes and texts of ERRORS below, as Graph words
       them where users have reported them; MailboxNotEnabledForRESTAPI is 404 as reported
       (a rule's "status" changes it, e.g. to 403); 503 is Graph's generic serviceNotAvailable.

Control (same port, not under /v1.0):
  POST /_control JSON, any of:
    {"fail": RULE or [RULE...]}: the next matching requests answer an error. RULE = {"error":
        CODE (one of ERRORS) | "status": N [, "code": C], "count": N (default 1, -1: until
        cleared), "mailbox": MB, "kind": KIND or [KINDS], "retry_after": S (429/503: default 1),
        "message": TEXT, "delay": S, "drop": true (close the connection, no reply)}.
        KINDS: sendMail createMessage addAttachment createUploadSession upload cancelUpload
        send deleteMessage.
    {"clear_faults": true}, {"delay": S or {KIND: S}} (held in flight before answering),
    {"concurrency_limit": N} (0: none), {"max_request": N}, {"max_message_size": N or {MB: N}},
    {"min_upload_session_size": N}, {"chunk_multiple": N}, {"send_as": {MB: [ADDR...]}},
    {"mailboxes": [MB...] or null}, {"session_lifetime": S} (an upload session older: 404)
    Rules are tried in the order given; the first that matches a request answers it.
  GET  /_stats   requests, by_status, by_kind, in_flight, peak_in_flight, peak_attempted and
                 throttled per mailbox, messages relayed (mailbox, kind sendMail|draft, from,
                 rcpts, size, message_id, sink reply, time), relay_errors,
                 requests_per_message (Message-ID -> every request whose MIME, draft or upload
                 session carries it, refused and throttled ones included), drafts (ids left:
                 orphans after a crash), upload_sessions, faults left, settings.
  POST /_reset   counters, messages, drafts, sessions and faults cleared (settings kept).
  GET  /_health
Files: graph_standin.py (server, tokens, throttling, faults, control), graph_calls.py (the Graph
calls), graph_mime.py (what Graph does to the MIME: recipients, Bcc, From, attachments).
Every request is also a line of the --log JSON-lines file: time, method, path, kind, mailbox,
status, code, req_bytes, resp_bytes, in_flight, draft, message_id, injected, auth (header sent
or not), ms. Tokens and message contents are never logged.
"""
import argparse
import base64
import binascii
import json
import os
import re
import signal
import smtplib
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from graph_calls import GraphCalls, Reply
from graph_mime import peek_message_id, prepare_outgoing, smtp_send, splice_segments

GRAPH_AUDIENCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
MAX_REQUEST = 4 * 1024 * 1024          # Graph's 4 MB per request
CHUNK_MULTIPLE = 320 * 1024            # upload fragments
MIN_UPLOAD_SESSION = 3 * 1024 * 1024   # below: POST .../attachments instead
MAX_MESSAGE = 150 * 1024 * 1024        # Exchange Online's largest message
CONCURRENCY = 4                        # per app per mailbox
DRAIN_CAP = 200 * 1024 * 1024          # a refused body larger than this: connection closed

# code -> (status, message); "{mailbox}" is filled in
ERRORS = {
    "InvalidAuthenticationToken": (401, "Lifetime validation failed, the token is expired."),
    "ErrorAccessDenied": (403, "Access is denied. Check credentials and try again."),
    "ErrorInvalidUser": (404, "The requested user '{mailbox}' is invalid."),
    "ErrorMimeContentInvalidBase64String": (400, "Invalid base64 string for MIME content."),
    "ErrorMessageSizeExceeded": (400, "The message exceeds the maximum supported size., Cannot "
                                 "save changes made to an item to store."),
    "RequestEntityTooLarge": (413, "The maximum request length supported is 4MB."),
    "ErrorSendAsDenied": (403, "The user account which was used to submit this request does not "
                          "have the right to send mail on behalf of the specified sending "
                          "account., Cannot submit message."),
    # Graph answers this one with 404 (reported by users); {"status": 403} in a rule changes it
    "MailboxNotEnabledForRESTAPI": (404, "The mailbox is either inactive, soft-deleted, or is "
                                    "hosted on-premise."),
    "ApplicationThrottled": (429, "Application is over its MailboxConcurrency limit."),
    "serviceNotAvailable": (503, "The service is temporarily unavailable. Retry the request "
                            "after the delay given in Retry-After."),
    "ErrorItemNotFound": (404, "The specified object was not found in the store."),
    "ErrorInvalidRecipients": (400, "At least one recipient is not valid., A message can't be "
                               "sent because it contains no recipients."),
    "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize": (
        400, "Attachment size must be greater than the minimum size."),
    "invalidRequest": (400, "The request is malformed or incorrect."),
    "invalidRange": (416, "The specified byte range is invalid or unavailable."),
    "generalException": (500, "An unspecified error has occurred."),
}
DEFAULT_CODE = {401: "InvalidAuthenticationToken", 403: "ErrorAccessDenied",
                404: "ErrorInvalidUser", 400: "invalidRequest", 413: "RequestEntityTooLarge",
                429: "ApplicationThrottled", 503: "serviceNotAvailable", 500: "generalException",
                416: "invalidRange"}
KINDS = ("sendMail", "createMessage", "addAttachment", "createUploadSession", "upload",
         "cancelUpload", "send", "deleteMessage")
NEEDS = {"sendMail": "Mail.Send", "send": "Mail.Send", "createMessage": "Mail.ReadWrite",
         "addAttachment": "Mail.ReadWrite", "createUploadSession": "Mail.ReadWrite",
         "deleteMessage": "Mail.ReadWrite"}
_V1 = re.compile(r"^/v1\.0/users/([^/]+)/(sendMail|messages)(?:/([^/]+)"
                 r"(?:/(send|attachments(?:/createUploadSession)?))?)?$", re.I)


class State:
    def __init__(self, keydir=None, key_file=None, sink=None, log_path=None, audiences=None,
                 mailboxes=None, send_as=None, base_url=""):
        self.lock = threading.Lock()
        self.keydir, self.sink, self.base_url = keydir, sink, base_url
        self.key_pem = open(key_file, "rb").read() if key_file else None
        self.audiences = tuple(audiences or GRAPH_AUDIENCES)
        self.mailboxes = {m.lower() for m in mailboxes} if mailboxes else None
        self.send_as = {k.lower(): {a.lower() for a in v} for k, v in (send_as or {}).items()}
        self.logf = open(log_path, "a") if log_path else None
        self.max_request, self.max_message = MAX_REQUEST, MAX_MESSAGE
        self.max_message_mb = {}
        self.min_session, self.chunk_multiple = MIN_UPLOAD_SESSION, CHUNK_MULTIPLE
        self.concurrency = CONCURRENCY
        self.session_lifetime = 3600
        self.delay = {}            # kind ("*": every kind) -> seconds
        self.reset()

    def reset(self):
        self.faults = []
        self.drafts = {}           # id -> draft dict
        self.sessions = {}         # upload token -> session dict
        self.messages = []         # relayed
        self.relay_errors = []
        self.requests = 0
        self.by_status, self.by_kind, self.per_message = {}, {}, {}
        self.in_flight, self.peak, self.peak_attempted, self.throttled = {}, {}, {}, {}

    def limit_for(self, mb):
        return self.max_message_mb.get(mb, self.max_message)

    def control(self, req):
        if "fail" in req:
            rules = req["fail"] if isinstance(req["fail"], list) else [req["fail"]]
            for r in rules:
                self.faults.append(self._rule(r))
        if req.get("clear_faults"):
            self.faults = []
        if "delay" in req:
            d = req["delay"]
            self.delay = {str(k): float(v) for k, v in d.items()} if isinstance(d, dict) \
                else ({"*": float(d)} if d else {})
        for key, attr in (("concurrency_limit", "concurrency"), ("max_request", "max_request"),
                          ("min_upload_session_size", "min_session"),
                          ("chunk_multiple", "chunk_multiple"),
                          ("session_lifetime", "session_lifetime")):
            if key in req:
                setattr(self, attr, int(req[key]))
        if "max_message_size" in req:
            v = req["max_message_size"]
            if isinstance(v, dict):
                self.max_message_mb.update({k.lower(): int(n) for k, n in v.items()})
            else:
                self.max_message = int(v)
        if "send_as" in req:
            for k, v in req["send_as"].items():
                self.send_as[k.lower()] = {a.lower() for a in v}
        if "mailboxes" in req:
            m = req["mailboxes"]
            self.mailboxes = {x.lower() for x in m} if m is not None else None
        return self.settings()

    @staticmethod
    def _rule(r):
        if not isinstance(r, dict):
            raise ValueError("a fault rule is a JSON object")
        code = r.get("error") or r.get("code")
        if code is not None and code not in ERRORS and "status" not in r:
            raise ValueError("unknown error %r (known: %s)" % (code, ", ".join(sorted(ERRORS))))
        if code is None and "status" not in r and not r.get("drop"):
            raise ValueError("a fault rule needs \"error\", \"status\" or \"drop\"")
        status = int(r.get("status") or (ERRORS[code][0] if code else 503))
        code = code or DEFAULT_CODE.get(status, "generalException")
        kinds = r.get("kind")
        kinds = [kinds] if isinstance(kinds, str) else kinds
        for k in kinds or ():
            if k not in KINDS:
                raise ValueError("unknown kind %r (known: %s)" % (k, ", ".join(KINDS)))
        ra = r.get("retry_after", 1 if status in (429, 503) else None)
        return {"status": status, "code": code, "message": r.get("message"),
                "count": int(r.get("count", 1)), "mailbox": (r.get("mailbox") or "").lower(),
                "kind": kinds, "retry_after": ra, "delay": float(r.get("delay", 0)),
                "drop": bool(r.get("drop"))}

    def take_fault(self, kind, mb):
        """The first rule matching this request (its count decremented), or None."""
        with self.lock:
            for r in self.faults:
                if r["count"] == 0 or (r["mailbox"] and r["mailbox"] != mb) or \
                        (r["kind"] and kind not in r["kind"]):
                    continue
                if r["count"] > 0:
                    r["count"] -= 1
                return dict(r)
        return None

    def settings(self):
        return {"concurrency_limit": self.concurrency, "max_request": self.max_request,
                "max_message_size": self.max_message, "max_message_size_per_mailbox":
                dict(self.max_message_mb), "min_upload_session_size": self.min_session,
                "chunk_multiple": self.chunk_multiple, "delay": dict(self.delay),
                "session_lifetime": self.session_lifetime,
                "mailboxes": sorted(self.mailboxes) if self.mailboxes is not None else None,
                "send_as": {k: sorted(v) for k, v in self.send_as.items()},
                "audiences": list(self.audiences)}

    def stats(self):
        with self.lock:
            return {"requests": self.requests, "by_status": dict(self.by_status),
                    "by_kind": dict(self.by_kind), "in_flight": dict(self.in_flight),
                    "peak_in_flight": dict(self.peak), "peak_attempted":
                    dict(self.peak_attempted), "throttled": dict(self.throttled),
                    "messages": list(self.messages), "relay_errors": list(self.relay_errors),
                    "requests_per_message": dict(self.per_message),
                    "drafts": sorted(self.drafts), "upload_sessions": len(self.sessions),
                    "faults": [dict(f) for f in self.faults if f["count"] != 0],
                    "settings": self.settings()}

    def log(self, entry):
        with self.lock:
            self.requests += 1
            st = str(entry["status"])
            self.by_status[st] = self.by_status.get(st, 0) + 1
            k = entry["kind"] or "other"
            self.by_kind[k] = self.by_kind.get(k, 0) + 1
            mid = entry.get("message_id")
            if mid:
                self.per_message[mid] = self.per_message.get(mid, 0) + 1
            if self.logf:
                self.logf.write(json.dumps(entry) + "\n")
                self.logf.flush()

    # -- the relay to the sink
    def relay(self, mb, kind, mime, atts=()):
        """Graph's send: From/recipients checked, Bcc taken off, attachments added, the copy
        streamed to the sink."""
        from_addr, rcpts, data = prepare_outgoing(mime, mb, self.send_as.get(mb, set()))
        if from_addr is None:
            raise Reply(403, "ErrorSendAsDenied")
        if not rcpts:
            raise Reply(400, "ErrorInvalidRecipients")
        rec = {"mailbox": mb, "kind": kind, "from": from_addr, "rcpts": rcpts,
               "size": None, "message_id": peek_message_id(mime), "time": time.time()}
        try:
            host, port = self.sink
            with smtplib.SMTP(host, port, timeout=60) as s:
                refused, rec["size"] = smtp_send(s, from_addr, rcpts,
                                                 splice_segments(data, list(atts)))
                rec["sink"] = "250" if not refused else "partial: %r" % (refused,)
        except (smtplib.SMTPException, OSError) as e:
            # Graph has already accepted: a delivery failure is an NDR later, not the 202's
            rec["sink"] = "failed: %s" % (e,)
            with self.lock:
                self.relay_errors.append(rec)
        with self.lock:
            self.messages.append(rec)
        return rec


def check_token(state, auth, need):
    """None if the bearer token is good for `need` (a role), else a Reply to raise."""
    if not auth or not auth.lower().startswith("bearer ") or not auth[7:].strip():
        return Reply(401, "InvalidAuthenticationToken", "Access token is empty.")
    token = auth[7:].strip()
    try:
        hdr = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return Reply(401, "InvalidAuthenticationToken",
                     "CompactToken parsing failed with error code: 80049217")
    key = state.key_pem
    if key is None:
        kid = str(hdr.get("kid", ""))
        path = os.path.join(state.keydir or "", "default", "RS256", kid)
        if not kid or "/" in kid or kid.startswith(".") or not os.path.isfile(path):
            return Reply(401, "InvalidAuthenticationToken", "Access token validation failure.")
        with open(path, "rb") as f:
            key = f.read()
    try:
        claims = jwt.decode(token, key, algorithms=["RS256"], audience=list(state.audiences),
                            leeway=0)
    except jwt.ExpiredSignatureError:
        return Reply(401, "InvalidAuthenticationToken",
                     "Lifetime validation failed, the token is expired.")
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError):
        return Reply(401, "InvalidAuthenticationToken",
                     "Access token validation failure. Invalid audience.")
    except jwt.PyJWTError:
        return Reply(401, "InvalidAuthenticationToken", "Access token validation failure.")
    if need and need not in (claims.get("roles") or []):
        return Reply(403, "ErrorAccessDenied")
    return None


class Handler(GraphCalls, BaseHTTPRequestHandler):
    server_version = "Microsoft-IIS/10.0 graph-standin/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("graph: " + (fmt % args) + "\n")

    # -- plumbing
    def _content_length(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return n if n >= 0 else None

    def handle_expect_100(self):
        n = self._content_length()
        if n is not None and n > self.server.state.max_request:
            self._early_413 = True  # answer 413 before the client sends the body
            return True
        return super().handle_expect_100()

    def _read_body(self, limit):
        """(body or None when over limit, length). Reads (drains) what the client sends."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise Reply(400, "invalidRequest", "Malformed chunked body.")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > DRAIN_CAP:
                    self.close_connection = True
                    return None, total
                data = self.rfile.read(size)
                self.rfile.readline(8)
                if total <= limit:
                    parts.append(data)
            return (b"".join(parts) if total <= limit else None), total
        n = self._content_length()
        if n is None:
            self.close_connection = True
            raise Reply(400, "invalidRequest", "Bad Content-Length.")
        if n > limit:
            if getattr(self, "_early_413", False) or n > DRAIN_CAP:
                self.close_connection = True
                return None, n
            left = n
            while left > 0:
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
            return None, n
        return (self.rfile.read(n) if n else b""), n

    def _send(self, status, body=b"", ctype="application/json", headers=()):
        self._status, self._resp_bytes = status, len(body)
        self._done()   # out of flight and logged before the client can see the answer
        self.send_response(status)
        if body or status not in (201, 202, 204):
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", self._rid)
        self.send_header("client-request-id", self.headers.get("client-request-id") or self._rid)
        self.send_header("Cache-Control", "no-cache")
        for k, v in headers:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj, headers=()):
        self._send(status, json.dumps(obj).encode(),
                   "application/json;odata.metadata=minimal;odata.streaming=true;"
                   "IEEE754Compatible=false;charset=utf-8", headers)

    def _error(self, e, mb=""):
        status, code = e.status, e.code
        msg = e.message or ERRORS.get(code, (status, "Error."))[1]
        self._code = code
        obj = {"error": {"code": code, "message": msg.replace("{mailbox}", mb),
                         "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                                        "request-id": self._rid, "client-request-id":
                                        self.headers.get("client-request-id") or self._rid}}}
        headers = []
        if e.retry_after is not None:
            headers.append(("Retry-After", str(e.retry_after)))
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="", authorization_uri="https://'
                            'login.microsoftonline.com/common/oauth2/authorize", client_id='
                            '"00000003-0000-0000-c000-000000000000"'))
        self._json(status, obj, headers)

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    # -- one request
    def _route(self, path):
        """(kind, mailbox, draft id, upload token) or None."""
        m = re.match(r"^/upload/([A-Za-z0-9_-]+)$", path)
        if m:
            kind = {"PUT": "upload", "DELETE": "cancelUpload"}.get(self.command)
            return (kind, None, None, m.group(1)) if kind else None
        m = _V1.match(path)
        if not m:
            return None
        mb = urllib.parse.unquote(m.group(1)).lower()
        what, mid, sub = m.group(2).lower(), m.group(3), (m.group(4) or "").lower()
        mid = urllib.parse.unquote(mid) if mid else None
        table = {("POST", "sendmail", False, ""): "sendMail",
                 ("POST", "messages", False, ""): "createMessage",
                 ("DELETE", "messages", True, ""): "deleteMessage",
                 ("POST", "messages", True, "send"): "send",
                 ("POST", "messages", True, "attachments"): "addAttachment",
                 ("POST", "messages", True, "attachments/createuploadsession"):
                     "createUploadSession"}
        kind = table.get((self.command, what, mid is not None, sub))
        return (kind, mb, mid, None) if kind else None

    def _handle(self):
        st = self.server.state
        t0 = time.monotonic()
        self._rid, self._status, self._code, self._resp_bytes = str(uuid.uuid4()), 0, None, 0
        self._entry, self._new_draft = None, None   # one handler serves a whole connection
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_"):
            return self._control(st, path)
        route = self._route(path)
        kind, mb, draft_id, token = route or (None, "", None, None)
        session = None
        if token:
            with st.lock:
                session = st.sessions.get(token)
            mb = session["mailbox"] if session else ""
            draft_id = session["draft"] if session else None
        entry = {"time": time.time(), "method": self.command, "path": path, "kind": kind,
                 "mailbox": mb, "draft": draft_id, "auth": bool(self.headers.get(
                     "Authorization")), "injected": False, "req_bytes": 0, "message_id": None}
        self._entry, self._t0, self._counted = entry, t0, False
        try:
            if mb:
                with st.lock:
                    n = st.in_flight.get(mb, 0)
                    st.peak_attempted[mb] = max(st.peak_attempted.get(mb, 0), n + 1)
                    if st.concurrency and n >= st.concurrency:
                        st.throttled[mb] = st.throttled.get(mb, 0) + 1
                    else:
                        self._counted = True
                        st.in_flight[mb] = n + 1
                        st.peak[mb] = max(st.peak.get(mb, 0), n + 1)
                    entry["in_flight"] = st.in_flight.get(mb, 0)
            body, n = self._read_body(st.max_request)
            entry["req_bytes"] = n
            if route is None:
                raise Reply(400, "invalidRequest", "Resource not found for the segment '%s'."
                            % path.rstrip("/").rsplit("/", 1)[-1])
            if mb and not self._counted:
                raise Reply(429, "ApplicationThrottled", retry_after=1)
            if body is None:
                raise Reply(413, "RequestEntityTooLarge")
            if kind == "sendMail" or kind == "createMessage":
                entry["message_id"] = peek_message_id(_b64_prefix(body))
            elif draft_id:
                with st.lock:
                    d = st.drafts.get(draft_id)
                entry["message_id"] = d["message_id"] if d else None
            if kind in ("upload", "cancelUpload"):
                if self.headers.get("Authorization"):
                    raise Reply(401, "InvalidAuthenticationToken", "The upload URL is "
                                "pre-authenticated: send no Authorization header to it.")
            else:
                problem = check_token(st, self.headers.get("Authorization"), NEEDS.get(kind))
                if problem:
                    raise problem
                if st.mailboxes is not None and mb not in st.mailboxes:
                    raise Reply(404, "ErrorInvalidUser")
            fault = st.take_fault(kind, mb)
            if fault:
                entry["injected"] = True
                if fault["delay"]:
                    time.sleep(min(fault["delay"], 120))
                if fault["drop"]:
                    self.close_connection = True
                    self._status = 0
                    return
                raise Reply(fault["status"], fault["code"], fault["message"],
                            fault["retry_after"])
            delay = st.delay.get(kind, st.delay.get("*", 0))
            if delay:
                time.sleep(min(delay, 120))
            getattr(self, "_k_" + kind)(st, mb, draft_id, token, session, body)
        except Reply as e:
            self._error(e, mb or "")
        except (ValueError, KeyError, TypeError) as e:
            self._error(Reply(400, "invalidRequest", "Bad request: %s" % (e,)), mb or "")
        finally:
            self._done()

    def _done(self):
        """The request leaves the mailbox's in-flight count and is logged (once)."""
        entry, self._entry = getattr(self, "_entry", None), None
        self._early_413 = False
        if entry is None:
            return
        st = self.server.state
        if self._counted:
            with st.lock:
                st.in_flight[entry["mailbox"]] -= 1
        entry.update(status=self._status, code=self._code, resp_bytes=self._resp_bytes,
                     request_id=self._rid, ms=int((time.monotonic() - self._t0) * 1000))
        if entry["draft"] is None and getattr(self, "_new_draft", None):
            entry["draft"] = self._new_draft
        st.log(entry)

    # -- control
    def _control(self, st, path):
        try:
            body, _ = self._read_body(1 << 20)
            if path == "/_health" and self.command == "GET":
                return self._json(200, {"ok": True})
            if path == "/_stats" and self.command == "GET":
                return self._json(200, st.stats())
            if path == "/_reset" and self.command == "POST":
                with st.lock:
                    st.reset()
                return self._json(200, {"ok": True})
            if path == "/_control" and self.command == "POST":
                req = json.loads(body or b"{}")
                with st.lock:
                    return self._json(200, st.control(req))
            self._json(404, {"error": "not_found"})
        except (ValueError, KeyError, TypeError, Reply) as e:
            self._json(400, {"error": str(e)})


def _b64_prefix(body):
    """The first few KB of a base64 body decoded (enough for the header block), or b""."""
    s = re.sub(rb"\s+", b"", body[:90000])[:65536]
    s = s[:len(s) - len(s) % 4]
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return b""


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def make_server(host, port, **kw):
    verbose = kw.pop("verbose", False)
    srv = Server((host, port), Handler)
    srv.state = State(base_url="http://%s:%d" % (host, srv.server_address[1]), **kw)
    srv.verbose = verbose
    return srv


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--keydir", help="the IdP stand-in's key dir (default/RS256/<kid>)")
    ap.add_argument("--key-file", help="or one PEM public key that signs every token")
    ap.add_argument("--audience", action="append", help="accepted aud (repeatable); default "
                    "https://graph.microsoft.com and 00000003-0000-0000-c000-000000000000")
    ap.add_argument("--sink", required=True, help="HOST:PORT of the SMTP sink")
    ap.add_argument("--log", help="JSON-lines request log")
    ap.add_argument("--mailbox", action="append", help="known mailboxes (others: 404 "
                    "ErrorInvalidUser); default: any")
    ap.add_argument("--send-as", action="append", default=[],
                    help="MAILBOX:ADDR[,ADDR...] From addresses the mailbox may use")
    ap.add_argument("--max-message-size", type=int, default=MAX_MESSAGE)
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    if not a.host.startswith("127.") and a.host != "::1":
        ap.error("loopback only")
    if not a.keydir and not a.key_file:
        ap.error("--keydir or --key-file is required")
    host, _, port = a.sink.rpartition(":")
    send_as = {}
    for s in a.send_as:
        mb, _, addrs = s.partition(":")
        send_as[mb] = [x for x in addrs.split(",") if x]
    srv = make_server(a.host, a.port, keydir=a.keydir, key_file=a.key_file,
                      sink=(host, int(port)), log_path=a.log, audiences=a.audience,
                      mailboxes=a.mailbox, send_as=send_as, verbose=a.verbose)
    srv.state.max_message = a.max_message_size
    port = srv.server_address[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(a.port_file + ".tmp", a.port_file)
    sys.stderr.write("graph-standin listening on %s:%d\n" % (a.host, port))
    sys.stderr.flush()

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
