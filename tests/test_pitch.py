"""The query pitch tracker: PESTO from its wheel, loaded without torchaudio."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cadenza.synth_audio import sing
from encoder.pitch import track_pitch


def test_pesto_tracks_a_sung_line_without_importing_torchaudio():
    y = sing(notes=[(0.0, 1.0, 60), (1.0, 2.0, 64), (2.0, 3.0, 67)], transpose=0.3)
    track = track_pitch(y=y)
    assert "torchaudio" not in sys.modules
    assert track.midi.shape == (1 + y.size // 1600,)
    for second, want in ((0, 60.3), (1, 64.3), (2, 67.3)):
        mid = track.midi[second * 10 + 3 : second * 10 + 8]
        assert np.nanmedian(mid) == pytest.approx(want, abs=0.35)
    assert np.isnan(track.midi[-1]) or track.confidence[-1] < 0.9  # the silent tail
