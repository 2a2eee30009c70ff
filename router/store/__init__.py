"""Operator decisions behind one interface: memory, file or Redis (ARCHITECTURE idea 13).

`open_book` builds the backend named by `[state]` and the book a replica
routes by. The Redis URL may come from the environment
(EDGE_ROUTER_STATE_URL, e.g. from a Kubernetes Secret) so that a password
never has to sit in the config file.
"""
from __future__ import annotations

import os
import socket

from ..config import Config
from .book import DecisionBook
from .file import FileDecisionStore
from .memory import MemoryDecisionStore
from .model import Conflict, Decisions, Drain, Mutation, drain_factor
from .redis import RedisDecisionStore, StoreUnavailable

URL_ENV = "EDGE_ROUTER_STATE_URL"
REPLICA_ENV = "EDGE_ROUTER_REPLICA_ID"


def replica_id() -> str:
    """The name audit lines and documents carry: configured, else host:pid
    (on Kubernetes the host name is the pod's name)."""
    return os.environ.get(REPLICA_ENV) or f"{socket.gethostname()}:{os.getpid()}"


def open_book(config: Config, regions, replica: str | None = None) -> DecisionBook:
    st = config.state
    replica = replica or replica_id()
    if st.backend == "redis":
        backend = RedisDecisionStore(st, os.environ.get(URL_ENV) or st.url, config.strategy, replica)
    elif st.backend == "file":
        backend = FileDecisionStore(st.path, config.strategy, replica)
    else:
        backend = MemoryDecisionStore(config.strategy, replica)
    return DecisionBook(backend, regions, replica)


__all__ = [
    "Conflict", "DecisionBook", "Decisions", "Drain", "FileDecisionStore", "MemoryDecisionStore",
    "Mutation", "RedisDecisionStore", "StoreUnavailable", "drain_factor", "open_book", "replica_id",
]
