"""The encoder's forward pass in numpy, read straight from a checkpoint's ``model.safetensors``.

Why it exists: a query embeds one clip and its two key probes (three windows), a few ms of
arithmetic, but importing torch costs a fresh process 1.3–1.8 s, most of ``cadenza search``'s
wall time. So the query path (the CLI and the web app) runs this and never imports torch;
ingestion and training keep :class:`encoder.model.Encoder` (batches, threads, a GPU).

It is :meth:`encoder.model.Encoder.forward` in eval mode (no dropout), term for term: input
projection, a CLS row in front, pre-LN Transformer layers (multi-head self-attention with the
padding keys masked out, GELU feed-forward), a final LayerNorm, the gated blend of the CLS row
and the masked mean of the frame rows, the head, L2 normalization. ``tests/test_numpy_encoder.py``
checks it against torch on the shipped checkpoint (max |Δ| ≈ 1e-6, same neighbours).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.errors import ConfigError

#: ``nn.LayerNorm``'s default eps (the Transformer layers' and ``ln_f``'s).
LAYER_NORM_EPS = 1e-5
#: ``F.normalize``'s eps: a zero vector stays zero instead of dividing by 0.
NORMALIZE_EPS = 1e-12

# Abramowitz & Stegun 7.1.26: erf to |error| <= 1.5e-7, below float32's resolution near 1. numpy has
# no erf, and scipy.special would cost its import on every query.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)

Weights = dict[str, np.ndarray]


def load_weights(path: Path) -> Weights:
    """The tensors of a ``model.safetensors`` file as float32 numpy arrays (read-only)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        raw = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as exc:
        raise ConfigError(f"cannot read encoder weights {path} ({exc}); re-run `cadenza train`") from None
    out = {}
    for name, value in raw.items():
        arr = np.array(value, dtype=np.float32, order="C")  # (ascontiguousarray would make a 0-d gate 1-d)
        arr.flags.writeable = False
        out[name] = arr
    return out


def layer_count(weights: Weights) -> int:
    """How many Transformer layers the weights hold (``blocks.layers.<i>.*``)."""
    ids = {int(k.split(".")[2]) for k in weights if k.startswith("blocks.layers.")}
    if ids != set(range(len(ids))):
        raise ConfigError(f"encoder weights have layers {sorted(ids)}, not 0..n-1; the checkpoint is damaged")
    return len(ids)


def check_weights(weights: Weights, config: Any) -> None:
    """ConfigError unless ``weights`` hold every tensor of an encoder shaped as ``config``
    (:class:`encoder.config.EncoderConfig`), each of the right shape."""
    d, ff = config.d_model, config.ff_mult * config.d_model
    want: dict[str, tuple[int, ...]] = {
        "in_proj.weight": (d, config.n_input), "in_proj.bias": (d,), "cls": (1, 1, d), "pool_gate": (),
        "ln_f.weight": (d,), "ln_f.bias": (d,), "head.weight": (config.d_out, d), "head.bias": (config.d_out,),
    }  # fmt: skip
    for i in range(config.n_layers):
        p = f"blocks.layers.{i}"
        want.update({
            f"{p}.self_attn.in_proj_weight": (3 * d, d), f"{p}.self_attn.in_proj_bias": (3 * d,),
            f"{p}.self_attn.out_proj.weight": (d, d), f"{p}.self_attn.out_proj.bias": (d,),
            f"{p}.linear1.weight": (ff, d), f"{p}.linear1.bias": (ff,),
            f"{p}.linear2.weight": (d, ff), f"{p}.linear2.bias": (d,),
            f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,), f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
        })  # fmt: skip
    wrong = [k for k, shape in want.items() if k not in weights or weights[k].shape != shape]
    extra = sorted(set(weights) - set(want))
    if wrong or extra or d % config.n_heads:
        raise ConfigError(
            f"the encoder weights do not fit their config.json (missing or misshapen: {wrong[:3]}, "
            f"unknown: {extra[:3]}); re-run `cadenza train` to write a matching checkpoint"
        )


def _linear(x: np.ndarray, weights: Weights, name: str) -> np.ndarray:
    """``F.linear`` over the last axis, as ONE matrix product over all leading axes (a stacked
    ``[B, T, d] @ W`` runs one BLAS call per batch row)."""
    w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
    lead = x.shape[:-1]
    y = x.reshape(-1, x.shape[-1]) @ w.T
    y += b
    return y.reshape(*lead, w.shape[0])


