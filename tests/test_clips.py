"""Kept query clips: compressed with the shipped ffmpeg, capped, served by id, deleted with the conversation."""

from __future__ import annotations

import numpy as np
import pytest

from assistant import clips, conversations
from cadenza.compress import encode_mp3

SR = 16_000


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize(
    "n_s,start,end,expect",
    [
        (20.0, 5.0, 15.0, (0.0, 20.0)),  # short clips are kept whole
        (300.0, 100.0, 110.0, (75.0, 135.0)),  # a long one: a minute centred on the passage
        (300.0, 0.0, 10.0, (0.0, 60.0)),  # ...but never before its start
        (300.0, 290.0, 300.0, (240.0, 300.0)),  # ...or past its end
    ],
)
def test_the_kept_window_holds_the_passage_and_at_most_a_minute(n_s, start, end, expect):
    a, b = clips.keep_window(n_samples=int(n_s * SR), sr=SR, start_s=start, end_s=end)
    assert (a / SR, b / SR) == expect
    assert a / SR <= start and b / SR >= end


def test_mp3_from_the_shipped_ffmpeg_is_small():
    data = encode_mp3(audio=tone(60.0), sr=SR)
    assert data[:3] == b"ID3" or data[0] == 0xFF
    assert 300_000 < len(data) <= clips.MAX_KEPT_BYTES  # 48 kbit/s for a minute


def test_a_kept_clip_goes_with_its_conversation(db):
    cid = conversations.create(db)
    kept = clips.keep(db, conversation_id=cid, audio=tone(200.0), sr=SR, start_s=50.0, end_s=60.0)
    assert kept is not None and kept.duration_s == pytest.approx(clips.KEEP_S)
    assert (kept.passage_start, kept.passage_end) == pytest.approx((25.0, 35.0))
    data, media = clips.audio_bytes(db, kept.id)
    assert media == "audio/mpeg" and 0 < len(data) <= clips.MAX_KEPT_BYTES
    assert clips.info(db, kept.id).peaks and len(clips.info(db, kept.id).peaks) == clips.PEAK_BINS
    conversations.delete(db, cid)
    assert clips.info(db, kept.id) is None
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM query_clips").fetchone()[0] == 0
