"""Comparing pipeline runs in the MLflow UI, in a real browser: the project's store served by `infra/mlflow_server.sh`
as a user starts it, Debian's chromium driven by Playwright. Two finished pipeline runs (learning rate 3e-3, then 0)
are picked in the runs table and compared: the params that differ, each run's headline metrics and alias, as MLflow's
API has them. Screenshots of each step stay in test-output/mlflow-ui/ for a person to look at."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tasks.common.vllm_server import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SCREENSHOTS = ROOT / "test-output" / "mlflow-ui"
CHROMIUM = "/usr/bin/chromium"   # Debian's: Playwright downloads no browser here
# a closed network: nothing to update, sync or phone home to. Playwright gives each launch a fresh, empty profile.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
HEADLINE = ("evaluate.ppl.served", "evaluate.judge.win_rate", "evaluate.serving.ttft_median_ms", "register.promoted")

# The compare view's metric table is a virtualised grid (300 px tall, 45 px rows): a row exists in the page only while
# scrolled into view. Scroll it until the metric's name cell is rendered; return that row's cells, left to right.
_METRIC_ROW_JS = """async ([names, values], key) => {
  const painted = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  for (let top = 0; top <= values.scrollHeight; top += values.clientHeight / 2) {
    values.scrollTop = top;
    await painted();
    const link = [...names.querySelectorAll('a')].find(a => a.textContent === key);
    if (link) {
      const row = link.parentElement.style.top;
      values.scrollTop = parseFloat(row) - values.clientHeight / 2;
      await painted();
      values.scrollTop += values.scrollTop > 0 ? -1 : 1;   // the name column follows one scroll event late
      await painted();
      return [...values.querySelectorAll('[role=rowgroup] > div')].filter(c => c.style.top === row)
        .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left)).map(c => c.textContent);
    }
  }
  return null;
}"""


def ui_number(value: float) -> str:
    """A metric as the compare view writes it (`formatMetric` in MLflow's JS bundle)."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        mantissa, exponent = f"{value:.3e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    shown = repr(math.floor(value * 10 ** digits + 0.5) / 10 ** digits)   # JS Math.round: halves go up
    return shown.removesuffix(".0")


def _stop(server: subprocess.Popen) -> None:
    """The server's whole process group (the mlflow CLI, uvicorn, its job runner): TERM, then KILL."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(grace)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def mlflow_server(store: Path, artifacts: Path, log: Path) -> Iterator[str]:
    """`infra/mlflow_server.sh` over a sqlite store (as `make mlflow-ui` starts it, one worker); yields its URL."""
    port = free_port("127.0.0.1")
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{store.resolve()}",
           "MLFLOW_DEFAULT_ARTIFACT_ROOT": str(artifacts.resolve()), "PORT": str(port), "WORKERS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        server = subprocess.Popen(["bash", str(ROOT / "infra" / "mlflow_server.sh")], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"mlflow server exited {server.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server not healthy in 120 s:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        _stop(server)


@contextmanager
def chromium_page(failure_shot: Path) -> Iterator[Page]:
    """A page in headless chromium; if the test fails in it, a screenshot of what the page showed then."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.set_default_timeout(60_000)   # the UI's first load on a 2-core machine
            try:
                yield page
            except BaseException:
                page.screenshot(path=failure_shot)
                raise
        finally:
            browser.close()


def _section(page: Page, title: str) -> Locator:
    """A collapsible section of the compare view, found by its "Show diff only" switch."""
    return page.locator(".du-bois-light-collapse-item", has=page.get_by_label(f"{title} - Show diff only"))


def _table_rows(table: Locator) -> dict[str, list[str]]:
    """An HTML table of the compare view: each row's heading and its cells, one per run, left to right."""
    cells = [[cell.strip() for cell in row.locator("th, td").all_inner_texts()] for row in table.locator("tr").all()]
    return {heading: values for heading, *values in cells}


def _plot(page: Page, param: str, metrics: tuple[str, ...]) -> None:
    """The parallel coordinates plot over `param` and `metrics` (its selects take typed names)."""
    page.get_by_role("button", name="Clear All").click()
    for label, keys in (("Parameters:", (param,)), ("Metrics:", metrics)):
        for key in keys:
            page.locator(f"xpath=//div[text()='{label}']/following-sibling::div[1]").click()
            page.keyboard.type(key)
            page.keyboard.press("Enter")
        page.keyboard.press("Escape")
    for key in (param, *metrics):
        expect(page.locator(".js-plotly-plot")).to_contain_text(key, timeout=60_000)


def _open_comparison(page: Page, url: str, experiment_id: str, run_ids: list[str], out: Path) -> None:
    """As a user does: the experiment's runs table, tick the runs, press Compare."""
    page.goto(f"{url}/#/experiments/{experiment_id}/runs")
    for run_id in run_ids:
        page.locator(f'.ag-pinned-left-cols-container [row-id="{run_id}"]') \
            .get_by_label("Press Space to toggle row selection").check()
    assistant = page.get_by_role("button", name="Close")   # the MLflow Assistant panel: room for the table
    if assistant.count() == 1:
        assistant.click()
    page.screenshot(path=out / "1-runs-selected.png")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text(f"Comparing {len(run_ids)} Runs").wait_for()
    assert "#/compare-runs?" in page.url


def check_comparison(url: str, experiment_id: str, run_ids: list[str], param: str, metrics: tuple[str, ...],
                     tags: tuple[str, ...], out: Path) -> None:
    """The UI's comparison of `run_ids` shows what MLflow's API has: the run names, exactly the params that differ
    (`param` among them, with each run's value), each of `metrics` and `tags` per run. Screenshots go to `out`."""
    client = MlflowClient(url)
    runs = {run_id: client.get_run(run_id) for run_id in run_ids}
    differ = {k for k in set().union(*(r.data.params for r in runs.values()))
              if len({r.data.params.get(k) for r in runs.values()}) > 1}
    assert param in differ, f"{param} is the same in runs {run_ids}"
    for key in metrics:
        assert all(key in r.data.metrics for r in runs.values()), f"metric {key} missing on a run"
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(out / "failed.png") as page:
        _open_comparison(page, url, experiment_id, run_ids, out)
        details = _table_rows(page.locator("table", has=page.get_by_text("Run ID:", exact=True)))
        order = details["Run ID:"]   # the columns' runs, left to right
        assert sorted(order) == sorted(run_ids)
        assert details["Run Name:"] == [runs[r].info.run_name for r in order]
        _plot(page, param, metrics)
        page.screenshot(path=out / "2-compare-runs.png")

        params = _section(page, "Parameters")
        params.get_by_label("Parameters - Show diff only").click()
        shown = _table_rows(params.locator("table"))
        assert set(shown) == differ, f"params shown as differing: {sorted(shown)}, API: {sorted(differ)}"
        assert shown[param] == [runs[r].data.params[param] for r in order]
        params.screenshot(path=out / "3-params-diff-only.png")

        section = _section(page, "Metrics")
        for n, key in enumerate(metrics, 4):
            cells = section.get_by_role("grid").evaluate_all(_METRIC_ROW_JS, key)
            assert cells == [ui_number(runs[r].data.metrics[key]) for r in order], f"{key}: page shows {cells}"
            section.screenshot(path=out / f"{n}-metric-{key}.png")

        section = _section(page, "Tags")
        shown = _table_rows(section.locator("table"))
        for key in tags:
            assert shown.get(key) == [runs[r].data.tags.get(key) for r in order], f"tag {key}: {shown.get(key)}"
        section.screenshot(path=out / f"{4 + len(metrics)}-tags.png")
    (out / "compared.json").write_text(json.dumps({"runs": order, "param": param, "metrics": metrics,
                                                  "tags": tags}, indent=2))


def test_ui_compares_two_pipeline_runs(worse_retrain):
    """The project's two finished pipeline runs: 3e-3 then 0 as learning rate, champion then challenger."""
    proj = worse_retrain[0]
    tracking = yaml.safe_load((proj / "params.yaml").read_text())["tracking"]
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    print(f"MLflow UI screenshots: {SCREENSHOTS}")
    with mlflow_server(proj / tracking["tracking_uri"].removeprefix("sqlite:///"), proj / tracking["artifact_root"],
                       SCREENSHOTS / "mlflow-server.log") as url:
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name(tracking["experiment"]).experiment_id
        parents = client.search_runs([experiment], "tags.`pipeline.launcher` = 'prefect' and "
                                     "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"])
        assert [r.data.params["sft.learning_rate"] for r in parents] == ["0.003", "0.0"]
        assert [r.data.tags.get("alias") for r in parents] == ["champion", "challenger"]
        check_comparison(url, experiment, [r.info.run_id for r in parents], "sft.learning_rate", HEADLINE,
                         ("alias",), SCREENSHOTS)
