//! Request-layer tests: one per action, transaction type, error code and permit form, against
//! the shipped registry (`schemas/tokens.json`, `schemas/abis/`). Expected digests are computed
//! independently (alloy's encoders and `SolStruct` hashing, or published vectors).

use alloy::consensus::transaction::RlpEcdsaEncodableTx;
use alloy::consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEip4844, TxEip7702, TxLegacy};
use alloy::eips::eip7702::{Authorization, SignedAuthorization};
use alloy::primitives::{Address, B256, Bytes, Signature, TxKind, U256, address, b256, keccak256};
use alloy::sol_types::{SolCall, SolStruct};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};

use super::raw_tx::Tx;
use super::*;
use crate::facts::Amount;

alloy::sol! {
    interface Token {
        function transfer(address to, uint256 amount);
        function transferFrom(address from, address to, uint256 amount);
        function approve(address spender, uint256 amount);
        function increaseAllowance(address spender, uint256 addedValue);
        function setApprovalForAll(address operator, bool approved);
    }
    interface Nft721 {
        function safeTransferFrom(address from, address to, uint256 tokenId);
    }
    interface Nft721Data {
        function safeTransferFrom(address from, address to, uint256 tokenId, bytes data);
    }
    interface Nft1155 {
        function safeTransferFrom(address from, address to, uint256 id, uint256 amount, bytes data);
        function safeBatchTransferFrom(address from, address to, uint256[] ids, uint256[] amounts, bytes data);
    }
    interface Router {
        function swapExactTokensForTokens(uint256 amountIn, uint256 amountOutMin, address[] path, address to, uint256 deadline);
    }
    interface Weth {
        function deposit();
    }
}

const USDC: Address = address!("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
const DAI: Address = address!("6b175474e89094c44da98b954eedeac495271d0f");
const WETH: Address = address!("c02aaa39b223fe8d0a0e5c4f27ead9083c756cc2");
const BAYC: Address = address!("bc4ca0eda7647a8ab7c2061c2e118a18a936f13d");
const OPENSTORE: Address = address!("495f947276749ce646f68ac8c248420045cb7b5e");
const ROUTER: Address = address!("7a250d5630b4cf539739df2c5dacb4c659f2488d");
const PERMIT2: Address = address!("000000000022d473030f116ddee9f6b43ac78ba3");
const BOB: Address = address!("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
const UNKNOWN: Address = address!("1111111111111111111111111111111111111111");

fn registry() -> Registry {
    let abis = [
        (
            "uniswap_v2_router02.json",
            include_str!("../../../../schemas/abis/uniswap_v2_router02.json"),
        ),
        (
            "weth9.json",
            include_str!("../../../../schemas/abis/weth9.json"),
        ),
    ];
    let abis: Vec<(String, String)> = abis
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    Registry::load(include_str!("../../../../schemas/tokens.json"), &abis).unwrap()
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[0x42u8; 32].into()).unwrap()
}

fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[0x17u8; 32].into()).unwrap()
}

fn wallet() -> Address {
    Address::from_private_key(&key())
}

fn sign_with(key: &SigningKey, tx: &Tx) -> (Vec<u8>, Signature) {
    let (sig, rec) = key
        .sign_prehash_recoverable(tx.signature_hash().as_slice())
        .unwrap();
    let sig = Signature::from((sig, rec));
    let mut out = Vec::new();
    tx.eip2718_encode(&sig, &mut out);
    (out, sig)
}

fn signed(tx: &Tx) -> String {
    format!("0x{}", ::hex::encode(sign_with(&key(), tx).0))
}

fn unsigned(tx: &Tx) -> String {
    let mut out = Vec::new();
    tx.encode_for_signing(&mut out);
    format!("0x{}", ::hex::encode(out))
}

fn decode_tx(raw: &str) -> Result<Facts> {
    decode(Payload::Transaction(raw), 1, wallet(), &registry())
}

fn eip1559(to: Address, value: U256, input: Vec<u8>) -> Tx {
    Tx::Eip1559(TxEip1559 {
        chain_id: 1,
        nonce: 3,
        gas_limit: 90_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: Bytes::from(input),
    })
}

fn call(to: Address, input: Vec<u8>) -> Facts {
    decode_tx(&unsigned(&eip1559(to, U256::ZERO, input))).unwrap()
}

fn eth(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u8))
}

fn versioned_hash() -> B256 {
    b256!("01a915e4d060149eb4365960e6a7a45f334393093061116b197e3240065ff2d8")
}

fn auth(address: Address) -> SignedAuthorization {
    SignedAuthorization::new_unchecked(
        Authorization {
            chain_id: U256::from(1u8),
            address,
            nonce: 0,
        },
        0,
        U256::from(1u8),
        U256::from(1u8),
    )
}

fn all_types() -> Vec<Tx> {
    let to = TxKind::Call(BOB);
    vec![
        Tx::Legacy(TxLegacy {
            chain_id: Some(1),
            nonce: 1,
            gas_price: 20_000_000_000,
            gas_limit: 21_000,
            to,
            value: eth(1),
            input: Bytes::new(),
        }),
        Tx::Eip2930(TxEip2930 {
            chain_id: 1,
            nonce: 1,
            gas_price: 20_000_000_000,
            gas_limit: 30_000,
            to,
            value: eth(1),
            access_list: alloy::eips::eip2930::AccessList(vec![
                alloy::eips::eip2930::AccessListItem {
                    address: USDC,
                    storage_keys: vec![B256::repeat_byte(1)],
                },
            ]),
            input: Bytes::new(),
        }),
        eip1559(BOB, eth(1), vec![]),
        Tx::Eip4844(TxEip4844 {
            chain_id: 1,
            nonce: 1,
            gas_limit: 21_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
            to: BOB,
            value: eth(1),
            blob_versioned_hashes: vec![versioned_hash()],
            max_fee_per_blob_gas: 1,
            ..Default::default()
        }),
        Tx::Eip7702(TxEip7702 {
            chain_id: 1,
            nonce: 1,
            gas_limit: 60_000,
            max_fee_per_gas: 10,
            max_priority_fee_per_gas: 1,
            to: wallet(),
            value: U256::ZERO,
            authorization_list: vec![auth(UNKNOWN)],
            ..Default::default()
        }),
    ]
}

// ---------------------------------------------------------------- transaction types

