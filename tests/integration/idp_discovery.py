"""OpenID Connect discovery for the IdP stand-in (idp_standin.py), shaped like Entra ID's v2.0
metadata document:

  GET /<tenant>/v2.0/.well-known/openid-configuration
      -> 200 {"issuer": "http://127.0.0.1:PORT/<tenant>/v2.0",
              "token_endpoint": "http://127.0.0.1:PORT/<tenant>/oauth2/v2.0/token",
              "device_authorization_endpoint": ".../<tenant>/oauth2/v2.0/devicecode", ...}
  POST /_control {"discovery_issuer": "URL"}   the document names this issuer instead (a lying or
                                               mixed-up IdP); null: the truth again
  GET  /_stats   adds "discovery_gets": how many documents were served
  POST /_reset   counters cleared, the truth again
"""

WELL_KNOWN = "/v2.0/.well-known/openid-configuration"


class Discovery:
    def __init__(self, lock):
        self.lock = lock            # the stand-in's state lock
        self.gets = 0
        self.issuer_override = None

    @staticmethod
    def matches(path):
        """The tenant if path is a tenant's metadata document, else None."""
        if not path.endswith(WELL_KNOWN):
            return None
        tenant = path[1:-len(WELL_KNOWN)]
        return tenant if tenant and "/" not in tenant else None

    def serve(self, handler, tenant):
        base = "http://127.0.0.1:%d" % handler.server.server_address[1]
        with self.lock:
            self.gets += 1
            issuer = self.issuer_override or "%s/%s/v2.0" % (base, tenant)
        handler._send_json(200, {
            "issuer": issuer,
            "token_endpoint": "%s/%s/oauth2/v2.0/token" % (base, tenant),
            "device_authorization_endpoint": "%s/%s/oauth2/v2.0/devicecode" % (base, tenant),
            "authorization_endpoint": "%s/%s/oauth2/v2.0/authorize" % (base, tenant),
            "jwks_uri": "%s/%s/discovery/v2.0/keys" % (base, tenant),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "grant_types_supported": ["client_credentials", "refresh_token",
                                      "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })

    def control(self, req):
        """Called with the stand-in's lock held."""
        if "discovery_issuer" in req:
            self.issuer_override = req["discovery_issuer"]

    def stats(self):
        """Called with the stand-in's lock held."""
        return {"discovery_gets": self.gets}

    def reset(self):
        """Called with the stand-in's lock held."""
        self.gets = 0
        self.issuer_override = None
