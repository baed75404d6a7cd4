#!/usr/bin/python3
"""A stand-in for Microsoft Entra ID's token endpoint (client credentials grant).

Runs alone:
    /usr/bin/python3 idp_standin.py --port 8400 --keydir /tmp/keys \
        --client 11111111-2222-3333-4444-555555555555:SECRET:scanners@contoso.test \
        --cert-client 22222222-3333-4444-5555-666666666666:/tmp/cert.pem:scanners@contoso.test

Serves (threaded http.server, 127.0.0.1 only):
  POST /<tenant>/oauth2/v2.0/token   form: grant_type=client_credentials, client_id,
                                     client_secret, scope
       ok    -> 200 {"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":JWT}
       wrong secret -> 401 {"error":"invalid_client","error_description":"AADSTS7000215: ...",
                             "error_codes":[7000215], ...}
       a client registered with a certificate (--cert-client) instead sends
       client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer and
       client_assertion=JWT, checked like Entra: RS256, header x5t#S256 = the certificate's,
       signature by its key, aud = this token URL, iss = sub = client_id, exp - nbf <= 600,
       exp in the future, jti never seen before. Any failure -> 401 invalid_client with an
       AADSTS code (700027 certificate or signature, 700024 time range, 700021 iss/sub,
       50027 malformed or wrong aud, 7000216 no assertion, 7000222 replayed jti).
  POST /google/token   Google's token endpoint for service accounts (domain-wide delegation),
       registered with --google-sa CLIENT_EMAIL:PUBLIC_KEY_PEM:SUBS: see idp_google.py.
  POST /_control  JSON {"mode": "ok"|"down"|"error500"|"bad_first_token", "expires_in": N}
       "down": token requests get their connection closed without any reply;
       "error500": token requests get HTTP 500 with an Entra-shaped JSON error;
       "bad_first_token": the next token is signed with a key Dovecot does not trust (same kid,
       other RSA key), later ones are good again.
  GET  /_stats    JSON {"requests": {client_id: count}, "issued": [tokens...], "mode": ...,
                        "assertions": [every client_assertion received], "verified": [jti...]}
  POST /_control  {"refuse": AADSTS}: every client credentials request is refused with that
       Entra error until {"refuse": 0} or /_reset (REFUSALS: 7000215, 7000222, 700016, 70011).
  POST /_reset    counters and issued tokens cleared, mode back to "ok".
  POST /_control  {"graph_scope": true, "graph_roles": ["Mail.Send", "Mail.ReadWrite"]}: also
       accept scope https://graph.microsoft.com/.default (off by default: the SMTP tests expect
       it refused); such a token has aud https://graph.microsoft.com and those "roles" (the
       application permissions granted for Graph). For graph_standin.py.
  GET  /<tenant>/v2.0/.well-known/openid-configuration: OpenID Connect discovery, and
       /_control {"discovery_issuer": URL} to make it lie: see idp_discovery.py.
  Delegated access (device code flow, rotating refresh tokens, /_device, /_mint_refresh_token):
  see idp_delegated.py; public clients are registered with --public-client CLIENT_ID.

The JWT: RS256, header kid (and x5t like Entra), claims iss/aud/exp/nbf/iat, "appid", "tid",
"roles", and the claim Dovecot maps to the user ("email" = the client's mailbox). Entra-like
padding keeps the whole token near 2 KB, so a client must use the AUTH 334 continuation.

With --keyfile the signing key is kept there and reused when the stand-in restarts (Dovecot
caches public keys by kid, so a new key under the same kid would be refused). At start the public
key is written where Dovecot's oauth2 passdb looks for it with
local_validation_key_dict = fs:posix:prefix=KEYDIR/ :  KEYDIR/default/RS256/<kid>
(tokens carry no "azp", so Dovecot uses "default"). Stop it with SIGTERM/SIGINT.
"""
import argparse
import base64
import hashlib
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from idp_google import TOKEN_PATH as GOOGLE_TOKEN_PATH, Google

from idp_delegated import Delegated
from idp_discovery import Discovery