#[test]
fn every_type_unsigned_digest_is_keccak_of_type_and_rlp_fields() {
    for (ty, tx) in all_types().into_iter().enumerate() {
        let raw = unsigned(&tx);
        let facts = decode_tx(&raw).unwrap();
        let bytes = ::hex::decode(raw.trim_start_matches("0x")).unwrap();
        assert_eq!(facts.digest, keccak256(&bytes), "type {ty}");
        assert_eq!(facts.digest, tx.signature_hash(), "type {ty}");
        assert_eq!(facts.decoded.tx_type, Some(ty as i64));
        assert_eq!(facts.signer, None);
        assert_eq!(facts.decoded.chain_id, 1);
    }
}

#[test]
fn every_type_signed_by_the_wallet_recovers_it() {
    for (ty, tx) in all_types().into_iter().enumerate() {
        let facts = decode_tx(&signed(&tx)).unwrap();
        assert_eq!(facts.signer, Some(wallet()), "type {ty}");
        assert_eq!(facts.digest, tx.signature_hash(), "type {ty}");
        assert_eq!(facts.decoded.tx_type, Some(ty as i64));
    }
}

#[test]
fn decoder_layer_reports_sender_and_hashes() {
    let tx = eip1559(BOB, eth(1), vec![]);
    let (bytes, _) = sign_with(&key(), &tx);
    let out = decode_signed_transaction(&bytes).unwrap();
    assert_eq!(out.sender, wallet());
    assert_eq!(out.hash, keccak256(&bytes));
    assert_eq!(out.signing_hash, tx.signature_hash());
    assert_eq!((out.tx_type, out.chain_id), (2, Some(1)));
    assert!(conformance_check(&bytes, Fork::Cancun).is_ok());
    assert!(matches!(
        conformance_check(&bytes, Fork::Berlin),
        Err(Error::UnsupportedTxType(2))
    ));
    let unsigned_bytes = ::hex::decode(unsigned(&tx).trim_start_matches("0x")).unwrap();
    assert!(decode_signed_transaction(&unsigned_bytes).is_err());
}

// ---------------------------------------------------------------- actions

#[test]
fn native_transfer() {
    let f = decode_tx(&unsigned(&eip1559(BOB, eth(2), vec![]))).unwrap();
    assert_eq!(f.action, Action::NativeTransfer);
    assert_eq!(f.decoded.to, Some(BOB));
    assert_eq!(f.decoded.value, Some(Amount::from_base_units(eth(2), 18)));
    assert_eq!(f.decoded.value.as_ref().unwrap().scaled, 2_000_000_000);
    assert_eq!(f.decoded.selector.as_deref(), Some(""));
    assert_eq!(
        (f.decoded.data_len, f.decoded.gas_limit),
        (Some(0), Some(90_000))
    );
    assert!(f.decoded.token.is_none() && f.decoded.nft.is_none() && f.decoded.call.is_none());
}

#[test]
fn erc20_transfer_of_a_known_token() {
    let data = Token::transferCall {
        to: BOB,
        amount: U256::from(250_000_000u64),
    }
    .abi_encode();
    let f = call(USDC, data);
    assert_eq!(f.action, Action::Erc20Transfer);
    assert_eq!(f.decoded.selector.as_deref(), Some("0xa9059cbb"));
    let t = f.decoded.token.unwrap();
    assert_eq!((t.contract, t.counterparty), (USDC, BOB));
    assert_eq!(
        (t.standard.as_str(), t.symbol.as_str(), t.known),
        ("erc20", "USDC", true)
    );
    assert_eq!(
        (t.decimals, t.amount.scaled, t.unlimited),
        (6, 250_000_000_000, false)
    );
    assert_eq!(t.amount.raw, "250000000");
}

#[test]
fn erc20_transfer_of_an_unknown_token_reads_zero_decimals() {
    let data = Token::transferCall {
        to: BOB,
        amount: U256::from(5u8),
    }
    .abi_encode();
    let f = call(UNKNOWN, data);
    assert_eq!(f.action, Action::Erc20Transfer);
    let t = f.decoded.token.unwrap();
    assert_eq!(
        (t.standard.as_str(), t.symbol.as_str(), t.known),
        ("unknown", "", false)
    );
    assert_eq!((t.decimals, t.amount.scaled), (0, 5_000_000_000));
}

#[test]
fn transfer_from_follows_the_registry_standard() {
    let data = Token::transferFromCall {
        from: wallet(),
        to: BOB,
        amount: U256::from(7u8),
    }
    .abi_encode();
    let erc20 = call(DAI, data.clone());
    assert_eq!(erc20.action, Action::Erc20Transfer);
    assert_eq!(erc20.decoded.token.unwrap().counterparty, BOB);
    let nft = call(BAYC, data.clone());
    assert_eq!(nft.action, Action::NftTransfer);
    let n = nft.decoded.nft.unwrap();
    assert_eq!(
        (n.standard.as_str(), n.token_id.as_str(), n.counterparty),
        ("erc721", "7", BOB)
    );
    assert!(n.approved && nft.decoded.token.is_none());
    let unknown = call(UNKNOWN, data);
    assert_eq!(unknown.action, Action::Erc20Transfer);
    assert_eq!(unknown.decoded.token.unwrap().standard, "unknown");
}

#[test]
fn erc20_approvals_and_the_unlimited_threshold() {
    let approve = |amount| {
        call(
            USDC,
            Token::approveCall {
                spender: BOB,
                amount,
            }
            .abi_encode(),
        )
    };
    let limited = approve(U256::from(1_000_000u64));
    assert_eq!(limited.action, Action::Erc20Approve);
    let t = limited.decoded.token.unwrap();
    assert_eq!(
        (t.counterparty, t.unlimited, t.amount.scaled),
        (BOB, false, 1_000_000_000)
    );
    assert!(approve(U256::MAX).decoded.token.unwrap().unlimited);
    assert!(
        approve(U256::from(1u8) << 255)
            .decoded
            .token
            .unwrap()
            .unlimited
    );
    assert!(
        !approve((U256::from(1u8) << 255) - U256::from(1u8))
            .decoded
            .token
            .unwrap()
            .unlimited
    );
    let inc = call(
        USDC,
        Token::increaseAllowanceCall {
            spender: BOB,
            addedValue: U256::MAX,
        }
        .abi_encode(),
    );
    assert_eq!(inc.action, Action::Erc20Approve);
    assert!(inc.decoded.token.unwrap().unlimited);
}

#[test]
fn erc721_single_approve_is_a_contract_call_with_nft_facts() {
    let f = call(
        BAYC,
        Token::approveCall {
            spender: BOB,
            amount: U256::from(42u8),
        }
        .abi_encode(),
    );
    assert_eq!(f.action, Action::ContractCall);
    let n = f.decoded.nft.unwrap();
    assert_eq!(
        (n.token_id.as_str(), n.counterparty, n.approved),
        ("42", BOB, true)
    );
}

