-- 010: the listening-context switches a listener set for a conversation, e.g. {"time_of_day": false}
-- (a signal missing from the object is on). Every search of the conversation ranks with them, and
-- each answer's response JSON reports what they did (query.context).
ALTER TABLE conversations ADD COLUMN IF NOT EXISTS context jsonb NOT NULL DEFAULT '{}'::jsonb;
