-- The gateway processes serving on this database, each writing a heartbeat every second (the
-- database's own clock, in milliseconds): the app, wallet and user rate limits are divided among
-- the replicas alive (docs/adr/0003-global-rate-limits.md).
CREATE TABLE replicas (
    id      TEXT PRIMARY KEY,
    seen_ms INTEGER NOT NULL
);
