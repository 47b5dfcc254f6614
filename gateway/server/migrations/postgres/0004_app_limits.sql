-- Per-app limits: the request rate (NULL: the gateway's configured default, e.g. "50/s") and
-- the absolute and idle lifetimes of the user sessions the app holds, in seconds.
ALTER TABLE apps ADD COLUMN rate TEXT;
ALTER TABLE apps ADD COLUMN session_ttl_secs BIGINT NOT NULL DEFAULT 43200;
ALTER TABLE apps ADD COLUMN session_idle_secs BIGINT NOT NULL DEFAULT 1800;