KID = "rigKey1-Q0lHX2tleV9pZA"
AUDIENCE = "https://outlook.office365.com"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
GRAPH_ROLES = ["Mail.Send", "Mail.ReadWrite"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# {"refuse": code} in /_control: Entra's refusals as it words them (status, error, text)
REFUSALS = {
    7000215: (401, "invalid_client", "Invalid client secret provided. Ensure the secret being "
              "sent in the request is the client secret value, not the client secret ID."),
    7000222: (401, "invalid_client", "The provided client secret keys for app '%s' are expired. "
              "Visit the Azure portal to create new keys for your app."),
    700016: (400, "unauthorized_client", "Application with identifier '%s' was not found in "
             "the directory."),
    70011: (400, "invalid_scope", "The provided request must include a 'scope' input "
            "parameter. The provided value for the input parameter 'scope' is not valid."),
}


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _load_or_make_key(path):
    """The signing key survives a restart of the stand-in (Dovecot caches keys by kid)."""
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    key = _new_key()
    if path:
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.replace(path + ".tmp", path)
    return key


def _pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_cert(path):
    """(certificate, x5t#S256) of a PEM certificate file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return cert, _b64url(cert.fingerprint(hashes.SHA256()))


def check_assertion(f, client_id, cert, x5t_s256, token_url, seen_jti):
    """None if the form's client assertion is good, else (aadsts, text)."""
    if f.get("client_assertion_type") != ASSERTION_TYPE or not f.get("client_assertion"):
        return 7000216, ("'client_assertion', 'client_secret' or 'request' is required for the "
                         "'client_credentials' grant type.")
    a = f["client_assertion"]
    try:
        hdr = jwt.get_unverified_header(a)
    except jwt.PyJWTError:
        return 50027, "JWT token is invalid or malformed."
    if hdr.get("alg") != "RS256" or hdr.get("typ", "JWT") != "JWT":
        return 700027, "Client assertion failed signature validation (alg %r)." % hdr.get("alg")
    if hdr.get("x5t#S256") != x5t_s256:
        return 700027, ("The certificate with identifier used to sign the client assertion is "
                        "not registered on application. [Reason - The key was not found., "
                        "Thumbprint of key used by client: '%s']" % hdr.get("x5t#S256"))
    try:
        claims = jwt.decode(a, cert.public_key(), algorithms=["RS256"],
                            options={"verify_aud": False, "verify_exp": False,
                                     "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidSignatureError:
        return 700027, "Client assertion failed signature validation."
    except jwt.PyJWTError:
        return 50027, "JWT token is invalid or malformed."
    if claims.get("aud") != token_url:
        return 50027, "Invalid JWT token. The audience %r is not the token endpoint." % (
            claims.get("aud"),)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return 700021, "Client assertion application identifier doesn't match 'client_id' parameter."
    now = time.time()
    try:
        exp, nbf = int(claims["exp"]), int(claims["nbf"])
    except (KeyError, TypeError, ValueError):
        return 700024, "Client assertion is not within its valid time range (no exp or nbf)."
    if exp - nbf > 600 or exp <= now or nbf > now + 300:
        return 700024, ("Client assertion is not within its valid time range. Current time: "
                        "%d, assertion valid from %d, expiry time of assertion %d." % (now, nbf, exp))
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        return 50027, "JWT token is invalid or malformed (no jti)."
    if jti in seen_jti:
        return 7000222, "The client assertion was already used (replayed jti %s)." % jti
    seen_jti.add(jti)
    return None


class IdpState:
    def __init__(self, keydir, clients, expires_in=3599, keyfile=None, cert_clients=None,
                 public_clients=None):
        self.lock = threading.Lock()
        self.discovery = Discovery(self.lock)  # idp_discovery.py
        # device code flow and rotating refresh tokens (idp_delegated.py)
        self.delegated = Delegated(public_clients, self.lock)
        self.good_key = _load_or_make_key(keyfile)
        self.bad_key = _new_key()  # same kid, a key nobody trusts
        self.google = Google(self)  # service accounts: main() registers them (--google-sa)
        self.clients = clients     # client_id -> (secret, mailbox)
        # client_id -> (certificate, x5t#S256, mailbox): clients that sign an assertion
        self.cert_clients = {cid: load_cert(path) + (mailbox,)
                             for cid, (path, mailbox) in (cert_clients or {}).items()}
        self.seen_jti = set()
        self.assertions = []       # every client_assertion received
        self.verified = []         # the jti of every assertion accepted
        self.mode = "ok"
        self.expires_in = expires_in
        self.delay = 0.0
        self.refuse = 0            # an AADSTS code of REFUSALS: refuse every request with it
        self.requests = {}         # client_id -> count (every token request, good or bad)
        self.graph_scope = False   # /_control {"graph_scope": true}: Graph tokens too
        self.graph_roles = list(GRAPH_ROLES)
        self.issued = []           # every access token handed out
        self.errors = []           # (client_id, error) for refused requests
        self.keydir = keydir
        if keydir:
            d = os.path.join(keydir, "default", "RS256")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, KID)
            with open(path + ".tmp", "wb") as f:
                f.write(_pem_public(self.good_key))
            os.chmod(path + ".tmp", 0o644)
            os.replace(path + ".tmp", path)
            for p in (keydir, os.path.join(keydir, "default"), d):
                os.chmod(p, 0o755)

    def make_token(self, tenant, client_id, mailbox, key, expires_in, audience=AUDIENCE,
                   roles=None):
        now = int(time.time())
        tid = str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant))
        claims = {
            "aud": audience,
            "iss": "https://sts.windows.net/%s/" % tid,
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + expires_in,
            "aio": _b64url(os.urandom(60)),
            "app_displayname": "smtp-oauth-proxy test rig",
            "appid": client_id,
            "appidacr": "1",
            "email": mailbox,
            "idp": "https://sts.windows.net/%s/" % tid,
            "idtyp": "app",
            "oid": str(uuid.uuid4()),
            "rh": "0." + _b64url(os.urandom(90)) + ".",
            "roles": list(roles) if roles is not None else ["SMTP.SendAsApp"],
            "sid": str(uuid.uuid4()),
            "sub": str(uuid.uuid4()),
            "tid": tid,
            "uti": _b64url(os.urandom(16)),
            "ver": "1.0",
            "wids": ["0997a1d0-0d1d-4acb-b408-d5ca73121e90"],
            "xms_ftd": _b64url(os.urandom(48)),
            "xms_idrel": "7 14",
            "xms_pdl": "EUR",
            # Entra tokens carry a few hundred bytes of opaque claims; this keeps the size real.
            "xms_rd": "0.42" + _b64url(os.urandom(270)),
        }
        x5t = _b64url(hashlib.sha1(KID.encode()).digest())
        return jwt.encode(claims, key, algorithm="RS256",
                          headers={"kid": KID, "x5t": x5t, "typ": "JWT"})


