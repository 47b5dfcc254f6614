//! EIP-712 typed data (`eth_signTypedData_v4`): the digest the user's wallet shows, or a 4xx.
//!
//! alloy's `TypedData` keeps only the five standard domain fields and silently drops the rest, so
//! a domain with a custom field would hash differently from what a wallet signs. Here the domain
//! is treated like any other struct: `types.EIP712Domain` declares its fields, in order, and the
//! domain separator is the `hashStruct` of exactly those (alloy's `Resolver` does the encoding).
//!
//! Values are read strictly, because two readings of one JSON value would be two digests:
//! `bool` only as true/false, integers as JSON integers or decimal/0x strings within the type's
//! range (floats refused), `bytesN` exactly N bytes, `bytes` only as 0x-hex, addresses exactly 20
//! bytes, structs with exactly their declared fields (an undeclared field could be displayed by a
//! wallet without being signed). Type graphs are bounded in size and depth and may not recurse.

use std::collections::{HashMap, HashSet};

use alloy::dyn_abi::eip712::{PropertyDef, Resolver, TypeDef};
use alloy::dyn_abi::{DynSolType, DynSolValue};
use alloy::primitives::{Address, B256, I256, KECCAK256_EMPTY, Keccak256, Sign, U256, keccak256};
use serde_json::{Map, Value};

use super::hex;
use crate::error::{Error, Result};
use crate::facts::TypedDataFacts;

const DOMAIN: &str = "EIP712Domain";
const MAX_TYPES: usize = 64;
const MAX_FIELDS: usize = 64;
const MAX_NAME_LEN: usize = 128;
/// Seaport bulk orders nest `[2]` once per tree level; eight levels is 256 orders.
const MAX_ARRAY_DIMS: usize = 8;
const MAX_FIXED_ARRAY_LEN: usize = 1024;
/// Nodes of a fully expanded type tree (bounds the work of resolving shared sub-structs).
const MAX_EXPANDED_TYPE: usize = 4096;
/// Bytes of all declarations written as `encodeType` text (`Name(type field,…)` per struct): the
/// bound on any one struct's `encodeType`, hashed once per struct type. Seaport's bulk order
/// types, the largest in common use, take about 1.2 KB.
const MAX_TYPES_TEXT: usize = 16 * 1024;
/// Nesting of structs and arrays in a value.
const MAX_DEPTH: usize = 24;
/// Scalars, arrays and structs in one message and domain together. With each type hash computed
/// once ([`Hasher`]), hashing is linear in this count plus the bytes of strings and `bytes`.
const MAX_VALUES: usize = 10_000;

/// What a typed-data payload says, once hashed.
#[derive(Debug, Clone)]
pub(crate) struct TypedDataReading {
    pub(crate) digest: B256,
    pub(crate) facts: TypedDataFacts,
    /// The message as typed values; `None` when the primary type is the domain itself.
    pub(crate) message: Option<DynSolValue>,
}

/// Reads `eth_signTypedData_v4` JSON (an object, or a string holding one) for `chain_id`.
pub(crate) fn read(v: &Value, chain_id: u64) -> Result<TypedDataReading> {
    let parsed;
    let obj = match v {
        Value::Object(o) => o,
        Value::String(s) => {
            parsed =
                serde_json::from_str::<Value>(s).map_err(|e| bad(&format!("not JSON: {e}")))?;
            parsed
                .as_object()
                .ok_or_else(|| bad("expected a JSON object"))?
        }
        _ => return Err(bad("expected a JSON object or a string holding one")),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| !["types", "primaryType", "domain", "message"].contains(&k.as_str()))
    {
        return Err(bad(&format!("unknown field {k:?}")));
    }
    let types = obj
        .get("types")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("types must be an object"))?;
    let primary = obj
        .get("primaryType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("primaryType must be a string"))?;
    let domain = obj.get("domain").ok_or_else(|| bad("domain is required"))?;

    let resolver = build_resolver(types)?;
    let mut hasher = Hasher::new(&resolver);
    let mut budget = MAX_VALUES;

    let domain_ty = resolver.resolve(DOMAIN).map_err(dyn_abi)?;
    let domain_value = coerce(&domain_ty, domain, 0, &mut budget)?;
    let separator = hasher.data_word(&domain_value)?;
    let facts = domain_facts(primary, &domain_value, chain_id)?;

    let mut preimage = Vec::with_capacity(66);
    preimage.extend_from_slice(&[0x19, 0x01]);
    preimage.extend_from_slice(separator.as_slice());
    let message = if primary == DOMAIN {
        // Only the domain separator is signed; a message the wallet might show must not exist.
        match obj.get("message") {
            None => {}
            Some(Value::Object(m)) if m.is_empty() => {}
            Some(_) => return Err(bad("primaryType EIP712Domain signs no message: omit it")),
        }
        None
    } else {
        if !types.contains_key(primary) {
            return Err(bad(&format!(
                "primaryType {primary:?} is not declared in types"
            )));
        }
        let message = obj
            .get("message")
            .ok_or_else(|| bad("message is required"))?;
        let ty = resolver.resolve(primary).map_err(dyn_abi)?;
        let value = coerce(&ty, message, 0, &mut budget)?;
        let hash = hasher.data_word(&value)?;
        preimage.extend_from_slice(hash.as_slice());
        Some(value)
    };
    Ok(TypedDataReading {
        digest: keccak256(&preimage),
        facts,
        message,
    })
}

