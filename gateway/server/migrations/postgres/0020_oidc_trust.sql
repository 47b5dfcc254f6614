-- OIDC identities are bound to the key source that verified them (`trust`: `url:<JWKS URL>` or
-- `file:<path>`, as the app configured it), next to (issuer, subject). An `iss` string is
-- whatever an app configures, so two apps reach the same person only through the same keys.
--
-- Existing identities are bound to the source they can be attributed to, in this order:
--   1. the app whose OIDC login created the identity (its session started at the identity's
--      instant) or, failing that, the app of the user's earliest OIDC session, provided that
--      app still trusts the issuer: its current source;
--   2. otherwise, when every app trusting the issuer uses one and the same source, that source
--      (with several, nothing says which keys the identity was made with: an app that configured
--      the issuer with keys of its own must not inherit it);
--   3. otherwise `none:`, which no source produces, so the identity is kept for the record but
--      no login reaches it (the person links it again from a session).
ALTER TABLE user_identities ADD COLUMN trust TEXT;
UPDATE user_identities i SET trust = COALESCE(
           (SELECT CASE WHEN o.jwks_url IS NOT NULL THEN 'url:' || o.jwks_url
                        ELSE 'file:' || o.jwks_file END
              FROM sessions s
              JOIN oidc_issuers o ON o.app_id = s.app_id AND o.issuer = i.issuer
             WHERE s.user_id = i.user_id AND s.method = 'oidc' AND s.created_at = i.created_at
               AND (o.jwks_url IS NOT NULL OR o.jwks_file IS NOT NULL)
             ORDER BY s.app_id
             LIMIT 1),
           (SELECT CASE WHEN o.jwks_url IS NOT NULL THEN 'url:' || o.jwks_url
                        ELSE 'file:' || o.jwks_file END
              FROM sessions s
              JOIN oidc_issuers o ON o.app_id = s.app_id AND o.issuer = i.issuer
             WHERE s.user_id = i.user_id AND s.method = 'oidc'
               AND (o.jwks_url IS NOT NULL OR o.jwks_file IS NOT NULL)
             ORDER BY s.created_at, s.app_id
             LIMIT 1),
           (SELECT CASE WHEN o.jwks_url IS NOT NULL THEN 'url:' || o.jwks_url
                        ELSE 'file:' || o.jwks_file END
              FROM oidc_issuers o
             WHERE o.issuer = i.issuer
               AND (o.jwks_url IS NOT NULL OR o.jwks_file IS NOT NULL)
               AND (SELECT COUNT(DISTINCT COALESCE('url:' || o2.jwks_url, 'file:' || o2.jwks_file))
                      FROM oidc_issuers o2
                     WHERE o2.issuer = i.issuer
                       AND (o2.jwks_url IS NOT NULL OR o2.jwks_file IS NOT NULL)) = 1
             ORDER BY o.created_at, o.app_id
             LIMIT 1),
           'none:');
ALTER TABLE user_identities ALTER COLUMN trust SET NOT NULL;
ALTER TABLE user_identities DROP CONSTRAINT user_identities_pkey;
ALTER TABLE user_identities ADD PRIMARY KEY (issuer, subject, trust);
