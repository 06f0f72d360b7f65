"""tdrun and pooled async tasks: a module's POOLS keeps coroutines and threads under one quota."""

from __future__ import annotations

from test_cli_pools import QUOTA, quota_api  # noqa: F401 - the fixture

ASYNC_VMS = """
import asyncio
import urllib.request
from thread_order import mark

POOLS = {"api": 2}
REGIONS = ["eu", "us", "ap", "sa", "af", "me"]


def post(url):
    req = urllib.request.Request(url + "/vms", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


@mark(pool="api", params={"region": REGIONS})
async def create_vm(state, region):
    return await asyncio.to_thread(post, state["api_url"])


@mark(pool="api", params={"zone": ["a", "b"]})
def create_disk(state, zone):
    return post(state["api_url"])
"""


def test_a_module_pool_keeps_async_and_thread_tasks_under_the_quota(quota_api, write_module,  # noqa: F811
                                                                    tdrun_main):
    path = write_module(ASYNC_VMS)
    res = tdrun_main(path, "--workers", "8", "--plain", f"--api_url={quota_api.url}")
    assert res.code == 0, res.out + res.err
    assert quota_api.calls == 8 and quota_api.refused == 0
    assert quota_api.peak == QUOTA
    assert "pool api (size 2): " in res.out and "tasks waited" in res.out


def test_without_the_pool_the_coroutines_hit_429(quota_api, write_module, tdrun_main):  # noqa: F811
    path = write_module(ASYNC_VMS)
    res = tdrun_main(path, "--workers", "8", "--plain", "--pool", "api=8", f"--api_url={quota_api.url}")
    assert res.code == 1
    assert quota_api.peak > QUOTA and quota_api.refused > 0
