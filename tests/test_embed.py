"""The Embedder: loading, checkpoints, batching, variable lengths and sliding windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cadenza.errors import ConfigError, InputError
from encoder.embed import Embedder, write_checkpoint
from encoder.model import EncoderConfig
from encoder.torch_forward import fast_path_agrees, fast_path_applies

SMALL = EncoderConfig(d_model=32, n_heads=2, n_layers=1)


def _frames(n: int, seed: int = 0, batch: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, 143) if batch is None else (batch, n, 143)
    return (rng.standard_normal(shape) * 5 - 40).astype(np.float32)


def test_load_without_a_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cadenza train"):
        Embedder.load(tmp_path / "nothing-here")


def test_untrained_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = Embedder.untrained(seed=1, config=SMALL)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = Embedder.untrained(seed=1, config=SMALL)
    c = Embedder.untrained(seed=2, config=SMALL)
    x = _frames(100, batch=3)
    assert np.array_equal(a.embed_windows(windows=x), b.embed_windows(windows=x))
    assert not np.allclose(a.embed_windows(windows=x), c.embed_windows(windows=x))
    assert a.model_version == "untrained-seed1"


def test_embed_windows_shapes_norms_and_batching():
    emb = Embedder.untrained(seed=0, config=SMALL)
    emb.batch_size = 4  # force several internal batches
    x = _frames(100, batch=10)
    out = emb.embed_windows(windows=x)
    assert out.shape == (10, 128) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([emb.embed_windows(windows=x[i : i + 1]) for i in range(10)])
    assert np.allclose(out, one_by_one, atol=1e-5)


def test_variable_lengths_match_unpadded_windows():
    emb = Embedder.untrained(seed=0, config=SMALL)
    x = _frames(300, batch=3)
    lengths = np.array([30, 300, 100])
    out = emb.embed_windows(windows=x, lengths=lengths)
    for i, n in enumerate(lengths):
        alone = emb.embed_windows(windows=x[i : i + 1, :n])
        assert np.allclose(out[i], alone[0], atol=1e-5)


def test_bad_windows_are_input_errors():
    emb = Embedder.untrained(seed=0, config=SMALL)
    with pytest.raises(InputError):
        emb.embed_windows(windows=np.zeros((2, 100, 140), dtype=np.float32))
    with pytest.raises(InputError):
        emb.embed_windows(windows=np.zeros((1, 301, 143), dtype=np.float32))
    with pytest.raises(InputError):
        emb.embed_windows(windows=np.zeros((2, 100, 143)), lengths=np.array([100, 0]))
    bad = np.zeros((1, 100, 143), dtype=np.float32)
    bad[0, 5, 7] = np.nan
    with pytest.raises(InputError):
        emb.embed_windows(windows=bad)


def test_embed_track_windows_every_two_seconds_and_keeps_a_long_enough_tail():
    emb = Embedder.untrained(seed=0, config=SMALL)
    frames = _frames(337)
    starts, vecs = emb.embed_track(frames=frames)
    # full windows start at 0, 2, ..., 22 s (22 s + 10 s = 32 s <= 33.7 s); 24 s leaves 9.7 s >= 5 s
    assert np.allclose(starts, np.arange(0, 26, 2))
    assert vecs.shape == (13, 128)
    assert np.allclose(vecs[3], emb.embed_windows(windows=frames[None, 60:160])[0], atol=1e-5)
    assert np.allclose(vecs[-1], emb.embed_windows(windows=frames[None, 240:])[0], atol=1e-5)
    s7, v7 = emb.embed_track(frames=frames[:70])
    assert np.allclose(s7, [0.0]) and v7.shape == (1, 128)
    s4, v4 = emb.embed_track(frames=frames[:40])
    assert s4.shape == (0,) and v4.shape == (0, 128)
    # with the default hop a tail is always >= 8 s; a coarser hop shows the 5 s rule
    kept, _ = emb.embed_track(frames=frames[:170], cuts=emb.windowing.track_starts(170, hop=60))
    assert np.allclose(kept, [0.0, 6.0, 12.0])  # 12 s start leaves exactly 5 s
    dropped, _ = emb.embed_track(frames=frames[:165], cuts=emb.windowing.track_starts(165, hop=60))
    assert np.allclose(dropped, [0.0, 6.0])  # 12 s start would leave 4.5 s


def test_checkpoint_round_trip_and_version(tmp_path):
    src = Embedder.untrained(seed=3, config=SMALL)
    mean = np.linspace(-50, -10, 143).astype(np.float32)
    std = np.linspace(1, 20, 143).astype(np.float32)
    version = write_checkpoint(
        folder=tmp_path / "ckpt", model=src.model, mean=mean, std=std, training={"steps": 7}
    )
    assert version.startswith("cadenza-v1-") and len(version) == len("cadenza-v1-") + 8
    loaded = Embedder.load(tmp_path / "ckpt")
    assert loaded.model_version == version
    assert loaded.info["steps"] == 7
    assert loaded.config == SMALL
    x = _frames(100, batch=4)
    expected = Embedder(model=src.model, mean=mean, std=std, model_version="x").embed_windows(windows=x)
    assert np.allclose(loaded.embed_windows(windows=x), expected, atol=1e-6)
    # normalization is applied inside: the untrained (identity) embedder differs on the same weights
    assert not np.allclose(src.embed_windows(windows=x), expected, atol=1e-3)
    assert Embedder.load(tmp_path / "ckpt" / "model.safetensors").model_version == version


def test_corrupt_checkpoint_is_a_config_error(tmp_path):
    folder = tmp_path / "ckpt"
    write_checkpoint(
        folder=folder, model=Embedder.untrained(config=SMALL).model, mean=np.zeros(143), std=np.ones(143)
    )
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        Embedder.load(folder)


def stock(emb: Embedder, windows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    fast = emb._fast
    emb._fast = False
    try:
        return emb.embed_windows(windows=windows, lengths=lengths)
    finally:
        emb._fast = fast


@pytest.mark.parametrize("which", ["untrained", "shipped"])
def test_fast_encoder_forward_matches_the_module(which):
    emb = Embedder.untrained(seed=3) if which == "untrained" else Embedder.load()
    assert emb._fast
    rng = np.random.default_rng(1)
    windows = (rng.standard_normal((37, 100, 143)) * 5 - 20).astype(np.float32)
    lengths = np.full(37, 100)
    lengths[[3, 17, 30]] = [50, 77, 99]  # ragged batches take the masked attention
    got = emb.embed_windows(windows=windows, lengths=lengths)
    want = stock(emb, windows, lengths)
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_fast_path_refuses_a_model_it_does_not_know():
    emb = Embedder.untrained(seed=0)
    layer = emb.model.blocks.layers[1]
    layer.activation = F.relu
    assert not fast_path_applies(emb.model) and not fast_path_agrees(emb.model)
    assert not Embedder(model=emb.model, mean=emb.mean, std=emb.std, model_version="x")._fast
