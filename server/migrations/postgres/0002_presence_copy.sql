-- Presence's copy for Redis outages (issue 15, see store/presence_pg.rs):
-- each node's heartbeat (the database's clock, in ms, so node clocks do
-- not matter) and its live entries, written when they change. Read only
-- while the bus is down; a node not heard of for 12 s has no entries.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    heard_ms BIGINT NOT NULL
);
CREATE TABLE node_agents (
    node_id TEXT NOT NULL,
    agent_id BIGINT NOT NULL,
    site_id BIGINT NOT NULL,
    presence BIGINT NOT NULL,
    connections BIGINT NOT NULL,
    PRIMARY KEY (node_id, agent_id)
);
CREATE TABLE node_visitors (
    node_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    site_id BIGINT NOT NULL,
    info TEXT NOT NULL,
    PRIMARY KEY (node_id, visitor_id)
);
