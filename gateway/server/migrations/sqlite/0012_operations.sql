-- Sensitive operations other than signing that the owner approves with a passkey (DESIGN §6):
-- today key refresh. `pending_step_up → approved → running → done | failed`; an approval expires.
CREATE TABLE operations (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    wallet     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX operations_wallet ON operations (wallet, kind, state);
