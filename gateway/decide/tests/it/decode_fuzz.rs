//! Property tests: no input reaching the decoder panics, whatever its shape. Every entry point is
//! fed random bytes and strings, mutations of valid transactions, and random or mutated JSON for
//! `transaction_request` and `typed_data`. Case counts are bounded so the suite runs in seconds.

// Setup helpers live outside `#[test]` functions; a broken fixture should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::OnceLock;

use alloy::consensus::{SignableTransaction, TxEip1559, TxLegacy, TypedTransaction};
use alloy::primitives::{Address, Bytes, TxKind, U256};
use parapet_decide::decode::{
    Fork, Registry, conformance_check, decode, decode_signed_transaction,
};
use parapet_decide::request::Payload;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ethereum-tests/vectors.json"
);

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let abis = vec![
            (
                "uniswap_v2_router02.json".to_owned(),
                include_str!("../../../../schemas/abis/uniswap_v2_router02.json").to_owned(),
            ),
            (
                "weth9.json".to_owned(),
                include_str!("../../../../schemas/abis/weth9.json").to_owned(),
            ),
        ];
        Registry::load(include_str!("../../../../schemas/tokens.json"), &abis).unwrap()
    })
}

/// Valid raw transactions of every type: the conformance vectors (when present) plus a few
/// unsigned ones that reach the calldata readers.
fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        let transfer = [
            hex::decode("a9059cbb").unwrap(),
            [0u8; 12].to_vec(),
            [0x22u8; 20].to_vec(),
            U256::from(1_000_000u64).to_be_bytes::<32>().to_vec(),
        ]
        .concat();
        let usdc: Address = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
            .parse()
            .unwrap();
        let txs: Vec<TypedTransaction> = vec![
            TxEip1559 {
                chain_id: 1,
                nonce: 7,
                gas_limit: 120_000,
                max_fee_per_gas: 30_000_000_000,
                max_priority_fee_per_gas: 1_000_000_000,
                to: TxKind::Call(usdc),
                input: Bytes::from(transfer.clone()),
                ..Default::default()
            }
            .into(),
            TxLegacy {
                chain_id: Some(1),
                gas_price: 1,
                gas_limit: 21_000,
                to: TxKind::Call(usdc),
                input: Bytes::from(transfer),
                ..Default::default()
            }
            .into(),
        ];
        let mut out: Vec<Vec<u8>> = txs
            .iter()
            .map(|tx| {
                let mut buf = Vec::new();
                tx.encode_for_signing(&mut buf);
                buf
            })
            .collect();
        if let Ok(text) = std::fs::read_to_string(VECTORS) {
            let vectors: Vec<Value> = serde_json::from_str(&text).unwrap();
            out.extend(vectors.iter().filter(|v| v["valid"] == true).map(|v| {
                hex::decode(v["txbytes"].as_str().unwrap().trim_start_matches("0x")).unwrap()
            }));
        }
        out
    })
}

fn wallet() -> Address {
    "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
        .parse()
        .unwrap()
}

/// Runs a payload through `decode` on a few chains; only a panic can fail.
fn all_chains(payload: Payload<'_>) {
    for chain in [1u64, 10, 0, u64::MAX] {
        let _ = decode(payload, chain, wallet(), registry());
    }
}

fn bytes_everywhere(bytes: &[u8]) {
    let _ = decode_signed_transaction(bytes);
    let _ = conformance_check(bytes, Fork::Osaka);
    let _ = conformance_check(bytes, Fork::Shanghai);
    let text = format!("0x{}", hex::encode(bytes));
    all_chains(Payload::Transaction(&text));
    all_chains(Payload::MessageBytes(&text));
    all_chains(Payload::Hash(&text));
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Overwrite(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..40)
        )
            .prop_map(|(i, b)| Mutation::Overwrite(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if let Some(x) = bytes.get_mut(i % len) {
                    *x ^= b;
                }
            }
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), *b),
            Mutation::Delete(i) => {
                if !bytes.is_empty() {
                    bytes.remove(i % len);
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            Mutation::Overwrite(i, new) => {
                let at = i % len;
                for (k, b) in new.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + k) {
                        *x = *b;
                    }
                }
            }
        }
    }
    bytes
}

const KEYS: &[&str] = &[
    "types",
    "primaryType",
    "domain",
    "message",
    "EIP712Domain",
    "name",
    "type",
    "chainId",
    "verifyingContract",
    "version",
    "salt",
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
    "address",
    "storageKeys",
    "yParity",
    "r",
    "s",
    "v",
    "owner",
    "spender",
    "deadline",
    "holder",
    "allowed",
    "expiry",
    "details",
    "permitted",
    "token",
    "amount",
    "Permit",
    "PermitSingle",
    "Mail",
    "Person",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[0-9]{0,80}".prop_map(Value::String),
        "-?0x[0-9a-fA-F]{0,80}".prop_map(Value::String),
        select(vec![
            "",
            "0x",
            "true",
            "1e3",
            "-1",
            "0x0000000000000000000000000000000000000001",
            "0x000000000022D473030F116dDEE9F6B43aC78BA3",
            "uint256",
            "Person",
            "address[]",
            "bytes32",
            "uint8[2]",
            "Mail",
            "EIP712Domain",
            "string",
            "bool",
            "int8",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![select(KEYS.to_vec()).prop_map(str::to_owned), "[a-z]{1,6}"],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn mail() -> Value {
    json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}
            ],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"},
                     {"name": "contents", "type": "string"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1,
                   "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!"
        }
    })
}