/// EIP-712 `encodeData`/`hashStruct`, the same rules as alloy's
/// [`Resolver::eip712_data_word`], with each struct's type hash computed once per payload. alloy
/// rebuilds a struct's `encodeType` (a walk over its whole type graph) for every instance, so a
/// message with many instances of a type with a large graph cost seconds; here it costs one
/// keccak per distinct struct type. `encodeType` itself still comes from alloy.
struct Hasher<'r> {
    resolver: &'r Resolver,
    type_hashes: HashMap<String, B256>,
    /// How many `encodeType`s were built: one per distinct struct type, whatever the count of
    /// instances.
    #[cfg(test)]
    encoded_types: usize,
}

impl<'r> Hasher<'r> {
    fn new(resolver: &'r Resolver) -> Self {
        Hasher {
            resolver,
            type_hashes: HashMap::new(),
            #[cfg(test)]
            encoded_types: 0,
        }
    }

    fn type_hash(&mut self, name: &str) -> Result<B256> {
        if let Some(hash) = self.type_hashes.get(name) {
            return Ok(*hash);
        }
        let hash = self.resolver.type_hash(name).map_err(dyn_abi)?;
        #[cfg(test)]
        {
            self.encoded_types += 1;
        }
        self.type_hashes.insert(name.to_owned(), hash);
        Ok(hash)
    }

    /// A value as a struct member: atomic values as their word, the rest as a keccak256.
    fn data_word(&mut self, value: &DynSolValue) -> Result<B256> {
        if let Some(word) = value.as_word() {
            return Ok(word);
        }
        Ok(match value {
            // keccak256 of nothing, a constant: empty arrays are the cheapest values to send.
            DynSolValue::Array(items) if items.is_empty() => KECCAK256_EMPTY,
            DynSolValue::Bytes(buf) if buf.is_empty() => KECCAK256_EMPTY,
            DynSolValue::String(s) if s.is_empty() => KECCAK256_EMPTY,
            DynSolValue::CustomStruct { name, tuple, .. } => {
                let mut hasher = Keccak256::new();
                hasher.update(self.type_hash(name)?);
                for v in tuple {
                    hasher.update(self.data_word(v)?);
                }
                hasher.finalize()
            }
            DynSolValue::Array(items) | DynSolValue::FixedArray(items) => {
                let mut hasher = Keccak256::new();
                for v in items {
                    hasher.update(self.data_word(v)?);
                }
                hasher.finalize()
            }
            DynSolValue::Bytes(buf) => keccak256(buf),
            DynSolValue::String(s) => keccak256(s.as_bytes()),
            // Only tuples and functions are left; `coerce` never builds either.
            _ => return Err(bad("tuple values are not part of EIP-712")),
        })
    }
}

