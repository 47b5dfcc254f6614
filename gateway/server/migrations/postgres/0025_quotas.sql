-- Quotas on costly work: the gateway-wide daily cap counts people who registered
-- themselves on the page, so those users are marked; key generations are counted per device
-- and per person over the last hour from `ceremonies`.
ALTER TABLE users ADD COLUMN self_registered BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX users_self_registered ON users (self_registered, created_at);
CREATE INDEX ceremonies_device_kind_started ON ceremonies (device_id, kind, started_at);
