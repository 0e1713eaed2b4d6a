"""The re-finding tuning replay behind bench/results/refind_replay.md (session 10): product search on the
TRAINING sources' ingested library, each miss with its internals (route, pool, checked tracks, alignments,
terms), and settings overridden per run. Held-out sources (HO=1) only to list the shipped bench's misses.

    REFIND_WORK=DIR python scripts/refind_replay.py setup          # DIR/train-db: an ingested training library
    REFIND_WORK=DIR python scripts/refind_replay.py v all '{}' '{"P.PASSAGE_TRACKS_BAND_LIMITED": 40}'
    REFIND_WORK=DIR HO=1 python scripts/refind_replay.py setup_ho  # the held-out bench's queries (seed 0)

The training library is made as bench/likeness_product.py makes the held-out one (first 120 s of each
track of the five training sources, retrieval.ingest); DIR/train_q.pkl maps library index -> track id.
Scratch quality; not part of the product or of CI."""

import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from encoder.corpus_real import HELDOUT_SOURCES

W = Path(os.environ["REFIND_WORK"])
HO = bool(os.environ.get("HO"))
DB = W / ("ho-db" if HO else "train-db")
QP = W / ("ho_queries.pkl" if HO else "queries.pkl")

TRAIN = ("freedroidrpg-data", "hedgewars-data", "megaglest-data", "supertux-data", "supertuxkart-data")
assert not set(TRAIN) & set(HELDOUT_SOURCES)
N = 60


def ingest_training():
    """DIR/train-db: the training sources' library ingested as the benchmark ingests the held-out one."""
    from bench.likeness_product import _write_library
    from bench.pgbench_db import keep_lock_files_for_the_run, open_temp_database
    from bench.real_sources import load_sources
    from encoder.embed import resolve_embedder
    from retrieval.ingest import ingest

    keep_lock_files_for_the_run()
    src = load_sources(Path("/work/data/real"), max_seconds=120.0, only=TRAIN)
    sidecar = _write_library(src, W / "train-lib")
    embedder, _ = resolve_embedder(None)
    db = open_temp_database(W / "train-db")
    ingest(
        db=db, paths=[W / "train-lib"], embedder=embedder, workers=1, metadata_file=sidecar, progress=False
    )
    with db.connection() as conn:
        id_of = {str(t): int(i) for i, t in conn.execute("SELECT id, title FROM tracks").fetchall()}
    db.close()
    (W / "train_q.pkl").write_bytes(pickle.dumps({"db_id": [id_of.get(t.name, -1) for t in src.tracks]}))


def setup():
    if not (W / "train_q.pkl").exists():
        ingest_training()
    from bench.likeness import DISTORTIONS
    from bench.memsearch import features
    from bench.real_sources import load_sources
    from bench.recorded import make_recorded_queries
    from encoder.features import MEL

    src = load_sources(Path("/work/data/real"), max_seconds=120.0, only=TRAIN)
    m = pickle.loads((W / "train_q.pkl").read_bytes())
    names = [t.name for t in src.tracks]
    rng = np.random.default_rng(7)
    audio = [t.audio for t in src.tracks]
    qs = {}
    for label, kind, length in DISTORTIONS:
        qs[label] = [
            (q.work_index, q.start_s, q.length_s, q.audio)
            for q in make_recorded_queries(tracks=audio, kind=kind, n=N, rng=rng, length_s=length)
        ]
    need = sorted({q[0] for v in qs.values() for q in v})
    mels = {i: features(y=audio[i])[:, MEL] for i in need}
    (W / "queries.pkl").write_bytes(pickle.dumps(dict(names=names, db_id=m["db_id"], qs=qs, mels=mels)))
    print("queries", {k: len(v) for k, v in qs.items()})


