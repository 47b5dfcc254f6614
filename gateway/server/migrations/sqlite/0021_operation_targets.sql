-- Operations other than a wallet's refresh name what they act on: a recovery set-up binds the
-- device asking and the public key of the secret it sets (DESIGN §6, §9).
ALTER TABLE operations ADD COLUMN target TEXT;
CREATE INDEX operations_owner ON operations (owner, kind, state);
