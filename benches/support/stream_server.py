#!/usr/bin/env python3
"""A simple streaming far end for `idb upload`, to compare `idb mock-server --sink` with.

Python standard library only. It answers the chunked upload API (setup, transfer,
verify) enough for `idb upload` to succeed against it: strict offsets (409 with
`expected_offset`), an early verify (409 with `received`/`expected`), and a verify
answer that omits the blake3 receipt (it reports a sha256 instead). Each transfer
body is parsed as multipart/form-data while it streams in, in blocks of
BLOCK bytes, and its payload is hashed with sha256 as it goes; no body is held
whole. One thread per connection (ThreadingHTTPServer), HTTP/1.1 keep-alive.

    python3 benches/support/stream_server.py --listen 127.0.0.1:8090 --dataset IDB-1:tok

The first line on stdout is `listening on http://HOST:PORT`, as the mock's is.
At the end (SIGINT or SIGTERM) it prints its CPU seconds per GiB received on stderr.
"""

import argparse
import hashlib
import json
import resource
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

# How many bytes one read from the socket asks for.
BLOCK = 1 << 20
# The most bytes of a text field, or of a part's headers.
TEXT_LIMIT = 16 * 1024

SESSIONS = {}
LOCK = threading.Lock()
RECEIVED = [0]


class Malformed(Exception):
    pass


class BodyReader:
    """Reads exactly `length` bytes of a request body, in blocks."""

    def __init__(self, rfile, length):
        self.rfile = rfile
        self.left = length

    def read(self):
        if self.left == 0:
            return b""
        data = self.rfile.read(min(BLOCK, self.left))
        if not data:
            raise Malformed("the body broke off")
        self.left -= len(data)
        return data

    def drain(self):
        while self.read():
            pass


def parse_disposition(raw):
    name = None
    for line in raw.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() != b"content-disposition":
            continue
        for param in value.split(b";")[1:]:
            k, _, v = param.strip().partition(b"=")
            if k.strip().lower() == b"name":
                name = v.strip().strip(b'"').decode()
    if name is None:
        raise Malformed("a part has no name")
    return name


def stream_multipart(body, boundary, on_payload_start):
    """Parses a multipart body as it arrives. Text fields are collected; the
    `bytechunk` part is handed piece by piece to the sink that
    `on_payload_start(fields)` returns (None: drop the bytes). Returns the fields
    and the payload length."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) - 1
    buf = b"\r\n" + body.read()
    fields = {}
    payload_len = 0
    # Preamble: up to the first delimiter.
    while True:
        i = buf.find(delimiter)
        if i >= 0:
            buf = buf[i + len(delimiter):]
            break
        more = body.read()
        if not more or len(buf) > TEXT_LIMIT:
            raise Malformed("no boundary")
        buf = buf[-keep:] + more
    while True:
        while len(buf) < 2:
            more = body.read()
            if not more:
                raise Malformed("cut after a boundary")
            buf += more
        if buf.startswith(b"--"):
            body.drain()
            return fields, payload_len
        # Part headers.
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            more = body.read()
            if not more or len(buf) > TEXT_LIMIT:
                raise Malformed("part headers")
            buf += more
        name = parse_disposition(buf[2:i])
        buf = buf[i + 4:]
        if name == "bytechunk":
            sink = on_payload_start(fields)
            while True:
                i = buf.find(delimiter)
                if i >= 0:
                    piece, buf = buf[:i], buf[i + len(delimiter):]
                else:
                    cut = max(0, len(buf) - keep)
                    piece, buf = buf[:cut], buf[cut:]
                if piece:
                    payload_len += len(piece)
                    if sink is not None:
                        sink(piece)
                if i >= 0:
                    break
                more = body.read()
                if not more:
                    raise Malformed("cut in the payload")
                buf += more
        else:
            while True:
                i = buf.find(delimiter)
                if i >= 0:
                    break
                more = body.read()
                if not more or len(buf) > TEXT_LIMIT:
                    raise Malformed("text field")
                buf += more
            fields[name] = buf[:i].decode()
            buf = buf[i + len(delimiter):]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    tokens = {}

    def log_message(self, *args):
        pass

    def answer(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = BodyReader(self.rfile, length)
        parts = self.path.split("/")
        if len(parts) != 5 or parts[1:3] != ["api", "dataset"] or parts[4] != "datafile":
            body.drain()
            return self.answer(404, {"error": "not_found"})
        dataset = parts[3]
        if self.headers.get("Authorization") != "Token token=" + self.tokens.get(dataset, "\0"):
            body.drain()
            return self.answer(401, {"error": "Bad credentials"})
        ctype = self.headers.get("Content-Type", "")
        # What the payload sink decided: (status, answer) for a transfer.
        verdict = {}

        def on_payload_start(fields):
            key = (dataset, fields.get("filename"))
            with LOCK:
                session = SESSIONS.get(key)
            if fields.get("phase") != "transfer" or session is None:
                return None
            offset = int(fields.get("previous_size", "-1"))
            if offset != session["received"]:
                verdict["answer"] = (409, {"expected_offset": session["received"]})
                return None
            verdict["session"] = session
            return session["hash"].update

        try:
            if ctype.startswith("multipart/form-data"):
                boundary = ctype.split("boundary=", 1)[1].strip().strip('"').encode()
                fields, payload_len = stream_multipart(body, boundary, on_payload_start)
            else:
                raw = self.rfile.read(length)
                fields = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
                payload_len = 0
        except (Malformed, IndexError, ValueError) as e:
            self.close_connection = True
            return self.answer(400, {"error": "bad_request", "message": str(e)})
        with LOCK:
            RECEIVED[0] += payload_len
        phase = fields.get("phase")
        key = (dataset, fields.get("filename"))
        if phase == "setup":
            with LOCK:
                SESSIONS[key] = {
                    "declared": int(fields["filesize"]),
                    "received": 0,
                    "hash": hashlib.sha256(),
                }
            return self.answer(200, {"filename": key[1], "filesize": int(fields["filesize"])})
        with LOCK:
            session = SESSIONS.get(key)
        if session is None:
            return self.answer(409, {"error": "no_session"})
        if phase == "transfer":
            if "answer" in verdict:
                return self.answer(*verdict["answer"])
            if "session" not in verdict:
                return self.answer(400, {"error": "bad_request"})
            session["received"] += payload_len
            return self.answer(200, {"received": session["received"]})
        if phase == "verify":
            if session["received"] != session["declared"]:
                return self.answer(
                    409, {"received": session["received"], "expected": session["declared"]}
                )
            return self.answer(
                200,
                {"filename": key[1], "size": session["received"],
                 "sha256": session["hash"].hexdigest()},
            )
        return self.answer(400, {"error": "unknown_phase"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8090")
    parser.add_argument("--dataset", action="append", required=True, help="KEY:TOKEN")
    args = parser.parse_args()
    for spec in args.dataset:
        key, token = spec.split(":", 1)
        Handler.tokens[key] = token
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("listening on http://%s:%d" % server.server_address, flush=True)
    server.serve_forever()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    gib = RECEIVED[0] / (1 << 30)
    if gib > 0:
        print("cpu: %.3f s for %.3f GiB received: %.2f CPU-s/GiB" % (cpu, gib, cpu / gib),
              file=sys.stderr)


if __name__ == "__main__":
    main()
