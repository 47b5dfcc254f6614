//! `parapet device …`: the device side. `pair` trades a one-time code from the page for a device
//! token and keeps it in the device's passphrase-encrypted file (Argon2id + AES-256-GCM); `show`
//! asks the gateway who this device is. The token travels only in `Authorization: Device …`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use parapet_api::devices::{DevicePaired, ThisDevice};
use parapet_device::{DeviceSecrets, file};
use serde_json::Value;

use crate::device_file::{FileArgs, passphrase};
use crate::gateway_calls::{agent, answer_json, device_get, refusal, typed};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Pair this machine with your account: make a code on the gateway's page (Devices → Pair a
    /// device), then run this within 10 minutes.
    Pair {
        /// The gateway's base URL, e.g. https://wallet.example.com.
        #[arg(long)]
        gateway: String,
        /// The pairing code shown on the page (XXXX-XXXX-XXXX).
        code: String,
        /// A name for this device, shown on the page.
        #[arg(long, default_value = "parapet CLI")]
        name: String,
        #[command(flatten)]
        file: FileArgs,
    },
    /// On a new device (paired first): ask for your wallets from another of your devices.
    /// Shows a short code; approve the device in your app, then run `parapet device add` on a
    /// device that has the wallets. Waits for them.
    Link {
        #[command(flatten)]
        file: FileArgs,
        /// How long to wait for the other device, in seconds.
        #[arg(long, default_value_t = 900)]
        wait_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// On a device that has your wallets: give them to the new device whose short code you
    /// type. Nothing is sent unless the code matches the key the gateway relayed.
    Add {
        /// The short code the new device shows (XXXX-XXXX-XXXX).
        #[arg(long)]
        code: String,
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// After a refresh: send the new shares to the devices this one added.
    Sync {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// On an added device: take the shares another device re-synced to it.
    Receive {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show which user and device this file is paired as (asks the gateway).
    Show {
        #[command(flatten)]
        file: FileArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: DeviceCommand) -> Result<ExitCode> {
    match command {
        DeviceCommand::Pair {
            gateway,
            code,
            name,
            file,
        } => pair(&gateway, &code, &name, &file.path()?),
        DeviceCommand::Show { file, json } => show(&file.path()?, json),
        DeviceCommand::Link {
            file,
            wait_secs,
            json,
        } => crate::device_transfer_cmd::link(
            &file.path()?,
            std::time::Duration::from_secs(wait_secs),
            json,
        ),
        DeviceCommand::Add { code, file, json } => {
            crate::device_transfer_cmd::add(&file.path()?, &code, json)
        }
        DeviceCommand::Sync { file, json } => crate::device_transfer_cmd::sync(&file.path()?, json),
        DeviceCommand::Receive { file, json } => {
            crate::device_transfer_cmd::receive(&file.path()?, json)
        }
    }
}

fn pair(gateway: &str, code: &str, name: &str, path: &Path) -> Result<ExitCode> {
    if path.exists() {
        bail!(
            "{} exists already: this machine is paired (use another --device-file to pair again)",
            path.display()
        );
    }
    let gateway = gateway.trim_end_matches('/');
    let passphrase = passphrase(true)?;
    if passphrase.chars().count() < file::MIN_PASSPHRASE_CHARS {
        bail!(
            "the passphrase must have at least {} characters",
            file::MIN_PASSPHRASE_CHARS
        );
    }
    let mut res = agent()
        .post(&format!("{gateway}/v1/devices/pair"))
        .send_json(serde_json::json!({"code": code, "name": name}))
        .with_context(|| format!("reaching {gateway}"))?;
    let status = res.status().as_u16();
    let body: Value = answer_json(&mut res)?;
    if status != 200 {
        bail!("pairing refused: {}", refusal(status, &body));
    }
    let paired: DevicePaired = typed(body)?;
    let secrets = DeviceSecrets {
        gateway: gateway.to_owned(),
        device_id: paired.device_id,
        user: paired.user_id,
        device_token: paired.device_token,
        shares: Default::default(),
        recovery_public_key: None,
        recovery_salt: None,
        kits: Default::default(),
        recovery_pending: None,
        device_key: None,
        siblings: Default::default(),
    };
    file::save(path, &secrets, &passphrase)?;
    println!(
        "paired as device {} of user {}; device file {}",
        secrets.device_id,
        secrets.user,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn show(path: &Path, json: bool) -> Result<ExitCode> {
    let secrets = file::load(path, &passphrase(false)?)?;
    let body = device_get(&secrets, "/v1/device")?;
    if json {
        println!("{body}");
    } else {
        let this: ThisDevice = typed(body)?;
        println!(
            "device {} ({}) of user {} at {}; wallets in this file: {}",
            this.device.device_id,
            this.device.name,
            this.device.user_id,
            secrets.gateway,
            secrets.shares.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
