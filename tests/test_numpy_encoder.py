"""encoder.numpy_encoder: the query path's torch-free forward pass equals the torch encoder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cadenza.errors import ConfigError
from encoder.embed import SHIPPED_CHECKPOINT, WEIGHTS_FILE, Embedder, prepare_batch
from encoder.model import Encoder, EncoderConfig
from encoder.numpy_encoder import erf, forward, gelu, layer_count, load_weights


@pytest.fixture(scope="module")
def shipped() -> Embedder:
    return Embedder.load()


def _batch(emb: Embedder, lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw frames spread like real ones (the checkpoint's mean ± 1.5 std), normalized and masked."""
    rng = np.random.default_rng(seed)
    T = max(lengths)
    raw = (rng.normal(size=(len(lengths), T, emb.mean.size)) * 1.5 * emb.std + emb.mean).astype(np.float32)
    return prepare_batch(windows=raw, lengths=np.asarray(lengths), mean=emb.mean, std=emb.std)


def _torch(model: Encoder, feats: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(feats), torch.from_numpy(mask)).numpy()


@pytest.mark.parametrize("lengths", [[101, 101, 101], [100, 73, 50, 100, 31], [1], [300, 12]])
def test_forward_equals_torch_on_the_shipped_checkpoint(shipped: Embedder, lengths: list[int]) -> None:
    weights = load_weights(SHIPPED_CHECKPOINT / WEIGHTS_FILE)
    feats, mask = _batch(shipped, lengths)
    want = _torch(shipped.model, feats, mask)
    got = forward(weights, n_heads=shipped.config.n_heads, x=feats, mask=mask)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_forward_ranks_neighbours_as_torch_does(shipped: Embedder) -> None:
    """Same top-10 neighbours, in the same order, for every query among 200 windows."""
    weights = load_weights(SHIPPED_CHECKPOINT / WEIGHTS_FILE)
    feats, mask = _batch(shipped, [100] * 200, seed=1)
    a = forward(weights, n_heads=shipped.config.n_heads, x=feats, mask=mask)
    b = _torch(shipped.model, feats, mask)
    top_a = np.argsort(-(a @ a.T), axis=1)[:, :10]
    top_b = np.argsort(-(b @ b.T), axis=1)[:, :10]
    assert (top_a == top_b).mean() > 0.99  # a tie broken by 1e-7 may swap two neighbours
    assert (np.sort(top_a, axis=1) == np.sort(top_b, axis=1)).mean() > 0.99


def test_forward_follows_another_shape_of_model(tmp_path) -> None:
    """Not tied to the shipped sizes: 2 layers, 2 heads, d_model 64, a 32-d output."""
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = Encoder(EncoderConfig(d_model=64, n_layers=2, n_heads=2, d_out=32)).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    weights = load_weights(tmp_path / "w.safetensors")
    assert layer_count(weights) == 2
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 20, 160)).astype(np.float32)
    mask = np.ones((4, 20), dtype=bool)
    mask[2, 7:] = False
    got = forward(weights, n_heads=2, x=feats, mask=mask)
    assert np.abs(got - _torch(model, feats, mask)).max() < 1e-5


def test_erf_and_gelu_match_the_exact_functions() -> None:
    xs = np.linspace(-9.0, 9.0, 20001)
    want = np.array([math.erf(v) for v in xs])
    assert np.abs(erf(xs) - want).max() < 2e-7
    assert np.abs(erf(xs.astype(np.float32)) - want).max() < 1e-6
    x32 = xs.astype(np.float32)
    with torch.inference_mode():
        ref = torch.nn.functional.gelu(torch.from_numpy(x32)).numpy()
    assert np.abs(gelu(x32.copy()) - ref).max() < 1e-5


def test_damaged_weights_are_a_config_error(tmp_path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="cannot read encoder weights"):
        load_weights(bad)


def test_the_numpy_backend_embeds_as_the_torch_one(shipped: Embedder) -> None:
    light = Embedder.load(backend="numpy")
    assert light.backend == "numpy" and light.model is None and shipped.backend == "torch"
    assert light.model_version == shipped.model_version and light.windowing == shipped.windowing
    rng = np.random.default_rng(2)
    windows = (rng.normal(size=(40, 100, shipped.mean.size)) * shipped.std + shipped.mean).astype(np.float32)
    lengths = np.full(40, 100)
    lengths[[0, 9, 33]] = [30, 64, 99]  # ragged batches, more than one batch of 32
    got = light.embed_windows(windows=windows, lengths=lengths)
    assert np.abs(got - shipped.embed_windows(windows=windows, lengths=lengths)).max() < 1e-5
    frames = windows.reshape(-1, shipped.mean.size)[:700]
    s_np, e_np = light.embed_track(frames=frames)
    s_t, e_t = shipped.embed_track(frames=frames)
    np.testing.assert_array_equal(s_np, s_t)
    assert np.abs(e_np - e_t).max() < 1e-5
    with pytest.raises(ConfigError, match="backend='torch'"):
        light.to("cpu")


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(tmp_path) -> None:
    from encoder.embed import write_checkpoint

    torch.manual_seed(0)
    model = Encoder(EncoderConfig(d_model=64, n_layers=2, n_heads=2))
    write_checkpoint(folder=tmp_path, model=model, mean=np.zeros(143), std=np.ones(143))
    assert Embedder.load(tmp_path, backend="numpy").config.n_layers == 2
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model"]["n_layers"] = 3  # the file says 3 layers, the weights hold 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="do not fit their config.json"):
        Embedder.load(tmp_path, backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        Embedder.load(tmp_path, backend="jax")


def test_a_query_process_never_imports_torch(tmp_path) -> None:
    """What `cadenza search` runs on a clip (load the encoder, features, embed, the melody test) in a
    fresh interpreter: importing torch was 1.3-1.8 s of it, librosa/scipy another second."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from encoder.embed import Embedder; "
        "from retrieval.query import from_audio; from retrieval.melody_search import quick_share; "
        "y = (0.2 * np.sin(np.arange(12 * 16000) * 2 * np.pi * 440 / 16000)).astype(np.float32); "
        "e = Embedder.load(backend='numpy'); b = from_audio(audio=y, embedder=e, start_s=None, "
        "transpose_probes=(-1, 1)); quick_share(y=y); assert len(b.profile.transposed) == 2; "
        "print(sorted(m for m in ('torch', 'librosa', 'numba', 'scipy.signal', 'scipy.sparse') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
