"""Contrastive losses for moment embeddings (SupContrast style, multi-positive).

Two levels of likeness are trained at once:

- **passage level**: views of the *same* passage (augmentations, another instrument, the
  melody-only render, a transposition, a tempo change) are positives; everything else,
  including other passages of the same work, is a negative, so a passage is closer to its
  own views than to the rest of its work;
- **piece level**: any clip of the same work is a positive, so a work forms one region;
- **composer level** (optional): clips of *other works* by the same composer are weak
  positives, so style organizes the space between works;
- **repulsion**: clips of different works (of different composers, when composer labels are
  given) should not be more similar than a margin.

Shape contract used throughout: ``embeddings [N, D]`` are L2-normalized (so ``e @ e.T``
is a cosine similarity in ``[-1, 1]``), ``labels [N]`` are integers, ``N`` is the batch.
"""

from __future__ import annotations

import math

import torch


def supcon_loss(
    *,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    pos_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-positive supervised-contrastive InfoNCE (Khosla et al. 2020, L_out).

    ``embeddings [N, D]`` normalized, ``labels [N]`` int, ``pos_weights [N, N]`` ≥ 0 optional
    (weight of positive ``j`` for anchor ``i``; None = all 1). For anchor ``i`` with positives
    ``P(i)`` (same label, not ``i`` itself)::

        loss_i = - sum_{j in P(i)} w_ij * log( exp(s_ij/t) / sum_{k != i} exp(s_ik/t) ) / sum_j w_ij

    Returns the mean of ``loss_i`` over anchors that have a positive of non-zero weight
    (a scalar; 0 with a gradient path if no anchor has one, never NaN).
    """
    N = embeddings.shape[0]
    eye = torch.eye(N, dtype=torch.bool, device=embeddings.device)  # [N, N]
    logits = embeddings @ embeddings.T / temperature  # [N, N]
    # An anchor is never its own candidate: -inf drops it from the softmax denominator.
    logits = logits.masked_fill(eye, float("-inf"))
    # Max-subtraction before exp: at t = 0.05 the logits reach ±20, exp(20) is fine in fp32 but
    # the trick keeps it safe at any temperature. The max is a constant per row (detached), so
    # it cancels in the log-softmax and changes neither value nor gradient.
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # [N, N], row max = 0
    log_denom = torch.log(torch.exp(logits).sum(dim=1, keepdim=True))  # [N, 1]; >= log(1) = 0
    log_prob = (logits - log_denom).masked_fill(eye, 0.0)  # [N, N]; 0 on the diagonal, not -inf*0=NaN
    positive = (labels[:, None] == labels[None, :]) & ~eye  # [N, N]
    w = positive.to(embeddings.dtype)
    if pos_weights is not None:
        w = w * pos_weights.to(embeddings.dtype)
    w_sum = w.sum(dim=1)  # [N]
    has_pos = w_sum > 0
    if not bool(has_pos.any()):
        return embeddings.sum() * 0.0  # keeps the graph (and .backward()) valid
    per_anchor = -(w * log_prob).sum(dim=1) / w_sum.clamp_min(1e-12)  # [N]
    return per_anchor[has_pos].mean()


def repulsion_loss(
    *, embeddings: torch.Tensor, labels: torch.Tensor, margin: float, weight: float = 1.0
) -> torch.Tensor:
    """``weight * mean over negative pairs of relu(s_ij - margin)^2``.

    ``embeddings [N, D]`` normalized, ``labels [N]``; a pair is negative when the labels differ.
    Squared hinge: zero gradient below the margin, a gentle push just above it. 0 if no negatives.
    """
    sim = embeddings @ embeddings.T  # [N, N]
    negative = labels[:, None] != labels[None, :]  # [N, N]; the diagonal is never negative
    if not bool(negative.any()):
        return embeddings.sum() * 0.0
    excess = torch.relu(sim - margin)[negative]  # [n_neg]
    return weight * (excess**2).mean()


def cosine_temperature(*, step: int, total_steps: int, t_start: float = 0.5, t_end: float = 0.05) -> float:
    """Temperature annealed from ``t_start`` to ``t_end`` on a half cosine over ``total_steps``.

    A warm start (0.5) spreads gradient over many negatives while the space is unformed; a cold
    end (0.05) concentrates on the hardest negatives (other passages of the same work).
    """
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return t_end + 0.5 * (t_start - t_end) * (1.0 + math.cos(math.pi * frac))


def cadenza_loss(
    *,
    embeddings: torch.Tensor,
    passage_labels: torch.Tensor,
    work_labels: torch.Tensor,
    temperature: float,
    piece_weight: float = 0.5,
    repulsion_margin: float = 0.3,
    repulsion_weight: float = 1.0,
    composer_labels: torch.Tensor | None = None,
    composer_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training objective: passage InfoNCE + ``piece_weight`` × work InfoNCE
    + ``composer_weight`` × composer InfoNCE + repulsion.

    ``embeddings [N, D]`` normalized; ``passage_labels [N]`` unique per passage across the batch;
    ``work_labels [N]``; ``composer_labels [N]`` optional. The work term runs at a temperature no
    colder than 0.1 so that it gathers a work without fighting the passage term, which wants
    passages of one work apart; the composer term no colder than 0.2 and only with other works
    as positives (the work term already gathers a work). With composer labels, repulsion acts
    between composers only: pushing two works of one composer apart would undo the composer term.
    Returns ``(total scalar, {"passage", "piece", "composer", "repulsion": float})`` for logging.
    """
    passage = supcon_loss(embeddings=embeddings, labels=passage_labels, temperature=temperature)
    piece = supcon_loss(embeddings=embeddings, labels=work_labels, temperature=max(temperature, 0.1))
    total = passage + piece_weight * piece
    parts = {"passage": float(passage.detach()), "piece": float(piece.detach())}
    repel_labels = work_labels
    if composer_labels is not None:
        other_work = (work_labels[:, None] != work_labels[None, :]).to(embeddings.dtype)  # [N, N]
        composer = supcon_loss(
            embeddings=embeddings,
            labels=composer_labels,
            temperature=max(temperature, 0.2),
            pos_weights=other_work,
        )
        total = total + composer_weight * composer
        parts["composer"] = float(composer.detach())
        repel_labels = composer_labels
    repel = repulsion_loss(
        embeddings=embeddings, labels=repel_labels, margin=repulsion_margin, weight=repulsion_weight
    )
    total = total + repel
    parts["repulsion"] = float(repel.detach())
    return total, parts
