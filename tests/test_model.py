"""The encoder module: shapes, normalization, masking, the pooling blend, config round-trip."""

from __future__ import annotations

import torch

from encoder.model import Encoder, EncoderConfig


def _model(**kw) -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(**kw)).eval()


def test_output_shape_and_unit_norm():
    model = _model()
    out = model(torch.randn(3, 100, 160))
    assert out.shape == (3, 128)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_padding_frames_do_not_change_the_embedding():
    model = _model()
    x = torch.randn(2, 50, 160)
    ref = model(x)
    padded = torch.cat([x, 100.0 * torch.randn(2, 30, 160)], dim=1)  # garbage after frame 50
    mask = torch.zeros(2, 80, dtype=torch.bool)
    mask[:, :50] = True
    with torch.no_grad():
        out = model(padded, mask)
    assert torch.allclose(out, ref, atol=1e-5)
    unmasked = model(padded)
    assert not torch.allclose(unmasked, ref, atol=1e-3)  # the mask is what made them equal


def test_different_inputs_give_different_embeddings_and_300_frames_work():
    model = _model(d_model=64, n_heads=4, n_layers=2)
    out = model(torch.randn(2, 300, 160))
    assert out.shape == (2, 128)
    assert (out[0] @ out[1]).item() < 0.999


def test_gradients_reach_every_parameter():
    model = _model(dropout=0.0).train()
    out = model(torch.randn(4, 40, 160))
    (out[:, 0].sum() + out[:, 5].sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.pool_gate.grad.abs().item() > 0  # the CLS/mean blend is learned


def test_config_json_round_trip_ignores_unknown_keys():
    cfg = EncoderConfig(d_model=256, n_layers=2)
    data = cfg.to_json() | {"from_the_future": 1}
    assert EncoderConfig.from_json(data) == cfg
