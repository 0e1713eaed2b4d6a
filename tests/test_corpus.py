"""A tiny real corpus build: schema, splits by work, time scales, resumability."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from cadenza.cli import main
from encoder.corpus import HELDOUT_COMPOSERS, build, plan_views, split_of, summarize
from encoder.features import N_ACOUSTIC, fit_normalization

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


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("corpus") / "corpus.h5"
    counts = build(
        out=out, composers=COMPOSERS, limit=3, workers=1, max_seconds=MAX_SECONDS, hours_per_composer=None
    )
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
    again = build(
        out=out, composers=COMPOSERS, limit=3, workers=1, max_seconds=MAX_SECONDS, hours_per_composer=None
    )
    assert again["done"] == 0 and again["skipped"] == 3
    # a view cut short by a killed build (its last attribute missing) is redone
    victim = sorted(before)[0]
    with h5py.File(out, "a") as h5:
        del h5["views"][victim].attrs["duration_s"]
    # through the CLI, with 2 worker processes, one more work
    rc = main(
        ["-q", "corpus", "build", "--out", str(out), "--composers", ",".join(COMPOSERS), "--limit", "4",
         "--workers", "2", "--max-seconds", str(MAX_SECONDS), "--hours-per-composer", "100"]
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
    counts = build(
        out=out, composers=["bach"], limit=3, workers=1, max_seconds=4.0, hours_per_composer=0.0005
    )
    assert counts["done"] == 1 and counts["capped"] == 2  # 4 s > 1.8 s: one work fills the cap
    # a work already in gains views it lacks (a newer plan) although its composer is at the cap
    with h5py.File(out, "a") as h5:
        melody = [n for n in h5["views"] if n.endswith("__melody")]
        assert len(melody) == 1
        del h5["views"][melody[0]]
    again = build(out=out, composers=["bach"], limit=3, workers=1, max_seconds=4.0, hours_per_composer=0.0005)
    assert again["done"] == 1 and again["capped"] == 2
    with h5py.File(out, "r") as h5:
        assert melody[0] in h5["views"] and len(views_by_work(h5)) == 1
