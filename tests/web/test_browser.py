"""The web UI in a real browser: Playwright driving the system's headless Chromium.

Screenshots of the main screens land in ``test-output/web/`` (look at them).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from pathlib import Path

import pytest

from web_support import browser, loaded, module_path, page, server  # noqa: F401 - fixtures

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "web"
DEMO = str(ROOT / "examples" / "demo.py")
#: the demo's tasks: 14 plus the 3 parametrized ones (two cases each)
DEMO_TASKS = 20


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def load(page, path):
    page.fill("#module-path", path)
    page.click("#load-button")


def load_and_wait(page, path):
    """Load a module and wait until the page has switched to it (the Tasks tab)."""
    load(page, path)
    page.wait_for_function("(p) => document.querySelector('#module-name').textContent === p"
                           " && !document.querySelector('#module-view').hidden", arg=path)


def set_state(page, values, saved=True):
    page.click("a[data-tab=state]")
    for key, value in values.items():
        page.click("#state-add")
        row = page.locator("#state-rows tr").last
        row.locator("input").nth(0).fill(key)
        row.locator("input").nth(1).fill(value)
    page.click("#state-save")
    if saved:
        page.wait_for_selector("#state-dirty:text-is('')", state="attached")


def recent(page, name):
    """The task's line in "Latest completions"."""
    return page.locator("#recent li", has=page.locator(".name", has_text=re.compile(f"^{name}$")))


def counter(page, status):
    return int(page.locator(f"#counters [data-status={status}] b").inner_text().replace(",", ""))


def wait_finished(page):
    page.wait_for_selector("#run-summary:not([hidden])", timeout=30_000)


def test_demo_load_set_state_run_live_and_open_in_history(page, server):
    load(page, DEMO)
    page.wait_for_selector("#module-view:not([hidden])")
    rows = page.locator("#task-table tbody tr")
    assert rows.count() == DEMO_TASKS
    assert rows.nth(0).locator("td").nth(1).inner_text().startswith("create_network")
    page.wait_for_selector("#module-graph svg g.node[data-task=delete_network]")
    assert page.locator("#module-graph g.node").count() == DEMO_TASKS
    shot(page, "1-tasks")

    set_state(page, {"latency": "0.15"})
    state_row = page.locator("#state-rows tr").first
    assert state_row.locator("input").nth(0).input_value() == "latency"
    assert state_row.locator(".source").inner_text() == "typed in"
    shot(page, "2-state")

    page.click("a[data-tab=run]")
    page.fill("#run-workers", "3")
    page.click("#run-button")
    # lanes fill and the counters move while the run is still going
    page.wait_for_selector("#lanes .lane.busy")
    page.wait_for_function(
        "() => document.querySelector('#run-phase').textContent === 'running'"
        " && +document.querySelector('#counters [data-status=PASSED] b').textContent > 2")
    assert page.locator("#lanes .lane").count() == 3
    assert re.fullmatch(rf"\d+% · \d+ / {DEMO_TASKS} tasks", page.inner_text("#progress-text"))
    assert page.locator("#run-graph g.node[data-status=PASSED]").count() >= 3
    shot(page, "3-run-live")

    wait_finished(page)
    assert [counter(page, s) for s in ("PASSED", "FAILED", "SKIPPED", "CANCELLED", "RUNNING", "WAITING")] == \
        [DEMO_TASKS, 0, 0, 0, 0, 0]
    assert page.inner_text("#progress-text") == f"100% · {DEMO_TASKS} / {DEMO_TASKS} tasks"
    assert page.locator("#run-graph g.node[data-status=PASSED]").count() == DEMO_TASKS
    assert page.inner_text("#run-pill") == "PASSED"  # the run card's word, not "idle"
    assert page.inner_text("#run-phase") == "PASSED"  # how the run ended, not just "finished"
    # every task once, plus any retried attempt of the polling task (the shared run view lists those)
    assert page.locator("#recent li:not(.s-RETRY)").count() == DEMO_TASKS
    shot(page, "4-run-done")

    page.click("a[data-tab=state]")
    last_run = page.locator("#run-state-rows tr", has_text="api_url")
    assert last_run.locator(".source").inner_text() == "setup_state"

    page.click("a[data-tab=run]")
    page.click("#run-summary a")
    page.wait_for_selector("#history-detail .timeline svg")
    assert page.locator("#history-detail .detail-head .pill").inner_text() == "PASSED"
    assert page.locator("#history-detail .graph g.node[data-status=PASSED]").count() == DEMO_TASKS
    bars = "#history-detail .timeline rect.bar[data-task]"
    # a bar per task, plus one per earlier attempt of a retried task (the demo's verify polls)
    assert page.locator(f'{bars}:not([data-task*="(attempt "])').count() == DEMO_TASKS
    retried = page.locator(f'{bars}[data-task*="(attempt "]')
    assert retried.count() == page.locator(f'{bars}[data-task*="(attempt "][data-status=FAILED]').count()
    shot(page, "5-history-run")

    page.click("text=← all runs")
    page.wait_for_selector("#history-table tbody tr")
    assert page.locator("#history-table tbody tr").count() == 1
    assert "examples/demo.py" in page.locator("#history-table tbody tr").inner_text()