#[test]
fn nft_transfers_of_every_form() {
    let id = U256::from(9u8);
    let forms = [
        (
            BAYC,
            Nft721::safeTransferFromCall {
                from: wallet(),
                to: BOB,
                tokenId: id,
            }
            .abi_encode(),
            "9",
        ),
        (
            BAYC,
            Nft721Data::safeTransferFromCall {
                from: wallet(),
                to: BOB,
                tokenId: id,
                data: Bytes::from(vec![1, 2, 3]),
            }
            .abi_encode(),
            "9",
        ),
        (
            OPENSTORE,
            Nft1155::safeTransferFromCall {
                from: wallet(),
                to: BOB,
                id,
                amount: U256::from(3u8),
                data: Bytes::new(),
            }
            .abi_encode(),
            "9",
        ),
        (
            OPENSTORE,
            Nft1155::safeBatchTransferFromCall {
                from: wallet(),
                to: BOB,
                ids: vec![id, U256::from(10u8)],
                amounts: vec![U256::from(1u8), U256::from(1u8)],
                data: Bytes::new(),
            }
            .abi_encode(),
            "9,10",
        ),
    ];
    for (contract, data, ids) in forms {
        let f = call(contract, data);
        assert_eq!(f.action, Action::NftTransfer);
        let n = f.decoded.nft.unwrap();
        assert_eq!(
            (n.contract, n.counterparty, n.token_id.as_str()),
            (contract, BOB, ids)
        );
    }
    // Unknown contract: the selector is NFT-only, the standard stays "unknown".
    let f = call(
        UNKNOWN,
        Nft721::safeTransferFromCall {
            from: wallet(),
            to: BOB,
            tokenId: id,
        }
        .abi_encode(),
    );
    assert_eq!(f.decoded.nft.unwrap().standard, "unknown");
}

#[test]
fn nft_approve_all_grant_and_revoke() {
    let grant = call(
        BAYC,
        Token::setApprovalForAllCall {
            operator: BOB,
            approved: true,
        }
        .abi_encode(),
    );
    assert_eq!(grant.action, Action::NftApproveAll);
    assert!(grant.decoded.nft.as_ref().unwrap().approved);
    assert_eq!(grant.decoded.nft.unwrap().counterparty, BOB);
    let revoke = call(
        BAYC,
        Token::setApprovalForAllCall {
            operator: BOB,
            approved: false,
        }
        .abi_encode(),
    );
    assert_eq!(revoke.action, Action::NftApproveAll);
    assert!(!revoke.decoded.nft.unwrap().approved);
}

#[test]
fn contract_call_named_only_by_an_abi_bound_to_that_address() {
    let data = Router::swapExactTokensForTokensCall {
        amountIn: U256::from(1u8),
        amountOutMin: U256::ZERO,
        path: vec![USDC, WETH],
        to: wallet(),
        deadline: U256::from(2_000_000_000u64),
    }
    .abi_encode();
    let f = call(ROUTER, data.clone());
    assert_eq!(f.action, Action::ContractCall);
    assert_eq!(f.decoded.selector.as_deref(), Some("0x38ed1739"));
    assert_eq!(f.decoded.call.unwrap().function, "swapExactTokensForTokens");
    let elsewhere = call(UNKNOWN, data.clone());
    assert_eq!(elsewhere.action, Action::ContractCall);
    assert!(elsewhere.decoded.call.is_none());
    // Same address on another chain is another contract.
    let mut tx = eip1559(ROUTER, U256::ZERO, data);
    if let Tx::Eip1559(t) = &mut tx {
        t.chain_id = 10;
    }
    let f = decode(
        Payload::Transaction(&unsigned(&tx)),
        10,
        wallet(),
        &registry(),
    )
    .unwrap();
    assert!(f.decoded.call.is_none());

    let deposit = decode_tx(&unsigned(&eip1559(
        WETH,
        eth(1),
        Weth::depositCall {}.abi_encode(),
    )))
    .unwrap();
    assert_eq!(deposit.decoded.call.unwrap().function, "deposit");
    // A bound ABI names ERC-20 calls too, next to the token facts.
    let t = call(
        WETH,
        Token::transferCall {
            to: BOB,
            amount: eth(1),
        }
        .abi_encode(),
    );
    assert_eq!(
        (t.action, t.decoded.call.unwrap().function.as_str()),
        (Action::Erc20Transfer, "transfer")
    );
}

#[test]
fn short_calldata_reads_as_the_evm_does() {
    // Three bytes: no selector, a contract call.
    let f = call(USDC, vec![0xa9, 0x05, 0x9c]);
    assert_eq!(
        (f.action, f.decoded.selector.as_deref()),
        (Action::ContractCall, Some("0xa9059c"))
    );
    // A transfer whose amount is cut short still transfers (old tokens read zeros past the end).
    let mut data = Token::transferCall {
        to: BOB,
        amount: U256::from(0x0102u16),
    }
    .abi_encode();
    data.truncate(data.len() - 1);
    let f = call(USDC, data);
    assert_eq!(f.action, Action::Erc20Transfer);
    // 0x…0102 loses its last byte and is read back padded: 0x…0100.
    assert_eq!(f.decoded.token.unwrap().amount.raw, "256");
    // Dynamic arguments that do not decode are refused rather than guessed.
    let bad = [
        Nft1155::safeBatchTransferFromCall::SELECTOR.as_slice(),
        &[0xff; 40],
    ]
    .concat();
    let raw = unsigned(&eip1559(OPENSTORE, U256::ZERO, bad));
    assert_eq!(decode_tx(&raw).unwrap_err().code(), "invalid_transaction");
}

#[test]
fn contract_deploy() {
    let tx = Tx::Eip1559(TxEip1559 {
        chain_id: 1,
        gas_limit: 100_000,
        max_fee_per_gas: 1,
        to: TxKind::Create,
        input: Bytes::from(vec![0x60, 0x00]),
        ..Default::default()
    });
    let f = decode_tx(&unsigned(&tx)).unwrap();
    assert_eq!(f.action, Action::ContractDeploy);
    assert_eq!(f.decoded.to, None);
    assert_eq!(f.decoded.selector.as_deref(), Some("0x6000"));
}

