-- Blocked visitors (issue 17): by visitor id, and optionally by the
-- address the visitor last said hello from. A lifted block stays, with
-- when it was lifted, as the record of who blocked whom and why.
CREATE TABLE blocks (
    id BIGSERIAL PRIMARY KEY,
    site_id BIGINT NOT NULL,
    visitor_id TEXT NOT NULL,
    ip TEXT,
    reason TEXT NOT NULL,
    by_agent BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    lifted_ms BIGINT
);
CREATE INDEX blocks_visitor ON blocks (visitor_id) WHERE lifted_ms IS NULL;
CREATE INDEX blocks_ip ON blocks (site_id, ip) WHERE lifted_ms IS NULL AND ip IS NOT NULL;
-- The address of the visitor's latest hello, for a block by address.
ALTER TABLE visitors ADD COLUMN last_ip TEXT;
