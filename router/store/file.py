"""Decisions kept in a JSON file: a single instance remembers them across restarts.

Each commit writes a temporary file beside the target, fsyncs it and renames
it over the target (atomic on POSIX), so a crash leaves the old or the new
document, never half of one.
"""
from __future__ import annotations

import logging
import os
import tempfile

from .memory import Change, MemoryDecisionStore
from .model import Decisions, committed, decode, encode

log = logging.getLogger("edge_router.store")


class FileDecisionStore(MemoryDecisionStore):
    name = "file"

    def __init__(self, path: str, strategy: str, replica: str = "", **kw) -> None:
        super().__init__(strategy, replica, **kw)
        self.path = path
        self._read()

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return  # first start: the config's strategy, everything enabled
        try:
            self._d = decode(raw)
        except ValueError as exc:
            # A damaged file must not stop the router: start from the config and say so.
            log.error("state file %s is unreadable (%s): starting from the config's decisions", self.path, exc)
            return
        log.info("decisions from %s: version %d, strategy %s, disabled %s, draining %s", self.path,
                 self._d.version, self._d.strategy, sorted(self._d.disabled) or "-", sorted(self._d.drains) or "-")

    def commit_now(self, change: Change) -> Decisions:
        new = committed(change(self._d), self.replica, self._wall())
        write_atomically(self.path, encode(new))  # an OSError leaves memory unchanged too
        self._d = new
        return new


def unwritable(path: str) -> str | None:
    """Why decisions could not be written at `path`, or None. Checked at start:
    a mistyped path must stop `serve`, not turn every later decision into a 503."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable (a new file is written there and renamed)"
    if os.path.isdir(path):
        return f"{path} is a directory"
    return None


def write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".decisions-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
