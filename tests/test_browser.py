"""End to end in a real browser: Chromium (Debian's, /usr/bin/chromium)
driven by Playwright against the live server, with the emulator behind it.

Every admin page of the app is looked at 1280 px wide (a laptop, with the
admin's sidebars open) and 390 px wide (a phone): nothing may stick out of
the page, and each is screenshotted in every run. Set
AUTUMN_SCREENSHOTS=docs/images to keep the screenshots for the docs
(``admin-<page>.png`` at 1280 px, ``admin-<page>-390.png`` at 390 px).
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
from pathlib import Path

import pytest
from django.utils import timezone

from autumn_django import billing, sync
from autumn_django.emulator import Plan
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


#: The widths every admin page is looked at: a laptop's, and a phone's.
VIEWPORTS = {"": {"width": 1280, "height": 800}, "-390": {"width": 390, "height": 844}}


#: The elements that reach past the window's right edge, for a failure's message.
WIDEST = """() => [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > window.innerWidth + 0.5)
    .slice(0, 8)
    .map(el => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)"""


def overflow(page):
    """What sticks out: the page's width past the window's, and every
    result list wider than its box (a list that must be scrolled sideways)."""
    return page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth - window.innerWidth,
            lists: [...document.querySelectorAll('.results')].map(box => box.scrollWidth - box.clientWidth),
        })"""
    )


def shoot(page, tmp_path, name, check=None):
    """Look at the page at each width: nothing wider than the window, no
    list to scroll sideways, ``check(page, width)`` if given; screenshot it
    (``admin-<name>.png``, ``admin-<name>-390.png``). Back to 1280 px after."""
    for suffix, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.wait_for_timeout(50)  # the relayout
        assert overflow(page) == {"page": 0, "lists": [0] * len(overflow(page)["lists"])}, (
            name,
            suffix,
            page.evaluate(WIDEST),
        )
        if check:
            check(page, viewport["width"])
        file = f"admin-{name}{suffix}.png"
        page.screenshot(path=tmp_path / file, full_page=True)
        keep_screenshot(tmp_path / file, file)
    page.set_viewport_size(VIEWPORTS[""])


def box(page, selector):
    return page.locator(selector).first.bounding_box()


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
    shoot(page, tmp_path, "remote-list")
    navigate(page, page.click, "a.autumn-next")
    assert ids_on(page)[:2] == ["cust-04", "cust-03"]
    navigate(page, page.click, "a.autumn-previous")
    assert ids_on(page)[0] == "cust-29"
    page.fill("#searchbar", "customer07")
    navigate(page, page.press, "#searchbar", "Enter")
    assert ids_on(page) == ["cust-07"]
    page.fill("#searchbar", "nobody-has-this")
    navigate(page, page.press, "#searchbar", "Enter")
    assert "No customer matches “nobody-has-this”." in page.inner_text("#result_list")
    assert page.inner_text(".autumn-pages").strip() == ""  # no page "1" of nothing


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
    labels = page.locator(".autumn-fields th").all_inner_texts()
    assert "Stripe id" in labels and "Email receipts" in labels and not any("_" in label for label in labels)
    shoot(page, tmp_path, "remote-detail", check=actions_in_their_row)
    navigate(page, page.click, f"text=Link to {user}")
    assert "Linked" in page.inner_text(".messagelist")
    assert Customer.objects.of(user).get().stripe_id == "cus_Ada12345"
    navigate(page, page.click, "text=Delete in Autumn")
    assert page.inner_text(".breadcrumbs").split(" › ")[:3] == ["Home", "Autumn", "Autumn customers"]
    shoot(page, tmp_path, "remote-delete", check=two_buttons_one_height_the_destructive_one_red)
    navigate(page, page.click, "text=Yes, delete it in Autumn")
    assert f"Deleted {user.pk} in Autumn." in page.inner_text(".messagelist")
    assert autumn_emulator.customer(str(user.pk)) is None


def actions_in_their_row(page, width):
    """The detail page's buttons sit inside its grey action row."""
    row = box(page, ".submit-row")
    for selector in (".submit-row input[type=submit]", ".submit-row a.deletelink"):
        button = box(page, selector)
        assert row["y"] <= button["y"] and button["y"] + button["height"] <= row["y"] + row["height"]
        assert row["x"] <= button["x"] and button["x"] + button["width"] <= row["x"] + row["width"]


