//! Sends queued deliveries: claims the due ones with a lease (so two gateways do not send the
//! same attempt), POSTs each signed body, and records the outcome. A receiver that does not
//! answer 2xx in time is tried again after `retry_base × 2^(attempt − 1)` (capped at an hour,
//! with jitter) until `max_attempts`; the delivery is then `failed` until an admin redelivers
//! it. Times here are the wall clock: they meet receivers' clocks, not the audit log's.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::signature;
use crate::audit::Store;
use crate::audit::event::format_time;
use crate::custody::sealing::PersonalDataKey;
use crate::error::{Error, Result};
use crate::outbound::{self, Allowlist, Failure};
use crate::store::db::{db, with_pool};

/// How deliveries are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The wait before the second attempt; it doubles with every further one.
    pub retry_base: Duration,
    /// Attempts before a delivery is marked failed.
    pub max_attempts: u32,
    /// How long a receiver has to answer.
    pub timeout: Duration,
    /// How often the queue is looked at.
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_base: Duration::from_secs(5),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Deliveries claimed per round.
const BATCH: i64 = 16;

/// The wait after failed attempt number `attempt` (1-based), with ±20 % jitter so that a
/// receiver coming back is not hit by every retry at once.
pub fn backoff(settings: &Settings, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let base = settings
        .retry_base
        .saturating_mul(1u32 << exp)
        .min(MAX_BACKOFF);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    base.mul_f64(jitter)
}

struct Claimed {
    id: String,
    app_id: String,
    payload: String,
    attempts: i64,
}

async fn claim(store: &Store, settings: &Settings, now: OffsetDateTime) -> Result<Vec<Claimed>> {
    let lease = now + settings.timeout * 3;
    let rows: Vec<(String, String, String, i64)> = with_pool!(store, pool => {
        sqlx::query_as("UPDATE webhook_deliveries SET lease_until = $2, attempts = attempts + 1 WHERE status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) AND id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_attempt_at LIMIT $3) RETURNING id, app_id, payload, CAST(attempts AS BIGINT)")
            .bind(format_time(now)).bind(format_time(lease)).bind(BATCH)
            .fetch_all(pool).await.map_err(db("claiming webhook deliveries"))?
    });
    Ok(rows
        .into_iter()
        .map(|(id, app_id, payload, attempts)| Claimed {
            id,
            app_id,
            payload,
            attempts,
        })
        .collect())
}

/// Why an attempt failed, as the app and admins see it (`last_error`): a coarse kind only. The
/// underlying error — which address was refused, which socket error, which TLS alert — would
/// let an app probe the gateway's network through its webhook URL, so it goes to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request itself failed (refused address, no connection, timeout, TLS, not HTTP).
    Outbound(Failure),
    /// The receiver answered, but not 2xx (the status is `last_status`).
    HttpStatus,
    /// The app removed its webhook; the delivery is failed without a request.
    WebhookRemoved,
    /// The gateway could not make the attempt (its own fault, not the receiver's).
    Internal,
}

impl FailureKind {
    /// Every name [`FailureKind::as_str`] gives.
    pub const NAMES: &[&str] = &[
        "refused_address",
        "connect_failed",
        "timeout",
        "tls",
        "invalid_response",
        "http_status",
        "webhook_removed",
        "internal",
    ];

    /// The stable name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Outbound(f) => f.as_str(),
            FailureKind::HttpStatus => "http_status",
            FailureKind::WebhookRemoved => "webhook_removed",
            FailureKind::Internal => "internal",
        }
    }

    /// What is shown for a stored `last_error`: the stored kind, or `other` for text that is not
    /// one (written by an older gateway during an upgrade), never the text itself.
    pub fn shown(stored: &str) -> &'static str {
        Self::NAMES
            .iter()
            .find(|n| **n == stored)
            .copied()
            .unwrap_or("other")
    }
}

/// What one attempt came to. `detail` is for the log only.
enum Outcome {
    Delivered(u16),
    Failed {
        status: Option<u16>,
        kind: FailureKind,
        detail: String,
    },
}

/// POSTs `body` to `url` through [`outbound::agent`] (only addresses `allow` permits, no
/// redirects); blocking (ureq), so it runs off the async threads.
fn post(
    allow: &Allowlist,
    url: &str,
    id: &str,
    signature: &str,
    body: &str,
    timeout: Duration,
) -> Outcome {
    let agent = outbound::agent(allow, timeout, "parapet-webhooks/1");
    match agent
        .post(url)
        .header("content-type", "application/json")
        .header(signature::HEADER, signature)
        .header(signature::DELIVERY_HEADER, id)
        .send(body)
    {
        Ok(res) if res.status().is_success() => Outcome::Delivered(res.status().as_u16()),
        Ok(res) => Outcome::Failed {
            status: Some(res.status().as_u16()),
            kind: FailureKind::HttpStatus,
            detail: format!("the receiver answered {}", res.status()),
        },
        Err(e) => Outcome::Failed {
            status: None,
            kind: FailureKind::Outbound(Failure::of(&e)),
            detail: e.to_string(),
        },
    }
}