/// The costliest shapes of typed data these limits admit, each named, for benchmarks and
/// tests: hashing costs a keccak per struct, array, string and `bytes` value plus one per 136
/// bytes hashed, so each shape maximises one of those within the value budget.
#[cfg(any(test, feature = "testing"))]
#[must_use]
pub fn costliest_admitted() -> Vec<(&'static str, Value)> {
    let shape = |types: Value, message: Value| serde_json::json!({"types": types, "primaryType": "Root", "domain": {}, "message": message});
    // Domain, Root and the array each take a value.
    let room = MAX_VALUES - 3;
    vec![
        ("wide type graph per instance", wide_type_graph()),
        (
            "one-field structs",
            shape(
                serde_json::json!({"EIP712Domain": [], "One": [{"name": "s", "type": "string"}],
                    "Root": [{"name": "v", "type": "One[]"}]}),
                serde_json::json!({"v": vec![serde_json::json!({"s": "a"}); room / 2]}),
            ),
        ),
        (
            "one-character strings",
            shape(
                serde_json::json!({"EIP712Domain": [], "Root": [{"name": "v", "type": "string[]"}]}),
                serde_json::json!({"v": vec!["a"; room]}),
            ),
        ),
        (
            "one 120 KiB bytes value",
            shape(
                serde_json::json!({"EIP712Domain": [], "Root": [{"name": "v", "type": "bytes[]"}]}),
                serde_json::json!({"v": [format!("0x{}", "ab".repeat(120 * 1024))]}),
            ),
        ),
    ]
}

/// A struct whose `encodeType` is as long as the declarations may be (a chain of wide structs
/// reached through an empty array, so each instance costs three values), repeated as often as
/// the value budget allows: before type hashes were cached, each instance re-encoded the chain.
#[cfg(any(test, feature = "testing"))]
fn wide_type_graph() -> Value {
    let mut types = Map::new();
    types.insert(DOMAIN.to_owned(), Value::Array(Vec::new()));
    let links = 52;
    for link in 0..links {
        let mut fields: Vec<Value> = (0..8)
            .map(|i| serde_json::json!({"name": format!("field_{link}_{i}_padding_padding"), "type": "uint256"}))
            .collect();
        if link + 1 < links {
            fields.push(serde_json::json!({"name": "next", "type": format!("Link{}", link + 1)}));
        }
        types.insert(format!("Link{link}"), Value::Array(fields));
    }
    types.insert(
        "Item".to_owned(),
        serde_json::json!([{"name": "x", "type": "uint256"}, {"name": "pad", "type": "Link0[]"}]),
    );
    types.insert(
        "Root".to_owned(),
        serde_json::json!([{"name": "items", "type": "Item[]"}]),
    );
    let item = serde_json::json!({"x": "0x01", "pad": []});
    let items = vec![item; (MAX_VALUES - 2) / 3];
    serde_json::json!({
        "types": types,
        "primaryType": "Root",
        "domain": {},
        "message": {"items": items},
    })
}

/// The facts a policy sees about the domain; refuses a domain chain other than the request's.
fn domain_facts(primary: &str, domain: &DynSolValue, chain_id: u64) -> Result<TypedDataFacts> {
    let mut facts = TypedDataFacts {
        primary_type: primary.to_owned(),
        domain_name: String::new(),
        verifying_contract: None,
        domain_chain_id: None,
    };
    let DynSolValue::CustomStruct {
        prop_names, tuple, ..
    } = domain
    else {
        return Err(bad("EIP712Domain must be a struct"));
    };
    for (name, value) in prop_names.iter().zip(tuple) {
        match (name.as_str(), value) {
            ("name", DynSolValue::String(s)) => facts.domain_name.clone_from(s),
            ("name", _) => return Err(bad("EIP712Domain.name must be a string")),
            ("verifyingContract", DynSolValue::Address(a)) => facts.verifying_contract = Some(*a),
            ("verifyingContract", _) => {
                return Err(bad("EIP712Domain.verifyingContract must be an address"));
            }
            ("chainId", DynSolValue::Uint(v, _)) => {
                let got = u64::try_from(*v)
                    .map_err(|_| bad("EIP712Domain.chainId does not fit 64 bits"))?;
                if got != chain_id {
                    return Err(Error::ChainMismatch {
                        expected: chain_id,
                        got,
                    });
                }
                facts.domain_chain_id =
                    Some(i64::try_from(got).map_err(|_| bad("EIP712Domain.chainId above 2^63-1"))?);
            }
            ("chainId", _) => return Err(bad("EIP712Domain.chainId must be a uint")),
            _ => {}
        }
    }
    Ok(facts)
}

