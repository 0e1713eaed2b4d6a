"""Search against the real database: localization, filters that keep k, nothing-similar, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cadenza.db import autocommit
from cadenza.errors import InputError
from cadenza.synth_audio import SR, noise, random_chord_track, write_audio
from encoder.embed import Embedder
from retrieval.filters import filter_sql
from retrieval.ingest import ingest
from retrieval.nearest import nearest
from retrieval.search import search
from retrieval.store import list_tracks
from retrieval.track_scan import NearestQuery
from retrieval.types import Aspects, Filters, MomentRef, SearchRequest, Weights
from tests.helpers_app import assert_typed_answer_keeps_all
from tests.helpers_db import truncate_all

COMPOSERS = ["Bach", "Mozart", "Brahms", "Ravel", "Byrd", "Glass"]


@pytest.fixture(scope="module")
def embedder():
    # The shipped checkpoint: the CLI test below runs `cadenza search` in a subprocess, which
    # loads the same one, and search only compares segments of the query's model version.
    return Embedder.load()


@pytest.fixture(scope="module")
def audio_tracks(tmp_path_factory):
    lib = tmp_path_factory.mktemp("searchlib")
    tracks = {}
    rows = ["path,title,composer,year"]
    for i, comp in enumerate(COMPOSERS):
        y = random_chord_track(seconds=24, seed=10 + i, key=(i * 5) % 12)
        write_audio(lib / f"{comp}.flac", y)
        tracks[comp] = y
        rows.append(f"{comp}.flac,Piece {i},{comp},{1600 + 60 * i}")
    (lib / "meta.csv").write_text("\n".join(rows) + "\n")
    return lib, tracks


@pytest.fixture(scope="module")
def lib_db(session_db):
    """One ingested library for the audio tests of this module (ingest once; emptied afterwards)."""
    truncate_all(session_db)
    yield session_db
    truncate_all(session_db)


@pytest.fixture(scope="module")
def audio_lib(lib_db, embedder, audio_tracks):
    lib, tracks = audio_tracks
    ingest(
        db=lib_db, paths=[lib], embedder=embedder, metadata_file=lib / "meta.csv", workers=1, progress=False
    )
    with lib_db.connection() as conn:
        ids = {t.composer: t.id for t in list_tracks(conn)}
    return ids, tracks


def test_clip_search_localizes_within_half_a_second(lib_db, embedder, audio_lib):
    ids, tracks = audio_lib
    truth = 13.3
    clip = tracks["Mozart"][int(truth * SR) : int((truth + 10) * SR)]
    resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, start_s=0.0, k=3))
    assert not resp.nothing_similar
    top = resp.results[0]
    assert top.track_id == ids["Mozart"]
    assert abs(top.start - truth) <= 0.5, (top.start, top.components)
    assert top.match > 0.5 and top.components["harmony"] > 0.9
    assert len({r.track_id for r in resp.results}) == len(resp.results) == 3
    for stage in ("features", "embed", "search", "rerank", "passage", "graph", "localize", "total"):
        assert stage in resp.timings_ms


def test_a_short_clip_lines_up_with_its_passage(lib_db, embedder, audio_lib):
    """A 3.5-s clip off the 2-s grid: the same-passage check (retrieval.passage) finds where it lines up."""
    ids, tracks = audio_lib
    truth = 9.7
    clip = tracks["Brahms"][int(truth * SR) : int((truth + 3.5) * SR)]
    resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, k=4))
    top = resp.results[0]
    assert top.track_id == ids["Brahms"] and abs(top.start - truth) <= 0.3, (top.start, top.components)
    assert top.components["passage"] > 0.9
    # Other music lines up less well (a few triads of a shared key can, for 3.5 s, and get a smaller lift).
    others = [r.components.get("passage", 0.0) for r in resp.results[1:]]
    assert max(others) < top.components["passage"] - 0.15, others


def test_most_representative_window_and_moment_query(lib_db, embedder, audio_lib):
    ids, tracks = audio_lib
    resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=tracks["Ravel"][: 25 * SR], k=2))
    q = resp.query
    assert 0 <= q["start"] <= 15 and abs(q["end"] - q["start"] - 10) < 0.2
    moment = search(
        db=lib_db, embedder=embedder, request=SearchRequest(moments=(MomentRef(ids["Ravel"], 6.0),), k=3)
    )
    assert moment.query["source"] == "moment"
    assert ids["Ravel"] not in {r.track_id for r in moment.results}  # the query's own track is excluded
    assert len(moment.results) == 3
    assert_typed_answer_keeps_all(resp)
    assert_typed_answer_keeps_all(moment)


def test_blend_and_discovery(lib_db, embedder, audio_lib):
    ids, tracks = audio_lib
    with lib_db.connection() as conn:
        conn.execute("INSERT INTO plays (listener_id, track_id) VALUES ('ann', %s), ('ann', %s)",
                     (ids["Bach"], ids["Brahms"]))  # fmt: skip
        conn.commit()
    req = SearchRequest(
        audio=tracks["Glass"][2 * SR : 12 * SR], start_s=0.0, moments=(MomentRef(ids["Byrd"], 4.0),),
        minus=(MomentRef(ids["Ravel"], 4.0),), k=4, listener_id="ann", weights=Weights(discovery=1.0),
    )  # fmt: skip
    resp = search(db=lib_db, embedder=embedder, request=req)
    assert resp.query["source"] == "blend"
    got = {r.composer for r in resp.results}
    assert "Byrd" not in got and len(resp.results) == 4
    unheard = [r.composer not in ("Bach", "Brahms") for r in resp.results]
    assert resp.query["discovery_rate"] == pytest.approx(sum(unheard) / len(unheard))
    assert all("discovery" in r.components for r in resp.results)
    # Discovery weight: the unheard composers come first.
    assert unheard[0]


def test_a_transposed_clip_is_found_through_a_key_probe(lib_db, embedder, audio_lib):
    ids, _ = audio_lib
    # Mozart's track (seed 11, key F) played a semitone higher: same chords and rhythm, key F#.
    up = random_chord_track(seconds=24, seed=11, key=6)
    clip = up[int(8.0 * SR) : int(18.0 * SR)]
    resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, start_s=0.0, k=3))
    top = resp.results[0]
    assert top.track_id == ids["Mozart"]
    # the probe that moved the query a semitone down matched, and the card says so
    assert top.components.get("query_transposed") == -1.0, top.components
    assert "moved a semitone down" in top.reason
    assert abs(top.start - 8.0) <= 0.5
    own_key = search(
        db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, start_s=0.0, k=3, transpose_probes=())
    )
    assert all("query_transposed" not in r.components for r in own_key.results)
    assert resp.query["key_probes"] == [0, -1, 1] and own_key.query["key_probes"] == [0]


def test_key_probes_merge_keeps_the_best_distance_per_segment():
    from retrieval.nearest import TRANSPOSED_PENALTY, NearestResult, merge_probe
    from retrieval.segment_rows import SegmentRow

    def row(sid, dist):
        return SegmentRow(sid, 1, 0.0, 10.0, *[None] * 21, dist)

    found = NearestResult([row(1, 0.10), row(2, 0.30)], "hnsw")
    probe = NearestResult([row(2, 0.05), row(3, 0.20), row(1, 0.095)], "exact")
    probe_of: dict[int, int] = {}
    merged = merge_probe(found, probe, 1, probe_of)
    assert merged.path == "hnsw"
    dists = {r[0]: r[-1] for r in merged.rows}
    assert dists[1] == 0.10  # 0.095 + penalty loses to the query's own key
    assert dists[2] == pytest.approx(0.05 + TRANSPOSED_PENALTY) and dists[3] == pytest.approx(
        0.20 + TRANSPOSED_PENALTY
    )
    assert probe_of == {2: 1, 3: 1}
    assert [r[0] for r in merged.rows] == [2, 1, 3]  # sorted by distance


def test_transposed_embeddings_are_the_pitch_shifted_window_embedded(embedder):
    from encoder.feataug import pitch_shift
    from encoder.features import acoustic_features
    from retrieval.clip_query import transposed_embeddings

    frames = acoustic_features(y=random_chord_track(seconds=10, seed=4), sr=SR)
    probes = transposed_embeddings(embedder=embedder, window=frames, semitones=(0, -1, 1, 1))
    assert [s for s, _ in probes] == [-1, 1]
    for s, e in probes:
        want = embedder.embed_windows(windows=pitch_shift(frames=frames, semitones=float(s))[None])[0]
        assert np.allclose(e, want / np.linalg.norm(want), atol=1e-5)
    assert transposed_embeddings(embedder=embedder, window=frames, semitones=()) == ()
    with pytest.raises(InputError, match="within"):
        transposed_embeddings(embedder=embedder, window=frames, semitones=(5,))


@pytest.mark.parametrize("kind", ["noise", "silence"])
def test_noise_and_silence_are_nothing_similar(lib_db, embedder, audio_lib, kind):
    clip = noise(seconds=10, seed=3) if kind == "noise" else np.zeros(10 * SR, np.float32)
    resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, k=5))
    assert resp.nothing_similar
    assert all(r.match < 0.5 for r in resp.results)


def test_cli_search_json(lib_db, settings, audio_lib, tmp_path):
    ids, tracks = audio_lib
    clip = write_audio(tmp_path / "q.wav", tracks["Byrd"][5 * SR : 17 * SR])
    env = {**os.environ, "CADENZA_HOME": str(settings.paths.home), "CADENZA_DATABASE_URL": lib_db.url}
    out = subprocess.run(
        [sys.executable, "-m", "cadenza", "-q", "search", str(clip), "--k", "3", "--json", "--exclude-composer", "bach"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert {"query", "results", "nothing_similar", "timings_ms"} <= set(data)
    assert len(data["results"]) == 3 and all(r["composer"] != "Bach" for r in data["results"])
    assert "decode" in data["timings_ms"]
    # Mozart's track a semitone up: found through a key probe, unless --same-key
    up = write_audio(tmp_path / "up.wav", random_chord_track(seconds=24, seed=11, key=6)[8 * SR : 18 * SR])
    moved = {}
    for extra in ([], ["--same-key"]):
        out = subprocess.run(
            [sys.executable, "-m", "cadenza", "-q", "search", str(up), "--k", "3", "--json", *extra],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        moved[bool(extra)] = [
            r["components"].get("query_transposed") for r in json.loads(out.stdout)["results"]
        ]
    assert moved[False][0] == -1.0 and moved[True] == [None, None, None]


# The tests below empty the database (the `db` fixture): keep them after the audio-library tests.


def _clustered_library(db, *, n_composers=12, tracks_per=6, segs_per=40, dim=128, seed=0):
    """Vectors clustered by composer, inserted directly (no audio): the HNSW filter trap's worst case."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_composers, dim)).astype(np.float32) * 3
    truth = []
    with db.connection() as conn:
        for c in range(n_composers):
            for t in range(tracks_per):
                tid = conn.execute(
                    "INSERT INTO tracks (content_hash, path, title, composer, duration_s, era)"
                    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (f"h{c}-{t}", f"/x/{c}/{t}", f"T{t}", f"C{c}", segs_per * 2 + 8, "Baroque"),
                ).fetchone()[0]
                vecs = centers[c] + rng.standard_normal((segs_per, dim)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                with conn.cursor().copy(
                    "COPY segments (track_id, start_s, end_s, embedding, model_version, chroma_mean)"
                    " FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["int8", "float4", "float4", "vector", "text", "float4[]"])
                    for i, v in enumerate(vecs):
                        copy.write_row((tid, 2.0 * i, 2.0 * i + 10, v, "m", [1 / 12] * 12))
                        truth.append((tid, f"c{c}", v))
        conn.commit()
    return centers, truth


def test_candidates_come_by_sound_too_and_the_sound_weight_acts_on_them(lib_db, embedder, audio_lib):
    """The timbre index is a second candidate source; with the sound aspect at 0 it is not asked."""
    ids, tracks = audio_lib
    clip = tracks["Brahms"][5 * SR : 15 * SR]
    resp = search(
        db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, start_s=0.0, k=3, diversity=0.0)
    )
    assert resp.query["timbre_candidates"] == len(COMPOSERS)  # every track's best window by sound
    top = resp.results[0]
    assert top.track_id == ids["Brahms"] and top.components["timbre"] > 0.95
    # The walk over the pool's track graph (retrieval.track_graph) starts at the top track: its own term.
    assert top.components["timbre_graph"] == 1.0
    muted = search(
        db=lib_db, embedder=embedder,
        request=SearchRequest(audio=clip, start_s=0.0, k=3, aspects=Aspects(sound=0.0)),
    )  # fmt: skip
    assert muted.query["timbre_candidates"] == 0
    assert all("timbre_graph" not in r.components for r in muted.results)


def test_a_phone_clip_the_embedding_misses_is_found_by_harmony(lib_db, embedder, audio_lib, monkeypatch):
    """The harmony index is a second candidate source (sql/009): when the embedding's candidates lack
    the clip's own recording (as under a phone line), the track comes by its chords, is checked for the
    passage (in its phone-band chroma) and is first at the right time. Without the source it is not found."""
    from encoder.augment import phone_band
    from retrieval import search as search_mod

    ids, tracks = audio_lib
    own = ids["Mozart"]
    clip = phone_band(y=tracks["Mozart"][int(7.3 * SR) : int(17.3 * SR)])

    def without_own(route):  # the embedding's routes, minus the clip's own track
        def call(*a, **kw):
            found = route(*a, **kw)
            return type(found)([r for r in found.rows if int(r.track_id) != own], found.path)

        return call

    monkeypatch.setattr(search_mod, "nearest", without_own(search_mod.nearest))
    monkeypatch.setattr(search_mod, "probe_nearest", without_own(search_mod.probe_nearest))
    request = SearchRequest(
        audio=clip, start_s=0.0, k=3, aspects=Aspects(sound=0.0)
    )  # no timbre source either
    resp = search(db=lib_db, embedder=embedder, request=request)
    assert resp.query["harmony_candidates"] > 0 and resp.query["timbre_candidates"] == 0
    assert resp.query["band_limited"]  # no bass left: the phone band's chroma is aligned too
    top = resp.results[0]
    assert top.track_id == own and abs(top.start - 7.3) <= 0.5 and top.components["passage"] > 0.9
    monkeypatch.setattr(search_mod, "HARMONY_TRACKS", 0)
    monkeypatch.setattr(search_mod, "HARMONY_TRACKS_BAND_LIMITED", 0)  # the phone clip's own reach
    assert own not in {r.track_id for r in search(db=lib_db, embedder=embedder, request=request).results}
    full = SearchRequest(audio=tracks["Mozart"][int(7.3 * SR) : int(17.3 * SR)], start_s=0.0, k=3)
    assert not search(db=lib_db, embedder=embedder, request=full).query["band_limited"]


def test_a_clip_that_lost_its_bass_is_checked_over_more_tracks(lib_db, embedder, audio_lib, monkeypatch):
    """The same-passage check and the harmony source reach further for a band-limited clip (its embedding
    ranks its own track lower): PASSAGE_TRACKS_BAND_LIMITED / HARMONY_TRACKS_BAND_LIMITED, else the usual."""
    from encoder.augment import phone_band
    from retrieval import passage
    from retrieval import search as search_mod

    ids, tracks = audio_lib
    seen: list[tuple[int, int]] = []
    real_check, real_harmony = passage.check_passages, search_mod.harmony_nearest
    monkeypatch.setattr(
        passage, "check_passages", lambda **kw: seen.append(("n", kw["n_tracks"])) or real_check(**kw)
    )
    monkeypatch.setattr(
        search_mod,
        "harmony_nearest",
        lambda *a, **kw: seen.append(("h", kw["n_tracks"])) or real_harmony(*a, **kw),
    )
    clip = tracks["Mozart"][int(7.3 * SR) : int(17.3 * SR)]
    for y, n, h in (
        (phone_band(y=clip), passage.PASSAGE_TRACKS_BAND_LIMITED, search_mod.HARMONY_TRACKS_BAND_LIMITED),
        (clip, passage.PASSAGE_TRACKS, search_mod.HARMONY_TRACKS),
    ):
        seen.clear()
        resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=y, start_s=0.0, k=3))
        assert sorted(seen) == [("h", h), ("n", n)]
        assert resp.results[0].track_id == ids["Mozart"]
    assert passage.PASSAGE_TRACKS_BAND_LIMITED > passage.PASSAGE_TRACKS
    assert search_mod.HARMONY_TRACKS_BAND_LIMITED > search_mod.HARMONY_TRACKS