def two_buttons_one_height_the_destructive_one_red(page, width):
    yes, no = box(page, "form input[type=submit]"), box(page, "form a.cancel-link")
    assert abs(yes["height"] - no["height"]) < 1
    colour = page.eval_on_selector("form input[type=submit]", "e => getComputedStyle(e).backgroundColor")
    red, green, blue = (int(part) for part in colour[colour.index("(") + 1 : -1].split(",")[:3])
    assert red > 150 and green < 80 and blue < 80, colour


def bill(emulator, user, *plan_ids):
    """Attach ``plan_ids`` to the user's customer at Autumn and refresh its
    mirror row, as a webhook's refresh would; the row."""
    row = Customer.objects.of(user).get()
    for plan_id in plan_ids:
        emulator.attach(row.customer_id, plan_id)
    sync.refresh(row)
    return Customer.objects.get(pk=row.pk)


def synced_a_while_ago():
    """Spread the rows' last syncs over the past day, as a list shows them
    ("3 minutes ago", "5 hours ago"), rather than all "just now"."""
    now = timezone.now()
    for step, pk in enumerate(
        Customer.objects.filter(synced_at__isnull=False).order_by("pk").values_list("pk", flat=True)
    ):
        Customer.objects.filter(pk=pk).update(synced_at=now - datetime.timedelta(minutes=3 + 97 * step))


def test_mirror_list_and_page_read_well_on_a_laptop_and_a_phone(
    signed_in, live_server, autumn_emulator, make_user, tmp_path
):
    """The mirror's list beside both admin sidebars at 1280 px: every
    column on screen, the state badge whole, a name on one line; on a phone
    each row a card, its plans in it. The row's page is read-only (no
    field, no Save) and shows the plans, balances and flags in tables."""
    page = signed_in
    autumn_emulator.add_plan("pro")
    autumn_emulator.add_plan("team")
    autumn_emulator.add_plan(Plan("credits", one_off=True))
    holdings = (["pro"], ["team"], ["pro", "credits"], [], ["pro"], ["team", "credits"])
    users = []
    for number, plan_ids in enumerate(holdings):
        users.append(make_user(f"sample{number:04d}", first_name="Barbara", last_name="Berners-Lee"))
        bill(autumn_emulator, users[-1], *plan_ids)
    autumn_emulator.fail_next(4, status=503)  # the first try and MAX_RETRIES (3) retries
    make_user("grace", first_name="Grace", last_name="Hopper")
    # A canceled subscription (active to the period's end), with balances
    # and a flag: the emulator keeps none, so they are written in as
    # Autumn's answer would carry them.
    autumn_emulator.cancel(Customer.objects.of(users[2]).get().customer_id, "pro")
    billed = bill(autumn_emulator, users[2])
    reset = int(billed.data["subscriptions"][0]["current_period_end"])
    data = {
        **billed.data,
        "balances": {
            "messages": {"feature_id": "messages", "granted": 1000, "usage": 420, "remaining": 580,
                         "next_reset_at": reset},
            "seats": {"feature_id": "seats", "unlimited": True, "usage": 3, "remaining": None},
        },
        "flags": {"sso": {"id": "flag_1", "feature_id": "sso", "plan_id": "pro", "expires_at": None}},
    }  # fmt: skip
    Customer.objects.filter(pk=billed.pk).update(data=data)
    billing.store([(billed.pk, data)])
    synced_a_while_ago()
    page.goto(f"{live_server.url}/admin/autumn_django/customer/")

    def columns_on_screen(page, width):
        results = box(page, ".results")
        for header in page.locator("#result_list thead th").all():
            if header.is_visible():
                edge = header.bounding_box()
                assert edge["x"] + edge["width"] <= results["x"] + results["width"] + 1
        for badge in page.locator(".autumn-state, .autumn-plan").all():
            assert badge.evaluate("e => e.scrollWidth <= e.clientWidth && e.getClientRects().length == 1")
        name = page.locator(".autumn-name", has_text="Barbara Berners-Lee").first
        line = float(name.evaluate("e => getComputedStyle(e).lineHeight").removesuffix("px"))
        assert name.bounding_box()["height"] < 1.5 * line  # one line
        plans = page.locator(
            ".field-active_plans", has=page.locator(".autumn-plan", has_text="credits")
        ).first
        assert plans.is_visible() and plans.inner_text().split() == ["pro", "credits"]
        if width == 1280:
            headers = page.locator("#result_list thead th").all_inner_texts()
            assert [h.strip().lower() for h in headers[1:]] == [
                "id",
                "customer",
                "object",
                "plans",
                "state",
                "last synced",
            ]
        else:  # a card: the plans on a line of their own under the object, a blank left out
            for row in page.locator("#result_list tbody tr:has(.autumn-plan)").all():
                plans_box, object_box = box(row, ".field-active_plans"), box(row, ".field-object_link")
                assert plans_box["y"] >= object_box["y"] + object_box["height"]
            blank = page.locator("#result_list tbody tr", has_text="sample0003").locator(
                ".field-active_plans"
            )
            assert not blank.is_visible()

    assert "Failed" in page.inner_text("#result_list") and "503" in page.inner_text("#result_list")
    shoot(page, tmp_path, "mirror-list", check=columns_on_screen)
    navigate(page, page.click, "#changelist-filter a[href='?plan=credits']")
    assert sorted(page.locator(".field-object_link a").all_inner_texts()) == ["sample0002", "sample0005"]
    page.goto(f"{live_server.url}/admin/autumn_django/customer/{billed.pk}/change/")
    assert page.locator("input[name=_save], input[name=_continue], #id_user").count() == 0
    assert page.locator("form#customer_form input:not([type=hidden])").count() == 0
    assert "View Autumn customer mirror" in page.inner_text("#content")

    def tables_read_well(page, width):
        plans = page.locator("table.autumn-plans tbody tr")
        assert plans.count() == 2 and "credits" in plans.nth(1).inner_text()
        canceled = plans.nth(0).locator("td[data-label=Canceled]")
        assert canceled.is_visible() and canceled.inner_text().strip()[:2] == "20"
        if width == 1280:  # a table across the fieldset, no label beside it
            assert (
                box(page, "table.autumn-plans")["width"] > 0.9 * box(page, "fieldset.autumn-billing")["width"]
            )
        else:  # a card per plan: each value under its heading's words, a blank left out
            assert canceled.evaluate("e => getComputedStyle(e, '::before').content") == '"Canceled"'
            assert not plans.nth(0).locator("td[data-label='Trial ends']").is_visible()

    shoot(page, tmp_path, "mirror-page", check=tables_read_well)


