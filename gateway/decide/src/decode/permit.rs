//! Permits: typed data that grants a token allowance without a transaction. They are as
//! dangerous as `approve` (the spender can move the tokens at once), so they get token facts.
//!
//! Recognised by the primary type and its fields, whatever the domain's name (Permit2 is
//! deployed at the same address on many chains, and forks reuse its types):
//! - EIP-2612 `Permit(owner, spender, value, nonce, deadline)`: the token is the domain's
//!   `verifyingContract`; a value of 2^255 or more is unlimited, as for `approve`;
//! - DAI-style `Permit(holder, spender, nonce, expiry, allowed)`: `allowed: true` is an unlimited
//!   allowance, `false` a revoke (amount 0);
//! - Permit2 `PermitSingle`, `PermitBatch` (uint160 amounts, 2^160-1 is unlimited) and the
//!   signature-transfer forms `PermitTransferFrom`, `PermitBatchTransferFrom` and their
//!   `…WitnessTransferFrom` variants (uint256 amounts; 2^160-1 or more is treated as unlimited
//!   too, since Permit2 allowances cannot express more).
//!
//! The Cedar context has one `token`. A batch over several tokens reports the entry with the
//! largest amount (each token's entries summed), `unlimited` if any entry is, and `known` only if
//! every token is known, so that no limit a policy sets on the batch is undercut by another entry.
//! A permit-shaped message without the data a permit needs (no `verifyingContract` for 2612/DAI,
//! an empty batch) cannot be redeemed by any token and stays plain typed data.

use alloy::dyn_abi::DynSolValue;
use alloy::primitives::{Address, U256};

use super::calldata::{token_facts, unlimited_approval};
use super::registry::Registry;
use crate::facts::TokenFacts;

/// 2^160 - 1: Permit2's largest (and "infinite") allowance.
const PERMIT2_MAX: U256 = U256::from_limbs([u64::MAX, u64::MAX, u32::MAX as u64, 0]);

/// Token facts when the message is a permit.
pub(crate) fn read_permit(
    primary_type: &str,
    message: &DynSolValue,
    verifying_contract: Option<Address>,
    chain_id: u64,
    registry: &Registry,
) -> Option<TokenFacts> {
    let spender = address(field(message, "spender")?)?;
    let single = |token: Address, amount: U256, unlimited: bool| {
        Some(token_facts(
            token,
            registry.token(chain_id, token),
            amount,
            spender,
            unlimited,
        ))
    };
    match primary_type {
        "Permit" => {
            let token = verifying_contract?;
            if let Some(value) = field(message, "value").and_then(uint) {
                field(message, "owner").and_then(address)?;
                single(token, value, unlimited_approval(value))
            } else {
                field(message, "holder").and_then(address)?;
                let allowed = match field(message, "allowed")? {
                    DynSolValue::Bool(b) => *b,
                    _ => return None,
                };
                let amount = if allowed { U256::MAX } else { U256::ZERO };
                single(token, amount, allowed)
            }
        }
        "PermitSingle" => {
            let (token, amount) = token_amount(field(message, "details")?)?;
            single(token, amount, amount >= PERMIT2_MAX)
        }
        "PermitTransferFrom" | "PermitWitnessTransferFrom" => {
            let (token, amount) = token_amount(field(message, "permitted")?)?;
            single(token, amount, amount >= PERMIT2_MAX)
        }
        "PermitBatch" => batch(field(message, "details")?, spender, chain_id, registry),
        "PermitBatchTransferFrom" | "PermitBatchWitnessTransferFrom" => {
            batch(field(message, "permitted")?, spender, chain_id, registry)
        }
        _ => None,
    }
}

fn batch(
    entries: &DynSolValue,
    spender: Address,
    chain_id: u64,
    registry: &Registry,
) -> Option<TokenFacts> {
    let DynSolValue::Array(items) = entries else {
        return None;
    };
    // Sum each token's entries, keeping first-seen order for a stable choice among equals.
    let mut totals: Vec<(Address, U256)> = Vec::new();
    let mut any_unlimited = false;
    for item in items {
        let (token, amount) = token_amount(item)?;
        any_unlimited |= amount >= PERMIT2_MAX;
        match totals.iter_mut().find(|(t, _)| *t == token) {
            Some((_, sum)) => *sum = sum.saturating_add(amount),
            None => totals.push((token, amount)),
        }
    }
    let mut all_known = true;
    let mut largest: Option<TokenFacts> = None;
    for (token, amount) in totals {
        let info = registry.token(chain_id, token);
        all_known &= info.is_some();
        let facts = token_facts(token, info, amount, spender, false);
        if largest
            .as_ref()
            .is_none_or(|l| facts.amount.scaled > l.amount.scaled)
        {
            largest = Some(facts);
        }
    }
    let mut facts = largest?;
    facts.unlimited = any_unlimited;
    facts.known = all_known;
    Some(facts)
}

/// `{token, amount, …}` (Permit2's `PermitDetails` and `TokenPermissions`).
fn token_amount(v: &DynSolValue) -> Option<(Address, U256)> {
    Some((address(field(v, "token")?)?, uint(field(v, "amount")?)?))
}

fn field<'a>(v: &'a DynSolValue, name: &str) -> Option<&'a DynSolValue> {
    match v {
        DynSolValue::CustomStruct {
            prop_names, tuple, ..
        } => prop_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| tuple.get(i)),
        _ => None,
    }
}

fn address(v: &DynSolValue) -> Option<Address> {
    match v {
        DynSolValue::Address(a) => Some(*a),
        _ => None,
    }
}

fn uint(v: &DynSolValue) -> Option<U256> {
    match v {
        DynSolValue::Uint(u, _) => Some(*u),
        _ => None,
    }
}
