//! `parapet wallet …`: the device's wallets. `create` runs key generation with the gateway and
//! keeps the device's share in the passphrase-encrypted device file; `sign` submits a request
//! (with the app's key and the user's session) and joins its ceremony, or joins one an app
//! already created (`--request`); `list` shows the wallets in the file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use parapet_signer::device::{DeviceSecrets, client, file};
use parapet_signer::mpc::KeyShare;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::device_cmd::{FileArgs, agent, passphrase, refusal, text};

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Create a wallet with the gateway (your account needs a passkey); prints its address.
    Create {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Sign with a wallet: submit FILE (a /v1/authorize-style body: chain_id and one payload)
    /// and join the ceremony, or join the ceremony of an existing request with --request.
    Sign {
        /// The wallet's address.
        #[arg(long)]
        wallet: String,
        /// The request body (JSON); not needed with --request.
        body: Option<PathBuf>,
        /// Join this signing request instead of creating one.
        #[arg(long)]
        request: Option<String>,
        /// The app's API key that creates the request.
        #[arg(long, env = "PARAPET_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// The user's session for that app.
        #[arg(long, env = "PARAPET_SESSION", hide_env_values = true)]
        session: Option<String>,
        /// Reuse an Idempotency-Key (default: a fresh one).
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Refresh a wallet's shares with the gateway (same address, next epoch). The owner approves
    /// the refresh with a passkey first (the app's POST /v1/wallets/{address}/refresh).
    Refresh {
        #[arg(long)]
        wallet: String,
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the wallets whose device share this file holds.
    List {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: WalletCommand) -> Result<ExitCode> {
    match command {
        WalletCommand::Create { file, json } => create(&file.path()?, json),
        WalletCommand::Sign {
            wallet,
            body,
            request,
            api_key,
            session,
            idempotency_key,
            file,
            json,
        } => {
            let path = file.path()?;
            let request = match request {
                Some(r) => r,
                None => {
                    let body = body.context("give the request body FILE, or --request ID")?;
                    let (Some(key), Some(session)) = (api_key, session) else {
                        bail!(
                            "creating a signing request needs --api-key and --session (or PARAPET_API_KEY and PARAPET_SESSION)"
                        );
                    };
                    let secrets = file::load(&path, &passphrase(false)?)?;
                    submit(&secrets, &wallet, &body, &key, &session, idempotency_key)?
                }
            };
            sign(&path, &wallet, &request, json)
        }
        WalletCommand::Refresh { wallet, file, json } => refresh(&file.path()?, &wallet, json),
        WalletCommand::List { file, json } => {
            let secrets = file::load(&file.path()?, &passphrase(false)?)?;
            let wallets: Vec<&String> =
                secrets.shares.keys().filter(|k| !k.contains('#')).collect();
            if json {
                println!("{}", serde_json::json!({ "wallets": wallets }));
            } else {
                for w in wallets {
                    println!("{w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn create(path: &Path, json: bool) -> Result<ExitCode> {
    let passphrase = Zeroizing::new(passphrase(false)?);
    let mut secrets = file::load(path, &passphrase)?;
    let (gateway, token) = (secrets.gateway.clone(), secrets.device_token.clone());
    let share = runtime()?.block_on(client::keygen(&gateway, &token, |share: &KeyShare| {
        let address = format!("0x{}", hex::encode(share.address()));
        let bytes = share.to_bytes();
        secrets
            .shares
            .insert(address, hex::encode(bytes.as_slice()));
        file::save(path, &secrets, &passphrase)
    }));
    let share = share.context("key generation with the gateway failed")?;
    let address = format!("0x{}", hex::encode(share.address()));
    if json {
        println!("{}", serde_json::json!({ "address": address }));
    } else {
        println!("{address}");
    }
    Ok(ExitCode::SUCCESS)
}

fn submit(
    secrets: &DeviceSecrets,
    wallet: &str,
    body: &Path,
    api_key: &str,
    session: &str,
    idempotency_key: Option<String>,
) -> Result<String> {
    let body: Value = serde_json::from_slice(
        &std::fs::read(body).with_context(|| format!("reading {}", body.display()))?,
    )
    .with_context(|| format!("{} is not JSON", body.display()))?;
    let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut res = agent()
        .post(&format!("{}/v1/wallets/{wallet}/sign", secrets.gateway))
        .header("authorization", &format!("Bearer {api_key}"))
        .header("parapet-session", session)
        .header("idempotency-key", &key)
        .send_json(body)
        .with_context(|| format!("reaching {}", secrets.gateway))?;
    let status = res.status().as_u16();
    let answer: Value = res.body_mut().read_json().unwrap_or(Value::Null);
    if status != 200 && status != 201 {
        let code = text(&answer, "code").unwrap_or("?");
        if code == "step_up_required" {
            bail!(
                "this request needs your approval with a passkey: approve request {} on the gateway's page, then run again with --request {}",
                text(&answer, "signing_request").unwrap_or("?"),
                text(&answer, "signing_request").unwrap_or("?")
            );
        }
        bail!("the gateway refused: {} ({code})", refusal(status, &answer));
    }
    text(&answer, "id")
        .map(str::to_owned)
        .context("the gateway's answer has no signing request id")
}

/// The key under which a refreshed share waits, in the device file, for the gateway to confirm
/// its epoch.
fn pending_key(wallet: &str, epoch: i64) -> String {
    format!("{wallet}#{epoch}")
}

fn share_of(secrets: &DeviceSecrets, key: &str) -> Result<KeyShare> {
    let hex_share = Zeroizing::new(
        secrets
            .shares
            .get(key)
            .with_context(|| format!("this device file holds no share of {key}"))?
            .clone(),
    );
    let bytes = Zeroizing::new(hex::decode(hex_share.as_str()).context("damaged share")?);
    Ok(KeyShare::from_bytes(&bytes)?)
}

fn sign(path: &Path, wallet: &str, request: &str, json: bool) -> Result<ExitCode> {
    let passphrase = Zeroizing::new(passphrase(false)?);
    let mut secrets = file::load(path, &passphrase)?;
    let wallet = wallet.to_ascii_lowercase();
    // A refreshed share the gateway has committed (it signs with that epoch) becomes current.
    let mut promoted = None;
    let (digest, signature) = runtime()?
        .block_on(client::sign_with(
            &secrets.gateway.clone(),
            &secrets.device_token.clone(),
            request,
            |epoch| {
                if let Some(e) = epoch
                    && secrets.shares.contains_key(&pending_key(&wallet, e))
                {
                    promoted = Some(pending_key(&wallet, e));
                    return share_of(&secrets, &pending_key(&wallet, e))
                        .map_err(|e| parapet_signer::Error::DeviceFile(e.to_string()));
                }
                share_of(&secrets, &wallet)
                    .map_err(|e| parapet_signer::Error::DeviceFile(e.to_string()))
            },
        ))
        .context("the signing ceremony failed")?;
    if let Some(key) = promoted
        && let Some(share) = secrets.shares.remove(&key)
    {
        secrets.shares.insert(wallet.clone(), share);
        file::save(path, &secrets, &passphrase)?;
    }
    let mut res = agent()
        .get(&format!(
            "{}/v1/device/signing-requests/{request}",
            secrets.gateway
        ))
        .header("authorization", &format!("Device {}", secrets.device_token))
        .call()
        .with_context(|| format!("reaching {}", secrets.gateway))?;
    let answer: Value = res.body_mut().read_json().unwrap_or(Value::Null);
    let out = serde_json::json!({
        "signing_request": request,
        "digest": format!("0x{}", hex::encode(digest)),
        "signature": {
            "r": format!("0x{}", hex::encode(signature.r)),
            "s": format!("0x{}", hex::encode(signature.s)),
            "y_parity": signature.y_parity(),
        },
        "signed_transaction": answer.get("signed_transaction").cloned().unwrap_or(Value::Null),
        "tx_hash": answer.get("tx_hash").cloned().unwrap_or(Value::Null),
    });
    if json {
        println!("{out}");
    } else {
        println!("signed 0x{}", hex::encode(digest));
        println!("signature 0x{}", hex::encode(signature.to_rsv()));
        if let Some(tx) = out.get("signed_transaction").and_then(Value::as_str) {
            println!("signed transaction {tx}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn refresh(path: &Path, wallet: &str, json: bool) -> Result<ExitCode> {
    let passphrase = Zeroizing::new(passphrase(false)?);
    let mut secrets = file::load(path, &passphrase)?;
    let wallet = wallet.to_ascii_lowercase();
    let share = share_of(&secrets, &wallet)?;
    let (gateway, token) = (secrets.gateway.clone(), secrets.device_token.clone());
    // Phase 1: the new share is kept next to the current one until the gateway commits.
    let result = runtime()?.block_on(client::refresh(&gateway, &token, &share, |new, epoch| {
        secrets.shares.insert(
            pending_key(&wallet, epoch),
            hex::encode(new.to_bytes().as_slice()),
        );
        file::save(path, &secrets, &passphrase)
    }));
    let (_, epoch) =
        result.context("the refresh with the gateway failed; the current share still signs")?;
    // Phase 2 committed on the gateway: the new share is the current one.
    if let Some(new) = secrets.shares.remove(&pending_key(&wallet, epoch)) {
        secrets.shares.insert(wallet.clone(), new);
    }
    file::save(path, &secrets, &passphrase)?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "address": wallet, "epoch": epoch })
        );
    } else {
        println!("{wallet} refreshed to epoch {epoch}");
    }
    Ok(ExitCode::SUCCESS)
}
