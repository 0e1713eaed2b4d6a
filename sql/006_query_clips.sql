-- 006: the clip a listener searched with, kept compressed (MP3, at most about a minute around the
-- searched passage) so the page can play it beside a match. It belongs to its conversation and
-- goes when the conversation is deleted (ON DELETE CASCADE); it is served by its id only.
CREATE TABLE query_clips (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    media_type      text NOT NULL,
    audio           bytea NOT NULL,
    duration_s      real NOT NULL,
    passage_start   real NOT NULL,   -- the searched passage, in seconds of the kept audio
    passage_end     real NOT NULL,
    peaks           real[] NOT NULL, -- waveform thumbnail, peak amplitude per bin in [0, 1]
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX query_clips_conversation_idx ON query_clips (conversation_id);
