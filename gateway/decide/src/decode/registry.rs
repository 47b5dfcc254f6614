//! The token registry (`schemas/tokens.json`) and the ABIs (`schemas/abis/*.json`), parsed and
//! indexed once at policy load so that decoding a request is a few hash lookups.
//!
//! `tokens.json`: `{ "<chain_id>": { "<address>": { "symbol", "decimals", "standard" } } }`.
//!
//! An ABI file binds one contract interface to the addresses it is deployed at, per chain:
//! `{ "name": "…", "addresses": { "<chain_id>": ["0x…", …] }, "abi": [ <Solidity JSON ABI> ] }`.
//! A function name is reported only for calls to a bound address: a selector alone says nothing
//! trustworthy about what an arbitrary contract does with it (anyone can deploy a contract whose
//! `transfer` drains the caller), so matching by selector everywhere would put a reassuring
//! name on exactly the calls a policy should be suspicious of.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use alloy::dyn_abi::{DynSolType, Specifier};
use alloy::json_abi::JsonAbi;
use alloy::primitives::Address;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// Largest `decimals` accepted: keeps `10^decimals` far inside `U256` (no real token is close).
const MAX_DECIMALS: u8 = 36;

/// What the registry says a contract is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standard {
    Erc20,
    Erc721,
    Erc1155,
}

impl Standard {
    pub fn as_str(self) -> &'static str {
        match self {
            Standard::Erc20 => "erc20",
            Standard::Erc721 => "erc721",
            Standard::Erc1155 => "erc1155",
        }
    }
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub symbol: String,
    pub decimals: u8,
    pub standard: Standard,
}

/// A function of a bound ABI, with its parameter types resolved at load.
#[derive(Debug, Clone)]
pub(crate) struct BoundFunction {
    pub(crate) name: String,
    pub(crate) inputs: DynSolType,
}

/// Token registry (`schemas/tokens.json`) and ABIs (`schemas/abis/*.json`) the decoder knows.
/// Cloning is cheap: the indexes are shared.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Indexes>,
}

#[derive(Debug, Default)]
struct Indexes {
    tokens: HashMap<(u64, Address), TokenInfo>,
    functions: HashMap<(u64, Address, [u8; 4]), BoundFunction>,
    /// Which ABI file bound an address, to name both files when two claim the same one.
    bound_by: HashMap<(u64, Address), String>,
}

impl Registry {
    /// `tokens_json`: content of `schemas/tokens.json`; `abis`: (file name, JSON ABI text).
    /// Strict: unknown fields, duplicate keys, malformed addresses or an address bound by two
    /// ABI files refuse the whole set, naming the file and position.
    pub fn load(tokens_json: &str, abis: &[(String, String)]) -> Result<Registry> {
        let mut idx = Indexes::default();
        let mut problems = Vec::new();
        if let Err(e) = load_tokens(&mut idx, tokens_json) {
            problems.push(format!("tokens.json: {e}"));
        }
        for (file, text) in abis {
            if let Err(e) = load_abi(&mut idx, file, text) {
                problems.push(format!("{file}: {e}"));
            }
        }
        if problems.is_empty() {
            Ok(Registry {
                inner: Arc::new(idx),
            })
        } else {
            Err(Error::PolicySetInvalid(problems))
        }
    }

    /// The registry entry for `contract` on `chain_id`.
    pub fn token(&self, chain_id: u64, contract: Address) -> Option<&TokenInfo> {
        self.inner.tokens.get(&(chain_id, contract))
    }

    /// Number of (chain, address) token entries; for load summaries.
    pub fn token_count(&self) -> usize {
        self.inner.tokens.len()
    }

    /// Number of (chain, address) pairs bound to an ABI; for load summaries.
    pub fn bound_contract_count(&self) -> usize {
        self.inner.bound_by.len()
    }

