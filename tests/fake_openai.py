"""A stand-in OpenAI server that records what a client sends and streams a fixed reply.

For client tests that must see the exact request body (the real server does not show it):
the terminal chat's commands, and the conversation a restarted server receives.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenAI:
    def __init__(self, port: int = 0, api_key: str | None = None, reply: str = "ok") -> None:
        self.bodies: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []  # of every request, /models included
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization")
                fake.authorizations.append(given)
                if api_key is None or given == f"Bearer {api_key}":
                    return True
                self._json(401, {"error": {"message": "Incorrect API key", "type":
                                           "invalid_request_error", "param": None,
                                           "code": "invalid_api_key"}})
                return False

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self._authorized():
                    self._json(200, {"object": "list",
                                     "data": [{"id": "smollm2", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._authorized():
                    return
                fake.bodies.append(body)
                chunk = {"object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": {"content": reply}}]}
                data = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.v1 = f"http://127.0.0.1:{self.port}/v1/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
