"""The order page and the dashboard in a real browser: headless Debian Chromium.

A real waitress server (statuspage/server.py) on a free port, driven with
Selenium. What a person sees is checked — the status, the shop's message,
the picture actually loaded, no internal note — and that the console stays
free of errors (a CSP violation would show there). Screenshots of a phone
and a desktop window go to tests/artifacts/ (ignored by git).

Needs the Debian packages `chromium` and `chromium-driver`; without them the
test is skipped with a hint, except in CI (CI=true), where that fails.
"""
from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from conftest import sample_order
from daemon.orders import service as orders
from daemon.config import settings_from_dict
from daemon.orders.service import Content, NewFile, Via
from daemon.store.models import OutboxMessage
from daemon.store.database import open_store

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")
WINDOWS = {"phone": (390, 844), "desktop": (1280, 900)}


def _browser_or_skip() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if not missing:
        return
    message = f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver to run the browser tests"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"".join(bytes((40 + x % 160, 93, 75 + y % 120)) for x in range(width))
                    for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def site(tmp_path):
    """A shop on SQLite with one rich order, served by the daemon's own web server."""
    _browser_or_skip()
    from statuspage.server import WebServer
    port = _free_port()
    settings = settings_from_dict({
        "shop": {"name": "Teeladen Morgentau", "address": "orders@shop.example",
                 "base_url": f"http://127.0.0.1:{port}", "locale": "de"},
        "owner": {"addresses": ["owner@shop.example"], "secret": "s3cret-command-key-0123"},
        "database": {"url": f"sqlite:///{tmp_path}/shop.db"},
        "outbound": {"maildir": str(tmp_path / "outbox")},
        "web": {"listen": f"127.0.0.1:{port}", "timezone": "Europe/Berlin"},
    })
    store = open_store(settings.database.url)
    order = _rich_order(store, settings)
    server = WebServer(settings, store)
    server.start()
    try:
        yield dataclasses.make_dataclass("Site", ["base", "settings", "store", "order"])(
            f"http://127.0.0.1:{port}", settings, store, order)
    finally:
        server.stop()
        store.close()


