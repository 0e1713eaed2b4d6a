"""Chips above each answer: its query state, each part removable in place (htmx), in a real browser
(Playwright + Debian chromium) against the app on real PostgreSQL with a small ingested library."""

from __future__ import annotations

import pytest

from tests.helpers_app import attach_clip, clip_of_track

pytestmark = pytest.mark.browser

# Any console error fails a test here, not only a Content-Security-Policy violation.
ALL_CONSOLE_ERRORS = True


def test_a_chip_is_removed_in_place(page, base_url, tmp_path):
    clip = tmp_path / "query.wav"
    clip.write_bytes(clip_of_track(0, start=4.0, seconds=12.0))
    attach_clip(page, base_url + "/", clip, k="3")
    page.click("#send")
    first = page.locator("section.answer").nth(0)
    first.locator(".card").first.wait_for()
    assert first.locator(".state .chip.seed").count() == 1  # "+ your clip"
    assert first.locator(".state a.start-over").count() == 1

    page.fill("#message", "only Baroque")
    page.click("#send")
    second = page.locator("section.answer").nth(1)
    second.locator(".card").first.wait_for()
    answer_id = second.get_attribute("id")
    chip = second.locator('.chip:has(.chip-label[data-chip="era:Baroque"])')
    assert chip.inner_text().startswith("only Baroque")
    # Two Baroque tracks for k=3: the answer says why it is short.
    assert second.locator(".card").count() == 2
    assert "only 2 tracks match" in second.locator(".filter-reason").inner_text()

    chip.locator(".chip-remove").click()
    page.wait_for_function(
        f"() => !document.querySelector('#{answer_id} .chip-label[data-chip=\"era:Baroque\"]')"
    )
    again = page.locator(f"#{answer_id}")
    again.locator(".card").first.wait_for()
    assert page.locator("section.answer").count() == 2  # in place: no new answer
    assert again.locator(".card").count() == 3 and again.locator(".filter-reason").count() == 0
    composers = {c.get_attribute("data-composer") for c in again.locator(".card").all()}
    assert composers - {"Johann Sebastian Bach"}, composers  # the only Baroque composer is no longer all
    # The change is stored: a reload shows the answer without the chip.
    page.reload()
    assert page.locator(f'#{answer_id} .chip-label[data-chip="era:Baroque"]').count() == 0
