//! Runs one party's [`Ceremony`] over any ordered, reliable message channel (the gateway's
//! WebSocket, the device client's WebSocket, a browser's WebSocket, an in-process pair in tests).
//!
//! The protocol's work is CPU-bound (key generation takes most of a second). Where it runs and
//! how long a wait may last is the [`Runtime`]'s choice: on a server every step runs on the
//! blocking pool so the async runtime stays free for other requests, and every wait for the
//! peer has a deadline ([`Runtime::Tokio`], feature `tokio`); in a browser's worker a step simply runs
//! ([`Runtime::Inline`]) and the page's own transport bounds the waits. This crate itself needs no
//! async runtime.

use std::future::Future;

use super::{Ceremony, Step};
use crate::Result;

/// `Send` where threads exist. A server moves ceremonies between threads, so its transports
/// and their futures must be `Send`; a browser's WebSocket is not `Send` and needs not be, as
/// `wasm32-unknown-unknown` has one thread.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}
/// `Send` where threads exist (see the native definition).
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// One end of the channel between the two parties. Messages are opaque wire-form bytes.
pub trait Transport: MaybeSend {
    fn send(&mut self, message: Vec<u8>) -> impl Future<Output = Result<()>> + MaybeSend;
    /// The next protocol message; an error when the channel closed or carried something else.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>>> + MaybeSend;
}

/// Where the protocol's steps run and how a wait for the peer ends.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Runtime {
    /// Steps run where they are called and waits have no deadline of their own: for a single
    /// ceremony in a worker (a browser's device), whose transport bounds its waits.
    Inline,
    /// Steps on tokio's blocking pool; each wait for the peer bounded by `step_timeout`.
    #[cfg(feature = "tokio")]
    Tokio { step_timeout: std::time::Duration },
}

/// Steps computing at once, one per core: a hundred ceremonies at once then share the cores
/// through a queue instead of a hundred blocking threads the kernel switches between.
#[cfg(feature = "tokio")]
static STEPS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

impl Runtime {
    /// Runs one CPU-bound step of the protocol.
    async fn step<R: Send + 'static>(self, work: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        match self {
            Runtime::Inline => Ok(work()),
            #[cfg(feature = "tokio")]
            Runtime::Tokio { .. } => {
                let _turn = STEPS.acquire().await.map_err(|e| {
                    crate::Error::Transport(format!("ceremony steps are closed: {e}"))
                })?;
                tokio::task::spawn_blocking(work)
                    .await
                    .map_err(|e| crate::Error::Transport(format!("ceremony task failed: {e}")))
            }
        }
    }

    /// Waits for the peer's next message; [`Error::CeremonyTimeout`] when it takes too long.
    async fn wait<T>(self, next: impl Future<Output = Result<T>>) -> Result<T> {
        match self {
            Runtime::Inline => next.await,
            #[cfg(feature = "tokio")]
            Runtime::Tokio { step_timeout } => tokio::time::timeout(step_timeout, next)
                .await
                .map_err(|_| crate::Error::CeremonyTimeout)?,
        }
    }
}

type BoxedCeremony<T> = Box<dyn Ceremony<Output = T>>;

/// One call into the ceremony, made on the runtime's step.
enum Call {
    Start,
    Handle(Vec<u8>),
}

/// The ceremony and what its last call produced. A named type without lifetimes, so that the
/// step's future is `Send` for every caller (an elided `dyn` lifetime here trips the compiler's
/// higher-ranked `Send` check).
struct Stepped<T>(BoxedCeremony<T>, Step<T>);

async fn step<T: Send + 'static>(
    runtime: Runtime,
    mut ceremony: BoxedCeremony<T>,
    call: Call,
) -> Result<Stepped<T>> {
    runtime
        .step(move || {
            let step = match call {
                Call::Start => ceremony.start().map(Step::Send),
                Call::Handle(message) => ceremony.handle(&message),
            };
            step.map(|s| Stepped(ceremony, s))
        })
        .await?
}