def test_failure_details_and_comparing_two_runs(page):
    load_and_wait(page, DEMO)
    set_state(page, {"latency": "0.05", "fail_at": "create_subnet_a"})
    page.click("a[data-tab=run]")
    page.click("#run-button")
    wait_finished(page)
    assert counter(page, "FAILED") == 1 and counter(page, "SKIPPED") > 0
    not_passed = counter(page, "FAILED") + counter(page, "SKIPPED")
    failed = page.locator("#recent li.s-FAILED")
    assert failed.locator(".name").inner_text() == "create_subnet_a"
    assert "ApiError" in failed.locator(".why").inner_text()
    skipped = recent(page, "verify_subnet_a")
    assert skipped.locator(".why").inner_text() == "dependency 'create_subnet_a' failed"
    teardown = recent(page, "delete_network")
    assert "s-PASSED" in teardown.get_attribute("class")
    first_summary = page.inner_text("#run-summary")

    page.click("#run-summary a")
    page.wait_for_selector("#failures .failure")
    assert page.locator("#failures h4").inner_text().startswith("create_subnet_a")
    assert "Traceback (most recent call last)" in page.locator("#failures pre.trace").first.inner_text()
    shot(page, "6-history-failure")

    # fix it: remove fail_at, run again, compare
    page.click("a[data-tab=state]")
    page.locator("#state-rows tr", has=page.locator("input[value=fail_at]")).locator("button").click()
    page.click("#state-save")
    page.click("a[data-tab=run]")
    page.click("#run-button")
    page.wait_for_function("(before) => !document.querySelector('#run-summary').hidden"
                           " && document.querySelector('#run-summary').innerText !== before", arg=first_summary)
    page.click("a[data-tab=history]")
    page.wait_for_selector("#history-table tbody tr:nth-child(2)")
    # the two runs of the demo tell apart: the failing one shows the state that made it fail
    # (and api_url, which the demo's setup_state points at a new port each run)
    failing, fixed_run = (page.locator("#history-table tbody tr").nth(i).locator("td.differs").inner_text()
                          for i in (1, 0))
    assert "fail_at=create_subnet_a" in failing.split() and "fail_at" not in fixed_run
    shot(page, "6b-history-list")
    boxes = page.locator("#history-table tbody input[type=checkbox]")
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("#compare-button")
    page.wait_for_selector("#compare-view table tbody tr")
    heading = page.locator("#compare-view .card-head h3").last.inner_text()
    assert heading == (f"0 broken · {not_passed} fixed · 0 changed · 0 added · 0 removed · "
                       f"{DEMO_TASKS - not_passed} the same")
    fixed = page.locator("#compare-view tbody tr", has_text="create_subnet_a")
    assert fixed.locator(".change-fixed").inner_text() == "fixed"
    shot(page, "7-compare")


