"""The webhook of DRANET's python_webhook.bats, as a stand-alone HTTP server (stdlib
only), run inside the node netns: a provider of both kinds that gives interface
``dummy1`` the attribute ``dra.net/webhook_attr: python`` and MTU 1450, and the profile
``python-profile`` the address 10.200.200.200/24.

``python python_webhook.py PORT``
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(path: str, req: dict) -> dict | None:
    """The JSON body for ``POST path``; None: no such endpoint."""
    if path == "/GetDeviceAttributes":
        return {"dra.net/webhook_attr": {"string": "python"}} if req.get("name") == "dummy1" else {}
    if path == "/GetDeviceConfig":
        return {"interface": {"mtu": 1450}} if req.get("name") == "dummy1" else {}
    if path == "/GetProfileConfig":
        profile = (req.get("config") or {}).get("profile")
        return ({"interface": {"addresses": ["10.200.200.200/24"]}}
                if profile == "python-profile" else {})
    if path == "/ReleaseProfileConfig":
        return {}
    return None


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict | None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"cloudProvider": True, "profileProvider": True})
        else:
            self._send(404, None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = {}
        body = answer(self.path, req if isinstance(req, dict) else {})
        self._send(404 if body is None else 200, body)

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"webhook: {self.command} {self.path}\n")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
