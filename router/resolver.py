"""Asynchronous name resolution (c-ares through aiodns), cached with its TTL."""
from __future__ import annotations

import asyncio
import ipaddress
import socket

import aiodns

from .errors import NotSent

MIN_TTL = 5.0  # do not hammer the resolver for records with tiny TTLs
MAX_TTL = 300.0
NEGATIVE_TTL = 5.0


class Resolver:
    __slots__ = ("_resolver", "_cache", "_inflight", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._resolver: aiodns.DNSResolver | None = None
        self._cache: dict[tuple[str, int], tuple[float, list[tuple[int, str]] | str]] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future] = {}

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """[(family, address), ...]; an IP literal answers itself."""
        try:
            ip = ipaddress.ip_address(host)
            return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, host)]
        except ValueError:
            pass
        key = (host, port)
        now = self._loop.time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            if isinstance(hit[1], str):
                raise NotSent("dns", hit[1])
            return hit[1]
        fut = self._inflight.get(key)
        if fut is None:  # one query per name, however many requests wait for it
            fut = self._loop.create_task(self._query(host, port))
            self._inflight[key] = fut
        return await asyncio.shield(fut)

    async def _query(self, host: str, port: int) -> list[tuple[int, str]]:
        key = (host, port)
        try:
            if self._resolver is None:
                self._resolver = aiodns.DNSResolver(loop=self._loop)
            try:
                res = await self._resolver.getaddrinfo(host, port=port, type=socket.SOCK_STREAM)
            except aiodns.error.DNSError as exc:
                detail = f"cannot resolve {host}: {exc.args[-1] if exc.args else exc}"
                self._cache[key] = (self._loop.time() + NEGATIVE_TTL, detail)
                raise NotSent("dns", detail) from None
            addrs: list[tuple[int, str]] = []
            ttl = MAX_TTL
            for node in res.nodes:
                a = node.addr[0]
                addrs.append((node.family, a.decode() if isinstance(a, bytes) else a))
                if node.ttl:
                    ttl = min(ttl, float(node.ttl))
            # Prefer IPv4 first for predictability, keep both families.
            addrs.sort(key=lambda fa: fa[0] != socket.AF_INET)
            if not addrs:
                raise NotSent("dns", f"no address for {host}")
            self._cache[key] = (self._loop.time() + max(MIN_TTL, ttl), addrs)
            return addrs
        finally:
            self._inflight.pop(key, None)
