"""The delegated half of the IdP stand-in (idp_standin.py): what Entra does for a person's mailbox.

Public clients (registered with --public-client CLIENT_ID) may use:
  POST /<tenant>/oauth2/v2.0/devicecode  form: client_id, scope
       -> 200 {device_code, user_code, verification_uri, expires_in, interval, message}
  POST /<tenant>/oauth2/v2.0/token  grant_type=urn:ietf:params:oauth:grant-type:device_code,
       client_id, device_code -> 400 authorization_pending (AADSTS70016) until a "person"
       approves or declines it with POST /_device; then 200 with access_token and, if the scope
       has offline_access, refresh_token; or 400 authorization_declined / expired_token /
       bad_verification_code.
  POST /<tenant>/oauth2/v2.0/token  grant_type=refresh_token, client_id, refresh_token, scope
       -> 200 with a new access token and a NEW refresh token (rotation, as Entra does).
Rotation rule (a realistic "reuse detection"): using refresh token X issues X's successor N;
X stays usable until N is used once, then X is revoked; using X again before that replaces N
(N is revoked). A revoked or unknown token -> 400 invalid_grant (AADSTS70000). So a client that
persists N before using it never holds a dead token, whatever moment it is killed at.

Test controls (JSON bodies):
  POST /_device {"user_code": C, "action": "approve"|"decline", "mailbox": M}  plays the person
  POST /_mint_refresh_token {"client_id": C, "mailbox": M} -> {"refresh_token": RT}: one an
       admin already has (from sasl-xoauth2, a script, ...), for `authorize --refresh-token`
  POST /_control {"refresh_mode": "ok"|"invalid_grant"}  invalid_grant: every refresh is refused
       with AADSTS70043 (consent revoked / sign-in frequency)
  POST /_control {"kill_after_refresh": PID}  SIGKILL PID right after the next successful
       refresh response is sent (once): a crash between the IdP's rotation and the client's
       persist
  POST /_control {"device_interval": S, "device_expires_in": S}
GET /_stats gains "refresh": {"issued": [...], "used": [...], "rejected": [...]} and
"device_codes": [{"user_code", "state"}].
"""
import os
import secrets
import signal
import string
import time

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class Delegated:
    def __init__(self, public_clients, lock):
        self.public = set(public_clients or ())
        self.lock = lock
        self.reset()

    def reset(self):
        self.rt = {}           # refresh token -> {client_id, mailbox, prev, next, revoked}
        self.issued = []
        self.used = []
        self.rejected = []
        self.devices = {}      # device_code -> {user_code, client_id, scope, expires, state, mailbox}
        self.mode = "ok"
        self.kill_pid = None
        self.interval = 1
        self.expires_in = 900

    # -- controls
    def control(self, req):
        if "refresh_mode" in req:
            if req["refresh_mode"] not in ("ok", "invalid_grant"):
                raise ValueError("unknown refresh_mode")
            self.mode = req["refresh_mode"]
        if "kill_after_refresh" in req:
            self.kill_pid = int(req["kill_after_refresh"]) or None
        if "device_interval" in req:
            self.interval = int(req["device_interval"])
        if "device_expires_in" in req:
            self.expires_in = int(req["device_expires_in"])

    def stats(self):
        return {"refresh": {"issued": list(self.issued), "used": list(self.used),
                            "rejected": list(self.rejected)},
                "device_codes": [{"user_code": d["user_code"], "state": d["state"]}
                                 for d in self.devices.values()]}

    def new_refresh_token(self, client_id, mailbox, prev=None):
        rt = "0.AXoA" + secrets.token_urlsafe(48)
        self.rt[rt] = {"client_id": client_id, "mailbox": mailbox, "prev": prev, "next": None,
                       "revoked": False}
        self.issued.append(rt)
        return rt

    def mint(self, req):
        with self.lock:
            return {"refresh_token": self.new_refresh_token(req["client_id"], req["mailbox"])}

    def device_action(self, req):
        with self.lock:
            for d in self.devices.values():
                if d["user_code"] == req.get("user_code"):
                    if req.get("action") == "approve":
                        d["state"] = "approved"
                        d["mailbox"] = req.get("mailbox")
                    elif req.get("action") == "decline":
                        d["state"] = "declined"
                    else:
                        raise ValueError("action must be approve or decline")
                    return {"ok": True}
        return None

    # -- endpoints; err(code, error, aadsts, text) sends an Entra-shaped error
    def devicecode(self, handler, f, err):
        client_id = f.get("client_id", "")
        if client_id not in self.public:
            return err(400, "unauthorized_client", 700016,
                       "Application with identifier '%s' was not found in the directory."
                       % client_id)
        scope = f.get("scope", "")
        if "SMTP.Send" not in scope.split(" ") and \
                "https://outlook.office.com/SMTP.Send" not in scope.split(" "):
            return err(400, "invalid_scope", 70011,
                       "The provided value for the input parameter 'scope' is not valid.")
        code = "".join(secrets.choice(string.ascii_uppercase) for _ in range(9))
        dc = secrets.token_urlsafe(40)
        uri = "http://%s/devicelogin" % handler.headers.get("Host", "127.0.0.1")
        with self.lock:
            self.devices[dc] = {"user_code": code, "client_id": client_id, "scope": scope,
                                "expires": time.monotonic() + self.expires_in,
                                "state": "pending", "mailbox": None}
            interval, expires_in = self.interval, self.expires_in
        return handler._send_json(200, {
            "device_code": dc, "user_code": code, "verification_uri": uri,
            "expires_in": expires_in, "interval": interval,
            "message": "To sign in, use a web browser to open the page %s and enter the code %s "
                       "to authenticate." % (uri, code)})

    def token(self, handler, st, tenant, f, err):
        """grant_type refresh_token or device_code. Returns True if it answered."""
        grant = f.get("grant_type")
        if grant == DEVICE_GRANT:
            self._device_token(handler, st, tenant, f, err)
            return True
        if grant == "refresh_token":
            self._refresh(handler, st, tenant, f, err)
            return True
        return False

    def _issue(self, handler, st, tenant, client_id, mailbox, scope, rt):
        token = st.make_token(tenant, client_id, mailbox, st.good_key, st.expires_in)
        with st.lock:
            st.issued.append(token)
        body = {"token_type": "Bearer", "scope": scope, "expires_in": st.expires_in,
                "ext_expires_in": st.expires_in, "access_token": token}
        if rt:
            body["refresh_token"] = rt
        handler._send_json(200, body)

    def _device_token(self, handler, st, tenant, f, err):
        with self.lock:
            d = self.devices.get(f.get("device_code", ""))
            if d is None or d["client_id"] != f.get("client_id"):
                return err(400, "bad_verification_code", 70000,
                           "The provided value for the input parameter 'device_code' is not "
                           "valid.")
            if time.monotonic() > d["expires"] and d["state"] == "pending":
                d["state"] = "expired"
            state = d["state"]
            if state == "approved":
                d["state"] = "used"
                scope = d["scope"]
                rt = (self.new_refresh_token(d["client_id"], d["mailbox"])
                      if "offline_access" in scope.split(" ") else None)
        if state == "pending":
            return err(400, "authorization_pending", 70016,
                       "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
        if state == "declined":
            return err(400, "authorization_declined", 70000,
                       "The user has declined to authorize the application.")
        if state in ("expired", "used"):
            return err(400, "expired_token", 70019,
                       "Verification code expired. The device code has expired.")
        self._issue(handler, st, tenant, d["client_id"], d["mailbox"], scope, rt)

    def _refresh(self, handler, st, tenant, f, err):
        client_id = f.get("client_id", "")
        old = f.get("refresh_token", "")
        with self.lock:
            mode = self.mode
            rec = self.rt.get(old)
            if mode == "invalid_grant" or rec is None or rec["revoked"] or \
                    rec["client_id"] != client_id:
                self.rejected.append(old)
                rec = None
            else:
                self.used.append(old)
                # Using X proves X's predecessor is no longer needed; a successor X handed out
                # before (never used, or X would be revoked) is replaced.
                if rec["prev"] and rec["prev"] in self.rt:
                    self.rt[rec["prev"]]["revoked"] = True
                if rec["next"] and rec["next"] in self.rt:
                    self.rt[rec["next"]]["revoked"] = True
                new = self.new_refresh_token(client_id, rec["mailbox"], prev=old)
                rec["next"] = new
                mailbox = rec["mailbox"]
                kill, self.kill_pid = self.kill_pid, None
        if rec is None:
            if mode == "invalid_grant":
                return err(400, "invalid_grant", 70043,
                           "The refresh token has expired or is invalid due to sign-in frequency "
                           "checks by conditional access.")
            return err(400, "invalid_grant", 70000,
                       "The provided value for the 'refresh_token' is not valid.")
        self._issue(handler, st, tenant, client_id, mailbox, f.get("scope", ""), new)
        if kill:
            handler.wfile.flush()
            try:
                os.kill(kill, signal.SIGKILL)
            except OSError:
                pass