#[test]
fn set_code_lists_its_delegates() {
    let tx = Tx::Eip7702(TxEip7702 {
        chain_id: 1,
        gas_limit: 80_000,
        max_fee_per_gas: 10,
        to: wallet(),
        authorization_list: vec![auth(UNKNOWN), auth(BOB)],
        ..Default::default()
    });
    let f = decode_tx(&unsigned(&tx)).unwrap();
    assert_eq!(f.action, Action::SetCode);
    assert_eq!(f.decoded.delegates, Some(vec![UNKNOWN, BOB]));
    assert_eq!(f.decoded.tx_type, Some(4));
}

// ---------------------------------------------------------------- error codes

fn code(r: Result<Facts>) -> &'static str {
    r.unwrap_err().code()
}

#[test]
fn raw_transaction_error_codes() {
    assert_eq!(code(decode_tx("0xzz")), "invalid_hex");
    assert_eq!(code(decode_tx("02f8")), "invalid_hex");
    assert_eq!(code(decode_tx("0x05c0")), "unsupported_transaction_type");
    let good = unsigned(&eip1559(BOB, eth(1), vec![]));
    assert_eq!(code(decode_tx(&format!("{good}00"))), "invalid_transaction");
    assert_eq!(
        code(decode_tx(&good[..good.len() - 2])),
        "invalid_transaction"
    );

    let other_chain = decode(Payload::Transaction(&good), 10, wallet(), &registry());
    assert!(matches!(
        other_chain,
        Err(Error::ChainMismatch {
            expected: 10,
            got: 1
        })
    ));

    let pre155 = Tx::Legacy(TxLegacy {
        chain_id: None,
        gas_limit: 21_000,
        to: TxKind::Call(BOB),
        ..Default::default()
    });
    assert_eq!(
        code(decode_tx(&unsigned(&pre155))),
        "replayable_transaction"
    );
    assert_eq!(code(decode_tx(&signed(&pre155))), "replayable_transaction");

    let tx = eip1559(BOB, eth(1), vec![]);
    let (bytes, sig) = sign_with(&key(), &tx);
    let n = U256::from_be_bytes(
        b256!("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141").0,
    );
    let high = Signature::new(sig.r(), n - sig.s(), !sig.v());
    assert_eq!(
        high.recover_address_from_prehash(&tx.signature_hash())
            .unwrap(),
        wallet()
    );
    let mut malleated = Vec::new();
    tx.eip2718_encode(&high, &mut malleated);
    assert_ne!(malleated, bytes);
    assert_eq!(
        code(decode_tx(&format!("0x{}", ::hex::encode(malleated)))),
        "high_s_signature"
    );

    let (theirs, _) = sign_with(&other_key(), &tx);
    let r = decode_tx(&format!("0x{}", ::hex::encode(theirs)));
    assert!(matches!(r, Err(Error::SenderMismatch { .. })), "{r:?}");

    let too_big = decode(Payload::Transaction(&good), 1 << 63, wallet(), &registry());
    assert_eq!(code(too_big), "invalid_request");
}

#[test]
fn structurally_invalid_transactions_are_refused() {
    let mut tx = eip1559(BOB, eth(1), vec![]);
    if let Tx::Eip1559(t) = &mut tx {
        t.max_priority_fee_per_gas = t.max_fee_per_gas + 1;
    }
    assert_eq!(code(decode_tx(&unsigned(&tx))), "invalid_transaction");
    let empty_auth = Tx::Eip7702(TxEip7702 {
        chain_id: 1,
        gas_limit: 50_000,
        to: BOB,
        ..Default::default()
    });
    assert_eq!(
        code(decode_tx(&unsigned(&empty_auth))),
        "invalid_transaction"
    );
    let no_blobs = Tx::Eip4844(TxEip4844 {
        chain_id: 1,
        gas_limit: 21_000,
        to: BOB,
        ..Default::default()
    });
    assert_eq!(code(decode_tx(&unsigned(&no_blobs))), "invalid_transaction");
}

#[test]
fn blob_network_form_is_refused() {
    use alloy::consensus::TxEip4844WithSidecar;
    use alloy::eips::eip4844::BlobTransactionSidecar;
    let Tx::Eip4844(inner) = all_types().remove(3) else {
        unreachable!()
    };
    let with_sidecar = TxEip4844WithSidecar::from_tx_and_sidecar(
        inner,
        BlobTransactionSidecar {
            blobs: vec![],
            commitments: vec![],
            proofs: vec![],
        },
    );
    let sig = Signature::new(U256::from(1u8), U256::from(1u8), false);
    let mut out = Vec::new();
    with_sidecar.eip2718_encode(&sig, &mut out);
    let err = decode_tx(&format!("0x{}", ::hex::encode(out))).unwrap_err();
    assert_eq!(err.code(), "invalid_transaction");
    assert!(err.to_string().contains("sidecar"), "{err}");
}

// ---------------------------------------------------------------- messages and hashes

#[test]
fn personal_sign_text_and_bytes() {
    let r = registry();
    let f = decode(Payload::Message("hello"), 1, wallet(), &r).unwrap();
    assert_eq!(f.action, Action::PersonalSign);
    assert_eq!(f.digest, alloy::primitives::eip191_hash_message("hello"));
    assert_eq!(f.decoded.message.as_ref().unwrap().encoding, "utf8");
    assert!(f.decoded.tx_type.is_none() && f.decoded.value.is_none());
    let b = decode(Payload::MessageBytes("0x68656c6c6f"), 1, wallet(), &r).unwrap();
    assert_eq!(b.digest, f.digest);
    assert_eq!(b.decoded.message.unwrap().encoding, "bytes");
    assert_eq!(
        code(decode(Payload::MessageBytes("hello"), 1, wallet(), &r)),
        "invalid_message"
    );
}

#[test]
fn raw_hash_is_signed_as_given() {
    let h = format!("0x{}", "ab".repeat(32));
    let f = decode(Payload::Hash(&h), 1, wallet(), &registry()).unwrap();
    assert_eq!(
        (f.action, f.digest),
        (Action::RawHash, B256::repeat_byte(0xab))
    );
    assert_eq!(
        code(decode(Payload::Hash("0xab"), 1, wallet(), &registry())),
        "invalid_hex"
    );
}

// ---------------------------------------------------------------- transaction_request

fn request(v: &Value) -> Result<Facts> {
    decode(Payload::TransactionRequest(v), 1, wallet(), &registry())
}

fn usdc_transfer_request(to: &str) -> Value {
    let data = Token::transferCall {
        to: BOB,
        amount: U256::from(1_000_000u64),
    }
    .abi_encode();
    json!({
        "type": "0x2", "chainId": 1, "nonce": "0x3", "gas": "90000",
        "maxFeePerGas": "30000000000", "maxPriorityFeePerGas": "0x3b9aca00",
        "to": to, "value": "0x0", "data": format!("0x{}", ::hex::encode(data)),
    })
}

