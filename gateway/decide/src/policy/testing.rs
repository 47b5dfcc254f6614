//! Helpers for tests and benches: the shipped set's location, a copy of a set with N generated
//! app-constrained policies (to measure slicing), and typed [`Facts`] for common requests so
//! that the policy engine can be exercised without the decoder.

use std::path::{Path, PathBuf};

use alloy::primitives::{Address, B256, U256, address};

use super::PolicyPaths;
use crate::error::{Error, Result};
use crate::facts::{
    Action, Amount, Decoded, Facts, MessageFacts, NftFacts, TokenFacts, TypedDataFacts,
};
use crate::ledger::{Velocity, VelocityTotals};
use crate::records::{AppRecord, LabelsSource, WalletRecord};

/// USDC on Ethereum mainnet.
pub const USDC: Address = address!("a0b86991c6218b36c1d19d4a2e9eb0ce3606eb48");
/// Tornado Cash router (on the shipped blocked list).
pub const TORNADO_ROUTER: Address = address!("d90e2f925da726b50c4ed8d0fb90ad053324f31b");
/// MetaMask's EIP7702StatelessDeleGator (on the shipped trusted_delegates list).
pub const METAMASK_DELEGATOR: Address = address!("63c0c19a282a1b52b07dd5a65b58948a07dae32b");
/// An ordinary address on no list.
pub const ALICE: Address = address!("1111111111111111111111111111111111111111");
/// The wallet used by the helpers.
pub const WALLET: Address = address!("2222222222222222222222222222222222222222");

/// The shipped `policies/` and `schemas/` of this repository.
pub fn shipped_paths() -> PolicyPaths {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    PolicyPaths {
        policies: root.join("policies"),
        schemas: root.join("schemas"),
    }
}

/// `n` app-constrained policies, each for its own app `gen_app_<i>` (half permits, half
/// forbids), the shape a large multi-tenant set has.
pub fn app_policies(n: usize) -> String {
    let mut out = String::with_capacity(n * 220);
    for i in 0..n {
        if i % 2 == 0 {
            out.push_str(&format!(
                "@id(\"gen-cap-{i}\")\n@reason(\"generated per-app cap\")\n\
                 forbid (principal == Parapet::App::\"gen_app_{i}\", action in Parapet::Action::\"transaction\", resource)\n\
                 when {{ context has value && context.value.scaled > {} }};\n\n",
                1_000_000 + i
            ));
        } else {
            out.push_str(&format!(
                "@id(\"gen-permit-{i}\")\n@reason(\"generated per-app permit\")\n\
                 permit (principal == Parapet::App::\"gen_app_{i}\", action == Parapet::Action::\"contract_call\", resource)\n\
                 when {{ context.chain_id == {} }};\n\n",
                i % 7 + 1
            ));
        }
    }
    out
}

fn copy_dir_files(src: &Path, dst: &Path, ext: &[&str]) -> Result<()> {
    let io = |e: std::io::Error, p: &Path| Error::Config(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dst).map_err(|e| io(e, dst))?;
    let rd = match std::fs::read_dir(src) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e, src)),
    };
    for entry in rd {
        let path = entry.map_err(|e| io(e, src))?.path();
        let matches = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ext.contains(&e));
        if path.is_file()
            && matches
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, dst.join(name)).map_err(|e| io(e, &path))?;
        }
    }
    Ok(())
}

/// Copies the set at `src` into `dst` (`dst/policies`, `dst/schemas`) and adds
/// `policies/generated.cedar` with [`app_policies`]`(n)`. Returns the new set's paths.
pub fn copy_with_app_policies(src: &PolicyPaths, dst: &Path, n: usize) -> Result<PolicyPaths> {
    let paths = PolicyPaths {
        policies: dst.join("policies"),
        schemas: dst.join("schemas"),
    };
    copy_dir_files(&src.policies, &paths.policies, &["cedar", "json"])?;
    copy_dir_files(
        &src.policies.join("entities"),
        &paths.policies.join("entities"),
        &["json"],
    )?;
    copy_dir_files(&src.schemas, &paths.schemas, &["cedarschema", "json"])?;
    copy_dir_files(
        &src.schemas.join("abis"),
        &paths.schemas.join("abis"),
        &["json"],
    )?;
    let generated: PathBuf = paths.policies.join("generated.cedar");
    std::fs::write(&generated, app_policies(n))
        .map_err(|e| Error::Config(format!("{}: {e}", generated.display())))?;
    Ok(paths)
}

/// A wallet record as dry runs build it.
pub fn wallet(labels: &[&str]) -> WalletRecord {
    WalletRecord {
        address: WALLET,
        owner: None,
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        frozen: false,
        groups: Vec::new(),
        labels_source: LabelsSource::Request,
    }
}

/// The development default app.
pub fn app() -> AppRecord {
    AppRecord::development_default()
}

/// Velocity with no earlier requests.
pub fn velocity(facts: &Facts) -> Velocity {
    Velocity::including(&VelocityTotals::zero(), facts)
}

fn eth(wei: U256) -> Amount {
    Amount::from_base_units(wei, 18)
}

