//! The typed facts a decoded request yields: the one Cedar action, the context attributes of
//! docs/architecture.md §4 and the signing digest. Every later stage (Cedar, step-up, MPC, audit)
//! reads the digest from here so that all of them talk about the same bytes.

use alloy::primitives::{Address, B256, U256};
use serde::Serialize;

/// The Cedar action the decoder picked. Exactly one per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NativeTransfer,
    Erc20Transfer,
    Erc20Approve,
    NftTransfer,
    NftApproveAll,
    ContractCall,
    ContractDeploy,
    SetCode,
    PersonalSign,
    TypedData,
    Permit,
    RawHash,
}

impl Action {
    /// Every action, in the order the schema declares them.
    pub const ALL: [Action; 12] = [
        Action::NativeTransfer,
        Action::Erc20Transfer,
        Action::Erc20Approve,
        Action::NftTransfer,
        Action::NftApproveAll,
        Action::ContractCall,
        Action::ContractDeploy,
        Action::SetCode,
        Action::PersonalSign,
        Action::TypedData,
        Action::Permit,
        Action::RawHash,
    ];

    /// The Cedar action id (`Parapet::Action::"<id>"`) and the wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::NativeTransfer => "native_transfer",
            Action::Erc20Transfer => "erc20_transfer",
            Action::Erc20Approve => "erc20_approve",
            Action::NftTransfer => "nft_transfer",
            Action::NftApproveAll => "nft_approve_all",
            Action::ContractCall => "contract_call",
            Action::ContractDeploy => "contract_deploy",
            Action::SetCode => "set_code",
            Action::PersonalSign => "personal_sign",
            Action::TypedData => "typed_data",
            Action::Permit => "permit",
            Action::RawHash => "raw_hash",
        }
    }
}

/// An amount as policies see it (docs/architecture.md §4): nano-units of the asset, rounded up and
/// clamped to 2^62 so that Cedar's 64-bit `Long` arithmetic can never overflow on it, plus the
/// exact base units as a decimal string for auditors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub scaled: i64,
    pub saturated: bool,
    pub exact: bool,
    pub raw: String,
}

/// Largest `scaled` value; leaves headroom so sums of a few amounts stay below `i64::MAX`.
pub const AMOUNT_CAP: i64 = 1 << 62;

impl Amount {
    /// Scales `raw` base units of an asset with `decimals` decimals to nano-units (10^-9 of one
    /// whole unit), rounding up so that a policy cap is never undercut by truncation.
    pub fn from_base_units(raw: U256, decimals: u8) -> Amount {
        let (scaled, exact) = if decimals >= 9 {
            let div = U256::from(10u8).pow(U256::from(decimals - 9));
            let (q, r) = raw.div_rem(div);
            if r.is_zero() {
                (q, true)
            } else {
                (q.saturating_add(U256::from(1u8)), false)
            }
        } else {
            let mul = U256::from(10u8).pow(U256::from(9 - decimals));
            (raw.saturating_mul(mul), true)
        };
        let cap = U256::from(AMOUNT_CAP as u64);
        let saturated = scaled > cap;
        let scaled = if saturated {
            AMOUNT_CAP
        } else {
            // Bounded by the cap just above, so the conversion cannot fail.
            i64::try_from(scaled).unwrap_or(AMOUNT_CAP)
        };
        Amount {
            scaled,
            saturated,
            exact: exact && !saturated,
            raw: raw.to_string(),
        }
    }

    /// Zero of any asset.
    pub fn zero() -> Amount {
        Amount {
            scaled: 0,
            saturated: false,
            exact: true,
            raw: "0".to_owned(),
        }
    }

    /// Sum used for velocity windows; saturates at the cap like every amount.
    pub fn plus(&self, other: &Amount) -> Amount {
        let raw = self
            .raw
            .parse::<U256>()
            .unwrap_or(U256::MAX)
            .saturating_add(other.raw.parse::<U256>().unwrap_or(U256::MAX));
        let sum = self.scaled.saturating_add(other.scaled);
        let saturated = self.saturated || other.saturated || sum > AMOUNT_CAP;
        Amount {
            scaled: sum.min(AMOUNT_CAP),
            saturated,
            exact: self.exact && other.exact && !saturated,
            raw: raw.to_string(),
        }
    }
}

/// ERC-20 facts for transfers, approvals and permits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenFacts {
    pub contract: Address,
    /// "erc20" | "erc721" | "erc1155" | "unknown"
    pub standard: String,
    pub symbol: String,
    pub known: bool,
    pub amount: Amount,
    /// The recipient of a transfer or the spender of an approval/permit.
    pub counterparty: Address,
    pub unlimited: bool,
    /// Decimals used for `amount` (0 when unknown: the largest reading). Not a Cedar attribute.
    #[serde(skip)]
    pub decimals: u8,
}

/// NFT facts for ERC-721/1155 transfers and `setApprovalForAll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftFacts {
    pub contract: Address,
    pub standard: String,
    /// Decimal string: token ids are uint256.
    pub token_id: String,
    pub counterparty: Address,
    /// `false` for a `setApprovalForAll(op, false)` revoke; `true` for transfers and grants.
    pub approved: bool,
}

/// `context.call` when an ABI in `schemas/abis/` decodes the calldata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallFacts {
    /// Function name as the ABI spells it, e.g. "swapExactTokensForTokens".
    pub function: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypedDataFacts {
    pub primary_type: String,
    /// "" when the domain has no name.
    pub domain_name: String,
    /// Absent when the domain has no verifyingContract.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verifying_contract: Option<Address>,
    /// Absent when the domain has no chainId.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_chain_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageFacts {
    /// "utf8" | "bytes"
    pub encoding: String,
    pub len: i64,
}

/// What the decoder learned from the payload alone. Attributes that do not apply are `None`
/// and absent from the Cedar context (policies test them with `has`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Decoded {
    pub chain_id: i64,
    /// EIP-2718 type byte (0 legacy, 1, 2, 3, 4); absent for messages and hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_type: Option<i64>,
    /// Absent for deployments, messages and hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Address>,
    /// Native value; absent for messages and hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gas_limit: Option<i64>,
    /// "0x" + 8 hex digits, or "" without calldata; absent for messages and hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_len: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nft: Option<NftFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegates: Option<Vec<Address>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<CallFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typed_data: Option<TypedDataFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageFacts>,
}

/// The decoder's whole answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub action: Action,
    /// The one digest that is authorized, stepped up, signed and audited.
    pub digest: B256,
    pub decoded: Decoded,
    /// Sender recovered from a signed raw transaction (already checked against the wallet).
    pub signer: Option<Address>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_usdc_and_eth_to_nano_units() {
        let usdc = Amount::from_base_units(U256::from(250_000_000u64), 6);
        assert_eq!(usdc.scaled, 250_000_000_000);
        assert!(usdc.exact);
        let wei = Amount::from_base_units(U256::from(1_000_000_000_000_000u64), 18);
        assert_eq!(wei.scaled, 1_000_000);
        let one_wei = Amount::from_base_units(U256::from(1u8), 18);
        assert_eq!((one_wei.scaled, one_wei.exact), (1, false));
    }

    #[test]
    fn saturates_at_cap() {
        let max = Amount::from_base_units(U256::MAX, 0);
        assert_eq!(max.scaled, AMOUNT_CAP);
        assert!(max.saturated && !max.exact);
        let sum = max.plus(&max);
        assert_eq!(sum.scaled, AMOUNT_CAP);
    }
}
