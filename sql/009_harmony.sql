-- 009: harmony, for re-finding distorted clips.
-- (1) The chord sequence of each 10-s window as one vector (retrieval/harmony.py): its 10-fps chroma
-- pooled into ten 1-s blocks, each unit length, concatenated (120 dims, unit length), stored as
-- halfvec (248 bytes, not 488; a chord sequence needs no more than half precision). A second
-- candidate source next to the embedding (retrieval/nearest.py harmony_nearest): under a phone
-- line the embedding misses the clip's own recording where its chords still match. Written at
-- every ingest (retrieval/store.py); NULL = a library stored before 009 or a silent window:
-- `cadenza reindex` fills it from the stored track chroma, without decoding audio again.
ALTER TABLE segments ADD COLUMN IF NOT EXISTS harmony halfvec(120);
CREATE INDEX IF NOT EXISTS segments_harmony_hnsw ON segments USING hnsw (harmony halfvec_cosine_ops);
-- (2) The chroma of the phone band alone (300-3400 Hz, from the same STFT as the full chroma; float16
-- [n_frames, 12]): a clip heard through a phone line lines up with its own passage here at a median
-- frame cosine of 0.97, against 0.81 in the full-band chroma (retrieval/passage.py checks both).
-- NULL = stored before 009: `cadenza reindex` decodes those tracks again to fill it.
ALTER TABLE track_chroma ADD COLUMN IF NOT EXISTS band_chroma bytea;
