//! Validity rules that need no account state: the request layer applies the fork-independent
//! ones to everything it signs (a transaction that can never be included is refused rather than
//! signed), and the conformance layer adds the rules of one named fork on chain id 1.
//!
//! Intrinsic gas and the blob-count limits depend on the fork and on the chain (L2s price gas
//! differently), and the gateway cannot know which fork a chain runs, so the request layer leaves
//! them to the node; `validate_for_fork` applies them where the fork is given.

use std::str::FromStr;

use alloy::consensus::Transaction;
use alloy::primitives::U256;

use super::raw_tx::Tx;
use crate::error::{Error, Result};

/// Ethereum mainnet forks, in activation order (only their transaction rules matter here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fork {
    Frontier,
    Homestead,
    Eip150,
    Eip158,
    Byzantium,
    Constantinople,
    ConstantinopleFix,
    Istanbul,
    Berlin,
    London,
    Paris,
    Shanghai,
    Cancun,
    Prague,
    Osaka,
}

impl FromStr for Fork {
    type Err = Error;
    fn from_str(s: &str) -> Result<Fork> {
        Ok(match s {
            "Frontier" => Fork::Frontier,
            "Homestead" => Fork::Homestead,
            "EIP150" => Fork::Eip150,
            "EIP158" => Fork::Eip158,
            "Byzantium" => Fork::Byzantium,
            "Constantinople" => Fork::Constantinople,
            "ConstantinopleFix" | "Petersburg" => Fork::ConstantinopleFix,
            "Istanbul" => Fork::Istanbul,
            "Berlin" => Fork::Berlin,
            "London" => Fork::London,
            "Paris" | "Merge" => Fork::Paris,
            "Shanghai" => Fork::Shanghai,
            "Cancun" => Fork::Cancun,
            "Prague" => Fork::Prague,
            "Osaka" => Fork::Osaka,
            other => return Err(Error::InvalidRequest(format!("unknown fork {other:?}"))),
        })
    }
}

/// EIP-2681: a nonce of 2^64-1 can never be incremented, so no such transaction is valid.
const MAX_NONCE: u64 = u64::MAX - 1;
/// EIP-3860 initcode limit (twice the EIP-170 code size limit).
const MAX_INITCODE_SIZE: usize = 2 * 24_576;
/// EIP-7825 (Osaka): per-transaction gas limit cap.
const OSAKA_TX_GAS_CAP: u64 = 1 << 24;
/// EIP-4844 blob gas per blob.
const GAS_PER_BLOB: u64 = 1 << 17;
/// EIP-7594 (Osaka): per-transaction blob limit.
const OSAKA_MAX_BLOBS_PER_TX: usize = 6;
/// EIP-4844 version byte of a KZG versioned hash.
const VERSIONED_HASH_VERSION_KZG: u8 = 0x01;

/// The rules every signed transaction must meet whatever the chain and fork.
pub(crate) fn validate_structure(tx: &Tx) -> Result<()> {
    if tx.nonce() > MAX_NONCE {
        return Err(invalid("nonce 2^64-1 can never be used (EIP-2681)"));
    }
    if !matches!(tx, Tx::Legacy(_) | Tx::Eip2930(_))
        && tx.max_priority_fee_per_gas().unwrap_or(0) > tx.max_fee_per_gas()
    {
        return Err(invalid("maxPriorityFeePerGas is greater than maxFeePerGas"));
    }
    // Cannot overflow with alloy's u64 gas and u128 fees, but the rule is cheap to state.
    U256::from(tx.gas_limit())
        .checked_mul(U256::from(tx.max_fee_per_gas()))
        .ok_or_else(|| invalid("gas limit * fee overflows 256 bits"))?;
    match tx {
        Tx::Eip4844(blob) => {
            if blob.blob_versioned_hashes.is_empty() {
                return Err(invalid("blob transaction without blobs"));
            }
            if blob
                .blob_versioned_hashes
                .iter()
                .any(|h| h.first() != Some(&VERSIONED_HASH_VERSION_KZG))
            {
                return Err(invalid(
                    "blob versioned hash without the KZG version byte 0x01",
                ));
            }
        }
        Tx::Eip7702(set_code) if set_code.authorization_list.is_empty() => {
            return Err(invalid(
                "set-code transaction with an empty authorization list",
            ));
        }
        _ => {}
    }
    Ok(())
}

