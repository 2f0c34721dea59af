"""The deal review pages in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``make browser``) loads them from a real ``bentoml serve`` process
on a demo CRM scored by the nightly batch, checks the list order, the reasons and the chart, and
saves screenshots (``tmp_path`` and the git-ignored ``test-artifacts/``).

Without the browser the test skips with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from conftest import IN_CI
from crm_predict.features.export import export_as_of
from mlflow import MlflowClient
from serving_models import DEAL_FEATURES, register_models
from test_serving_http import running_server
from typer.testing import CliRunner

from crm_predict.cli import app
from crm_predict.core.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token"
# 1,000 demo customers with seed 42 leave 8 deals open on the demo's last day.
DEMO = ["demo-data", "--customers", "1000", "--seed", "42", "--as-of", "2026-06-30"]


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (dev extras)")
    if not missing:
        return
    message = f"browser test needs {', '.join(missing)}: run `make browser`"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required, not skipped)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def scored_crm(tmp_path_factory) -> Settings:
    """A demo CRM with its feature export, a deal_health champion and the batch's health tags."""
    require_browser()
    root = tmp_path_factory.mktemp("review_browser")
    settings = Settings(data_dir=root / "data", api_token=TOKEN)
    settings.ensure_dirs()
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow's default artifact location is relative to the working directory
        for args in (DEMO, ["features", "export"]):
            result = runner.invoke(app, ["--data-dir", str(settings.data_dir), *args])
            assert result.exit_code == 0, result.output
        client = MlflowClient(
            tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
        )
        register_models(client, only=("deal_health",))
        # Scored as of the feature export, the batch's tags must equal the page's live scores.
        at = export_as_of(settings).isoformat()
        score = ["batch", "score", "--models", "deal_health", "--at", at, "--quiet"]
        result = runner.invoke(app, ["--data-dir", str(settings.data_dir), *score])
        assert result.exit_code == 0, result.output
        mlflow.set_tracking_uri(None)
    return settings


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)  # the first page builds the review context (registry, CRM)
    yield driver
    driver.quit()


def screenshot(driver, path: Path) -> Path:
    """A full-page PNG in ``path`` and a copy under test-artifacts/."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
    return path


def test_reviewer_opens_worst_deal_and_sees_its_reasons_and_chart(scored_crm, browser, tmp_path):
    from selenium.webdriver.common.by import By

    with running_server(scored_crm, tmp_path / "server.log") as base:
        browser.get(f"{base}/review/")
        assert browser.title == "Open deals by health"
        rows = browser.find_elements(By.CSS_SELECTOR, "table tr")[1:]
        health = [int(r.find_element(By.CSS_SELECTOR, ".badge").text) for r in rows]
        assert len(health) == 8, "every open deal is listed with the batch's health tag"
        assert health == sorted(health), "worst health first"
        assert {r.find_elements(By.TAG_NAME, "td")[-1].text for r in rows} == {"v1"}
        screenshot(browser, tmp_path / "review_list.png")

        worst = rows[0].find_element(By.CSS_SELECTOR, "a")
        deal_name = worst.text
        worst.click()
        assert browser.find_element(By.TAG_NAME, "h1").text == deal_name
        score = browser.find_element(By.ID, "score")
        live = int(score.find_element(By.CSS_SELECTOR, ".badge.score").text)
        assert live == health[0], "the page scores through the same code as the batch"
        assert "deal_health v1" in score.text and f"Stored tag: {live} (" in score.text

        reasons = browser.find_element(By.ID, "reasons")
        columns = reasons.find_elements(By.CSS_SELECTOR, ".reasons > div")
        assert [c.find_element(By.TAG_NAME, "h3").text for c in columns] == ["For", "Against"]
        positive, negative = (
            [li.text for li in c.find_elements(By.TAG_NAME, "li") if li.text != "none"]
            for c in columns
        )
        assert positive or negative, "the live score comes with reasons"
        for text in positive + negative:
            assert text.split(" = ")[0] in DEAL_FEATURES, text
        assert all("(+" in t for t in positive) and all("(-" in t for t in negative)

        chart = reasons.find_element(By.TAG_NAME, "img")
        loaded = browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", chart
        )
        assert loaded and loaded > 100, "the SHAP bar chart image loaded"
        assert chart.get_attribute("src").endswith("/reasons.png")
        assert browser.find_elements(By.CSS_SELECTOR, "#tags td")  # the batch's tags are shown

        shot = screenshot(browser, tmp_path / "review_deal.png")
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_reviewer_goes_from_a_deal_to_its_customers_360_view(scored_crm, browser, tmp_path):
    from selenium.webdriver.common.by import By

    with running_server(scored_crm, tmp_path / "server.log") as base:
        browser.get(f"{base}/review/")
        rows = browser.find_elements(By.CSS_SELECTOR, "table tr")[1:]
        deals = [
            (r.find_element(By.CSS_SELECTOR, "a").get_attribute("href"),
             r.find_element(By.CSS_SELECTOR, ".badge").text)
            for r in rows
        ]  # fmt: skip
        for href, health in deals:
            browser.get(href)
            links = browser.find_elements(By.ID, "customer")
            if not links:
                continue  # a deal of an account without a contact
            deal_name = browser.find_element(By.TAG_NAME, "h1").text
            links[0].click()
            messages = browser.find_elements(By.CSS_SELECTOR, "#messages tr")[1:]
            if "No messages." not in messages[0].text:
                expected = deal_name, health
                break
        else:
            pytest.fail("no open deal's customer has messages")
        assert browser.title == browser.find_element(By.TAG_NAME, "h1").text
        for message in messages:
            cells = [td.text for td in message.find_elements(By.TAG_NAME, "td")]
            assert cells[1] in {"email", "chat", "wechat", "call_note", "ticket"}
            assert cells[3] and cells[4] and cells[5], "text, intent and sentiment shown"
        listed = {
            r.find_element(By.TAG_NAME, "a").text: r.find_element(By.CSS_SELECTOR, ".badge").text
            for r in browser.find_elements(By.CSS_SELECTOR, "#deals tr")[1:]
        }
        assert listed[expected[0]] == expected[1], "the deal's health as the list shows it"
        assert browser.find_elements(By.CSS_SELECTOR, "#predictions td")
        shot = screenshot(browser, tmp_path / "review_customer.png")
        browser.get(f"{base}/review/customers/999999999")
        assert "no customer with id or external id '999999999'" in browser.page_source
    assert shot.read_bytes().startswith(b"\x89PNG")
