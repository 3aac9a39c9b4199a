"""A real HTTP server for poller tests: serves recorded API responses from
tests/data (recorded and sample answers) on 127.0.0.1 and can be told to misbehave."""
from __future__ import annotations

import collections
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class ApiServer:
    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.script: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str], float]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                split = urlsplit(self.path)
                server.requests.append((split.path, parse_qs(split.query), dict(self.headers), time.monotonic()))
                behaviour = server.script[split.path].popleft() if server.script[split.path] else ("ok",)
                kind = behaviour[0]
                if kind == "status":
                    body = f'{{"error_code": {behaviour[1]}, "error_message": "scripted failure"}}'.encode()
                    self.send_response(behaviour[1])
                    for name, value in (behaviour[2] if len(behaviour) > 2 else {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if kind == "sleep":
                    time.sleep(behaviour[1])
                body = server.routes.get(split.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"not found")
                    return
                if kind == "html":
                    body = b"<html><body>Service temporarily moved</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if kind == "html" else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if kind == "truncated" else body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def hits(self, path: str) -> list:
        return [r for r in self.requests if r[0] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
