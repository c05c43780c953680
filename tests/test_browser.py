"""End to end in a real browser: Chromium (Debian's, /usr/bin/chromium)
driven by Playwright against the live server, with the emulator behind it.

Screenshots of the list and detail pages are taken in every run; set
AUTUMN_SCREENSHOTS=docs/images to keep them for the README.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from autumn_django.models import Customer

CHROMIUM = os.environ.get("AUTUMN_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic",
]  # fmt: skip
# created_at (ms) an hour from now: newer than the admin's own customer
FUTURE = int(time.time() * 1000) + 3_600_000


def require_browser():
    try:
        import playwright  # noqa: F401
    except ImportError:
        reason = "playwright is not installed: pip install 'autumn-django[browser]'"
    else:
        if Path(CHROMIUM).exists():
            return
        reason = f"Chromium is not at {CHROMIUM}: apt-get install chromium"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI must run the browser tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while the
    # browser is open; the tests' own database work is still synchronous, so
    # Django's guard against ORM calls from async code is lifted meanwhile.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


@pytest.fixture
def signed_in(page, live_server, autumn_emulator, django_user_model):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw-for-tests")
    navigate(page, page.click, "input[type=submit]")
    assert page.url == f"{live_server.url}/admin/"
    return page


def keep_screenshot(path: Path, name: str) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    target = os.environ.get("AUTUMN_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def seed(emulator, count=30):
    emulator.add_plan("pro")
    for number in range(count):
        emulator.add_customer(
            id=f"cust-{number:02d}", name=f"Customer {number:02d}", email=f"customer{number:02d}@example.com",
            created_at=FUTURE + number, stripe_id=f"cus_Demo{number:04d}" if number % 3 == 0 else None,
            plans=["pro"] if number % 4 == 0 else ["starter"] if number % 4 == 1 else [],
        )  # fmt: skip


def navigate(page, action, *args):
    """Do ``action`` (page.click, page.press...) and wait for the page it
    loads: a locator read right after a click may still see the old page."""
    with page.expect_navigation():
        action(*args)


def ids_on(page):
    return page.locator("tr.autumn-customer th a").all_inner_texts()


def test_browse_search_and_page_at_api_2_1(signed_in, live_server, autumn_emulator, tmp_path):
    page = signed_in
    seed(autumn_emulator)
    page.goto(f"{live_server.url}/admin/")
    navigate(page, page.click, "text=Autumn customers")
    page.select_option("select[name=per_page]", "25")
    navigate(page, page.click, "#changelist-search input[type=submit]")
    assert ids_on(page)[:2] == ["cust-29", "cust-28"] and len(ids_on(page)) == 25
    assert "31 customers" in page.inner_text(".autumn-pages")
    page.screenshot(path=tmp_path / "list.png", full_page=True)
    keep_screenshot(tmp_path / "list.png", "admin-remote-list.png")
    navigate(page, page.click, "a.autumn-next")
    assert ids_on(page)[:2] == ["cust-04", "cust-03"]
    navigate(page, page.click, "a.autumn-previous")
    assert ids_on(page)[0] == "cust-29"
    page.fill("#searchbar", "customer07")
    navigate(page, page.press, "#searchbar", "Enter")
    assert ids_on(page) == ["cust-07"]


def test_cursor_pages_forward_and_back_at_api_2_3(signed_in, live_server, autumn_emulator, autumn_settings):
    autumn_settings(API_VERSION="2.3")
    page = signed_in
    seed(autumn_emulator)
    page.goto(f"{live_server.url}/admin/autumn_django/remotecustomer/?per_page=25")
    first = ids_on(page)
    assert first[0] == "cust-29" and "Page 1" in page.inner_text(".autumn-pages")
    navigate(page, page.click, "a.autumn-next")
    assert ids_on(page)[:2] == ["cust-04", "cust-03"] and "Page 2" in page.inner_text(".autumn-pages")
    navigate(page, page.click, "a.autumn-previous")
    assert ids_on(page) == first


def test_detail_link_or_import_and_delete_in_autumn(
    signed_in, live_server, autumn_emulator, make_user, tmp_path
):
    from autumn_django.client import get_client
    from autumn_django.signals import disable_sync

    page = signed_in
    with disable_sync():
        user = make_user("ada")
    autumn_emulator.add_plan("pro")
    get_client().get_or_create_customer(str(user.pk), name="Ada Lovelace", email="ada@example.com",
                                        auto_enable_plan_id="pro", stripe_id="cus_Ada12345")  # fmt: skip
    page.goto(f"{live_server.url}/admin/autumn_django/remotecustomer/{user.pk}/")
    assert page.inner_text(".autumn-field-name") == "Ada Lovelace"
    assert "pro" in page.inner_text("tr.autumn-subscription")
    page.screenshot(path=tmp_path / "detail.png", full_page=True)
    keep_screenshot(tmp_path / "detail.png", "admin-remote-detail.png")
    navigate(page, page.click, f"text=Link to {user}")
    assert "Linked" in page.inner_text(".messagelist")
    assert Customer.objects.get(user=user).stripe_id == "cus_Ada12345"
    navigate(page, page.click, "text=Delete in Autumn")
    navigate(page, page.click, "text=Yes, delete it in Autumn")
    assert f"Deleted {user.pk} in Autumn." in page.inner_text(".messagelist")
    assert autumn_emulator.customer(str(user.pk)) is None


def test_mirror_actions_from_the_changelist(signed_in, live_server, autumn_emulator, make_user):
    page = signed_in
    autumn_emulator.fail_next(4, status=503)  # the first try and MAX_RETRIES (3) retries
    user = make_user("grace")
    assert Customer.objects.get(user=user).state == "failed"
    page.goto(f"{live_server.url}/admin/autumn_django/customer/?state__exact=failed")
    assert "Failed" in page.inner_text("#result_list")
    page.check("#result_list input.action-select")
    page.select_option("select[name=action]", "retry_failed")
    navigate(page, page.click, "button[name=index]")
    assert "1 customer(s) synced with Autumn." in page.inner_text(".messagelist")
    assert Customer.objects.get(user=user).state == "synced"