async fn attempt(
    store: &Store,
    key: &PersonalDataKey,
    settings: &Settings,
    allow: &Allowlist,
    d: &Claimed,
) -> Result<Outcome> {
    let Some((url, secret)) = super::target(store, key, &d.app_id).await? else {
        return Ok(Outcome::Failed {
            status: None,
            kind: FailureKind::WebhookRemoved,
            detail: "webhook removed".to_owned(),
        });
    };
    let sent_at = OffsetDateTime::now_utc().unix_timestamp();
    let header = signature::sign(&secret, sent_at, d.payload.as_bytes());
    drop(secret);
    let (id, body, timeout, allow) = (
        d.id.clone(),
        d.payload.clone(),
        settings.timeout,
        allow.clone(),
    );
    tokio::task::spawn_blocking(move || post(&allow, &url, &id, &header, &body, timeout))
        .await
        .map_err(|e| Error::Internal(format!("webhook delivery task: {e}")))
}

async fn record(store: &Store, settings: &Settings, d: &Claimed, outcome: &Outcome) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    match outcome {
        Outcome::Delivered(status) => with_pool!(store, pool => {
            sqlx::query("UPDATE webhook_deliveries SET status = 'delivered', delivered_at = $2, last_status = $3, last_error = NULL, lease_until = NULL WHERE id = $1")
                .bind(d.id.as_str()).bind(format_time(now)).bind(i32::from(*status))
                .execute(pool).await.map_err(db("recording a webhook delivery"))?;
        }),
        Outcome::Failed { status, kind, .. } => {
            let attempts = u32::try_from(d.attempts).unwrap_or(u32::MAX);
            let gone = *kind == FailureKind::WebhookRemoved;
            let (state, next) = if gone || attempts >= settings.max_attempts {
                ("failed", now)
            } else {
                ("pending", now + backoff(settings, attempts))
            };
            let error = kind.as_str();
            with_pool!(store, pool => {
                sqlx::query("UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, last_status = $4, last_error = $5, lease_until = NULL WHERE id = $1")
                    .bind(d.id.as_str()).bind(state).bind(format_time(next))
                    .bind(status.map(i32::from)).bind(error)
                    .execute(pool).await.map_err(db("recording a webhook attempt"))?;
            });
        }
    }
    Ok(())
}

/// Queues what the audit log holds and sends every due delivery once, to addresses `allow`
/// permits. Returns how many attempts were made.
pub async fn run_once(
    store: &Store,
    key: &PersonalDataKey,
    settings: &Settings,
    allow: &Allowlist,
) -> Result<usize> {
    super::notifier::enqueue(store, OffsetDateTime::now_utc()).await?;
    let claimed = claim(store, settings, OffsetDateTime::now_utc()).await?;
    let outcomes = futures_util::future::join_all(
        claimed
            .iter()
            .map(|d| attempt(store, key, settings, allow, d)),
    )
    .await;
    for (d, outcome) in claimed.iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|e| Outcome::Failed {
            status: None,
            kind: FailureKind::Internal,
            detail: e.to_string(),
        });
        if let Outcome::Failed { kind, detail, .. } = &outcome {
            // The detail is the operator's: the app sees only the kind.
            tracing::info!(delivery = %d.id, app = %d.app_id, attempt = d.attempts, kind = kind.as_str(), error = %detail, "webhook delivery failed");
        }
        record(store, settings, d, &outcome).await?;
    }
    Ok(claimed.len())
}

/// Runs [`run_once`] every `settings.poll` for the life of the process.
pub fn spawn(
    store: Store,
    key: Arc<PersonalDataKey>,
    settings: Settings,
    allow: Allowlist,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop {
                match run_once(&store, &key, &settings, &allow).await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "webhook round failed; retried at the next tick");
                        break;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_is_named_and_stored_text_is_never_shown() {
        let kinds = [
            FailureKind::Outbound(Failure::RefusedAddress),
            FailureKind::Outbound(Failure::ConnectFailed),
            FailureKind::Outbound(Failure::Timeout),
            FailureKind::Outbound(Failure::Tls),
            FailureKind::Outbound(Failure::InvalidResponse),
            FailureKind::HttpStatus,
            FailureKind::WebhookRemoved,
            FailureKind::Internal,
        ];
        for k in kinds {
            assert!(FailureKind::NAMES.contains(&k.as_str()), "{k:?}");
            assert_eq!(FailureKind::shown(k.as_str()), k.as_str());
        }
        assert_eq!(FailureKind::NAMES.len(), kinds.len());
        assert_eq!(
            FailureKind::shown("io: Connection refused (os error 111)"),
            "other"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = Settings {
            retry_base: Duration::from_secs(5),
            ..Settings::default()
        };
        let first = backoff(&s, 1);
        assert!(first >= Duration::from_secs(4) && first <= Duration::from_secs(6));
        let fourth = backoff(&s, 4);
        assert!(fourth >= Duration::from_secs(32) && fourth <= Duration::from_secs(48));
        assert!(backoff(&s, 40) <= MAX_BACKOFF.mul_f64(1.2));
    }
}
