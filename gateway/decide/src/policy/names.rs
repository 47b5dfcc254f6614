//! Entity type names and action uids, parsed once per loaded set: parsing a name costs more
//! than the rest of building an entity uid.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use crate::error::{Error, Result};
use crate::facts::Action;

pub(crate) const APP: &str = "Parapet::App";
pub(crate) const APP_GROUP: &str = "Parapet::AppGroup";
pub(crate) const USER: &str = "Parapet::User";
pub(crate) const WALLET: &str = "Parapet::Wallet";
pub(crate) const WALLET_GROUP: &str = "Parapet::WalletGroup";
pub(crate) const ADDRESS: &str = "Parapet::Address";
pub(crate) const ADDRESS_LIST: &str = "Parapet::AddressList";
pub(crate) const ACTION: &str = "Parapet::Action";

#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub app: EntityTypeName,
    pub app_group: EntityTypeName,
    pub user: EntityTypeName,
    pub wallet: EntityTypeName,
    pub wallet_group: EntityTypeName,
    pub address: EntityTypeName,
    pub address_list: EntityTypeName,
    /// Indexed like [`Action::ALL`].
    actions: Vec<EntityUid>,
}

fn type_name(s: &str) -> Result<EntityTypeName> {
    EntityTypeName::from_str(s).map_err(|e| Error::Internal(format!("entity type {s}: {e}")))
}

impl Names {
    pub(crate) fn new() -> Result<Names> {
        let action = type_name(ACTION)?;
        Ok(Names {
            app: type_name(APP)?,
            app_group: type_name(APP_GROUP)?,
            user: type_name(USER)?,
            wallet: type_name(WALLET)?,
            wallet_group: type_name(WALLET_GROUP)?,
            address: type_name(ADDRESS)?,
            address_list: type_name(ADDRESS_LIST)?,
            actions: Action::ALL
                .iter()
                .map(|a| {
                    EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a.as_str()))
                })
                .collect(),
        })
    }

    pub(crate) fn action(&self, action: Action) -> Result<EntityUid> {
        Action::ALL
            .iter()
            .position(|a| *a == action)
            .and_then(|i| self.actions.get(i))
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no action uid for {}", action.as_str())))
    }

    pub(crate) fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

/// Lower-case `0x…` form: the id of Wallet and Address entities.
pub(crate) fn address_id(a: &alloy::primitives::Address) -> String {
    let mut s = String::with_capacity(42);
    s.push_str("0x");
    s.push_str(&hex::encode(a.as_slice()));
    s
}

/// The `{"type", "id"}` JSON form of an entity uid, as a tree (tests compare text with it).
#[cfg(test)]
pub(crate) fn uid_json(ty: &str, id: &str) -> serde_json::Value {
    let mut m = serde_json::Map::with_capacity(2);
    m.insert("type".to_owned(), serde_json::Value::String(ty.to_owned()));
    m.insert("id".to_owned(), serde_json::Value::String(id.to_owned()));
    serde_json::Value::Object(m)
}
