//! What this device signs, decided by the device itself ("what you see is what you sign"): a
//! request body is decoded here, with the same decoder the gateway runs (`parapet-decide`,
//! without its policy stage), into facts and the one digest a signature covers. The device
//! signs that digest or nothing, whatever the gateway announces; it shows the person a summary
//! of the facts first; and with a backup kit it signs alone, offline, exactly as the gateway
//! would have.

use alloy_primitives::Address;
use parapet_api::{SigningRequestView, SigningState};
use parapet_decide::decode::{self, Registry};
use parapet_decide::facts::{Action, Facts};
use parapet_decide::request::{AuthorizeRequest, Payload};
use parapet_mpc::{Dkls23, KeyShare, RecoverableSignature, sign_locally};
use serde_json::Value;

use crate::{Error, Result};

/// The token list this build ships with (`schemas/tokens.json`), to name tokens and their
/// amounts in the summary. It plays no part in the digest.
pub fn shipped_registry() -> Registry {
    Registry::load(include_str!("../../../schemas/tokens.json"), &[]).unwrap_or_default()
}

/// What the device made of a request body on its own: the request and the decoder's facts,
/// whose digest is the one thing it will sign.
#[derive(Debug)]
pub struct Checked {
    pub request: AuthorizeRequest,
    pub facts: Facts,
    /// The wallet it was decoded for.
    pub wallet: Address,
}

impl Checked {
    /// Decodes a request body (`chain_id` and one payload, and `wallet` when the gateway's copy
    /// names it) for `wallet` (`0x…`, lower case), with `registry` naming tokens: the digest it
    /// yields is what this device computed, whatever the gateway says.
    pub fn from_body(mut body: Value, wallet: &str, registry: &Registry) -> Result<Checked> {
        let object = body
            .as_object_mut()
            .ok_or_else(|| Error::NotARequest("the request body is not a JSON object".into()))?;
        if let Some(named) = object.get("wallet") {
            let named = named
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            if named != wallet {
                return Err(Error::OtherWallet {
                    named,
                    wallet: wallet.to_owned(),
                });
            }
        }
        object.insert(
            "wallet".to_owned(),
            serde_json::json!({ "address": wallet }),
        );
        let request: AuthorizeRequest =
            serde_json::from_value(body).map_err(|e| Error::NotARequest(e.to_string()))?;
        let address = decode::parse_address(wallet).map_err(Error::Undecodable)?;
        let payload = request.payload().map_err(Error::Undecodable)?;
        let facts = decode::decode(payload, request.chain_id, address, registry)
            .map_err(Error::Undecodable)?;
        Ok(Checked {
            request,
            facts,
            wallet: address,
        })
    }

    /// The digest this device will sign for the request, and nothing else.
    pub fn digest(&self) -> [u8; 32] {
        self.facts.digest.0
    }
}

/// Refuses a request the gateway describes otherwise than this device decoded it: another
/// wallet, or above all another digest (what the gateway would have the device sign), or one
/// that is not ready to sign.
pub fn check_view(view: &SigningRequestView, wallet: &str, mine: &Checked) -> Result<()> {
    let theirs_wallet = view.wallet.to_ascii_lowercase();
    if theirs_wallet != wallet {
        return Err(Error::OtherWallet {
            named: theirs_wallet,
            wallet: wallet.to_owned(),
        });
    }
    let expected = format!("0x{}", hex::encode(mine.digest()));
    let theirs = view.digest.to_ascii_lowercase();
    if theirs != expected {
        return Err(Error::DigestMismatch {
            expected,
            announced: theirs,
        });
    }
    match view.state {
        SigningState::Authorized => Ok(()),
        state => Err(Error::NotReady {
            request: view.id.clone(),
            state,
        }),
    }
}

/// A request signed offline with both shares of a kit.
#[derive(Debug)]
pub struct OfflineSignature {
    pub digest: [u8; 32],
    pub signature: RecoverableSignature,
    /// For a transaction: the signed transaction (EIP-2718 bytes) and its hash.
    pub signed_transaction: Option<(Vec<u8>, [u8; 32])>,
}

/// Signs `checked` with a kit's two shares on this machine (no gateway, no policy): the same
/// digest and signed transaction the gateway would produce.
pub fn sign_offline(
    checked: &Checked,
    device: &KeyShare,
    gateway: &KeyShare,
) -> Result<OfflineSignature> {
    let digest = checked.digest();
    let signature = sign_locally(&Dkls23, device, gateway, digest)?;
    let payload = checked.request.payload().map_err(Error::Undecodable)?;
    let signed = decode::signed_transaction(
        payload,
        checked.request.chain_id,
        checked.wallet,
        signature.r,
        signature.s,
        signature.y_parity(),
    )
    .map_err(Error::Undecodable)?;
    Ok(OfflineSignature {
        digest,
        signature,
        signed_transaction: signed.map(|(raw, hash)| (raw, hash.0)),
    })
}

