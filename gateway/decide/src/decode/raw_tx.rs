//! Raw transactions, signed or not, in their one canonical encoding.
//!
//! Accepted forms (the first byte decides):
//! - legacy `rlp([nonce, gasPrice, gas, to, value, data, v, r, s])` (signed), or unsigned as
//!   `rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])` (EIP-155) or the six-field
//!   pre-EIP-155 list;
//! - typed `type || rlp(fields)` (unsigned) or `type || rlp(fields ++ [yParity, r, s])` (signed)
//!   for types 1, 2, 3 and 4.
//!
//! EIP-4844 transactions are accepted only without their blob sidecar (the form that is signed
//! and hashed). The network form carrying blobs, commitments and proofs is refused: the gateway
//! signs only the transaction, and accepting blobs it cannot verify against the versioned hashes
//! would mean carrying data nobody checked.
//!
//! Exactness: after decoding, the transaction is re-encoded with alloy and must reproduce the
//! input byte for byte. That one comparison rules out trailing bytes, non-canonical RLP (long
//! forms, leading zeros, a single byte wrapped in a string header) and any leniency in a field
//! decoder, so that the digest we sign is the keccak of exactly what the caller sent.

use alloy::consensus::transaction::{RlpEcdsaDecodableTx, RlpEcdsaEncodableTx};
use alloy::consensus::{
    EthereumTypedTransaction, SignableTransaction, TxEip1559, TxEip2930, TxEip4844, TxEip7702,
    TxLegacy,
};
use alloy::primitives::{B256, Signature, U256, keccak256};
use alloy::rlp::{Decodable, Header};

use crate::error::{Error, Result};

/// Every transaction the decoder handles: the EIP-4844 variant is the one without sidecar.
pub(crate) type Tx = EthereumTypedTransaction<TxEip4844>;

/// A decoded raw transaction.
#[derive(Debug, Clone)]
pub(crate) struct RawTx {
    pub(crate) tx: Tx,
    pub(crate) signature: Option<Signature>,
    /// keccak256 of the input: the transaction hash when signed, the signing hash when not.
    pub(crate) input_hash: B256,
}

impl RawTx {
    /// The signing hash (the digest every later stage talks about).
    pub(crate) fn signing_hash(&self) -> B256 {
        if self.signature.is_some() {
            self.tx.signature_hash()
        } else {
            // Re-encoding reproduced the input exactly, so this is keccak(type || rlp(fields)).
            self.input_hash
        }
    }
}

pub(crate) fn parse(bytes: &[u8]) -> Result<RawTx> {
    let (&first, body) = bytes
        .split_first()
        .ok_or_else(|| invalid("empty transaction"))?;
    let (tx, signature): (Tx, Option<Signature>) = match first {
        0xc0..=0xff => legacy(bytes)?,
        0x01 => typed::<TxEip2930>(body, first).map(|(t, s)| (t.into(), s))?,
        0x02 => typed::<TxEip1559>(body, first).map(|(t, s)| (t.into(), s))?,
        0x03 => typed::<TxEip4844>(body, first).map(|(t, s)| (Tx::Eip4844(t), s))?,
        0x04 => typed::<TxEip7702>(body, first).map(|(t, s)| (t.into(), s))?,
        0x80..=0xbf => {
            return Err(invalid(
                "an RLP string is neither a typed nor a legacy transaction",
            ));
        }
        other => return Err(Error::UnsupportedTxType(other)),
    };
    let mut again = Vec::with_capacity(bytes.len());
    match &signature {
        Some(sig) => tx.eip2718_encode(sig, &mut again),
        None => tx.encode_for_signing(&mut again),
    }
    if again != bytes {
        return Err(invalid("not in canonical encoding"));
    }
    Ok(RawTx {
        tx,
        signature,
        input_hash: keccak256(bytes),
    })
}

/// The list payload of an RLP list that must span all of `buf`.
fn whole_list(mut buf: &[u8]) -> Result<&[u8]> {
    let header = Header::decode(&mut buf).map_err(rlp)?;
    if !header.list {
        return Err(invalid("expected an RLP list"));
    }
    if header.payload_length != buf.len() {
        return Err(invalid(
            "RLP list length does not match the input (trailing or missing bytes)",
        ));
    }
    Ok(buf)
}

fn typed<T: RlpEcdsaDecodableTx>(body: &[u8], ty: u8) -> Result<(T, Option<Signature>)> {
    let mut payload = whole_list(body)?;
    if ty == 0x03 && payload.first().is_some_and(|b| *b >= 0xc0) {
        return Err(invalid(
            "blob transactions are signed without their sidecar: send type || rlp(fields)",
        ));
    }
    let tx = T::rlp_decode_fields(&mut payload).map_err(rlp)?;
    if payload.is_empty() {
        return Ok((tx, None));
    }
    let sig = Signature::decode_rlp_vrs(&mut payload, bool::decode).map_err(rlp)?;
    if !payload.is_empty() {
        return Err(invalid("too many fields"));
    }
    Ok((tx, Some(sig)))
}