def _layer_norm(x: np.ndarray, weights: Weights, name: str) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return xc / np.sqrt(var + LAYER_NORM_EPS) * weights[f"{name}.weight"] + weights[f"{name}.bias"]


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, same dtype (|error| <= 1.5e-7; see ``_ERF_A``).

    In place on two scratch arrays: a query's feed-forward activations are ~150K values per layer
    and fresh temporaries per step cost more than the arithmetic.
    """
    # erf is 1 to float32 precision past 4; the clip keeps exp(-a²) out of denormals, which
    # cost ~100x per operation on x86.
    a = np.minimum(np.abs(x), 5.0)
    t = a * _ERF_P
    t += 1.0
    np.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = _ERF_A
    poly = t * a5
    for coef in (a4, a3, a2, a1):
        poly += coef
        poly *= t
    np.square(a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a  # 1 - erf(|x|)
    np.subtract(1.0, poly, out=poly)
    return np.copysign(poly, x, out=poly)


def gelu(x: np.ndarray) -> np.ndarray:
    """``F.gelu`` (the exact, erf form: the encoder's layers use ``activation="gelu"``), in place on ``x``."""
    e = erf(x * np.float32(1.0 / math.sqrt(2.0)))
    e += 1.0
    x *= e
    x *= 0.5
    return x


def _attention(
    y: np.ndarray, weights: Weights, name: str, *, n_heads: int, bias: np.ndarray | None
) -> np.ndarray:
    """Multi-head self-attention of ``y [B, S, d]``; ``bias [B, 1, 1, S]`` is 0 / -inf per key (None: all real)."""
    B, S, d = y.shape
    dh = d // n_heads
    qkv = (y.reshape(-1, d) @ weights[f"{name}.in_proj_weight"].T + weights[f"{name}.in_proj_bias"]).reshape(
        B, S, 3, n_heads, dh
    )
    q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, H, S, dh]
    k = qkv[:, :, 1].transpose(0, 2, 3, 1)  # [B, H, dh, S]
    v = qkv[:, :, 2].transpose(0, 2, 1, 3)  # [B, H, S, dh]
    scores = (q @ k) * np.float32(1.0 / math.sqrt(dh))  # [B, H, S, S]
    if bias is not None:
        scores += bias
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    o = (scores @ v).transpose(0, 2, 1, 3).reshape(B, S, d)  # [B, S, d]
    return _linear(o, weights, f"{name}.out_proj")


def forward(weights: Weights, *, n_heads: int, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x [B, T, n_input]`` float32, ``mask [B, T]`` bool (True = real frame) → ``[B, d_out]`` unit vectors.

    Every row must have at least one real frame (the callers' windows always do).
    """
    B, T, _ = x.shape
    x = np.asarray(x, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    h = _linear(x, weights, "in_proj")  # [B, T, d]
    d = h.shape[-1]
    cls = np.broadcast_to(weights["cls"].reshape(1, 1, d), (B, 1, d))
    h = np.concatenate([cls, h], axis=1)  # [B, T+1, d]
    # Padding keys get -inf before the softmax; the CLS key is always real, so no row is all -inf.
    bias = None
    if not mask.all():
        keep = np.concatenate([np.ones((B, 1), dtype=bool), mask], axis=1)
        bias = np.where(keep, np.float32(0.0), np.float32(-np.inf))[:, None, None, :]
    for i in range(layer_count(weights)):
        p = f"blocks.layers.{i}"
        h = h + _attention(
            _layer_norm(h, weights, f"{p}.norm1"), weights, f"{p}.self_attn", n_heads=n_heads, bias=bias
        )
        y = _layer_norm(h, weights, f"{p}.norm2")
        h = h + _linear(gelu(_linear(y, weights, f"{p}.linear1")), weights, f"{p}.linear2")
    h = _layer_norm(h, weights, "ln_f")
    w = mask[:, :, None].astype(np.float32)  # [B, T, 1]
    mean_vec = (h[:, 1:] * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1.0)  # [B, d]
    g = np.float32(1.0 / (1.0 + math.exp(-float(weights["pool_gate"]))))
    z = g * h[:, 0] + (np.float32(1.0) - g) * mean_vec
    out = _linear(z, weights, "head")  # [B, d_out]
    norm = np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), NORMALIZE_EPS)
    return (out / norm).astype(np.float32, copy=False)
