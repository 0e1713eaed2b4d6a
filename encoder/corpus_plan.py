"""The corpus plan: the composers, the split a work falls in, the views it is rendered in, the order.

Pure and deterministic in the work id (a stable hash), so a build, its resume and the benchmarks
that pick held-out works (:mod:`bench.library`) all agree without reading the corpus file.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from encoder.render import FLUID_SOUNDFONT, stable_hash

#: Corpus folders with enough material; the default composer set.
DEFAULT_COMPOSERS: tuple[str, ...] = (
    "bach",
    "beethoven",
    "essenFolksong",
    "haydn",
    "josquin",
    "monteverdi",
    "mozart",
    "oneills1850",
    "palestrina",
    "ryansMammoth",
    "schumann_clara",
    "schumann_robert",
    "trecento",
)
#: Never trained on: a classical quartet writer and a Renaissance one (their neighbours in
#: style, Mozart/Beethoven and Palestrina, are in training), for honest generalization tests.
HELDOUT_COMPOSERS: tuple[str, ...] = ("haydn", "josquin")

_CHORAL = (52, 19, 48)
_QUARTET = (48, 0, 19)
_FOLK = (73, 0, 24, 40)
#: Primary ("clean") program choices per composer; others get :data:`_DEFAULT_PRIMARY`.
PRIMARY_PROGRAMS: dict[str, tuple[int, ...]] = {
    "bach": (19, 0, 52, 6),
    "palestrina": _CHORAL,
    "josquin": _CHORAL,
    "monteverdi": _CHORAL,
    "trecento": (52, 6, 48),
    "beethoven": _QUARTET,
    "haydn": _QUARTET,
    "mozart": _QUARTET,
    "schumann_robert": (0, 48),
    "schumann_clara": (0, 48),
    "ryansMammoth": _FOLK,
    "oneills1850": _FOLK,
    "essenFolksong": (73, 0, 52),
}
_DEFAULT_PRIMARY = (0, 48, 19)
#: Programs for the 'instrument' views.
OTHER_PROGRAMS: tuple[int, ...] = (0, 6, 19, 24, 42, 48, 52, 56, 71, 73)
MELODY_PROGRAMS: tuple[int, ...] = (53, 74)


@dataclass(frozen=True)
class ViewSpec:
    name: str  # dataset suffix
    view: str  # the 'view' attribute
    program: int
    transpose: int = 0
    tempo_scale: float = 1.0  # render speed; time_scale = 1 / tempo_scale
    melody_only: bool = False
    source: str = "render"  # 'render' or an augmentation of the clean audio
    soundfont: str = "timgm6mb"  # encoder.render.DEFAULT_SOUNDFONT / FLUID_SOUNDFONT


def split_of(*, work_id: str, composer: str) -> str:
    if composer in HELDOUT_COMPOSERS:
        return "heldout"
    bucket = stable_hash("split:" + work_id) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def plan_views(*, work_id: str, composer: str, fluid: bool = False) -> list[ViewSpec]:
    """The views rendered for one work (deterministic in the work id); ``fluid`` adds the clean
    program played by the second soundfont (FluidR3_GM), when it is installed."""
    h = stable_hash("plan:" + work_id)
    choices = PRIMARY_PROGRAMS.get(composer, _DEFAULT_PRIMARY)
    primary = choices[h % len(choices)]
    others = [p for p in OTHER_PROGRAMS if p != primary]
    # Cross-instrument and melody re-finding were the weakest benchmark rows with 1-2 other
    # instruments and one melody timbre per work; 2-3 and both timbres give more such pairs.
    # The first instrument(s) and the 'melody' view keep their earlier programs, so a corpus
    # built with fewer views only gains the new ones when the build is resumed.
    n_instr = 2 + (h >> 8) % 2
    start = (h >> 16) % len(others)
    instr = [others[(start + 3 * i) % len(others)] for i in range(n_instr)]
    semis = 1 if (h >> 24) % 2 else -1
    faster = bool((h >> 32) % 2)
    specs = [ViewSpec("clean", "clean", primary)]
    specs += [ViewSpec(f"instrument-{p}", "instrument", p) for p in instr]
    melody = MELODY_PROGRAMS[(h >> 40) % 2]
    specs.append(ViewSpec("melody", "melody", melody, melody_only=True))
    specs += [ViewSpec(f"melody-{p}", "melody", p, melody_only=True) for p in MELODY_PROGRAMS if p != melody]
    specs += [ViewSpec(v, v, primary, source=v) for v in ("noise", "eq", "mp3", "reverb")]
    specs.append(ViewSpec(f"pitch{semis:+d}", f"pitch{semis:+d}", primary, transpose=semis))
    pct = 5 if faster else -5
    specs.append(ViewSpec(f"tempo{pct:+d}", f"tempo{pct:+d}", primary, tempo_scale=1.0 + pct / 100.0))
    if fluid:
        # Same notes, same program, another synthesizer: a production change, not an arrangement
        # change, so timbre is not one soundfont's (the real recordings vary production too).
        specs.append(ViewSpec("fluid", "soundfont", primary, soundfont=FLUID_SOUNDFONT))
    return specs


def order_works(works: list) -> list:
    """Round-robin over composers, each composer's works in a stable pseudo-random order."""
    by_comp: dict[str, list] = defaultdict(list)
    for w in works:
        by_comp[w.composer].append(w)
    queues = [
        sorted(ws, key=lambda w: stable_hash("order:" + w.work_id)) for _, ws in sorted(by_comp.items())
    ]
    out: list = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out
