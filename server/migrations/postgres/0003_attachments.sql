-- Attachments in PostgreSQL (issues 15 and 18, see attach/pg.rs): every
-- node serves every upload, so their state and bytes live here rather
-- than under one node's data dir. Bytes are rows of at most 1 MiB
-- (BYTEA, TOASTed and compressed by the engine), never one huge value.

-- An upload in progress: its offset is the sum of its chunks, changed
-- only under this row's lock in the chunk's own transaction.
CREATE TABLE attach_uploads (
    id TEXT PRIMARY KEY,
    site_id BIGINT NOT NULL,
    visitor_id TEXT NOT NULL,
    conversation_id BIGINT NOT NULL,
    ip TEXT NOT NULL,
    name TEXT NOT NULL,
    declared_type TEXT NOT NULL,
    length BIGINT NOT NULL,
    stored BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX attach_uploads_by_visitor ON attach_uploads (visitor_id, created_ms);
CREATE INDEX attach_uploads_by_ip ON attach_uploads (ip, created_ms);
CREATE INDEX attach_uploads_by_age ON attach_uploads (created_ms);

-- The bytes received so far, one row per stored piece of a PATCH.
CREATE TABLE attach_chunks (
    upload_id TEXT NOT NULL REFERENCES attach_uploads (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (upload_id, at)
);

-- Content by its SHA-256, kept once however often it is sent (files and
-- thumbnails alike); used_ms is the last time a finish named it, so the
-- sweep never deletes content that a finishing upload is about to name.
CREATE TABLE attach_contents (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    used_ms BIGINT NOT NULL
);
CREATE TABLE attach_blobs (
    sha256 TEXT NOT NULL,
    at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, at)
);

-- A complete attachment (attach::store::Meta).
CREATE TABLE attachments (
    id TEXT PRIMARY KEY,
    site_id BIGINT NOT NULL,
    visitor_id TEXT NOT NULL,
    conversation_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    mime TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    thumb_sha256 TEXT,
    completed_ms BIGINT NOT NULL
);
CREATE INDEX attachments_by_completion ON attachments (completed_ms);
CREATE INDEX attachments_by_content ON attachments (sha256);
CREATE INDEX attachments_by_thumb ON attachments (thumb_sha256);
