//! Decoding: bytes/JSON in, typed [`Facts`] out (DESIGN §4–§5).
//! PLACEHOLDER: replaced by the real decoder.

use alloy::primitives::Address;

use crate::error::{Error, Result};
use crate::facts::Facts;
use crate::request::Payload;

/// Token registry (`schemas/tokens.json`) and ABIs (`schemas/abis/*.json`) the decoder knows.
#[derive(Debug, Clone, Default)]
pub struct Registry {}

impl Registry {
    /// `tokens_json`: content of `schemas/tokens.json`; `abis`: (file name, JSON ABI text).
    pub fn load(_tokens_json: &str, _abis: &[(String, String)]) -> Result<Registry> {
        Ok(Registry {})
    }
}

/// Decodes one payload for `wallet` on `chain_id`.
pub fn decode(_payload: Payload<'_>, _chain_id: u64, _wallet: Address, _registry: &Registry) -> Result<Facts> {
    Err(Error::Internal("decoder not built".to_owned()))
}
