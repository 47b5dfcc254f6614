//! `parapet`: the one binary. Wiring only: parse the command line, load configuration, call the
//! gateway library.

mod apps_cmd;
mod audit_cmd;
mod device_cmd;
mod device_file;
mod device_transfer_cmd;
mod gateway_calls;
mod recovery_cmd;
mod users_cmd;
mod wallet_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: a decision allocates and frees many small objects
/// (Cedar values, JSON forms), and glibc's malloc, free and consolidation took about a sixth of
/// the server's CPU under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use parapet_gateway::config::{Config, LogFormat};
use parapet_gateway::ledger::MemoryLedger;
use parapet_gateway::policy::{self, LoadedPolicies, PolicyPaths};
use parapet_gateway::records::AppRecord;
use parapet_gateway::request::AuthorizeRequest;
use parapet_gateway::service::pipeline;

#[derive(Parser)]
#[command(
    name = "parapet",
    version,
    about = "Policy-enforcing co-signing gateway for EVM wallets"
)]
struct Cli {
    /// Configuration file (default: ./parapet.toml when present). `PARAPET_*` variables override it.
    #[arg(long, global = true, env = "PARAPET_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded defaults without a config: SQLite under ./data, shipped policies, 127.0.0.1:8080).
    Serve,
    /// Work with the Cedar policy set.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Create, list, freeze, unfreeze and revoke apps and their API keys (same config as serve).
    Apps {
        #[command(subcommand)]
        command: Box<apps_cmd::AppsCommand>,
    },
    /// List users and disable them (same config as serve).
    Users {
        #[command(subcommand)]
        command: users_cmd::UsersCommand,
    },
    /// Query, export, verify, replay and archive the audit log (reads the same config as serve).
    Audit {
        #[command(subcommand)]
        command: Box<audit_cmd::AuditCommand>,
    },
    /// Set up the gateway's keys on the configured PKCS#11 token (hsm_module, hsm_token_label, hsm_pin).
    Hsm {
        #[command(subcommand)]
        command: HsmCommand,
    },
    /// The device side: pair this machine with your account, show what it is paired as.
    Device {
        #[command(subcommand)]
        command: device_cmd::DeviceCommand,
    },
    /// The device's wallets: create one with the gateway, sign with one, list them.
    Wallet {
        #[command(subcommand)]
        command: wallet_cmd::WalletCommand,
    },
    /// Your recovery secret on this device: set it up, or check it and this device's kits.
    Recovery {
        #[command(subcommand)]
        command: recovery_cmd::RecoveryCommand,
    },
    /// Decide one request file (the /v1/authorize body) against the policy set, without a server.
    Decide {
        file: PathBuf,
        /// Evaluate at this time (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HsmCommand {
    /// Create the share-sealing key and the audit checkpoint key pair on the token when absent
    /// (keys already there are checked and kept); print the audit public key.
    Init {
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate policies, entities, scopes, schema, token registry and ABIs; print the version.
    Validate {
        /// A directory holding policies/ and schemas/, or a policies directory.
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Format the .cedar files with Cedar's formatter; with --check, only report files that would change.
    Fmt {
        /// A directory holding policies/ and schemas/, or a policies directory.
        dir: Option<PathBuf>,
        #[arg(long)]
        check: bool,
    },
    /// Run the test cases in policies/tests/*.json and print a pass/fail table.
    Test {
        /// A directory holding policies/ and schemas/, or a policies directory.
        dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Config::process_env();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("parapet: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format, matches!(cli.command, Command::Serve));
    match run(cli.command, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("parapet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat, serving: bool) {
    let default = if serving {
        "info,tower_http=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PARAPET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(command: Command, config: Config) -> Result<ExitCode> {
    match command {
        Command::Serve => {
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(parapet_gateway::server::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => policy_command(command, &config),
        Command::Apps { command } => apps_cmd::run(*command, &config),
        Command::Audit { command } => audit_cmd::run(*command, &config),
        Command::Hsm {
            command: HsmCommand::Init { json },
        } => hsm_init(json, &config),
        Command::Users { command } => users_cmd::run(command, &config),
        Command::Device { command } => device_cmd::run(command),
        Command::Wallet { command } => wallet_cmd::run(command),
        Command::Recovery { command } => recovery_cmd::run(command),
        Command::Decide { file, now, json } => decide(&file, now.as_deref(), json, &config),
    }
}

fn hsm_init(json: bool, config: &Config) -> Result<ExitCode> {
    let report = parapet_gateway::custody::init(config.custody_config())?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let what = |created: bool| {
        if created {
            "created"
        } else {
            "already present, kept"
        }
    };
    println!("token {:?} ({})", report.token_label, report.module);
    println!(
        "  share key {:?}: {}",
        report.share_key_label,
        what(report.created_share_key)
    );
    println!(
        "  audit key {:?}: {}",
        report.audit_key_label,
        what(report.created_audit_key)
    );
    println!("audit public key: {}", report.audit_public_key);
    if config.custody != parapet_gateway::config::CustodyKind::Hsm {
        eprintln!(
            "note: custody is \"file\"; set custody = \"hsm\" (or PARAPET_CUSTODY=hsm) for serve to use these keys"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `DIR` may be a project root (with policies/ and schemas/) or a policies directory.
fn policy_paths(dir: Option<&Path>, config: &Config) -> PolicyPaths {
    match dir {
        Some(d) if d.join("policies").is_dir() => PolicyPaths {
            policies: d.join("policies"),
            schemas: d.join("schemas"),
        },
        Some(d) => PolicyPaths {
            policies: d.to_path_buf(),
            schemas: config.schemas_dir.clone(),
        },
        None => PolicyPaths {
            policies: config.policies_dir.clone(),
            schemas: config.schemas_dir.clone(),
        },
    }
}

fn policy_command(command: PolicyCommand, config: &Config) -> Result<ExitCode> {
    match command {
        PolicyCommand::Validate { dir, json } => {
            let paths = policy_paths(dir.as_deref(), config);
            match LoadedPolicies::load(&paths) {
                Ok(set) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": true, "policy_version": set.version()})
                        );
                    } else {
                        println!("policy set valid; version {}", set.version());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    let problems = match &e {
                        parapet_decide::Error::PolicySetInvalid(list) => list.clone(),
                        other => vec![other.to_string()],
                    };
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"valid": false, "errors": problems})
                        );
                    } else {
                        for p in &problems {
                            eprintln!("{p}");
                        }
                        eprintln!("policy set invalid ({} problem(s))", problems.len());
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PolicyCommand::Fmt { dir, check } => {
            let paths = policy_paths(dir.as_deref(), config);
            fmt_policies(&paths.policies, check)
        }
        PolicyCommand::Test { dir, json } => {
            let paths = policy_paths(dir.as_deref(), config);
            let results = policy::run_cases(&paths)?;
            let failed = results.iter().filter(|r| !r.passed).count();
            if json {
                let passed = results.len() - failed;
                println!(
                    "{}",
                    serde_json::json!({"passed": passed, "failed": failed, "cases": results})
                );
            } else {
                print!("{}", policy::format_case_table(&results));
            }
            if results.is_empty() {
                eprintln!(
                    "no test cases found in {}",
                    paths.policies.join("tests").display()
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn fmt_policies(dir: &Path, check: bool) -> Result<ExitCode> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    let mut changed = 0usize;
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let formatted = policy::format_policies(&text)
            .with_context(|| format!("formatting {}", file.display()))?;
        if formatted != text {
            changed += 1;
            if check {
                println!("would reformat {}", file.display());
            } else {
                std::fs::write(file, formatted)
                    .with_context(|| format!("writing {}", file.display()))?;
                println!("formatted {}", file.display());
            }
        }
    }
    if check && changed > 0 {
        eprintln!(
            "{changed} of {} file(s) need formatting; run `parapet policy fmt`",
            files.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(file: &Path, now: Option<&str>, json: bool, config: &Config) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let req: AuthorizeRequest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    let now = match now {
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--now {s:?} is not RFC 3339"))?,
        None => time::OffsetDateTime::now_utc(),
    };
    let policies = LoadedPolicies::load(&policy_paths(None, config))?;
    let wallet = pipeline::wallet_from_request(&req)?;
    let ledger = MemoryLedger::default();
    let app = AppRecord::development_default();
    let (_, outcome) = pipeline::evaluate(
        &policies,
        &ledger,
        &app,
        &wallet,
        &req,
        &pipeline::basic_scopes(),
        now,
    )?;
    if json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        println!("decision: {}", outcome.decision);
        println!("action:   {}", outcome.action.as_str());
        println!("digest:   {}", outcome.digest);
        println!("policies: {}", outcome.policy_version);
        for p in &outcome.determining_policies {
            println!("  {:?} {} — {}", p.effect, p.id, p.reason);
        }
        if !outcome.scope_not_approved.is_empty() {
            println!(
                "  scopes not approved: {}",
                outcome.scope_not_approved.join(", ")
            );
        }
        for e in &outcome.errors {
            println!("  error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
