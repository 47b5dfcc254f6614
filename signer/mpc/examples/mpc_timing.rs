//! Quick in-process timing of the 2-of-2 ceremonies (both parties in one thread, no network):
//! median key generation, signing and refresh, and bytes exchanged per ceremony.
//!
//! `cargo run --release -p parapet-mpc --example mpc_timing [runs]`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parapet_mpc::{Ceremony, Dkls23, KeyShare, Role, SessionId, Step, ThresholdEcdsa};

type Boxed<T> = Box<dyn Ceremony<Output = T>>;

/// Drives both parties to completion; returns both outputs and the bytes each side sent.
fn run<T>(
    mut device: Boxed<T>,
    mut gateway: Boxed<T>,
) -> Result<(T, T, usize, usize), parapet_mpc::Error> {
    let mut to_gateway: VecDeque<Vec<u8>> = device.start()?.into();
    let mut to_device: VecDeque<Vec<u8>> = gateway.start()?.into();
    let mut sent = (
        to_gateway.iter().map(Vec::len).sum(),
        to_device.iter().map(Vec::len).sum(),
    );
    let (mut d_out, mut g_out) = (None, None);
    while d_out.is_none() || g_out.is_none() {
        let mut progressed = false;
        if let Some(m) = to_gateway.pop_front() {
            progressed = true;
            let out = match gateway.handle(&m)? {
                Step::Send(out) => out,
                Step::Done { send, output } => {
                    g_out = Some(output);
                    send
                }
            };
            sent.1 += out.iter().map(Vec::len).sum::<usize>();
            to_device.extend(out);
        }
        if let Some(m) = to_device.pop_front() {
            progressed = true;
            let out = match device.handle(&m)? {
                Step::Send(out) => out,
                Step::Done { send, output } => {
                    d_out = Some(output);
                    send
                }
            };
            sent.0 += out.iter().map(Vec::len).sum::<usize>();
            to_gateway.extend(out);
        }
        if !progressed {
            return Err(parapet_mpc::Error::CeremonyOver);
        }
    }
    match (d_out, g_out) {
        (Some(d), Some(g)) => Ok((d, g, sent.0, sent.1)),
        _ => Err(parapet_mpc::Error::CeremonyOver),
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), parapet_mpc::Error> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(30);
    let scheme = Dkls23;
    let mut keygen = Vec::new();
    let mut sign = Vec::new();
    let mut refresh = Vec::new();
    let mut sizes = (0, 0, 0, 0, 0, 0, 0);
    let mut shares: Option<(KeyShare, KeyShare)> = None;
    for i in 0..runs {
        let session = SessionId::random();
        let start = Instant::now();
        let (d, g, ds, gs) = run(
            scheme.keygen(Role::Device, session)?,
            scheme.keygen(Role::Gateway, session)?,
        )?;
        keygen.push(start.elapsed());
        sizes.0 = ds;
        sizes.1 = gs;
        sizes.6 = g.to_bytes().len();
        if i == 0 {
            shares = Some((d, g));
        }
    }
    let Some((device, gateway)) = shares else {
        return Ok(());
    };
    for i in 0..runs {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let session = SessionId::random();
        let start = Instant::now();
        let (_, _, ds, gs) = run(
            scheme.sign(Role::Device, session, &device, digest)?,
            scheme.sign(Role::Gateway, session, &gateway, digest)?,
        )?;
        sign.push(start.elapsed());
        sizes.2 = ds;
        sizes.3 = gs;
    }
    for _ in 0..runs {
        let session = SessionId::random();
        let start = Instant::now();
        let (_, _, ds, gs) = run(
            scheme.refresh(Role::Device, session, &device)?,
            scheme.refresh(Role::Gateway, session, &gateway)?,
        )?;
        refresh.push(start.elapsed());
        sizes.4 = ds;
        sizes.5 = gs;
    }
    println!("dkls23 2-of-2, both parties in one thread, median of {runs}:");
    println!(
        "  keygen  {:>9.2} ms   device sends {} B, gateway sends {} B; gateway share {} B",
        ms(median(keygen)),
        sizes.0,
        sizes.1,
        sizes.6
    );
    println!(
        "  sign    {:>9.2} ms   device sends {} B, gateway sends {} B",
        ms(median(sign)),
        sizes.2,
        sizes.3
    );
    println!(
        "  refresh {:>9.2} ms   device sends {} B, gateway sends {} B",
        ms(median(refresh)),
        sizes.4,
        sizes.5
    );
    Ok(())
}
