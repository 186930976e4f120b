-- A message may carry one attachment (issue 18). Its metadata is copied
-- into the message row so every read path (replay, snapshot, history,
-- catch-up on another node) has it without touching attachment storage.
ALTER TABLE messages ADD COLUMN attach_id TEXT;
ALTER TABLE messages ADD COLUMN attach_name TEXT;
ALTER TABLE messages ADD COLUMN attach_mime TEXT;
ALTER TABLE messages ADD COLUMN attach_size BIGINT;
ALTER TABLE messages ADD COLUMN attach_image BIGINT;
-- Who may get a link: the participants of a conversation with a message
-- that refers to the file.
CREATE INDEX messages_attach ON messages (attach_id) WHERE attach_id IS NOT NULL;