    pub(crate) fn function(
        &self,
        chain_id: u64,
        contract: Address,
        selector: [u8; 4],
    ) -> Option<&BoundFunction> {
        self.inner.functions.get(&(chain_id, contract, selector))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    symbol: String,
    decimals: u8,
    standard: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AbiFile {
    name: String,
    addresses: UniqueMap<Vec<String>>,
    abi: JsonAbi,
}

fn load_tokens(idx: &mut Indexes, text: &str) -> std::result::Result<(), String> {
    let chains: UniqueMap<UniqueMap<TokenEntry>> = serde_json::from_str(text).map_err(at)?;
    for (chain, tokens) in chains.0 {
        let chain_id = parse_chain_id(&chain)?;
        for (addr, entry) in tokens.0 {
            let address = parse_address(&addr)?;
            let standard = match entry.standard.as_str() {
                "erc20" => Standard::Erc20,
                "erc721" => Standard::Erc721,
                "erc1155" => Standard::Erc1155,
                other => {
                    return Err(format!(
                        "{chain}/{addr}: standard {other:?} is not erc20, erc721 or erc1155"
                    ));
                }
            };
            if entry.decimals > MAX_DECIMALS {
                return Err(format!("{chain}/{addr}: decimals above {MAX_DECIMALS}"));
            }
            if entry.symbol.is_empty() || entry.symbol.len() > 32 {
                return Err(format!("{chain}/{addr}: symbol must be 1 to 32 bytes"));
            }
            let info = TokenInfo {
                symbol: entry.symbol,
                decimals: entry.decimals,
                standard,
            };
            if idx.tokens.insert((chain_id, address), info).is_some() {
                return Err(format!(
                    "{chain}/{addr}: listed twice (addresses ignore case)"
                ));
            }
        }
    }
    Ok(())
}

fn load_abi(idx: &mut Indexes, file: &str, text: &str) -> std::result::Result<(), String> {
    let parsed: AbiFile = serde_json::from_str(text).map_err(at)?;
    if parsed.name.trim().is_empty() {
        return Err("name must not be empty".to_owned());
    }
    let mut by_selector: HashMap<[u8; 4], BoundFunction> = HashMap::new();
    for function in parsed.abi.functions() {
        let selector = function.selector().0;
        let types = function
            .inputs
            .iter()
            .map(|p| p.resolve())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("function {}: {e}", function.name))?;
        let bound = BoundFunction {
            name: function.name.clone(),
            inputs: DynSolType::Tuple(types),
        };
        if by_selector.insert(selector, bound).is_some() {
            return Err(format!(
                "two functions share the selector 0x{}",
                hex::encode(selector)
            ));
        }
    }
    for (chain, addresses) in parsed.addresses.0 {
        let chain_id = parse_chain_id(&chain)?;
        for addr in addresses {
            let address = parse_address(&addr)?;
            match idx.bound_by.entry((chain_id, address)) {
                Entry::Occupied(other) => {
                    return Err(format!(
                        "{chain}/{addr} is already bound by {}",
                        other.get()
                    ));
                }
                Entry::Vacant(slot) => {
                    slot.insert(file.to_owned());
                }
            }
            for (selector, f) in &by_selector {
                idx.functions
                    .insert((chain_id, address, *selector), f.clone());
            }
        }
    }
    Ok(())
}

fn at(e: serde_json::Error) -> String {
    format!("line {} column {}: {e}", e.line(), e.column())
}

/// Chain ids are canonical decimal (no sign, no leading zero) and fit a Cedar `Long`.
fn parse_chain_id(s: &str) -> std::result::Result<u64, String> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let id = if canonical {
        s.parse::<i64>().ok()
    } else {
        None
    };
    id.and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| format!("chain id {s:?} is not a decimal number up to 2^63-1"))
}

fn parse_address(s: &str) -> std::result::Result<Address, String> {
    super::hex::address(s, "address").map_err(|_| format!("{s:?} is not a 0x address"))
}

/// A JSON object that refuses duplicate keys: a second entry for the same key would otherwise
/// silently replace the first, and the file would not mean what its reader sees.
struct UniqueMap<V>(BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V_<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(UniqueMap(out))
            }
        }
        d.deserialize_map(V_(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

    #[test]
    fn loads_tokens_in_any_casing() {
        let r = Registry::load(
            &format!(
                r#"{{"1": {{"{USDC}": {{"symbol":"USDC","decimals":6,"standard":"erc20"}}}}}}"#
            ),
            &[],
        )
        .unwrap();
        let lower: Address = USDC.to_lowercase().parse().unwrap();
        let t = r.token(1, lower).unwrap();
        assert_eq!(
            (t.symbol.as_str(), t.decimals, t.standard),
            ("USDC", 6, Standard::Erc20)
        );
        assert!(r.token(10, lower).is_none());
    }

    #[test]
    fn refuses_duplicates_unknown_fields_and_bad_values() {
        let lower = USDC.to_lowercase();
        let cases = [
            format!(
                r#"{{"1": {{"{USDC}": {{"symbol":"A","decimals":6,"standard":"erc20"}}, "{lower}": {{"symbol":"B","decimals":6,"standard":"erc20"}}}}}}"#
            ),
            format!(
                r#"{{"1": {{"{USDC}": {{"symbol":"A","decimals":6,"standard":"erc20","x":1}}}}}}"#
            ),
            format!(r#"{{"1": {{"{USDC}": {{"symbol":"A","decimals":6,"standard":"erc777"}}}}}}"#),
            format!(r#"{{"01": {{"{USDC}": {{"symbol":"A","decimals":6,"standard":"erc20"}}}}}}"#),
            r#"{"1": {"0x1234": {"symbol":"A","decimals":6,"standard":"erc20"}}}"#.to_owned(),
            format!(r#"{{"1": {{"{USDC}": {{"symbol":"A","decimals":99,"standard":"erc20"}}}}}}"#),
            r#"{"1": {}, "1": {}}"#.to_owned(),
        ];
        for c in cases {
            let e = Registry::load(&c, &[]).unwrap_err();
            assert_eq!(e.code(), "policy_set_invalid", "{c}");
        }
    }

    #[test]
    fn binds_abis_per_chain_and_address() {
        let abi = r#"{"name":"WETH9","addresses":{"1":["0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2"]},
            "abi":[{"type":"function","name":"deposit","inputs":[],"outputs":[],"stateMutability":"payable"}]}"#;
        let r = Registry::load("{}", &[("weth9.json".to_owned(), abi.to_owned())]).unwrap();
        let weth: Address = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
            .parse()
            .unwrap();
        let deposit = alloy::primitives::keccak256("deposit()");
        let sel = [deposit[0], deposit[1], deposit[2], deposit[3]];
        assert_eq!(r.function(1, weth, sel).unwrap().name, "deposit");
        assert!(r.function(10, weth, sel).is_none());
        let twice = Registry::load(
            "{}",
            &[
                ("a.json".to_owned(), abi.to_owned()),
                ("b.json".to_owned(), abi.to_owned()),
            ],
        )
        .unwrap_err();
        assert!(
            twice.to_string().contains("already bound by a.json"),
            "{twice}"
        );
    }
}
