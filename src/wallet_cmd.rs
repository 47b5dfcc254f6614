//! `parapet wallet …`: the device's wallets. `create` runs key generation with the gateway and
//! keeps the device's share in the passphrase-encrypted device file; `sign` submits a request
//! (with the app's key and the user's session) and joins its ceremony, or joins one an app
//! already created (`--request`). Either way the device decodes the request itself, shows what
//! it is, asks before it signs, and signs only the digest it computed (see [`checked`]); `list`
//! shows the wallets in the file. Every key generation
//! and refresh also leaves the wallet's backup kit in the file (docs/architecture.md §9): `kit`
//! writes it out, `sign --offline --backup-kit` signs with it and no gateway, and `export-key`
//! rebuilds the private key from it for a user who leaves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use parapet_api::signing::{
    DeviceSigningRequest, SigningRefusal, SigningRequestAnswer, SigningRequestView, SigningState,
};
use parapet_device::signing::{self, Checked, OfflineSignature, shipped_registry, summary};
use parapet_device::{DeviceSecrets, client, file};
use parapet_mpc::recovery::kit::BackupKit;
use parapet_mpc::{Dkls23, KeyShare, ThresholdEcdsa};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::device_file::{FileArgs, passphrase};
use crate::gateway_calls::{agent, answer_json, refusal, text, typed};
use crate::recovery_cmd::{self, share_of};

#[derive(Subcommand)]
pub enum WalletCommand {
    /// Create a wallet with the gateway (your account needs a passkey); prints its address.
    /// Your first wallet also makes your recovery secret, shown once.
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
        /// Sign with the backup kit alone, both parties on this machine, no gateway (the exit
        /// path; asks for the recovery secret). No policy is applied.
        #[arg(long, requires = "backup_kit")]
        offline: bool,
        /// The backup kit file (`parapet wallet kit`) for --offline.
        #[arg(long)]
        backup_kit: Option<PathBuf>,
        /// Sign without asking "Sign this?" (for scripts). The summary is still printed and the
        /// device still refuses a request whose digest is not the one it computed.
        #[arg(long, env = "PARAPET_YES", value_parser = clap::builder::BoolishValueParser::new())]
        yes: bool,
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Write a wallet's current backup kit to a file: its two shares sealed to your recovery
    /// key. With it and your recovery secret you can sign without the gateway.
    Kit {
        #[arg(long)]
        wallet: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        file: FileArgs,
    },
    /// Rebuild a wallet's private key from its backup kit and your recovery secret, to import it
    /// elsewhere. This ENDS the 2-of-2 protection for that wallet for good.
    ExportKey {
        #[arg(long)]
        backup_kit: PathBuf,
        /// The first confirmation; the second is typing the wallet's address (or
        /// PARAPET_CONFIRM_EXPORT set to it).
        #[arg(long)]
        i_understand_this_ends_2_of_2: bool,
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
            offline,
            backup_kit,
            yes,
            file,
            json,
        } => {
            if offline {
                let kit = backup_kit.context("--offline needs --backup-kit FILE")?;
                let body = body.context("give the request body FILE")?;
                return sign_offline(&wallet, &kit, &body, json);
            }
            let path = file.path()?;
            let pass = Zeroizing::new(passphrase(false)?);
            let secrets = file::load(&path, &pass)?;
            let wallet = wallet.to_ascii_lowercase();
            let (request, expected) = match request {
                Some(r) => {
                    // The request an app made: what the device signs comes from the gateway's
                    // copy of it, decoded and checked here.
                    let view = device_view(&secrets, &r)?;
                    let mine = checked(view.body, &wallet)?;
                    check_view(&view.answer.view, &r, &wallet, &mine)?;
                    show(Some(&r), &wallet, &mine);
                    confirm(yes)?;
                    (r, mine.digest())
                }
                None => {
                    // The device's own file: checked and confirmed before the gateway sees it,
                    // so that a "no" leaves no request behind.
                    let body = body.context("give the request body FILE, or --request ID")?;
                    let (Some(key), Some(session)) = (api_key, session) else {
                        bail!(
                            "creating a signing request needs --api-key and --session (or PARAPET_API_KEY and PARAPET_SESSION)"
                        );
                    };
                    let body = read_body(&body)?;
                    if body.get("wallet").is_some() {
                        bail!("the body names no wallet: --wallet says which");
                    }
                    let mine = checked(body.clone(), &wallet)?;
                    show(None, &wallet, &mine);
                    confirm(yes)?;
                    let r = submit(&secrets, &wallet, &body, &key, &session, idempotency_key)?;
                    check_view(&device_view(&secrets, &r)?.answer.view, &r, &wallet, &mine)?;
                    (r, mine.digest())
                }
            };
            sign(&path, &pass, secrets, &wallet, &request, &expected, json)
        }
        WalletCommand::Refresh { wallet, file, json } => refresh(&file.path()?, &wallet, json),
        WalletCommand::Kit { wallet, out, file } => write_kit(&file.path()?, &wallet, &out),
        WalletCommand::ExportKey {
            backup_kit,
            i_understand_this_ends_2_of_2,
            json,
        } => export_key(&backup_kit, i_understand_this_ends_2_of_2, json),
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
    // The user's first wallet makes their recovery secret (or, on a new device, asks for it).
    let setup = match secrets.recovery_public_key {
        Some(_) => None,
        None => Some(recovery_cmd::set_up(path, &mut secrets, &passphrase)?),
    };
    let recovery_key = recovery_cmd::public_key_of(&secrets)?;
    let (gateway, token, user) = (
        secrets.gateway.clone(),
        secrets.device_token.clone(),
        secrets.kdf_salt().to_owned(),
    );
    let target = client::RecoveryTarget {
        user: &user,
        public_key: &recovery_key,
    };
    let share = runtime()?.block_on(client::keygen(
        &gateway,
        &token,
        target,
        |share: &KeyShare, kit: &BackupKit| {
            let address = format!("0x{}", hex::encode(share.address()));
            let bytes = share.to_bytes();
            secrets
                .shares
                .insert(address.clone(), hex::encode(bytes.as_slice()));
            secrets.kits.insert(address, kit.clone());
            file::save(path, &secrets, &passphrase)
        },
    ));
    let share = share.context("key generation with the gateway failed")?;
    let address = format!("0x{}", hex::encode(share.address()));
    if let Some(setup) = &setup
        && !json
    {
        recovery_cmd::report_setup(setup, false);
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "address": address,
                "recovery_secret": setup.as_ref().and_then(|s| s.new_secret.as_ref()).map(|s| s.as_str()),
            })
        );
    } else {
        println!("{address}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A request body file (JSON).
fn read_body(path: &Path) -> Result<Value> {
    serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))
}