def test_a_noise_like_recording_in_the_library_is_re_found_and_other_noise_is_not(
    lib_db, embedder, audio_lib, tmp_path
):
    """A clip below MIN_TONALNESS (rain, a loud distorted mix) is searched, and answered only when its own
    passage is found: a clip of a noise-like library recording comes back at the right time; noise that
    is in no recording is still nothing. Without the search behind the gate both come back empty."""
    from encoder.features import acoustic_features
    from retrieval.clip_query import MIN_TONALNESS, NOISE_LIKE_REASON
    from retrieval.descriptors import tonalness
    from retrieval.store import remove_track

    rain = noise(seconds=24, seed=50)
    write_audio(tmp_path / "rain.flac", rain)
    ingest(db=lib_db, paths=[tmp_path], embedder=embedder, workers=1, progress=False)
    with lib_db.connection() as conn:
        rain_id = next(t.id for t in list_tracks(conn) if t.path.endswith("rain.flac"))
    try:
        truth = 7.3
        clip = rain[int(truth * SR) : int((truth + 10) * SR)]
        assert tonalness(frames=acoustic_features(y=clip)) < MIN_TONALNESS
        resp = search(db=lib_db, embedder=embedder, request=SearchRequest(audio=clip, k=3))
        assert not resp.nothing_similar and "nothing_reason" not in resp.query
        top = resp.results[0]
        assert top.track_id == rain_id and abs(top.start - truth) <= 0.5
        other = search(
            db=lib_db, embedder=embedder, request=SearchRequest(audio=noise(seconds=10, seed=3), k=3)
        )
        r0 = other.results[0] if other.results else None
        assert other.nothing_similar and other.results == [], (r0.match, r0.components.get("passage"))
        assert other.query["nothing_reason"] == NOISE_LIKE_REASON
    finally:
        with autocommit(lib_db) as conn:
            remove_track(conn, rain_id)


