-- 007: the library's melodic line per 10-s window, for query by humming (retrieval/melody.py).
-- float16 little-endian [100]: the window's predominant pitch at 10 fps as a MIDI number, NaN
-- where unvoiced. NULL = not extracted yet (a library ingested before 007): `cadenza reindex`
-- fills it; until then the melody route skips those windows and says how many.
ALTER TABLE segments ADD COLUMN IF NOT EXISTS melody bytea;