/// Stateless validity on `chain_id` at `fork`: the structural rules plus the fork's types,
/// intrinsic gas, initcode size, gas cap and blob limits.
pub(crate) fn validate_for_fork(tx: &Tx, fork: Fork, chain_id: u64) -> Result<()> {
    let (ty, introduced) = match tx {
        Tx::Legacy(_) => (0u8, Fork::Frontier),
        Tx::Eip2930(_) => (1, Fork::Berlin),
        Tx::Eip1559(_) => (2, Fork::London),
        Tx::Eip4844(_) => (3, Fork::Cancun),
        Tx::Eip7702(_) => (4, Fork::Prague),
    };
    if fork < introduced {
        return Err(Error::UnsupportedTxType(ty));
    }
    match tx.chain_id() {
        Some(got) if got != chain_id => {
            return Err(Error::ChainMismatch {
                expected: chain_id,
                got,
            });
        }
        Some(_) => {}
        None if fork >= Fork::Eip158 || matches!(tx, Tx::Legacy(_)) => {}
        None => return Err(invalid("missing chain id")),
    }
    validate_structure(tx)?;

    let is_create = tx.kind().is_create();
    if is_create && fork >= Fork::Shanghai && tx.input().len() > MAX_INITCODE_SIZE {
        return Err(invalid("initcode larger than 49152 bytes (EIP-3860)"));
    }
    if fork >= Fork::Osaka && tx.gas_limit() > OSAKA_TX_GAS_CAP {
        return Err(invalid("gas limit above 2^24 (EIP-7825)"));
    }
    let intrinsic = intrinsic_gas(tx, fork);
    if u128::from(tx.gas_limit()) < intrinsic {
        return Err(invalid("gas limit below the intrinsic gas"));
    }
    if let Tx::Eip4844(blob) = tx {
        let count = blob.blob_versioned_hashes.len();
        let per_tx = match fork {
            Fork::Osaka => OSAKA_MAX_BLOBS_PER_TX,
            // Until a per-transaction limit existed, the block's blob gas limit was the bound.
            Fork::Prague => (1_179_648 / GAS_PER_BLOB) as usize,
            _ => (786_432 / GAS_PER_BLOB) as usize,
        };
        if count > per_tx {
            return Err(invalid("too many blobs for one transaction at this fork"));
        }
    }
    Ok(())
}

/// Intrinsic gas (and, from Prague, the EIP-7623 calldata floor, whichever is higher).
fn intrinsic_gas(tx: &Tx, fork: Fork) -> u128 {
    let data = tx.input();
    let zeros = data.iter().filter(|b| **b == 0).count() as u128;
    let nonzeros = data.len() as u128 - zeros;
    let nonzero_cost = if fork >= Fork::Istanbul { 16 } else { 68 };
    let mut gas: u128 = 21_000 + zeros * 4 + nonzeros * nonzero_cost;
    if tx.kind().is_create() {
        if fork >= Fork::Homestead {
            gas += 32_000;
        }
        if fork >= Fork::Shanghai {
            gas += 2 * (data.len() as u128).div_ceil(32);
        }
    }
    if let Some(list) = tx.access_list() {
        for item in list.iter() {
            gas += 2_400 + 1_900 * item.storage_keys.len() as u128;
        }
    }
    if let Some(auths) = tx.authorization_list() {
        gas += 25_000 * auths.len() as u128;
    }
    if fork >= Fork::Prague {
        let tokens = zeros + 4 * nonzeros;
        gas = gas.max(21_000 + 10 * tokens);
    }
    gas
}

