-- A delivery's last_error is shown to the app that owns the webhook, so it holds only a coarse
-- kind (refused_address, connect_failed, timeout, tls, invalid_response, http_status,
-- webhook_removed, internal): the underlying error text told an app which ports of which hosts
-- answered. The text stored before is replaced by its kind; the gateway's log keeps the detail.
UPDATE webhook_deliveries SET last_error = CASE
    WHEN last_error = 'webhook removed' THEN 'webhook_removed'
    WHEN last_status IS NOT NULL THEN 'http_status'
    WHEN last_error LIKE 'timeout%' THEN 'timeout'
    WHEN last_error LIKE 'rustls%' OR last_error LIKE 'PEM%' OR last_error LIKE 'tls%' THEN 'tls'
    WHEN last_error LIKE 'io:%' OR last_error LIKE 'host not found%' OR last_error LIKE 'connection failed%' THEN 'connect_failed'
    WHEN last_error LIKE 'webhook delivery task%' OR last_error LIKE 'database%' OR last_error LIKE 'internal%' THEN 'internal'
    ELSE 'invalid_response'
END
WHERE last_error IS NOT NULL;
