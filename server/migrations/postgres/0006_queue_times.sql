-- Queue position and wait for waiting visitors (issue 17, PROTOCOL.md
-- 10.14). When a chat last entered the queue and at which place, and when
-- it was last taken from it: the estimate of a wait comes from these real
-- waits of the site's recent chats.
ALTER TABLE conversations ADD COLUMN queued_ms BIGINT;
ALTER TABLE conversations ADD COLUMN queued_place BIGINT;
ALTER TABLE conversations ADD COLUMN taken_ms BIGINT;
-- The waiting chats, read every second by each node: only they are in
-- this index, however long history grows.
CREATE INDEX conversations_queued ON conversations (site_id, id) WHERE state = 0;
CREATE INDEX conversations_taken ON conversations (site_id, taken_ms) WHERE taken_ms IS NOT NULL;
