-- Attachment rules per site (issue 18): the largest file, the accepted
-- kinds (a bit set, see attach/sniff.rs) and the upload rate per visitor.
-- NULL keeps the server's default. (Uploads of this setup keep their rules
-- in their state files under the data dir.)
ALTER TABLE sites ADD COLUMN attach_max_bytes INTEGER;
ALTER TABLE sites ADD COLUMN attach_kinds INTEGER;
ALTER TABLE sites ADD COLUMN attach_rate INTEGER;