@contextlib.contextmanager
def gated_run(page, server, workers: str | None = None):
    """Run tests/modules/web_gate.py, holding it while its task 'hold' runs; the block's end
    releases it (whatever happened inside) and waits for the run to finish."""
    load(page, module_path("web_gate"))
    page.wait_for_selector("#module-view:not([hidden])")
    gate = loaded(server.ui)
    page.click("a[data-tab=run]")
    if workers is not None:
        page.fill("#run-workers", workers)
    page.click("#run-button")
    try:
        page.wait_for_selector("#lanes .lane.busy:has-text('hold')")
        yield
    finally:
        gate.GATE.set()
    wait_finished(page)


def test_cancel_lets_teardown_run(page, server):
    with gated_run(page, server, workers="2"):
        page.click("#cancel-button")
        page.wait_for_selector("#run-phase:text-is('cancelling')")
        assert page.inner_text("#cancel-button") == "Stop now"
        shot(page, "8-cancelling")
    assert [counter(page, s) for s in ("PASSED", "FAILED", "SKIPPED", "CANCELLED")] == [2, 0, 0, 3]
    assert "· the run was cancelled" in page.inner_text("#run-summary")
    assert page.inner_text("#run-phase") == "INTERRUPTED"
    assert "s-interrupted" in page.get_attribute("#run-phase", "class")
    assert "s-PASSED" in recent(page, "teardown").get_attribute("class")
    step = recent(page, "step_3")
    assert step.locator(".why").inner_text() == "cancelled: the run was interrupted"
    assert page.get_attribute("#run-graph g.node[data-task=teardown]", "data-status") == "PASSED"
    page.select_option("#run-task-status", "CANCELLED")
    assert page.locator("#run-task-table tbody tr").count() == 3
    shot(page, "9-cancelled")


def test_a_reloaded_page_catches_up_with_the_run(page, server):
    with gated_run(page, server):
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        page.wait_for_selector("#lanes .lane.busy:has-text('hold')")
        assert page.inner_text("#run-phase") == "RUNNING"
        assert page.get_attribute("#run-graph g.node[data-task=hold]", "data-status") == "RUNNING"
    assert counter(page, "PASSED") == 5


def test_import_errors_and_cycles_are_shown_in_the_page(page):
    load(page, module_path("web_broken"))
    page.wait_for_selector("#module-error:not([hidden])")
    assert "ModuleNotFoundError: No module named 'thread_order_no_such_module'" in page.inner_text("#module-error-message")
    assert "web_broken.py" in page.inner_text("#module-error-trace")
    shot(page, "10-import-error")

    load(page, module_path("web_cycle"))
    page.wait_for_selector("#graph-error:not([hidden])")
    assert page.inner_text("#graph-error") == ("the tasks do not form a valid graph: "
                                               "dependency cycle: first -> second -> first")
    assert page.locator("#task-table tbody tr").count() == 3
    assert page.is_hidden("#module-error")

    load(page, "no/such/file.py")
    page.wait_for_selector("#module-error-message:text-is('no/such/file.py: no such file')")


def test_bad_state_is_reported_in_the_page(page):
    set_state(page, {"cfg": "{oops"}, saved=False)
    page.wait_for_selector("#state-error:not([hidden])")
    assert page.inner_text("#state-error") == ("state value 'cfg': invalid JSON: Expecting property name "
                                               "enclosed in double quotes at line 1 column 2")
    page.set_input_files("#state-upload", files=[{"name": "broken.json", "mimeType": "application/json",
                                                  "buffer": b'{"a": 1,}'}])
    page.wait_for_selector("#state-file-error:not([hidden])")
    assert page.inner_text("#state-file-error") == ("state file broken.json: invalid JSON: Expecting property "
                                                    "name enclosed in double quotes at line 1 column 9")
    page.set_input_files("#state-upload", files=[{"name": "good.json", "mimeType": "application/json",
                                                  "buffer": b'{"owner": "ops"}'}])
    page.wait_for_selector("#state-file-name:text-is('using good.json')")
    row = page.locator("#state-rows tr", has=page.locator("input[value=owner]"))
    assert row.locator(".source").inner_text() == "state file"


