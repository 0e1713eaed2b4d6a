-- 012: the sound of a whole track (encoder/timbre.py): the mean of its segments' unit timbre
-- vectors. Same-source likeness is about a recording's production more than about one 10-s
-- moment, so the rerank's sound aspect compares the query window with the candidate's track as
-- well as with its window (retrieval/rerank.py, the "timbre_track" term). Not unit length:
-- pgvector's cosine and the rerank ignore the length. Filled here from the stored segments, and
-- at every later ingest and reindex (retrieval/store.py), so no reindex is needed for it.
ALTER TABLE tracks ADD COLUMN IF NOT EXISTS timbre vector(32);
UPDATE tracks t SET timbre = m.v
  FROM (SELECT track_id, avg(timbre) AS v FROM segments WHERE timbre IS NOT NULL GROUP BY track_id) m
 WHERE t.id = m.track_id;