/// Drives `ceremony` to its end: sends what it produces, feeds it what arrives. Returns the
/// party's output together with its final messages, *unsent*: the caller decides when they
/// leave (the gateway records that its final signing message is going out before it sends it).
pub async fn run<T: Send + 'static>(
    runtime: Runtime,
    ceremony: BoxedCeremony<T>,
    transport: &mut impl Transport,
) -> Result<(Vec<Vec<u8>>, T)> {
    let mut next = step(runtime, ceremony, Call::Start).await?;
    loop {
        let Stepped(ceremony, out) = next;
        match out {
            Step::Send(out) => {
                for m in out {
                    transport.send(m).await?;
                }
            }
            Step::Done { send, output } => return Ok((send, output)),
        }
        let incoming = runtime.wait(transport.recv()).await?;
        next = step(runtime, ceremony, Call::Handle(incoming)).await?;
    }
}

/// Sends messages produced by [`run`].
pub async fn send_all(transport: &mut impl Transport, messages: Vec<Vec<u8>>) -> Result<()> {
    for m in messages {
        transport.send(m).await?;
    }
    Ok(())
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use tokio::sync::mpsc;

    use std::time::Duration;

    use super::*;
    use crate::Error;
    use crate::{Dkls23, Role, SessionId, ThresholdEcdsa};

    struct Pipe {
        tx: mpsc::UnboundedSender<Vec<u8>>,
        rx: mpsc::UnboundedReceiver<Vec<u8>>,
    }

    impl Transport for Pipe {
        async fn send(&mut self, message: Vec<u8>) -> Result<()> {
            self.tx
                .send(message)
                .map_err(|_| Error::Transport("closed".into()))
        }
        async fn recv(&mut self) -> Result<Vec<u8>> {
            self.rx
                .recv()
                .await
                .ok_or_else(|| Error::Transport("closed".into()))
        }
    }

    fn pipes() -> (Pipe, Pipe) {
        let (a_tx, b_rx) = mpsc::unbounded_channel();
        let (b_tx, a_rx) = mpsc::unbounded_channel();
        (Pipe { tx: a_tx, rx: a_rx }, Pipe { tx: b_tx, rx: b_rx })
    }

    #[tokio::test]
    async fn two_parties_make_a_key_and_sign_over_a_channel() {
        let (mut d, mut g) = pipes();
        let session = SessionId::random();
        let t = Runtime::Tokio {
            step_timeout: Duration::from_secs(30),
        };
        let device = tokio::spawn(async move {
            let c = Dkls23.keygen(Role::Device, session).expect("keygen");
            let (last, share) = run(t, c, &mut d).await.expect("device keygen");
            send_all(&mut d, last).await.expect("send");
            (share, d)
        });
        let c = Dkls23.keygen(Role::Gateway, session).expect("keygen");
        let (last, g_share) = run(t, c, &mut g).await.expect("gateway keygen");
        send_all(&mut g, last).await.expect("send");
        let (d_share, mut d) = device.await.expect("join");
        assert_eq!(d_share.address(), g_share.address());

        let digest = [7u8; 32];
        let session = SessionId::random();
        let device = tokio::spawn(async move {
            let c = Dkls23
                .sign(Role::Device, session, &d_share, digest)
                .expect("sign");
            let (last, sig) = run(t, c, &mut d).await.expect("device sign");
            send_all(&mut d, last).await.expect("send");
            sig
        });
        let c = Dkls23
            .sign(Role::Gateway, session, &g_share, digest)
            .expect("sign");
        let (last, g_sig) = run(t, c, &mut g).await.expect("gateway sign");
        send_all(&mut g, last).await.expect("send");
        assert_eq!(device.await.expect("join"), g_sig);
    }

    #[tokio::test]
    async fn a_silent_peer_times_the_ceremony_out() {
        let (_d, mut g) = pipes();
        let c = Dkls23
            .keygen(Role::Gateway, SessionId::random())
            .expect("keygen");
        let r = run(
            Runtime::Tokio {
                step_timeout: Duration::from_millis(200),
            },
            c,
            &mut g,
        )
        .await;
        assert!(matches!(r, Err(Error::CeremonyTimeout)), "{r:?}");
    }
}
