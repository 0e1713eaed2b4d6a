"""Ingest on two lanes (this process + a spawned worker) stores what one lane stores."""

from __future__ import annotations

import numpy as np
import torch

from encoder.embed import Embedder
from retrieval.ingest import EmbedderSpec, ingest
from tests.helpers_audio import random_chord_track, write_audio
from tests.helpers_db import truncate_all


def stored(db) -> dict[tuple[str, float], tuple]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT t.path, s.start_s, s.embedding, s.key_index, s.mode, s.tempo_bpm, s.loudness_db, s.chroma_seq"
            " FROM segments s JOIN tracks t ON t.id = s.track_id"
        ).fetchall()
    return {(r[0], round(float(r[1]), 2)): (r[2].to_numpy(), *r[3:7], bytes(r[7])) for r in rows}


def test_two_lanes_store_the_same_segments_as_one(db, tmp_path):
    lib = tmp_path / "lib"
    for i, secs in enumerate((31, 9, 22, 14, 18)):
        write_audio(lib / f"t{i}.flac", random_chord_track(seconds=secs, seed=60 + i, key=(5 * i) % 12))
    emb = Embedder.untrained(seed=0)
    one = ingest(db=db, paths=[lib], embedder=emb, workers=1, progress=False, calibrate_after=False)
    want = stored(db)
    truncate_all(db)
    torch.set_num_threads(2)
    two = ingest(
        db=db,
        paths=[lib],
        embedder=emb,
        spec=EmbedderSpec(untrained_seed=0),
        workers=2,
        progress=False,
        calibrate_after=False,
    )
    assert torch.get_num_threads() == 2  # the caller's setting is given back
    got = stored(db)
    assert len(two.added) == len(one.added) == 5 and not two.failed
    assert two.segments == one.segments == len(want) and set(got) == set(want)
    for key, (e, *rest) in want.items():
        g, *grest = got[key]
        assert np.abs(g - e).max() < 1e-5, key
        assert grest == rest, key
