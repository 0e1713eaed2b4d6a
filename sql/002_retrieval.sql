-- 002: what retrieval needs beyond 001.
-- Per-track full-rate chroma (10 fps, float16 [n_frames, 12]) to localize a match finer than
-- the 2-s segment grid; the listening history the discovery reranker reads; and the
-- score calibration measured on the library itself.

CREATE TABLE track_chroma (
    track_id  bigint PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
    fps       real NOT NULL,
    n_frames  integer NOT NULL CHECK (n_frames >= 0),
    chroma    bytea NOT NULL                     -- float16 little-endian [n_frames, 12]
);

CREATE TABLE plays (
    id          bigserial PRIMARY KEY,
    listener_id text NOT NULL,
    track_id    bigint NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plays_listener_idx ON plays (listener_id, at DESC);

-- One row per model version: a random sample of segment embeddings (float16 [n, d]) and
-- quantiles of how strongly an in-library query's best other-track match stands out.
CREATE TABLE score_calibration (
    model_version text PRIMARY KEY,
    n_segments    integer NOT NULL,              -- library size when measured (stale when it drifts)
    sample        bytea NOT NULL,
    sample_dim    integer NOT NULL,
    nn_quantiles  real[] NOT NULL,               -- 101 quantiles of best-match z over library queries
    pair_quantiles real[] NOT NULL,              -- 101 quantiles of random-pair cosine similarity
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- No index on segments.model_version on purpose: the planner would pick it (it matches
-- every row) over the HNSW index for `WHERE model_version = X ORDER BY embedding <=> q`.
CREATE INDEX tracks_lower_work_idx ON tracks (lower(work));
