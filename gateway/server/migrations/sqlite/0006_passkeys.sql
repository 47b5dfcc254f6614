-- Passkeys (WebAuthn, DESIGN §2): the gateway is the relying party.
--
-- A ceremony (registration or login) started for one user. Only the SHA-256 of its random id
-- is kept; the row is deleted by the first attempt to finish it, whatever the outcome, and is
-- useless after `expires_at`, which the gateway checks with its own clock.
CREATE TABLE passkey_ceremonies (
    id_hash    TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('registration', 'login')),
    user_id    TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
);
CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires_at);

-- A registered credential. `passkey` is webauthn-rs's serialised `Passkey` (public key, counter,
-- flags: no secret). `sign_count` mirrors its counter so that a login can save it with a
-- compare-and-set; revoked credentials keep their row so that audit events naming them resolve.
CREATE TABLE passkey_credentials (
    credential_id   TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL,
    passkey         TEXT    NOT NULL,
    sign_count      INTEGER NOT NULL DEFAULT 0,
    backup_eligible INTEGER NOT NULL DEFAULT 0,
    backup_state    INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL,
    last_used_at    TEXT,
    revoked_at      TEXT
);
CREATE INDEX passkey_credentials_user ON passkey_credentials (user_id);