fn permit2_single() -> Value {
    json!({
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                             {"name": "verifyingContract", "type": "address"}],
            "PermitSingle": [{"name": "details", "type": "PermitDetails"}, {"name": "spender", "type": "address"},
                             {"name": "sigDeadline", "type": "uint256"}],
            "PermitDetails": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"},
                              {"name": "expiration", "type": "uint48"}, {"name": "nonce", "type": "uint48"}]
        },
        "primaryType": "PermitSingle",
        "domain": {"name": "Permit2", "chainId": 1, "verifyingContract": "0x000000000022D473030F116dDEE9F6B43aC78BA3"},
        "message": {"details": {"token": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "amount": "1000000",
                                "expiration": 0, "nonce": 0},
                    "spender": "0x3333333333333333333333333333333333333333", "sigDeadline": 0}
    })
}

fn tx_request() -> Value {
    json!({"type": "0x2", "chainId": 1, "nonce": "0x3", "gas": "90000", "maxFeePerGas": "30000000000",
           "maxPriorityFeePerGas": "0x3b9aca00", "to": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
           "value": "0x0", "data": "0xa9059cbb", "accessList": []})
}

/// Every JSON pointer inside `v` (including the root, "").
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn mutate_json(mut base: Value, edits: &[(usize, Value)]) -> Value {
    for (i, replacement) in edits {
        let mut all = Vec::new();
        pointers(&base, String::new(), &mut all);
        let path = &all[i % all.len()];
        if let Some(slot) = base.pointer_mut(path) {
            *slot = replacement.clone();
        }
    }
    base
}

/// A random `types` map over a small vocabulary, so the resolver sees self-references,
/// cycles, arrays of structs and unknown names.
fn random_typed_data() -> impl Strategy<Value = Value> {
    let names = vec!["EIP712Domain", "A", "B", "Permit", "PermitBatch"];
    let field_types = vec![
        "uint256",
        "uint160",
        "int8",
        "bool",
        "address",
        "bytes",
        "bytes32",
        "string",
        "A",
        "B",
        "A[]",
        "B[2]",
        "uint8[][]",
        "Permit",
        "bytes33",
        "uint7",
        "Nope",
        "A[0]",
    ];
    let field = (
        select(vec!["a", "b", "token", "amount", "spender", "chainId"]),
        select(field_types),
    )
        .prop_map(|(n, t)| json!({"name": n, "type": t}));
    let types = proptest::collection::btree_map(
        select(names.clone()),
        proptest::collection::vec(field, 0..4),
        0..5,
    );
    (types, select(names), json_value(), json_value()).prop_map(|(types, primary, domain, message)| {
        json!({"types": types, "primaryType": primary, "domain": domain, "message": message})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        bytes_everywhere(&bytes);
    }

    #[test]
    fn mutated_transactions_never_panic(
        seed in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let seeds = seeds();
        let base = seeds[seed % seeds.len()].clone();
        bytes_everywhere(&apply(base, &mutations));
    }

    #[test]
    fn random_strings_never_panic(s in "\\PC{0,80}", h in "0[xX][0-9a-fA-F ]{0,90}") {
        for text in [&s, &h] {
            all_chains(Payload::Transaction(text));
            all_chains(Payload::Message(text));
            all_chains(Payload::MessageBytes(text));
            all_chains(Payload::Hash(text));
            all_chains(Payload::TypedData(&Value::String(text.clone())));
        }
    }

    #[test]
    fn random_json_never_panics(v in json_value()) {
        all_chains(Payload::TransactionRequest(&v));
        all_chains(Payload::TypedData(&v));
        all_chains(Payload::TypedData(&Value::String(v.to_string())));
    }

    #[test]
    fn mutated_typed_data_never_panics(
        which in 0..2usize,
        edits in proptest::collection::vec((any::<usize>(), json_value()), 1..3),
    ) {
        let base = if which == 0 { mail() } else { permit2_single() };
        let v = mutate_json(base, &edits);
        all_chains(Payload::TypedData(&v));
    }

    #[test]
    fn random_type_graphs_never_panic(v in random_typed_data()) {
        all_chains(Payload::TypedData(&v));
    }

    #[test]
    fn mutated_transaction_requests_never_panic(
        edits in proptest::collection::vec((any::<usize>(), json_value()), 1..3),
    ) {
        let v = mutate_json(tx_request(), &edits);
        all_chains(Payload::TransactionRequest(&v));
    }
}