def test_a_big_module_stays_paginated(page, tmp_path):
    module = tmp_path / "big.py"
    lines = ["from thread_order import dmark", ""]
    for i in range(1500):
        lines += ["", f"@dmark({'after=[%r]' % f't{i - 1}' if i % 5 else ''})", f"def t{i}():", "    pass", ""]
    module.write_text("\n".join(lines))
    load(page, str(module))
    page.wait_for_selector("#module-view:not([hidden])")
    assert page.locator("#task-table tbody tr").count() == 100
    assert page.inner_text("#task-table .pager span >> nth=0") == "1–100 of 1,500"
    # the graph panel says why it is not drawn once the page has looked at the size
    playwright_api.expect(page.locator("#module-graph")).to_contain_text(
        "1,500 tasks: the graph is drawn up to 800 tasks")
    page.click("a[data-tab=run]")
    page.fill("#run-workers", "8")
    page.click("#run-button")
    wait_finished(page)
    assert counter(page, "PASSED") == 1500
    assert page.locator("#run-task-table tbody tr").count() == 100
    assert page.locator("#lanes .lane").count() == 8
    shot(page, "11-big-run")
    page.click("#run-task-table .pager button:has-text('Next')")
    assert page.locator("#run-task-table tbody tr").first.locator("td").nth(1).inner_text() == "t100"


def test_durations_are_written_exactly_as_the_cli_and_the_report_write_them(page):
    # theme.format_seconds is the one formatter; the page's copy must agree on every value,
    # exact halves included (Python rounds them to even, JavaScript's toFixed/round up)
    from thread_order.theme import format_seconds

    rng = random.Random(19)
    values = [0, 1e-7, 4.2e-6, 3.2e-5, 0.0000125, 0.0000025, 0.0004999, 0.0005, 0.0009996, 0.000999,
              0.001, 0.0042, 0.005, 0.00999, 0.0099999, 0.01, 0.0125, 0.0145, 0.05, 0.123, 0.5, 0.9995,
              0.99999, 1, 1.005, 1.5, 59.994, 59.996, 60, 60.5, 61.5, 95, 3599.4, 3599.5, 3600, 4000,
              7384, 86399.5, 33.625, 2.125, 0.00225, 0.0000025, None]
    values += [10 ** rng.uniform(-7, 5) for _ in range(400)]
    values += [rng.randrange(1, 20_000) / 2 * 10 ** -rng.randrange(0, 7) for _ in range(200)]
    values += [rng.randrange(1, 2**12) / 2 ** rng.randrange(1, 12) for _ in range(300)]  # exact halves
    shown = page.evaluate("values => values.map(formatSeconds)", values)
    expected = [format_seconds(v) for v in values]
    assert [(v, s) for v, s, e in zip(values, shown, expected) if s != e] == []