def run(configs, only=None, verbose=True):
    import torch

    torch.set_num_threads(1)
    import retrieval.search as S
    from bench.metrics import HIT_TOLERANCE_S, literal_repeat
    from bench.pgbench_db import keep_lock_files_for_the_run, open_temp_database
    from encoder.embed import resolve_embedder
    from retrieval import passage as P
    from retrieval.types import SearchRequest

    keep_lock_files_for_the_run()
    d = pickle.loads(QP.read_bytes())
    embedder, _ = resolve_embedder(None)
    db = open_temp_database(DB)
    cap = {}
    orig_add = P.add_passage_term

    def add(cands, aligned):
        out = orig_add(cands, aligned)
        cap["cands"] = list(out)
        cap["aligned"] = dict(aligned)
        return out

    P.add_passage_term = add
    orig_cp = P.check_passages

    def cp(**kw):
        cap["cp"] = kw
        return orig_cp(**kw)

    P.check_passages = cp
    orig_h = S._harmony_candidates

    def harm(*a, **k):
        rows = orig_h(*a, **k)
        cap["harm"] = [int(r.track_id) for r in rows]
        return rows

    S._harmony_candidates = harm
    try:
        for cfg in configs:
            saved = {}
            for name, v in cfg.items():
                if name == "TRACKS":
                    saved[(P.top_tracks, "__defaults__")] = P.top_tracks.__defaults__
                    P.top_tracks.__defaults__ = (v, ())
                    continue
                mod, attr = name.split(".") if "." in name else ("S", name)
                target = {"S": S, "P": P}[mod] if mod in ("S", "P") else __import__(mod, fromlist=["x"])
                saved[(target, attr)] = getattr(target, attr)
                setattr(target, attr, v)
            t0 = time.time()
            summary = {}
            misses = []
            for label, qs in d["qs"].items():
                if only and label not in only:
                    continue
                h = rep = own1 = 0
                n = 0
                for qi, (wi, t, length, audio) in enumerate(qs):
                    right = d["db_id"][wi]
                    if right < 0:
                        continue
                    n += 1
                    cap.clear()
                    resp = S.search(
                        db=db, embedder=embedder, request=SearchRequest(audio=audio, start_s=None, k=10)
                    )
                    r0 = resp.results[0] if resp.results else None
                    hit = r0 is not None and r0.track_id == right and abs(r0.start - t) <= HIT_TOLERANCE_S
                    own = r0 is not None and r0.track_id == right
                    isrep = (
                        own
                        and not hit
                        and literal_repeat(
                            mel=d["mels"][wi], true_start_s=t, found_start_s=r0.start, length_s=length
                        )
                    )
                    h += hit
                    own1 += own
                    rep += hit or isrep
                    if not hit:
                        info = dict(
                            label=label,
                            qi=qi,
                            track=d["names"][wi][:50],
                            t=t,
                            route=resp.query.get("route"),
                            band=resp.query.get("band_limited"),
                            top_track=r0.track_id if r0 else None,
                            right=right,
                            top_start=r0.start if r0 else None,
                            own=own,
                            repeat=isrep,
                            top_score=r0.score if r0 else None,
                        )
                        cands = cap.get("cands", [])
                        rc = [c for c in cands if c.track_id == right]
                        info["in_pool"] = bool(rc)
                        info["in_harm"] = right in cap.get("harm", [])
                        al = cap.get("aligned", {})
                        info["checked"] = right in al
                        if right in al:
                            info["right_align"] = (round(al[right].score, 3), al[right].start_s)
                        if r0 is not None and r0.track_id in al:
                            info["top_align"] = (round(al[r0.track_id].score, 3), al[r0.track_id].start_s)
                        if rc:
                            b = max(rc, key=lambda c: c.score)
                            info["right_score_pre_graph"] = round(b.score, 4)
                            info["right_rank_pre_graph"] = [c.track_id for c in cands].index(right)
                            info["right_terms"] = {
                                k: (round(w, 2), round(v, 3)) for k, (w, v) in b.terms.items()
                            }
                        if cands:
                            top = cands[0]
                            info["top_pre_graph"] = (top.track_id, round(top.score, 4))
                            info["top_terms"] = {
                                k: (round(w, 2), round(v, 3)) for k, (w, v) in top.terms.items()
                            }
                        kw = cap.get("cp")
                        if own and kw is not None:
                            qc = kw["query_chroma"]
                            for nm, ch in (
                                ("full", kw["chromas"].get(right)),
                                ("band", (kw.get("band_chromas") or {}).get(right)),
                            ):
                                if ch is None:
                                    continue
                                a_true = P.align(
                                    query_chroma=qc, track_chroma=ch, approx_starts=[t], search_s=0.3
                                )
                                a_any = P.align(
                                    query_chroma=qc, track_chroma=ch, approx_starts=[0.0], search_s=np.inf
                                )
                                info[f"al_true_{nm}"] = (round(a_true.score, 3), a_true.start_s)
                                info[f"al_any_{nm}"] = (round(a_any.score, 3), a_any.start_s)
                            segs = sorted(
                                [c for c in kw["cands"] if c.track_id == right], key=lambda c: -c.emb_sim
                            )[:3]
                            info["best_emb_segs"] = [(c.start_s, round(c.emb_sim, 3)) for c in segs]
                        misses.append(info)
                summary[label] = (round(h / n, 3), round(own1 / n, 3), round(rep / n, 3), n)
            print(
                "CFG",
                json.dumps(
                    {k: (v if not isinstance(v, float) or np.isfinite(v) else str(v)) for k, v in cfg.items()}
                ),
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
            for k, v in summary.items():
                print(f"  {k:9s} top1 {v[0]}  own {v[1]}  rep {v[2]}  n {v[3]}")
            print("  mean top1", round(float(np.mean([v[0] for v in summary.values()])), 4), flush=True)
            if verbose:
                for m in misses:
                    print("  MISS", json.dumps(m, default=str))
            for (target, attr), v in saved.items():
                setattr(target, attr, v)
    finally:
        db.close()


def setup_heldout():
    """Held-out (evaluation only, once): the shipped bench's exact queries (seed 0), for the miss list."""
    from bench.likeness import DEFAULT_QUERIES, DISTORTIONS, stem_queries
    from bench.likeness_product import _write_library
    from bench.memsearch import features
    from bench.pgbench_db import keep_lock_files_for_the_run, open_temp_database
    from bench.real_sources import load_sources
    from bench.recorded import make_recorded_queries
    from encoder.embed import resolve_embedder
    from encoder.features import MEL
    from retrieval.ingest import ingest

    keep_lock_files_for_the_run()
    src = load_sources(Path("/work/data/real"), max_seconds=120.0, only=HELDOUT_SOURCES)
    rng = np.random.default_rng(0)
    stem_queries(src, rng)
    audio = [t.audio for t in src.tracks]
    qs = {}
    for label, kind, length in DISTORTIONS:
        qs[label] = [
            (q.work_index, q.start_s, q.length_s, q.audio)
            for q in make_recorded_queries(
                tracks=audio, kind=kind, n=DEFAULT_QUERIES, rng=rng, length_s=length
            )
        ]
    folder = W / "ho-lib"
    sidecar = _write_library(src, folder)
    embedder, _ = resolve_embedder(None)
    db = open_temp_database(W / "ho-db")
    ingest(db=db, paths=[folder], embedder=embedder, workers=1, metadata_file=sidecar, progress=False)
    with db.connection() as conn:
        id_of = {str(t): int(i) for i, t in conn.execute("SELECT id, title FROM tracks").fetchall()}
    db.close()
    db_id = [id_of.get(t.name, -1) for t in src.tracks]
    need = sorted({q[0] for v in qs.values() for q in v})
    mels = {i: features(y=audio[i])[:, MEL] for i in need}
    (W / "ho_queries.pkl").write_bytes(
        pickle.dumps(dict(names=[t.name for t in src.tracks], db_id=db_id, qs=qs, mels=mels))
    )
    print("queries", {k: len(v) for k, v in qs.items()})


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup()
    elif sys.argv[1] == "setup_ho":
        setup_heldout()
    else:
        only = sys.argv[2].split(",") if sys.argv[2] != "all" else None
        run([json.loads(a) for a in sys.argv[3:]] or [{}], only=only, verbose=sys.argv[1] == "v")
