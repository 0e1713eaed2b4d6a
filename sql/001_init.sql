-- 001: the library. Tracks (one row per audio file, keyed by content hash) and their
-- 10-s segments with a 128-d embedding and measured harmonic descriptors.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE tracks (
    id            bigserial PRIMARY KEY,
    content_hash  text NOT NULL UNIQUE,          -- sha256 of the file bytes: idempotent ingest
    path          text NOT NULL,                 -- server-side only; never taken from a request
    title         text NOT NULL DEFAULT '',
    composer      text NOT NULL DEFAULT '',
    work          text NOT NULL DEFAULT '',
    era           text NOT NULL DEFAULT '',
    year          integer,
    duration_s    real NOT NULL CHECK (duration_s > 0),
    tags          jsonb NOT NULL DEFAULT '{}'::jsonb,
    model_version text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tracks_composer_idx ON tracks (lower(composer));
CREATE INDEX tracks_era_idx ON tracks (era);
CREATE INDEX tracks_path_idx ON tracks (path);

CREATE TABLE segments (
    id             bigserial PRIMARY KEY,
    track_id       bigint NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    start_s        real NOT NULL CHECK (start_s >= 0),
    end_s          real NOT NULL,
    embedding      vector(128) NOT NULL,
    model_version  text NOT NULL,
    -- harmonic and acoustic descriptors, measured (see retrieval/descriptors.py)
    chroma_mean    real[] NOT NULL,              -- 12 bins, sums to 1
    chroma_seq     bytea,                        -- compact chroma sequence, float16 [n, 12]
    key_index      smallint,                     -- 0 = C … 11 = B
    mode           text,                         -- 'major' | 'minor'
    key_confidence real,
    tempo_bpm      real,
    loudness_db    real,
    brightness_hz  real,
    onset_density  real,
    valence        real,
    arousal        real,
    CHECK (end_s > start_s)
);
CREATE INDEX segments_track_idx ON segments (track_id, start_s);
CREATE INDEX segments_embedding_hnsw ON segments USING hnsw (embedding vector_cosine_ops);
