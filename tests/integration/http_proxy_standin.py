#!/usr/bin/python3
"""An HTTP forward proxy stand-in on loopback: takes absolute-URI requests (what curl sends to an
http_proxy for an http:// endpoint), forwards them to the origin, relays the answer, and records
each one (method, URL). CONNECT (https:// through the proxy) is tunnelled and recorded too.

    px = HttpProxy()            # a thread on 127.0.0.1:PORT
    px.url                      # "http://127.0.0.1:PORT"
    px.requests                 # [("POST", "http://127.0.0.1:IDP/tenant/oauth2/v2.0/token"), ...]
    px.stop()
"""
import http.client
import http.server
import select
import socket
import threading
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _forward(self):
        self.server.owner.record(self.command, self.path)
        u = urllib.parse.urlsplit(self.path)
        if u.scheme != "http" or not u.hostname:
            self.send_error(400, "absolute http:// URI expected")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "keep-alive", "host")}
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=15)
        try:
            path = u.path + ("?" + u.query if u.query else "")
            conn.request(self.command, path or "/", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            self.send_response(r.status, r.reason)
            for k, v in r.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError as e:
            self.send_error(502, "origin: %s" % e)
        finally:
            conn.close()

    do_GET = _forward
    do_POST = _forward

    def do_CONNECT(self):
        self.server.owner.record("CONNECT", self.path)
        host, _, port = self.path.rpartition(":")
        try:
            up = socket.create_connection((host.strip("[]"), int(port)), timeout=15)
        except (OSError, ValueError) as e:
            self.send_error(502, "origin: %s" % e)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        socks = [self.connection, up]
        for _ in range(10000):
            r, _, _ = select.select(socks, [], [], 15)
            if not r:
                break
            done = False
            for s in r:
                data = s.recv(65536)
                if not data:
                    done = True
                    break
                (up if s is self.connection else self.connection).sendall(data)
            if done:
                break
        up.close()
        self.close_connection = True


class HttpProxy:
    def __init__(self, host="127.0.0.1"):
        self.requests = []
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer((host, 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (host, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def record(self, method, url):
        with self.lock:
            self.requests.append((method, url))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
