"""A local webhook receiver for the demo: prints each POST body (one JSON per line) to
stdout and answers 200. Usage: python scripts/webhook_receiver.py PORT"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        print(body.decode("utf-8", "replace"), flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
