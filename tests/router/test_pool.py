"""The per-region pool (router/pool.py): a connection handed to a waiter that
is cancelled goes on to the next waiter."""
from __future__ import annotations

import asyncio

from wire_rig import pool_with_one_connection


def test_pool_hands_on_a_connection_given_to_a_cancelled_waiter():
    async def main():
        pool, busy = pool_with_one_connection(wait=5.0)  # the only slot is taken by `busy`
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(busy)  # handed to the first waiter ...
        first.cancel()  # ... which is cancelled before it runs
        await asyncio.sleep(0)
        if first.cancelled():  # the connection must have gone on to the second waiter
            got = await asyncio.wait_for(second, 1.0)
        else:  # (Python 3.11's wait_for lets a done result win over the cancel)
            got = first.result()
            second.cancel()
        assert got is busy and pool.open_connections == 1
        pool.close()

    asyncio.run(main())
