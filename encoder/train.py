"""``cadenza train``: contrastive training of the encoder on the corpus HDF5 (resumable).

One linear loop, nanoGPT style: sample a batch (works × passages × views), normalize and
append positions, encode, combined contrastive loss, AdamW step with warm-up + cosine LR and
a cosine temperature 0.5 → 0.05. Every ``--eval-every`` steps the validation retrieval
metrics are logged; every ``--ckpt-every`` steps the run is saved:

- ``OUT/model.safetensors`` + ``OUT/config.json``: the shippable checkpoint (``Embedder.load``);
- ``OUT/train_state.pt``: model + optimizer + step for ``--resume`` (never shipped);
- ``OUT/train_log.jsonl``: one line per logged step.

At the end the test and held-out splits are measured too and written into ``config.json``.
``--ship DIR`` copies the two shippable files to ``DIR``. The run's state (model, optimizer,
clocks, save and resume) is :class:`encoder.train_run.TrainingRun`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cadenza.errors import ConfigError
from cadenza.settings import Settings
from encoder.data import BatchSpec, Corpus, PassageSampler
from encoder.embed import Embedder, prepare_batch
from encoder.evaluate import MeanPoolBaseline
from encoder.feataug import FeatureAugment
from encoder.losses import cadenza_loss, cosine_temperature
from encoder.train_run import TrainingRun, evaluate_splits, new_run

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", type=Path, default=None, help="corpus HDF5 (default $CADENZA_HOME/corpus/corpus.h5)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default $CADENZA_HOME/training/cadenza-v1)"
    )
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps in total (default 2000)")
    parser.add_argument("--batch-works", type=int, default=8, help="works per batch (default 8)")
    parser.add_argument("--passages", type=int, default=4, help="passages per work (default 4)")
    parser.add_argument("--views", type=int, default=4, help="views per passage (default 4)")
    parser.add_argument("--d-model", type=int, default=128, choices=(128, 256), help="Transformer width")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5%% of --steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--eval-every", type=int, default=200, help="validation metrics every N steps")
    parser.add_argument("--ckpt-every", type=int, default=50, help="save every N steps")
    parser.add_argument("--eval-works", type=int, default=40, help="works per split in the retrieval metrics")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop early (saved, measured) after this much wall time",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from the weights of this checkpoint folder (a new run: fresh optimizer and schedules)",
    )
    parser.add_argument("--t-start", type=float, default=0.5, help="temperature at the start (default 0.5)")
    parser.add_argument("--t-end", type=float, default=0.05, help="temperature at the end (default 0.05)")
    parser.add_argument(
        "--composer-weight",
        type=float,
        default=0.3,
        help="weight of the composer-level InfoNCE term (other works of the same composer; 0 = off)",
    )
    parser.add_argument(
        "--composer-pairs", type=int, default=2, help="composers that give two works to every batch"
    )
    parser.add_argument(
        "--view-weights",
        type=_view_weights,
        default=(),
        metavar="KIND=W,...",
        help="relative chance of each stored view kind in a batch, e.g. clean=2,instrument=2,melody=2 "
        "(unlisted kinds 1; pitch/tempo match both signs; default uniform)",
    )
    parser.add_argument(
        "--real-share",
        type=float,
        default=None,
        help="share of each batch's works drawn from real recordings (default: every work equally likely)",
    )
    parser.add_argument(
        "--crop-prob",
        type=float,
        default=0.15,
        help="chance a clip is cut to 3-10 s (short queries; default 0.15)",
    )
    parser.add_argument(
        "--no-feature-augment",
        action="store_true",
        help="only the stored views: no per-clip pitch/tempo/EQ/noise on the frames (encoder.feataug)",
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="only measure the checkpoint in OUT (+ baselines)"
    )
    parser.add_argument(
        "--ship", type=Path, default=None, help="copy the final checkpoint files to this folder"
    )


def _view_weights(text: str) -> tuple[tuple[str, float], ...]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, weight = item.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not sep or not kind or value < 0:
            raise argparse.ArgumentTypeError(f"expected KIND=WEIGHT with WEIGHT >= 0, got {item!r}")
        out.append((kind, value))
    return tuple(out)


def lr_at(*, step: int, total: int, warmup: int, peak: float, floor_frac: float = 0.1) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then a half cosine down to ``floor_frac * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min((step - warmup) / max(total - warmup, 1), 1.0)
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    settings = Settings.from_env()
    corpus = args.corpus or settings.paths.corpus / "corpus.h5"
    out = args.out or settings.paths.home / "training" / "cadenza-v1"
    return Path(corpus), Path(out)


def run(name: str, args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    corpus_path, out = _paths(args)
    corpus = Corpus(corpus_path)
    if args.eval_only:
        return _eval_only(args=args, corpus=corpus, out=out)

    spec = BatchSpec(
        works=args.batch_works,
        passages=args.passages,
        views=args.views,
        augment=None if args.no_feature_augment else FeatureAugment(),
        composer_pairs=args.composer_pairs if args.composer_weight > 0 else 0,
        view_weights=args.view_weights,
        crop_prob=args.crop_prob,
        real_share=args.real_share,
    )
    sampler = PassageSampler(corpus, split="train", spec=spec, seed=args.seed)
    result = train_loop(args=args, corpus=corpus, sampler=sampler, out=out)
    if args.ship:
        args.ship.mkdir(parents=True, exist_ok=True)
        for f in ("model.safetensors", "config.json"):
            shutil.copyfile(out / f, args.ship / f)
        log.info("shipped %s to %s", result["model_version"], args.ship)
    print(json.dumps(result, indent=1))
    return 0


def _eval_only(*, args: argparse.Namespace, corpus: Any, out: Path) -> int:
    splits = ("val", "test", "heldout")
    trained = Embedder.load(out)
    untrained = Embedder.untrained(seed=args.seed, config=trained.config)
    untrained.mean, untrained.std = corpus.mean, corpus.std  # same input scaling as trained
    report = {
        "model_version": trained.model_version,
        "trained": evaluate_splits(
            embedder=trained, corpus=corpus, splits=splits, max_works=args.eval_works, seed=1
        ),
        "untrained_same_config": evaluate_splits(
            embedder=untrained, corpus=corpus, splits=splits, max_works=args.eval_works, seed=1
        ),
        "mean_pooled_features": evaluate_splits(
            embedder=MeanPoolBaseline(mean=corpus.mean, std=corpus.std),
            corpus=corpus,
            splits=splits,
            max_works=args.eval_works,
            seed=1,
        ),
    }
    print(json.dumps(report, indent=1))
    return 0


def _train_step(run: TrainingRun) -> dict[str, Any]:
    """One optimizer step on the next batch; returns its log row."""
    args = run.args
    # warm-up always counts real steps; afterwards the schedule position may run ahead by time
    virtual_step = run.step if run.step < run.warmup else max(run.step, int(run.progress() * args.steps))
    lr = lr_at(step=virtual_step, total=args.steps, warmup=run.warmup, peak=args.lr)
    for g in run.opt.param_groups:
        g["lr"] = lr
    temp = cosine_temperature(
        step=virtual_step, total_steps=args.steps, t_start=args.t_start, t_end=args.t_end
    )
    batch = run.sampler.batch(run.step)
    feats, mask = prepare_batch(windows=batch.windows, lengths=batch.lengths, mean=run.mean, std=run.std)
    emb = run.model(torch.from_numpy(feats), torch.from_numpy(mask))  # [B, d_out]
    loss, parts = cadenza_loss(
        embeddings=emb,
        passage_labels=torch.from_numpy(batch.passage_labels),
        work_labels=torch.from_numpy(batch.work_labels),
        temperature=temp,
        composer_labels=(
            torch.from_numpy(batch.composer_labels)
            if args.composer_weight > 0 and batch.composer_labels is not None
            else None
        ),
        composer_weight=args.composer_weight,
    )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0))
    run.opt.step()
    run.step += 1
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise ConfigError(
            f"training diverged at step {run.step} (loss {loss_value}); lower --lr and --resume"
        )
    return {
        "step": run.step,
        "loss": round(loss_value, 4),
        **{k: round(v, 4) for k, v in parts.items()},
        "temperature": round(temp, 4),
        "lr": lr,
        "grad_norm": round(grad_norm, 3),
        "wall_s": round(run.wall(), 1),
    }


def train_loop(*, args: argparse.Namespace, corpus: Any, sampler: Any, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    run = new_run(args=args, corpus=corpus, sampler=sampler, out=out)
    run.model.train()
    bar = tqdm(total=args.steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True)
    with (out / LOG_FILE).open("a") as log_f:
        while run.step < args.steps:
            row = _train_step(run)
            step = run.step
            if step % args.eval_every == 0 or step == args.steps:
                val = run.measure(("val",)).get("val", {})
                row["val"] = run.last_val = val
                run.history.append({"step": step, "val": val})
                log.info(
                    "step %d val passage_top1 %.3f work_p@10 %.3f",
                    step,
                    val.get("passage_top1", float("nan")),
                    val.get("work_p_at_10", float("nan")),
                )
            log_f.write(json.dumps(row) + "\n")
            log_f.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", t=f"{row['temperature']:.3f}", lr=f"{row['lr']:.1e}")
            out_of_time = run.out_of_time()
            if step % args.ckpt_every == 0 or step == args.steps or out_of_time:
                run.save()
            if out_of_time:
                log.warning(
                    "stopping at step %d of %d: --max-minutes %.1f reached",
                    step,
                    args.steps,
                    args.max_minutes,
                )
                break
    bar.close()
    splits = run.measure(("val", "test", "heldout"))
    if "val" in splits:
        run.last_val = splits["val"]
    version = run.write_checkpoint({"final_metrics": splits})
    return {"model_version": version, "steps": run.step, "wall_s": round(run.wall(), 1), "metrics": splits}
