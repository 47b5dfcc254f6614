//! Accepting and keeping connections, plain or TLS, with bounds on what one client can hold.
//!
//! `axum::serve` and axum-server accept every connection and keep it for as long as the client
//! likes: idle sockets pile up until the process runs out of file descriptors, and then nothing,
//! not even `/healthz`, is served. This accept loop bounds that:
//!
//! - a cap on open connections overall and per client IP; a connection over either is closed
//!   at once, before any TLS or HTTP work (trusted proxies are exempt from the per-IP cap, since
//!   every client behind them shares their address);
//! - a header-read timeout: an HTTP/1 request head (and a TLS handshake) must arrive whole within
//!   it, so a client sending its headers byte by byte cannot hold a connection. hyper also arms
//!   it while a kept-alive HTTP/1 connection waits for its next request;
//! - an idle timeout: a connection with no bytes in either direction for that long is closed
//!   (HTTP/2 connections get a GOAWAY first);
//! - a maximum age, after which a connection is asked to close once its requests are done, so
//!   no single connection (an HTTP/2 one trickling frames, say) lives forever.
//!
//! Accept errors (`EMFILE` when descriptors run out, among others) never end the loop: it backs
//! off briefly and goes on, and connections already open keep being served.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service as _;

use crate::server::tls::Tls;