class Handler(BaseHTTPRequestHandler):
    server_version = "idp-standin/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("idp: " + (fmt % args) + "\n")

    def _send_json(self, code, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store, no-cache")
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        st = self.server.state
        if self.path == "/_stats":
            with st.lock:
                obj = {"requests": dict(st.requests), "issued": list(st.issued),
                       "errors": list(st.errors), "mode": st.mode,
                       "assertions": list(st.assertions), "verified": list(st.verified),
                       "total": sum(st.requests.values())}
                obj.update(st.google.stats())
                obj.update(st.discovery.stats())
                obj.update(st.delegated.stats())
            return self._send_json(200, obj)
        tenant = st.discovery.matches(urllib.parse.urlsplit(self.path).path)
        if tenant:
            return st.discovery.serve(self, tenant)
        if self.path == "/_health":
            return self._send_json(200, {"ok": True})
        self._send_json(404, {"error": "not_found"})

    def do_POST(self):
        st = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self._body()
        except ValueError:
            return self._send_json(413, {"error": "too_large"})
        if path == GOOGLE_TOKEN_PATH:
            return st.google.token(self, body)
        if path == "/_control":
            try:
                req = json.loads(body or b"{}")
            except ValueError:
                return self._send_json(400, {"error": "bad json"})
            with st.lock:
                if "mode" in req:
                    if req["mode"] not in ("ok", "down", "error500", "bad_first_token"):
                        return self._send_json(400, {"error": "unknown mode"})
                    st.mode = req["mode"]
                if "expires_in" in req:
                    st.expires_in = int(req["expires_in"])
                if "delay" in req:
                    st.delay = float(req["delay"])
                if "graph_scope" in req:
                    st.graph_scope = bool(req["graph_scope"])
                if "graph_roles" in req:
                    st.graph_roles = [str(r) for r in req["graph_roles"] or []]
                if "refuse" in req:
                    if req["refuse"] and int(req["refuse"]) not in REFUSALS:
                        return self._send_json(400, {"error": "unknown refusal"})
                    st.refuse = int(req["refuse"] or 0)
                st.discovery.control(req)
                try:
                    st.delegated.control(req)
                except ValueError as e:
                    return self._send_json(400, {"error": str(e)})
                obj = {"mode": st.mode, "expires_in": st.expires_in, "delay": st.delay}
            return self._send_json(200, obj)
        if path == "/_reset":
            with st.lock:
                st.requests.clear()
                st.issued.clear()
                st.errors.clear()
                st.assertions.clear()
                st.verified.clear()
                st.google.reset()
                st.mode = "ok"
                st.delay = 0.0
                st.refuse = 0
                st.graph_scope = False
                st.graph_roles = list(GRAPH_ROLES)
                st.discovery.reset()
                st.delegated.reset()
            return self._send_json(200, {"ok": True})
        if path in ("/_device", "/_mint_refresh_token"):
            try:
                req = json.loads(body or b"{}")
                obj = (st.delegated.device_action(req) if path == "/_device"
                       else st.delegated.mint(req))
            except (ValueError, KeyError) as e:
                return self._send_json(400, {"error": str(e)})
            return self._send_json(200 if obj else 404, obj or {"error": "no such user_code"})

        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[1:3] != ["oauth2", "v2.0"] or \
                parts[3] not in ("token", "devicecode"):
            return self._send_json(404, {"error": "not_found"})
        tenant = parts[0]
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        f = {k: v[0] for k, v in form.items()}
        client_id = f.get("client_id", "")
        with st.lock:
            st.requests[client_id] = st.requests.get(client_id, 0) + 1
            mode, delay, expires_in = st.mode, st.delay, st.expires_in
        if delay:
            time.sleep(min(delay, 30.0))
        if mode == "down":
            # Like a dead load balancer: accept, read, close without a byte.
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        trace = str(uuid.uuid4())
        corr = str(uuid.uuid4())
        ts = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())

        def err(code, error, aadsts, text, codes):
            with st.lock:
                st.errors.append([client_id, error])
            return self._send_json(code, {
                "error": error,
                "error_description": "AADSTS%d: %s Trace ID: %s Correlation ID: %s "
                                     "Timestamp: %s" % (aadsts, text, trace, corr, ts),
                "error_codes": codes, "timestamp": ts, "trace_id": trace,
                "correlation_id": corr,
                "error_uri": "https://login.microsoftonline.com/error?code=%d" % aadsts})

        if mode == "error500":
            return err(500, "temporarily_unavailable", 90033,
                       "A transient error has occurred. Please try again.", [90033])
        if ctype != "application/x-www-form-urlencoded":
            return err(400, "invalid_request", 900144,
                       "The request body must contain the following parameter: 'grant_type'.",
                       [900144])
        if parts[3] == "devicecode":
            return st.delegated.devicecode(
                self, f, lambda code, error, aadsts, text: err(code, error, aadsts, text, [aadsts]))
        if st.delegated.token(
                self, st, tenant, f,
                lambda code, error, aadsts, text: err(code, error, aadsts, text, [aadsts])):
            return
        if st.refuse and f.get("grant_type") == "client_credentials":
            code, error, text = REFUSALS[st.refuse]
            return err(code, error, st.refuse, text.replace("%s", client_id), [st.refuse])
        if f.get("grant_type") != "client_credentials":
            return err(400, "unsupported_grant_type", 70003,
                       "The app requested an unsupported grant type.", [70003])
        if client_id in st.cert_clients:
            cert, x5t_s256, mailbox = st.cert_clients[client_id]
            token_url = "http://%s%s" % (self.headers.get("Host", ""), path)
            with st.lock:
                if f.get("client_assertion"):
                    st.assertions.append(f["client_assertion"])
                problem = check_assertion(f, client_id, cert, x5t_s256, token_url, st.seen_jti)
                if problem is None:
                    st.verified.append(jwt.decode(f["client_assertion"],
                                                  options={"verify_signature": False})["jti"])
            if problem is not None:
                return err(401, "invalid_client", problem[0], problem[1], [problem[0]])
        elif client_id not in st.clients:
            return err(400, "unauthorized_client", 700016,
                       "Application with identifier '%s' was not found in the directory '%s'."
                       % (client_id, tenant), [700016])
        elif f.get("client_secret") != st.clients[client_id][0]:
            return err(401, "invalid_client", 7000215,
                       "Invalid client secret provided. Ensure the secret being sent in the "
                       "request is the client secret value, not the client secret ID, for a "
                       "secret added to app '%s'." % client_id, [7000215])
        else:
            mailbox = st.clients[client_id][1]
        scope = f.get("scope", "")
        audience, roles = AUDIENCE, None
        if st.graph_scope and scope == GRAPH_AUDIENCE + "/.default":
            audience, roles = GRAPH_AUDIENCE, list(st.graph_roles)
        elif scope != AUDIENCE + "/.default":
            return err(400, "invalid_scope", 1002012,
                       "The provided value for scope %s is not valid. Client credential flows "
                       "must have a scope value with /.default suffixed to the resource "
                       "identifier (application ID URI)." % scope, [1002012])
        with st.lock:
            key = st.good_key
            if st.mode == "bad_first_token":
                key = st.bad_key
                st.mode = "ok"
        token = st.make_token(tenant, client_id, mailbox, key, expires_in, audience, roles)
        with st.lock:
            st.issued.append(token)
        self._send_json(200, {"token_type": "Bearer", "expires_in": expires_in,
                              "ext_expires_in": expires_in, "access_token": token})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(host, port, keydir, clients, verbose=False, expires_in=3599, keyfile=None,
                cert_clients=None, public_clients=None):
    srv = Server((host, port), Handler)
    srv.state = IdpState(keydir, clients, expires_in, keyfile, cert_clients, public_clients)
    srv.verbose = verbose
    return srv


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="0 picks a free port")
    ap.add_argument("--keydir", required=True,
                    help="Dovecot local_validation_key_dict fs:posix prefix directory")
    ap.add_argument("--client", action="append", default=[],
                    help="CLIENT_ID:SECRET:MAILBOX (repeatable); SECRET may be @FILE")
    ap.add_argument("--cert-client", action="append", default=[],
                    help="CLIENT_ID:CERT_PEM_FILE:MAILBOX (repeatable): authenticates with a "
                         "client assertion signed by the certificate's key")
    ap.add_argument("--public-client", action="append", default=[],
                    help="CLIENT_ID (repeatable): a public client for the device code flow and "
                         "refresh tokens (idp_delegated.py)")
    ap.add_argument("--google-sa", action="append", default=[],
                    help="CLIENT_EMAIL:PUBLIC_KEY_PEM:SUBS (repeatable): a Google service account "
                         "delegated for the comma-separated SUBS (none: not delegated)")
    ap.add_argument("--expires-in", type=int, default=3599)
    ap.add_argument("--keyfile", help="signing key (PEM); made there if missing, reused after")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    if not a.host.startswith("127.") and a.host != "::1":
        ap.error("loopback only")
    clients = {}
    for c in a.client:
        cid, secret, mailbox = c.split(":", 2)
        if secret.startswith("@"):
            with open(secret[1:]) as f:
                secret = f.read().strip()
        clients[cid] = (secret, mailbox)
    cert_clients = {}
    for c in a.cert_client:
        cid, path, mailbox = c.split(":", 2)
        cert_clients[cid] = (path, mailbox)
    srv = make_server(a.host, a.port, a.keydir, clients, a.verbose, a.expires_in, a.keyfile,
                      cert_clients, a.public_client)
    srv.state.google.register(a.google_sa)
    port = srv.server_address[1]
    if a.port_file:
        with open(a.port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.replace(a.port_file + ".tmp", a.port_file)
    sys.stderr.write("idp-standin listening on %s:%d\n" % (a.host, port))
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
