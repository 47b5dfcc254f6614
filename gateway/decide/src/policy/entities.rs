//! Entities: the static ones of a loaded set (address lists from `policies/entities/*.json`,
//! the schema's actions) and the dynamic ones of a request (app, wallet, users).
//!
//! A request's store holds only what evaluation can reach: the actions, the address lists,
//! the Address entities the context (or a policy literal) names, and the dynamic records.
//! An Address that is on no list needs no entity: `x in AddressList::"…"` is false for an
//! entity the store does not hold, exactly as for one with no parents. This keeps the cost of
//! a request independent of the size of the lists.
//!
//! The store of (app, wallet, session user) is built once and shared while their records are
//! unchanged ([`StoreCache`]); only a request naming a listed address gets its own copy.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;

use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression, Schema};
use cedar_policy_core::ast;
use serde_json::{Map, Value};

use super::DecisionInput;
use super::context::{Kind, Val};
use super::diag::detailed;
use super::json_text::{self, JsonText};
use super::names::{self, Names};
use super::values;
use crate::error::{Error, Result};
use crate::records::{AppRecord, WalletRecord};

#[derive(Debug)]
pub(crate) struct StaticEntities {
    /// The actions, the address lists and the addresses policies name literally.
    base: Entities,
    /// Every Address entity by its id (lower-case 0x), ancestors already closed.
    addresses: HashMap<String, Arc<ast::Entity>>,
    /// `base` plus every address: what a replay evaluates against.
    full: Entities,
    /// Lists the entity files declare, explicitly or as some entity's parent.
    declared_lists: HashSet<String>,
}