fn legacy(bytes: &[u8]) -> Result<(Tx, Option<Signature>)> {
    let mut payload = whole_list(bytes)?;
    let mut tx = TxLegacy::rlp_decode_fields(&mut payload).map_err(rlp)?;
    if payload.is_empty() {
        // The six-field signing form of a pre-EIP-155 transaction.
        return Ok((tx.into(), None));
    }
    let v = U256::decode(&mut payload).map_err(rlp)?;
    let r = U256::decode(&mut payload).map_err(rlp)?;
    let s = U256::decode(&mut payload).map_err(rlp)?;
    if !payload.is_empty() {
        return Err(invalid("too many fields"));
    }
    if r.is_zero() && s.is_zero() {
        // EIP-155 signing form: the seventh field is the chain id, r and s are zero.
        let chain_id = u64::try_from(v).map_err(|_| invalid("chain id above 2^64-1"))?;
        tx.chain_id = Some(chain_id);
        return Ok((tx.into(), None));
    }
    let v = u128::try_from(v).map_err(|_| invalid("invalid v"))?;
    let (parity, chain_id) = alloy::consensus::transaction::from_eip155_value(v)
        .ok_or_else(|| invalid("invalid v: expected 27, 28 or 35 + 2 * chain id (+1)"))?;
    tx.chain_id = chain_id;
    Ok((tx.into(), Some(Signature::new(r, s, parity))))
}

fn invalid(msg: &str) -> Error {
    Error::InvalidTransaction(msg.to_owned())
}

fn rlp(e: alloy::rlp::Error) -> Error {
    Error::InvalidTransaction(format!("RLP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, Bytes, TxKind};

    fn legacy_tx(chain_id: Option<u64>) -> TxLegacy {
        TxLegacy {
            chain_id,
            nonce: 7,
            gas_price: 20_000_000_000,
            gas_limit: 21_000,
            to: TxKind::Call(Address::repeat_byte(0x11)),
            value: U256::from(10u64).pow(U256::from(18u64)),
            input: Bytes::new(),
        }
    }

    #[test]
    fn unsigned_legacy_eip155_and_pre155() {
        let tx = legacy_tx(Some(1));
        let mut enc = Vec::new();
        tx.encode_for_signing(&mut enc);
        let raw = parse(&enc).unwrap();
        assert!(raw.signature.is_none());
        assert_eq!(raw.signing_hash(), tx.signature_hash());
        assert_eq!(raw.tx.legacy().unwrap().chain_id, Some(1));

        let old = legacy_tx(None);
        let mut enc = Vec::new();
        old.encode_for_signing(&mut enc);
        assert_eq!(parse(&enc).unwrap().tx.legacy().unwrap().chain_id, None);
    }

    #[test]
    fn unsigned_legacy_with_nonzero_r_is_not_the_signing_form() {
        // rlp([..6 fields, chainId=1, r=0, s=1]) is neither a signing form nor a valid v.
        let tx = legacy_tx(Some(1));
        let mut enc = Vec::new();
        tx.encode_for_signing(&mut enc);
        let n = enc.len();
        enc[n - 1] = 0x01; // s = 1
        // v = 1 is not a valid signed v either.
        assert_eq!(parse(&enc).unwrap_err().code(), "invalid_transaction");
    }

    #[test]
    fn trailing_bytes_and_unknown_types_are_refused() {
        let mut enc = Vec::new();
        legacy_tx(Some(1)).encode_for_signing(&mut enc);
        let mut trailing = enc.clone();
        trailing.push(0);
        assert_eq!(parse(&trailing).unwrap_err().code(), "invalid_transaction");
        assert_eq!(
            parse(&[0x05, 0xc0]).unwrap_err().code(),
            "unsupported_transaction_type"
        );
        assert_eq!(
            parse(&[0x00, 0xc0]).unwrap_err().code(),
            "unsupported_transaction_type"
        );
        assert_eq!(parse(&[]).unwrap_err().code(), "invalid_transaction");
        assert_eq!(parse(&[0x02]).unwrap_err().code(), "invalid_transaction");
    }

    #[test]
    fn non_canonical_integers_are_refused() {
        let tx = TxEip1559 {
            chain_id: 1,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 1,
            max_priority_fee_per_gas: 1,
            to: TxKind::Call(Address::repeat_byte(2)),
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::new(),
        };
        let mut enc = Vec::new();
        tx.encode_for_signing(&mut enc);
        assert!(parse(&enc).is_ok());
        // nonce 0 is 0x80; encode it as 0x00 instead (a single-byte zero, non-canonical) and
        // fix up nothing else: lengths stay the same.
        let pos = enc.iter().position(|b| *b == 0x80).unwrap();
        let mut bad = enc.clone();
        bad[pos] = 0x00;
        assert!(parse(&bad).is_err());
    }
}
