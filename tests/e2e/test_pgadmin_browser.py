"""pgAdmin in a real browser: log in as the inventory's administrator and find the
messaging database in the object explorer; a wrong password is refused.

Headless Debian chromium and its chromedriver (scripts/setup-controller.sh
installs them); nothing is downloaded and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
SERVER_NAME = "pgmsg messaging"
# pgAdmin's first page loads a large JavaScript bundle; a busy 2-core host needs time.
PAGE_TIMEOUT = 90


@pytest.fixture(scope="module")
def pgadmin_url(inventory_vars: dict[str, Any]) -> str:
    return f"http://{inventory_vars['pgadmin_listen_address']}:{inventory_vars['pgadmin_port']}/"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, timeout: float = PAGE_TIMEOUT) -> WebDriverWait[WebDriver]:
    # The tree re-renders while it loads: an entry found a moment ago may be gone.
    return WebDriverWait(
        driver, timeout, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,)
    )


def shown_text(driver: WebDriver, selector: str) -> str | bool:
    """The text of the first visible element matching ``selector``, or False while there is none.

    pgAdmin re-renders its notifier as it appears; chromedriver reports an element replaced
    between finding and reading it either as stale or as "does not belong to the document".
    """
    try:
        for element in driver.find_elements(By.CSS_SELECTOR, selector):
            if element.is_displayed():
                return element.text
    except StaleElementReferenceException:
        return False
    except WebDriverException as error:
        if "does not belong to the document" not in str(error):
            raise
        return False
    return False


def log_in(driver: WebDriver, url: str, email: str, password: str) -> None:
    driver.get(url)
    wait(driver).until(ec.element_to_be_clickable((By.NAME, "email"))).send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit][name=internal_button]").click()


def tree_entry(driver: WebDriver, label: str) -> WebElement | bool:
    """The object explorer entry showing ``label``, or False while there is none."""
    for entry in driver.find_elements(By.CSS_SELECTOR, "#id-object-explorer .file-entry"):
        names = entry.find_elements(By.CSS_SELECTOR, ".file-name")
        if names and names[0].text.strip() == label:
            return entry
    return False


def expand(entry: WebElement) -> None:
    """Open a tree entry unless it is open already (a click on an open one closes it)."""
    toggle = entry.find_element(By.CSS_SELECTOR, ".directory-toggle")
    if "open" not in (toggle.get_attribute("class") or "").split():
        try:
            toggle.click()
        except ElementClickInterceptedException:
            # A dialog is up (pgAdmin restored the tree of an earlier session and
            # already asks for the server's password): the caller's wait handles it.
            pass


def child_entry(driver: WebDriver, parent: str, label: str) -> WebElement | bool:
    """The entry ``label`` below ``parent``, opening ``parent`` again while it is not shown: pgAdmin
    re-renders the tree as a connection completes, and a click on the toggle in that moment
    (or on an entry replaced by then) opens nothing."""
    entry = tree_entry(driver, label)
    if entry:
        return entry
    above = tree_entry(driver, parent)
    if isinstance(above, WebElement):
        expand(above)
    return False


def connect_prompt(driver: WebDriver, server_name: str) -> WebElement | bool:
    """pgAdmin's "Connect to Server" dialog, opening the server's tree entry if pgAdmin has not."""
    for dialog in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]"):
        if "Connect to Server" in dialog.text:
            return dialog
    entry = tree_entry(driver, server_name)
    if isinstance(entry, WebElement):
        expand(entry)
    return False


def test_object_explorer_lists_the_messaging_server(
    browser: WebDriver, pgadmin_url: str, inventory_vars: dict[str, Any]
) -> None:
    log_in(browser, pgadmin_url, inventory_vars["pgadmin_email"], inventory_vars["pgadmin_password"])
    wait(browser).until(ec.url_contains("/browser"))

    # The "Servers" group of the administrator, collapsed unless pgAdmin restored
    # an expanded tree from an earlier session: expand it.
    servers = wait(browser).until(lambda d: tree_entry(d, "Servers"))
    assert isinstance(servers, WebElement)
    expand(servers)
    server = wait(browser, 30).until(lambda d: tree_entry(d, SERVER_NAME))
    assert isinstance(server, WebElement)
    servers = wait(browser).until(lambda d: tree_entry(d, "Servers"))  # fresh, after re-renders
    # One level below the group, which counts exactly one server.
    assert int(server.get_attribute("data-depth") or 0) == int(servers.get_attribute("data-depth") or 0) + 1
    assert servers.find_element(By.CSS_SELECTOR, ".children-count").text == "(1)"

    # Opening the server asks for the postgres password (the server list holds
    # none; pgAdmin opens a lone server by itself). Connected, its databases
    # include the messaging one: the list points at the deployed database.
    prompt = wait(browser, 30).until(lambda d: connect_prompt(d, SERVER_NAME))
    assert isinstance(prompt, WebElement)
    prompt.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys(
        inventory_vars["postgres_superuser_password"]
    )
    prompt.find_element(By.XPATH, ".//button[normalize-space()='OK']").click()
    databases = wait(browser, 60).until(lambda d: tree_entry(d, "Databases"))
    assert isinstance(databases, WebElement)
    expand(databases)
    assert wait(browser, 30).until(lambda d: child_entry(d, "Databases", inventory_vars["pgmsg_db_name"]))

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "pgadmin-tree.png"
    screenshot.unlink(missing_ok=True)
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 0


def test_wrong_password_is_refused(
    browser: WebDriver, pgadmin_url: str, inventory_vars: dict[str, Any]
) -> None:
    email, password = inventory_vars["pgadmin_email"], inventory_vars["pgadmin_password"]
    log_in(browser, pgadmin_url, email, password + "-wrong")
    message = wait(browser).until(lambda d: shown_text(d, "[data-test=notifier-message]"))
    assert "Incorrect username or password" in str(message)
    assert "/login" in browser.current_url
    assert not browser.find_elements(By.ID, "id-object-explorer")

    # The right password still works, and resets pgAdmin's failed-login counter,
    # which would otherwise lock the account after a few runs of this test.
    browser.delete_all_cookies()
    log_in(browser, pgadmin_url, email, password)
    wait(browser).until(ec.url_contains("/browser"))