/// Validates `types` and loads it into a resolver. alloy's own loader skips invalid entries
/// silently; here any invalid, duplicate, recursive or oversized declaration is a 4xx.
fn build_resolver(types: &Map<String, Value>) -> Result<Resolver> {
    if types.len() > MAX_TYPES {
        return Err(bad("too many types"));
    }
    if !types.contains_key(DOMAIN) {
        return Err(bad(
            "types.EIP712Domain is required: it declares what the domain hashes",
        ));
    }
    let mut decls: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    let mut text = 0usize;
    for (name, fields) in types {
        check_struct_name(name)?;
        let fields = fields
            .as_array()
            .ok_or_else(|| bad(&format!("types.{name} must be an array")))?;
        if fields.len() > MAX_FIELDS {
            return Err(bad(&format!("types.{name}: too many fields")));
        }
        let mut seen = HashSet::new();
        let mut props = Vec::with_capacity(fields.len());
        for f in fields {
            let obj = f
                .as_object()
                .filter(|o| o.len() == 2)
                .ok_or_else(|| bad(&format!("types.{name}: each field is {{name, type}}")))?;
            let (Some(field), Some(ty)) = (
                obj.get("name").and_then(Value::as_str),
                obj.get("type").and_then(Value::as_str),
            ) else {
                return Err(bad(&format!("types.{name}: each field is {{name, type}}")));
            };
            if field.is_empty() || field.len() > MAX_NAME_LEN || !is_identifier(field) {
                return Err(bad(&format!("types.{name}: invalid field name {field:?}")));
            }
            if !seen.insert(field) {
                return Err(bad(&format!(
                    "types.{name}: field {field:?} declared twice"
                )));
            }
            // `type field,` in the struct's encodeType.
            text = text.saturating_add(ty.len() + field.len() + 2);
            props.push((field.to_owned(), ty.to_owned()));
        }
        text = text.saturating_add(name.len() + 2);
        if text > MAX_TYPES_TEXT {
            return Err(bad("type declarations too large"));
        }
        decls.insert(name.as_str(), props);
    }
    for (name, props) in &decls {
        for (field, ty) in props {
            check_field_type(name, field, ty, &decls)?;
        }
    }
    let mut memo = HashMap::new();
    for name in decls.keys() {
        expanded_size(name, &decls, &mut memo, &mut Vec::new())?;
    }

    let mut resolver = Resolver::default();
    for (name, props) in decls {
        let props = props
            .into_iter()
            .map(|(field, ty)| PropertyDef::new(ty, field))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(dyn_abi)?;
        resolver.ingest(TypeDef::new(name, props).map_err(dyn_abi)?);
    }
    Ok(resolver)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn check_struct_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || !is_identifier(name) {
        return Err(bad(&format!("invalid type name {name:?}")));
    }
    if DynSolType::parse(name).is_ok() {
        return Err(bad(&format!("type name {name:?} is a Solidity type")));
    }
    Ok(())
}

/// Splits `Root[2][]` into `Root` and its array dimensions (`None` for dynamic).
fn split_dims(ty: &str) -> Option<(&str, Vec<Option<usize>>)> {
    let root_end = ty.find('[').unwrap_or(ty.len());
    let (root, mut rest) = ty.split_at(root_end);
    let mut dims = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        let (n, after) = inner.split_at(close);
        dims.push(if n.is_empty() {
            None
        } else {
            let digits_ok = n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0');
            Some(n.parse::<usize>().ok().filter(|_| digits_ok)?)
        });
        rest = after.get(1..)?;
    }
    Some((root, dims))
}

fn check_field_type(
    owner: &str,
    field: &str,
    ty: &str,
    decls: &HashMap<&str, Vec<(String, String)>>,
) -> Result<()> {
    let err = || bad(&format!("types.{owner}.{field}: unsupported type {ty:?}"));
    let (root, dims) = split_dims(ty).ok_or_else(err)?;
    if dims.len() > MAX_ARRAY_DIMS
        || dims
            .iter()
            .any(|d| d.is_some_and(|n| n == 0 || n > MAX_FIXED_ARRAY_LEN))
    {
        return Err(err());
    }
    if decls.contains_key(root) {
        return Ok(());
    }
    if !is_identifier(root) {
        return Err(err());
    }
    match DynSolType::parse(root) {
        Ok(
            DynSolType::Bool
            | DynSolType::Int(_)
            | DynSolType::Uint(_)
            | DynSolType::FixedBytes(_)
            | DynSolType::Address
            | DynSolType::String
            | DynSolType::Bytes,
        ) => Ok(()),
        _ => Err(bad(&format!("types.{owner}.{field}: unknown type {ty:?}"))),
    }
}

