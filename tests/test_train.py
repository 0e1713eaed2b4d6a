"""Corpus reading, batch sampling, retrieval metrics and a tiny end-to-end training run.

The corpus is a small synthetic HDF5 with the real schema: each work is a smooth random
feature sequence; its views are that sequence with noise, a level change, a pitch shift
(mel and chroma rolled) or a tempo change (resampled in time), so the passage/work structure
is there to be learned.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cadenza.errors import ConfigError
from encoder.data import BatchSpec, Corpus, PassageSampler
from encoder.embed import Embedder
from encoder.evaluate import MeanPoolBaseline, retrieval_metrics
from encoder.train import configure, lr_at, run

VIEWS = {"clean": 1.0, "noise": 1.0, "pitch+1": 1.0, "tempo+5": 1.05, "eq": 1.0}


def _work_frames(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * 10)
    walk = np.cumsum(rng.standard_normal((n, 143)), axis=0) * 0.6  # smooth in time
    return (walk + rng.standard_normal(143) * 8 - 40).astype(np.float32)  # [n, 143]


def _view(base: np.ndarray, view: str, rng: np.random.Generator) -> np.ndarray:
    x = base.copy()
    if view == "noise":
        x += rng.standard_normal(x.shape) * 1.5
    elif view == "eq":
        x[:, :128] += np.linspace(-4, 4, 128)
    elif view == "pitch+1":
        x[:, :128] = np.roll(x[:, :128], 1, axis=1)
        x[:, 128:140] = np.roll(x[:, 128:140], 1, axis=1)
    elif view == "tempo+5":
        t = np.arange(int(len(base) * 1.05)) / 1.05  # view frame i shows canonical frame i / 1.05
        x = np.stack([np.interp(t, np.arange(len(base)), base[:, d]) for d in range(143)], axis=1)
    return x.astype(np.float16)


def make_corpus(
    path: Path,
    *,
    works_per_split: dict[str, int],
    seconds: float = 45.0,
    extra_s: float = 15.0,
    seed: int = 0,
) -> Path:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs.update({"fps": 10, "sample_rate": 16000, "n_acoustic": 143, "schema_version": 1})
        views = f.create_group("views")
        all_frames = []
        for split, n in works_per_split.items():
            for i in range(n):
                work = f"{split}{i:02d}"
                base = _work_frames(rng, seconds + rng.uniform(0, extra_s))
                for view, ts in VIEWS.items():
                    data = _view(base, view, rng)
                    ds = views.create_dataset(f"{work}__{view}", data=data, chunks=(100, 143))
                    ds.attrs.update(
                        {
                            "work_id": work,
                            "composer": f"composer-{split}-{i % 2}",
                            "split": split,
                            "view": view,
                            "program": 0,
                            "instrument": "piano",
                            "transpose": 1 if view == "pitch+1" else 0,
                            "time_scale": ts,
                            "duration_s": len(data) / 10,
                        }
                    )
                    all_frames.append(data.astype(np.float32))
        stacked = np.concatenate(all_frames)
        f.create_dataset("stats/mean", data=stacked.mean(axis=0))
        f.create_dataset("stats/std", data=stacked.std(axis=0))
    return path


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.h5"
    return make_corpus(path, works_per_split={"train": 10, "val": 4, "test": 3, "heldout": 3})


def test_corpus_index_and_summary(corpus_path):
    with Corpus(corpus_path) as c:
        assert len(c.split("train")) == 10 and len(c.split("heldout")) == 3
        w = c.split("val")[0]
        assert {v.view for v in w.views} == set(VIEWS)
        summary = c.summary()
        assert summary["splits"]["train"]["works"] == 10
        assert summary["splits"]["test"]["views"]["tempo+5"] == 3
        assert c.read(view=w.views[0], start=10**6, n_frames=100).shape == (100, 143)  # clipped to the end


def test_missing_or_foreign_corpus_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cadenza corpus"):
        Corpus(tmp_path / "none.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.attrs["fps"] = 10
    with pytest.raises(ConfigError):
        Corpus(tmp_path / "bad.h5")


def test_batches_have_the_planned_structure_and_are_deterministic(corpus_path):
    spec = BatchSpec(works=4, passages=3, views=3)
    with Corpus(corpus_path) as c:
        sampler = PassageSampler(c, spec=spec, seed=5)
        a, b, other = sampler.batch(7), sampler.batch(7), sampler.batch(8)
        assert a.windows.shape == (36, 100, 143)
        assert np.array_equal(a.windows, b.windows) and np.array_equal(a.lengths, b.lengths)
        assert not np.array_equal(a.windows, other.windows)
        assert np.array_equal(np.bincount(a.work_labels), [9, 9, 9, 9])
        assert np.array_equal(np.bincount(a.passage_labels), [3] * 12)
        # each passage lies inside one work
        for p in range(12):
            assert len(set(a.work_labels[a.passage_labels == p])) == 1
        assert ((a.lengths >= spec.min_crop_frames) & (a.lengths <= 100)).all()
        for i, n in enumerate(a.lengths):
            assert not a.windows[i, n:].any()  # padding is zero
        # views of one passage are near-aligned copies: much closer than two different passages
        clean_like = [i for i, v in enumerate(a.views) if v in ("clean", "noise", "eq")]
        rows = {(int(a.passage_labels[i]), i) for i in clean_like if a.lengths[i] == 100}
        by_p: dict[int, list[int]] = {}
        for p, i in rows:
            by_p.setdefault(p, []).append(i)
        pairs = [(v[0], v[1]) for v in by_p.values() if len(v) > 1]
        assert pairs, "expected at least one passage with two full-length plain views"
        i, j = pairs[0]
        other_p = next(
            k
            for k in range(36)
            if a.work_labels[k] == a.work_labels[i] and a.passage_labels[k] != a.passage_labels[i]
        )

        def dist(x: int, y: int) -> float:
            return float(np.abs(a.windows[x, :, 128:140] - a.windows[y, :, 128:140]).mean())

        assert dist(i, j) < dist(i, other_p)
    with Corpus(corpus_path) as c, pytest.raises(ConfigError, match="batch-works"):
        PassageSampler(c, spec=BatchSpec(works=50), seed=0)


def test_composer_pairs_and_feature_augmentation_in_batches(corpus_path):
    from encoder.feataug import FeatureAugment

    # the toy corpus has two composers per split, five train works each
    spec = BatchSpec(works=4, passages=2, views=2, composer_pairs=2, augment=FeatureAugment(tempo_prob=1.0))
    with Corpus(corpus_path) as c:
        sampler = PassageSampler(c, spec=spec, seed=1)
        for step in range(5):
            batch = sampler.batch(step)
            assert batch.composer_labels is not None
            # two composers × two works each: every clip has an other-work same-composer clip
            for i in range(len(batch.composer_labels)):
                same = (batch.composer_labels == batch.composer_labels[i]) & (
                    batch.work_labels != batch.work_labels[i]
                )
                assert same.any()
        a, b = sampler.batch(3), sampler.batch(3)
        assert np.array_equal(a.windows, b.windows)  # augmentation is part of the (seed, step) function
        plain = PassageSampler(c, spec=BatchSpec(works=4, passages=2, views=2), seed=1).batch(3)
        assert not np.array_equal(a.windows, plain.windows)
        # every clip was tempo-stretched, which may shorten it by at most the stretch
        assert (a.lengths >= spec.min_crop_frames).all() and (a.lengths <= 100).all()


def test_view_weights_steer_which_views_a_batch_holds(corpus_path):
    from encoder.train import _view_weights

    with Corpus(corpus_path) as c:
        uniform = PassageSampler(c, spec=BatchSpec(works=4, passages=2, views=2), seed=0)
        no_noise = BatchSpec(works=4, passages=2, views=2, view_weights=(("noise", 0.0), ("pitch", 0.0)))
        clean_heavy = BatchSpec(works=4, passages=2, views=2, view_weights=(("clean", 50.0),))
        drawn = [v for step in range(10) for v in uniform.batch(step).views]
        assert {"noise", "pitch+1"} <= set(drawn)  # uniform sampling does draw them
        weighted = PassageSampler(c, spec=no_noise, seed=0)
        drawn = [v for step in range(10) for v in weighted.batch(step).views]
        assert "noise" not in drawn and "pitch+1" not in drawn
        heavy = PassageSampler(c, spec=clean_heavy, seed=0)
        drawn = [v for step in range(10) for v in heavy.batch(step).views]
        # every passage takes two distinct views: one is nearly always clean
        assert drawn.count("clean") >= 0.45 * len(drawn)
    assert _view_weights("clean=2, melody=0.5") == (("clean", 2.0), ("melody", 0.5))
    for bad in ("clean", "clean=x", "=2", "clean=-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            _view_weights(bad)


def test_short_works_get_fewer_passages_but_all_their_clips(tmp_path):
    path = make_corpus(tmp_path / "short.h5", works_per_split={"train": 3}, seconds=14.0, extra_s=0.0)
    with Corpus(path) as c:
        batch = PassageSampler(c, spec=BatchSpec(works=2, passages=4, views=3), seed=0).batch(0)
    assert batch.windows.shape[0] == 24
    # 14 s leaves 3.8 s of start positions: one passage per work, 12 views of it
    assert np.array_equal(np.bincount(batch.work_labels), [12, 12])
    assert len(set(batch.passage_labels.tolist())) == 2


def test_retrieval_metrics_rank_a_simple_baseline_above_chance(corpus_path):
    with Corpus(corpus_path) as c:
        m = retrieval_metrics(embedder=MeanPoolBaseline(mean=c.mean, std=c.std), corpus=c, split="val")
        assert m["n_works"] == 4 and m["n_queries"] == 24
        assert 0.0 <= m["passage_top1"] <= m["passage_top5"] <= 1.0
        # 4 works: a random ranking gives work P@10 near 0.25; feature means already know the works
        assert m["work_p_at_10"] > 0.4
        assert set(m["passage_top1_by_view"]) <= set(VIEWS) - {"clean"}
        assert retrieval_metrics(
            embedder=MeanPoolBaseline(mean=c.mean, std=c.std), corpus=c, split="nope"
        ) == {
            "split": "nope",
            "n_queries": 0,
        }


def test_lr_schedule_warms_up_then_decays():
    assert lr_at(step=0, total=100, warmup=10, peak=1.0) == pytest.approx(0.1)
    assert lr_at(step=9, total=100, warmup=10, peak=1.0) == pytest.approx(1.0)
    assert lr_at(step=10, total=100, warmup=10, peak=1.0) == pytest.approx(1.0)
    assert lr_at(step=100, total=100, warmup=10, peak=1.0) == pytest.approx(0.1)


def _args(corpus: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure("train", parser)
    return parser.parse_args(
        ["--corpus", str(corpus), "--out", str(out), "--batch-works", "4", "--passages", "3", "--views", "3"]
        + ["--threads", "1", "--eval-works", "4", "--lr", "2e-3", *extra]
    )


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_tiny_training_run_lowers_the_loss_and_resumes(corpus_path, tmp_path, capsys):
    out = tmp_path / "run"
    ship = tmp_path / "ship"
    assert (
        run(
            "train",
            # A constant temperature, so that the loss is comparable from end to end (a falling one
            # raises it by itself); the default recipe otherwise: feature augmentation + composer term.
            _args(
                corpus_path,
                out,
                "--steps",
                "40",
                "--ckpt-every",
                "20",
                "--eval-every",
                "20",
                "--t-start",
                "0.3",
                "--t-end",
                "0.3",
            ),
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    losses = _losses(out)
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert result["steps"] == 40 and result["model_version"].startswith("cadenza-v1-")
    assert {"val", "test", "heldout"} <= set(result["metrics"])
    loaded = Embedder.load(out)
    assert loaded.model_version == result["model_version"]
    assert loaded.info["steps"] == 40 and loaded.info["corpus"]["splits"]["train"]["works"] == 10
    assert not (out / "train_state.pt").samefile(out / "model.safetensors")

    # resume to 50 steps: continues the log at step 41 and ships the two files only
    args = _args(corpus_path, out, "--steps", "50", "--ckpt-every", "20", "--eval-every", "50", "--resume")
    args.ship = ship
    assert run("train", args) == 0
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 51))
    assert sorted(p.name for p in ship.iterdir()) == ["config.json", "model.safetensors"]
    shipped = Embedder.load(ship)
    assert shipped.info["steps"] == 50
    assert shipped.info["wall_s"] > loaded.info["wall_s"]


def test_training_improves_retrieval_over_untrained(corpus_path, tmp_path, capsys):
    out = tmp_path / "run"
    # The toy corpus's frames are random numbers, on which transposing or equalizing "mel" bands
    # means nothing: 60 steps of the plain recipe is what can show learning here.
    extra = ("--no-feature-augment", "--composer-weight", "0")
    assert (
        run(
            "train",
            _args(corpus_path, out, "--steps", "60", "--ckpt-every", "60", "--eval-every", "60", *extra),
        )
        == 0
    )
    capsys.readouterr()
    trained = Embedder.load(out)
    with Corpus(corpus_path) as c:
        untrained = Embedder.untrained(seed=0, config=trained.config)
        untrained.mean, untrained.std = c.mean, c.std
        before = retrieval_metrics(embedder=untrained, corpus=c, split="train", max_works=10)
        after = retrieval_metrics(embedder=trained, corpus=c, split="train", max_works=10)
    assert after["passage_top1"] + after["work_p_at_10"] > before["passage_top1"] + before["work_p_at_10"]
    # --eval-only measures the checkpoint and both baselines on every non-train split
    assert run("train", _args(corpus_path, out, "--eval-only")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_version"] == trained.model_version
    for key in ("trained", "untrained_same_config", "mean_pooled_features"):
        assert set(report[key]) == {"val", "test", "heldout"}
        assert report[key]["heldout"]["n_queries"] == 18


def test_resume_without_state_is_a_config_error(corpus_path, tmp_path):
    with pytest.raises(ConfigError, match="resume"):
        run("train", _args(corpus_path, tmp_path / "empty", "--steps", "2", "--resume"))


def test_max_minutes_stops_early_with_a_usable_checkpoint(corpus_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert run("train", _args(corpus_path, out, "--steps", "100", "--max-minutes", "0")) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 1
    assert Embedder.load(out).info["steps"] == 1
