"""The demo library builder, on a tiny plan: renders, writes OGG + metadata, ingests, and is idempotent."""

from __future__ import annotations

import csv

from cadenza.audio import load_audio
from encoder.embed import Embedder
from retrieval.demo import PLAN, ComposerPlan, DemoBuild, build_demo
from retrieval.store import list_tracks

TINY = (
    ComposerPlan("bach", "Johann Sebastian Bach", "Baroque", 1730, (19,), 0.2),
    ComposerPlan("trecento", "Francesco Landini & the Trecento", "Medieval", 1370, (74,), 0.2),
    ComposerPlan("palestrina", "Giovanni Pierluigi da Palestrina", "Renaissance", 1570, (52,), 0.2),
)


def test_full_plan_is_broad():
    assert len({p.name for p in PLAN}) >= 8 and len({p.era for p in PLAN}) >= 5
    assert len({prog for p in PLAN for prog in p.programs}) >= 5
    assert 80 <= sum(p.minutes for p in PLAN) <= 150  # 1.3–2.5 h of audio


def test_tiny_demo_builds_ingests_and_is_idempotent(db, settings):
    emb = Embedder.untrained(seed=0)
    build = DemoBuild(plan=TINY, max_seconds_per_work=12.0, works_per_composer=1, workers=1, progress=False)
    kw = dict(settings=settings, db=db, build=build, embedder=emb)
    first = build_demo(**kw)
    assert first["files"] == 3 and first["ingest"]["added"] == 3
    demo = settings.paths.demo
    with open(demo / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["era"] for r in rows} == {"Baroque", "Medieval", "Renaissance"}
    oggs = sorted((demo / "audio").rglob("*.ogg"))
    assert len(oggs) == 3
    for p in oggs:
        y = load_audio(path=p)
        assert 6.0 <= y.size / 16_000 <= 12.5 and abs(y).max() > 0.05
    mtimes = [p.stat().st_mtime_ns for p in oggs]
    with db.connection() as conn:
        tracks = list_tracks(conn)
    assert {t.composer for t in tracks} == {p.name for p in TINY}
    assert all(t.n_segments >= 1 and t.era for t in tracks)

    second = build_demo(**kw)
    assert second["ingest"]["added"] == 0 and second["ingest"]["unchanged"] == 3
    assert [p.stat().st_mtime_ns for p in oggs] == mtimes  # nothing rendered again
    assert second["reindexed"] == 0

    # A new checkpoint: the same audio is re-embedded, so search (current model only) finds it.
    third = build_demo(**{**kw, "embedder": Embedder.untrained(seed=1)})
    assert third["ingest"]["unchanged"] == 3 and third["reindexed"] == 3
    with db.connection() as conn:
        versions = {r[0] for r in conn.execute("SELECT DISTINCT model_version FROM segments").fetchall()}
    assert versions == {third["model_version"]} and third["model_version"] != first["model_version"]


def test_shipped_midi_covers_each_composers_first_work_and_is_read_without_music21(tmp_path, monkeypatch):
    import encoder.scores as scores
    from retrieval.demo import SHIPPED_MIDI, seed_midi_cache

    cache = tmp_path / "midi-cache"
    n = seed_midi_cache(cache)
    assert n >= len(PLAN) and len(list(cache.glob("*.mid"))) == n
    (cache / "keep.mid").write_bytes(b"mine")
    assert seed_midi_cache(cache) == 0 and (cache / "keep.mid").read_bytes() == b"mine"  # never overwrites

    def no_music21(work):
        raise AssertionError(f"converted {work.work_id} with music21 although its MIDI ships")

    monkeypatch.setattr(scores, "_convert", no_music21)
    for p in PLAN:  # the build starts every composer with its first work in corpus order
        first = scores.list_works(composers=[p.folder])[0]
        pm = scores.work_to_midi(work=first, cache_dir=cache)
        assert any(inst.notes for inst in pm.instruments), first.work_id
    assert SHIPPED_MIDI.stat().st_size < 1_000_000  # small enough to live in the repository
