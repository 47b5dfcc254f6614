-- A per-person random salt for the recovery secret's key derivation, chosen by the device at the
-- first setup. `POST /v1/recovery/identify` hands it to whoever names one of the person's wallets,
-- so it must say nothing else: the user id stays the gateway's. NULL for setups made before salts
-- existed, whose derivation used the user id (and still does).
ALTER TABLE recovery_keys ADD COLUMN salt TEXT;
CREATE UNIQUE INDEX recovery_keys_salt ON recovery_keys (salt);
