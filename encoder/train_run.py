"""One training run's state: the model, its optimizer, the step and the clocks; saved, resumed, measured.

``OUT/train_state.pt`` holds what ``--resume`` needs (never shipped); every save also writes the
shippable checkpoint beside it (:func:`encoder.embed.write_checkpoint`). The loop that moves a run
forward is in :mod:`encoder.train`.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadenza.errors import ConfigError
from cadenza.git import git_commit
from encoder.config import EncoderConfig
from encoder.embed import Embedder, write_checkpoint
from encoder.evaluate import retrieval_metrics
from encoder.model import Encoder

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def evaluate_splits(
    *, embedder: Any, corpus: Any, splits: tuple[str, ...], max_works: int, seed: int
) -> dict:

    return {
        s: retrieval_metrics(embedder=embedder, corpus=corpus, split=s, max_works=max_works, seed=seed)
        for s in splits
        if corpus.split(s)
    }


@dataclass
class TrainingRun:
    """One training run's moving parts: the model, its optimizer, the step and the clocks.

    ``save`` writes it all down; ``--resume`` picks it up again.
    """

    args: argparse.Namespace
    out: Path
    sampler: Any
    corpus: Any
    corpus_summary: dict[str, Any]
    mean: Any
    std: Any
    config: Any
    model: Any
    opt: Any
    warmup: int
    step: int = 0
    wall_before: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    last_val: dict[str, Any] = field(default_factory=dict)
    init_version: str | None = None
    t0: float = field(default_factory=time.monotonic)

    def wall(self) -> float:
        return self.wall_before + time.monotonic() - self.t0

    def progress(self) -> float:
        # On a shared CPU the step time varies 3x; with a time budget the schedules follow the
        # clock when it runs ahead of the step count, so the run always ends fully annealed.
        frac = self.step / self.args.steps
        if self.args.max_minutes is not None:
            frac = max(frac, self.wall() / (60 * self.args.max_minutes))
        return min(frac, 1.0)

    def out_of_time(self) -> bool:
        return self.args.max_minutes is not None and self.wall() >= 60 * self.args.max_minutes

    def metadata(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        args = self.args
        return {
            "steps": self.step,
            "total_steps": args.steps,
            "wall_s": round(self.wall(), 1),
            "seed": args.seed,
            "threads": args.threads,
            "lr": args.lr,
            "warmup": self.warmup,
            "batch": asdict(self.sampler.spec),
            "loss": {
                "name": "passage supcon + 0.5 piece supcon"
                + (f" + {args.composer_weight} composer supcon" if args.composer_weight > 0 else "")
                + " + repulsion(0.3)",
                "t_start": args.t_start,
                "t_end": args.t_end,
                "composer_weight": args.composer_weight,
            },
            "init_from": self.init_version,
            "corpus": self.corpus_summary,
            "val": self.last_val,
            "git_commit": git_commit(),
            **(extra or {}),
        }

    def save(self) -> None:
        """``train_state.pt`` to resume from, and the shippable checkpoint beside it."""

        _atomic_torch_save(
            {
                "config": self.config.to_json(),
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "step": self.step,
                "wall_s": self.wall(),
                "history": self.history,
                # the input scaling and the start point are part of the run (--init may differ from the corpus)
                "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std],
                "init_from": self.init_version,
            },
            self.out / STATE_FILE,
        )
        self.write_checkpoint()

    def write_checkpoint(self, extra: dict[str, Any] | None = None) -> str:
        return write_checkpoint(
            folder=self.out, model=self.model, mean=self.mean, std=self.std, training=self.metadata(extra)
        )

    def measure(self, splits: tuple[str, ...]) -> dict[str, Any]:
        emb = Embedder(model=self.model, mean=self.mean, std=self.std, model_version="training")  # eval()
        try:
            return evaluate_splits(
                embedder=emb, corpus=self.corpus, splits=splits, max_works=self.args.eval_works, seed=1
            )
        finally:
            self.model.train()


def new_run(*, args: argparse.Namespace, corpus: Any, sampler: Any, out: Path) -> TrainingRun:
    """A model and AdamW, from scratch, from ``--init`` weights, or resumed from ``out``."""
    config = EncoderConfig(d_model=args.d_model, n_heads=4 if args.d_model == 128 else 8)
    torch.manual_seed(args.seed)
    model = Encoder(config)
    # nanoGPT: decay matrices only; biases, LayerNorm gains, the CLS token and the pool gate are not.
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not model.cls]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or p is model.cls]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    run = TrainingRun(
        args=args,
        out=out,
        sampler=sampler,
        corpus=corpus,
        corpus_summary=corpus.summary(),
        mean=corpus.mean,
        std=corpus.std,
        config=config,
        model=model,
        opt=opt,
        warmup=args.warmup if args.warmup is not None else max(1, args.steps // 20),
    )
    if args.init is not None and not args.resume:
        start = Embedder.load(args.init)
        if start.config != config:
            raise ConfigError(f"--init {args.init} has config {start.config}; pass the same --d-model")
        model.load_state_dict(start.torch_model().state_dict())
        # The weights were fitted to that checkpoint's input scaling; a rebuilt corpus (other works,
        # real recordings) fits other statistics, and swapping them would shift every input.
        run.mean, run.std = start.mean, start.std
        run.init_version = start.model_version
        log.info("starting from the weights of %s (%s)", args.init, run.init_version)
    if args.resume:
        state_path = out / STATE_FILE
        if not state_path.is_file():
            raise ConfigError(f"nothing to resume in {out} (no {STATE_FILE}); run without --resume")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if EncoderConfig.from_json(state["config"]) != config:
            raise ConfigError(
                f"{out} was trained with {state['config']}; pass the same --d-model or a new --out"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        run.step, run.wall_before, run.history = state["step"], state["wall_s"], state.get("history", [])
        run.last_val = run.history[-1]["val"] if run.history else {}
        if "mean" in state:  # runs saved before the scaling was kept used the corpus's
            run.mean = np.asarray(state["mean"], dtype=np.float32)
            run.std = np.asarray(state["std"], dtype=np.float32)
            run.init_version = state.get("init_from")
        log.info("resuming %s at step %d", out, run.step)
    return run
