"""A real redis-server on a free loopback port, started and stopped by the tests."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bench.redisproc import RedisServer

# The e2e harness (importlib import mode: no packages).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (.ci/run installs it with apt-get)")
    server = RedisServer().start()
    yield server
    server.close()


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
    srv = RedisServer(tls=(files["server.crt"], files["server.key"], files["ca.pem"])).start()
    yield srv, files
    srv.close()
