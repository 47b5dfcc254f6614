-- A user's recovery secret as the gateway knows it (DESIGN §9): an Argon2id verifier of the auth
-- key it derives and the X25519 public key backups are sealed to. Never the secret itself.
CREATE TABLE recovery_keys (
    user_id    TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- Each wallet's device share, HPKE-sealed by the device to the user's recovery public key, one
-- per epoch: the gateway cannot open them; a completed recovery releases them to the user's new
-- device. A refresh stores the next epoch's backup pending, with the pending gateway share, and
-- its commit deletes the old epoch's.
CREATE TABLE share_backups (
    wallet     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    sealed     BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (wallet, epoch)
);
