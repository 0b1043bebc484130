"""The review grid in a real browser: Debian's Chromium driven by Playwright against a real server.

Saves a screenshot to tests/artifacts/review-grid.png (gitignored). Without /usr/bin/chromium it skips,
or fails under CI (see the `browser` fixture in conftest.py; `.ci/run` installs it).
"""

from __future__ import annotations

import signal

from curate.testing.review import make_review_workdir
from curate.core.workdir import latest_decisions

from test_review import start_server

from conftest import ARTIFACTS


def statuses(page) -> dict[str, str]:
    return page.eval_on_selector_all(".tile", "ts => Object.fromEntries(ts.map(t => [t.dataset.id, t.dataset.status]))")


def settle(page) -> None:
    page.evaluate("() => window.curateReview.idle()")


def open_grid(browser, url: str, width: int = 1100, height: int = 760):
    """A page on the grid at `url`, and the list its JavaScript errors go to."""
    page = browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return page, errors


def test_keys_decide_and_decisions_survive_reload_and_restart(tmp_path, browser):
    wd = make_review_workdir(tmp_path / "work", n=30, unscored=2)
    proc, url = start_server(wd, "--per-page", "24")
    try:
        page, errors = open_grid(browser, url)
        tiles = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.id)")
        assert len(tiles) == 24 and page.locator("#counts").inner_text().count("30") == 2

        page.keyboard.press("ArrowRight")  # cursor on tile 0
        page.keyboard.press("ArrowRight")  # tile 1
        page.keyboard.press("x")  # reject 1
        page.keyboard.press("ArrowDown")  # one row down: tile 1 + columns
        page.keyboard.press("x")
        page.keyboard.press("x")  # toggled back to pending
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("x")  # reject tile columns
        settle(page)
        cols = page.evaluate("() => { const t = [...document.querySelectorAll('.tile')]; "
                             "return t.filter(x => x.offsetTop === t[0].offsetTop).length; }")
        assert cols > 1
        assert statuses(page)[tiles[1]] == "rejected" and statuses(page)[tiles[cols]] == "rejected"
        assert statuses(page)[tiles[cols + 1]] == "pending"

        page.keyboard.press("a")  # accept the 22 other crops of the page
        settle(page)
        assert list(statuses(page).values()).count("accepted") == 22
        page.keyboard.press("u")  # undo the whole accept-page
        settle(page)
        assert list(statuses(page).values()).count("accepted") == 0
        page.keyboard.press("u")  # undo the reject of tile `cols`
        page.keyboard.press("a")
        settle(page)
        assert page.locator('[data-count="accepted"]').inner_text() == "23"
        page.locator(".tile").nth(4).click()  # a click toggles too: accepted -> rejected
        settle(page)

        expected = {c: "accepted" for c in tiles}
        expected[tiles[1]] = expected[tiles[4]] = "rejected"
        page.reload()
        assert statuses(page) == expected
        assert page.locator('[data-count="rejected"]').inner_text() == "2"
        assert page.locator('[data-count="pending"]').inner_text() == "6"

        page.keyboard.press("?")
        assert page.locator("#keys").is_visible()
        page.keyboard.press("Escape")
        page.hover(".tile >> nth=1")
        assert tiles[1] in page.locator("#info").inner_text() and "post" in page.locator("#info").inner_text()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.locator("#tile-size").fill("112")
        page.wait_for_function("() => [...document.querySelectorAll('.tile img')].every(i => i.complete && i.naturalWidth)")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "review-grid.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")

        with page.expect_navigation():
            page.select_option("select[name=status]", "pending")
        assert "status=pending" in page.url and len(statuses(page)) == 6
        assert errors == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    db = latest_decisions(wd.review_db)
    assert {c: s for c, s in db.items() if s != "pending"} == expected


def test_the_reject_model_orders_the_grid_and_accept_below_is_one_undo(tmp_path, browser):
    """The grid server trains the model in the background: the header shows its estimate, tiles come
    most-likely-rejected first, and "accept below p" accepts a batch that one `u` takes back."""
    import time

    from curate.testing.defects import make_defect_workdir
    from test_rank import decide

    wd, bad = make_defect_workdir(tmp_path / "work", n=90)
    decide(wd, bad, rejected=11, accepted=11)
    proc, url = start_server(wd, "--per-page", "48")
    try:
        page, errors = open_grid(browser, url, 1200, 900)
        deadline = time.monotonic() + 90
        while page.locator("#model").get_attribute("data-ready") != "yes" and time.monotonic() < deadline:
            time.sleep(0.5)
            page.evaluate("() => window.curateReview.refreshModel()")
        text = page.locator("#model-text").inner_text()
        assert "reject model: 22 decisions, held-out AUC" in text and "bad crops among 68 unreviewed" in text
        page.reload()  # the order follows the model from the next page load on
        ps = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.p)")
        assert all(ps) and [float(p) for p in ps] == sorted(map(float, ps), reverse=True)
        page.locator("#below-p").fill("0.5")
        page.evaluate("() => window.curateReview.refreshModel()")
        n = int(page.locator("#below-n").inner_text().replace(",", ""))
        assert 0 < n < 68
        page.locator("#accept-below").click()
        settle(page)
        assert page.locator('[data-count="accepted"]').inner_text() == str(11 + n)
        assert f"accepted {n} crops" in page.locator("#toast").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "review-rank.png"))
        page.keyboard.press("u")  # the whole batch
        settle(page)
        assert page.locator('[data-count="accepted"]').inner_text() == "11"
        assert errors == []
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert sum(s == "accepted" for s in latest_decisions(wd.review_db).values()) == 11


def test_the_page_says_why_there_is_no_model_and_keeps_working(tmp_path, browser):
    """One class only (every decision a reject): no model can be trained; the header says what is
    missing, the batch accept is hidden, and keys still decide."""
    import time

    from curate.testing.defects import make_defect_workdir
    from test_rank import decide

    wd, bad = make_defect_workdir(tmp_path / "work", n=60)
    decide(wd, bad, rejected=15, accepted=0)
    proc, url = start_server(wd, "--per-page", "24")
    try:
        page, errors = open_grid(browser, url)
        deadline = time.monotonic() + 60
        while "10 more accepted" not in page.locator("#model-text").inner_text() and time.monotonic() < deadline:
            time.sleep(0.3)
            page.evaluate("() => window.curateReview.refreshModel()")
        assert "no reject model yet" in page.locator("#model-text").inner_text()
        assert "10 more accepted" in page.locator("#model-text").inner_text()
        assert page.locator("#below-form").is_hidden()
        page.keyboard.press("a")  # the grid works as before
        settle(page)
        assert int(page.locator('[data-count="accepted"]').inner_text()) > 0 and errors == []
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