#[test]
fn transaction_request_builds_the_exact_unsigned_transaction() {
    let f = request(&usdc_transfer_request(
        "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
    ))
    .unwrap();
    let data = Token::transferCall {
        to: BOB,
        amount: U256::from(1_000_000u64),
    }
    .abi_encode();
    let expected = eip1559(USDC, U256::ZERO, data);
    assert_eq!(f.digest, expected.signature_hash());
    assert_eq!(f.action, Action::Erc20Transfer);
    assert_eq!(f.decoded.token.unwrap().symbol, "USDC");
}

#[test]
fn address_casing_does_not_change_facts() {
    let lower = request(&usdc_transfer_request(
        "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
    ))
    .unwrap();
    let upper = request(&usdc_transfer_request(
        "0xA0B86991C6218B36C1D19D4A2E9EB0CE3606EB48",
    ))
    .unwrap();
    let mixed = request(&usdc_transfer_request(
        "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
    ))
    .unwrap();
    assert_eq!(lower, upper);
    assert_eq!(lower, mixed);
}

#[test]
fn transaction_request_names_every_missing_field() {
    let r = request(&json!({"type": 2, "to": null}));
    let Err(Error::IncompleteTransaction { missing }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        missing,
        [
            "chainId",
            "nonce",
            "gas",
            "value",
            "data",
            "maxFeePerGas",
            "maxPriorityFeePerGas"
        ]
    );
    let Err(Error::IncompleteTransaction { missing }) = request(&json!({})) else {
        panic!()
    };
    assert_eq!(
        missing,
        ["type", "chainId", "nonce", "gas", "to", "value", "data"]
    );
    let mut blob = usdc_transfer_request("0x1111111111111111111111111111111111111111");
    blob["type"] = json!(3);
    let Err(Error::IncompleteTransaction { missing }) = request(&blob) else {
        panic!()
    };
    assert_eq!(missing, ["maxFeePerBlobGas", "blobVersionedHashes"]);
    let legacy = json!({"type": 0, "chainId": 1, "nonce": 0, "gas": 21000, "to": null, "value": 0, "data": "0x"});
    let Err(Error::IncompleteTransaction { missing }) = request(&legacy) else {
        panic!()
    };
    assert_eq!(missing, ["gasPrice"]);
}

#[test]
fn transaction_request_is_strict() {
    let base = usdc_transfer_request("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
    let with = |k: &str, v: Value| {
        let mut x = base.clone();
        x[k] = v;
        request(&x)
    };
    assert_eq!(code(with("gasPrice", json!(1))), "invalid_request");
    assert_eq!(code(with("nonce", json!(1.5))), "invalid_request");
    assert_eq!(code(with("nonce", json!(-1))), "invalid_request");
    assert_eq!(code(with("nonce", json!("1e3"))), "invalid_request");
    assert_eq!(code(with("gasLimit", json!(1))), "invalid_request");
    assert!(with("gasLimit", json!("0x15f90")).is_ok());
    assert_eq!(code(with("input", json!("0x00"))), "invalid_request");
    assert_eq!(code(with("bogus", json!(1))), "invalid_request");
    assert_eq!(code(with("to", json!("0x1234"))), "invalid_address");
    assert_eq!(code(with("data", json!("0x123"))), "invalid_hex");
    assert_eq!(code(with("type", json!(7))), "unsupported_transaction_type");
    assert!(matches!(
        with("chainId", json!(10)),
        Err(Error::ChainMismatch {
            expected: 1,
            got: 10
        })
    ));
    assert!(matches!(
        with("from", json!(format!("{BOB}"))),
        Err(Error::SenderMismatch { .. })
    ));
    assert!(
        with(
            "from",
            json!(wallet().to_string().to_uppercase().replace("0X", "0x"))
        )
        .is_ok()
    );
    let deploy = with("to", Value::Null).unwrap();
    assert_eq!(deploy.action, Action::ContractDeploy);
    assert_eq!(code(request(&json!("not an object"))), "invalid_request");
}

#[test]
fn transaction_request_for_every_type_matches_the_raw_form() {
    let hashes = json!([format!("{}", versioned_hash())]);
    let cases = [
        json!({"type": 0, "chainId": 1, "nonce": 1, "gasPrice": "20000000000", "gas": 21000,
               "to": format!("{BOB}"), "value": eth(1).to_string(), "data": "0x"}),
        json!({"type": "0x1", "chainId": 1, "nonce": 1, "gasPrice": "20000000000", "gas": 30000,
               "to": format!("{BOB}"), "value": eth(1).to_string(), "input": "0x",
               "accessList": [{"address": format!("{USDC}"), "storageKeys": [format!("{}", B256::repeat_byte(1))]}]}),
        json!({"type": 2, "chainId": 1, "nonce": 3, "gas": 90000, "maxFeePerGas": 30000000000u64,
               "maxPriorityFeePerGas": 1000000000, "to": format!("{BOB}"), "value": eth(1).to_string(),
               "data": "0x", "accessList": []}),
        json!({"type": 3, "chainId": 1, "nonce": 1, "gas": 21000, "maxFeePerGas": 10,
               "maxPriorityFeePerGas": 1, "to": format!("{BOB}"), "value": eth(1).to_string(), "data": "0x",
               "maxFeePerBlobGas": 1, "blobVersionedHashes": hashes}),
        json!({"type": 4, "chainId": 1, "nonce": 1, "gas": 60000, "maxFeePerGas": 10,
               "maxPriorityFeePerGas": 1, "to": format!("{}", wallet()), "value": 0, "data": "0x",
               "authorizationList": [{"chainId": 1, "address": format!("{UNKNOWN}"), "nonce": 0,
                                      "yParity": 0, "r": "0x1", "s": "0x1"}]}),
    ];
    for (ty, (req, tx)) in cases.iter().zip(all_types()).enumerate() {
        let f = request(req).unwrap_or_else(|e| panic!("type {ty}: {e}"));
        assert_eq!(f.digest, tx.signature_hash(), "type {ty}");
        assert_eq!(f.decoded.tx_type, Some(ty as i64));
    }
}

// ---------------------------------------------------------------- typed data

fn typed(v: &Value) -> Result<Facts> {
    decode(Payload::TypedData(v), 1, wallet(), &registry())
}

fn mail() -> Value {
    json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"}
            ],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [
                {"name": "from", "type": "Person"},
                {"name": "to", "type": "Person"},
                {"name": "contents", "type": "string"}
            ]
        },
        "primaryType": "Mail",
        "domain": {
            "name": "Ether Mail", "version": "1", "chainId": 1,
            "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
        },
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!"
        }
    })
}