def test_a_failed_run_names_its_failures_above_the_fold_with_threads_and_reasons(page):
    load_and_wait(page, DEMO)
    set_state(page, {"latency": "0.05", "fail_at": "create_subnet_a"})
    page.click("a[data-tab=run]")
    page.fill("#run-workers", "3")
    page.click("#run-button")
    wait_finished(page)
    # the top pill and the run card say the same thing
    assert page.inner_text("#run-pill") == "FAILED"
    assert page.inner_text("#run-phase") == "FAILED"
    assert "failed: create_subnet_a" in page.inner_text("#run-summary .failed-names")
    failure = page.locator("#run-failures-list li[data-task=create_subnet_a]")
    assert "ApiError" in failure.locator(".why").inner_text()
    assert re.fullmatch(r"thread_\d · \S+", failure.locator(".meta").inner_text())
    page.evaluate("window.scrollTo(0, 0)")
    box = page.locator("#run-failures").bounding_box()
    assert box["y"] + box["height"] <= 800, box  # in the first screen, not below the fold
    # the Tasks table says on which thread and why, for every task
    page.wait_for_function("() => [...document.querySelectorAll('#run-task-table tbody tr')]"
                           ".some(r => r.innerText.includes(\"dependency 'create_subnet_a' failed\"))")
    heads = page.eval_on_selector_all("#run-task-table thead th", "ths => ths.map(t => t.textContent)")
    assert heads[:6] == ["#", "Task", "Status", "Thread", "Duration", "Error / reason"]
    row = page.locator("#run-task-table tbody tr", has=page.locator("td.name", has_text=re.compile("^create_subnet_a$")))
    cells = row.locator("td")
    assert re.fullmatch(r"thread_\d", cells.nth(3).inner_text())
    assert "ApiError" in cells.nth(5).inner_text()
    skipped = page.locator("#run-task-table tbody tr", has=page.locator("td.name", has_text=re.compile("^verify_subnet_a$")))
    assert skipped.locator("td").nth(5).inner_text() == "dependency 'create_subnet_a' failed"
    # an idle lane names the task it finished last, as the terminal does
    lanes = page.eval_on_selector_all("#lanes .lane .task", "els => els.map(e => e.innerText)")
    assert all(re.fullmatch(r"done · last \S+ (passed|failed|skipped|cancelled)", t) for t in lanes), lanes
    shot(page, "12-run-failed")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.screenshot(path=str(SHOTS / "12-run-failed-first-screen.png"))

    # the history shows what the run was given: its state and a command line with it
    page.click("#run-summary a")
    page.wait_for_selector("#history-state tr")
    state = page.inner_text("#history-state")
    assert "fail_at" in state and "create_subnet_a" in state and "latency" in state
    assert "--fail_at=create_subnet_a" in page.inner_text("#history-detail .meta-grid")
    shot(page, "13-history-failed-run")
    # the run's trace, as the History's other button downloads it
    with page.expect_download(timeout=15_000) as got:
        page.click("#history-detail a.button[download]")
    download = got.value
    run_id = page.evaluate("() => location.hash").rsplit("/", 1)[-1]
    assert download.suggested_filename == f"tdrun-trace-{run_id}.json"
    trace = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    failed = [e for e in trace["traceEvents"]  # the tasks' last attempts (a poll may retry)
              if e["ph"] == "X" and e["cat"] == "task" and e["args"]["status"] == "FAILED"]
    assert [e["name"] for e in failed] == ["create_subnet_a"]
    # the same run's HTML report, as the History's button opens it
    page.goto(page.evaluate("() => document.querySelector('#history-detail a.button:not([download])').href"))
    page.wait_for_selector("#failures .failure")
    legend = page.text_content("#timeline-box .legend")
    outlined = page.locator("#timeline-box rect.bar.critical[data-task]").count()
    assert f"critical path ({outlined} task" in legend
    shot(page, "15-report-failed-run")


def test_loading_another_module_leaves_nothing_of_the_last_one(page, server):
    load_and_wait(page, DEMO)
    set_state(page, {"latency": "0"})
    page.click("a[data-tab=run]")
    page.click("#run-button")
    wait_finished(page)
    page.click("a[data-tab=tasks]")
    assert page.inner_text("#module-graph-note") == f"{DEMO_TASKS} tasks"

    load(page, module_path("web_cycle"))
    page.wait_for_selector("#graph-error:not([hidden])")
    assert page.inner_text("#module-graph-note") == ""  # not the demo's "20 tasks"
    playwright_api.expect(page.locator("#toast")).to_have_class(re.compile(r"\bbad\b"))
    assert "cannot run: dependency cycle: first -> second -> first" in page.inner_text("#toast")
    assert page.is_hidden("#setup-run")
    assert page.inner_text("#run-pill") == "IDLE"
    page.click("a[data-tab=run]")
    # the tab is drawn after the click returns: wait for it (with expect's timeout), not race it
    playwright_api.expect(page.locator("#run-empty")).to_be_visible()
    playwright_api.expect(page.locator("#run-view")).to_be_hidden()
    assert "cannot run: dependency cycle" in page.inner_text("#run-empty")
    assert page.is_disabled("#run-button")
    shot(page, "14-cycle-after-a-run")

    load(page, DEMO)  # back to a runnable module: offered again
    page.wait_for_selector("#setup-run:not([hidden])")
    assert page.is_enabled("#run-button")


