//! Decoding: bytes/JSON in, typed [`Facts`] out (docs/architecture.md §4–§5), including the signing
//! digest that every later stage (Cedar, step-up, MPC, audit) refers to.
//!
//! Two layers:
//! - the **decoder layer** reads a transaction exactly (canonical encoding only), recovers its
//!   sender and checks stateless validity for a given chain and fork; the Ethereum conformance
//!   vectors test this layer through [`decode_signed_transaction`] and [`conformance_check`];
//! - the **request layer** ([`decode`]) adds the gateway's own rules: the request's chain only,
//!   no pre-EIP-155 legacy transactions (valid on every chain), no high-s signatures, a signed
//!   transaction must come from the wallet itself, and structurally invalid transactions
//!   (priority fee above max fee, no blobs, empty authorization list, …) are refused. Intrinsic
//!   gas and blob-count limits depend on the chain's fork, which the gateway cannot know, so they
//!   are left to the node.

mod calldata;
mod hex;
mod message;
mod permit;
mod raw_tx;
mod registry;
mod stateless;
mod transaction;
mod tx_request;
mod typed_data;

use alloy::consensus::SignableTransaction;
use alloy::primitives::{Address, B256};

pub use registry::{Registry, Standard, TokenInfo};
pub use stateless::Fork;
#[cfg(any(test, feature = "testing"))]
pub use typed_data::costliest_admitted as costliest_typed_data;

use crate::error::{Error, Result};
use crate::facts::{Action, Decoded, Facts};
use crate::request::Payload;

/// The transaction a transaction payload describes, signed with `(r, s, y_parity)`: its
/// EIP-2718 encoding and its hash. `None` for payloads that are not transactions.
pub fn signed_transaction(
    payload: Payload<'_>,
    chain_id: u64,
    wallet: Address,
    r: [u8; 32],
    s: [u8; 32],
    y_parity: bool,
) -> Result<Option<(Vec<u8>, alloy::primitives::B256)>> {
    use alloy::consensus::{EthereumTxEnvelope, SignableTransaction, TxEip4844};
    use alloy::eips::eip2718::Encodable2718;
    use alloy::primitives::{Signature, U256};
    let tx = match payload {
        Payload::Transaction(text) => raw_tx::parse(&hex::decode_0x(text)?)?.tx,
        Payload::TransactionRequest(json) => tx_request::parse(json, chain_id, wallet)?,
        _ => return Ok(None),
    };
    let signature = Signature::new(U256::from_be_bytes(r), U256::from_be_bytes(s), y_parity);
    let envelope: EthereumTxEnvelope<TxEip4844> = tx.into_signed(signature).into();
    Ok(Some((envelope.encoded_2718(), *envelope.tx_hash())))
}

/// Parses an address: `0x` and 40 hex digits, all of one case or mixed case with a valid EIP-55
/// checksum (the one address parser of the gateway).
pub fn parse_address(s: &str) -> Result<Address> {
    hex::address(s, "address")
}

