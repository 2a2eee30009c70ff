"""A real redis-server on a free loopback port, started and stopped by the tests."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The e2e harness (importlib import mode: no packages).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server without persistence; with `tls` (ca, cert, key paths) TLS only,
    client certificates required."""

    def __init__(self, tmp: Path, tls: tuple[str, str, str] | None = None) -> None:
        self.tmp = tmp
        self.tls = tls
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.tmp)]
        if self.tls:
            ca, cert, key = self.tls
            args[1:3] = ["--port", "0", "--tls-port", str(self.port), "--tls-ca-cert-file", ca,
                         "--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if self.tls:  # a TLS port: accepting connections is enough
                        return
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it with apt-get)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_tls(tmp_path):
    """A TLS-only redis-server requiring client certificates, and the client's files."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("edge-router-client")
    files = {}
    for name, blob in (("ca.pem", ca.cert_pem), ("server.crt", server.cert_chain_pems[0]),
                       ("server.key", server.private_key_pem), ("client.crt", client.cert_chain_pems[0]),
                       ("client.key", client.private_key_pem)):
        blob.write_to_path(str(tmp_path / name))
        files[name] = str(tmp_path / name)
    srv = RedisServer(tmp_path, (files["ca.pem"], files["server.crt"], files["server.key"]))
    srv.start()
    yield srv, files
    srv.stop()


@pytest.fixture
def router_factory():
    """Routers (tests/e2e/harness.py) started at will; each stopped when the test ends."""
    from harness import start_router

    started = []

    def start(*args, **kw):
        started.append(start_router(*args, **kw))
        return started[-1]

    yield start
    for rp in started:
        rp.stop()
