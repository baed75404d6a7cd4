#!/usr/bin/python3
"""graph_standin.py alone (no proxy): tokens from the IdP stand-in, requests with urllib, what
arrived at the rig's sink. Runs in a few seconds."""
import base64
import email
import email.policy
import hashlib
import http.client
import json
import os
import sys
import threading
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sop_rig  # noqa: E402
from sop_rig import GRAPH_SCOPE, Rig, start_graph_standin  # noqa: E402

CHUNK = 320 * 1024
OTHER = "frontdesk@contoso.test"   # a second mailbox, with its own concurrency


def mime(subject, to="alice@contoso.test", cc=None, bcc=None, frm=None, body=b"Hello.\r\n",
         extra=b""):
    h = [b"From: " + (frm or sop_rig.MAILBOX).encode(), b"To: " + to.encode()]
    if cc:
        h.append(b"Cc: " + cc.encode())
    if bcc:
        h.append(b"Bcc: " + bcc.encode())
    h += [b"Subject: " + subject.encode(), b"Message-ID: <%s@copier.test>" % os.urandom(6).hex()
          .encode(), b"Date: Sun, 06 Dec 2026 07:00:00 +0000", b"MIME-Version: 1.0",
          b"Content-Type: text/plain; charset=us-ascii"]
    return b"\r\n".join(h) + b"\r\n" + extra + b"\r\n" + body


class GraphCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rig = Rig(with_dovecot=False).start()
        try:
            cls.g = start_graph_standin(cls.rig, mailboxes=[sop_rig.MAILBOX, OTHER],
                                        send_as={sop_rig.MAILBOX: ["scans@contoso.test"]})
            cls.token = cls.rig.fetch_token(scope=GRAPH_SCOPE)["access_token"]
        except BaseException:
            cls.rig.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.g.stop()
        cls.rig.stop()

    def setUp(self):
        self.g.reset()
        self.g.control(clear_faults=True, delay=0, concurrency_limit=4, chunk_multiple=CHUNK)
        self.rig.sink_clear()

    # -- a client as the proxy would be
    def call(self, method, path, body=None, ctype="text/plain", token=True, headers=None,
             url=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + (self.token if token is True else token)
        if body is not None:
            h["Content-Type"] = ctype
        req = urllib.request.Request(url or (self.g.url + path), data=body, method=method,
                                     headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def send_mail(self, data, mailbox=sop_rig.MAILBOX, **kw):
        return self.call("POST", "/v1.0/users/%s/sendMail" % mailbox, base64.b64encode(data),
                         **kw)

    def assertGraphError(self, resp, status, code):
        st, headers, body = resp
        self.assertEqual(st, status, body)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], code)
        self.assertTrue(err["message"])
        self.assertEqual(err["innerError"]["request-id"], headers["request-id"])
        self.assertRegex(err["innerError"]["date"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
        return err


class TestSendMail(GraphCase):
    def test_small_message_arrives(self):
        data = mime("Scan 1", to="alice@contoso.test", cc="Bob <bob@contoso.test>",
                    bcc="carol@contoso.test", body=b"Hello.\r\n.\r\n..two dots\r\n.end\r\n")
        st, headers, body = self.send_mail(data)
        self.assertEqual((st, body), (202, b""))
        msgs = self.rig.sink_wait(1)
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(m["mail_from"], sop_rig.MAILBOX)
        self.assertEqual(m["rcpt_tos"], ["alice@contoso.test", "bob@contoso.test",
                                         "carol@contoso.test"])
        # the device's bytes, less the Bcc line
        self.assertEqual(m["data"], data.replace(b"Bcc: carol@contoso.test\r\n", b""))
        log = self.g.requests()
        self.assertEqual([(r["method"], r["path"], r["status"], r["mailbox"]) for r in log],
                         [("POST", "/v1.0/users/%s/sendMail" % sop_rig.MAILBOX, 202,
                           sop_rig.MAILBOX)])
        self.assertEqual(log[0]["req_bytes"], len(base64.b64encode(data)))
        s = self.g.stats()
        mid = email.message_from_bytes(data)["Message-ID"]
        self.assertEqual(s["requests_per_message"], {mid: 1})
        self.assertEqual(s["messages"][0]["sink"], "250")

    def test_send_as_and_missing_from(self):
        self.assertEqual(self.send_mail(mime("ok", frm="scans@contoso.test"))[0], 202)
        self.assertGraphError(self.send_mail(mime("no", frm="ceo@contoso.test")), 403,
                              "ErrorSendAsDenied")
        data = mime("no from").replace(b"From: %s\r\n" % sop_rig.MAILBOX.encode(), b"")
        self.assertEqual(self.send_mail(data)[0], 202)
        msgs = self.rig.sink_wait(2)
        self.assertEqual([m["mail_from"] for m in msgs], ["scans@contoso.test", sop_rig.MAILBOX])
        self.assertTrue(msgs[1]["data"].startswith(b"From: %s\r\n" % sop_rig.MAILBOX.encode()))

    def test_refusals(self):
        self.assertGraphError(self.call("POST", "/v1.0/users/%s/sendMail" % sop_rig.MAILBOX,
                                        b"not base64 at all!"), 400,
                              "ErrorMimeContentInvalidBase64String")
        self.assertGraphError(self.send_mail(mime("x"),
                                             mailbox="nobody@contoso.test"), 404,
                              "ErrorInvalidUser")
        self.assertGraphError(self.send_mail(b"Subject: none\r\n\r\nbody\r\n"), 400,
                              "ErrorInvalidRecipients")
        big = mime("big", body=os.urandom(3 * 1024 * 1024 + 200000))   # base64 > 4 MB
        self.assertGraphError(self.send_mail(big), 413, "RequestEntityTooLarge")
        # with Expect: 100-continue (as libcurl sends) the 413 comes before the body
        c = http.client.HTTPConnection("127.0.0.1", self.g.port, timeout=10)
        c.putrequest("POST", "/v1.0/users/%s/sendMail" % sop_rig.MAILBOX)
        for k, v in (("Authorization", "Bearer " + self.token), ("Content-Type", "text/plain"),
                     ("Content-Length", str(5 * 1024 * 1024)), ("Expect", "100-continue")):
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        self.assertEqual((r.status, json.loads(r.read())["error"]["code"]),
                         (413, "RequestEntityTooLarge"))
        c.close()
        self.assertEqual(self.rig.sink_messages(), [])

    def test_tokens(self):
        path = "/v1.0/users/%s/sendMail" % sop_rig.MAILBOX
        b64 = base64.b64encode(mime("t"))
        err = self.assertGraphError(self.call("POST", path, b64, token=False), 401,
                                    "InvalidAuthenticationToken")
        self.assertEqual(err["message"], "Access token is empty.")
        exchange = self.rig.fetch_token()["access_token"]   # aud outlook.office365.com
        st, headers, body = self.call("POST", path, b64, token=exchange)
        err = self.assertGraphError((st, headers, body), 401, "InvalidAuthenticationToken")
        self.assertEqual(err["message"], "Access token validation failure. Invalid audience.")
        self.assertIn("WWW-Authenticate", headers)
        self.assertGraphError(self.call("POST", path, b64, token="garbage"), 401,
                              "InvalidAuthenticationToken")
        self.rig.idp_control(expires_in=-30)
        try:
            expired = self.rig.fetch_token(scope=GRAPH_SCOPE)["access_token"]
        finally:
            self.rig.idp_control(expires_in=3599)
        err = self.assertGraphError(self.call("POST", path, b64, token=expired), 401,
                                    "InvalidAuthenticationToken")
        self.assertIn("expired", err["message"])
        # roles: Mail.ReadWrite alone cannot send; Mail.Send alone cannot make drafts
        self.rig.idp_control(graph_roles=["Mail.ReadWrite"])
        no_send = self.rig.fetch_token(scope=GRAPH_SCOPE)["access_token"]
        self.rig.idp_control(graph_roles=["Mail.Send"])
        send_only = self.rig.fetch_token(scope=GRAPH_SCOPE)["access_token"]
        self.rig.idp_control(graph_roles=["Mail.Send", "Mail.ReadWrite"])
        self.assertGraphError(self.call("POST", path, b64, token=no_send), 403,
                              "ErrorAccessDenied")
        self.assertEqual(self.call("POST", path, b64, token=send_only)[0], 202)
        self.assertGraphError(self.call("POST", "/v1.0/users/%s/messages" % sop_rig.MAILBOX,
                                        b64, token=send_only), 403, "ErrorAccessDenied")
        self.assertEqual(len(self.rig.sink_wait(1)), 1)
        self.assertEqual([r["auth"] for r in self.g.requests()][:1], [False])


class TestFaults(GraphCase):
    def test_429_then_success(self):
        self.g.fail(status=429, count=2, retry_after=3, kind="sendMail")
        data = mime("retry me")
        for _ in range(2):
            st, headers, body = self.send_mail(data)
            self.assertGraphError((st, headers, body), 429, "ApplicationThrottled")
            self.assertEqual(headers["Retry-After"], "3")
        self.assertEqual(self.send_mail(data)[0], 202)
        self.assertEqual(len(self.rig.sink_wait(1)), 1)
        s = self.g.stats()
        self.assertEqual(s["by_status"], {"429": 2, "202": 1})
        self.assertEqual(list(s["requests_per_message"].values()), [3])
        self.assertEqual([r["injected"] for r in self.g.requests()], [True, True, False])

    def test_every_error_in_graph_shape(self):
        cases = [("InvalidAuthenticationToken", 401), ("ErrorAccessDenied", 403),
                 ("ErrorInvalidUser", 404), ("ErrorMimeContentInvalidBase64String", 400),
                 ("ErrorMessageSizeExceeded", 400), ("RequestEntityTooLarge", 413),
                 ("ErrorSendAsDenied", 403), ("MailboxNotEnabledForRESTAPI", 404),
                 ("serviceNotAvailable", 503)]
        for code, status in cases:
            self.g.fail(error=code)
            st, headers, body = self.send_mail(mime(code))
            err = self.assertGraphError((st, headers, body), status, code)
            if status == 503:
                self.assertEqual(headers["Retry-After"], "1")
            if code == "ErrorInvalidUser":
                self.assertIn(sop_rig.MAILBOX, err["message"])
        # the status can be set (MailboxNotEnabledForRESTAPI as 403), a rule can target one
        # mailbox, and a 503 storm lasts as long as asked
        self.g.fail(error="MailboxNotEnabledForRESTAPI", status=403)
        self.assertGraphError(self.send_mail(mime("m")), 403, "MailboxNotEnabledForRESTAPI")
        self.g.fail(status=503, count=-1, retry_after=2, mailbox=OTHER)
        self.assertEqual(self.send_mail(mime("a"))[0], 202)
        for _ in range(3):
            self.assertGraphError(self.send_mail(mime("b", frm=OTHER), mailbox=OTHER), 503,
                                  "serviceNotAvailable")
        self.g.control(clear_faults=True)
        self.assertEqual(self.send_mail(mime("c", frm=OTHER), mailbox=OTHER)[0], 202)
        self.assertEqual(len(self.rig.sink_wait(2)), 2)
        # a connection closed without a reply; a rule that names nothing is refused
        self.g.fail(drop=True, kind="sendMail")
        with self.assertRaises((urllib.error.URLError, http.client.HTTPException, OSError)):
            self.send_mail(mime("d"))
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.g.fail(count=2)
        self.assertEqual(cm.exception.code, 400)
        self.assertEqual(len(self.rig.sink_messages()), 2)

    def test_concurrency_limit(self):
        self.g.control(delay={"sendMail": 0.6})
        results, lock = [], threading.Lock()

        def one(mb):
            st, headers, body = self.send_mail(mime("c", frm=mb), mailbox=mb)
            with lock:
                results.append((mb, st, headers.get("Retry-After"),
                                json.loads(body)["error"]["code"] if body else None))

        threads = [threading.Thread(target=one, args=(sop_rig.MAILBOX,)) for _ in range(6)]
        threads += [threading.Thread(target=one, args=(OTHER,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        mine = sorted((st, ra, code) for mb, st, ra, code in results if mb == sop_rig.MAILBOX)
        self.assertEqual(mine, [(202, None, None)] * 4 + [(429, "1", "ApplicationThrottled")] * 2)
        self.assertEqual(sorted(st for mb, st, _, _ in results if mb == OTHER), [202, 202])
        s = self.g.stats()
        self.assertEqual(s["peak_in_flight"], {sop_rig.MAILBOX: 4, OTHER: 2})
        self.assertEqual(s["throttled"], {sop_rig.MAILBOX: 2})
        self.assertGreaterEqual(s["peak_attempted"][sop_rig.MAILBOX], 5)
        self.assertEqual(len(self.rig.sink_wait(6)), 6)


class TestDrafts(GraphCase):
    def draft(self, data, token=True):
        st, _, body = self.call("POST", "/v1.0/users/%s/messages" % sop_rig.MAILBOX,
                                base64.b64encode(data), token=token)
        self.assertEqual(st, 201, body)
        return json.loads(body)["id"]

    def session(self, mid, name, size, ctype="application/pdf", inline=False, cid=None):
        item = {"attachmentType": "file", "name": name, "size": size, "contentType": ctype,
                "isInline": inline}
        if cid:
            item["contentId"] = cid
        return self.call("POST", "/v1.0/users/%s/messages/%s/attachments/createUploadSession"
                         % (sop_rig.MAILBOX, mid), json.dumps({"AttachmentItem": item})
                         .encode(), ctype="application/json")

    def upload(self, url, data, chunk=10 * CHUNK):
        last = None
        for a in range(0, len(data), chunk):
            part = data[a:a + chunk]
            last = self.call("PUT", None, part, ctype="application/octet-stream", token=False,
                             url=url, headers={"Content-Range": "bytes %d-%d/%d" % (
                                 a, a + len(part) - 1, len(data))})
            self.assertIn(last[0], (200, 201), last[2])
            if a + chunk < len(data):
                self.assertEqual(json.loads(last[2])["nextExpectedRanges"], [str(a + chunk)])
        return last

    def test_12mb_scan_with_two_attachments(self):
        pdf, tif = os.urandom(5 * 1024 * 1024 + 12345), os.urandom(6 * 1024 * 1024 + 777)
        body = (b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nScanned by 3F.\r\n"
                b"--b1--\r\n")
        data = mime("12 MB scan", to="alice@contoso.test", bcc="archive@contoso.test",
                    body=body).replace(b"Content-Type: text/plain; charset=us-ascii",
                                       b"Content-Type: multipart/mixed; boundary=\"b1\"")
        mid = self.draft(data)
        urls = []
        for name, blob, ctype in (("scan.pdf", pdf, "application/pdf"),
                                  ("page2.tif", tif, "image/tiff")):
            st, _, b = self.session(mid, name, len(blob), ctype)
            self.assertEqual(st, 201, b)
            sess = json.loads(b)
            self.assertEqual(sess["nextExpectedRanges"], ["0-"])
            self.assertTrue(sess["uploadUrl"].startswith(self.g.url + "/upload/"))
            self.assertTrue(sess["expirationDateTime"].endswith("Z"))
            urls.append(sess["uploadUrl"])
        st, headers, _ = self.upload(urls[0], pdf)
        self.assertEqual(st, 201)
        self.assertIn("/messages('%s')/attachments('" % mid, headers["Location"])
        self.assertEqual(self.upload(urls[1], tif)[0], 201)
        self.assertEqual(self.rig.sink_messages(), [])   # nothing sent before /send
        st, _, b = self.call("POST", "/v1.0/users/%s/messages/%s/send" % (sop_rig.MAILBOX, mid))
        self.assertEqual((st, b), (202, b""))
        msgs = self.rig.sink_wait(1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]["rcpt_tos"], ["alice@contoso.test", "archive@contoso.test"])
        self.assertNotIn(b"\r\nBcc:", msgs[0]["data"])
        got = email.message_from_bytes(msgs[0]["data"], policy=email.policy.default)
        atts = {p.get_filename(): p.get_content() for p in got.iter_attachments()}
        self.assertEqual(sorted(atts), ["page2.tif", "scan.pdf"])
        self.assertEqual(hashlib.sha256(atts["scan.pdf"]).hexdigest(),
                         hashlib.sha256(pdf).hexdigest())
        self.assertEqual(atts["page2.tif"], tif)
        self.assertIn("Scanned by 3F.", got.get_body(("plain",)).get_content())
        # requests for this message: draft + 2 sessions + 17 + 20 PUTs + send
        s = self.g.stats()
        n = 1 + 2 + -(-len(pdf) // (10 * CHUNK)) + -(-len(tif) // (10 * CHUNK)) + 1
        self.assertEqual(list(s["requests_per_message"].values()), [n])
        self.assertEqual(s["drafts"], [])
        puts = [r for r in self.g.requests() if r["kind"] == "upload"]
        self.assertTrue(puts and all(not r["auth"] and r["mailbox"] == sop_rig.MAILBOX
                                     for r in puts))

    def test_upload_rules(self):
        blob = os.urandom(4 * 1024 * 1024)
        mid = self.draft(mime("rules"))
        self.assertGraphError(self.session(mid, "small.pdf", 1024), 400,
                              "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")
        url = json.loads(self.session(mid, "a.pdf", len(blob))[2])["uploadUrl"]

        def put(a, b, auth=False):
            return self.call("PUT", None, blob[a:b + 1], ctype="application/octet-stream",
                             token=auth, url=url,
                             headers={"Content-Range": "bytes %d-%d/%d" % (a, b, len(blob))})

        odd = 1000 * 1000    # not a multiple of 320 KiB, not the last fragment
        err = self.assertGraphError(put(0, odd - 1), 400, "invalidRequest")
        self.assertIn("320 KiB", err["message"])
        self.assertGraphError(put(0, CHUNK - 1, auth=True), 401, "InvalidAuthenticationToken")
        self.assertGraphError(put(CHUNK, 2 * CHUNK - 1), 416, "invalidRange")
        st, _, b = put(0, CHUNK - 1)
        self.assertEqual((st, json.loads(b)["nextExpectedRanges"]), (200, [str(CHUNK)]))
        self.assertEqual(put(CHUNK, len(blob) - 1)[0], 201)   # the last may be any size
        self.assertGraphError(put(0, CHUNK - 1), 404, "ErrorItemNotFound")   # session done
        # a session cancelled, a draft deleted, an unknown draft
        url2 = json.loads(self.session(mid, "b.pdf", len(blob))[2])["uploadUrl"]
        self.assertEqual(self.call("DELETE", None, token=False, url=url2)[0], 204)
        path = "/v1.0/users/%s/messages/%s" % (sop_rig.MAILBOX, mid)
        self.assertEqual(self.call("DELETE", path)[0], 204)
        self.assertGraphError(self.call("POST", path + "/send"), 404, "ErrorItemNotFound")
        # an expired session
        self.g.control(session_lifetime=0)
        try:
            mid = self.draft(mime("late"))
            url3 = json.loads(self.session(mid, "d.pdf", len(blob))[2])["uploadUrl"]
            self.assertGraphError(self.call("PUT", None, blob[:CHUNK], token=False, url=url3,
                                            ctype="application/octet-stream", headers={
                                                "Content-Range": "bytes 0-%d/%d" % (
                                                    CHUNK - 1, len(blob))}), 404,
                                  "ErrorItemNotFound")
        finally:
            self.g.control(session_lifetime=3600)
        # the mailbox's message size limit
        self.g.control(max_message_size={sop_rig.MAILBOX: 5 * 1024 * 1024})
        try:
            mid = self.draft(mime("too big"))
            self.assertGraphError(self.session(mid, "c.pdf", 6 * 1024 * 1024), 400,
                                  "ErrorMessageSizeExceeded")
        finally:
            self.g.control(max_message_size={sop_rig.MAILBOX: 150 * 1024 * 1024})
        self.assertEqual(self.rig.sink_messages(), [])

    def test_draft_without_multipart_and_small_attachment(self):
        blob = os.urandom(3 * 1024 * 1024 + 5)
        data = mime("plain draft", body=b"Just text.\r\n")
        mid = self.draft(data)
        url = json.loads(self.session(mid, "logo.png", len(blob), "image/png", inline=True,
                                      cid="logo1")[2])["uploadUrl"]
        self.assertEqual(self.upload(url, blob, chunk=4 * CHUNK)[0], 201)
        small = {"@odata.type": "#microsoft.graph.fileAttachment", "name": "note.txt",
                 "contentType": "text/plain", "contentBytes": base64.b64encode(b"hi").decode()}
        st, _, b = self.call("POST", "/v1.0/users/%s/messages/%s/attachments"
                             % (sop_rig.MAILBOX, mid), json.dumps(small).encode(),
                             ctype="application/json")
        self.assertEqual(st, 201, b)
        self.assertEqual(self.call("POST", "/v1.0/users/%s/messages/%s/send"
                                   % (sop_rig.MAILBOX, mid))[0], 202)
        got = email.message_from_bytes(self.rig.sink_wait(1)[0]["data"],
                                       policy=email.policy.default)
        self.assertEqual(got.get_content_type(), "multipart/mixed")
        parts = list(got.iter_parts())
        self.assertEqual(parts[0].get_content(), "Just text.\r\n")
        self.assertEqual(parts[1]["Content-ID"], "<logo1>")
        self.assertEqual(parts[1].get_content_disposition(), "inline")
        self.assertEqual(parts[1].get_content(), blob)
        self.assertEqual(parts[2].get_content(), "hi")


if __name__ == "__main__":
    sop_rig.terminate_on_sigterm()
    unittest.main()
