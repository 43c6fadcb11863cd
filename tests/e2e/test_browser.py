"""A real browser (Debian's Chromium, headless, through chromedriver) on the study's two
front ends: the MLflow UI served by a real `mlflow server` on 127.0.0.1, and the Snakemake
report (`make report`'s results/<study>/report.html). Screenshots go to
results/<study>/screenshots/."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from dpolab.plots import PLOTS

os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1600,1400",
)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = (
            "Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver; .ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)

    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    yield session
    session.quit()


def wait_for_text(browser, *texts, timeout=90):
    WebDriverWait(browser, timeout).until(lambda b: all(t in b.find_element(By.TAG_NAME, "body").text for t in texts))


def loaded_images(browser, min_width=300):
    return [
        img
        for img in browser.find_elements(By.TAG_NAME, "img")
        if browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) >= min_width
    ]


def screenshot(browser, study: Path, name: str) -> Path:
    folder = study / "screenshots"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 20_000  # a rendered page, not a blank one
    return path


def test_mlflow_ui_shows_the_study_runs_and_plots(smoke_studies, browser):
    study = smoke_studies.server_work / "results" / "smoke"
    info = json.loads((study / "mlflow" / "study_run.json").read_text())
    base = f"{smoke_studies.server.url}/#/experiments/{info['experiment_id']}"
    browser.get(f"{base}/runs")
    wait_for_text(browser, "study-smoke")
    # the study's parent run, expanded to show its job runs
    expand = browser.find_element(
        By.XPATH, "//a[.//span[text()='study-smoke']]/ancestor::div[contains(@class,'ag-cell-wrapper')]//button"
    )
    expand.click()
    wait_for_text(browser, "sft", "dpo/variant~dpo/beta~0.1/seed~0", "compare", "summary")
    screenshot(browser, study, "mlflow_runs")
    # a DPO job's run: its training curve's metrics and its loss parameters
    client = MlflowClient(info["tracking_uri"])
    dpo = client.search_runs(
        [info["experiment_id"]],
        "attributes.run_name = 'dpo/variant~dpo/beta~0.1/seed~0' and attributes.status = 'FINISHED'",
    )[0]
    browser.get(f"{base}/runs/{dpo.info.run_id}")
    wait_for_text(browser, "dpo/variant~dpo/beta~0.1/seed~0", "loss.beta", "rewards/margins")
    screenshot(browser, study, "mlflow_dpo_run")
    # the parent run's plots, rendered by the UI's artifact viewer
    for plot in ("reward_vs_kl", "raw_vs_lc_win_rate"):
        browser.get("about:blank")  # a new page load: the UI's router ignores a change of hash alone
        browser.get(f"{base}/runs/{info['parent_run_id']}/artifacts/plots/{plot}.png")
        wait_for_text(browser, f"plots/{plot}.png")
        WebDriverWait(browser, 60).until(lambda b: loaded_images(b))
        screenshot(browser, study, f"mlflow_{plot}")


def test_report_html_shows_plots_summary_and_captions(smoke_studies, browser):
    work = smoke_studies.sqlite
    study = work / "results" / "smoke"
    report = study / "report.html"
    # what `make report` runs, in the test's copy of the workflow
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("snakemake")),
            "--cores",
            "1",
            "--configfile",
            "configs/smoke.yaml",
            "--report",
            str(report.relative_to(work)),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and report.exists(), result.stderr[-3000:]
    browser.get(report.as_uri())
    wait_for_text(browser, "Plots", "Summary")
    screenshot(browser, study, "report_home")
    browser.find_element(By.XPATH, "//nav//*[text()='Plots']").click()
    wait_for_text(browser, *[f"results/smoke/plots/{p}.png" for p in PLOTS])
    browser.find_element(By.XPATH, "//nav//tr[td[contains(text(),'reward_vs_kl.png')]]//a[@iconname='eye']").click()
    WebDriverWait(browser, 30).until(
        lambda b: any("reward_vs_kl.png" in (img.get_attribute("src") or "")[:120] for img in loaded_images(b))
    )
    screenshot(browser, study, "report_reward_vs_kl")
    browser.find_element(
        By.XPATH, "//nav//tr[td[contains(text(),'reward_vs_kl.png')]]//a[@iconname='information-circle']"
    ).click()
    # its caption, from workflow/report/reward_vs_kl.rst
    caption = (work / "workflow" / "report" / "reward_vs_kl.rst").read_text().split("(")[0].strip()
    wait_for_text(browser, "DESCRIPTION", caption)
    screenshot(browser, study, "report_reward_vs_kl_caption")
    # the summary table
    browser.get(report.as_uri())
    wait_for_text(browser, "Summary")
    browser.find_element(By.XPATH, "//nav//*[text()='Summary']").click()
    wait_for_text(
        browser, "results/smoke/summary.csv", "results/smoke/summary.html", "results/smoke/compare/win_rates.csv"
    )
    browser.find_element(By.XPATH, "//nav//tr[td[contains(text(),'summary.html')]]//a[@iconname='eye']").click()
    WebDriverWait(browser, 30).until(
        expected_conditions.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe"))
    )
    wait_for_text(browser, "judge: gold", "lc_win_rate", "variant~dpo/beta~0.1/seed~0")
    browser.switch_to.default_content()
    screenshot(browser, study, "report_summary")
