-- Business hours per site (issue 17, server/src/hours.rs): the site's IANA
-- time zone, its weekly opening ranges and its holidays, as the CLI wrote
-- and checked them. NULL: always open.
ALTER TABLE sites ADD COLUMN hours_tz TEXT;
ALTER TABLE sites ADD COLUMN hours_week TEXT;
ALTER TABLE sites ADD COLUMN hours_holidays TEXT;
