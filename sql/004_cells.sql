-- 004: coarse cells (an inverted file in plain SQL) for filtered search on large libraries.
-- pgvector 0.6 filters after its HNSW search, so "not this composer" on a 1M-segment library
-- found too few rows and fell back to a 1.6-s exact scan. Every segment carries the number of
-- its nearest k-means centroid (per model version); a filtered search scans only the rows of
-- the cells nearest the query (retrieval/cells.py, retrieval/search.py). Libraries below
-- ~50K segments have no cells (cell stays NULL): an exact scan of their filtered rows is fast.

ALTER TABLE segments ADD COLUMN IF NOT EXISTS cell integer;  -- NULL = no cells for its model version yet
CREATE INDEX IF NOT EXISTS segments_cell_idx ON segments (cell);

-- The fine centroids (~64 segments each) and the coarse groups (~sqrt of their number) they
-- belong to; a new segment takes the nearest fine centroid among those of its 3 nearest groups.
CREATE TABLE IF NOT EXISTS cell_groups (
    model_version text NOT NULL,
    grp           integer NOT NULL,
    centroid      vector NOT NULL,               -- unit length
    PRIMARY KEY (model_version, grp)
);

CREATE TABLE IF NOT EXISTS cell_centroids (
    model_version text NOT NULL,
    cell          integer NOT NULL,
    grp           integer NOT NULL,
    centroid      vector NOT NULL,               -- unit length
    PRIMARY KEY (model_version, cell)
);
CREATE INDEX IF NOT EXISTS cell_centroids_grp_idx ON cell_centroids (model_version, grp);

-- When and on how many segments each model version's cells were trained (retrain on growth).
CREATE TABLE IF NOT EXISTS cell_training (
    model_version text PRIMARY KEY,
    n_cells       integer NOT NULL,
    n_segments    bigint NOT NULL,
    trained_at    timestamptz NOT NULL DEFAULT now()
);
