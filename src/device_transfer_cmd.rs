//! `parapet device link | add | sync`: backup devices (docs/architecture.md §9). `link` runs on the
//! new device: it makes its own key, asks the gateway, shows the short code and waits for the
//! sealed wallets. `add` runs on a device that holds them: it derives the code from the key the
//! gateway relays and seals only when it equals the code the user read off the new device.
//! `sync` sends refreshed shares to the devices this one added before, to the keys confirmed
//! then.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parapet_api::devices::{TransferAnswer, TransferList, TransferState};
use parapet_device::DeviceSecrets;
use parapet_device::file::{self, Sibling};
use parapet_device::transfer::{
    BUNDLE_FORMAT, DeviceKey, TransferBundle, TransferredWallet, code_matches, new_transfer_id,
    parse_public_key, short_code,
};
use serde_json::{Value, json};

use crate::device_file::passphrase;
use crate::gateway_calls::{device_get, post_json, refused, typed};
use crate::recovery_cmd::{current_share_key, recovery_status};

fn auth(secrets: &DeviceSecrets) -> String {
    format!("Device {}", secrets.device_token)
}

/// `parapet device link`: on the new device.
pub fn link(path: &Path, wait: Duration, json_out: bool) -> Result<ExitCode> {
    let pass = passphrase(false)?;
    let mut secrets = file::load(path, &pass)?;
    let key = DeviceKey::generate();
    secrets.device_key = Some(key.private_hex().to_string());
    file::save(path, &secrets, &pass)?;
    let (status, asked) = post_json(
        &format!("{}/v1/device/transfers", secrets.gateway),
        Some(&auth(&secrets)),
        &json!({"public_key": key.public_hex()}),
    )?;
    if status != 201 {
        return Err(refused(status, &asked));
    }
    let id = typed::<TransferAnswer>(asked)?.transfer.id;
    let code = short_code(key.public_key());
    eprintln!(
        "Short code of this device: {code}\n\
         1. Approve the new device in your app or on the gateway's page (a passkey asks you).\n\
         2. On a device that has your wallets, run: parapet device add --code {code}\n\
         Waiting up to {} s…",
        wait.as_secs()
    );
    let deadline = Instant::now() + wait;
    let sealed = loop {
        let t: TransferAnswer =
            typed(device_get(&secrets, &format!("/v1/device/transfers/{id}"))?)?;
        match t.transfer.state {
            TransferState::Sealed => {
                break hex::decode(t.transfer.sealed.context("no bundle")?)?;
            }
            TransferState::Refused => bail!("the request was withdrawn or refused"),
            _ if Instant::now() >= deadline => bail!("no device sealed the wallets in time ({id})"),
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    };
    let bundle = TransferBundle::open(&key, &secrets.user, &secrets.device_id, &id, &sealed)?;
    let wallets = store_bundle(&mut secrets, &bundle)?;
    file::save(path, &secrets, &pass)?;
    confirm(&secrets, &id)?;
    report(
        &json!({"transfer": id, "short_code": code, "wallets": wallets}),
        json_out,
        "this device now holds",
    );
    Ok(ExitCode::SUCCESS)
}

/// `parapet device sync --receive`-side: fetch re-syncs waiting for this device.
pub fn receive(path: &Path, json_out: bool) -> Result<ExitCode> {
    let pass = passphrase(false)?;
    let mut secrets = file::load(path, &pass)?;
    let key = DeviceKey::from_private_hex(
        secrets
            .device_key
            .as_deref()
            .context("this device has no device key: it was never linked to another device")?,
    )?;
    let listed: TransferList = typed(device_get(&secrets, "/v1/device/transfers")?)?;
    let mut stored = Vec::new();
    for t in listed.incoming {
        let id = t.id;
        let full: TransferAnswer =
            typed(device_get(&secrets, &format!("/v1/device/transfers/{id}"))?)?;
        let sealed = hex::decode(full.transfer.sealed.context("no bundle")?)?;
        let bundle = TransferBundle::open(&key, &secrets.user, &secrets.device_id, &id, &sealed)?;
        stored.extend(store_bundle(&mut secrets, &bundle)?);
        file::save(path, &secrets, &pass)?;
        confirm(&secrets, &id)?;
    }
    report(&json!({"wallets": stored}), json_out, "received");
    Ok(ExitCode::SUCCESS)
}

fn confirm(secrets: &DeviceSecrets, id: &str) -> Result<()> {
    let (status, body) = post_json(
        &format!("{}/v1/device/transfers/{id}/received", secrets.gateway),
        Some(&auth(secrets)),
        &json!({}),
    )?;
    if status != 200 {
        return Err(refused(status, &body));
    }
    Ok(())
}

/// Keeps the bundle's shares and kits, and the recovery public key (which must equal one the
/// file already holds, if any).
fn store_bundle(secrets: &mut DeviceSecrets, bundle: &TransferBundle) -> Result<Vec<Value>> {
    if let Some(mine) = &secrets.recovery_public_key
        && *mine != bundle.recovery_public_key
    {
        bail!("the bundle's recovery key is not the one this device holds; nothing stored");
    }
    secrets.recovery_public_key = Some(bundle.recovery_public_key.clone());
    secrets.recovery_salt.clone_from(&bundle.recovery_salt);
    let mut out = Vec::new();
    for w in &bundle.wallets {
        w.key_share()?;
        secrets.shares.insert(w.address.clone(), w.share.clone());
        secrets
            .shares
            .retain(|k, _| !k.starts_with(&format!("{}#", w.address)));
        if let Some(kit) = &w.kit {
            secrets.kits.insert(w.address.clone(), kit.clone());
        }
        out.push(json!({"address": w.address, "epoch": w.epoch}));
    }
    Ok(out)
}

fn report(out: &Value, json_out: bool, what: &str) {
    if json_out {
        println!("{out}");
    } else {
        let wallets: Vec<&str> = out["wallets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["address"].as_str())
            .collect();
        println!(
            "{what}: {}",
            if wallets.is_empty() {
                "no wallets".to_owned()
            } else {
                wallets.join(", ")
            }
        );
    }
}

/// The wallets this device holds now, with their current epochs (the gateway's view) and the
/// file key of the share to send.
fn held(secrets: &DeviceSecrets) -> Result<Vec<(String, i64, String)>> {
    let mut out = Vec::new();
    for w in recovery_status(secrets)?.wallets {
        let key = current_share_key(secrets, &w.address, w.epoch);
        if secrets.shares.contains_key(&key) {
            out.push((w.address, w.epoch, key));
        }
    }
    Ok(out)
}

fn bundle_for(
    secrets: &DeviceSecrets,
    to: &str,
    transfer: &str,
    wallets: &[(String, i64, String)],
) -> Result<TransferBundle> {
    let recovery_public_key = secrets
        .recovery_public_key
        .clone()
        .context("this device has no recovery key yet: run parapet recovery setup first")?;
    let mut carried = Vec::new();
    for (address, epoch, key) in wallets {
        let share = secrets.shares.get(key).context("share missing")?.clone();
        let kit = secrets
            .kits
            .get(key)
            .or_else(|| secrets.kits.get(address))
            .filter(|k| k.epoch == *epoch)
            .cloned();
        carried.push(TransferredWallet {
            address: address.clone(),
            epoch: *epoch,
            share,
            kit,
        });
    }
    Ok(TransferBundle {
        format: BUNDLE_FORMAT.to_owned(),
        user: secrets.user.clone(),
        from_device: secrets.device_id.clone(),
        to_device: to.to_owned(),
        transfer: transfer.to_owned(),
        recovery_public_key,
        recovery_salt: secrets.recovery_salt.clone(),
        wallets: carried,
    })
}

/// `parapet device add --code CODE`: on a device that holds the wallets.
pub fn add(path: &Path, code: &str, json_out: bool) -> Result<ExitCode> {
    let pass = passphrase(false)?;
    let mut secrets = file::load(path, &pass)?;
    let listed: TransferList = typed(device_get(&secrets, "/v1/device/transfers")?)?;
    let requests = listed.to_seal;
    if requests.is_empty() {
        bail!(
            "no approved request from a new device: run `parapet device link` there and approve it first"
        );
    }
    let mut chosen = None;
    for t in &requests {
        let key = parse_public_key(&t.public_key)?;
        if code_matches(code, &key) {
            chosen = Some((t, key));
        }
    }
    let Some((t, key)) = chosen else {
        let shown: Vec<String> = requests
            .iter()
            .filter_map(|t| parse_public_key(&t.public_key).ok())
            .map(|k| short_code(&k))
            .collect();
        eprintln!(
            "The code you typed does not match the key the gateway relayed (this device derives {}).\n\
             Nothing was sent. If the new device really shows {code}, its key was replaced on the way: do not continue.",
            shown.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    };
    let (id, to) = (t.id.clone(), t.to_device.clone());
    let wallets = held(&secrets)?;
    if wallets.is_empty() {
        bail!("this device holds no wallet to give");
    }
    let sealed = bundle_for(&secrets, &to, &id, &wallets)?.seal(&key)?;
    let carried: Vec<Value> = wallets
        .iter()
        .map(|(a, e, _)| json!({"address": a, "epoch": e}))
        .collect();
    let (status, body) = post_json(
        &format!("{}/v1/device/transfers/{id}/seal", secrets.gateway),
        Some(&auth(&secrets)),
        &json!({"sealed": hex::encode(sealed), "wallets": carried}),
    )?;
    if status != 200 {
        return Err(refused(status, &body));
    }
    secrets.siblings.insert(
        to.clone(),
        Sibling {
            public_key: hex::encode(key),
            wallets: wallets.iter().map(|(a, _, _)| a.clone()).collect(),
        },
    );
    file::save(path, &secrets, &pass)?;
    report(
        &json!({"transfer": id, "to_device": to, "wallets": carried}),
        json_out,
        "sealed to the new device",
    );
    Ok(ExitCode::SUCCESS)
}

/// `parapet device sync`: after a refresh, sends the current shares to every device this one
/// added, sealed to the key confirmed when it was added.
pub fn sync(path: &Path, json_out: bool) -> Result<ExitCode> {
    let pass = passphrase(false)?;
    let secrets = file::load(path, &pass)?;
    let sent = resync_siblings(&secrets, None)?;
    if json_out {
        println!("{}", json!({"resynced": sent}));
    } else {
        println!(
            "re-synced {} device(s); on each, run: parapet device receive",
            sent.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Seals the current shares (of `only`, or of every wallet) to each device this one added that
/// holds them; removed devices are skipped. `wallet refresh` runs it after every refresh.
pub fn resync_siblings(secrets: &DeviceSecrets, only: Option<&str>) -> Result<Vec<Value>> {
    if secrets.siblings.is_empty() {
        return Ok(Vec::new());
    }
    let held = held(secrets)?;
    let mut sent = Vec::new();
    for (device, sibling) in &secrets.siblings {
        let wallets: Vec<(String, i64, String)> = held
            .iter()
            .filter(|(a, _, _)| sibling.wallets.contains(a) && only.is_none_or(|o| o == a))
            .cloned()
            .collect();
        if wallets.is_empty() {
            continue;
        }
        let key = parse_public_key(&sibling.public_key)?;
        let id = new_transfer_id();
        let sealed = bundle_for(secrets, device, &id, &wallets)?.seal(&key)?;
        let carried: Vec<Value> = wallets
            .iter()
            .map(|(a, e, _)| json!({"address": a, "epoch": e}))
            .collect();
        let (status, body) = post_json(
            &format!("{}/v1/device/resync", secrets.gateway),
            Some(&auth(secrets)),
            &json!({"id": id, "to_device": device, "sealed": hex::encode(sealed), "wallets": carried}),
        )?;
        match status {
            201 => sent.push(json!({"device": device, "transfer": id, "wallets": carried})),
            // A removed device gets nothing more.
            404 => continue,
            _ => return Err(refused(status, &body)),
        }
    }
    Ok(sent)
}
