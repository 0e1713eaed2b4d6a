"""A tiny real corpus build: schema, splits by work, time scales, resumability."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from cadenza.cli import main
from cadenza.errors import InputError
from encoder.corpus import build
from encoder.corpus_file import summarize
from encoder.corpus_plan import HELDOUT_COMPOSERS, plan_views, split_of
from encoder.corpus_real import AUDIO_VIEWS, HELDOUT_SOURCES, list_tracks
from encoder.features import CHROMA, MEL, N_ACOUSTIC, SAMPLE_RATE, acoustic_features, fit_normalization
from encoder.render import FLUID_SOUNDFONT, soundfont_path

COMPOSERS = ["bach", "josquin"]  # quick to parse; josquin is a held-out composer
MAX_SECONDS = 6.0
ATTRS = {
    "work_id",
    "composer",
    "split",
    "view",
    "program",
    "instrument",
    "transpose",
    "time_scale",
    "duration_s",
}


def _build(out: Path) -> dict[str, int]:
    """The small corpus every test here builds (or resumes): three works of each composer."""
    return build(
        out=out,
        composers=COMPOSERS,
        limit=3,
        workers=1,
        max_seconds=MAX_SECONDS,
        hours_per_composer=None,
        fluid=False,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("corpus") / "corpus.h5"
    counts = _build(out)
    return out, counts


def views_by_work(h5: h5py.File) -> dict[str, list[h5py.Dataset]]:
    out: dict[str, list[h5py.Dataset]] = defaultdict(list)
    for ds in h5["views"].values():
        out[str(ds.attrs["work_id"])].append(ds)
    return out


def test_schema(built: tuple[Path, dict[str, int]]) -> None:
    out, counts = built
    assert counts["done"] == 3 and counts["failed"] == 0
    with h5py.File(out, "r") as h5:
        assert dict(h5.attrs) == {"fps": 10, "sample_rate": 16000, "n_acoustic": 143, "schema_version": 1}
        works = views_by_work(h5)
        assert len(works) == 3
        for work_id, views in works.items():
            composer = str(views[0].attrs["composer"])
            expected = {s.view for s in plan_views(work_id=work_id, composer=composer)}
            assert {str(v.attrs["view"]) for v in views} == expected
            assert {"clean", "melody", "noise", "eq", "mp3", "reverb", "instrument"} <= expected
            for ds in views:
                assert set(ds.attrs.keys()) == ATTRS
                assert ds.dtype == np.float16 and ds.ndim == 2 and ds.shape[1] == N_ACOUSTIC
                assert ds.chunks == (min(200, ds.shape[0]), N_ACOUSTIC)
                assert ds.compression == "lzf"
                assert np.all(np.isfinite(ds[()]))
                assert ds.name.split("/")[-1].startswith(work_id.replace("/", "_") + "__")
        assert h5["stats/mean"].shape == (N_ACOUSTIC,) and h5["stats/std"].dtype == np.float32


def test_splits_are_by_work_and_heldout_composers_never_train(built: tuple[Path, dict[str, int]]) -> None:
    out, _ = built
    with h5py.File(out, "r") as h5:
        for views in views_by_work(h5).values():
            splits = {str(v.attrs["split"]) for v in views}
            assert len(splits) == 1
            composer = str(views[0].attrs["composer"])
            assert (splits == {"heldout"}) == (composer in HELDOUT_COMPOSERS)
    ids = [f"bach/bwv{i}" for i in range(2000)]
    share = Counter(split_of(work_id=i, composer="bach") for i in ids)
    assert set(share) == {"train", "val", "test"}
    assert 0.75 < share["train"] / 2000 < 0.85 and 0.07 < share["val"] / 2000 < 0.13
    assert split_of(work_id="haydn/x", composer="haydn") == "heldout"
    assert split_of(work_id="bach/bwv1", composer="bach") == split_of(work_id="bach/bwv1", composer="bach")


def test_views_agree_with_time_scale(built: tuple[Path, dict[str, int]]) -> None:
    out, _ = built
    with h5py.File(out, "r") as h5:
        for views in views_by_work(h5).values():
            clean = next(v for v in views if v.attrs["view"] == "clean")
            base = float(clean.attrs["duration_s"])
            assert 1.0 < base <= MAX_SECONDS + 1e-6
            scales = set()
            for ds in views:
                scale = float(ds.attrs["time_scale"])
                scales.add(round(scale, 4))
                assert abs(float(ds.attrs["duration_s"]) - base * scale) < 1e-3
                assert ds.shape[0] == 1 + int(round(float(ds.attrs["duration_s"]) * 16000)) // 1600
                view = str(ds.attrs["view"])
                if view.startswith("tempo"):
                    assert abs(scale - 1 / (1.05 if view == "tempo+5" else 0.95)) < 1e-9
                else:
                    assert scale == 1.0
                if view.startswith("pitch"):
                    assert int(ds.attrs["transpose"]) == int(view[5:])
            assert len(scales) == 2


def test_stats_are_fitted_on_train_clean_and_instrument_views(built: tuple[Path, dict[str, int]]) -> None:
    out, _ = built
    with h5py.File(out, "r") as h5:
        frames = [
            ds[()].astype(np.float32)
            for ds in h5["views"].values()
            if ds.attrs["split"] == "train" and ds.attrs["view"] in ("clean", "instrument")
        ]
        mean, std = h5["stats/mean"][()], h5["stats/std"][()]
    if frames:
        want_mean, want_std = fit_normalization(frames=np.concatenate(frames))
        np.testing.assert_allclose(mean, want_mean, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(std, want_std, rtol=1e-3, atol=1e-3)
    else:
        np.testing.assert_array_equal(mean, 0)
        np.testing.assert_array_equal(std, 1)


def test_resume_skips_done_works_and_repairs_a_cut_view(built: tuple[Path, dict[str, int]], capsys) -> None:
    out, _ = built
    with h5py.File(out, "r") as h5:
        before = {name: h5["views"][name].shape for name in h5["views"]}
    again = _build(out)
    assert again["done"] == 0 and again["skipped"] == 3
    # a view cut short by a killed build (its last attribute missing) is redone
    victim = sorted(before)[0]
    with h5py.File(out, "a") as h5:
        del h5["views"][victim].attrs["duration_s"]
    # through the CLI, with 2 worker processes, one more work
    rc = main(
        ["-q", "corpus", "build", "--out", str(out), "--composers", ",".join(COMPOSERS), "--limit", "4",
         "--workers", "2", "--max-seconds", str(MAX_SECONDS), "--hours-per-composer", "100", "--no-fluid"]
    )  # fmt: skip
    assert rc == 0
    assert "hours of clean" in capsys.readouterr().out
    with h5py.File(out, "r") as h5:
        names = set(h5["views"])
        assert set(before) < names
        assert "duration_s" in h5["views"][victim].attrs
        works = views_by_work(h5)
        assert len(works) == 4
        for views in works.values():
            assert Counter(str(v.attrs["view"]) for v in views)["clean"] == 1
    text = summarize(path=out)
    assert "TOTAL" in text and "bach" in text


def test_hours_cap_limits_a_composer(tmp_path: Path) -> None:
    out = tmp_path / "capped.h5"

    def capped() -> dict[str, int]:
        return build(
            out=out,
            composers=["bach"],
            limit=3,
            workers=1,
            max_seconds=4.0,
            hours_per_composer=0.0005,
            fluid=False,
        )

    counts = capped()
    assert counts["done"] == 1 and counts["capped"] == 2  # 4 s > 1.8 s: one work fills the cap
    # a work already in gains views it lacks (a newer plan) although its composer is at the cap
    with h5py.File(out, "a") as h5:
        melody = [n for n in h5["views"] if n.endswith("__melody")]
        assert len(melody) == 1
        del h5["views"][melody[0]]
    again = capped()
    assert again["done"] == 1 and again["capped"] == 2
    with h5py.File(out, "r") as h5:
        assert melody[0] in h5["views"] and len(views_by_work(h5)) == 1


@pytest.mark.skipif(soundfont_path(FLUID_SOUNDFONT) is None, reason="fluid-soundfont-gm is not installed")
def test_fluid_soundfont_adds_a_view_of_the_same_notes_on_another_synthesizer(tmp_path: Path) -> None:
    out = tmp_path / "fluid.h5"
    counts = build(out=out, composers=["bach"], limit=1, workers=1, max_seconds=4.0, hours_per_composer=None)
    assert counts["done"] == 1
    with h5py.File(out, "r") as h5:
        views = {str(ds.attrs["view"]): ds for ds in h5["views"].values()}
        fluid, clean = views["soundfont"][()].astype(np.float32), views["clean"][()].astype(np.float32)
        assert views["soundfont"].attrs["program"] == views["clean"].attrs["program"]
        assert fluid.shape == clean.shape
        # another synthesizer: the spectra differ although the notes (and the chroma) line up
        assert np.abs(fluid[:, MEL] - clean[:, MEL]).mean() > 1.0
        assert np.corrcoef(fluid[:, CHROMA].ravel(), clean[:, CHROMA].ravel())[0, 1] > 0.5


def test_without_fluid_the_plan_has_no_soundfont_view() -> None:
    assert "soundfont" not in {s.view for s in plan_views(work_id="bach/bwv1", composer="bach")}
    assert "soundfont" in {s.view for s in plan_views(work_id="bach/bwv1", composer="bach", fluid=True)}


# --- real recordings (encoder.corpus_real) on tiny generated audio ---------------------------------


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    beat = (np.sin(2 * np.pi * 2.0 * t) > 0).astype(np.float32)  # on/off twice a second: onsets
    y = 0.3 * np.sin(2 * np.pi * freq * t) * beat + 0.02 * rng.standard_normal(t.size)
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import mutagen
    import soundfile as sf

    root = tmp_path_factory.mktemp("real")
    (root / "alpha-data").mkdir()
    sf.write(root / "alpha-data" / "one.ogg", _tone(22.0, 220.0, 0), SAMPLE_RATE)
    sf.write(root / "alpha-data" / "two.flac", _tone(21.0, 330.0, 1), SAMPLE_RATE)
    sf.write(root / "alpha-data" / "short.flac", _tone(5.0, 330.0, 2), SAMPLE_RATE)  # under MIN_SECONDS
    tagged = mutagen.File(str(root / "alpha-data" / "two.flac"), easy=True)
    tagged["artist"] = "Some Composer"
    tagged.save()
    (root / "beta-data").mkdir()  # a song as two stems: guitar + backing
    sf.write(root / "beta-data" / "rock_guitar.ogg", _tone(21.0, 440.0, 3), SAMPLE_RATE)
    sf.write(root / "beta-data" / "rock_song.ogg", _tone(21.0, 110.0, 4), SAMPLE_RATE)
    (root / HELDOUT_SOURCES[0]).mkdir()  # a held-out source: never in the corpus
    sf.write(root / HELDOUT_SOURCES[0] / "kept_out.flac", _tone(21.0, 500.0, 5), SAMPLE_RATE)
    return root


@pytest.fixture(scope="module")
def real_built(real_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("realcorpus") / "corpus.h5"
    counts = build(out=out, composers=["bach"], limit=0, workers=1, fluid=False, real=real_dir)
    return out, counts


def test_real_tracks_are_works_labelled_by_source(real_built: tuple[Path, dict[str, int]]) -> None:
    out, counts = real_built
    assert counts["done"] == 3 and counts["failed"] == 1  # short.flac is under MIN_SECONDS
    with h5py.File(out, "r") as h5:
        works = views_by_work(h5)
        assert set(works) == {"real/alpha-data/one", "real/alpha-data/two", "real/beta-data/rock"}
        for work_id, views in works.items():
            source = work_id.split("/")[1]
            assert {str(v.attrs["composer"]) for v in views} == {source}  # the style label
            assert {str(v.attrs["split"]) for v in views} == {"train"}
            kinds = Counter(str(v.attrs["view"]) for v in views)
            want = {"clean": 1, **{v: 1 for v in AUDIO_VIEWS}}
            assert kinds == (want | {"stem": 2} if source == "beta-data" else want)
            for ds in views:
                assert ATTRS | {"artist"} == set(ds.attrs.keys())
                assert float(ds.attrs["time_scale"]) == 1.0 and ds.dtype == np.float16
                assert ds.shape == views[0].shape  # every view lines up frame for frame
        artists = {w: str(v[0].attrs["artist"]) for w, v in works.items()}
        assert artists == {
            "real/alpha-data/one": "alpha-data",
            "real/alpha-data/two": "Some Composer",
            "real/beta-data/rock": "beta-data",
        }
        # stats now include the real clean views (train split)
        assert int(h5["stats"].attrs["frames"]) == sum(
            v.shape[0] for vs in works.values() for v in vs if v.attrs["view"] == "clean"
        )


def test_the_mix_is_the_sum_of_the_stems_and_the_views_are_degraded(
    real_dir: Path, real_built: tuple[Path, dict[str, int]]
) -> None:
    import soundfile as sf

    out, _ = real_built
    guitar, _ = sf.read(real_dir / "beta-data" / "rock_guitar.ogg", dtype="float32")
    backing, _ = sf.read(real_dir / "beta-data" / "rock_song.ogg", dtype="float32")
    mix = acoustic_features(y=guitar + backing, sr=SAMPLE_RATE)
    with h5py.File(out, "r") as h5:
        views = {
            ds.name.split("__")[-1]: ds[()].astype(np.float32)
            for ds in views_by_work(h5)["real/beta-data/rock"]
        }
    assert set(views) == {"clean", "noise", "eq", "mp3", "reverb", "phone", "stem_guitar", "stem_song"}
    assert np.abs(views["clean"][:, MEL] - mix[: len(views["clean"]), MEL]).mean() < 0.5
    assert np.abs(views["stem_guitar"][:, MEL] - views["clean"][:, MEL]).mean() > 1.0
    # the phone line removes the lows and highs: less energy in the first and last mel bands
    low, high = slice(MEL.start, MEL.start + 8), slice(MEL.stop - 16, MEL.stop)
    assert views["phone"][:, low].mean() < views["clean"][:, low].mean() - 3.0
    assert views["phone"][:, high].mean() < views["clean"][:, high].mean() - 3.0


def test_real_build_resumes_and_the_sampler_reads_real_tracks(
    real_dir: Path, real_built: tuple[Path, dict[str, int]]
) -> None:
    from encoder.data import BatchSpec, Corpus, PassageSampler

    out, _ = real_built
    again = build(out=out, composers=["bach"], limit=0, workers=1, fluid=False, real=real_dir)
    assert again["done"] == 0 and again["skipped"] == 3
    with Corpus(out) as corpus:
        sampler = PassageSampler(
            corpus, spec=BatchSpec(works=3, passages=2, views=2, composer_pairs=1), seed=0
        )
        batch = sampler.batch(0)
        # the two alpha-data tracks share a composer (= source) label, the stem song has its own
        by_work = {int(w): int(c) for w, c in zip(batch.work_labels, batch.composer_labels, strict=True)}
        assert len(set(by_work.values())) == 2 and len(by_work) == 3
        assert set(batch.views) <= {"clean", "stem", *AUDIO_VIEWS}


def test_held_out_and_reserved_sources(real_dir: Path, tmp_path: Path) -> None:
    tracks = list_tracks(real_dir)
    assert not any(t.composer in HELDOUT_SOURCES for t in tracks)
    assert any(t.composer == HELDOUT_SOURCES[0] for t in list_tracks(real_dir, heldout=()))
    assert {"widelands-data", "fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid"} <= set(
        HELDOUT_SOURCES
    )
    bad = tmp_path / "bad"
    (bad / "wesnoth-music").mkdir(parents=True)
    with pytest.raises(InputError, match="reserved"):
        list_tracks(bad)
    with pytest.raises(InputError, match="not a folder"):
        list_tracks(tmp_path / "missing")
    rc = main(["-q", "corpus", "build", "--out", str(tmp_path / "c.h5"), "--real", str(bad), "--limit", "0"])
    assert rc == 2


def test_real_share_sets_how_many_works_of_a_batch_are_real_recordings(
    real_dir: Path, real_built: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    import shutil

    from encoder.data import BatchSpec, Corpus, PassageSampler

    out, _ = real_built
    mixed = tmp_path / "mixed.h5"
    shutil.copyfile(out, mixed)
    build(
        out=mixed,
        composers=["bach"],
        limit=4,
        workers=1,
        fluid=False,
        max_seconds=12.0,
        hours_per_composer=None,
    )
    with Corpus(mixed) as corpus:
        rendered = sum(not w.work_id.startswith("real/") for w in corpus.split("train"))
        assert rendered >= 2
        for share, want in ((1 / 3, 1), (2 / 3, 2)):
            spec = BatchSpec(works=3, passages=1, views=1, real_share=share, min_gap_s=1.0)
            sampler = PassageSampler(corpus, spec=spec, seed=0)
            for step in range(5):
                picked = sampler._pick_works(np.random.default_rng(step))
                assert len(set(picked)) == 3
                assert sum(sampler.works[i].work_id.startswith("real/") for i in picked) == want
