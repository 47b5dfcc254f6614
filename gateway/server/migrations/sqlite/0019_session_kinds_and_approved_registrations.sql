-- Two kinds of session (DESIGN §2): `app` sessions are sent by an app as `Parapet-Session`;
-- `page` sessions are the gateway page's cookie, made only by a passkey login on the page or a
-- page link redeemed in the person's browser. Neither is ever accepted as the other. Sessions
-- of the page's own app were page sessions; any other existing session is taken as an app's
-- (a page login that began for an app logs in again).
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'app';
UPDATE sessions SET kind = 'page' WHERE app_id = 'parapet-page';

-- A further passkey is registered only through a ceremony started after a step-up with one the
-- person has (`registration_approved`). Ceremonies live minutes: the table is made anew.
DROP TABLE passkey_ceremonies;
CREATE TABLE passkey_ceremonies (
    id_hash    TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('registration', 'registration_approved', 'login')),
    user_id    TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL
);
CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires_at);

-- Page sessions made before page and app sessions were told apart end here: the page logs in
-- again, with a passkey.
UPDATE sessions SET ended_at = last_seen WHERE kind = 'page' AND ended_at IS NULL;
