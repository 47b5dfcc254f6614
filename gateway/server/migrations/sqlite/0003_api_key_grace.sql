-- Keys replaced by `apps rotate`, still accepted until `expires_at` (RFC 3339 UTC, fixed width,
-- so text order is time order) so that callers can switch to the new key without an outage.
CREATE TABLE api_key_grace (
    key_hash   BLOB PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES apps (id),
    expires_at TEXT NOT NULL
);
