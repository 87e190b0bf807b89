"""A webhook receiver for the integration tests: records every delivery it is sent (headers and
body, as received) to a JSON-lines file and answers as its mode file says: `ok` (204), `fail`
(500), or `fail N` (500 for the next N deliveries, then 204). Prints its port, then serves until
killed. Signatures are checked afterwards by verify.py, with an independent implementation."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT, MODE = sys.argv[1], sys.argv[2]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
        with open(MODE) as f:
            mode = f.read().split()
        failing = mode and mode[0] == "fail"
        if len(mode) == 2:
            left = int(mode[1]) - 1
            with open(MODE, "w") as f:
                f.write(f"fail {left}" if left > 0 else "ok")
        status = 500 if failing else 204
        with open(OUT, "a") as f:
            f.write(json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                "path": self.path, "answered": status}) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