/// `0x` followed by 40 lower-case hex digits: the only spelling the context ever uses, so any
/// other spelling in an entity file or a policy could never match.
pub(crate) fn is_canonical_address(s: &str) -> bool {
    s.len() == 42
        && s.starts_with("0x")
        && s.bytes()
            .skip(2)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl StaticEntities {
    /// Loads `files` (relative path, text). Problems are pushed as `file: message`; `None`
    /// when there was any.
    pub(crate) fn load(
        schema: &Schema,
        names: &Names,
        files: &[(String, String)],
        literals: &[EntityUid],
        problems: &mut Vec<String>,
    ) -> Option<StaticEntities> {
        let before = problems.len();
        let mut all: Vec<Value> = Vec::new();
        for (rel, text) in files {
            if let Some(items) = check_file(schema, rel, text, problems) {
                all.extend(items);
            }
        }
        if problems.len() > before {
            return None;
        }
        let combined = match Entities::from_json_value(Value::Array(all), None) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("policies/entities: {}", detailed(&e)));
                return None;
            }
        };
        match Self::close(schema, names, &combined, literals) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("policies/entities: {e}"));
                None
            }
        }
    }

    /// Computes each list's `members` (transitively, as `in` would) and assembles the stores.
    fn close(
        schema: &Schema,
        names: &Names,
        combined: &Entities,
        literals: &[EntityUid],
    ) -> Result<StaticEntities> {
        let mut lists: BTreeMap<String, (HashSet<EntityUid>, BTreeSet<String>)> = BTreeMap::new();
        let mut address_entities: Vec<Entity> = Vec::new();
        for e in combined.iter() {
            let uid = e.uid();
            if uid.type_name() == &names.address_list {
                for a in combined.ancestors(&uid).into_iter().flatten() {
                    lists.entry(a.id().unescaped().to_owned()).or_default();
                }
                let parents = e.clone().into_inner().2;
                lists.entry(uid.id().unescaped().to_owned()).or_default().0 = parents;
            } else if uid.type_name() == &names.address {
                let id = uid.id().unescaped().to_owned();
                for a in combined.ancestors(&uid).into_iter().flatten() {
                    if a.type_name() == &names.address_list {
                        lists
                            .entry(a.id().unescaped().to_owned())
                            .or_default()
                            .1
                            .insert(id.clone());
                    }
                }
                address_entities.push(e.clone());
            }
        }
        let declared_lists: HashSet<String> = lists.keys().cloned().collect();
        for l in literals {
            if l.type_name() == &names.address_list {
                lists.entry(l.id().unescaped().to_owned()).or_default();
            }
        }
        let mut list_entities = Vec::with_capacity(lists.len());
        for (id, (parents, members)) in &lists {
            let set = RestrictedExpression::new_set(
                members
                    .iter()
                    .map(|m| RestrictedExpression::new_entity_uid(names.uid(&names.address, m))),
            );
            let attrs = HashMap::from([("members".to_owned(), set)]);
            let e = Entity::new(names.uid(&names.address_list, id), attrs, parents.clone())
                .map_err(|e| Error::Internal(format!("address list {id}: {e}")))?;
            list_entities.push(e);
        }
        let full = Entities::from_entities(
            list_entities.iter().cloned().chain(address_entities),
            Some(schema),
        )
        .map_err(|e| Error::Config(detailed(&e)))?;
        let addresses: HashMap<String, Arc<ast::Entity>> = full
            .iter()
            .filter(|e| e.uid().type_name() == &names.address)
            .map(|e| {
                let core: &ast::Entity = e.as_ref();
                (e.uid().id().unescaped().to_owned(), Arc::new(core.clone()))
            })
            .collect();
        let literal_addresses: Vec<Entity> = literals
            .iter()
            .filter(|l| l.type_name() == &names.address)
            .filter_map(|l| addresses.get(l.id().unescaped()))
            .map(|e| Entity::from(ast::Entity::clone(e)))
            .collect();
        let base = Entities::from_entities(
            list_entities.into_iter().chain(literal_addresses),
            Some(schema),
        )
        .map_err(|e| Error::Config(detailed(&e)))?;
        Ok(StaticEntities {
            base,
            addresses,
            full,
            declared_lists,
        })
    }

    /// The store for one request and the JSON records of its dynamic entities: the cached
    /// store of (app, wallet, session user), plus the listed addresses the context names.
    pub(crate) fn for_request(
        &self,
        names: &Names,
        cache: &StoreCache,
        input: &DecisionInput<'_>,
        mut addresses: Vec<&str>,
    ) -> Result<(Store, JsonText)> {
        let cached = cache.get_or_build(input, || {
            let (dynamic, json) = dynamic(names, input)?;
            let store = values::add_closed(&self.base, dynamic)?;
            Ok((store, json))
        })?;
        let json = cached.json.clone();
        addresses.sort_unstable();
        addresses.dedup();
        let listed: Vec<Arc<ast::Entity>> = addresses
            .into_iter()
            .filter_map(|a| self.addresses.get(a))
            .cloned()
            .collect();
        if listed.is_empty() {
            return Ok((Store::Shared(cached), json));
        }
        let store = values::add_closed(&cached.store, listed)?;
        Ok((Store::Owned(store), json))
    }

    /// The store for a replay: every static entity plus the recorded dynamic ones.
    pub(crate) fn for_replay(&self, dynamic: Vec<Entity>) -> Result<Entities> {
        self.full
            .clone()
            .add_entities(dynamic, None)
            .map_err(|e| Error::InvalidRequest(format!("entities: {e}")))
    }

    pub(crate) fn declares_list(&self, id: &str) -> bool {
        self.declared_lists.contains(id)
    }

    pub(crate) fn address_count(&self) -> usize {
        self.addresses.len()
    }
}

/// Structural checks of one entity file, then a schema check of it alone so that problems
/// name the file. Returns the entities with the computed `members` placeholder in place.
fn check_file(
    schema: &Schema,
    rel: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<Value>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{rel}:{}: invalid JSON: {e}", e.line()));
            return None;
        }
    };
    let Value::Array(items) = value else {
        problems.push(format!("{rel}:1: expected a JSON array of Cedar entities"));
        return None;
    };
    let before = problems.len();
    let mut out = Vec::with_capacity(items.len());
    for mut item in items {
        let (ty, id) = match item.get("uid") {
            Some(Value::Object(u)) => (
                u.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                u.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
            _ => {
                problems.push(format!(
                    "{rel}: every entity needs \"uid\": {{\"type\", \"id\"}}"
                ));
                continue;
            }
        };
        match ty.as_str() {
            names::ADDRESS => {
                if !is_canonical_address(&id) {
                    problems.push(format!(
                        "{rel}: {ty}::{id:?}: an address id is 0x followed by 40 lower-case hex digits"
                    ));
                }
            }
            names::ADDRESS_LIST => {
                let Some(obj) = item.as_object_mut() else {
                    continue;
                };
                let attrs = obj
                    .entry("attrs")
                    .or_insert_with(|| Value::Object(Map::new()));
                match attrs.as_object_mut() {
                    Some(a) if a.contains_key("members") => problems.push(format!(
                        "{rel}: {ty}::{id:?}: \"members\" is computed from the Address entities' parents; do not set it"
                    )),
                    Some(a) => {
                        a.insert("members".to_owned(), Value::Array(Vec::new()));
                    }
                    None => problems.push(format!("{rel}: {ty}::{id:?}: \"attrs\" must be an object")),
                }
            }
            _ => problems.push(format!(
                "{rel}: {ty}::{id:?}: only Parapet::Address and Parapet::AddressList entities belong here \
                 (apps, wallets and users come from the gateway's records)"
            )),
        }
        out.push(item);
    }
    if problems.len() > before {
        return None;
    }
    if let Err(e) = Entities::from_json_value(Value::Array(out.clone()), Some(schema)) {
        problems.push(format!("{rel}: {}", detailed(&e)));
        return None;
    }
    Some(out)
}