def test_graphs_shrink_to_fit_only_down_to_readable_text(page, tmp_path):
    module = tmp_path / "chain.py"
    lines = ["from thread_order import dmark", ""]
    for i in range(14):
        lines += ["", f"@dmark({'after=[%r]' % f'step_{i - 1:02d}' if i else ''})", f"def step_{i:02d}():", "    pass"]
    module.write_text("\n".join(lines) + "\n")
    load(page, str(module))
    page.wait_for_selector("#module-graph svg g.node[data-task=step_13]")
    drawn = float(page.get_attribute("#module-graph svg", "width"))
    shown = page.locator("#module-graph svg").bounding_box()["width"]
    assert shown < drawn and 12 * shown / drawn >= 10 - 0.01
    assert page.eval_on_selector("#module-graph", "g => g.scrollWidth > g.clientWidth")


def test_a_forced_stop_names_the_teardown_it_left_behind(page, server):
    with gated_run(page, server, workers="2"):
        page.click("#cancel-button")
        page.wait_for_selector("#cancel-button:text-is('Stop now')")
        page.click("#cancel-button")  # the second Ctrl-C: 'hold' is abandoned, teardown never runs
        wait_finished(page)
        assert page.locator("#run-summary .teardown-not-run").all_inner_texts() == [
            "teardown did not run: teardown \u2014 resources they clean up may remain"]
        shot(page, "16-forced-stop")


def test_a_directory_loads_as_a_suite_showing_modules_and_cases(page, tmp_path):
    suite = tmp_path / "suite"
    (suite / "compute").mkdir(parents=True)
    (suite / "network.py").write_text(
        "from thread_order import mark\n\n@mark()\ndef create_network(state):\n    pass\n")
    (suite / "compute" / "vms.py").write_text(
        "from thread_order import mark\n\n"
        "@mark(after=['create_network'], params={'region': ['eu', 'us']})\n"
        "def create_vm(state, region):\n    pass\n")
    load_and_wait(page, str(suite))
    rows = page.locator("#task-table tbody tr")
    assert rows.count() == 3
    first = rows.nth(0)
    assert first.locator("td").nth(1).inner_text().startswith("compute/vms::create_vm[eu]")
    assert first.locator(".flag").first.inner_text() == "region=eu"
    assert first.locator(".deps").inner_text() == "network::create_network"
    page.wait_for_selector('#module-graph svg g.node[data-task="compute/vms::create_vm[us]"]')
    page.click("a[data-tab=run]")
    page.click("#run-button")
    wait_finished(page)
    assert counter(page, "PASSED") == 3
    assert recent(page, re.escape("compute/vms::create_vm[us]")).count() == 1


def test_a_run_with_a_pool_shows_who_waits_for_it_live_and_in_the_history(page, tmp_path):
    path = tmp_path / "pooled.py"
    path.write_text(
        "import time\nfrom thread_order import mark\n\nPOOLS = {'api': 1}\n\n"
        "@mark(pool='api', params={'i': [1, 2, 3, 4]})\n"
        "def call(state, i):\n    time.sleep(0.4)  # the API call\n\n"
        "@mark()\ndef free(state):\n    pass\n")
    load_and_wait(page, str(path))
    page.click("a[data-tab=run]")
    page.fill("#run-workers", "4")
    page.click("#run-button")
    # while the first call holds the pool's one slot, the others wait for it, holding no thread
    page.wait_for_function(
        "() => { const el = document.querySelector('#pool-waiting [data-pool=api] b');"
        " return el && !el.closest('#pool-waiting').hidden && +el.textContent >= 1; }")
    assert page.inner_text("#pool-waiting").startswith("waiting for pools: api")
    shot(page, "pool-waiting")
    wait_finished(page)
    assert counter(page, "PASSED") == 5
    assert page.locator("#pool-waiting").is_hidden()
    page.click("#run-summary a")
    page.wait_for_selector("#history-pools")
    row = page.locator("#history-pools tbody tr[data-pool=api]")
    cells = row.locator("td")
    assert [cells.nth(i).inner_text() for i in range(4)] == ["api", "1", "—", "3"]
    assert page.locator("#history-detail th", has_text="Waited for pool").count() == 1
    assert page.locator("#history-detail td", has_text=re.compile(r"^\d.* api$")).count() == 3
    assert page.locator("#history-detail .timeline rect.wait[data-pool=api]").count() == 3
    shot(page, "pool-history")