def test_filters_keep_k_and_match_exact_scan(db):
    centers, truth = _clustered_library(db)
    q = centers[0] / np.linalg.norm(centers[0])
    k = 10
    where, params = filter_sql(Filters(exclude_composers=("C0",)), model_version="m")
    with autocommit(db) as conn:
        found = nearest(conn, NearestQuery(q, where, params, 100, k), restrictive=True, iterative=False)
    tracks_seen = []
    for r in found.rows:
        if r[1] not in tracks_seen:
            tracks_seen.append(r[1])
    assert len(tracks_seen) >= k and all(r[5] != "C0" for r in found.rows)
    # Exact answer in numpy: best segment per track, tracks by their best similarity.
    best: dict[int, float] = {}
    for tid, comp, v in truth:
        if comp != "c0":
            best[tid] = max(best.get(tid, -2.0), float(v @ q))
    exact_top = sorted(best, key=lambda t: -best[t])[:k]
    assert tracks_seen[:k] == exact_top
    # Only 6 tracks match: every one of them comes back, via the exact scan.
    where, params = filter_sql(Filters(composers=("c7",)), model_version="m")
    with autocommit(db) as conn:
        few = nearest(conn, NearestQuery(q, where, params, 100, k), restrictive=True, iterative=False)
    assert few.path == "exact" and len({r[1] for r in few.rows}) == 6 and {r[5] for r in few.rows} == {"C7"}


