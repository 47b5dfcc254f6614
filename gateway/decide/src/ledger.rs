//! Velocity facts (docs/architecture.md §4): what a wallet has signed or reserved over rolling
//! windows. The signing issue backs this with reservations in the database; until then the
//! in-memory ledger holds only what tests seed into it.

use alloy::primitives::{Address, U256};
use parking_lot::RwLock;
use time::{Duration, OffsetDateTime};

use crate::facts::Amount;

/// Totals of earlier requests, *excluding* the one being decided (the policy stage adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityTotals {
    /// Native value (wei) over the last 24 hours.
    pub native_24h: U256,
    /// Base units of the asked token's `erc20_transfer`s over the last 24 hours.
    pub token_24h: U256,
    /// Every signing request in the last hour.
    pub count_1h: i64,
}

impl VelocityTotals {
    pub fn zero() -> VelocityTotals {
        VelocityTotals {
            native_24h: U256::ZERO,
            token_24h: U256::ZERO,
            count_1h: 0,
        }
    }
}

/// The velocity attribute handed to Cedar, this request included.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Velocity {
    pub native_24h: Amount,
    pub token_24h: Amount,
    pub count_1h: i64,
}

pub trait Ledger: Send + Sync + std::fmt::Debug {
    fn totals(
        &self,
        wallet: Address,
        chain_id: i64,
        token: Option<Address>,
        now: OffsetDateTime,
    ) -> VelocityTotals;
}

/// One signed or reserved request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub wallet: Address,
    pub chain_id: i64,
    pub at: OffsetDateTime,
    pub native: U256,
    /// `(token contract, base units)` for an `erc20_transfer`.
    pub token: Option<(Address, U256)>,
}

/// Process-local ledger; the signing issue replaces it with database reservations.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    entries: RwLock<Vec<LedgerEntry>>,
}

impl MemoryLedger {
    pub fn record(&self, entry: LedgerEntry) {
        self.entries.write().push(entry);
    }
}

impl Ledger for MemoryLedger {
    fn totals(
        &self,
        wallet: Address,
        chain_id: i64,
        token: Option<Address>,
        now: OffsetDateTime,
    ) -> VelocityTotals {
        let mut t = VelocityTotals::zero();
        add_entries(&mut t, &self.entries.read(), wallet, chain_id, token, now);
        t
    }
}

/// Adds the entries of `wallet` on `chain_id` that fall in each rolling window to `t`.
pub fn add_entries(
    t: &mut VelocityTotals,
    entries: &[LedgerEntry],
    wallet: Address,
    chain_id: i64,
    token: Option<Address>,
    now: OffsetDateTime,
) {
    let day = now - Duration::hours(24);
    let hour = now - Duration::hours(1);
    for e in entries
        .iter()
        .filter(|e| e.wallet == wallet && e.chain_id == chain_id)
    {
        if e.at > day && e.at <= now {
            t.native_24h = t.native_24h.saturating_add(e.native);
            if let (Some((c, amount)), Some(asked)) = (e.token, token)
                && c == asked
            {
                t.token_24h = t.token_24h.saturating_add(amount);
            }
        }
        if e.at > hour && e.at <= now {
            t.count_1h = t.count_1h.saturating_add(1);
        }
    }
}

impl Velocity {
    /// Earlier totals plus this request: native value always, token amount for ERC-20 transfers.
    pub fn including(totals: &VelocityTotals, facts: &crate::facts::Facts) -> Velocity {
        let native_now = facts
            .decoded
            .value
            .as_ref()
            .and_then(|a| a.raw.parse::<U256>().ok())
            .unwrap_or(U256::ZERO);
        let (token_now, decimals) = match (&facts.decoded.token, facts.action) {
            (Some(t), crate::facts::Action::Erc20Transfer) => (
                t.amount.raw.parse::<U256>().unwrap_or(U256::MAX),
                t.decimals,
            ),
            (Some(t), _) => (U256::ZERO, t.decimals),
            (None, _) => (U256::ZERO, 0),
        };
        Velocity {
            native_24h: Amount::from_base_units(totals.native_24h.saturating_add(native_now), 18),
            token_24h: Amount::from_base_units(
                totals.token_24h.saturating_add(token_now),
                decimals,
            ),
            count_1h: totals.count_1h.saturating_add(1),
        }
    }
}
