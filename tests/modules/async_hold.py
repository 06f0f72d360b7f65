"""tdrun tests: ``hold`` awaits forever (until cancelled), so a test can Ctrl-C the run twice mid-coroutine."""

import asyncio
import logging
from pathlib import Path

from thread_order import mark

log = logging.getLogger("async_hold")
BESIDE = asyncio.Event()  # bound to the run's loop when first awaited


@mark()
async def hold(state):
    await BESIDE.wait()  # both coroutines run before the test's first Ctrl-C
    log.warning("hold is running")
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(0)  # cleanup that awaits, as closing a client does
        Path(state["marker"]).write_text("cleanup ran\n")
        log.warning("hold cleaned up")


@mark()
async def beside(state):
    BESIDE.set()
    try:
        await asyncio.sleep(3600)
    finally:
        log.warning("beside cleaned up")


@mark(after=["hold"], always=True)
async def teardown(state):
    log.warning("teardown ran")
