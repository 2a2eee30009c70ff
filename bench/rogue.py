"""Misbehaving regions, and what they do to the clients behind the router.

`RogueRegion` (used by the end-to-end tests too) is a raw-socket region, one
thread per connection, keep-alive. Each answers by the request's path:

    /api/v1/health   200, always clean (so that the prober keeps it healthy)
    /late            answers, then a second answer ("EVIL") `late` seconds later
    /double          its answer and the head of a second one, in one write
    /head-body       a HEAD answer followed by a body
    /early           answers before reading the request body, then reads it
    /early-noread    answers before reading the request body, never reads it
    /endless-head    header lines until the router hangs up (bounded in time)
    /never           reads the request, never answers
    /switch          101 Switching Protocols, unasked
    /bad-chunk       chunked answer whose first chunk size is not hex
    /status/NNN      a clean answer with that status
    anything else    200 "for:<X-Request-Id>"

Clean answers name the request they answer: body "for:<X-Request-Id>".
Every wait is bounded; `stop()` ends everything.

As a benchmark, `python -m bench.rogue [--rounds N]` starts `router serve` with
a one-connection pool in front of one rogue region and, for each misbehaviour,
runs N rounds of: client A provokes it, then client B asks normally. It prints
what B got (its own answer, a router 5xx, or bytes meant for someone else) and
the router's RSS.
"""
from __future__ import annotations

import argparse
import http.client
import socket
import sys
import threading
import time


class RogueRegion:
    def __init__(self, late: float = 0.3) -> None:
        self.late = late
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.connections = 0
        self.requests: list[tuple[int, str, str, str]] = []  # (connection no, method, path, request id)
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass

    def api_connections(self) -> int:
        """Connections that carried API requests (the prober's do not count)."""
        with self._lock:
            return len({r[0] for r in self.requests if r[2] != "/api/v1/health"})

    # -- server ------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
                number = self.connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(10)
        buf = b""
        try:
            while not self.stopped.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                rid = headers.get("x-request-id", "")
                with self._lock:
                    self.requests.append((number, method, path, rid))
                length = int(headers.get("content-length", "0") or 0)
                if path in ("/early", "/early-noread"):
                    conn.sendall(_answer(200, f"early:{rid}"))
                    if path == "/early-noread":
                        self.stopped.wait(5)
                        return
                    buf = self._read_body(conn, buf, length)
                    continue
                buf = self._read_body(conn, buf, length)
                if not self._respond(conn, method, path, rid):
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def _read_body(self, conn: socket.socket, buf: bytes, length: int) -> bytes:
        while len(buf) < length:
            data = conn.recv(65536)
            if not data:
                raise OSError("client closed mid-body")
            buf += data
        return buf[length:]

    def _respond(self, conn: socket.socket, method: str, path: str, rid: str) -> bool:
        """Answer one request; False to end the connection."""
        if path == "/late":
            conn.sendall(_answer(200, f"for:{rid}"))
            time.sleep(self.late)
            conn.sendall(_answer(200, "EVIL"))
        elif path == "/double":
            conn.sendall(_answer(200, f"for:{rid}") + b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nEVIL")
        elif path == "/head-body":
            body = f"for:{rid}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            time.sleep(0.05)
            conn.sendall(body)  # a HEAD answer has no body
        elif path == "/endless-head":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            deadline = time.monotonic() + 10
            line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
            while time.monotonic() < deadline and not self.stopped.is_set():
                conn.sendall(line * 16)
            return False
        elif path == "/never":
            self.stopped.wait(10)
            return False
        elif path == "/switch":
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                         + f"for:{rid}".encode())
            self.stopped.wait(1)
            return False
        elif path == "/bad-chunk":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + f"for:{rid}".encode())
            self.stopped.wait(1)
            return False
        elif path.startswith("/status/"):
            conn.sendall(_answer(int(path.rsplit("/", 1)[1]), f"for:{rid}"))
        elif method == "HEAD":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        else:
            conn.sendall(_answer(200, f"for:{rid}"))
        return True


def _answer(status: int, body: str) -> bytes:
    data = body.encode()
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(data), data)


# --------------------------------------------------------------------------- benchmark
SCENARIOS = ("/late", "/double", "/head-body", "/early", "/endless-head", "/switch", "/bad-chunk", "/never")


def _ask(port: int, method: str, path: str, rid: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"X-Request-Id": rid})
        r = conn.getresponse()
        return r.status, r.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def main(argv: list[str] | None = None) -> int:
    from bench.harness import router_config, start_router

    p = argparse.ArgumentParser(description="misbehaving regions vs. the clients behind the router")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated paths")
    args = p.parse_args(argv)
    rogue = RogueRegion(late=0.05)
    router = start_router(router_config(
        {"r1": rogue.port}, default_region="r1", primary=None,
        tables={"limits": {"pool_size": 1, "read_timeout": "500ms"},
                "breaker": {"consecutive_failures": 1000, "min_requests": 100000}}), wait_healthy=False)
    try:
        rss0 = _rss_mib(router.proc.pid)
        print(f"| misbehaviour (client A) | rounds | A: status | B: own answer | B: router 5xx "
              f"| B: another's bytes | router RSS after, MiB (start {rss0:.1f}) |")
        print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
        for path in args.scenarios.split(","):
            own = r5xx = wrong = 0
            a_statuses: dict[int, int] = {}
            rounds = args.rounds if path != "/never" else min(args.rounds, 5)
            for i in range(rounds):
                method = "HEAD" if path == "/head-body" else "POST" if path == "/early" else "GET"
                body = b"p" * 65536 if method == "POST" else None
                status, _ = _ask(router.port, method, path, f"A{i}", body)
                a_statuses[status] = a_statuses.get(status, 0) + 1
                time.sleep(0.1)  # what the region sends late arrives while the connection is idle
                status, got = _ask(router.port, "GET", "/", f"B{i}")
                if status == 200 and got == f"for:B{i}".encode():
                    own += 1
                elif status >= 500 and got.startswith(b"{"):
                    r5xx += 1
                else:
                    wrong += 1
            a_text = ", ".join(f"{n}x {s}" for s, n in sorted(a_statuses.items()))
            print(f"| {path} | {rounds} | {a_text} | {own} | {r5xx} | {wrong} | {_rss_mib(router.proc.pid):.1f} |")
    finally:
        router.stop()
        rogue.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
