"""curate explore in a real browser: Debian's Chromium driven by Playwright against a real
`curate explore` server on a tiny run (curate.testing.runs: an untrained generator, written in seconds).

Generates, selects, interpolates (strip and GIF), marks a direction and moves its slider, finds channels
in a dragged region and applies the edit (to another image too), animates it to a GIF, shows feature
maps and a cell's channels, exports a PNG and drops it back. Saves tests/artifacts/explore.png
(gitignored). Without /usr/bin/chromium it skips, or fails under CI (the `browser` fixture).
"""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from PIL import Image  # noqa: E402

from curate.explore.latent import read_png  # noqa: E402
from curate.testing.runs import make_run  # noqa: E402

from conftest import ARTIFACTS, start_curate_server  # noqa: E402


def fetch(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def gif_frames(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "GIF"
        return im.n_frames


def settle(page) -> None:
    """Every request the page made is answered and every image it shows is loaded."""
    page.evaluate("() => window.curateExplore.idle()")
    page.wait_for_function("() => [...document.images].filter(i => i.src && !i.hidden)"
                           ".every(i => i.complete && i.naturalWidth)")


def press(page, *keys: str) -> None:
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for k in keys:
        page.keyboard.press(k)


def state(page) -> dict:
    return page.evaluate("() => window.curateExplore.state()")


def test_generate_select_interpolate_direction_edit_animate_export_and_drop(tmp_path, browser):
    run = make_run(tmp_path / "00000-tiny", height=64, width=32)
    proc, url = start_curate_server("explore", run, "--port", "0")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)

        press(page, "g")  # seeds 1-8 at the run's psi
        settle(page)
        ids = state(page)["images"]
        assert len(ids) == 8 and page.locator(".tile figcaption").first.inner_text().startswith("seed 1")

        # select two and interpolate between them: a strip of 8 frames and a GIF of 8
        press(page, "Space", "ArrowRight", "Space")
        assert state(page)["selected"] == ids[:2]
        page.locator("#frames").fill("8")
        press(page, "i")
        settle(page)
        strip = page.locator("#strip").get_attribute("src")
        status, data = fetch(url.rstrip("/") + strip)
        assert status == 200 and Image.open(io.BytesIO(data)).size == (8 * 32, 64)
        status, data = fetch(url.rstrip("/") + page.locator("#gif-link").get_attribute("href"))
        assert status == 200 and gif_frames(data) == 8

        # mark two with and two without, name it, make the direction; its slider moves the image
        press(page, "ArrowLeft", "w", "ArrowRight", "w", "ArrowRight", "o", "ArrowRight", "o")
        assert page.locator("#n-with").inner_text() == "2" and page.locator("#n-without").inner_text() == "2"
        page.locator("#dir-name").fill("smile")
        press(page, "d")
        settle(page)
        assert state(page)["directions"] == ["smile"] and (run / "explore" / "directions.json").exists()
        press(page, "ArrowLeft", "ArrowLeft", "ArrowLeft")
        base = state(page)["base"]
        assert base == ids[0]
        page.locator('.direction[data-name="smile"] input.amount').fill("2")
        settle(page)
        moved = state(page)["current"]
        assert moved not in ids and "moved" in page.locator("#current-label").inner_text()
        assert not np.array_equal(pixels(fetch(f"{url}img/{moved}.png")[1]), pixels(fetch(f"{url}img/{base}.png")[1]))

        # drag a region on the image, find the channels active there over the two selected, apply
        box = page.locator("#current").bounding_box()
        page.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.2 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.75 * box["width"], box["y"] + 0.5 * box["height"], steps=5)
        page.mouse.up()
        region = state(page)["region"]
        assert region[0] == pytest.approx(0.25, abs=0.02) and region[3] == pytest.approx(0.5, abs=0.02)
        page.locator("#edit-level").select_option("5")  # 32x16: 16 channels to choose 8 from
        press(page, "f")
        settle(page)
        channels = [int(c) for c in page.locator("#edit-channels").input_value().split(",")]
        assert len(channels) == 8
        page.locator("#edit-mult").fill("6")
        press(page, "x")
        settle(page)
        edited = state(page)["current"]
        found = read_png(fetch(f"{url}img/{edited}.png")[1])
        (edit,) = found.edits
        assert sorted(edit.channels) == sorted(channels) and edit.multiplier == 6
        assert edit.region == pytest.approx(tuple(region))

        # animate the edit 0 -> 6 -> 0 to a GIF with the frames asked
        page.locator("#anim-frames").fill("7")
        press(page, "a")
        settle(page)
        status, data = fetch(url.rstrip("/") + page.locator("#anim-link").get_attribute("href"))
        assert status == 200 and gif_frames(data) == 7

        # save the edit, and apply it to another image
        page.locator("#edit-name").fill("glow")
        page.locator("#save-edit").click()
        settle(page)
        assert "glow" in (run / "explore" / "edits.json").read_text()
        press(page, "ArrowRight", "ArrowRight", "ArrowRight")
        assert state(page)["base"] == ids[3]
        page.locator('.saved-edit[data-name="glow"] button', has_text="apply").click()
        settle(page)
        other = read_png(fetch(f"{url}img/{state(page)['current']}.png")[1])
        assert other.latent.seed == 4 and [e.channels for e in other.edits] == [edit.channels]

        # feature maps of the current image; a click on a cell lists the channels most active there
        press(page, "m")
        settle(page)
        page.locator("#sheet").click(position={"x": 5, "y": 5})
        settle(page)
        full = json.loads(fetch(url + "api/state")[1])["levels"][-1]
        assert page.locator("#cell-out .chan").count() == min(10, full["channels"])  # the full level has 8

        # keep the edited image in the grid, export its PNG (e) and drop the file back on the page
        press(page, "k")
        assert len(state(page)["images"]) == 9
        with page.expect_download() as dl:
            press(page, "e")
        saved = open(dl.value.path(), "rb").read()
        assert read_png(saved).latent.seed == 4 and dl.value.suggested_filename.endswith(".png")
        page.evaluate("""async (b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "saved.png", { type: "image/png" }));
            const target = document.getElementById("gallery");
            target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
            target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""", base64.b64encode(saved).decode())
        settle(page)
        after = state(page)
        assert len(after["images"]) == 10 and page.locator(".tile figcaption").last.inner_text().startswith("dropped · seed 4")
        assert np.array_equal(pixels(fetch(f"{url}img/{after['images'][-1]}.png")[1]), pixels(saved))

        press(page, "?")
        assert page.locator("#keys").is_visible()
        press(page, "Escape")
        press(page, "ArrowLeft", "ArrowLeft", "ArrowLeft", "ArrowLeft", "Space")  # image 6 selected too
        press(page, "m")
        settle(page)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "explore.png"
        page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
        assert errors == [] and page.locator("#toast").inner_text() == ""

        # the server itself: a foreign Host and a cross-origin POST are refused
        host = url.split("//")[1].rstrip("/")
        assert fetch(url, {"Host": "evil.example"})[0] == 403
        status, body = fetch(url + "api/generate", {"Content-Type": "application/json", "Host": host,
                                                    "Origin": "http://evil.example"}, b'{"seeds": "1"}')
        assert status == 403 and b"cross-origin" in body
        page.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
