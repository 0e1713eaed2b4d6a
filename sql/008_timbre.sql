-- 008: the sound of each 10-s window without its notes (encoder/timbre.py): timbre and production
-- statistics through a projection fitted on training sources, unit length, 32 dims. It is the
-- "sound" aspect's timbre term in the rerank and a second candidate source next to the embedding
-- (retrieval/nearest.py timbre_nearest). NULL = not measured yet (a library ingested before 008):
-- `cadenza reindex` fills it; until then the rerank falls back to brightness for those windows.
-- tracks.timbre_version names the fitted model the track's vectors come from; vectors of another
-- model are not compared (reindex refreshes them).
ALTER TABLE segments ADD COLUMN IF NOT EXISTS timbre vector(32);
ALTER TABLE tracks ADD COLUMN IF NOT EXISTS timbre_version text;
CREATE INDEX IF NOT EXISTS segments_timbre_hnsw ON segments USING hnsw (timbre vector_cosine_ops);
