"""GET / on the admin listener: the live status page.

One self-contained file (status_page.html: HTML, CSS and plain JS, nothing
fetched from elsewhere) that polls /admin/state and /metrics. The strategy
names are filled in from the registry here; the inline script is pinned by
its hash in the Content-Security-Policy, so no other script can run on a page
that holds the admin token.
"""
from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

import orjson
from aiohttp import web

from policies import NAMES

_SCRIPT_RE = re.compile(r"<script>(.*?)</script>", re.S)


def _build() -> tuple[bytes, str]:
    html = files(__package__).joinpath("status_page.html").read_text("utf-8")
    html = html.replace("/*STRATEGIES*/[]", orjson.dumps(list(NAMES)).decode())
    hashes = " ".join(
        "'sha256-%s'" % base64.b64encode(hashlib.sha256(m.group(1).encode()).digest()).decode()
        for m in _SCRIPT_RE.finditer(html)
    )
    csp = (f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html.encode(), csp


PAGE, CSP = _build()


async def status_page(request: web.Request) -> web.Response:
    return web.Response(
        body=PAGE, content_type="text/html", charset="utf-8",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP,
                 "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"},
    )
