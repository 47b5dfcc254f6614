//! `transaction_request`: the fields of `eth_signTransaction`, turned into the exact unsigned
//! transaction that will be signed.
//!
//! The gateway has no RPC node, so nothing is filled in: nonce, gas, fees, recipient, value and
//! data must all be given (`to: null` explicitly for a deployment), and anything missing is named
//! in one `incomplete_transaction` error. Fields that do not belong to the declared type, unknown
//! fields and ambiguous spellings (`gas` and `gasLimit`, `data` and `input` disagreeing) are
//! refused rather than guessed at: the digest must be of the transaction the caller meant.
//! Quantities are JSON integers, decimal strings or 0x-hex strings.

use alloy::consensus::{TxEip1559, TxEip2930, TxEip4844, TxEip7702, TxLegacy};
use alloy::eips::eip2930::{AccessList, AccessListItem};
use alloy::eips::eip7702::{Authorization, SignedAuthorization};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use serde_json::{Map, Value};

use super::hex;
use super::raw_tx::Tx;
use crate::error::{Error, Result};

const FIELDS: [&str; 17] = [
    "type",
    "chainId",
    "nonce",
    "gas",
    "gasLimit",
    "gasPrice",
    "maxFeePerGas",
    "maxPriorityFeePerGas",
    "to",
    "from",
    "value",
    "data",
    "input",
    "accessList",
    "authorizationList",
    "maxFeePerBlobGas",
    "blobVersionedHashes",
];

