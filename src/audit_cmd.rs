//! `parapet audit …`: the auditor's commands, straight against the store that `serve` uses
//! (same configuration), so they work while the gateway is down.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use parapet_gateway::audit::checkpoint::{self, Checkpoint};
use parapet_gateway::audit::export::{self, Format, Pager};
use parapet_gateway::audit::replay::{Replayer, Target};
use parapet_gateway::audit::{
    CheckpointSigner, FileSigner, Filter, Head, Store, StoreOptions, verify,
};
use parapet_gateway::config::{Config, CustodyKind};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print matching events, one page at a time (use --cursor to continue).
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print exactly one JSON object: {events, next_cursor}.
        #[arg(long)]
        json: bool,
    },
    /// Export matching events in seq order (NDJSON: the format an auditor verifies).
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// ndjson or csv.
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Recompute the hash chain; exit non-zero and name the first bad seq on any tampering.
    Verify {
        /// The signed checkpoint file (default: the one under the data directory, if present).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Archive exports of removed prefixes, oldest first.
        #[arg(long)]
        archive: Vec<PathBuf>,
        /// Hex public key checkpoints must be signed with (default: the audit key's).
        #[arg(long)]
        public_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Re-evaluate a logged decision against the policy version it was made under.
    Replay {
        /// A sequence number or a request id.
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Export the prefix up to SEQ with a signed checkpoint, then remove it from the database
    /// (PostgreSQL: run with the archive role's database_url).
    Archive {
        #[arg(long)]
        up_to: i64,
        #[arg(long, short)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Default)]
pub struct FilterArgs {
    /// Inclusive lower bound, RFC 3339.
    #[arg(long)]
    from: Option<String>,
    /// Exclusive upper bound, RFC 3339.
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    wallet: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    decision: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    policy_id: Option<String>,
    #[arg(long)]
    digest: Option<String>,
    #[arg(long)]
    request_id: Option<String>,
}

impl FilterArgs {
    fn filter(self) -> Filter {
        Filter {
            from: self.from,
            to: self.to,
            app: self.app,
            wallet: self.wallet,
            action: self.action,
            decision: self.decision,
            kind: self.kind,
            policy_id: self.policy_id,
            digest: self.digest,
            request_id: self.request_id,
        }
    }
}

pub fn run(command: AuditCommand, config: &Config) -> Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async {
        let store = Store::open(&config.database_url, &StoreOptions::default())
            .await
            .context("opening the audit store")?;
        let code = dispatch(command, config, &store).await;
        store.close().await;
        code
    })
}

async fn dispatch(command: AuditCommand, config: &Config, store: &Store) -> Result<ExitCode> {
    match command {
        AuditCommand::Query {
            filter,
            cursor,
            limit,
            json,
        } => {
            let after = match cursor {
                Some(c) => parapet_gateway::audit::Cursor::parse(&c)?.0,
                None => 0,
            };
            let limit = limit.clamp(1, 1000);
            let mut pager = Pager::new(
                store.clone(),
                &filter.filter(),
                after,
                Some(u64::from(limit)),
            )?;
            let page = pager.next_page().await?;
            let next = (page.len() == limit as usize).then(|| pager.cursor().to_string());
            if json {
                let events: Vec<serde_json::Value> = page
                    .iter()
                    .map(|e| serde_json::from_str(&e.canonical).unwrap_or_default())
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"events": events, "next_cursor": next})
                );
            } else {
                for e in &page {
                    let v: serde_json::Value =
                        serde_json::from_str(&e.canonical).unwrap_or_default();
                    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
                    println!(
                        "{:>8} {} {:<8} {:<8} {:<20} {} {}",
                        e.seq,
                        s("time"),
                        s("kind"),
                        s("decision"),
                        s("action"),
                        s("wallet"),
                        s("request_id")
                    );
                }
                if let Some(n) = next {
                    println!("more: --cursor {n}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            filter,
            format,
            out,
        } => {
            let Some(format) = Format::parse(&format) else {
                bail!("--format must be ndjson or csv");
            };
            let n = match out {
                Some(path) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(&path)
                            .with_context(|| format!("creating {}", path.display()))?,
                    );
                    export::write_all(store.clone(), &filter.filter(), format, &mut f).await?
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout());
                    export::write_all(store.clone(), &filter.filter(), format, &mut w).await?
                }
            };
            eprintln!("exported {n} events");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            checkpoints,
            archive,
            public_key,
            json,
        } => {
            let mut rows = Vec::new();
            for path in &archive {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                rows.extend(
                    export::parse_ndjson(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                );
            }
            let default_cps = checkpoint::default_checkpoint_path(&config.data_dir);
            let cp_path = checkpoints.or_else(|| default_cps.exists().then_some(default_cps));
            let cps = match &cp_path {
                Some(p) => Some(checkpoint::read_all(p)?),
                None => None,
            };
            let key = match (&cps, public_key) {
                (None, _) => String::new(),
                (Some(_), Some(k)) => k,
                (Some(_), None) => audit_key(config)?.public_key_hex(),
            };
            let report =
                verify::verify(store, &rows, cps.as_deref().map(|c| (c, key.as_str()))).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                match &report.failure {
                    None => println!(
                        "chain ok: {} events ({}..{}), head {}{}{}",
                        report.events,
                        report.first_seq.as_deref().unwrap_or("-"),
                        report.last_seq.as_deref().unwrap_or("-"),
                        report.head_hash,
                        report
                            .archived_up_to
                            .as_deref()
                            .map_or(String::new(), |a| format!(
                                ", archived up to {a}{}",
                                if report.archive_verified {
                                    " (archive verified)"
                                } else {
                                    " (archive not given)"
                                }
                            )),
                        cp_path.as_ref().map_or(String::new(), |p| format!(
                            ", {} checkpoints from {} checked",
                            report.checkpoints_checked,
                            p.display()
                        )),
                    ),
                    Some(f) => println!("TAMPERED at seq {}: {}", f.seq, f.reason),
                }
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Replay { target, json } => {
            let mut r = Replayer::new(store.clone());
            let out = r.replay(&Target::parse(&target)).await?;
            if json {
                println!("{}", serde_json::to_string(&out)?);
            } else {
                println!(
                    "event {} (request {}) under policy version {}",
                    out.seq, out.request_id, out.policy_version
                );
                println!(
                    "  recorded: {} {:?} {:?}",
                    out.recorded.decision, out.recorded.determining, out.recorded.errors
                );
                println!(
                    "  replayed: {} {:?} {:?}",
                    out.replayed.decision, out.replayed.determining, out.replayed.errors
                );
                println!("  {}", if out.matches { "MATCH" } else { "MISMATCH" });
            }
            Ok(if out.matches {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Archive { up_to, out, json } => {
            archive(config, store, up_to, &out, json).await
        }
    }
}

/// The key checkpoints must be signed with: the configured custody's audit key (the HSM's, or
/// the development key file, which is never created here). Never the key a checkpoint line
/// names: anyone can sign a forged line with a key of their own.
fn audit_key(config: &Config) -> Result<Arc<dyn CheckpointSigner>> {
    if config.custody == CustodyKind::File {
        let path = checkpoint::default_key_path(&config.data_dir);
        if !path.exists() {
            bail!("no audit key at {}; pass --public-key", path.display());
        }
        return Ok(Arc::new(FileSigner::load_or_create(&path)?));
    }
    parapet_gateway::custody::checkpoint_signer(config.custody_config())
        .context("opening the HSM audit key (or pass --public-key)")
}

/// The archive procedure: export the prefix, check it, sign a checkpoint of its last event
/// (into the checkpoint file and next to the archive), then remove it through the store's
/// privileged path.
async fn archive(
    config: &Config,
    store: &Store,
    up_to: i64,
    out: &Path,
    json: bool,
) -> Result<ExitCode> {
    let target = store
        .by_seq(up_to)
        .await?
        .with_context(|| format!("event {up_to} is not in the database"))?;
    let report = verify::verify(store, &[], None).await?;
    if !report.ok {
        bail!(
            "the chain does not verify; refusing to archive: {:?}",
            report.failure
        );
    }
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let mut pager = Pager::new(store.clone(), &Filter::default(), 0, None)?;
    let mut n = 0u64;
    'pages: loop {
        let page = pager.next_page().await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if e.seq > up_to {
                break 'pages;
            }
            f.write_all(export::ndjson_line(e).as_bytes())?;
            n += 1;
        }
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    drop(f);
    let signer = parapet_gateway::custody::checkpoint_signer(config.custody_config())?;
    let cp = Checkpoint::sign(
        signer.as_ref(),
        target.seq,
        &target.hash,
        time::OffsetDateTime::now_utc(),
    )?;
    checkpoint::append(&checkpoint::default_checkpoint_path(&config.data_dir), &cp)?;
    let cp_file = PathBuf::from(format!("{}.checkpoint.json", out.display()));
    std::fs::write(&cp_file, format!("{}\n", serde_json::to_string(&cp)?))?;
    let removed = store
        .archive_prefix(
            &Head {
                seq: target.seq,
                hash: target.hash.clone(),
            },
            time::OffsetDateTime::now_utc(),
        )
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"archived_up_to": up_to.to_string(), "exported": n, "removed": removed, "archive": out.display().to_string(), "checkpoint": cp_file.display().to_string()})
        );
    } else {
        println!(
            "archived {n} events up to seq {up_to} into {} (checkpoint {}); removed {removed} from the database",
            out.display(),
            cp_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
