"""``cadenza timbre fit``'s choice of rerank weights: the one command rebuilds the shipped model."""

from __future__ import annotations

import argparse
import itertools

import pytest

from cadenza.errors import InputError
from encoder.timbre import TimbreModel
from retrieval import timbre_fit
from retrieval.timbre_fit import TRACK_WEIGHT_GRID, WEIGHT_GRID, chosen_weights


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
