"""Async tasks held at a gate the test opens: the web UI's event loop lane group."""

import asyncio
import threading
import time

from thread_order import dmark

GATE = threading.Event()


async def _wait_for_gate():
    deadline = time.monotonic() + 30
    while not GATE.is_set():  # the coroutine polls: the loop stays free for the others
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        await asyncio.sleep(0.01)


@dmark()
async def fetch_a():
    await _wait_for_gate()


@dmark()
async def fetch_b():
    await _wait_for_gate()


@dmark()
def on_a_thread():
    if not GATE.wait(30):
        raise TimeoutError("the test never opened the gate")


@dmark(after=["fetch_a", "fetch_b"])
async def sync_call_inside():
    time.sleep(0.15)  # blocks the loop: a warning


@dmark(after=["sync_call_inside", "on_a_thread"], always=True)
async def teardown():
    print("teardown ran")
