-- Tags (issue 17): the site's list, one tag per line in the admin's order,
-- and each conversation's current tags, one per line, a subset of its
-- site's list when they were set. Each change is also an agents-only
-- `tagged` line in the transcript, so history keeps who tagged what when.
ALTER TABLE sites ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN tags TEXT NOT NULL DEFAULT '';