#: The icon a browser fetches for a page: the one it links, else /favicon.ico
#: (headless Chromium fetches neither, so the test fetches it).
ICON = "() => document.querySelector('link[rel~=icon]')?.href || new URL('/favicon.ico', location).href"


def test_no_page_asks_for_what_is_not_there(signed_in, live_server, autumn_emulator, make_user):
    """No 404, neither the icon every browser asks for nor anything else,
    and no console error, on the example site's pages or the admin's."""
    page = signed_in
    make_user("ada")
    failures = []
    page.on("response", lambda response: response.status >= 400 and failures.append(response.url))
    page.on("console", lambda message: message.type == "error" and failures.append(message.text))
    for path in ("/", "/billing/", "/profile/", "/admin/", "/admin/autumn_django/customer/",
                 "/admin/autumn_django/remotecustomer/"):  # fmt: skip
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        icon = page.request.get(page.evaluate(ICON))
        assert icon.ok and icon.headers["content-type"].startswith("image/"), (path, icon.status)
    assert failures == []


def test_mirror_actions_from_the_changelist(signed_in, live_server, autumn_emulator, make_user):
    page = signed_in
    autumn_emulator.fail_next(4, status=503)  # the first try and MAX_RETRIES (3) retries
    user = make_user("grace")
    assert Customer.objects.of(user).get().state == "failed"
    page.goto(f"{live_server.url}/admin/autumn_django/customer/?state__exact=failed")
    assert "Failed" in page.inner_text("#result_list")
    page.check("#result_list input.action-select")
    page.select_option("select[name=action]", "retry_failed")
    navigate(page, page.click, "button[name=index]")
    assert "1 customer synced with Autumn: 1 created." in page.inner_text(".messagelist")
    assert Customer.objects.of(user).get().state == "synced"
    page.goto(f"{live_server.url}/admin/autumn_django/customer/?q=grace")
    page.check("#result_list input.action-select")
    page.select_option("select[name=action]", "retry_failed")
    navigate(page, page.click, "button[name=index]")
    assert "Nothing to retry: the customer selected has not failed." in page.inner_text(".messagelist")
