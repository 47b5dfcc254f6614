//! From a decoded transaction to facts, and the request-layer rules for raw transactions.

use alloy::consensus::Transaction;
use alloy::consensus::crypto::SECP256K1N_HALF;
use alloy::primitives::{Address, B256, Signature, TxKind};

use super::calldata::{read_call, selector_string};
use super::raw_tx::{RawTx, Tx};
use super::registry::Registry;
use super::stateless::validate_structure;
use crate::error::{Error, Result};
use crate::facts::{Action, Amount, Decoded};

/// Native value is always read with 18 decimals (ETH and every EVM chain's gas token we serve).
const NATIVE_DECIMALS: u8 = 18;

/// Facts for a transaction the request layer has accepted.
pub(crate) fn tx_facts(
    tx: &Tx,
    chain_id: u64,
    context_chain_id: i64,
    registry: &Registry,
) -> Result<(Action, Decoded)> {
    let data = tx.input();
    let mut decoded = Decoded {
        chain_id: context_chain_id,
        tx_type: Some(i64::from(tx.tx_type() as u8)),
        to: tx.to(),
        value: Some(Amount::from_base_units(tx.value(), NATIVE_DECIMALS)),
        // A gas limit beyond i64 cannot be spent; saturating keeps "gas_limit > cap" rules true.
        gas_limit: Some(i64::try_from(tx.gas_limit()).unwrap_or(i64::MAX)),
        selector: Some(selector_string(data)),
        data_len: Some(i64::try_from(data.len()).unwrap_or(i64::MAX)),
        ..Decoded::default()
    };
    let mut action = match tx.kind() {
        TxKind::Create => Action::ContractDeploy,
        TxKind::Call(_) if data.is_empty() => Action::NativeTransfer,
        TxKind::Call(to) => {
            let reading = read_call(chain_id, to, data, registry)?;
            decoded.token = reading.token;
            decoded.nft = reading.nft;
            decoded.call = reading.call;
            reading.action
        }
    };
    if let Tx::Eip7702(set_code) = tx {
        // The call it also makes keeps its token/nft/call facts: a policy on those still applies.
        action = Action::SetCode;
        decoded.delegates = Some(
            set_code
                .authorization_list
                .iter()
                .map(|a| a.address)
                .collect(),
        );
    }
    Ok((action, decoded))
}

/// The request layer's rules for a raw transaction: EIP-155 replay protection, the request's
/// chain, structural validity, and for a signed one a low-s signature by the wallet itself.
pub(crate) fn accept_raw(
    raw: &RawTx,
    chain_id: u64,
    wallet: Address,
) -> Result<(B256, Option<Address>)> {
    check_chain(&raw.tx, chain_id)?;
    validate_structure(&raw.tx)?;
    let digest = raw.signing_hash();
    let signer = match &raw.signature {
        Some(sig) => {
            let sender = recover(sig, digest)?;
            if sender != wallet {
                return Err(Error::SenderMismatch {
                    expected: wallet.to_string().to_lowercase(),
                    got: sender.to_string().to_lowercase(),
                });
            }
            Some(sender)
        }
        None => None,
    };
    Ok((digest, signer))
}

/// Pre-EIP-155 legacy transactions are refused (valid on every chain), and every other
/// transaction must name the request's chain.
pub(crate) fn check_chain(tx: &Tx, chain_id: u64) -> Result<()> {
    match tx.chain_id() {
        None => Err(Error::ReplayableTransaction),
        Some(got) if got != chain_id => Err(Error::ChainMismatch {
            expected: chain_id,
            got,
        }),
        Some(_) => Ok(()),
    }
}

/// Recovers the signer of `digest`, refusing malleable high-s signatures (EIP-2).
pub(crate) fn recover(sig: &Signature, digest: B256) -> Result<Address> {
    if sig.s() > SECP256K1N_HALF {
        return Err(Error::HighS);
    }
    sig.recover_address_from_prehash(&digest)
        .map_err(|_| Error::InvalidTransaction("signature does not recover to any key".to_owned()))
}