fn tx(action: Action, to: Option<Address>, value: U256, selector: &str, data_len: i64) -> Facts {
    Facts {
        action,
        digest: B256::repeat_byte(0x42),
        decoded: Decoded {
            chain_id: 1,
            tx_type: Some(2),
            to,
            value: Some(eth(value)),
            gas_limit: Some(60_000),
            selector: Some(selector.to_owned()),
            data_len: Some(data_len),
            ..Decoded::default()
        },
        signer: None,
    }
}

/// A plain EIP-1559 transfer of `wei` to `to` on mainnet.
pub fn native_transfer(to: Address, wei: U256) -> Facts {
    tx(Action::NativeTransfer, Some(to), wei, "", 0)
}

/// An EIP-1559 USDC `transfer(to, base_units)` on mainnet.
pub fn usdc_transfer(to: Address, base_units: u64) -> Facts {
    let mut f = tx(
        Action::Erc20Transfer,
        Some(USDC),
        U256::ZERO,
        "0xa9059cbb",
        68,
    );
    f.decoded.token = Some(TokenFacts {
        contract: USDC,
        standard: "erc20".to_owned(),
        symbol: "USDC".to_owned(),
        known: true,
        amount: Amount::from_base_units(U256::from(base_units), 6),
        counterparty: to,
        unlimited: false,
        decimals: 6,
    });
    f
}

/// A USDC `approve(spender, amount)`; `U256::MAX` is unlimited.
pub fn usdc_approve(spender: Address, amount: U256) -> Facts {
    let mut f = tx(
        Action::Erc20Approve,
        Some(USDC),
        U256::ZERO,
        "0x095ea7b3",
        68,
    );
    f.decoded.token = Some(TokenFacts {
        contract: USDC,
        standard: "erc20".to_owned(),
        symbol: "USDC".to_owned(),
        known: true,
        amount: Amount::from_base_units(amount, 6),
        counterparty: spender,
        unlimited: amount >= (U256::from(1u8) << 255),
        decimals: 6,
    });
    f
}

/// `setApprovalForAll(operator, approved)` on an NFT collection.
pub fn nft_approve_all(collection: Address, operator: Address, approved: bool) -> Facts {
    let mut f = tx(
        Action::NftApproveAll,
        Some(collection),
        U256::ZERO,
        "0xa22cb465",
        68,
    );
    f.decoded.nft = Some(NftFacts {
        contract: collection,
        standard: "erc721".to_owned(),
        token_id: "0".to_owned(),
        counterparty: operator,
        approved,
    });
    f
}

/// An EIP-7702 transaction delegating the wallet to `delegates`.
pub fn set_code(delegates: &[Address]) -> Facts {
    let mut f = tx(Action::SetCode, Some(WALLET), U256::ZERO, "", 0);
    f.decoded.tx_type = Some(4);
    f.decoded.delegates = Some(delegates.to_vec());
    f
}

/// A contract deployment (no `to`).
pub fn deploy() -> Facts {
    tx(Action::ContractDeploy, None, U256::ZERO, "0x60806040", 1200)
}

/// A UTF-8 `personal_sign` message of `len` bytes.
pub fn personal_sign(len: i64) -> Facts {
    Facts {
        action: Action::PersonalSign,
        digest: B256::repeat_byte(0x43),
        decoded: Decoded {
            chain_id: 1,
            message: Some(MessageFacts {
                encoding: "utf8".to_owned(),
                len,
            }),
            ..Decoded::default()
        },
        signer: None,
    }
}

/// EIP-712 typed data with the given verifying contract.
pub fn typed_data(verifying_contract: Option<Address>) -> Facts {
    Facts {
        action: Action::TypedData,
        digest: B256::repeat_byte(0x44),
        decoded: Decoded {
            chain_id: 1,
            typed_data: Some(TypedDataFacts {
                primary_type: "Mail".to_owned(),
                domain_name: "Ether Mail".to_owned(),
                verifying_contract,
                domain_chain_id: Some(1),
            }),
            ..Decoded::default()
        },
        signer: None,
    }
}

/// An EIP-2612 USDC permit for `spender`.
pub fn usdc_permit(spender: Address, amount: U256) -> Facts {
    let mut f = typed_data(Some(USDC));
    f.action = Action::Permit;
    f.decoded.typed_data = Some(TypedDataFacts {
        primary_type: "Permit".to_owned(),
        domain_name: "USD Coin".to_owned(),
        verifying_contract: Some(USDC),
        domain_chain_id: Some(1),
    });
    f.decoded.token = Some(TokenFacts {
        contract: USDC,
        standard: "erc20".to_owned(),
        symbol: "USDC".to_owned(),
        known: true,
        amount: Amount::from_base_units(amount, 6),
        counterparty: spender,
        unlimited: amount == U256::MAX,
        decimals: 6,
    });
    f
}

/// A bare 32-byte hash.
pub fn raw_hash() -> Facts {
    Facts {
        action: Action::RawHash,
        digest: B256::repeat_byte(0x45),
        decoded: Decoded {
            chain_id: 1,
            ..Decoded::default()
        },
        signer: None,
    }
}
