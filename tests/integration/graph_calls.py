"""The Graph calls of graph_standin.py (sendMail, drafts, attachments, upload sessions, send,
delete): a mixin of its request handler. Each _k_KIND(st, mb, draft_id, token, session, body)
answers the request or raises Reply; graph_standin.py says which Graph behaviour each follows."""
import base64
import binascii
import datetime
import json
import os
import re
import secrets
import time

from graph_mime import peek_message_id

def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f0Z")


class Reply(Exception):
    """Raised by a handler to answer with a Graph error."""

    def __init__(self, status, code, message=None, retry_after=None):
        super().__init__(code)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


class GraphCalls:
    # -- Graph calls (self is graph_standin.Handler)
    def _mime(self, body):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "text/plain":
            raise Reply(400, "invalidRequest", "The stand-in takes MIME only: Content-Type: "
                        "text/plain with the base64 of the message (got %r)." % ctype)
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", body), validate=True)
        except (binascii.Error, ValueError):
            raise Reply(400, "ErrorMimeContentInvalidBase64String")

    def _k_sendMail(self, st, mb, draft_id, token, session, body):
        mime = self._mime(body)
        if len(mime) > st.limit_for(mb):
            raise Reply(400, "ErrorMessageSizeExceeded")
        st.relay(mb, "sendMail", mime)
        self._send(202)

    def _draft(self, st, mb, draft_id):
        with st.lock:
            d = st.drafts.get(draft_id)
        if d is None or d["mailbox"] != mb:
            raise Reply(404, "ErrorItemNotFound")
        return d

    def _k_createMessage(self, st, mb, draft_id, token, session, body):
        mime = self._mime(body)
        if len(mime) > st.limit_for(mb):
            raise Reply(400, "ErrorMessageSizeExceeded")
        did = "AAMkAGI2" + base64.urlsafe_b64encode(os.urandom(30)).decode().rstrip("=")
        d = {"id": did, "mailbox": mb, "mime": mime, "attachments": [], "created": time.time(),
             "message_id": peek_message_id(mime)}
        with st.lock:
            st.drafts[did] = d
        self._new_draft = did
        self._json(201, {"@odata.context": "%s/v1.0/$metadata#users('%s')/messages/$entity"
                         % (st.base_url, mb), "id": did, "isDraft": True,
                         "hasAttachments": False, "internetMessageId": d["message_id"],
                         "createdDateTime": iso(d["created"])[:19] + "Z"})

    def _size_now(self, st, d):
        with st.lock:
            pending = sum(s["size"] for s in st.sessions.values() if s["draft"] == d["id"])
        return len(d["mime"]) + sum(len(a["data"]) for a in d["attachments"]) + pending

    def _k_addAttachment(self, st, mb, draft_id, token, session, body):
        d = self._draft(st, mb, draft_id)
        a = json.loads(body)
        if a.get("@odata.type") != "#microsoft.graph.fileAttachment" or "contentBytes" not in a:
            raise Reply(400, "invalidRequest", "Only #microsoft.graph.fileAttachment with "
                        "contentBytes is supported.")
        data = base64.b64decode(a["contentBytes"], validate=True)
        if self._size_now(st, d) + len(data) > st.limit_for(mb):
            raise Reply(400, "ErrorMessageSizeExceeded")
        att = {"id": "AAMkAGI2att" + secrets.token_urlsafe(12), "name": a.get("name") or
               "attachment", "contentType": a.get("contentType") or "application/octet-stream",
               "isInline": bool(a.get("isInline")), "contentId": a.get("contentId"),
               "data": data}
        with st.lock:
            d["attachments"].append(att)
        self._json(201, {"@odata.type": "#microsoft.graph.fileAttachment", "id": att["id"],
                         "name": att["name"], "contentType": att["contentType"],
                         "size": len(data), "isInline": att["isInline"]})

    def _k_createUploadSession(self, st, mb, draft_id, token, session, body):
        d = self._draft(st, mb, draft_id)
        item = json.loads(body).get("AttachmentItem")
        if not isinstance(item, dict) or item.get("attachmentType", "file") != "file" or \
                not isinstance(item.get("size"), int) or item["size"] <= 0 or \
                not item.get("name"):
            raise Reply(400, "invalidRequest", "AttachmentItem needs attachmentType file, a "
                        "name and a size.")
        if item["size"] < st.min_session:
            raise Reply(400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
        if self._size_now(st, d) + item["size"] > st.limit_for(mb):
            raise Reply(400, "ErrorMessageSizeExceeded")
        tok = secrets.token_urlsafe(24).replace("-", "").replace("_", "")
        s = {"token": tok, "draft": d["id"], "mailbox": mb, "name": item["name"],
             "contentType": item.get("contentType") or "application/octet-stream",
             "isInline": bool(item.get("isInline")), "contentId": item.get("contentId"),
             "size": item["size"], "data": bytearray(), "expires": time.time() +
             st.session_lifetime}
        with st.lock:
            st.sessions[tok] = s
        self._json(201, {"@odata.context": "%s/v1.0/$metadata#microsoft.graph.uploadSession"
                         % st.base_url, "uploadUrl": "%s/upload/%s" % (st.base_url, tok),
                         "expirationDateTime": iso(s["expires"]),
                         "nextExpectedRanges": ["0-"]})

    def _k_upload(self, st, mb, draft_id, token, s, body):
        if s is None or s["expires"] < time.time() or draft_id not in st.drafts:
            raise Reply(404, "ErrorItemNotFound")
        m = re.match(r"^bytes (\d+)-(\d+)/(\d+)$", (self.headers.get("Content-Range") or "")
                     .strip())
        if not m:
            raise Reply(400, "invalidRequest", "Content-Range: bytes {start}-{end}/{total} is "
                        "required.")
        a, b, total = (int(x) for x in m.groups())
        if total != s["size"]:
            raise Reply(400, "invalidRequest", "The total in Content-Range (%d) is not the "
                        "attachment's size (%d)." % (total, s["size"]))
        if a != len(s["data"]) or b < a or b >= total:
            raise Reply(416, "invalidRange", "The next expected range starts at %d."
                        % len(s["data"]))
        if len(body) != b - a + 1:
            raise Reply(400, "invalidRequest", "Content-Range says %d bytes, the body has %d."
                        % (b - a + 1, len(body)))
        if b != total - 1 and st.chunk_multiple and len(body) % st.chunk_multiple:
            raise Reply(400, "invalidRequest", "The size of each fragment but the last must be "
                        "a multiple of 320 KiB (327,680 bytes); this one is %d." % len(body))
        with st.lock:
            s["data"] += body
            done = len(s["data"]) == total
            if done:
                st.sessions.pop(token, None)
                att = {"id": "AAMkAGI2att" + secrets.token_urlsafe(12), "name": s["name"],
                       "contentType": s["contentType"], "isInline": s["isInline"],
                       "contentId": s["contentId"], "data": s["data"]}
                st.drafts[draft_id]["attachments"].append(att)
        if done:
            self._send(201, headers=[("Location", "%s/v1.0/users('%s')/messages('%s')/"
                                      "attachments('%s')" % (st.base_url, mb, draft_id,
                                                             att["id"]))])
        else:
            self._json(200, {"@odata.context": "%s/v1.0/$metadata#uploadSession" % st.base_url,
                             "expirationDateTime": iso(s["expires"]),
                             "nextExpectedRanges": [str(len(s["data"]))]})

    def _k_cancelUpload(self, st, mb, draft_id, token, s, body):
        with st.lock:
            gone = st.sessions.pop(token, None)
        if gone is None:
            raise Reply(404, "ErrorItemNotFound")
        self._send(204)

    def _k_send(self, st, mb, draft_id, token, session, body):
        d = self._draft(st, mb, draft_id)
        st.relay(mb, "draft", d["mime"], d["attachments"])
        with st.lock:
            st.drafts.pop(draft_id, None)
            for t in [t for t, s in st.sessions.items() if s["draft"] == draft_id]:
                st.sessions.pop(t)
        self._send(202)

    def _k_deleteMessage(self, st, mb, draft_id, token, session, body):
        self._draft(st, mb, draft_id)
        with st.lock:
            st.drafts.pop(draft_id, None)
            for t in [t for t, s in st.sessions.items() if s["draft"] == draft_id]:
                st.sessions.pop(t)
        self._send(204)