/// The EIP-712 specification's own example.
const MAIL_DIGEST: B256 = b256!("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2");

#[test]
fn typed_data_matches_the_eip712_example() {
    let f = typed(&mail()).unwrap();
    assert_eq!(f.action, Action::TypedData);
    assert_eq!(f.digest, MAIL_DIGEST);
    let t = f.decoded.typed_data.unwrap();
    assert_eq!(
        (t.primary_type.as_str(), t.domain_name.as_str()),
        ("Mail", "Ether Mail")
    );
    assert_eq!(t.domain_chain_id, Some(1));
    assert_eq!(
        t.verifying_contract,
        Some(address!("cccccccccccccccccccccccccccccccccccccccc"))
    );
    // A JSON string holding the object is the same request.
    let s = Value::String(mail().to_string());
    assert_eq!(typed(&s).unwrap().digest, MAIL_DIGEST);
}

alloy::sol! {
    struct Person { string name; address wallet; }
    struct Mail { Person from; Person to; string contents; }
    #[allow(non_camel_case_types)]
    struct EIP712Domain { string name; uint256 chainId; string version; bytes32 appId; address verifyingContract; }
}

#[test]
fn custom_domain_fields_are_hashed_in_declared_order() {
    let mut v = mail();
    v["types"]["EIP712Domain"] = json!([
        {"name": "name", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "version", "type": "string"},
        {"name": "appId", "type": "bytes32"},
        {"name": "verifyingContract", "type": "address"}
    ]);
    v["domain"]["appId"] = json!(format!("{}", B256::repeat_byte(7)));
    let domain = EIP712Domain {
        name: "Ether Mail".into(),
        chainId: U256::from(1u8),
        version: "1".into(),
        appId: B256::repeat_byte(7),
        verifyingContract: address!("cccccccccccccccccccccccccccccccccccccccc"),
    };
    let message = Mail {
        from: Person {
            name: "Cow".into(),
            wallet: address!("cd2a3d9f938e13cd947ec05abc7fe734df8dd826"),
        },
        to: Person {
            name: "Bob".into(),
            wallet: address!("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        },
        contents: "Hello, Bob!".into(),
    };
    let expected = keccak256(
        [
            &[0x19u8, 0x01][..],
            domain.eip712_hash_struct().as_slice(),
            message.eip712_hash_struct().as_slice(),
        ]
        .concat(),
    );
    let f = typed(&v).unwrap();
    assert_eq!(f.digest, expected);
    // The same digest from eth-account's hash_struct (Python), computed outside this crate.
    assert_eq!(
        f.digest,
        b256!("b567ac5d9d216970587e4ae4b6b301eafb6afe95cc198b8b3328ea3662fbde33")
    );
    // alloy's TypedData drops appId and reorders the domain: a different digest, never used.
    let lossy: alloy::dyn_abi::TypedData = serde_json::from_value(v).unwrap();
    assert_ne!(lossy.eip712_signing_hash().unwrap(), expected);
}

#[test]
fn domain_only_signs_the_separator() {
    let mut v = mail();
    v["primaryType"] = json!("EIP712Domain");
    v.as_object_mut().unwrap().remove("message");
    let sep = b256!("f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f");
    let f = typed(&v).unwrap();
    assert_eq!(
        f.digest,
        keccak256([&[0x19u8, 0x01][..], sep.as_slice()].concat())
    );
    v["message"] = json!({"contents": "shown but not signed"});
    assert_eq!(code(typed(&v)), "invalid_typed_data");
}

#[test]
fn domain_rules() {
    let mut missing = mail();
    missing["domain"].as_object_mut().unwrap().remove("version");
    assert_eq!(code(typed(&missing)), "invalid_typed_data");
    let mut undeclared = mail();
    undeclared["domain"]["salt"] = json!(format!("{}", B256::ZERO));
    assert_eq!(code(typed(&undeclared)), "invalid_typed_data");
    let mut chain = mail();
    chain["domain"]["chainId"] = json!(10);
    assert!(matches!(
        typed(&chain),
        Err(Error::ChainMismatch {
            expected: 1,
            got: 10
        })
    ));
    let mut no_domain_type = mail();
    no_domain_type["types"]
        .as_object_mut()
        .unwrap()
        .remove("EIP712Domain");
    assert_eq!(code(typed(&no_domain_type)), "invalid_typed_data");
    let mut extra = mail();
    extra["extra"] = json!(1);
    assert_eq!(code(typed(&extra)), "invalid_typed_data");
    // Casing of the verifying contract does not matter.
    let mut lower = mail();
    lower["domain"]["verifyingContract"] = json!("0xcccccccccccccccccccccccccccccccccccccccc");
    assert_eq!(typed(&lower).unwrap(), typed(&mail()).unwrap());
}

fn one_field(ty: &str, value: Value) -> Value {
    json!({
        "types": {
            "EIP712Domain": [{"name": "chainId", "type": "uint256"}],
            "T": [{"name": "v", "type": ty}]
        },
        "primaryType": "T",
        "domain": {"chainId": "0x1"},
        "message": {"v": value}
    })
}

#[test]
fn values_are_strict() {
    let ok = [
        ("bool", json!(true)),
        ("uint8", json!(255)),
        ("uint8", json!("255")),
        ("uint8", json!("0xff")),
        (
            "uint256",
            json!("115792089237316195423570985008687907853269984665640564039457584007913129639935"),
        ),
        ("int8", json!(-128)),
        ("int8", json!("-128")),
        ("int8", json!(127)),
        (
            "int256",
            json!("-57896044618658097711785492504343953926634992332820282019728792003956564819968"),
        ),
        ("bytes4", json!("0x01020304")),
        ("bytes", json!("0x")),
        (
            "address",
            json!("0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"),
        ),
        ("string", json!("x")),
        ("uint8[2]", json!([1, 2])),
        ("uint8[]", json!([])),
    ];
    for (ty, v) in ok {
        assert!(typed(&one_field(ty, v.clone())).is_ok(), "{ty} {v}");
    }
    let bad = [
        ("bool", json!("true")),
        ("bool", json!(1)),
        ("uint8", json!(256)),
        ("uint8", json!(-1)),
        ("uint8", json!(1.0)),
        ("uint256", json!(1e20)),
        ("uint8", json!("")),
        ("uint8", json!("0x")),
        ("uint8", json!("1e2")),
        ("uint8", json!(" 1")),
        ("int8", json!(-129)),
        ("int8", json!(128)),
        ("int8", json!("-0x1")),
        ("bytes4", json!("0x010203")),
        ("bytes4", json!("0x0102030405")),
        ("bytes", json!([1, 2])),
        ("bytes", json!("0x123")),
        ("bytes", json!("hello")),
        ("address", json!("0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD8")),
        (
            "address",
            json!("0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD82600"),
        ),
        ("string", json!(1)),
        ("uint8[2]", json!([1])),
        ("uint8[]", json!("0x")),
        ("function", json!("0x")),
        ("fixed128x18", json!(1)),
        ("Missing", json!({})),
    ];
    for (ty, v) in bad {
        assert_eq!(
            code(typed(&one_field(ty, v.clone()))),
            "invalid_typed_data",
            "{ty} {v}"
        );
    }
}

#[test]
fn struct_fields_are_exact() {
    let mut extra = mail();
    extra["message"]["from"]["age"] = json!(3);
    assert_eq!(code(typed(&extra)), "invalid_typed_data");
    let mut missing = mail();
    missing["message"]
        .as_object_mut()
        .unwrap()
        .remove("contents");
    assert_eq!(code(typed(&missing)), "invalid_typed_data");
    let mut dup = mail();
    dup["types"]["Person"] =
        json!([{"name": "name", "type": "string"}, {"name": "name", "type": "string"}]);
    assert_eq!(code(typed(&dup)), "invalid_typed_data");
    let mut primary = mail();
    primary["primaryType"] = json!("Nope");
    assert_eq!(code(typed(&primary)), "invalid_typed_data");
}

#[test]
fn recursion_and_size_are_bounded() {
    let mut rec = mail();
    rec["types"]["Person"] =
        json!([{"name": "name", "type": "string"}, {"name": "friend", "type": "Person"}]);
    assert_eq!(code(typed(&rec)), "invalid_typed_data");
    let mut cycle = mail();
    cycle["types"]["A"] = json!([{"name": "b", "type": "B"}]);
    cycle["types"]["B"] = json!([{"name": "a", "type": "A[]"}]);
    assert_eq!(code(typed(&cycle)), "invalid_typed_data");
    // Eight levels of ten-fold reuse would expand to 10^8 nodes.
    let mut types = serde_json::Map::new();
    types.insert("EIP712Domain".into(), json!([]));
    for level in 0..8 {
        let fields: Vec<Value> = (0..10)
            .map(|i| json!({"name": format!("f{i}"), "type": if level == 7 { "uint8".to_owned() } else { format!("L{}", level + 1) }}))
            .collect();
        types.insert(format!("L{level}"), Value::Array(fields));
    }
    let wide = json!({"types": types, "primaryType": "L0", "domain": {}, "message": {}});
    assert_eq!(code(typed(&wide)), "invalid_typed_data");
    // A chain of 30 nested structs is small but deeper than values may nest.
    let mut types = serde_json::Map::new();
    types.insert("EIP712Domain".into(), json!([]));
    let mut message = json!(1);
    for level in (0..30).rev() {
        let ty = if level == 29 {
            "uint8".to_owned()
        } else {
            format!("D{}", level + 1)
        };
        types.insert(format!("D{level}"), json!([{"name": "x", "type": ty}]));
        message = json!({"x": message});
    }
    let deep = json!({"types": types, "primaryType": "D0", "domain": {}, "message": message});
    let err = typed(&deep).unwrap_err();
    assert!(err.to_string().contains("nested too deeply"), "{err}");
    let nine_dims = one_field(
        &format!("uint8{}", "[]".repeat(9)),
        json!([[[[[[[[[1]]]]]]]]]),
    );
    assert_eq!(code(typed(&nine_dims)), "invalid_typed_data");
    let too_many = one_field("uint8[]", Value::Array(vec![json!(1); 10_001]));
    assert!(
        typed(&too_many)
            .unwrap_err()
            .to_string()
            .contains("too many values")
    );
}

// ---------------------------------------------------------------- permits

fn permit_typed(primary: &str, types: Value, domain: Value, message: Value) -> Value {
    let mut t = types;
    t["EIP712Domain"] = json!([
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"}
    ]);
    json!({"types": t, "primaryType": primary, "domain": domain, "message": message})
}

fn eip2612(value: &str, contract: Address) -> Value {
    permit_typed(
        "Permit",
        json!({"Permit": [
            {"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
            {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"}]}),
        json!({"name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": format!("{contract}")}),
        json!({"owner": format!("{}", wallet()), "spender": format!("{BOB}"), "value": value,
               "nonce": 0, "deadline": "1800000000"}),
    )
}

#[test]
fn eip2612_permit() {
    let f = typed(&eip2612("5000000", USDC)).unwrap();
    assert_eq!(f.action, Action::Permit);
    let t = f.decoded.token.unwrap();
    assert_eq!(
        (t.contract, t.counterparty, t.symbol.as_str()),
        (USDC, BOB, "USDC")
    );
    assert_eq!(
        (t.amount.scaled, t.unlimited, t.known),
        (5_000_000_000, false, true)
    );
    assert_eq!(f.decoded.typed_data.unwrap().primary_type, "Permit");
    let max = typed(&eip2612(&U256::MAX.to_string(), USDC)).unwrap();
    assert!(max.decoded.token.unwrap().unlimited);
    let unknown = typed(&eip2612("1", UNKNOWN))
        .unwrap()
        .decoded
        .token
        .unwrap();
    assert_eq!(
        (unknown.standard.as_str(), unknown.known, unknown.decimals),
        ("unknown", false, 0)
    );
    // Without a verifying contract no token can redeem it: plain typed data.
    let mut v = eip2612("1", USDC);
    v["types"]["EIP712Domain"] =
        json!([{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"}]);
    v["domain"] = json!({"name": "USD Coin", "chainId": 1});
    assert_eq!(typed(&v).unwrap().action, Action::TypedData);
}

#[test]
fn dai_permit_allowed_is_unlimited_and_false_revokes() {
    let dai = |allowed: bool| {
        permit_typed(
            "Permit",
            json!({"Permit": [
                {"name": "holder", "type": "address"}, {"name": "spender", "type": "address"},
                {"name": "nonce", "type": "uint256"}, {"name": "expiry", "type": "uint256"},
                {"name": "allowed", "type": "bool"}]}),
            json!({"name": "Dai Stablecoin", "version": "1", "chainId": 1, "verifyingContract": format!("{DAI}")}),
            json!({"holder": format!("{}", wallet()), "spender": format!("{BOB}"), "nonce": 0,
                   "expiry": 0, "allowed": allowed}),
        )
    };
    let f = typed(&dai(true)).unwrap();
    assert_eq!(f.action, Action::Permit);
    let t = f.decoded.token.unwrap();
    assert_eq!(
        (t.symbol.as_str(), t.unlimited, t.amount.saturated),
        ("DAI", true, true)
    );
    let revoke = typed(&dai(false)).unwrap().decoded.token.unwrap();
    assert_eq!((revoke.unlimited, revoke.amount.raw.as_str()), (false, "0"));
}

fn permit2(primary: &str, extra_types: Value, message: Value) -> Value {
    let mut v = permit_typed(
        primary,
        extra_types,
        json!({"name": "Permit2", "chainId": 1, "verifyingContract": format!("{PERMIT2}")}),
        message,
    );
    v["types"]["EIP712Domain"] = json!([
        {"name": "name", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"}
    ]);
    v
}

const UINT160_MAX: &str = "1461501637330902918203684832716283019655932542975";

fn details(token: Address, amount: &str) -> Value {
    json!({"token": format!("{token}"), "amount": amount, "expiration": 0, "nonce": 0})
}

#[test]
fn permit2_allowance_permits() {
    let types = json!({
        "PermitSingle": [{"name": "details", "type": "PermitDetails"}, {"name": "spender", "type": "address"},
                         {"name": "sigDeadline", "type": "uint256"}],
        "PermitDetails": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"},
                          {"name": "expiration", "type": "uint48"}, {"name": "nonce", "type": "uint48"}]
    });
    let single = |amount: &str| {
        permit2(
            "PermitSingle",
            types.clone(),
            json!({"details": details(USDC, amount),
            "spender": format!("{BOB}"), "sigDeadline": 0}),
        )
    };
    let f = typed(&single("1000000")).unwrap();
    assert_eq!(f.action, Action::Permit);
    let t = f.decoded.token.unwrap();
    assert_eq!(
        (t.contract, t.counterparty, t.amount.scaled, t.unlimited),
        (USDC, BOB, 1_000_000_000, false)
    );
    assert!(
        typed(&single(UINT160_MAX))
            .unwrap()
            .decoded
            .token
            .unwrap()
            .unlimited
    );
    assert_eq!(
        f.decoded.typed_data.unwrap().verifying_contract,
        Some(PERMIT2)
    );

    let mut batch_types = types.clone();
    batch_types["PermitBatch"] = json!([{"name": "details", "type": "PermitDetails[]"},
        {"name": "spender", "type": "address"}, {"name": "sigDeadline", "type": "uint256"}]);
    batch_types.as_object_mut().unwrap().remove("PermitSingle");
    let batch = permit2(
        "PermitBatch",
        batch_types,
        json!({
        "details": [details(USDC, "1000000"), details(WETH, "2000000000000000000"), details(USDC, "1000000")],
        "spender": format!("{BOB}"), "sigDeadline": 0}),
    );
    let t = typed(&batch).unwrap().decoded.token.unwrap();
    // WETH: 2.0 = 2e9 nano; USDC: 1 + 1 = 2.0 = 2e9 as well; the first largest (USDC) is kept.
    assert_eq!(
        (t.symbol.as_str(), t.amount.scaled, t.known, t.unlimited),
        ("USDC", 2_000_000_000, true, false)
    );
}

#[test]
fn permit2_signature_transfers_with_and_without_witness() {
    let base = json!({
        "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}]
    });
    let fields = |permitted: &str, witness: bool| {
        let mut f = vec![
            json!({"name": "permitted", "type": permitted}),
            json!({"name": "spender", "type": "address"}),
            json!({"name": "nonce", "type": "uint256"}),
            json!({"name": "deadline", "type": "uint256"}),
        ];
        if witness {
            f.push(json!({"name": "witness", "type": "Order"}));
        }
        Value::Array(f)
    };
    let order = json!([{"name": "user", "type": "address"}]);
    let one = json!({"token": format!("{USDC}"), "amount": "3000000"});
    let many = json!([{"token": format!("{USDC}"), "amount": "3000000"}, {"token": format!("{UNKNOWN}"), "amount": UINT160_MAX}]);
    let cases = [
        ("PermitTransferFrom", "TokenPermissions", false, one.clone()),
        ("PermitWitnessTransferFrom", "TokenPermissions", true, one),
        (
            "PermitBatchTransferFrom",
            "TokenPermissions[]",
            false,
            many.clone(),
        ),
        (
            "PermitBatchWitnessTransferFrom",
            "TokenPermissions[]",
            true,
            many,
        ),
    ];
    for (primary, permitted, witness, value) in cases {
        let mut types = base.clone();
        types[primary] = fields(permitted, witness);
        let mut message =
            json!({"permitted": value, "spender": format!("{BOB}"), "nonce": 1, "deadline": 2});
        if witness {
            types["Order"] = order.clone();
            message["witness"] = json!({"user": format!("{}", wallet())});
        }
        let f =
            typed(&permit2(primary, types, message)).unwrap_or_else(|e| panic!("{primary}: {e}"));
        assert_eq!(f.action, Action::Permit, "{primary}");
        let t = f.decoded.token.unwrap();
        assert_eq!(t.counterparty, BOB);
        if permitted.ends_with("[]") {
            // The unknown token's amount (0 decimals) is the largest reading; one entry unknown.
            assert_eq!(
                (t.contract, t.known, t.unlimited),
                (UNKNOWN, false, true),
                "{primary}"
            );
        } else {
            assert_eq!(
                (t.contract, t.amount.scaled, t.unlimited),
                (USDC, 3_000_000_000, false)
            );
        }
    }
}

// ---------------------------------------------------------------- registry files

#[test]
fn shipped_registry_loads_and_uses_checksummed_addresses() {
    let r = registry();
    assert!(r.token_count() >= 20);
    assert_eq!(
        r.token(8453, address!("833589fcd6edb6e08f4c7c32d4f71b54bda02913"))
            .unwrap()
            .symbol,
        "USDC"
    );
    let tokens: Value =
        serde_json::from_str(include_str!("../../../../schemas/tokens.json")).unwrap();
    for (chain, entries) in tokens.as_object().unwrap() {
        for addr in entries.as_object().unwrap().keys() {
            let parsed: Address = addr.parse().unwrap();
            assert_eq!(
                *addr,
                parsed.to_checksum(None),
                "{chain}: {addr} is not EIP-55"
            );
        }
    }
}
