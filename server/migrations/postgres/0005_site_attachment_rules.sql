-- Attachment rules per site (issue 18): the largest file, the accepted
-- kinds (a bit set, see attach/sniff.rs) and the upload rate per visitor.
-- NULL keeps the server's default.
ALTER TABLE sites ADD COLUMN attach_max_bytes BIGINT;
ALTER TABLE sites ADD COLUMN attach_kinds BIGINT;
ALTER TABLE sites ADD COLUMN attach_rate BIGINT;
-- An upload keeps the rules of its site from when it was created: its
-- accepted kinds (checked at completion) and its rate. Uploads begun
-- before this migration accept every kind at the server's rate.
ALTER TABLE attach_uploads ADD COLUMN kinds BIGINT NOT NULL DEFAULT 63;
ALTER TABLE attach_uploads ADD COLUMN rate BIGINT NOT NULL DEFAULT 0;
