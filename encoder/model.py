"""The Cadenza encoder: 160-dim frames → one 128-d L2-normalized moment embedding.

One file, nanoGPT style. A window of ``T`` frames (``config.windowing``: 10 fps; 30–300 frames, 100 by default)
is projected to ``d_model``, a learnable CLS token is prepended, a pre-LN Transformer
encoder mixes them (padding frames masked out), and the output is a learned blend of the
CLS vector and the masked mean of the frame vectors, projected to ``d_out`` and
L2-normalized so a dot product is a cosine similarity. Its shape is an
:class:`encoder.config.EncoderConfig` (imported here too, where most callers look for it).

Position is not learned here: the 17 positional columns of every frame
(:func:`encoder.features.positional_features`) already say where a frame sits in its
window, which keeps the model indifferent to the window length it was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoder.config import EncoderConfig


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model {config.d_model} is not divisible by n_heads {config.n_heads}")
        self.config = config
        d = config.d_model
        self.in_proj = nn.Linear(config.n_input, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.n_heads,
            dim_feedforward=config.ff_mult * d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # enable_nested_tensor only helps post-LN layers; with norm_first it just warns.
        self.blocks = nn.TransformerEncoder(layer, num_layers=config.n_layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(d)
        # sigmoid(0) = 0.5: start from an even blend of CLS and mean-pool, let training move it.
        self.pool_gate = nn.Parameter(torch.zeros(()))
        self.head = nn.Linear(d, config.d_out)
        nn.init.normal_(self.cls, std=0.02)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``[B, T, n_input]``; ``mask``: ``[B, T]`` bool, True = real frame (None = all real).

        Returns ``[B, d_out]`` L2-normalized embeddings.
        """
        B, T, _ = x.shape
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
        h = self.in_proj(x)  # [B, T, d]
        h = torch.cat([self.cls.expand(B, 1, -1), h], dim=1)  # [B, T+1, d]
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), mask], dim=1)  # [B, T+1]
        h = self.blocks(h, src_key_padding_mask=~keep)  # True in the padding mask = ignore
        h = self.ln_f(h)
        cls_vec = h[:, 0]  # [B, d]
        w = mask.unsqueeze(-1).to(h.dtype)  # [B, T, 1]
        # clamp: a row with no real frame (never produced by our callers) must not divide by 0.
        mean_vec = (h[:, 1:] * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # [B, d]
        g = torch.sigmoid(self.pool_gate)
        z = g * cls_vec + (1.0 - g) * mean_vec  # [B, d]
        return F.normalize(self.head(z), dim=-1)  # [B, d_out]
