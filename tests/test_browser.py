"""The chat in a real browser: Playwright's sync API driving Debian's chromium against the app served
over HTTP, on real PostgreSQL with a small ingested library (one browser for the module)."""

from __future__ import annotations

import re

import pytest

from tests.helpers_app import attach_clip, clip_of_track, wait_until

pytestmark = pytest.mark.browser


def composers_of(answer) -> set[str]:
    return {c.get_attribute("data-composer") for c in answer.locator(".card").all()}


def test_chat_flow_clip_citation_playback_follow_up_and_reload(page, base_url, tmp_path):
    clip = tmp_path / "query.wav"
    clip.write_bytes(clip_of_track(0, start=4.0, seconds=14.0))
    attach_clip(page, base_url + "/", clip, k="2")
    page.wait_for_selector("#passage:not([hidden])")  # the waveform of the attached clip was drawn
    # Choose the passage: a click centres the 10-s window there (the 14-s clip's middle → 2.0 s).
    box = page.locator("#waveform").bounding_box()
    page.locator("#waveform").click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    assert float(page.input_value("#clip-start")) == pytest.approx(2.0, abs=0.2)
    page.click("#send")

    first = page.locator("section.answer").nth(0)
    first.locator(".card").first.wait_for()
    page.wait_for_url("**/c/*")
    # The explanation streams in over SSE and ends checked, with citations linking to the cards.
    first.locator(".explanation a.cite").first.wait_for()
    assert first.locator(".explanation .pending").count() == 0
    shown = composers_of(first)
    assert first.locator(".passage-range").inner_text() == "0:02–0:12"
    assert 1 <= first.locator(".card").count() <= 2 and shown

    # A cited timestamp plays exactly from the cited start.
    card = first.locator(".card").first
    start = float(card.get_attribute("data-start"))
    card.locator("audio").evaluate(
        "a => { window.__seeked = false; a.addEventListener('seeked', () => { window.__seeked = true; }, {once: true}); }"
    )
    card.locator(".cite-time").click()
    wait_until(page, "window.__seeked === true")
    current = card.locator("audio").evaluate("a => a.currentTime")
    assert abs(current - start) <= 0.3, (current, start)

    # A follow-up refines the last search: no composer from the first answer comes back.
    page.fill("#message", "more like this but a different composer")
    page.click("#send")
    second = page.locator("section.answer").nth(1)
    second.locator(".explanation-text").first.wait_for()
    assert second.locator(".card").count() >= 1
    assert not composers_of(second) & shown
    assert page.input_value("#message") == ""

    # The conversation survives a reload.
    url = page.url
    page.reload()
    assert page.url == url
    assert page.locator(".msg.user").count() == 2
    assert page.locator("section.answer").count() == 2
    assert "different composer" in page.locator(".msg.user").nth(1).inner_text()
    assert composers_of(page.locator("section.answer").nth(0)) == shown


def test_track_page_plays_a_moment(page, base_url):
    page.goto(base_url + "/library")
    page.locator("table.library a").first.click()
    page.wait_for_selector(".timeline-wrap svg")
    button = page.locator(".moments .play-range").nth(2)
    start = float(button.get_attribute("data-start"))
    page.locator("#track-audio").evaluate(
        "a => { window.__seeked = false; a.addEventListener('seeked', () => { window.__seeked = true; }, {once: true}); }"
    )
    button.click()
    wait_until(page, "window.__seeked === true")
    assert abs(page.locator("#track-audio").evaluate("a => a.currentTime") - start) <= 0.3


def test_record_from_the_microphone_and_search(page, base_url):
    page.goto(base_url + "/")
    page.click("#record")
    wait_until(page, "document.getElementById('record').textContent.includes('Stop')")
    page.wait_for_timeout(4500)  # record a little more than the 3-s minimum
    page.click("#record")
    wait_until(page, "document.getElementById('clip-file').files.length === 1")
    assert "recording" in page.locator("#clip-name").inner_text()
    page.click("#send")
    answer = page.locator("section.answer").first
    answer.locator(".explanation-text").first.wait_for()
    assert page.locator(".msg.user").first.inner_text().startswith("♪ recording")
    assert page.locator(".error").count() == 0