/// One dynamic entity: its type (Cedar's and as text), id, attributes and parents.
struct Dynamic<'a> {
    ty: &'a cedar_policy::EntityTypeName,
    ty_str: &'static str,
    id: String,
    attrs: Vec<(&'static str, Val)>,
    parent_ty: &'a cedar_policy::EntityTypeName,
    parent_ty_str: &'static str,
    parents: &'a [String],
}

impl Dynamic<'_> {
    fn entity(&self, names: &Names) -> Result<Arc<ast::Entity>> {
        let parents = self
            .parents
            .iter()
            .map(|p| values::uid(self.parent_ty, p))
            .collect();
        let uid = values::uid(self.ty, &self.id);
        Ok(Arc::new(values::entity(uid, &self.attrs, parents, names)?))
    }

    fn text(&self) -> json_text::EntityText<'_> {
        json_text::EntityText {
            ty: self.ty_str,
            id: &self.id,
            attrs: &self.attrs,
            parent_ty: self.parent_ty_str,
            parents: self.parents,
        }
    }
}

fn app_entity<'a>(names: &'a Names, app: &'a AppRecord) -> Dynamic<'a> {
    Dynamic {
        ty: &names.app,
        ty_str: names::APP,
        id: app.id.clone(),
        attrs: vec![
            ("name", Val::Str(app.name.clone())),
            (
                "grants",
                Val::Set(app.grants.iter().map(|g| Val::Str(g.clone())).collect()),
            ),
            ("frozen", Val::Bool(app.frozen)),
        ],
        parent_ty: &names.app_group,
        parent_ty_str: names::APP_GROUP,
        parents: &app.groups,
    }
}

fn wallet_entity<'a>(names: &'a Names, wallet: &'a WalletRecord) -> Dynamic<'a> {
    let wallet_id = names::address_id(&wallet.address);
    let mut attrs = vec![("address", Val::Str(wallet_id.clone()))];
    if let Some(owner) = wallet.owner {
        attrs.push(("owner", Val::Entity(Kind::User, owner.to_string())));
    }
    attrs.push((
        "labels",
        Val::Set(wallet.labels.iter().map(|l| Val::Str(l.clone())).collect()),
    ));
    attrs.push(("frozen", Val::Bool(wallet.frozen)));
    Dynamic {
        ty: &names.wallet,
        ty_str: names::WALLET,
        id: wallet_id,
        attrs,
        parent_ty: &names.wallet_group,
        parent_ty_str: names::WALLET_GROUP,
        parents: &wallet.groups,
    }
}

/// Most cached stores; past it, one entry leaves for each one that comes in.
const MAX_CACHED_STORES: usize = 4096;

/// A request's entity store, shared or its own.
#[derive(Debug)]
pub(crate) enum Store {
    Shared(Arc<CachedStore>),
    Owned(Entities),
}

impl Store {
    pub(crate) fn entities(&self) -> &Entities {
        match self {
            Store::Shared(c) => &c.store,
            Store::Owned(e) => e,
        }
    }
}

/// The store built for one (app, wallet, session user), with the records it was built from.
#[derive(Debug)]
pub(crate) struct CachedStore {
    app: AppRecord,
    wallet: WalletRecord,
    store: Entities,
    json: JsonText,
}

