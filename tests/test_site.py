"""The record as a site, read in a real headless Chromium: every image loads, every internal link resolves,
the metrics view filters; and the committed renders hold no warning, machine path or secret."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from biasutils import runner
from biasutils.__main__ import main
from biasutils.report.site import build_site, rendered_notebooks

LESSON = runner.REPORTS_DIR / "lesson"


def _committed_renders() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=runner.REPORTS_DIR, capture_output=True, text=True,
                            check=True).stdout.split()
    return [runner.REPORTS_DIR / p for p in listed]


COMMITTED = _committed_renders()


def test_the_committed_record_has_renders() -> None:
    assert len(COMMITTED) >= 100, "the classroom and lesson records"


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(runner.REPORTS_DIR)) for p in COMMITTED])
def test_no_committed_render_holds_a_warning_a_machine_path_or_a_secret(path: Path) -> None:
    assert runner.render_problems(path) == []


def _browser():
    """Headless Chromium through selenium; skipped, saying why, only where Chromium cannot be installed."""
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Chromium or chromedriver is not installed, and `make test` could not install them "
                    "(apt-get needs root): the site's browser test cannot run here")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,2000"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _broken_images(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")


def _unresolved_links(browser) -> list[str]:
    hrefs = browser.execute_script("return [...document.links].map(a => a.href)")
    return [h for h in hrefs if urlparse(h).scheme == "file" and not Path(unquote(urlparse(h).path)).exists()]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return build_site(LESSON, tmp_path_factory.mktemp("site") / "site")


def test_the_site_opens_offline_with_every_image_and_link(site, tmp_path) -> None:
    browser = _browser()
    try:
        browser.get(site.as_uri())
        text = browser.find_element("tag name", "body").text
        assert "Inheritance: the declared primary test" in text and "twin_shift" in text
        assert len(browser.find_elements("css selector", "figure img")) == len(list((LESSON / "figures").glob("*.png")))
        assert _broken_images(browser) == []
        assert _unresolved_links(browser) == []
        links = browser.execute_script("return [...document.links].map(a => a.getAttribute('href'))")
        assert {r.page for r in rendered_notebooks(LESSON)} <= set(links), "every render is linked"
        browser.save_screenshot(str(tmp_path / "index.png"))
        assert (tmp_path / "index.png").stat().st_size > 10_000

        browser.get((site.parent / "notebooks" / "08_report.html").as_uri())
        assert browser.find_elements("css selector", "img"), "the report's figures are in its page"
        assert _broken_images(browser) == [] and _unresolved_links(browser) == []

        browser.get((site.parent / "metrics.html").as_uri())
        rows = len((LESSON / "metrics.csv").read_text().splitlines()) - 1
        shown = browser.find_element("id", "shown")
        assert shown.text.endswith(f"of {rows} matching rows shown ({rows} in all)")
        browser.find_element("css selector", "#filters input[placeholder=metric]").send_keys("twin_shift_diff_mde")
        assert shown.text.startswith("2 of 2 matching rows")
        browser.find_element("xpath", "//th[text()='value']").click()
        values = [float(td.text) for td in browser.find_elements("css selector", "#metrics tbody tr td:nth-child(9)")]
        assert values == sorted(values)
    finally:
        browser.quit()


def test_make_site_needs_a_record_and_says_which_exist(tmp_path, capsys) -> None:
    assert main(["site", "--profile", "classrom", "--reports", str(runner.REPORTS_DIR)]) == 2
    assert "records there: classroom, lesson" in capsys.readouterr().err