def test_a_retried_task_shows_each_attempt_in_the_history(page, tmp_path):
    module = tmp_path / "retry.py"
    module.write_text(
        "from thread_order import mark\n\n"
        "TRIES = []\n\n"
        "@mark(retries=2)\n"
        "def flaky(state):\n"
        "    TRIES.append(1)\n"
        "    if len(TRIES) < 3:\n"
        "        raise ConnectionError(f'try {len(TRIES)} refused')\n\n"
        "@mark(retries=1)\n"
        "def broken(state):\n"
        "    raise RuntimeError('always broken')\n")
    load_and_wait(page, str(module))
    page.click("a[data-tab=run]")
    page.click("#run-button")
    wait_finished(page)
    page.click("#run-summary a")
    page.wait_for_selector("#history-detail .timeline svg")
    # a bar per earlier attempt on the timeline
    bars = page.eval_on_selector_all("#history-detail .timeline rect.bar[data-task]",
                                     "els => els.map(e => e.dataset.task).sort()")
    assert bars == ["broken", "broken (attempt 1)", "flaky", "flaky (attempt 1)", "flaky (attempt 2)"]
    # the failed task: its earlier attempt under its failure, with its error and traceback
    failure = page.locator("#failures .failure", has=page.locator("h4", has_text="broken"))
    attempt = failure.locator(".earlier-attempts details.attempt")
    assert attempt.count() == 1
    assert "attempt 1" in attempt.inner_text() and "RuntimeError: always broken" in attempt.inner_text()
    attempt.locator("summary").click()
    assert "raise RuntimeError('always broken')" in attempt.locator("pre.trace").inner_text()
    # the task that passed in the end: its attempts in the table
    tries = page.locator("#history-detail .earlier-attempts", has_text="try 1 refused")
    assert tries.count() == 1
    assert re.search(r"attempt 2\s+failed.*ConnectionError: try 2 refused", tries.inner_text(), re.I | re.S)
    shot(page, "16-history-retried-attempts")


def test_a_shuffled_run_started_in_the_run_panel_says_its_seed(page, tmp_path):
    path = tmp_path / "shuffled.py"
    path.write_text("from thread_order import mark\n\n"
                    + "".join(f"@mark()\ndef t{i}(state):\n    pass\n\n" for i in range(6)))
    load_and_wait(page, str(path))
    page.click("a[data-tab=run]")
    page.fill("#run-workers", "1")
    page.check("#run-shuffle")
    page.fill("#run-seed", "4242")
    page.fill("#run-async-limit", "3")
    page.click("#run-button")
    wait_finished(page)
    assert counter(page, "PASSED") == 6
    assert "shuffled, seed 4242 (repeat: --shuffle=4242)" in page.inner_text("#run-summary")
    shot(page, "run-shuffled")
    page.click("#run-summary a")
    page.wait_for_selector("#history-detail .detail-head")
    detail = page.inner_text("#history-detail")
    assert "shuffled, seed 4242" in detail and "--shuffle=4242 --async-limit=3" in detail
    # options that cannot go together are refused in the page, naming the fields
    page.click("a[data-tab=run]")
    page.select_option("#run-order", "critical-path")
    page.click("#run-button")
    page.wait_for_selector("#run-error:not([hidden])")
    assert "shuffle cannot be used with order 'critical-path'" in page.inner_text("#run-error")
