"""The dashboard, opened in headless Chromium (Playwright driving the system ``chromium``).

The page must render its three charts from live data — routing shares over time, reward over
time, off-policy estimates with intervals — load nothing from outside the router, and ask for a
key when it has none (or a wrong one). Skips where Playwright or ``/usr/bin/chromium`` is missing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
playwright = pytest.importorskip("playwright.sync_api")

from service_support import CLIENT_KEY, Server, client, unit_contexts, write_config  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
MODELS = ["small", "medium", "large"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="system chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("dashboard")
    cfg = write_config(
        root / "router.toml",
        {
            "router": {"models": MODELS, "dim": 4},
            "policy": {"name": "egreedy", "params": {"epsilon": 0.2}},
            "storage": {"url": "sqlite:///router.db"},
            "ope": {"interval_s": 0.3, "min_rows": 20},
        },
    )
    srv = Server(cfg, root / "server.log").start()
    with client(srv) as c:
        for ctx in unit_contexts(80, 4, 0):
            out = c.post("/v1/route", json={"context": ctx}).json()
            reward = {"small": 0.2, "medium": 0.5, "large": 0.8}[out["model"]]
            c.post("/v1/feedback", json={"event_id": out["event_id"], "reward": reward})
        deadline = time.monotonic() + 20
        while not c.get("/v1/stats").json()["ope"]["candidates"] and time.monotonic() < deadline:
            time.sleep(0.2)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Any:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield b
        b.close()


def test_dashboard_renders_live_charts(server: Server, browser: Any, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{server.url}/#key={CLIENT_KEY}")
    page.wait_for_function("Number(document.body.dataset.rendered || 0) >= 1", timeout=20_000)

    assert page.inner_text("#k-decisions") == "80" and page.inner_text("#k-feedback") == "80"
    assert page.inner_text("#k-policy") == "egreedy"
    lines = page.locator("svg#shares path.series")
    assert lines.count() == len(MODELS)
    for i in range(len(MODELS)):
        assert lines.nth(i).get_attribute("d").startswith("M")
    assert page.locator("svg#shares circle.point").count() >= len(MODELS)
    assert page.inner_text("#shares-legend").split() == MODELS
    assert page.locator("svg#reward path.series").get_attribute("d").startswith("M")
    bars = page.locator("svg#ope rect.bar")
    assert bars.count() >= 5  # logged mean, current policy, uniform, one per model
    assert page.locator("svg#ope line.interval").count() == bars.count() - 1  # every estimate but the logged mean
    widths = [float(bars.nth(i).get_attribute("width")) for i in range(bars.count())]
    assert all(w > 0 for w in widths)
    assert "always large" in page.text_content("svg#ope")
    assert "#key" not in page.url  # the key leaves the address bar
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert not errors, errors
    assert requests and all(u.startswith(server.url) for u in requests), requests  # nothing from a CDN


def test_dashboard_asks_for_a_key(server: Server, browser: Any) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    assert page.locator("#keyform").is_visible() and not page.locator("#charts").is_visible()
    page.fill("#keyinput", "wrong-key")
    page.click("#keyform button")
    page.wait_for_function("document.getElementById('status').textContent.includes('refused')", timeout=10_000)
    assert page.locator("#keyform").is_visible()
