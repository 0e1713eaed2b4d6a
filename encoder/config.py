"""The encoder's shape and windowing: what a checkpoint's ``config.json`` records as ``model``.

Kept apart from :mod:`encoder.model` (torch) so that reading a checkpoint, and running it with
:mod:`encoder.numpy_encoder`, never imports torch (a fresh ``cadenza search`` would pay ~1.5 s).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from encoder.windowing import Windowing


@dataclass(frozen=True)
class EncoderConfig:
    n_input: int = 160  # 143 acoustic + 17 positional
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: int = 4  # feed-forward width = ff_mult * d_model
    dropout: float = 0.1
    d_out: int = 128
    #: How audio is cut into windows for this model; saved with it in every checkpoint.
    windowing: Windowing = field(default_factory=Windowing)

    @property
    def max_frames(self) -> int:
        return self.windowing.max_frames

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, training: dict[str, Any] | None = None) -> EncoderConfig:
        """``data``: the checkpoint's ``model`` record; ``training``: its ``training`` record, only
        read to derive the windowing of a checkpoint that predates it (see :meth:`Windowing.derive`)."""
        known = {f.name for f in fields(cls)} - {"windowing"}
        # Unknown keys come from newer checkpoints; ignoring them keeps old code loading new files.
        kwargs = {k: v for k, v in data.items() if k in known}
        raw = data.get("windowing")
        windowing = (
            Windowing.from_json(raw)
            if isinstance(raw, dict)
            else Windowing.derive(model=data, training=training)
        )
        return cls(**kwargs, windowing=windowing)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