/// Parses a complete transaction request for `chain_id`, sent by `wallet`.
pub(crate) fn parse(v: &Value, chain_id: u64, wallet: Address) -> Result<Tx> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("transaction_request must be a JSON object"))?;
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(&format!(
            "transaction_request: unknown field {unknown:?}"
        )));
    }
    let f = Fields(obj);
    let ty = f.get("type").map(|v| quantity_u64(v, "type")).transpose()?;
    let ty = match ty {
        None => None,
        Some(t) => Some(
            u8::try_from(t)
                .ok()
                .filter(|t| *t <= 4)
                .ok_or(Error::UnsupportedTxType(u8::try_from(t).unwrap_or(u8::MAX)))?,
        ),
    };

    let gas = match (f.get("gas"), f.get("gasLimit")) {
        (Some(a), Some(b)) if quantity_u64(a, "gas")? != quantity_u64(b, "gasLimit")? => {
            return Err(bad("gas and gasLimit disagree"));
        }
        (Some(a), _) => Some(quantity_u64(a, "gas")?),
        (None, Some(b)) => Some(quantity_u64(b, "gasLimit")?),
        (None, None) => None,
    };
    let data = match (f.get("data"), f.get("input")) {
        (Some(a), Some(b)) if bytes(a, "data")? != bytes(b, "input")? => {
            return Err(bad("data and input disagree"));
        }
        (Some(a), _) => Some(bytes(a, "data")?),
        (None, Some(b)) => Some(bytes(b, "input")?),
        (None, None) => None,
    };

    let mut missing = Vec::new();
    let mut need = |name: &str, present: bool| {
        if !present {
            missing.push(name.to_owned());
        }
    };
    need("type", ty.is_some());
    need("chainId", f.get("chainId").is_some());
    need("nonce", f.get("nonce").is_some());
    need("gas", gas.is_some());
    need("to", obj.contains_key("to"));
    need("value", f.get("value").is_some());
    need("data", data.is_some());
    let legacy_fees = matches!(ty, Some(0 | 1));
    let dynamic_fees = matches!(ty, Some(2..=4));
    if legacy_fees {
        need("gasPrice", f.get("gasPrice").is_some());
    }
    if dynamic_fees {
        need("maxFeePerGas", f.get("maxFeePerGas").is_some());
        need(
            "maxPriorityFeePerGas",
            f.get("maxPriorityFeePerGas").is_some(),
        );
    }
    if ty == Some(3) {
        need("maxFeePerBlobGas", f.get("maxFeePerBlobGas").is_some());
        need(
            "blobVersionedHashes",
            f.get("blobVersionedHashes").is_some(),
        );
    }
    if ty == Some(4) {
        need("authorizationList", f.get("authorizationList").is_some());
    }
    if !missing.is_empty() {
        return Err(Error::IncompleteTransaction { missing });
    }
    let (Some(ty), Some(gas_limit), Some(data)) = (ty, gas, data) else {
        return Err(Error::Internal(
            "transaction_request completeness check".to_owned(),
        ));
    };

    let not_for_type = |name: &str, applies: bool| -> Result<()> {
        if !applies && f.get(name).is_some() {
            return Err(bad(&format!(
                "{name} does not apply to a type {ty} transaction"
            )));
        }
        Ok(())
    };
    not_for_type("gasPrice", legacy_fees)?;
    not_for_type("maxFeePerGas", dynamic_fees)?;
    not_for_type("maxPriorityFeePerGas", dynamic_fees)?;
    not_for_type("maxFeePerBlobGas", ty == 3)?;
    not_for_type("blobVersionedHashes", ty == 3)?;
    not_for_type("authorizationList", ty == 4)?;
    if ty == 0
        && f.get("accessList")
            .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(bad("accessList does not apply to a legacy transaction"));
    }

    let tx_chain = quantity_u64(f.req("chainId")?, "chainId")?;
    if tx_chain != chain_id {
        return Err(Error::ChainMismatch {
            expected: chain_id,
            got: tx_chain,
        });
    }
    if let Some(from) = f.get("from") {
        let from = hex::address(str_of(from, "from")?, "from")?;
        if from != wallet {
            return Err(Error::SenderMismatch {
                expected: wallet.to_string().to_lowercase(),
                got: from.to_string().to_lowercase(),
            });
        }
    }
    let nonce = quantity_u64(f.req("nonce")?, "nonce")?;
    let to = match f.get("to") {
        None => TxKind::Create,
        Some(v) => TxKind::Call(hex::address(str_of(v, "to")?, "to")?),
    };
    let value = quantity(f.req("value")?, "value")?;
    let input = Bytes::from(data);
    let access_list = f
        .get("accessList")
        .map(access_list)
        .transpose()?
        .unwrap_or_default();
    let fee = |name: &str| -> Result<u128> { quantity_u128(f.req(name)?, name) };
    let call_to = |kind: TxKind| -> Result<Address> {
        kind.to().copied().ok_or_else(|| {
            bad(&format!(
                "a type {ty} transaction cannot deploy a contract: to is required"
            ))
        })
    };

    Ok(match ty {
        0 => Tx::Legacy(TxLegacy {
            chain_id: Some(tx_chain),
            nonce,
            gas_price: fee("gasPrice")?,
            gas_limit,
            to,
            value,
            input,
        }),
        1 => Tx::Eip2930(TxEip2930 {
            chain_id: tx_chain,
            nonce,
            gas_price: fee("gasPrice")?,
            gas_limit,
            to,
            value,
            access_list,
            input,
        }),
        2 => Tx::Eip1559(TxEip1559 {
            chain_id: tx_chain,
            nonce,
            gas_limit,
            max_fee_per_gas: fee("maxFeePerGas")?,
            max_priority_fee_per_gas: fee("maxPriorityFeePerGas")?,
            to,
            value,
            access_list,
            input,
        }),
        3 => Tx::Eip4844(TxEip4844 {
            chain_id: tx_chain,
            nonce,
            gas_limit,
            max_fee_per_gas: fee("maxFeePerGas")?,
            max_priority_fee_per_gas: fee("maxPriorityFeePerGas")?,
            to: call_to(to)?,
            value,
            access_list,
            blob_versioned_hashes: hashes(f.req("blobVersionedHashes")?)?,
            max_fee_per_blob_gas: fee("maxFeePerBlobGas")?,
            input,
        }),
        _ => Tx::Eip7702(TxEip7702 {
            chain_id: tx_chain,
            nonce,
            gas_limit,
            max_fee_per_gas: fee("maxFeePerGas")?,
            max_priority_fee_per_gas: fee("maxPriorityFeePerGas")?,
            to: call_to(to)?,
            value,
            access_list,
            authorization_list: authorizations(f.req("authorizationList")?)?,
            input,
        }),
    })
}

/// The request's fields; `null` counts as absent (except for `to`, where it means "deploy").
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }
    fn req(&self, name: &str) -> Result<&'a Value> {
        self.get(name).ok_or_else(|| Error::IncompleteTransaction {
            missing: vec![name.to_owned()],
        })
    }
}

