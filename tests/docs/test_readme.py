"""The README as a new user reads it: its commands, and every TOML example through check-config."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from router.config import ConfigError, parse_config
from router.defaults import SEED_TOML

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
TOML_BLOCKS = re.findall(r"^```toml\n(.*?)^```", README, re.S | re.M)
SH_BLOCKS = re.findall(r"^```sh\n(.*?)^```", README, re.S | re.M)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def check_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router", "check-config", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_readme_has_toml_examples():
    assert len(TOML_BLOCKS) >= 1


@pytest.mark.parametrize("index", range(len(TOML_BLOCKS)))
def test_every_toml_block_validates(index, tmp_path):
    """A whole file goes through `edge-router check-config` as it is; a fragment (no
    [[regions]]) is validated on top of the built-in config, as a user would add it."""
    block = TOML_BLOCKS[index]
    data = tomllib.loads(block)
    if "regions" not in data:
        try:
            parse_config(_merge(tomllib.loads(SEED_TOML), data), f"README block {index}")
        except ConfigError as exc:
            pytest.fail(f"README TOML block {index}:\n{block}\n" + "\n".join(exc.problems))
        return
    path = tmp_path / "example.toml"
    path.write_text(block, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0, f"README TOML block {index}:\n{block}\n{result.stderr}"


@pytest.mark.parametrize("index", range(len(TOML_BLOCKS)))
def test_commented_settings_are_valid_toml_once_uncommented(index):
    for line in TOML_BLOCKS[index].splitlines():
        m = re.match(r"^#\s*([a-z_]+\s*=.*)$", line)
        if m:
            tomllib.loads(m.group(1))  # raises on e.g. `a = "x", b = "y"`


def test_print_default_is_a_valid_config(tmp_path):
    out = subprocess.run([sys.executable, "-m", "router", "check-config", "--print-default"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    path = tmp_path / "default.toml"
    path.write_text(out.stdout, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "us-east-1" in result.stdout and "ap-southeast-1" in result.stdout


def test_install_commands_use_a_venv_and_ci_runs_the_test_command():
    first, tests = SH_BLOCKS[0].strip(), SH_BLOCKS[1].strip()
    assert "\n" not in first and "\n" not in tests  # one command each
    for command in (first, tests):
        assert command.startswith("python3 -m venv ") and ".venv/bin/" in command
    assert first.endswith("edge-router demo")
    assert "Python >= 3.11" in README.split("```")[0]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci, "the README's test command must appear verbatim in .ci/run"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_contents_lists_every_section():
    headings = re.findall(r"^## (.+)$", README, re.M)
    contents = README.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"^- \[(.+?)\]\(#(.+?)\)$", contents, re.M)
    assert [h for h in headings if h != "Contents"] == [title for title, _ in links]
    assert all(anchor == _anchor(title) for title, anchor in links), links


def test_every_notification_event_is_documented():
    """A webhook receiver is written against the README's event list: every kind the
    router can send is named there, in its group."""
    from router.ops.notify import EVENT_KINDS

    section = README.split("**Notifications.**", 1)[1].split("\n## ", 1)[0]
    missing = [kind for kind in EVENT_KINDS if kind not in section]
    assert missing == [], f"event kinds the README's Notifications section does not name: {missing}"


def test_running_it_lists_every_subcommand():
    """The README's command table names every subcommand `edge-router --help` offers."""
    out = subprocess.run([sys.executable, "-m", "router", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60).stdout
    commands = re.search(r"\{([a-z,-]+)\}", out).group(1).split(",")
    table = README.split("## Running it", 1)[1].split("\n\n", 2)[1]
    missing = [c for c in commands if f"`edge-router {c}" not in table]
    assert missing == [], f"subcommands the README's Running it table does not list: {missing}"


def test_metrics_table_names_every_metric_the_router_exports():
    """An operator looks metrics up in the README's table: every edge_router_* family of
    /metrics is there."""
    from prometheus_client.parser import text_string_to_metric_families

    from router.metrics import Metrics

    metrics = Metrics(("eu-west-1",))
    metrics.set_strategy("geographic")
    exported = {f.name for f in text_string_to_metric_families(metrics.render().decode())
                if f.name.startswith("edge_router_") and not f.name.endswith("_created")}
    table = README.split("## Metrics, logs, audit", 1)[1].split("\n\n", 2)[1]
    named = set(re.findall(r"`(edge_router_\w+)`", table))
    # The text parser names a counter's family without its _total suffix.
    missing = sorted(n for n in exported if n not in named and f"{n}_total" not in named)
    assert missing == [], f"metrics the README's table does not list: {missing}"