def _rich_order(store, settings):
    items = [{"sku": "TK-1", "name": "Teekanne „Morgentau“, Gusseisen, 1,2 l", "quantity": 1, "unit_price": "49.90"},
             {"sku": "TS-4", "name": "Teeschale", "quantity": 4, "unit_price": "8.50"}]
    orders.create_order(store, settings, sample_order(items=items, total="83.90"))
    orders.mark_paid(store, settings, "1042")
    orders.add_message(store, settings, "1042", Content(
        subject="Ihre Kanne ist graviert",
        html="<p>Guten Tag Frau Mustermann,</p><p>die Gravur ist fertig – <strong>so sieht sie aus</strong>:</p>"
             '<p><img src="cid:gravur@shop" alt="Die gravierte Kanne"></p><ul><li>Gusseisen</li><li>1,2 Liter</li></ul>',
        files=(NewFile("gravur.png", "image/png", _png(320, 180), content_id="<gravur@shop>"),
               NewFile("Pflegehinweise.pdf", "application/pdf", b"%PDF-1.4 care"))))
    orders.add_note(store, settings, "1042", Content(text="INTERN: Lieferant Ref. A77, Marge knapp"))
    orders.add_event(store, settings, "1042", "customer_reply", Content(text="Wunderbar, vielen Dank!"),
                     via=Via(author="customer"))
    orders.mark_shipped(store, settings, "1042", tracking="00340434161094042557", carrier="DHL")
    return orders.find_order("1042")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _screenshot(driver, name: str) -> Path:
    """The whole page, not only the window."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path = ARTIFACTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _images(driver) -> list[dict]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => ({src: i.src, complete: i.complete, width: i.naturalWidth}))")


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_a_customer_sees_her_order_with_the_picture_and_without_the_note(site, browser, window):
    from selenium.webdriver.common.by import By
    browser.set_window_size(*WINDOWS[window])
    browser.get(f"{site.base}/o/{site.order.status_token}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Bestellung 1042"
    assert browser.find_element(By.CSS_SELECTOR, "#status-heading .status-word").text == "versandt"
    current = browser.find_element(By.CSS_SELECTOR, ".progress [aria-current=step] .label")
    assert current.text == "Versandt" and current.is_displayed()
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Ihre Kanne ist graviert" in body and "so sieht sie aus" in body
    assert "Wunderbar, vielen Dank!" in body and "00340434161094042557" in body
    assert "INTERN" not in body and "Lieferant" not in body and "INTERN" not in browser.page_source
    images = _images(browser)
    assert len(images) == 1 and images[0]["complete"] and images[0]["width"] == 320, images
    assert browser.find_element(By.LINK_TEXT, "Pflegehinweise.pdf").get_attribute("href").endswith(
        tuple(f"/files/{n}" for n in range(1, 100)))
    assert _errors(browser) == []
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= WINDOWS[window][0], "the page must not scroll sideways"
    assert _screenshot(browser, f"order-{window}").stat().st_size > 10_000


def _wait(browser, condition, seconds: float = 15):
    """click() returns before the browser has followed a form or a link."""
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(browser, seconds).until(condition)


def test_the_owner_signs_in_by_mail_and_reads_the_dashboard(site, browser):
    from selenium.webdriver.common.by import By
    browser.set_window_size(*WINDOWS["desktop"])
    browser.get(f"{site.base}/admin?q={quote('paid and not cancelled')}")
    browser.find_element(By.ID, "email").send_keys("owner@shop.example")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(browser, lambda b: "Sehen Sie in Ihr Postfach" in b.find_element(By.TAG_NAME, "h1").text)
    url = OutboxMessage.get(OutboxMessage.kind == "signin_link").data["url"]
    browser.get(url)
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    _wait(browser, lambda b: urlsplit(b.current_url).path == "/admin")
    assert browser.find_element(By.ID, "q").get_attribute("value") == "paid and not cancelled"
    row = browser.find_element(By.CSS_SELECTOR, "table.orders tbody tr")
    assert "1042" in row.text and "Erika Mustermann" in row.text
    mailto = row.find_element(By.PARTIAL_LINK_TEXT, "Nachricht").get_attribute("href")
    assert mailto == "mailto:orders+cmd-s3cret-command-key-0123@shop.example?subject=message%201042"
    assert _errors(browser) == []
    _screenshot(browser, "dashboard-desktop")
    browser.find_element(By.LINK_TEXT, "1042").click()
    _wait(browser, lambda b: "INTERN" in b.find_element(By.TAG_NAME, "main").text)
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "INTERN: Lieferant Ref. A77" in page and "intern" in page
    assert _errors(browser) == []
    _screenshot(browser, "dashboard-order-desktop")
    browser.set_window_size(*WINDOWS["phone"])
    browser.get(f"{site.base}/admin")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= WINDOWS["phone"][0]
    _screenshot(browser, "dashboard-phone")
    # a link to the dashboard followed from another site (webmail) still finds the session
    browser.get("data:text/html,<a id=go href='%s/admin?q=shipped'>dashboard</a>" % site.base)
    browser.find_element(By.ID, "go").click()
    _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "table.orders"))
    assert urlsplit(browser.current_url).query == "q=shipped"


def test_the_sign_in_page_works_on_a_phone_without_script(site, browser):
    from selenium.webdriver.common.by import By
    browser.set_window_size(*WINDOWS["phone"])
    browser.get(f"{site.base}/account")
    field = browser.find_element(By.ID, "email")
    label = browser.find_element(By.CSS_SELECTOR, "label[for=email]")
    assert label.is_displayed() and field.get_attribute("type") == "email"
    assert browser.execute_script("return document.scripts.length") == 0
    assert _errors(browser) == []
    _screenshot(browser, "account-phone")
    field.send_keys("erika@example.org")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(browser, lambda b: OutboxMessage.select().where(OutboxMessage.kind == "signin_link").count() == 1)
    assert _errors(browser) == []
