//! Runs one party's [`Ceremony`] over any ordered, reliable message channel (the gateway's
//! WebSocket, the device client's WebSocket, an in-process pair in tests).
//!
//! The protocol's work is CPU-bound (key generation takes most of a second), so every step runs
//! on the blocking pool and the async runtime stays free for other requests. Every wait for the
//! peer has a deadline; a silent peer ends the ceremony with [`Error::CeremonyTimeout`].

use std::future::Future;
use std::time::Duration;

use super::{Ceremony, Step};
use crate::{Error, Result};

/// One end of the channel between the two parties. Messages are opaque wire-form bytes.
pub trait Transport: Send {
    fn send(&mut self, message: Vec<u8>) -> impl Future<Output = Result<()>> + Send;
    /// The next protocol message; an error when the channel closed or carried something else.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

type BoxedCeremony<T> = Box<dyn Ceremony<Output = T>>;

async fn blocking<T, R>(
    mut ceremony: BoxedCeremony<T>,
    f: impl FnOnce(&mut dyn Ceremony<Output = T>) -> Result<R> + Send + 'static,
) -> Result<(BoxedCeremony<T>, R)>
where
    T: 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let r = f(ceremony.as_mut());
        r.map(|r| (ceremony, r))
    })
    .await
    .map_err(|e| Error::Transport(format!("ceremony task failed: {e}")))?
}

/// Drives `ceremony` to its end: sends what it produces, feeds it what arrives. Returns the
/// party's output together with its final messages, *unsent*: the caller decides when they
/// leave (the gateway records that its final signing message is going out before it sends it).
pub async fn run<T: Send + 'static>(
    ceremony: BoxedCeremony<T>,
    transport: &mut impl Transport,
    step_timeout: Duration,
) -> Result<(Vec<Vec<u8>>, T)> {
    let (mut ceremony, first) = blocking(ceremony, |c| c.start()).await?;
    for m in first {
        transport.send(m).await?;
    }
    loop {
        let incoming = tokio::time::timeout(step_timeout, transport.recv())
            .await
            .map_err(|_| Error::CeremonyTimeout)??;
        let (next, step) = blocking(ceremony, move |c| c.handle(&incoming)).await?;
        ceremony = next;
        match step {
            Step::Send(out) => {
                for m in out {
                    transport.send(m).await?;
                }
            }
            Step::Done { send, output } => return Ok((send, output)),
        }
    }
}

/// Sends messages produced by [`run`].
pub async fn send_all(transport: &mut impl Transport, messages: Vec<Vec<u8>>) -> Result<()> {
    for m in messages {
        transport.send(m).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::mpc::{Dkls23, Role, SessionId, ThresholdEcdsa};

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
        let t = Duration::from_secs(30);
        let device = tokio::spawn(async move {
            let c = Dkls23.keygen(Role::Device, session).expect("keygen");
            let (last, share) = run(c, &mut d, t).await.expect("device keygen");
            send_all(&mut d, last).await.expect("send");
            (share, d)
        });
        let c = Dkls23.keygen(Role::Gateway, session).expect("keygen");
        let (last, g_share) = run(c, &mut g, t).await.expect("gateway keygen");
        send_all(&mut g, last).await.expect("send");
        let (d_share, mut d) = device.await.expect("join");
        assert_eq!(d_share.address(), g_share.address());

        let digest = [7u8; 32];
        let session = SessionId::random();
        let device = tokio::spawn(async move {
            let c = Dkls23
                .sign(Role::Device, session, &d_share, digest)
                .expect("sign");
            let (last, sig) = run(c, &mut d, t).await.expect("device sign");
            send_all(&mut d, last).await.expect("send");
            sig
        });
        let c = Dkls23
            .sign(Role::Gateway, session, &g_share, digest)
            .expect("sign");
        let (last, g_sig) = run(c, &mut g, t).await.expect("gateway sign");
        send_all(&mut g, last).await.expect("send");
        assert_eq!(device.await.expect("join"), g_sig);
    }

    #[tokio::test]
    async fn a_silent_peer_times_the_ceremony_out() {
        let (_d, mut g) = pipes();
        let c = Dkls23
            .keygen(Role::Gateway, SessionId::random())
            .expect("keygen");
        let r = run(c, &mut g, Duration::from_millis(200)).await;
        assert!(matches!(r, Err(Error::CeremonyTimeout)), "{r:?}");
    }
}
