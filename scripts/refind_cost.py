"""Paired in-process query cost of two settings (behind bench/results/refind_replay.md): the same clips of the
training replay (scripts/refind_replay.py setup), A and B alternating per clip, thread CPU and the search's own
timings. Scratch quality; not part of the product or of CI.

    REFIND_WORK=DIR python scripts/refind_cost.py '{"P.PASSAGE_TRACKS_BAND_LIMITED": 10}' '{}' phone
    REFIND_WORK=DIR python scripts/refind_cost.py '{"R.REPEAT_MIN_LINEUP": 2.0}' '{}' 'clean,noise,mp3,reverb,phone,5-s clip,3-s clip'
    (the second: "also plays at" off, then on; session 11)
"""

import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import torch

import retrieval.search as S
from bench.pgbench_db import keep_lock_files_for_the_run, open_temp_database
from encoder.embed import resolve_embedder
from retrieval import passage as P
from retrieval import repeats as R
from retrieval.types import SearchRequest

torch.set_num_threads(1)
W = Path(os.environ["REFIND_WORK"])
keep_lock_files_for_the_run()
d = pickle.loads((W / "queries.pkl").read_bytes())
emb, _ = resolve_embedder(None)
db = open_temp_database(W / "train-db")
A = json.loads(sys.argv[1])
B = json.loads(sys.argv[2])
DEF = {
    "P.PASSAGE_TRACKS_BAND_LIMITED": P.PASSAGE_TRACKS_BAND_LIMITED,
    "S.HARMONY_TRACKS_BAND_LIMITED": S.HARMONY_TRACKS_BAND_LIMITED,
    "R.REPEAT_MIN_LINEUP": R.REPEAT_MIN_LINEUP,
}


def apply(cfg):
    for k, v in {**DEF, **cfg}.items():
        setattr({"P": P, "S": S, "R": R}[k[0]], k[2:], v)


clips = [q[3] for lab in sys.argv[3].split(",") for q in d["qs"][lab][:60]]
for c in clips[:5]:
    S.search(db=db, embedder=emb, request=SearchRequest(audio=c, start_s=None, k=10))  # warm
res = {"A": [], "B": []}
for i, c in enumerate(clips):
    order = ("A", "B") if i % 2 == 0 else ("B", "A")
    for name in order:
        apply(A if name == "A" else B)
        t0 = time.thread_time()
        r = S.search(db=db, embedder=emb, request=SearchRequest(audio=c, start_s=None, k=10))
        res[name].append(
            (
                r.timings_ms.get("total", 0),
                r.timings_ms.get("passage", 0),
                r.timings_ms.get("repeats", 0),
                (time.thread_time() - t0) * 1000,
                r.query.get("route"),
            )
        )
db.close()
a = np.array([x[:4] for x in res["A"]])
b = np.array([x[:4] for x in res["B"]])
print("clips", len(clips), "load", os.getloadavg())
for j, nm in enumerate(("total", "passage", "repeats", "thread_cpu")):
    print(
        f"{nm}: A p50 {np.median(a[:, j]):.1f}  B p50 {np.median(b[:, j]):.1f}  paired diff p50 {np.median(b[:, j] - a[:, j]):+.1f} ms"
    )
