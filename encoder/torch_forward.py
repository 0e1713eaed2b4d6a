"""The encoder's inference forward in torch, attention through ``scaled_dot_product_attention``.

What :class:`encoder.embed.Embedder` runs for a torch model in eval mode (ingest batches, a GPU):
:func:`fast_forward` computes ``Encoder.forward`` with ~25 % less CPU, and :func:`fast_path_agrees`
checks that on the model at hand before it is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.model import Encoder


def fast_path_applies(model: Encoder) -> bool:
    """Whether :func:`fast_forward` computes exactly ``model.forward``: pre-LN GELU layers, no final norm."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.TransformerEncoder) or blocks.norm is not None:
        return False
    return all(
        isinstance(layer, nn.TransformerEncoderLayer)
        and layer.norm_first
        and layer.activation is F.gelu
        and layer.self_attn.batch_first
        and layer.self_attn.in_proj_weight is not None
        for layer in blocks.layers
    )


def fast_forward(model: Encoder, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``Encoder.forward`` in eval mode, with attention through ``scaled_dot_product_attention``.

    ``x [B, T, n_input]``, ``mask [B, T]`` bool (True = real frame) → ``[B, d_out]``. Same weights,
    same arithmetic up to float rounding (|Δ| ≈ 1e-7); ~25 % less CPU than the stock layer's
    fast path, whose masked softmax is a fifth of the encoder's time. Only for inference.
    """
    B, T, _ = x.shape
    h = model.in_proj(x)
    h = torch.cat([model.cls.expand(B, 1, -1), h], dim=1)  # [B, T+1, d]
    d = h.shape[-1]
    all_real = bool(mask.all())
    # SDPA's boolean mask: True = may attend. The CLS position is always real.
    attend = None if all_real else torch.cat([mask.new_ones(B, 1), mask], dim=1)[:, None, None, :]
    for layer in model.blocks.layers:
        attn = layer.self_attn
        n_heads = attn.num_heads
        y = F.layer_norm(h, (d,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
        qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)  # [B, T+1, 3d]
        qkv = qkv.view(B, T + 1, 3, n_heads, d // n_heads).permute(2, 0, 3, 1, 4)  # [3, B, H, T+1, dh]
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attend)  # [B, H, T+1, dh]
        h = h + attn.out_proj(o.transpose(1, 2).reshape(B, T + 1, d))
        y = F.layer_norm(h, (d,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
        h = h + layer.linear2(F.gelu(layer.linear1(y)))
    h = model.ln_f(h)
    w = mask.unsqueeze(-1).to(h.dtype)  # [B, T, 1]
    mean_vec = (h[:, 1:] * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
    g = torch.sigmoid(model.pool_gate)
    return F.normalize(model.head(g * h[:, 0] + (1.0 - g) * mean_vec), dim=-1)


def fast_path_agrees(model: Encoder) -> bool:
    """Check :func:`fast_forward` against ``model.forward`` on a small random batch (a few ms)."""
    if not fast_path_applies(model):
        return False
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 24, model.config.n_input, generator=gen)
    mask = torch.ones(3, 24, dtype=torch.bool)
    mask[1, 17:] = False
    try:
        with torch.inference_mode():
            want = model(x, mask)
            got = fast_forward(model, x, mask)
            got_full = fast_forward(model, x[:1], mask[:1])
    except (AttributeError, RuntimeError, TypeError):  # a model this function does not know
        return False
    return bool(torch.allclose(got, want, atol=1e-5) and torch.allclose(got_full, want[:1], atol=1e-5))