/// Size of a struct's fully expanded type tree; refuses recursion and oversized graphs (a few
/// structs that each use the next one many times would otherwise expand exponentially).
fn expanded_size<'a>(
    name: &'a str,
    decls: &'a HashMap<&str, Vec<(String, String)>>,
    memo: &mut HashMap<&'a str, usize>,
    stack: &mut Vec<&'a str>,
) -> Result<usize> {
    if let Some(n) = memo.get(name) {
        return Ok(*n);
    }
    if stack.contains(&name) {
        return Err(bad(&format!("recursive type {name:?} is not supported")));
    }
    let Some(props) = decls.get(name) else {
        return Ok(1);
    };
    stack.push(name);
    let mut size = 1usize;
    for (_, ty) in props {
        let root = ty.split('[').next().unwrap_or(ty);
        let child = match decls.get_key_value(root) {
            Some((key, _)) => expanded_size(key, decls, memo, stack)?,
            None => 1,
        };
        size = size.saturating_add(child);
        if size > MAX_EXPANDED_TYPE {
            return Err(bad("type graph too large"));
        }
    }
    stack.pop();
    memo.insert(name, size);
    Ok(size)
}

/// Reads `v` as a value of `ty`, strictly (see the module notes).
fn coerce(ty: &DynSolType, v: &Value, depth: usize, budget: &mut usize) -> Result<DynSolValue> {
    if depth > MAX_DEPTH {
        return Err(bad("value nested too deeply"));
    }
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| bad("too many values"))?;
    let mismatch = || bad(&format!("expected a {ty} value, got {}", kind(v)));
    Ok(match ty {
        DynSolType::Bool => DynSolValue::Bool(v.as_bool().ok_or_else(mismatch)?),
        DynSolType::Uint(bits) => DynSolValue::Uint(uint(v, *bits).ok_or_else(mismatch)?, *bits),
        DynSolType::Int(bits) => DynSolValue::Int(int(v, *bits).ok_or_else(mismatch)?, *bits),
        DynSolType::Address => DynSolValue::Address(address(v).ok_or_else(mismatch)?),
        DynSolType::FixedBytes(n) => {
            let s = v.as_str().ok_or_else(mismatch)?;
            let bytes = hex::decode_0x(s)
                .ok()
                .filter(|b| b.len() == *n)
                .ok_or_else(mismatch)?;
            let mut word = B256::ZERO;
            word.get_mut(..*n)
                .ok_or_else(mismatch)?
                .copy_from_slice(&bytes);
            DynSolValue::FixedBytes(word, *n)
        }
        DynSolType::Bytes => {
            let s = v.as_str().ok_or_else(mismatch)?;
            DynSolValue::Bytes(hex::decode_0x(s).map_err(|_| mismatch())?)
        }
        DynSolType::String => DynSolValue::String(v.as_str().ok_or_else(mismatch)?.to_owned()),
        DynSolType::Array(inner) => {
            let items = v.as_array().ok_or_else(mismatch)?;
            DynSolValue::Array(
                items
                    .iter()
                    .map(|item| coerce(inner, item, depth + 1, budget))
                    .collect::<Result<_>>()?,
            )
        }
        DynSolType::FixedArray(inner, n) => {
            let items = v
                .as_array()
                .filter(|a| a.len() == *n)
                .ok_or_else(mismatch)?;
            DynSolValue::FixedArray(
                items
                    .iter()
                    .map(|item| coerce(inner, item, depth + 1, budget))
                    .collect::<Result<_>>()?,
            )
        }
        DynSolType::CustomStruct {
            name,
            prop_names,
            tuple,
        } => {
            let obj = v.as_object().ok_or_else(mismatch)?;
            if let Some(extra) = obj.keys().find(|k| !prop_names.contains(k)) {
                return Err(bad(&format!("{name}: field {extra:?} is not declared")));
            }
            let mut values = Vec::with_capacity(tuple.len());
            for (field, field_ty) in prop_names.iter().zip(tuple) {
                let fv = obj
                    .get(field)
                    .ok_or_else(|| bad(&format!("{name}: missing field {field:?}")))?;
                values.push(coerce(field_ty, fv, depth + 1, budget)?);
            }
            DynSolValue::CustomStruct {
                name: name.clone(),
                prop_names: prop_names.clone(),
                tuple: values,
            }
        }
        DynSolType::Function | DynSolType::Tuple(_) => return Err(mismatch()),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a non-integer number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn address(v: &Value) -> Option<Address> {
    hex::address(v.as_str()?, "address").ok()
}

/// A non-negative integer: JSON integer, decimal string, or 0x-hex string.
fn magnitude(s: &str) -> Option<U256> {
    match hex::strip_prefix(s) {
        Some(d) if !d.is_empty() && d.len() <= 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
            U256::from_str_radix(d, 16).ok()
        }
        Some(_) => None,
        None if !s.is_empty() && s.len() <= 78 && s.bytes().all(|b| b.is_ascii_digit()) => {
            U256::from_str_radix(s, 10).ok()
        }
        None => None,
    }
}

fn uint(v: &Value, bits: usize) -> Option<U256> {
    let x = match v {
        Value::Number(n) => U256::from(n.as_u64()?),
        Value::String(s) => magnitude(s)?,
        _ => return None,
    };
    (x.bit_len() <= bits).then_some(x)
}

fn int(v: &Value, bits: usize) -> Option<I256> {
    let x = match v {
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => I256::try_from(i).ok()?,
            (None, Some(u)) => I256::try_from(u).ok()?,
            _ => return None,
        },
        Value::String(s) => match s.strip_prefix('-') {
            // Hex is a magnitude: "-0x…" has no agreed meaning, and is refused.
            Some(d) if hex::strip_prefix(d).is_none() => {
                I256::checked_from_sign_and_abs(Sign::Negative, magnitude(d)?)?
            }
            Some(_) => return None,
            None => I256::try_from(magnitude(s)?).ok()?,
        },
        _ => return None,
    };
    let bound = I256::try_from(U256::from(1u8) << (bits - 1)).ok();
    let fits = match bound {
        // bits == 256: every I256 fits.
        None => true,
        Some(b) => x < b && x >= -b,
    };
    fits.then_some(x)
}