fn invalid(msg: &str) -> Error {
    Error::InvalidTransaction(msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::consensus::{TxEip1559, TxEip4844, TxEip7702, TxLegacy};
    use alloy::primitives::{Address, B256, Bytes, TxKind};

    fn eip1559() -> TxEip1559 {
        TxEip1559 {
            chain_id: 1,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::new(),
        }
    }

    #[test]
    fn fork_names_parse_in_order() {
        let cancun: Fork = "Cancun".parse().unwrap();
        assert!(cancun > "Shanghai".parse::<Fork>().unwrap());
        assert!("Osaka".parse::<Fork>().unwrap() > "Prague".parse::<Fork>().unwrap());
        assert!("Mars".parse::<Fork>().is_err());
    }

    #[test]
    fn priority_above_max_fee_and_max_nonce_are_refused() {
        let mut tx = eip1559();
        tx.max_priority_fee_per_gas = 11;
        assert!(validate_structure(&tx.into()).is_err());
        let mut tx = eip1559();
        tx.nonce = u64::MAX;
        assert!(validate_structure(&tx.into()).is_err());
        assert!(validate_structure(&eip1559().into()).is_ok());
    }

    #[test]
    fn intrinsic_gas_types_and_chain_follow_the_fork() {
        let mut tx = eip1559();
        tx.gas_limit = 20_999;
        assert!(validate_for_fork(&tx.into(), Fork::Cancun, 1).is_err());
        assert!(validate_for_fork(&eip1559().into(), Fork::Cancun, 1).is_ok());
        assert!(matches!(
            validate_for_fork(&eip1559().into(), Fork::Berlin, 1),
            Err(Error::UnsupportedTxType(2))
        ));
        assert!(matches!(
            validate_for_fork(&eip1559().into(), Fork::Cancun, 5),
            Err(Error::ChainMismatch { .. })
        ));
        // A deploy pays 32000 plus 2 gas per initcode word from Shanghai.
        let deploy = TxLegacy {
            chain_id: None,
            gas_limit: 53_000 + 16 + 2,
            to: TxKind::Create,
            input: Bytes::from(vec![1u8]),
            ..Default::default()
        };
        assert!(validate_for_fork(&deploy.clone().into(), Fork::Shanghai, 1).is_ok());
        let short = TxLegacy {
            gas_limit: 53_000 + 16 + 1,
            ..deploy
        };
        assert!(validate_for_fork(&short.into(), Fork::Shanghai, 1).is_err());
    }

    #[test]
    fn blob_and_set_code_rules() {
        let blob = |hashes: Vec<B256>| TxEip4844 {
            chain_id: 1,
            gas_limit: 21_000,
            max_fee_per_gas: 1,
            max_fee_per_blob_gas: 1,
            blob_versioned_hashes: hashes,
            ..Default::default()
        };
        let mut good = B256::ZERO;
        good.0[0] = 1;
        assert!(validate_structure(&Tx::Eip4844(blob(vec![]))).is_err());
        assert!(validate_structure(&Tx::Eip4844(blob(vec![B256::ZERO]))).is_err());
        assert!(validate_for_fork(&Tx::Eip4844(blob(vec![good; 6])), Fork::Cancun, 1).is_ok());
        assert!(validate_for_fork(&Tx::Eip4844(blob(vec![good; 7])), Fork::Cancun, 1).is_err());
        assert!(validate_for_fork(&Tx::Eip4844(blob(vec![good; 9])), Fork::Prague, 1).is_ok());
        assert!(validate_for_fork(&Tx::Eip4844(blob(vec![good; 7])), Fork::Osaka, 1).is_err());
        let empty = TxEip7702 {
            chain_id: 1,
            gas_limit: 21_000,
            ..Default::default()
        };
        assert!(validate_structure(&empty.into()).is_err());
    }
}