/// Decodes one payload for `wallet` on `chain_id`.
pub fn decode(
    payload: Payload<'_>,
    chain_id: u64,
    wallet: Address,
    registry: &Registry,
) -> Result<Facts> {
    // Cedar's Long is i64: a chain id beyond it could not be written into the context.
    let context_chain = i64::try_from(chain_id)
        .map_err(|_| Error::InvalidRequest("chain_id must be at most 2^63-1".to_owned()))?;
    let base = Decoded {
        chain_id: context_chain,
        ..Decoded::default()
    };
    match payload {
        Payload::Transaction(text) => {
            let bytes = hex::decode_0x(text)?;
            let raw = raw_tx::parse(&bytes)?;
            let (digest, signer) = transaction::accept_raw(&raw, chain_id, wallet)?;
            let (action, decoded) =
                transaction::tx_facts(&raw.tx, chain_id, context_chain, registry)?;
            Ok(Facts {
                action,
                digest,
                decoded,
                signer,
            })
        }
        Payload::TransactionRequest(json) => {
            let tx = tx_request::parse(json, chain_id, wallet)?;
            stateless::validate_structure(&tx)?;
            let (action, decoded) = transaction::tx_facts(&tx, chain_id, context_chain, registry)?;
            Ok(Facts {
                action,
                digest: tx.signature_hash(),
                decoded,
                signer: None,
            })
        }
        Payload::Message(text) => {
            let (digest, message) = message::text(text);
            let decoded = Decoded {
                message: Some(message),
                ..base
            };
            Ok(Facts {
                action: Action::PersonalSign,
                digest,
                decoded,
                signer: None,
            })
        }
        Payload::MessageBytes(text) => {
            let (digest, message) = message::bytes(text)?;
            let decoded = Decoded {
                message: Some(message),
                ..base
            };
            Ok(Facts {
                action: Action::PersonalSign,
                digest,
                decoded,
                signer: None,
            })
        }
        Payload::TypedData(json) => {
            let reading = typed_data::read(json, chain_id)?;
            let token = reading.message.as_ref().and_then(|m| {
                permit::read_permit(
                    &reading.facts.primary_type,
                    m,
                    reading.facts.verifying_contract,
                    chain_id,
                    registry,
                )
            });
            let action = if token.is_some() {
                Action::Permit
            } else {
                Action::TypedData
            };
            let decoded = Decoded {
                typed_data: Some(reading.facts),
                token,
                ..base
            };
            Ok(Facts {
                action,
                digest: reading.digest,
                decoded,
                signer: None,
            })
        }
        Payload::Hash(text) => {
            let digest = message::raw_hash(text)?;
            Ok(Facts {
                action: Action::RawHash,
                digest,
                decoded: base,
                signer: None,
            })
        }
    }
}

/// A signed raw transaction as the decoder layer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    /// The recovered sender.
    pub sender: Address,
    /// The transaction hash: keccak256 of the (canonical) input.
    pub hash: B256,
    /// The signing hash: keccak256(type || rlp(unsigned fields)).
    pub signing_hash: B256,
    /// EIP-2718 type (0 for legacy).
    pub tx_type: u8,
    /// `None` for a pre-EIP-155 legacy transaction.
    pub chain_id: Option<u64>,
}

/// Decoder layer: decodes a signed raw transaction exactly and recovers its sender. No chain or
/// fork rules apply here, and pre-EIP-155 legacy transactions decode; high-s signatures
/// (invalid since Homestead) and unsigned payloads are refused.
pub fn decode_signed_transaction(bytes: &[u8]) -> Result<SignedTransaction> {
    signed(&raw_tx::parse(bytes)?)
}

/// Decoder layer plus stateless validity for `chain_id` at `fork`: transaction types the fork
/// knows, chain id, intrinsic gas, initcode size, gas cap, blob counts and versioned hashes,
/// non-empty authorization lists, fee ordering, nonce range.
pub fn validate_signed_transaction(
    bytes: &[u8],
    fork: Fork,
    chain_id: u64,
) -> Result<SignedTransaction> {
    let raw = raw_tx::parse(bytes)?;
    stateless::validate_for_fork(&raw.tx, fork, chain_id)?;
    signed(&raw)
}

fn signed(raw: &raw_tx::RawTx) -> Result<SignedTransaction> {
    let sig = raw
        .signature
        .ok_or_else(|| Error::InvalidTransaction("transaction is not signed".to_owned()))?;
    let signing_hash = raw.signing_hash();
    let sender = transaction::recover(&sig, signing_hash)?;
    Ok(SignedTransaction {
        sender,
        hash: raw.input_hash,
        signing_hash,
        tx_type: raw.tx.tx_type() as u8,
        chain_id: alloy::consensus::Transaction::chain_id(&raw.tx),
    })
}

/// [`validate_signed_transaction`] on Ethereum mainnet (chain id 1), as the conformance vectors
/// assume.
pub fn conformance_check(bytes: &[u8], fork: Fork) -> Result<SignedTransaction> {
    validate_signed_transaction(bytes, fork, 1)
}

#[cfg(test)]
mod tests;