/// Default time for a request head (and a TLS handshake) to arrive whole.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default time a connection may stay silent in both directions.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default age after which a connection is asked to close.
pub const DEFAULT_MAX_CONNECTION_AGE_SECS: u64 = 3600;
/// Default cap on open connections: well under the descriptors a tuned host allows, far above
/// what the gateway's real clients (apps, devices, pages) hold at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap per client IP: generous for one office behind a NAT, a small part of the total.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// Concurrent HTTP/2 streams per connection: enough for a page's parallel fetches, small enough
/// that one connection cannot queue thousands of requests.
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// The first wait after an accept error; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How often refused connections are summarised in the log at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Connection bounds (`header_read_timeout_ms`, `idle_timeout_secs`, `max_connection_age_secs`,
/// `max_connections`, `max_connections_per_ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_age: Duration,
    pub max_connections: usize,
    pub max_per_ip: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_age: Duration::from_secs(DEFAULT_MAX_CONNECTION_AGE_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
        }
    }
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_ip` are open from this address.
    PerIp,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts open connections overall and per client IP.
#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    max_per_ip: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<Open>,
    refused_total: AtomicU64,
    refused_per_ip: AtomicU64,
}

impl Gate {
    /// A gate with the caps of `settings`; connections from `exempt` (trusted proxies) count
    /// toward the total only.
    pub fn new(settings: &ConnectionSettings, exempt: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            max_total: settings.max_connections.max(1),
            max_per_ip: settings.max_per_ip.max(1),
            exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
            open: Mutex::new(Open::default()),
            refused_total: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
        })
    }

    /// Admits a connection from `ip`, or says which cap it is over. The permit gives the place
    /// back when dropped, whenever and wherever the connection ends.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let ip = ip.to_canonical();
        let per_ip = !self.exempt.contains(&ip);
        let mut open = self.open.lock();
        if open.total >= self.max_total {
            self.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        if per_ip {
            let count = open.per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                self.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PerIp);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(Permit {
            gate: self.clone(),
            ip: per_ip.then_some(ip),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().total
    }

    /// Connections refused since start: over the total cap, over a per-IP cap.
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_total.load(Ordering::Relaxed),
            self.refused_per_ip.load(Ordering::Relaxed),
        )
    }
}

/// One admitted connection's place under the caps.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(count) = open.per_ip.get_mut(&ip)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_ip.remove(&ip);
            }
        }
    }
}

/// When the connection last moved a byte, as milliseconds since it was accepted.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The TCP stream with its permit and a note of its last activity. The permit lives as long as
/// the socket, also after an upgrade to a WebSocket hands the stream on.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
    _permit: Permit,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, asks every
/// connection to close once its requests are done and waits up to `grace` for them. `tls` is
/// read for every handshake, so a reloaded certificate applies to new connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    settings: ConnectionSettings,
    gate: Arc<Gate>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    // Every connection task holds a receiver: `closed()` on the sender then says when all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    accepted
                }
                Err(error) => {
                    if !is_connection_error(&error) {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: nothing to do but wait for
                        // connections to close; never spin, never stop serving.
                        tracing::warn!(%error, backoff_ms = backoff.as_millis(), "accept failed; backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match gate.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(_) => {
                // Closed at once: no task, no TLS, no HTTP.
                drop(stream);
                if last_refusal_log.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                    last_refusal_log = Some(Instant::now());
                    let (total, per_ip) = gate.refused();
                    tracing::warn!(
                        open = gate.open(),
                        refused_over_total = total,
                        refused_over_per_ip = per_ip,
                        "connections refused over the connection caps"
                    );
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let io = Tracked {
            io: stream,
            activity: activity.clone(),
            _permit: permit,
        };
        let service = match make_service.call(peer).await {
            Ok(service) => TowerToHyperService::new(service),
            Err(never) => match never {},
        };
        let builder = builder.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    drive(conn, |c| c.graceful_shutdown(), &activity, &settings, stop).await;
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.rustls_config().get_inner());
                    let handshake =
                        tokio::time::timeout(settings.header_read_timeout, acceptor.accept(io));
                    let io = match handshake.await {
                        Ok(Ok(io)) => io,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    drive(conn, |c| c.graceful_shutdown(), &activity, &settings, stop).await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    if tokio::time::timeout(grace, stop_tx.closed()).await.is_err() {
        tracing::warn!(
            open = gate.open(),
            "connections still open after the shutdown grace; closing them"
        );
    }
}

/// Runs one connection to its end, or until it has been idle for `idle_timeout` (for
/// `header_read_timeout` before its first byte), is older than `max_age`, or the server shuts
/// down: then it is asked to close gracefully, and dropped if it has not within another
/// `header_read_timeout`.
async fn drive<C, E>(
    conn: C,
    begin_shutdown: impl Fn(Pin<&mut C>),
    activity: &Activity,
    settings: &ConnectionSettings,
    mut stop: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let expires = activity.start + settings.max_age;
    let mut closing_since: Option<Instant> = None;
    loop {
        let deadline = match closing_since {
            Some(since) => since + settings.header_read_timeout,
            None => {
                let silent_for = if activity.last_ms.load(Ordering::Relaxed) == 0 {
                    settings.header_read_timeout
                } else {
                    settings.idle_timeout
                };
                (activity.last() + silent_for).min(expires)
            }
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(error) = done {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if closing_since.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    begin_shutdown(conn.as_mut());
                    closing_since = Some(Instant::now());
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                match closing_since {
                    // Asked to close and still open: drop it.
                    Some(_) => return,
                    None => {
                        // Activity may have moved the deadline on: only act on a real one.
                        let silent_for = if activity.last_ms.load(Ordering::Relaxed) == 0 {
                            settings.header_read_timeout
                        } else {
                            settings.idle_timeout
                        };
                        if now >= expires || now >= activity.last() + silent_for {
                            begin_shutdown(conn.as_mut());
                            closing_since = Some(now);
                        }
                    }
                }
            }
        }
    }
}

/// Errors about one connection that says nothing about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Raises the open-files soft limit to the hard limit, so the connection caps rather than the
/// descriptor limit decide when connections are refused. Returns the limit in force.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-files limit");
            None
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use super::*;

    fn settings(total: usize, per_ip: usize) -> ConnectionSettings {
        ConnectionSettings {
            max_connections: total,
            max_per_ip: per_ip,
            ..ConnectionSettings::default()
        }
    }

    #[test]
    fn caps_count_overall_and_per_ip_and_permits_give_places_back() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let gate = Gate::new(&settings(4, 2), vec![proxy]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a_mapped).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::PerIp);
        // The proxy is exempt from the per-IP cap, not from the total.
        let _p1 = gate.admit(proxy).unwrap();
        let _p2 = gate.admit(proxy).unwrap();
        assert_eq!(gate.admit(proxy).unwrap_err(), Refused::Total);
        assert_eq!(gate.open(), 4);
        drop(first);
        assert_eq!(gate.open(), 3);
        let _again = gate.admit(a).unwrap();
        assert_eq!(gate.refused(), (1, 1));
    }
}
