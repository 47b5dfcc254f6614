-- The device a completed recovery enrolled: until that device first uses its token, the
-- recovering device can fetch the completion's answer again (a fresh token replaces the one in
-- the lost answer), so a dropped connection does not strand the user.
ALTER TABLE recoveries ADD COLUMN device_id TEXT;
