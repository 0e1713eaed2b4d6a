-- 003: chat conversations. A conversation is a thread of messages; an assistant turn that ran a
-- search keeps the structured request it ran (queries), what came back (result_sets) and the
-- moments its explanation cites (citations), so `/c/{id}` reopens after a restart and follow-ups
-- ("like #2 but not #3") can refine the last search.
CREATE TABLE conversations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    listener_id text NOT NULL DEFAULT '',
    title       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_listener_idx ON conversations (listener_id, updated_at DESC);

CREATE TABLE messages (
    id              bigserial PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL DEFAULT '',       -- user text, or the checked explanation (Markdown)
    meta            jsonb NOT NULL DEFAULT '{}'::jsonb,  -- explanation notes/flags, clip name, errors
    explained       boolean NOT NULL DEFAULT false, -- the explanation has been generated and checked
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);

-- The structured search an assistant message ran (a SearchRequest without its audio).
CREATE TABLE queries (
    id          bigserial PRIMARY KEY,
    message_id  bigint NOT NULL UNIQUE REFERENCES messages(id) ON DELETE CASCADE,
    request     jsonb NOT NULL,
    followup    jsonb,                   -- the parsed follow-up that produced it, if any
    audio_ref   text,                    -- name of the stored query passage under CADENZA_HOME/uploads
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE result_sets (
    id          bigserial PRIMARY KEY,
    query_id    bigint NOT NULL UNIQUE REFERENCES queries(id) ON DELETE CASCADE,
    response    jsonb NOT NULL,          -- SearchResponse.to_json()
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE citations (
    id            bigserial PRIMARY KEY,
    message_id    bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    result_set_id bigint NOT NULL REFERENCES result_sets(id) ON DELETE CASCADE,
    rank          integer NOT NULL,
    track_id      bigint NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    start_s       real NOT NULL,
    end_s         real NOT NULL,
    UNIQUE (message_id, rank)
);
CREATE INDEX citations_track_idx ON citations (track_id, start_s);
