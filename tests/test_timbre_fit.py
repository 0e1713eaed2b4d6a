"""``cadenza timbre fit``'s choice of rerank weights: the one command rebuilds the shipped model."""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

import pytest

from cadenza.errors import InputError
from encoder.corpus_real import HELDOUT_SOURCES
from encoder.timbre import CARD_FILE, DEFAULT_TIMBRE_DIR, TimbreModel
from retrieval import timbre_fit
from retrieval.timbre_fit import (
    DEFAULT_MAX_SECONDS,
    DIM,
    FOLD_GROUPS,
    SHRINK,
    TRACK_WEIGHT_GRID,
    WEIGHT_GRID,
    chosen_weights,
    source_folds,
)

ROOT = Path(__file__).resolve().parents[1]


def _p_at_10(best: tuple[float, float]) -> dict[str, float]:
    """Cross-validated numbers (as :func:`retrieval.timbre_fit.cross_validate` names them) peaking at ``best``."""
    out = {}
    for w, tw in itertools.product(WEIGHT_GRID, TRACK_WEIGHT_GRID):
        key = f"embedding + {w:g} x projection" + (f" + {tw:g} x track" if tw else "")
        out[key] = 0.9 if (w, tw) == best else 0.5
    return out


def test_the_default_weights_are_the_shipped_models():
    """Without flags the fit carries the weights the shipped timbre model has (chosen through the product)."""
    shipped = TimbreModel.load()
    p = _p_at_10((0.25, 0.5))
    assert chosen_weights(p) == (shipped.weight, shipped.track_weight)
    assert chosen_weights(p, choice="cv") == (0.25, 0.5)
    assert chosen_weights(p, choice="cv", given=(2.0, None)) == (2.0, 0.5)
    with pytest.raises(InputError, match="--weights"):
        chosen_weights(p, choice="best")


def test_the_command_line_defaults_to_the_product_weights():
    parser = argparse.ArgumentParser()
    timbre_fit.configure("timbre", parser)
    args = parser.parse_args(["fit", "--audio", "x"])
    assert (args.weights, args.weight, args.track_weight) == ("product", None, None)
    assert parser.parse_args(["fit", "--audio", "x", "--weights", "cv"]).weights == "cv"


def test_many_sources_are_held_out_in_interleaved_groups_each_exactly_once():
    assert source_folds(5) == list(itertools.combinations(range(5), 2))
    folds = source_folds(21)
    assert len(folds) == FOLD_GROUPS
    held = sorted(i for f in folds for i in f)
    assert held == list(range(21))  # every source evaluated once, never while it is fitted on
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 1


def test_the_shipped_model_was_fitted_on_the_default_training_sources_with_the_current_settings():
    """The one command rebuilds the shipped model only if its sources and settings are today's: the default
    package list of scripts/fetch_real_music.sh less the held-out sources, and this module's constants."""
    script = (ROOT / "scripts" / "fetch_real_music.sh").read_text()
    default = re.search(r'pkgs=\$\{\*:-"([^"]*)"\}', script)
    assert default is not None
    training = sorted(set(default.group(1).split()) - set(HELDOUT_SOURCES))
    card = json.loads((DEFAULT_TIMBRE_DIR / CARD_FILE).read_text())
    assert card["fitted_on"]["sources"] == training
    assert card["held_out_never_read"] == list(HELDOUT_SOURCES)
    assert (card["shrink"], card["dim"], card["fitted_on"]["max_seconds_per_track"]) == (
        SHRINK,
        DIM,
        DEFAULT_MAX_SECONDS,
    )