fn submit(
    secrets: &DeviceSecrets,
    wallet: &str,
    body: &Value,
    api_key: &str,
    session: &str,
    idempotency_key: Option<String>,
) -> Result<String> {
    let key = idempotency_key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut res = agent()
        .post(&format!("{}/v1/wallets/{wallet}/sign", secrets.gateway))
        .header("authorization", &format!("Bearer {api_key}"))
        .header("parapet-session", session)
        .header("idempotency-key", &key)
        .send_json(body)
        .with_context(|| format!("reaching {}", secrets.gateway))?;
    let status = res.status().as_u16();
    let answer: Value = answer_json(&mut res)?;
    if status != 200 && status != 201 {
        let code = text(&answer, "code").unwrap_or("?");
        if code == "step_up_required" {
            let refused: SigningRefusal = typed(answer)?;
            bail!(
                "this request needs your approval with a passkey: approve request {} on the gateway's page, then run again with --request {}",
                refused.signing_request,
                refused.signing_request
            );
        }
        bail!("the gateway refused: {} ({code})", refusal(status, &answer));
    }
    Ok(typed::<SigningRequestAnswer>(answer)?.view.id)
}

/// The key under which a refreshed share waits, in the device file, for the gateway to confirm
/// its epoch.
fn pending_key(wallet: &str, epoch: i64) -> String {
    format!("{wallet}#{epoch}")
}

/// The device's own read of a request body for `wallet` ([`Checked::from_body`]).
fn checked(body: Value, wallet: &str) -> Result<Checked> {
    Ok(Checked::from_body(body, wallet, &shipped_registry())?)
}

/// The device's read of a signing request (`GET /v1/device/signing-requests/{id}`).
fn device_view(secrets: &DeviceSecrets, request: &str) -> Result<DeviceSigningRequest> {
    let mut res = agent()
        .get(&format!(
            "{}/v1/device/signing-requests/{request}",
            secrets.gateway
        ))
        .header("authorization", &format!("Device {}", secrets.device_token))
        .call()
        .with_context(|| format!("reaching {}", secrets.gateway))?;
    let status = res.status().as_u16();
    let answer: Value = answer_json(&mut res)?;
    if status != 200 {
        let code = text(&answer, "code").unwrap_or("?");
        bail!(
            "the gateway refused to show request {request}: {} ({code})",
            refusal(status, &answer)
        );
    }
    typed(answer)
}

/// Refuses a request the gateway describes otherwise than the device decoded it
/// ([`signing::check_view`]); one waiting for a passkey says where to approve it.
fn check_view(
    view: &SigningRequestView,
    request: &str,
    wallet: &str,
    mine: &Checked,
) -> Result<()> {
    match signing::check_view(view, wallet, mine) {
        Err(parapet_device::Error::NotReady {
            state: SigningState::PendingStepUp,
            ..
        }) => bail!(
            "request {request} waits for your approval with a passkey: approve it on the \
             gateway's page, then run again with --request {request}"
        ),
        other => Ok(other?),
    }
}