type StoreKey = (String, alloy::primitives::Address, Option<uuid::Uuid>);

/// Built stores, reused while the app and wallet records are unchanged: building one costs
/// more than comparing the records.
#[derive(Debug, Default)]
pub(crate) struct StoreCache {
    map: RwLock<CachedStores>,
}

/// The stores, and their keys in the order they came in (the oldest leaves first when full).
#[derive(Debug, Default)]
struct CachedStores {
    by_key: HashMap<StoreKey, Arc<CachedStore>>,
    arrivals: std::collections::VecDeque<StoreKey>,
}

impl CachedStores {
    /// Inserts `built` under `key`; gives back the store that left to make room, if one did, so
    /// that it is dropped outside the lock.
    fn insert(&mut self, key: StoreKey, built: Arc<CachedStore>) -> Option<Arc<CachedStore>> {
        let mut evicted = None;
        while self.by_key.len() >= MAX_CACHED_STORES && evicted.is_none() {
            let Some(oldest) = self.arrivals.pop_front() else {
                break;
            };
            evicted = self.by_key.remove(&oldest);
        }
        if self.by_key.insert(key.clone(), built).is_none()
            || self.arrivals.len() < 2 * MAX_CACHED_STORES
        {
            self.arrivals.push_back(key);
        }
        // A key rebuilt many times is queued once per build; keep the queue bounded.
        if self.arrivals.len() > 2 * MAX_CACHED_STORES {
            self.arrivals = self.by_key.keys().cloned().collect();
        }
        evicted
    }
}

impl StoreCache {
    fn get_or_build(
        &self,
        input: &DecisionInput<'_>,
        build: impl FnOnce() -> Result<(Entities, JsonText)>,
    ) -> Result<Arc<CachedStore>> {
        let key: StoreKey = (
            input.app.id.clone(),
            input.wallet.address,
            input.session.map(|s| s.user),
        );
        if let Some(hit) = self.map.read().by_key.get(&key)
            && hit.app == *input.app
            && hit.wallet == *input.wallet
        {
            return Ok(Arc::clone(hit));
        }
        let (store, json) = build()?;
        let built = Arc::new(CachedStore {
            app: input.app.clone(),
            wallet: input.wallet.clone(),
            store,
            json,
        });
        // The oldest entry out per entry in when full: emptying the whole cache at once dropped
        // 4,096 stores inside the write lock, a stall every 4,096 new wallets that every
        // decision behind it waited for. The evicted store is dropped after the lock is released.
        let evicted = self.map.write().insert(key, Arc::clone(&built));
        drop(evicted);
        Ok(built)
    }
}

/// App, wallet and users of one request, as Cedar entities and as their JSON records.
fn dynamic(names: &Names, input: &DecisionInput<'_>) -> Result<(Vec<Arc<ast::Entity>>, JsonText)> {
    let wallet = input.wallet;
    let mut all = Vec::with_capacity(4);
    all.push(app_entity(names, input.app));
    all.push(wallet_entity(names, wallet));
    let mut users: Vec<String> = Vec::with_capacity(2);
    if let Some(s) = input.session {
        users.push(s.user.to_string());
    }
    if let Some(o) = wallet.owner {
        let o = o.to_string();
        if !users.contains(&o) {
            users.push(o);
        }
    }
    for u in users {
        all.push(Dynamic {
            ty: &names.user,
            ty_str: names::USER,
            id: u,
            attrs: Vec::new(),
            parent_ty: &names.app_group,
            parent_ty_str: names::APP_GROUP,
            parents: &[],
        });
    }
    let entities = all
        .iter()
        .map(|d| d.entity(names))
        .collect::<Result<Vec<_>>>()?;
    let text: Vec<_> = all.iter().map(Dynamic::text).collect();
    Ok((entities, json_text::entities(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical_address(
            "0xd90e2f925da726b50c4ed8d0fb90ad053324f31b"
        ));
        assert!(!is_canonical_address(
            "0xD90e2f925da726b50c4ed8d0fb90ad053324f31b"
        ));
        assert!(!is_canonical_address(
            "0xd90e2f925da726b50c4ed8d0fb90ad053324f31"
        ));
        assert!(!is_canonical_address(
            "d90e2f925da726b50c4ed8d0fb90ad053324f31b00"
        ));
    }
}
