//! What a call does, read from its calldata: token transfers and approvals, NFT transfers and
//! operator approvals, or a plain contract call (named when a bound ABI decodes it).
//!
//! Arguments are decoded the way the EVM hands them to a contract, not the way a careful client
//! encodes them: calldata shorter than the arguments reads as zero-padded (what `CALLDATALOAD`
//! returns past the end, and what old token contracts such as USDT act on) and dirty high bits
//! of an `address` or `bool` are masked as those contracts do. Reading strictly instead would let
//! a malformed `transfer` that a token still executes slip past the transfer rules as an
//! anonymous contract call. Calls whose dynamic arguments do not decode at all are refused.

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;

use super::registry::{Registry, Standard, TokenInfo};
use crate::error::{Error, Result};
use crate::facts::{Action, Amount, CallFacts, NftFacts, TokenFacts};

mod abi {
    alloy::sol! {
        interface Erc20 {
            function transfer(address to, uint256 amount);
            function transferFrom(address from, address to, uint256 amount);
            function approve(address spender, uint256 amount);
            function increaseAllowance(address spender, uint256 addedValue);
        }
        interface Erc721 {
            function safeTransferFrom(address from, address to, uint256 tokenId);
            function setApprovalForAll(address operator, bool approved);
        }
        interface Erc721WithData {
            function safeTransferFrom(address from, address to, uint256 tokenId, bytes data);
        }
        interface Erc1155 {
            function safeTransferFrom(address from, address to, uint256 id, uint256 amount, bytes data);
            function safeBatchTransferFrom(address from, address to, uint256[] ids, uint256[] amounts, bytes data);
        }
    }
}
use abi::{Erc20, Erc721, Erc721WithData, Erc1155};

/// The part of the facts a call's calldata determines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallReading {
    pub(crate) action: Action,
    pub(crate) token: Option<TokenFacts>,
    pub(crate) nft: Option<NftFacts>,
    pub(crate) call: Option<CallFacts>,
}

/// `"0x"` + the first four bytes in hex (fewer when the calldata is shorter), `""` without data.
pub(crate) fn selector_string(data: &[u8]) -> String {
    let head = data.get(..4).unwrap_or(data);
    if head.is_empty() {
        String::new()
    } else {
        format!("0x{}", hex::encode(head))
    }
}

/// Reads non-empty calldata sent to `contract` on `chain_id`.
pub(crate) fn read_call(
    chain_id: u64,
    contract: Address,
    data: &[u8],
    registry: &Registry,
) -> Result<CallReading> {
    let token = registry.token(chain_id, contract);
    let standard = token.map(|t| t.standard);
    let call = bound_function(chain_id, contract, data, registry);
    let plain = |call| CallReading {
        action: Action::ContractCall,
        token: None,
        nft: None,
        call,
    };
    let Some(selector) = data.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return Ok(plain(call));
    };
    let nft = |token_id: String, counterparty: Address, approved: bool| NftFacts {
        contract,
        standard: standard.map_or("unknown", Standard::as_str).to_owned(),
        token_id,
        counterparty,
        approved,
    };
    let fungible = |action, amount: U256, counterparty, unlimited| CallReading {
        action,
        token: Some(token_facts(
            contract,
            token,
            amount,
            counterparty,
            unlimited,
        )),
        nft: None,
        call: call.clone(),
    };
    let non_fungible = |action, facts: NftFacts| CallReading {
        action,
        token: None,
        nft: Some(facts),
        call: call.clone(),
    };

    let reading = match selector {
        Erc20::transferCall::SELECTOR => {
            let c: Erc20::transferCall = static_args(data)?;
            match standard {
                // Pre-ERC-721 NFTs (CryptoKitties) move a token id with `transfer`.
                Some(Standard::Erc721) => {
                    non_fungible(Action::NftTransfer, nft(c.amount.to_string(), c.to, true))
                }
                Some(Standard::Erc1155) => plain(call),
                _ => fungible(Action::Erc20Transfer, c.amount, c.to, false),
            }
        }
        Erc20::transferFromCall::SELECTOR => {
            let c: Erc20::transferFromCall = static_args(data)?;
            match standard {
                Some(Standard::Erc721) => {
                    non_fungible(Action::NftTransfer, nft(c.amount.to_string(), c.to, true))
                }
                Some(Standard::Erc1155) => plain(call),
                _ => fungible(Action::Erc20Transfer, c.amount, c.to, false),
            }
        }
        Erc20::approveCall::SELECTOR => {
            let c: Erc20::approveCall = static_args(data)?;
            match standard {
                // A single-token ERC-721 approval is neither a transfer nor an operator grant:
                // it stays a contract call, with the NFT facts so policies can still see it.
                Some(Standard::Erc721) => CallReading {
                    action: Action::ContractCall,
                    token: None,
                    nft: Some(nft(c.amount.to_string(), c.spender, !c.spender.is_zero())),
                    call: call.clone(),
                },
                Some(Standard::Erc1155) => plain(call),
                _ => fungible(
                    Action::Erc20Approve,
                    c.amount,
                    c.spender,
                    unlimited_approval(c.amount),
                ),
            }
        }
        Erc20::increaseAllowanceCall::SELECTOR => {
            let c: Erc20::increaseAllowanceCall = static_args(data)?;
            match standard {
                Some(Standard::Erc721 | Standard::Erc1155) => plain(call),
                _ => fungible(
                    Action::Erc20Approve,
                    c.addedValue,
                    c.spender,
                    unlimited_approval(c.addedValue),
                ),
            }
        }
        Erc721::safeTransferFromCall::SELECTOR => {
            let c: Erc721::safeTransferFromCall = static_args(data)?;
            non_fungible(Action::NftTransfer, nft(c.tokenId.to_string(), c.to, true))
        }
        Erc721WithData::safeTransferFromCall::SELECTOR => {
            let c: Erc721WithData::safeTransferFromCall = dynamic_args(data)?;
            non_fungible(Action::NftTransfer, nft(c.tokenId.to_string(), c.to, true))
        }
        Erc721::setApprovalForAllCall::SELECTOR => {
            let c: Erc721::setApprovalForAllCall = static_args(data)?;
            non_fungible(
                Action::NftApproveAll,
                nft(String::new(), c.operator, c.approved),
            )
        }
        Erc1155::safeTransferFromCall::SELECTOR => {
            let c: Erc1155::safeTransferFromCall = dynamic_args(data)?;
            non_fungible(Action::NftTransfer, nft(c.id.to_string(), c.to, true))
        }
        Erc1155::safeBatchTransferFromCall::SELECTOR => {
            let c: Erc1155::safeBatchTransferFromCall = dynamic_args(data)?;
            // Several ids in one string: policies compare token_id as a whole, and a batch must
            // not look like a transfer of its first id only.
            let ids: Vec<String> = c.ids.iter().map(U256::to_string).collect();
            non_fungible(Action::NftTransfer, nft(ids.join(","), c.to, true))
        }
        _ => plain(call),
    };
    Ok(reading)
}