def test_drop_a_file_on_the_composer(page, base_url):
    import base64

    page.goto(base_url + "/")
    data = base64.b64encode(clip_of_track(3, start=0.0, seconds=6.0)).decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.wav", {type: "audio/wav"}));
            const zone = document.getElementById("drop-zone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    page.wait_for_selector("#passage:not([hidden])")
    assert page.evaluate("document.getElementById('clip-file').files[0].name") == "dropped.wav"
    assert "dropped.wav" in page.locator("#clip-name").inner_text()


# --- the listening page (issue 17) -----------------------------------------------------------------


def artifacts_dir():
    """Screenshots land here (gitignored) for a person to look at."""
    from cadenza.settings import PROJECT_ROOT

    folder = PROJECT_ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder


def console_errors(pg) -> list[str]:
    """Every console error and page error from now on (not only CSP ones)."""
    seen: list[str] = []
    pg.on("console", lambda msg: seen.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: seen.append(str(exc)))
    return seen


def horizontal_overflow(pg) -> int:
    return int(pg.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def ask_with_a_clip(pg, base_url, tmp_path, *, track: int = 0, k: str = "3"):
    clip = tmp_path / "query.wav"
    clip.write_bytes(clip_of_track(track, start=4.0, seconds=12.0))
    pg.goto(base_url + "/")
    pg.select_option("#k", k)
    pg.set_input_files("#clip-file", str(clip))
    pg.click("#send")
    answer = pg.locator("section.answer").last
    answer.locator(".card").first.wait_for()
    answer.locator(".explanation-text").first.wait_for()
    return answer


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)])
def test_an_answer_reads_well_at_desktop_and_phone_width(page, base_url, tmp_path, width, height):
    errors = console_errors(page)
    page.set_viewport_size({"width": width, "height": height})
    page.goto(base_url + "/")
    assert horizontal_overflow(page) <= 0
    page.screenshot(path=str(artifacts_dir() / f"empty-{width}.png"))
    answer = ask_with_a_clip(page, base_url, tmp_path)
    # The new answer scrolled into view and took focus.
    wait_until(page, "document.activeElement && document.activeElement.matches('section.answer')")
    assert answer.evaluate("a => a.getBoundingClientRect().top < window.innerHeight")
    card = answer.locator(".card").first
    # Plain language first: title, composer, time range, likeness and match, one sentence of why.
    assert card.locator(".title").inner_text() and card.locator(".composer").inner_text()
    assert re.fullmatch(r"likeness \d+%", card.locator(".likeness").inner_text())
    assert re.fullmatch(r"match \d+%", card.locator(".match").inner_text())
    assert card.locator(".why").inner_text().endswith(".")
    # The per-aspect numbers wait behind "Details".
    assert not card.locator(".details dl").is_visible()
    card.locator(".details summary").click()
    assert card.locator(".details dl").is_visible()
    # One aligned chroma overlay with named pitch rows.
    assert card.locator("svg.chroma-overlay text.pitch").count() == 12
    assert horizontal_overflow(page) <= 0
    page.screenshot(path=str(artifacts_dir() / f"answer-{width}.png"), full_page=True)
    page.goto(base_url + "/library")
    assert horizontal_overflow(page) <= 0
    page.screenshot(path=str(artifacts_dir() / f"library-{width}.png"))
    assert errors == [], errors