/// `raw` base units of an asset with `decimals` decimals, in whole units ("1.5").
fn whole_units(raw: &str, decimals: u8) -> String {
    let decimals = usize::from(decimals);
    if decimals == 0 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.to_owned();
    }
    let padded = format!("{raw:0>width$}", width = decimals + 1);
    let (int, frac) = padded.split_at(padded.len() - decimals);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    }
}

/// At most `max` characters of `text`, marked when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// The one-screen summary of what the device is about to sign, from its own decoding.
pub fn summary(request_id: Option<&str>, wallet: &str, mine: &Checked) -> String {
    let (facts, d) = (&mine.facts, &mine.facts.decoded);
    let mut lines: Vec<(&str, String)> = Vec::new();
    if let Some(id) = request_id {
        lines.push(("request", id.to_owned()));
    }
    lines.push(("wallet", wallet.to_owned()));
    lines.push(("chain id", mine.request.chain_id.to_string()));
    lines.push(("action", facts.action.as_str().to_owned()));
    match (d.to, facts.action) {
        (Some(to), _) => lines.push(("to", format!("{to:#x}"))),
        (None, Action::ContractDeploy) => lines.push(("to", "nobody: deploys a contract".into())),
        _ => {}
    }
    if let Some(value) = &d.value {
        lines.push((
            "value",
            format!(
                "{} wei ({} in the chain's native coin)",
                value.raw,
                whole_units(&value.raw, 18)
            ),
        ));
    }
    if let Some(t) = &d.token {
        let name = if t.known {
            format!("{} ({})", t.symbol, t.standard)
        } else {
            "a token this device does not know".to_owned()
        };
        lines.push(("token", format!("{:#x}, {name}", t.contract)));
        let amount = if t.unlimited {
            "UNLIMITED".to_owned()
        } else if t.known {
            format!(
                "{} {} ({} base units)",
                whole_units(&t.amount.raw, t.decimals),
                t.symbol,
                t.amount.raw
            )
        } else {
            format!("{} base units", t.amount.raw)
        };
        lines.push(("amount", amount));
        let role = match facts.action {
            Action::Erc20Transfer => "token to",
            _ => "spender",
        };
        lines.push((role, format!("{:#x}", t.counterparty)));
    }
    if let Some(n) = &d.nft {
        lines.push((
            "nft",
            format!("{:#x} ({}) token id {}", n.contract, n.standard, n.token_id),
        ));
        let role = match (facts.action, n.approved) {
            (Action::NftApproveAll, true) => "operator (all NFTs)",
            (Action::NftApproveAll, false) => "revokes operator",
            _ => "nft to",
        };
        lines.push((role, format!("{:#x}", n.counterparty)));
    }
    if let Some(call) = &d.call {
        lines.push(("function", call.function.clone()));
    }
    if let (Some(selector), Some(len)) = (&d.selector, d.data_len)
        && !selector.is_empty()
    {
        lines.push(("calldata", format!("{len} bytes, selector {selector}")));
    }
    if let Some(delegates) = &d.delegates {
        let list: Vec<String> = delegates.iter().map(|a| format!("{a:#x}")).collect();
        lines.push(("delegates to", list.join(", ")));
    }
    if let Some(t) = &d.typed_data {
        lines.push(("domain name", format!("{:?}", t.domain_name)));
        if let Some(c) = t.verifying_contract {
            lines.push(("verifying contract", format!("{c:#x}")));
        }
        if let Some(c) = t.domain_chain_id {
            lines.push(("domain chain id", c.to_string()));
        }
        lines.push(("primary type", t.primary_type.clone()));
    }
    match mine.request.payload() {
        Ok(Payload::Message(m)) => {
            lines.push(("message", format!("{:?} ({} bytes)", clip(m, 400), m.len())));
        }
        Ok(Payload::MessageBytes(m)) => {
            let len = d.message.as_ref().map_or(0, |m| m.len);
            lines.push(("message", format!("{len} bytes: {}", clip(m, 130))));
        }
        Ok(Payload::Hash(_)) => {
            lines.push((
                "WARNING",
                "a bare hash: nobody can tell what it authorizes".into(),
            ));
        }
        _ => {}
    }
    lines.push(("digest", format!("0x{}", hex::encode(mine.digest()))));
    let mut out = String::from("About to sign, as this device decoded it:\n");
    for (k, v) in lines {
        out.push_str(&format!("  {k:<18} {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::whole_units;

    #[test]
    fn base_units_read_as_whole_units() {
        assert_eq!(whole_units("1500000000000000", 18), "0.0015");
        assert_eq!(whole_units("250000000", 6), "250");
        assert_eq!(whole_units("5", 18), "0.000000000000000005");
        assert_eq!(whole_units("0", 18), "0");
        assert_eq!(whole_units("12345", 0), "12345");
        assert_eq!(whole_units("not a number", 6), "not a number");
    }
}