fn bad(msg: &str) -> Error {
    Error::InvalidTypedData(msg.to_owned())
}

fn dyn_abi(e: alloy::dyn_abi::Error) -> Error {
    Error::InvalidTypedData(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of [`wide_type_graph`], coerced, with the resolver it was read with.
    fn heaviest_message(items: Option<usize>) -> (Resolver, DynSolValue) {
        let mut v = wide_type_graph();
        if let Some(n) = items {
            v["message"]["items"]
                .as_array_mut()
                .expect("items")
                .truncate(n);
        }
        let resolver = build_resolver(v["types"].as_object().expect("types")).expect("admitted");
        let ty = resolver.resolve("Root").expect("Root");
        let value = coerce(&ty, &v["message"], 0, &mut MAX_VALUES.clone()).expect("coerces");
        (resolver, value)
    }

    #[test]
    fn each_struct_type_is_encoded_once_per_payload() {
        let (resolver, value) = heaviest_message(None);
        let mut hasher = Hasher::new(&resolver);
        hasher.data_word(&value).expect("hashes");
        // Root and Item; the chain behind the empty arrays is only part of Item's encodeType.
        assert_eq!(hasher.encoded_types, 2);
        assert!(read(&wide_type_graph(), 1).is_ok());
    }

    #[test]
    fn every_costly_shape_is_admitted_at_the_limit() {
        // That each also fits the gateway's default body limit is checked beside that limit.
        for (name, v) in costliest_admitted() {
            assert!(read(&v, 1).is_ok(), "{name}");
        }
    }

    #[test]
    fn cached_hashing_equals_alloys() {
        let (resolver, value) = heaviest_message(Some(40));
        let ours = Hasher::new(&resolver).data_word(&value).expect("hashes");
        let alloys = resolver.eip712_data_word(&value).expect("hashes");
        assert_eq!(ours, alloys);
    }

    #[test]
    fn declarations_are_bounded_in_length() {
        let mut v = wide_type_graph();
        let fields: Vec<Value> = (0..40)
            .map(|i| serde_json::json!({"name": format!("extra_field_number_{i}_with_a_long_name"), "type": "uint256"}))
            .collect();
        v["types"]["Extra"] = Value::Array(fields);
        let err = read(&v, 1).expect_err("too large");
        assert!(
            err.to_string().contains("type declarations too large"),
            "{err}"
        );
    }
}
