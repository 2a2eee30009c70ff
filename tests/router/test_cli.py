"""The command line as a newcomer meets it: help everywhere, exit codes, pipes, defaults."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from router.cli import _parser

REPO = Path(__file__).resolve().parents[2]


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, **kw)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_positional_and_option_has_help():
    missing = []
    for name, sub in {"": _parser(), **_subparsers(_parser())}.items():
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {action.dest}")
    assert not missing, missing


def test_help_lists_exit_codes_and_the_token_variable():
    top = run("--help").stdout
    assert "exit codes:" in top and "141" in top
    serve = run("serve", "--help").stdout
    assert "EDGE_ROUTER_ADMIN_TOKEN" in serve and "exit codes:" in serve
    sim = run("simulate", "--help").stdout
    for endpoint in ("GET  /regions", "POST /regions/{id}/fault", "POST /regions/{id}/reset",
                     "GET  /regions/{id}/stats", "POST /regions/{id}/stats/reset"):
        assert endpoint in sim
    assert "python -m router.simulator" in subprocess.run(
        [sys.executable, "-m", "router.simulator", "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=60).stdout


def test_closed_pipe_exits_quietly():
    # argparse swallows the error of its own help output (exit 0); ours ends in 141.
    for args, codes in ((["check-config", "--print-default"], {141}), (["--help"], {0, 141})):
        r, w = os.pipe()
        os.close(r)  # the reader (`head`) has gone before we write
        try:
            proc = subprocess.run([sys.executable, "-m", "router", *args], cwd=REPO, stdout=w,
                                  stderr=subprocess.PIPE, text=True, timeout=60)
        finally:
            os.close(w)
        assert proc.stderr == "", proc.stderr
        assert proc.returncode in codes


def test_check_config_needs_a_file_or_print_default():
    r = run("check-config")
    assert r.returncode == 2 and "--print-default" in r.stderr


def test_serve_without_config_says_so_first():
    # A database that is not there stops serve right after its first line: nothing is
    # started and no region (on the internet) is ever probed.
    r = run("serve", "--geoip-db", "/nonexistent/db.mmdb", "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0")
    first = r.stderr.splitlines()[0]
    assert "no --config: serving the built-in seed deployment" in first
    assert "us-east-1 at https://api-us-east-1.finnexusai.com" in first
    assert "--print-default" in first
    assert r.returncode == 1


def test_builtin_config_notice_and_missing_geoip_fallback(caplog, tmp_path):
    from dataclasses import replace

    from router.cli import _builtin_notice
    from router.config import default_config

    missing = str(tmp_path / "config.toml")
    db = str(tmp_path / "GeoLite2-Country.mmdb")  # as in an image with nothing mounted
    base = default_config()
    base = replace(base, geo=replace(base.geo, database=db))
    with caplog.at_level("WARNING", logger="edge_router.cli"):
        config = _builtin_notice(base, missing, explicit_db=False)
    first, second = [r.getMessage() for r in caplog.records]
    assert first.startswith(f"no --config and no file at $EDGE_ROUTER_CONFIG ({missing}): serving the built-in")
    assert second.startswith(f"no GeoIP database at {db}: every client goes to the default region us-east-1")
    assert config.geo.database is None
    # An explicit --geoip-db is never dropped: serve then refuses to start without it.
    assert _builtin_notice(base, "", explicit_db=True).geo.database is not None


def test_serve_reads_the_config_named_by_the_environment(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('default_region = "a"\n[geo]\ndatabase = "/nonexistent/x.mmdb"\n'
                   '[[regions]]\nid = "a"\napi = "http://127.0.0.1:9"\nhealth = "http://127.0.0.1:9/h"\n')
    # Its database is missing, so serve stops at once, having read that file, not the built-in.
    r = run("serve", env={**os.environ, "EDGE_ROUTER_CONFIG": str(cfg)})
    assert r.returncode == 1 and "/nonexistent/x.mmdb" in r.stderr
    assert "built-in" not in r.stderr


def test_json_format_holds_for_a_failed_start(tmp_path):
    import json

    cfg = tmp_path / "config.toml"
    cfg.write_text('default_region = "a"\n[geo]\ndatabase = "/nonexistent/x.mmdb"\n[log]\nformat = "json"\n'
                   '[[regions]]\nid = "a"\napi = "http://127.0.0.1:9"\nhealth = "http://127.0.0.1:9/h"\n')
    r = run("serve", "--config", str(cfg))
    assert r.returncode == 1
    lines = [json.loads(line) for line in r.stderr.splitlines()]  # every line is an object
    assert lines[-1]["level"] == "error" and lines[-1]["message"].startswith("cannot start: GeoIP database")


def test_serve_stops_when_the_state_file_cannot_be_written(tmp_path):
    # A mistyped [state] path stops serve at once, naming the key, rather than
    # turning every later operator decision into a 503.
    cfg = tmp_path / "config.toml"
    cfg.write_text('default_region = "a"\n[geo]\ndatabase = ""\n'
                   f'[state]\nbackend = "file"\npath = "{tmp_path}/missing/decisions.json"\n'
                   '[[regions]]\nid = "a"\napi = "http://127.0.0.1:9"\nhealth = "http://127.0.0.1:9/h"\n')
    r = run("serve", "--config", str(cfg), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
    assert r.returncode == 1, r.stderr
    assert f"state.path: directory {tmp_path}/missing does not exist" in r.stderr
