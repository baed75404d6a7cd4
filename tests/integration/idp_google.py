"""Google's token endpoint for the IdP stand-in (idp_standin.py): service accounts with
domain-wide delegation (RFC 7523 JWT bearer grant), as https://oauth2.googleapis.com/token does it.

    POST /google/token  form: grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer,
                              assertion=JWT (RS256, header kid; iss, scope, aud, iat, exp, sub)
         ok -> 200 {"access_token": JWT, "expires_in": N, "token_type": "Bearer"}: the stand-in's
               usual token with "email" = sub, so the rig's Dovecot logs the mailbox in.
         refusals, in Google's words:
           unknown iss                       400 invalid_grant "Invalid grant: account not found"
           kid, alg or signature wrong       400 invalid_grant "Invalid JWT Signature."
           aud not this URL                  400 invalid_grant "Invalid JWT: Failed audience check..."
           exp - iat > 3600, expired, future 400 invalid_grant "Invalid JWT: Token must be a
                                                 short-lived token (60 minutes)..."
           no delegation, or another scope   401 unauthorized_client "Client is unauthorized to
                                                 retrieve access tokens using this method, or
                                                 client not authorized for any of the scopes
                                                 requested."
           sub not a user of the domain      400 invalid_grant "Invalid email or User ID"

Service accounts come from --google-sa CLIENT_EMAIL:PUBLIC_KEY_PEM:SUBS (repeatable): SUBS are the
comma-separated users the account is delegated for (scope https://mail.google.com/); empty: no
delegation at all. The key id Google would put in the JSON key file (private_key_id) is
key_id(public key): the SHA-1 of its DER in hex, so key file and stand-in agree without a
registry. /_stats adds "google_assertions" (every assertion received), "google_verified" (the
claims and kid of each one accepted) and "google_errors" ([iss, error, description]).
"""
import hashlib
import time
import urllib.parse

import jwt
from cryptography.hazmat.primitives import serialization

TOKEN_PATH = "/google/token"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://mail.google.com/"

UNAUTHORIZED = ("Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.")
SHORT_LIVED = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
               "timeframe. Check your iat and exp values in the JWT claim.")


def key_id(public_key):
    """The private_key_id of a service account key: SHA-1 of the public key's DER, in hex."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(der).hexdigest()


def parse_accounts(specs):
    """--google-sa values -> {client_email: (public_key, kid, {subs})}."""
    out = {}
    for spec in specs:
        email, path, subs = spec.split(":", 2)
        with open(path, "rb") as f:
            pub = serialization.load_pem_public_key(f.read())
        out[email] = (pub, key_id(pub), {s for s in subs.split(",") if s})
    return out


class Google:
    def __init__(self, state, accounts=None):
        self.st = state            # IdpState: lock, make_token, good_key, issued, expires_in
        self.accounts = accounts or {}
        self.assertions = []
        self.verified = []
        self.errors = []

    def register(self, specs):
        self.accounts.update(parse_accounts(specs))

    def stats(self):
        return {"google_assertions": list(self.assertions),
                "google_verified": list(self.verified), "google_errors": list(self.errors)}

    def reset(self):
        self.assertions.clear()
        self.verified.clear()
        self.errors.clear()

    def _check(self, a, token_url):
        """(claims, None) if the assertion is good, else (iss, (status, error, description))."""
        try:
            hdr = jwt.get_unverified_header(a)
            unverified = jwt.decode(a, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None, (400, "invalid_grant", "Invalid JWT: malformed")
        iss = unverified.get("iss")
        if iss not in self.accounts:
            return iss, (400, "invalid_grant", "Invalid grant: account not found")
        pub, kid, subs = self.accounts[iss]
        if hdr.get("alg") != "RS256" or hdr.get("kid") != kid:
            return iss, (400, "invalid_grant", "Invalid JWT Signature.")
        try:
            claims = jwt.decode(a, pub, algorithms=["RS256"],
                                options={"verify_aud": False, "verify_exp": False,
                                         "verify_nbf": False, "verify_iat": False})
        except jwt.PyJWTError:
            return iss, (400, "invalid_grant", "Invalid JWT Signature.")
        if claims.get("aud") != token_url:
            return iss, (400, "invalid_grant", "Invalid JWT: Failed audience check. The right "
                                               "audience is %s" % token_url)
        now = time.time()
        try:
            iat, exp = int(claims["iat"]), int(claims["exp"])
        except (KeyError, TypeError, ValueError):
            return iss, (400, "invalid_grant", SHORT_LIVED)
        if exp - iat > 3600 or exp <= now or iat > now + 300:
            return iss, (400, "invalid_grant", SHORT_LIVED)
        if not subs or claims.get("scope") != SCOPE:
            return iss, (401, "unauthorized_client", UNAUTHORIZED)
        if claims.get("sub") not in subs:
            return iss, (400, "invalid_grant", "Invalid email or User ID")
        return claims, None

    def token(self, handler, body):
        """Answer one POST /google/token on the http.server handler."""
        st = self.st
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        f = {k: v[0] for k, v in form.items()}
        if f.get("grant_type") != GRANT_TYPE:
            return handler._send_json(400, {"error": "unsupported_grant_type",
                                            "error_description": "Invalid grant_type: %s"
                                            % f.get("grant_type", "")})
        a = f.get("assertion", "")
        token_url = "http://%s%s" % (handler.headers.get("Host", ""), TOKEN_PATH)
        claims, problem = self._check(a, token_url)
        with st.lock:
            self.assertions.append(a)
            if problem is not None:
                self.errors.append([claims, problem[1], problem[2]])
            else:
                self.verified.append(dict(claims, kid=jwt.get_unverified_header(a)["kid"]))
            expires_in = st.expires_in
        if problem is not None:
            return handler._send_json(problem[0], {"error": problem[1],
                                                   "error_description": problem[2]})
        token = st.make_token("google", claims["iss"], claims["sub"], st.good_key, expires_in)
        with st.lock:
            st.issued.append(token)
        return handler._send_json(200, {"access_token": token, "expires_in": expires_in,
                                        "token_type": "Bearer"})
