-- Departments (groups, issue 17): a site's groups by key (what the
-- widget's data-group names), each with a display name and, optionally,
-- its own business hours in a time zone (NULL: the site's hours apply).
CREATE TABLE site_groups (
    id BIGSERIAL PRIMARY KEY,
    site_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    hours_tz TEXT,
    hours_week TEXT,
    hours_holidays TEXT,
    created_ms BIGINT NOT NULL,
    UNIQUE (site_id, key)
);
-- Which agents are in which groups: many to many.
CREATE TABLE group_members (
    group_id BIGINT NOT NULL,
    agent_id BIGINT NOT NULL,
    PRIMARY KEY (group_id, agent_id)
);
CREATE INDEX group_members_agent ON group_members (agent_id);
-- The group a chat is for, by key, kept with the chat in history. A key
-- whose group was removed is cleared from the open chats by the server,
-- which puts them back in the site-wide queue; closed chats keep it.
ALTER TABLE conversations ADD COLUMN group_key TEXT;
-- The group the visitor's widget targets (its data-group, or the
-- visitor's choice), from its latest hello: a chat it opens is for it.
ALTER TABLE visitors ADD COLUMN group_key TEXT;
-- Whether the widget offers the site's groups to choose from before the
-- first message (when the page names none).
ALTER TABLE sites ADD COLUMN group_choice BIGINT NOT NULL DEFAULT 0;