/// Prints the summary (on stderr: stdout keeps the result, `--json` included).
fn show(request_id: Option<&str>, wallet: &str, mine: &Checked) {
    eprint!("{}", summary(request_id, wallet, mine));
}

/// Asks "Sign this?" on the terminal; `--yes` answers for scripts. With no terminal to ask on
/// and no `--yes`, nothing is signed: a device never signs silently.
fn confirm(yes: bool) -> Result<()> {
    use std::io::IsTerminal as _;
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "nothing was signed: there is no terminal to ask \"Sign this?\" on; pass --yes (or \
             set PARAPET_YES=1) to sign without asking"
        );
    }
    eprint!("Sign this? [y/N] ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("not confirmed: nothing was signed"),
    }
}

/// Joins request `request`'s ceremony, signing `expected` (the digest this device computed)
/// and nothing else: the client ends the ceremony before any round if the gateway announces
/// another.
fn sign(
    path: &Path,
    passphrase: &str,
    mut secrets: DeviceSecrets,
    wallet: &str,
    request: &str,
    expected: &[u8; 32],
    json: bool,
) -> Result<ExitCode> {
    // A refreshed share the gateway has committed (it signs with that epoch) becomes current.
    let mut promoted = None;
    let (digest, signature) = runtime()?
        .block_on(client::sign_with(
            &secrets.gateway.clone(),
            &secrets.device_token.clone(),
            request,
            expected,
            |epoch| {
                let key = match epoch {
                    Some(e) if secrets.shares.contains_key(&pending_key(wallet, e)) => {
                        promoted = Some(pending_key(wallet, e));
                        pending_key(wallet, e)
                    }
                    _ => wallet.to_owned(),
                };
                let share = share_of(&secrets, &key)
                    .map_err(|e| parapet_device::Error::DeviceFile(e.to_string()))?;
                if format!("0x{}", hex::encode(share.address())) != wallet {
                    return Err(parapet_device::Error::DeviceFile(format!(
                        "the share kept for {wallet} is of another wallet"
                    )));
                }
                Ok(share)
            },
        ))
        .context("the signing ceremony failed")?;
    if let Some(key) = promoted
        && let Some(share) = secrets.shares.remove(&key)
    {
        secrets.shares.insert(wallet.to_owned(), share);
        if let Some(kit) = secrets.kits.remove(&key) {
            secrets.kits.insert(wallet.to_owned(), kit);
        }
        file::save(path, &secrets, passphrase)?;
    }
    let answer = device_view(&secrets, request).ok();
    let signed = |pick: fn(&SigningRequestAnswer) -> Option<&String>| {
        answer
            .as_ref()
            .and_then(|a| pick(&a.answer))
            .map_or(Value::Null, |s| Value::from(s.as_str()))
    };
    let out = serde_json::json!({
        "signing_request": request,
        "digest": format!("0x{}", hex::encode(digest)),
        "signature": {
            "r": format!("0x{}", hex::encode(signature.r)),
            "s": format!("0x{}", hex::encode(signature.s)),
            "y_parity": signature.y_parity(),
        },
        "signed_transaction": signed(|a| a.signed_transaction.as_ref()),
        "tx_hash": signed(|a| a.tx_hash.as_ref()),
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
    if format!("0x{}", hex::encode(share.address())) != wallet {
        bail!("the share kept for {wallet} is of another wallet: nothing was refreshed");
    }
    let recovery_key = recovery_cmd::public_key_of(&secrets)?;
    let (gateway, token, user) = (
        secrets.gateway.clone(),
        secrets.device_token.clone(),
        secrets.kdf_salt().to_owned(),
    );
    let target = client::RecoveryTarget {
        user: &user,
        public_key: &recovery_key,
    };
    // Phase 1: the new share and its kit are kept next to the current ones until the gateway
    // commits.
    let result = runtime()?.block_on(client::refresh(
        &gateway,
        &token,
        &share,
        target,
        |new, epoch, kit| {
            secrets.shares.insert(
                pending_key(&wallet, epoch),
                hex::encode(new.to_bytes().as_slice()),
            );
            secrets
                .kits
                .insert(pending_key(&wallet, epoch), kit.clone());
            file::save(path, &secrets, &passphrase)
        },
    ));
    let (_, epoch) =
        result.context("the refresh with the gateway failed; the current share still signs")?;
    // Phase 2 committed on the gateway: the new share is the current one.
    if let Some(new) = secrets.shares.remove(&pending_key(&wallet, epoch)) {
        secrets.shares.insert(wallet.clone(), new);
    }
    if let Some(kit) = secrets.kits.remove(&pending_key(&wallet, epoch)) {
        secrets.kits.insert(wallet.clone(), kit);
    }
    file::save(path, &secrets, &passphrase)?;
    // The devices this one added hold the old epoch now: send them the new share.
    let resynced = match crate::device_transfer_cmd::resync_siblings(&secrets, Some(&wallet)) {
        Ok(sent) => sent,
        Err(e) => {
            eprintln!("the other devices were not re-synced ({e:#}); run: parapet device sync");
            Vec::new()
        }
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "address": wallet, "epoch": epoch, "resynced": resynced })
        );
    } else {
        println!("{wallet} refreshed to epoch {epoch}");
        if !resynced.is_empty() {
            println!(
                "re-synced {} other device(s); on each, run: parapet device receive",
                resynced.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_kit(path: &Path, wallet: &str, out: &Path) -> Result<ExitCode> {
    let passphrase = Zeroizing::new(passphrase(false)?);
    let secrets = file::load(path, &passphrase)?;
    let wallet = wallet.to_ascii_lowercase();
    let kit = secrets.kits.get(&wallet).with_context(|| {
        format!("this device holds no kit for {wallet}: run `parapet recovery setup`")
    })?;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&kit.to_file()?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote the epoch-{} kit of {wallet} to {}: keep it with your recovery secret",
        kit.epoch,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a kit file and opens it with the recovery secret: both shares of its wallet.
fn open_kit(path: &Path) -> Result<(BackupKit, KeyShare, KeyShare)> {
    let kit = BackupKit::from_file(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let secret = recovery_cmd::ask_secret()?;
    let keys = recovery_cmd::derive(&secret, &kit.user)?;
    let (device, gateway) = kit
        .open(&keys)
        .context("the kit did not open with this recovery secret")?;
    Ok((kit, device, gateway))
}

/// Signs a request body with a kit's two shares on this machine: the same digest and signed
/// transaction the gateway would produce, with no gateway and no policy.
fn sign_offline(wallet: &str, kit_path: &Path, body: &Path, json: bool) -> Result<ExitCode> {
    let (kit, device, gateway) = open_kit(kit_path)?;
    if kit.address != wallet.to_ascii_lowercase() {
        bail!("the kit is for {}, not {wallet}", kit.address);
    }
    let body = read_body(body)?;
    if body.get("wallet").is_some() {
        bail!("the body names no wallet: the kit says which");
    }
    let mine = checked(body, &kit.address)?;
    let OfflineSignature {
        digest,
        signature,
        signed_transaction: signed,
    } = signing::sign_offline(&mine, &device, &gateway)?;
    let out = serde_json::json!({
        "digest": format!("0x{}", hex::encode(digest)),
        "signature": {
            "r": format!("0x{}", hex::encode(signature.r)),
            "s": format!("0x{}", hex::encode(signature.s)),
            "y_parity": signature.y_parity(),
        },
        "signed_transaction": signed.as_ref().map(|(raw, _)| format!("0x{}", hex::encode(raw))),
        "tx_hash": signed.as_ref().map(|(_, hash)| format!("0x{}", hex::encode(hash))),
        "offline": true,
    });
    if json {
        println!("{out}");
    } else {
        println!("signed 0x{} offline", hex::encode(digest));
        println!("signature 0x{}", hex::encode(signature.to_rsv()));
        if let Some(tx) = out.get("signed_transaction").and_then(Value::as_str) {
            println!("signed transaction {tx}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export_key(kit_path: &Path, understood: bool, json: bool) -> Result<ExitCode> {
    if !understood {
        bail!(
            "export-key rebuilds the whole private key: anyone who sees it controls the wallet, \
             and the gateway's policies no longer protect it. Add --i-understand-this-ends-2-of-2 \
             to go on."
        );
    }
    let (kit, device, gateway) = open_kit(kit_path)?;
    let typed = match std::env::var("PARAPET_CONFIRM_EXPORT") {
        Ok(v) => v,
        Err(_) => {
            eprint!(
                "Type the wallet's address ({}) to export its key: ",
                kit.address
            );
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the confirmation")?;
            line
        }
    };
    if typed.trim().to_ascii_lowercase() != kit.address {
        bail!("not confirmed: nothing was exported");
    }
    let key = Dkls23.export_key(&device, &gateway)?;
    let key_hex = Zeroizing::new(format!("0x{}", hex::encode(key.as_ref())));
    eprintln!(
        "WARNING: this is the whole private key of {}. The 2-of-2 protection of this wallet has \
         ended: move its funds or treat the key as exposed once it leaves this machine.",
        kit.address
    );
    if json {
        println!(
            "{}",
            serde_json::json!({"address": kit.address, "private_key": key_hex.as_str()})
        );
    } else {
        println!("{}", key_hex.as_str());
    }
    Ok(ExitCode::SUCCESS)
}