/// A non-negative integer as a JSON integer, a decimal string or a 0x-hex string (at most
/// 256 bits). Floats, signs, exponents and empty strings are refused.
pub(crate) fn quantity(v: &Value, field: &str) -> Result<U256> {
    let err = || {
        bad(&format!(
            "{field}: expected a non-negative integer (number, decimal or 0x-hex string)"
        ))
    };
    match v {
        Value::Number(n) => n.as_u64().map(U256::from).ok_or_else(err),
        Value::String(s) => {
            if let Some(digits) = hex::strip_prefix(s) {
                if digits.is_empty()
                    || digits.len() > 64
                    || !digits.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(err());
                }
                U256::from_str_radix(digits, 16).map_err(|_| err())
            } else {
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                U256::from_str_radix(s, 10).map_err(|_| err())
            }
        }
        _ => Err(err()),
    }
}

fn quantity_u64(v: &Value, field: &str) -> Result<u64> {
    u64::try_from(quantity(v, field)?).map_err(|_| bad(&format!("{field}: above 2^64-1")))
}

fn quantity_u128(v: &Value, field: &str) -> Result<u128> {
    u128::try_from(quantity(v, field)?).map_err(|_| bad(&format!("{field}: above 2^128-1")))
}

fn str_of<'a>(v: &'a Value, field: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| bad(&format!("{field}: expected a string")))
}

fn bytes(v: &Value, field: &str) -> Result<Vec<u8>> {
    hex::decode_0x(str_of(v, field)?)
}

fn array<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>> {
    v.as_array()
        .ok_or_else(|| bad(&format!("{field}: expected an array")))
}

/// An object with exactly the `required` keys, plus any of `optional`.
fn object<'a>(
    v: &'a Value,
    field: &str,
    required: &[&str],
    optional: &[&str],
) -> Result<&'a Map<String, Value>> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad(&format!("{field}: expected an object")))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
    {
        return Err(bad(&format!("{field}: unknown field {k:?}")));
    }
    if let Some(k) = required.iter().find(|k| !obj.contains_key(**k)) {
        return Err(bad(&format!("{field}: missing {k}")));
    }
    Ok(obj)
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Value> {
    obj.get(name).ok_or_else(|| bad(&format!("missing {name}")))
}

fn access_list(v: &Value) -> Result<AccessList> {
    let items = array(v, "accessList")?
        .iter()
        .map(|item| {
            let obj = object(item, "accessList item", &["address", "storageKeys"], &[])?;
            let address = hex::address(
                str_of(field(obj, "address")?, "address")?,
                "accessList address",
            )?;
            let storage_keys = array(field(obj, "storageKeys")?, "storageKeys")?
                .iter()
                .map(|k| hex::b256(str_of(k, "storageKeys")?, "storage key"))
                .collect::<Result<Vec<B256>>>()?;
            Ok(AccessListItem {
                address,
                storage_keys,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(AccessList(items))
}

fn hashes(v: &Value) -> Result<Vec<B256>> {
    array(v, "blobVersionedHashes")?
        .iter()
        .map(|h| hex::b256(str_of(h, "blobVersionedHashes")?, "blob versioned hash"))
        .collect()
}

fn authorizations(v: &Value) -> Result<Vec<SignedAuthorization>> {
    array(v, "authorizationList")?
        .iter()
        .map(|item| {
            let obj = object(
                item,
                "authorization",
                &["chainId", "address", "nonce", "yParity", "r", "s"],
                &["v"],
            )?;
            let y_parity = quantity_u64(field(obj, "yParity")?, "yParity")?;
            let y_parity = u8::try_from(y_parity)
                .ok()
                .filter(|y| *y <= 1)
                .ok_or_else(|| bad("authorization yParity must be 0 or 1"))?;
            if let Some(v) = obj.get("v") {
                let v = quantity_u64(v, "v")?;
                if v != u64::from(y_parity) && v != 27 + u64::from(y_parity) {
                    return Err(bad("authorization v and yParity disagree"));
                }
            }
            let inner = Authorization {
                chain_id: quantity(field(obj, "chainId")?, "authorization chainId")?,
                address: hex::address(
                    str_of(field(obj, "address")?, "address")?,
                    "authorization address",
                )?,
                nonce: quantity_u64(field(obj, "nonce")?, "authorization nonce")?,
            };
            Ok(SignedAuthorization::new_unchecked(
                inner,
                y_parity,
                quantity(field(obj, "r")?, "authorization r")?,
                quantity(field(obj, "s")?, "authorization s")?,
            ))
        })
        .collect()
}

fn bad(msg: &str) -> Error {
    Error::InvalidRequest(msg.to_owned())
}