/// ERC-20 facts for `contract`; an unknown contract reads as 0 decimals (the largest amount).
pub(crate) fn token_facts(
    contract: Address,
    info: Option<&TokenInfo>,
    amount: U256,
    counterparty: Address,
    unlimited: bool,
) -> TokenFacts {
    let (standard, symbol, decimals) = match info {
        Some(t) => (t.standard.as_str(), t.symbol.clone(), t.decimals),
        None => ("unknown", String::new(), 0),
    };
    TokenFacts {
        contract,
        standard: standard.to_owned(),
        symbol,
        known: info.is_some(),
        amount: Amount::from_base_units(amount, decimals),
        counterparty,
        unlimited,
        decimals,
    }
}

/// ERC-20 approvals at or above 2^255 are treated as unlimited (wallets use 2^256-1, some
/// contracts treat any huge allowance as infinite and never decrement it).
pub(crate) fn unlimited_approval(amount: U256) -> bool {
    amount.bit(255)
}

fn bound_function(
    chain_id: u64,
    contract: Address,
    data: &[u8],
    registry: &Registry,
) -> Option<CallFacts> {
    let selector = <[u8; 4]>::try_from(data.get(..4)?).ok()?;
    let f = registry.function(chain_id, contract, selector)?;
    let args = data.get(4..)?;
    f.inputs.abi_decode_sequence(args).ok().map(|_| CallFacts {
        function: f.name.clone(),
    })
}

/// Decodes a call whose arguments are all static, reading missing bytes as zeros.
fn static_args<C: SolCall>(data: &[u8]) -> Result<C> {
    let args = data.get(4..).unwrap_or_default();
    let size = static_size::<C>().unwrap_or(args.len());
    if args.len() >= size {
        return C::abi_decode_raw(args).map_err(|_| undecodable::<C>());
    }
    let mut padded = args.to_vec();
    padded.resize(size, 0);
    C::abi_decode_raw(&padded).map_err(|_| undecodable::<C>())
}

fn dynamic_args<C: SolCall>(data: &[u8]) -> Result<C> {
    C::abi_decode(data).map_err(|_| undecodable::<C>())
}

fn undecodable<C: SolCall>() -> Error {
    Error::InvalidTransaction(format!("calldata for {} does not decode", C::SIGNATURE))
}

/// The encoded size of a call's arguments when all of them are static.
fn static_size<C: SolCall>() -> Option<usize> {
    <C::Parameters<'static> as alloy::sol_types::SolType>::ENCODED_SIZE
}