def test_own_passage_is_judged_by_the_line_up_in_the_clips_own_key_never_by_match():
    """same_passage_found: a line-up >= OWN_PASSAGE_ALIGNMENT counts; with ``own_key`` (the route decision) not
    when a transposition probe found the result (a hum in another key); the calibrated match never counts
    (hums and noises reach match 1.0 against the wrong music)."""
    from types import SimpleNamespace

    from retrieval.search import OWN_PASSAGE_ALIGNMENT, same_passage_found
    from retrieval.types import SearchResponse

    def answer(**components):
        top = SimpleNamespace(components=components, match=1.0)
        return SearchResponse(query={}, results=[top], nothing_similar=False, timings_ms={})  # type: ignore[list-item]

    lined_up = answer(passage=OWN_PASSAGE_ALIGNMENT + 0.01)
    assert same_passage_found(lined_up) and same_passage_found(lined_up, own_key=True)
    probed = answer(passage=0.99, query_transposed=3.0)
    assert same_passage_found(probed) and not same_passage_found(probed, own_key=True)
    assert not same_passage_found(answer(passage=OWN_PASSAGE_ALIGNMENT - 0.01))  # match 1.0 alone: no
    assert not same_passage_found(SearchResponse(query={}, results=[], nothing_similar=True, timings_ms={}))
