-- Sneak peek per site (issue 17, PROTOCOL.md 10.18): whether the site's
-- agents see a visitor's draft as it is typed. 1: on (the default), 0: off,
-- and then the widget is told not to send drafts and the server strips any.
ALTER TABLE sites ADD COLUMN sneak_peek BIGINT NOT NULL DEFAULT 1;
