"""Contrastive losses against hand-computed values, plus the numerical guards."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from encoder.losses import cadenza_loss, cosine_temperature, repulsion_loss, supcon_loss


def _unit(angles_deg: list[float]) -> torch.Tensor:
    a = np.radians(angles_deg)
    return torch.tensor(np.stack([np.cos(a), np.sin(a)], axis=1), dtype=torch.float64)


def _by_hand(emb: np.ndarray, labels: list[int], t: float, w: np.ndarray | None = None) -> float:
    """The SupCon L_out formula with plain loops: mean over anchors having positives."""
    n = len(labels)
    losses = []
    for i in range(n):
        denom = sum(math.exp(float(emb[i] @ emb[k]) / t) for k in range(n) if k != i)
        num, wsum = 0.0, 0.0
        for j in range(n):
            if j != i and labels[j] == labels[i]:
                wij = 1.0 if w is None else float(w[i, j])
                num += wij * (float(emb[i] @ emb[j]) / t - math.log(denom))
                wsum += wij
        if wsum > 0:
            losses.append(-num / wsum)
    return sum(losses) / len(losses)


def test_supcon_matches_hand_computation_for_four_points():
    emb = _unit([0.0, 30.0, 90.0, 180.0])  # cosines: 0-1 0.866, 0-2 0, 0-3 -1, 1-2 0.5, 2-3 0, 1-3 -0.866
    labels = [0, 0, 1, 1]
    got = supcon_loss(embeddings=emb, labels=torch.tensor(labels), temperature=0.5).item()
    # anchor 0 by hand: positives {1}; denominator exp(.866/.5)+exp(0)+exp(-1/.5)
    a0 = -(0.8660254 / 0.5 - math.log(math.exp(0.8660254 / 0.5) + 1.0 + math.exp(-2.0)))
    assert a0 == pytest.approx(0.1830, abs=1e-3)  # -(1.732 - log(5.652 + 1 + 0.135))
    assert got == pytest.approx(_by_hand(emb.numpy(), labels, 0.5), rel=1e-9)


def test_supcon_weighted_positives_and_several_positives():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [0, 0, 0, 1, 1, 2]  # anchor 5 has no positive
    w = rng.uniform(0.1, 2.0, (6, 6))
    got = supcon_loss(
        embeddings=torch.tensor(x), labels=torch.tensor(labels), temperature=0.1, pos_weights=torch.tensor(w)
    ).item()
    assert got == pytest.approx(_by_hand(x, labels, 0.1, w), rel=1e-9)


def test_anchors_without_positives_are_excluded_and_never_nan():
    emb = _unit([0.0, 10.0, 120.0, 240.0]).requires_grad_(True)
    only_pair = supcon_loss(embeddings=emb, labels=torch.tensor([0, 0, 1, 2]), temperature=0.1)
    assert torch.isfinite(only_pair)
    assert only_pair.item() == pytest.approx(_by_hand(emb.detach().numpy(), [0, 0, 1, 2], 0.1), rel=1e-9)
    none = supcon_loss(embeddings=emb, labels=torch.tensor([0, 1, 2, 3]), temperature=0.1)
    assert none.item() == 0.0
    none.backward()
    assert torch.isfinite(emb.grad).all()


def test_cold_temperature_gradients_are_finite():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(32, 16), dim=1).requires_grad_(True)
    labels = torch.arange(32) // 4
    loss = supcon_loss(embeddings=x, labels=labels, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_clustered_configuration_scores_lower_than_shuffled():
    torch.manual_seed(1)
    centers = torch.nn.functional.normalize(torch.randn(8, 32), dim=1)
    labels = torch.arange(32) // 4
    clustered = torch.nn.functional.normalize(centers[labels] + 0.1 * torch.randn(32, 32), dim=1)
    shuffled_labels = labels[torch.randperm(32)]
    good = supcon_loss(embeddings=clustered, labels=labels, temperature=0.1)
    bad = supcon_loss(embeddings=clustered, labels=shuffled_labels, temperature=0.1)
    assert good.item() < bad.item() - 1.0


def test_repulsion_by_hand():
    emb = _unit([0.0, 30.0, 90.0])  # cos(0,30)=0.866 same label; cos(0,90)=0, cos(30,90)=0.5
    labels = torch.tensor([0, 0, 1])
    got = repulsion_loss(embeddings=emb, labels=labels, margin=0.2, weight=2.0).item()
    # negative ordered pairs: (0,2),(2,0) at 0 -> 0; (1,2),(2,1) at 0.5 -> (0.3)^2 each
    assert got == pytest.approx(2.0 * (2 * 0.09) / 4, rel=1e-9)
    assert repulsion_loss(embeddings=emb, labels=torch.zeros(3), margin=0.2).item() == 0.0


def test_cosine_temperature_schedule():
    assert cosine_temperature(step=0, total_steps=100) == pytest.approx(0.5)
    assert cosine_temperature(step=50, total_steps=100) == pytest.approx(0.275)
    assert cosine_temperature(step=100, total_steps=100) == pytest.approx(0.05)
    assert cosine_temperature(step=500, total_steps=100) == pytest.approx(0.05)


def test_combined_loss_prefers_passages_apart_within_a_work():
    """Views of one passage together AND passages of a work near each other beats a merged work."""
    torch.manual_seed(2)
    work_c = torch.nn.functional.normalize(torch.randn(4, 64), dim=1)  # 4 works
    passage_off = torch.nn.functional.normalize(torch.randn(16, 64), dim=1)  # 4 passages each
    passage = torch.arange(64) // 4  # 4 views per passage
    work = torch.arange(64) // 16
    noise = 0.05 * torch.randn(64, 64)
    separated = torch.nn.functional.normalize(work_c[work] + 0.6 * passage_off[passage] + noise, dim=1)
    merged = torch.nn.functional.normalize(work_c[work] + noise, dim=1)
    kw = {"passage_labels": passage, "work_labels": work, "temperature": 0.1}
    sep, parts = cadenza_loss(embeddings=separated, **kw)
    mer, _ = cadenza_loss(embeddings=merged, **kw)
    assert sep.item() < mer.item()
    assert set(parts) == {"passage", "piece", "repulsion"}


def test_composer_term_counts_only_other_works_and_switches_repulsion_to_composers():
    """Composer positives are other works of the same composer; same-work clips are not positives."""
    emb = _unit([0, 10, 60, 70, 180, 190])  # works 0,0,1,1,2,2; composers A,A,A,A,B,B
    passage = torch.tensor([0, 1, 2, 3, 4, 5])
    work = torch.tensor([0, 0, 1, 1, 2, 2])
    composer = torch.tensor([0, 0, 0, 0, 1, 1])
    t = 0.2
    total, parts = cadenza_loss(
        embeddings=emb,
        passage_labels=passage,
        work_labels=work,
        temperature=t,
        composer_labels=composer,
        composer_weight=0.5,
        repulsion_margin=0.3,
    )
    e = emb.numpy()
    other_work = (work.numpy()[:, None] != work.numpy()[None, :]).astype(float)
    expected = _by_hand(e, composer.tolist(), t, w=other_work)  # anchors 4, 5 have no positive: skipped
    assert parts["composer"] == pytest.approx(expected, rel=1e-6)
    # repulsion now runs between composers only: works 0 and 1 (cos 60° = 0.5 > 0.3) are not pushed
    assert parts["repulsion"] == pytest.approx(
        repulsion_loss(embeddings=emb, labels=composer, margin=0.3).item(), rel=1e-6
    )
    assert parts["repulsion"] == pytest.approx(0.0, abs=1e-12)
    without, parts0 = cadenza_loss(embeddings=emb, passage_labels=passage, work_labels=work, temperature=t)
    assert "composer" not in parts0 and parts0["repulsion"] > 0  # by work: 0.5 > 0.3 is pushed
    assert total.item() == pytest.approx(
        parts["passage"] + 0.5 * parts["piece"] + 0.5 * parts["composer"] + parts["repulsion"], rel=1e-6
    )
