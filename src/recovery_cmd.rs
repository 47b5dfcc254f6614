//! `parapet recovery …`: the user's recovery secret on this device (docs/architecture.md §9).
//! `setup` makes one the first time (shown once, to be written down) or takes the existing one on
//! another device, hands the gateway the backups of this device's wallets and keeps their kits;
//! `check` tells whether a secret is the user's and whether every kit on this device is current and
//! opens, without opening a recovery.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use parapet_api::recovery::{
    KitsIssued, RecoveryCompleted, RecoveryIdentified, RecoveryOpened, RecoveryStatus,
};
use parapet_device::file::PendingRecovery;
use parapet_device::{DeviceSecrets, client, file};
use parapet_mpc::KeyShare;
use parapet_mpc::recovery::kit::{BackupKit, seal_device_share};
use parapet_mpc::recovery::{RecoveryKeys, RecoveryPublicKey, RecoverySecret};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::device_file::{FileArgs, passphrase};
use crate::gateway_calls::{device_get, device_post, post_json, refusal, refused, text, typed};

#[derive(Subcommand)]
pub enum RecoveryCommand {
    /// Set up your recovery secret: the first time, make one and show it once; on another
    /// device, type the one you have. Backs up this device's wallets and keeps their kits.
    Setup {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Check a recovery secret against your account, and this device's kits against the
    /// wallets' current epochs, without opening a recovery.
    Check {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Lost every device? Open a recovery from this new machine with your recovery secret. It
    /// can be completed after the waiting period (48 h by default); your passkeys can cancel it.
    Start {
        /// The gateway's base URL.
        #[arg(long)]
        gateway: String,
        /// Your user id, or the address of any of your wallets.
        #[arg(long)]
        user: String,
        /// A name for this device.
        #[arg(long, default_value = "recovered device")]
        name: String,
        /// The current code of your authenticator app, if you set one up (also
        /// `PARAPET_RECOVERY_TOTP`). Each code works once.
        #[arg(long, env = "PARAPET_RECOVERY_TOTP")]
        totp: Option<String>,
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Complete the recovery this device opened, once the waiting period is over: every other
    /// device, passkey and session is revoked, this device receives your wallets' backups and
    /// refreshes every wallet (same addresses, new shares).
    Complete {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: RecoveryCommand) -> Result<ExitCode> {
    match command {
        RecoveryCommand::Setup { file, json } => {
            let path = file.path()?;
            let pass = Zeroizing::new(passphrase(false)?);
            let mut secrets = file::load(&path, &pass)?;
            let outcome = set_up(&path, &mut secrets, &pass)?;
            report_setup(&outcome, json);
            Ok(ExitCode::SUCCESS)
        }
        RecoveryCommand::Check { file, json } => check(&file.path()?, json),
        RecoveryCommand::Start {
            gateway,
            user,
            name,
            totp,
            file,
            json,
        } => start(&gateway, &user, &name, totp.as_deref(), &file.path()?, json),
        RecoveryCommand::Complete { file, json } => complete(&file.path()?, json),
    }
}

/// The recovery secret as the user types it: `PARAPET_RECOVERY_SECRET` (for scripts), else
/// asked on the terminal without echo.
pub fn ask_secret() -> Result<RecoverySecret> {
    let typed = Zeroizing::new(match std::env::var("PARAPET_RECOVERY_SECRET") {
        Ok(s) => s,
        Err(_) => rpassword::prompt_password("Recovery secret: ")
            .context("reading the recovery secret")?,
    });
    Ok(RecoverySecret::parse(&typed)?)
}

/// Derives the keys with the person's recovery salt: Argon2id with 64 MiB takes a moment.
pub fn derive(secret: &RecoverySecret, salt: &str) -> Result<RecoveryKeys> {
    eprintln!("deriving keys from the recovery secret…");
    Ok(secret.derive(salt)?)
}

/// What `setup` did.
pub struct SetUp {
    /// The new secret, when this run made it (shown once, then gone).
    pub new_secret: Option<Zeroizing<String>>,
    pub public_key: RecoveryPublicKey,
    pub wallets: Vec<String>,
}

/// `GET /v1/device/recovery`: the person's recovery secret and this device's wallets.
pub fn recovery_status(secrets: &DeviceSecrets) -> Result<RecoveryStatus> {
    typed(device_get(secrets, "/v1/device/recovery")?)
}

/// The share this file holds of `wallet` at the gateway's `epoch`: a refreshed share waiting
/// under `address#epoch` is the current one once the gateway is at that epoch.
pub fn current_share_key(secrets: &DeviceSecrets, wallet: &str, epoch: i64) -> String {
    let pending = format!("{wallet}#{epoch}");
    if secrets.shares.contains_key(&pending) {
        pending
    } else {
        wallet.to_owned()
    }
}

pub fn share_of(secrets: &DeviceSecrets, key: &str) -> Result<KeyShare> {
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

/// Sets up (or joins) the user's recovery secret and saves the file with the public key and the
/// kits of this device's wallets.
pub fn set_up(path: &Path, secrets: &mut DeviceSecrets, pass: &str) -> Result<SetUp> {
    let status = recovery_status(secrets)?;
    let existing = status.set_up;
    let (secret, new_secret, salt) = if existing {
        eprintln!("Your account has a recovery secret: type it to add this device.");
        // The salt is checked with the secret: the keys must give the stored public key.
        let salt = status.salt.clone().unwrap_or_else(|| secrets.user.clone());
        (ask_secret()?, None, salt)
    } else {
        let secret = RecoverySecret::generate();
        let written = secret.written();
        (secret, Some(written), parapet_mpc::recovery::new_salt())
    };
    let keys = derive(&secret, &salt)?;
    let public_key = *keys.public_key();
    if existing && status.public_key.as_deref() != Some(public_key.to_hex().as_str()) {
        bail!("that is not this account's recovery secret");
    }
    let mut held = Vec::new();
    for w in &status.wallets {
        let key = current_share_key(secrets, &w.address, w.epoch);
        let share = share_of(secrets, &key)?;
        let envelope = seal_device_share(&public_key, &share, w.epoch)?;
        held.push((w.address.clone(), w.epoch, key, share, envelope));
    }
    let backups: Vec<Value> = held
        .iter()
        .map(|(a, e, _, _, env)| json!({"wallet": a, "epoch": e, "device_share": hex::encode(env)}))
        .collect();
    let mut body = json!({
        "public_key": public_key.to_hex(),
        "auth_key": hex::encode(keys.auth_key()),
        "backups": backups,
    });
    if !existing && let Some(o) = body.as_object_mut() {
        o.insert("salt".to_owned(), json!(salt));
    }
    let (mut status_code, mut answer) = device_post(secrets, "/v1/device/recovery", &body)?;
    if status_code == 403
        && text(&answer, "code") == Some("step_up_required")
        && let Some(operation) = text(&answer, "operation").map(str::to_owned)
    {
        // A first secret decides who can take the wallets over: the owner approves it with a
        // passkey, for this device and this secret, and this device waits for that.
        wait_for_approval(secrets, &operation)?;
        if let Some(o) = body.as_object_mut() {
            o.insert("approval".to_owned(), json!(operation));
        }
        (status_code, answer) = device_post(secrets, "/v1/device/recovery", &body)?;
    }
    if status_code != 201 {
        bail!(
            "the gateway refused: {} ({})",
            refusal(status_code, &answer),
            text(&answer, "code").unwrap_or("?")
        );
    }
    let issued: KitsIssued = typed(answer)?;
    for kit in &issued.kits {
        let (wallet, epoch, gateway_share) = (&kit.wallet, kit.epoch, &kit.gateway_share);
        let Some((_, _, key, share, envelope)) =
            held.iter().find(|(a, e, ..)| a == wallet && *e == epoch)
        else {
            bail!("the gateway sent a kit for {wallet}, which this device did not back up");
        };
        let gateway_envelope = hex::decode(gateway_share).context("a kit that is not hex")?;
        let made = BackupKit::new(
            &salt,
            share,
            epoch,
            &public_key,
            envelope,
            &gateway_envelope,
        );
        // The gateway's half must open with this secret and belong to this wallet.
        made.open(&keys)
            .with_context(|| format!("the gateway's kit for {wallet} does not open"))?;
        secrets.kits.insert(key.clone(), made);
    }
    secrets.recovery_public_key = Some(public_key.to_hex());
    secrets.recovery_salt = (salt != secrets.user).then_some(salt);
    file::save(path, secrets, pass)?;
    Ok(SetUp {
        new_secret,
        public_key,
        wallets: held.into_iter().map(|(a, ..)| a).collect(),
    })
}

/// How long the device waits for the owner's passkey approval of a first recovery secret (the
/// gateway keeps the request open as long).
const APPROVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits until the owner approved `operation` with their passkey (on the gateway's page, or in
/// their app), saying so on stderr; an error when it ends any other way or the wait runs out.
fn wait_for_approval(secrets: &DeviceSecrets, operation: &str) -> Result<()> {
    eprintln!(
        "Setting your recovery secret needs your approval with a passkey: open the gateway's page \
         ({}/ui/), or your app, and approve the request from this device (operation {operation}). \
         Waiting…",
        secrets.gateway
    );
    let deadline = std::time::Instant::now() + APPROVAL_WAIT;
    loop {
        let seen = device_get(secrets, &format!("/v1/device/operations/{operation}"))?;
        match text(&seen, "state") {
            Some("approved") => return Ok(()),
            Some("pending_step_up") if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Some("pending_step_up") => bail!("nobody approved the recovery secret in time"),
            other => bail!(
                "the approval of the recovery secret ended as {}",
                other.unwrap_or("?")
            ),
        }
    }
}

pub fn report_setup(outcome: &SetUp, json: bool) {
    if json {
        println!(
            "{}",
            json!({
                "recovery_secret": outcome.new_secret.as_ref().map(|s| s.as_str()),
                "public_key": outcome.public_key.to_hex(),
                "wallets": outcome.wallets,
            })
        );
        return;
    }
    if let Some(secret) = &outcome.new_secret {
        eprintln!();
        eprintln!("YOUR RECOVERY SECRET (shown once; write it down and keep it offline):");
        println!("{}", secret.as_str());
        eprintln!();
        eprintln!(
            "It is the only way back into your wallets if you lose every device, and it opens \
             your backup kits. Nobody, including the gateway, can recover it for you."
        );
    } else {
        eprintln!("this device now holds your recovery public key and current kits");
    }
}

/// The recovery public key this device's own file holds, or an error that says how to get it.
pub fn public_key_of(secrets: &DeviceSecrets) -> Result<RecoveryPublicKey> {
    let hex_key = secrets
        .recovery_public_key
        .as_deref()
        .context("this device has no recovery key yet: run `parapet recovery setup`")?;
    Ok(RecoveryPublicKey::from_hex(hex_key)?)
}

fn check(path: &Path, json: bool) -> Result<ExitCode> {
    let pass = Zeroizing::new(passphrase(false)?);
    let secrets = file::load(path, &pass)?;
    let secret = ask_secret()?;
    let keys = derive(&secret, secrets.kdf_salt())?;
    let (status_code, answer) = device_post(
        &secrets,
        "/v1/device/recovery/check",
        &json!({"auth_key": hex::encode(keys.auth_key())}),
    )?;
    let matches = status_code == 200;
    if !matches && text(&answer, "code") != Some("recovery_secret_rejected") {
        bail!(
            "the gateway refused: {} ({})",
            refusal(status_code, &answer),
            text(&answer, "code").unwrap_or("?")
        );
    }
    let file_key_matches =
        secrets.recovery_public_key.as_deref() == Some(keys.public_key().to_hex().as_str());
    let status = recovery_status(&secrets)?;
    let mut wallets = Vec::new();
    for w in &status.wallets {
        let (address, epoch) = (w.address.as_str(), w.epoch);
        let kit = secrets
            .kits
            .get(&current_share_key(&secrets, address, epoch));
        let kit_epoch = kit.map(|k| k.epoch);
        let opens = kit.is_some_and(|k| matches && k.open(&keys).is_ok());
        wallets.push(json!({
            "address": address,
            "epoch": epoch,
            "kit_epoch": kit_epoch,
            "kit_current": kit_epoch == Some(epoch),
            "kit_opens": opens,
            "gateway_backup_current": w.backup_epochs.contains(&epoch),
        }));
    }
    let all_good = matches
        && file_key_matches
        && wallets.iter().all(|w| {
            w["kit_current"] == true
                && w["kit_opens"] == true
                && w["gateway_backup_current"] == true
        });
    if json {
        println!(
            "{}",
            json!({
                "secret_matches": matches,
                "device_key_matches": file_key_matches,
                "wallets": wallets,
                "ok": all_good,
            })
        );
    } else {
        println!(
            "recovery secret: {}",
            if matches {
                "matches your account"
            } else {
                "does NOT match your account"
            }
        );
        for w in &wallets {
            println!(
                "{}: epoch {}, kit {}",
                w["address"].as_str().unwrap_or("?"),
                w["epoch"],
                if w["kit_current"] == true && w["kit_opens"] == true {
                    "current and opens"
                } else {
                    "STALE or missing: run `parapet recovery setup`"
                }
            );
        }
    }
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn start(
    gateway: &str,
    who: &str,
    name: &str,
    totp: Option<&str>,
    path: &Path,
    json: bool,
) -> Result<ExitCode> {
    if path.exists() {
        bail!(
            "{} exists already: recover into a new --device-file",
            path.display()
        );
    }
    let gateway = gateway.trim_end_matches('/');
    let pass = Zeroizing::new(passphrase(true)?);
    if pass.chars().count() < file::MIN_PASSPHRASE_CHARS {
        bail!(
            "the passphrase must have at least {} characters",
            file::MIN_PASSPHRASE_CHARS
        );
    }
    let (status, found) = post_json(
        &format!("{gateway}/v1/recovery/identify"),
        None,
        &json!({ "user": who }),
    )?;
    if status != 200 {
        return Err(refused(status, &found));
    }
    let salt = typed::<RecoveryIdentified>(found)?.salt;
    let keys = derive(&ask_secret()?, &salt)?;
    let (status, opened) = post_json(
        &format!("{gateway}/v1/recovery"),
        None,
        &json!({"salt": salt, "auth_key": hex::encode(keys.auth_key()), "device_name": name, "totp": totp}),
    )?;
    if status != 201 {
        if text(&opened, "code") == Some("recovery_refused") && totp.is_none() {
            eprintln!("If you set up an authenticator app, pass its current code with --totp.");
        }
        return Err(refused(status, &opened));
    }
    let opened: RecoveryOpened = typed(opened)?;
    let mut secrets = DeviceSecrets::default();
    secrets.gateway = gateway.to_owned();
    // Only a recovery opened with the secret learns the user id.
    secrets.user = opened.recovery.user_id.clone();
    secrets.recovery_salt = (salt != secrets.user).then_some(salt);
    secrets.recovery_public_key = Some(keys.public_key().to_hex());
    secrets.recovery_pending = Some(PendingRecovery {
        id: opened.recovery.id,
        token: opened.recovery_token,
        completable_at: opened.recovery.completable_at,
    });
    file::save(path, &secrets, &pass)?;
    let pending = secrets
        .recovery_pending
        .as_ref()
        .context("the recovery was not kept")?;
    let (id, completable) = (pending.id.clone(), pending.completable_at.clone());
    if json {
        println!(
            "{}",
            json!({"recovery": id, "user_id": secrets.user, "completable_at": completable})
        );
    } else {
        println!(
            "recovery opened; run `parapet recovery complete` after {completable}. Your passkeys can cancel it until then."
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn complete(path: &Path, json: bool) -> Result<ExitCode> {
    let pass = Zeroizing::new(passphrase(false)?);
    let mut secrets = file::load(path, &pass)?;
    let pending = secrets
        .recovery_pending
        .clone()
        .context("this device file has no open recovery: `parapet recovery start` first")?;
    // The secret is checked before completing: a typo must not leave a completed recovery
    // whose answer this run then cannot use.
    let keys = derive(&ask_secret()?, secrets.kdf_salt())?;
    if secrets.recovery_public_key.as_deref() != Some(keys.public_key().to_hex().as_str()) {
        bail!("that is not the recovery secret this recovery was opened with");
    }
    let url = format!("{}/v1/recovery/{}/complete", secrets.gateway, pending.id);
    let auth = format!("Recovery {}", pending.token);
    // Asking again is safe: a completed recovery whose new device has not yet used its token
    // answers again, with a fresh token in place of the lost one.
    let (status, done) = match post_json(&url, Some(&auth), &json!({})) {
        Ok(answer) => answer,
        Err(first) => {
            eprintln!("the gateway's answer did not arrive ({first:#}); asking again");
            post_json(&url, Some(&auth), &json!({})).context(
                "the recovery's answer did not arrive; run `parapet recovery complete` again to fetch it",
            )?
        }
    };
    if status != 200 {
        return Err(refused(status, &done));
    }
    let done: RecoveryCompleted = typed(done)?;
    secrets.device_token = done.device_token.clone();
    secrets.device_id = done.device_id.clone();
    secrets.recovery_pending = None;
    let mut wallets = Vec::new();
    for b in &done.backups {
        let (wallet, epoch, sealed) = (&b.wallet, b.epoch, &b.device_share);
        let address = parapet_decide::decode::parse_address(wallet)?.into_array();
        let share = parapet_mpc::recovery::kit::open_share(
            &keys,
            parapet_mpc::recovery::envelope::Contents::DeviceShare,
            &address,
            epoch,
            sealed,
        )
        .with_context(|| format!("the backup of {wallet} did not open"))?;
        secrets
            .shares
            .insert(wallet.to_owned(), hex::encode(share.to_bytes().as_slice()));
        wallets.push((wallet.to_owned(), share));
    }
    // Saved before the refreshes: the device token and the recovered shares are what a retry
    // of `wallet refresh` needs if one of them is interrupted.
    file::save(path, &secrets, &pass)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let public_key = *keys.public_key();
    let mut refreshed = Vec::new();
    for (wallet, share) in &wallets {
        let (gateway, token, user) = (
            secrets.gateway.clone(),
            secrets.device_token.clone(),
            secrets.kdf_salt().to_owned(),
        );
        let target = client::RecoveryTarget {
            user: &user,
            public_key: &public_key,
        };
        let mut kit_out = None;
        let (new_share, epoch) = runtime
            .block_on(client::refresh(
                &gateway,
                &token,
                share,
                target,
                |_, _, kit| {
                    kit_out = Some(kit.clone());
                    Ok(())
                },
            ))
            .with_context(|| {
                format!(
                    "refreshing {wallet} failed; run `parapet wallet refresh --wallet {wallet}`"
                )
            })?;
        secrets
            .shares
            .insert(wallet.clone(), hex::encode(new_share.to_bytes().as_slice()));
        if let Some(kit) = kit_out {
            secrets.kits.insert(wallet.clone(), kit);
        }
        file::save(path, &secrets, &pass)?;
        refreshed.push(json!({"address": wallet, "epoch": epoch}));
    }
    let link = format!("{}{}", secrets.gateway, done.passkey_link.url);
    if json {
        println!(
            "{}",
            json!({
                "device_id": secrets.device_id,
                "wallets": refreshed,
                "without_backup": done.without_backup,
                "passkey_link": link,
            })
        );
    } else {
        println!("recovered; every other device, passkey and session is revoked");
        for w in &refreshed {
            println!(
                "{} refreshed to epoch {}",
                w["address"].as_str().unwrap_or("?"),
                w["epoch"]
            );
        }
        println!("register a new passkey within a minute: {link}");
    }
    Ok(ExitCode::SUCCESS)
}