def test_play_ab_switches_between_query_and_match_at_the_same_relative_position(page, base_url, tmp_path):
    errors = console_errors(page)
    page.set_viewport_size({"width": 1280, "height": 900})
    answer = ask_with_a_clip(page, base_url, tmp_path, track=1)
    card = answer.locator(".card").first
    card.locator("details.ab summary").click()
    panel = card.locator(".ab-panel")
    panel.wait_for()
    assert panel.locator("svg").count() == 2
    a_start, b_start = float(panel.get_attribute("data-a-start")), float(panel.get_attribute("data-b-start"))
    panel.locator(".ab-toggle").click()  # A: the kept clip from its passage
    wait_until(
        page,
        "(() => { const a = document.querySelector('.ab-panel .ab-audio-a');"
        f" return !a.paused && a.currentTime > {a_start} + 1.0; }})()",
    )
    panel.locator(".ab-toggle").click()  # B: the match, as far in as A was
    wait_until(
        page, "(() => { const b = document.querySelector('.ab-panel .ab-audio-b'); return !b.paused; })()"
    )
    a_pos = panel.locator(".ab-audio-a").evaluate("a => a.currentTime")
    b_pos = panel.locator(".ab-audio-b").evaluate("b => b.currentTime")
    assert panel.locator(".ab-audio-a").evaluate("a => a.paused")
    assert abs((b_pos - b_start) - (a_pos - a_start)) < 0.6, (a_pos, a_start, b_pos, b_start)
    assert "B" in panel.locator(".ab-toggle").inner_text() or "A" in panel.locator(".ab-toggle").inner_text()
    assert panel.locator(".ab-toggle").get_attribute("aria-pressed") == "true"
    page.screenshot(path=str(artifacts_dir() / "ab-1280.png"))
    panel.locator(".ab-toggle").click()  # and back to A
    wait_until(
        page, "(() => { const a = document.querySelector('.ab-panel .ab-audio-a'); return !a.paused; })()"
    )
    panel.locator(".ab-stop").click()
    assert panel.locator(".ab-toggle").get_attribute("aria-pressed") == "false"
    assert errors == [], errors


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)])
def test_open_the_moment_map_and_play_a_path(page, base_url, tmp_path, width, height):
    errors = console_errors(page)
    page.set_viewport_size({"width": width, "height": height})
    answer = ask_with_a_clip(page, base_url, tmp_path, track=2)
    # The moment map: a strip per track, a click plays that track from the clicked point.
    answer.locator("details.map summary").click()
    answer.locator(".moment-map .map-row").first.wait_for()
    rows = answer.locator(".map-row")
    assert rows.count() == answer.locator(".card").count() + 1  # the clip itself first, then each result
    assert "recurs" in rows.first.inner_text()
    strip = rows.first.locator(".map-strip svg")
    box = strip.bounding_box()
    strip.click(position={"x": box["width"] * 0.5, "y": box["height"] / 2})
    wait_until(page, "[...document.querySelectorAll('.map-audio')].some(a => !a.paused && a.currentTime > 0)")
    duration = float(strip.get_attribute("data-duration"))
    at = rows.first.locator("audio").evaluate("a => a.currentTime")
    assert abs(at - duration * 0.5) < 2.0, (at, duration)
    assert horizontal_overflow(page) <= 0
    page.screenshot(path=str(artifacts_dir() / f"map-{width}.png"))
    # A path from the chat: a queue that plays step after step.
    page.fill("#message", "a path from #1 to #3 in 4 steps")
    page.click("#send")
    note = page.locator(".msg.path").last
    note.locator(".path-step").first.wait_for()
    assert note.locator(".path-step").count() == 4
    wait_until(page, "document.activeElement && document.activeElement.matches('.msg.path')")
    note.locator(".path-play").click()
    wait_until(
        page,
        "(() => { const a = document.querySelector('.msg.path .path-step.playing audio'); return a && !a.paused; })()",
    )
    assert "Step 1 of 4" in note.locator(".path-now").inner_text()
    assert horizontal_overflow(page) <= 0
    page.screenshot(path=str(artifacts_dir() / f"path-{width}.png"))
    assert errors == [], errors
