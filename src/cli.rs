//! The command line: `serve`, `check-config`, `token create|list|revoke`, `sweep`,
//! `audit verify|export|seal`, `store copy` and `breached-index build`.
//!
//! Exit codes follow sysexits(3) so service managers and scripts can tell problems
//! apart: 0 ok, 64 bad usage, 65 the audit log was tampered with or the breached-password
//! list cannot be indexed (the message says which line is wrong), 69 a service is
//! unreachable, 70 internal failure, 73 an output file cannot be written, 78 bad
//! configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::account::Population;
use crate::app;
use crate::auth::Role;
use crate::config::{self, Config, LogFormat};

pub const EXIT_USAGE: u8 = 64;
pub const EXIT_DATAERR: u8 = 65;
pub const EXIT_CANTCREAT: u8 = 73;
pub const EXIT_UNAVAILABLE: u8 = 69;
pub const EXIT_SOFTWARE: u8 = 70;
pub const EXIT_CONFIG: u8 = 78;
/// Lines of a sweep's report read per page when the CLI prints it.
const REPORT_PAGE: u32 = 1000;
/// Accounts `lockbridge sweep` lists without `--all`.
const LISTED: u32 = 100;

#[derive(Debug, Parser)]
#[command(
    name = "lockbridge",
    version,
    about = "Password management for an LDAP directory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Configuration file (TOML); see config/lockbridge.example.toml.
    #[arg(
        long,
        short,
        env = "LOCKBRIDGE_CONFIG",
        default_value = "/etc/lockbridge/lockbridge.toml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ConfigArg),
    /// Validate the configuration, connect to the directory and the mail relay, and report.
    CheckConfig(ConfigArg),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run one password-expiry sweep now: queue the notices that are due.
    Sweep {
        #[command(flatten)]
        config: ConfigArg,
        /// Show what would be sent; send and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Sweep as of this time (RFC 3339, e.g. 2026-03-01T06:00:00Z) instead of now.
        #[arg(long)]
        at: Option<String>,
        /// List every account with a notice, not only the first 100.
        #[arg(long)]
        all: bool,
    },
    /// Check or export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// lockbridge's own state (tokens, audit log, outbox, ...): move it to PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Reset one user's password now, as the operator (audited as `cli`): a generated
    /// password is printed once on standard output.
    Reset {
        #[command(flatten)]
        config: ConfigArg,
        /// The user's sign-in name.
        user: String,
        /// Set the password read from this file instead of generating one.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Do not require a change at next sign-in.
        #[arg(long)]
        no_require_change: bool,
    },
    /// Reset the passwords of many users as a job (generated, must change), with a
    /// progress bar and a summary; the new passwords go to --report and/or each user's
    /// alternate address.
    BulkReset {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        selection: SelectionArgs,
        /// Write the CSV of new passwords here (created with mode 0600).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Mail each user's new password to their alternate address.
        #[arg(long)]
        deliver_to_alternate_email: bool,
        /// Do not require a change at next sign-in.
        #[arg(long)]
        no_require_change: bool,
    },
    /// The index of the breached-password list (password_policy.breached_passwords_file).
    #[command(subcommand)]
    BreachedIndex(BreachedIndexCommand),
    /// Require a password change at next sign-in for many users as a job (--undo: stop
    /// requiring it).
    ForceChange {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        selection: SelectionArgs,
        #[arg(long)]
        undo: bool,
    },
}

/// Which accounts a bulk command covers: exactly one of the four.
#[derive(Debug, clap::Args)]
pub struct SelectionArgs {
    /// Sign-in names, comma-separated.
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// The direct members of this group (its DN).
    #[arg(long)]
    group: Option<String>,
    /// The users that also match this LDAP filter, e.g. '(departmentNumber=Sales)'.
    #[arg(long)]
    filter: Option<String>,
    /// Every user.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
pub enum BreachedIndexCommand {
    /// Build (or rebuild) the index of the breached-password list, with a progress bar:
    /// about a minute per 100 million hashes, and the memory of one 256th of the list.
    /// The running daemon keeps the index it mapped until it is restarted.
    Build {
        /// Configuration file, for password_policy.breached_passwords_file and
        /// breached_index_file; not read when both --list and --index are given.
        #[arg(
            long,
            short,
            env = "LOCKBRIDGE_CONFIG",
            default_value = "/etc/lockbridge/lockbridge.toml"
        )]
        config: PathBuf,
        /// The list of SHA-1 hashes (HASH:COUNT or HASH a line, sorted by hash).
        #[arg(long)]
        list: Option<PathBuf>,
        /// Where to write the index.
        #[arg(long)]
        index: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no audit record was changed, removed or reordered: recompute the hash
    /// chain and check every signed seal. Exit 65 names the first bad record.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write audit records as JSON lines (one record per line, oldest first, with their
    /// chain hashes), e.g. for a SIEM.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Only records at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Sign the chain's head now (the daemon does so every audit.seal_interval_secs and
    /// at shutdown), e.g. before a backup.
    Seal {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy everything in the SQLite store of --config (API tokens, the audit log and its
    /// seals, the notice ledger, the outbox, sweep history, jobs, sessions, self-service)
    /// into the EMPTY PostgreSQL store of --to-config, in one transaction: all or
    /// nothing. Stop every instance first. Both configurations must have the same master
    /// key. The SQLite file is only read. See docs/store.md.
    Copy {
        #[command(flatten)]
        config: ConfigArg,
        /// The configuration the instances will run with: its [store] names the
        /// PostgreSQL database (kind = "postgres").
        #[arg(long, value_name = "NEW_CONFIG")]
        to_config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once on standard output.
    Create {
        #[command(flatten)]
        config: ConfigArg,
        /// A unique name, shown in the audit log (e.g. "helpdesk-anna").
        #[arg(long)]
        name: String,
        /// A role of docs/roles.md: global-admin, privileged-authentication-admin, user-admin,
        /// helpdesk-admin, password-admin, auditor, or scim (an identity provider's token).
        #[arg(long)]
        role: String,
    },
    /// List tokens (names and roles, never the tokens).
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a token by name.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        name: String,
    },
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("lockbridge: {message}");
    ExitCode::from(code)
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path, std::env::vars()).map_err(|e| fail(EXIT_CONFIG, e))
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.server.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.server.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs `cli` on the runtime its command needs, and says how it ended.
///
/// - `serve`: a multi-threaded runtime of `server.worker_threads` workers (see
///   [`crate::config::ServerConfig::worker_threads`]).
/// - `sweep`: one thread. A one-shot sweep is one stream consumed in order: a second
///   thread would only be woken for every entry.
/// - the other commands: tokio's default.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => {
            let config = match load(&args.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let workers = config.server.worker_threads();
            on_runtime(
                tokio::runtime::Builder::new_multi_thread().worker_threads(workers),
                serve(config),
            )
        }
        Command::Sweep {
            config,
            dry_run,
            at,
            all,
        } => on_runtime(
            &mut tokio::runtime::Builder::new_current_thread(),
            sweep(config, dry_run, at, all),
        ),
        // Reading a file and building filters: no runtime needed.
        Command::BreachedIndex(cmd) => breached_index(cmd),
        command => on_runtime(
            &mut tokio::runtime::Builder::new_multi_thread(),
            run(Cli { command }),
        ),
    }
}

fn on_runtime(
    builder: &mut tokio::runtime::Builder,
    command: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    match builder.enable_all().build() {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => fail(
            EXIT_SOFTWARE,
            format!("cannot start the async runtime: {e}"),
        ),
    }
}

/// Runs `cli` on the caller's runtime (`serve` loads its configuration first).
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => match load(&args.config) {
            Ok(config) => serve(config).await,
            Err(code) => code,
        },
        Command::CheckConfig(args) => check_config(args).await,
        Command::Token(cmd) => token(cmd).await,
        Command::Sweep {
            config,
            dry_run,
            at,
            all,
        } => sweep(config, dry_run, at, all).await,
        Command::Audit(cmd) => audit(cmd).await,
        Command::Store(cmd) => store(cmd).await,
        Command::BreachedIndex(cmd) => tokio::task::spawn_blocking(move || breached_index(cmd))
            .await
            .unwrap_or_else(|e| fail(EXIT_SOFTWARE, e)),
        Command::Reset {
            config,
            user,
            password_file,
            no_require_change,
        } => reset(config, user, password_file, !no_require_change).await,
        Command::BulkReset {
            config,
            selection,
            report,
            deliver_to_alternate_email,
            no_require_change,
        } => {
            let kind = crate::bulk::JobKind::PasswordReset {
                generated: true,
                require_change: !no_require_change,
                deliver_to_alternate: deliver_to_alternate_email,
                report: report.is_some(),
            };
            if report.is_none() && !deliver_to_alternate_email {
                return fail(
                    EXIT_USAGE,
                    "the generated passwords would be lost: give --report FILE, \
                     --deliver-to-alternate-email, or both",
                );
            }
            bulk_job(config, selection, kind, report).await
        }
        Command::ForceChange {
            config,
            selection,
            undo,
        } => {
            let kind = crate::bulk::JobKind::RequireChange { required: !undo };
            bulk_job(config, selection, kind, None).await
        }
    }
}

fn breached_index(cmd: BreachedIndexCommand) -> ExitCode {
    let BreachedIndexCommand::Build {
        config,
        list,
        index,
    } = cmd;
    let (list, index) = match (list, index) {
        (Some(list), Some(index)) => (list, index),
        (list, index) => {
            let loaded = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let policy = loaded.password_policy;
            let Some(list) = list.or(policy.breached_passwords_file) else {
                return fail(
                    EXIT_USAGE,
                    format!(
                        "no list to index: give --list FILE or set \
                         password_policy.breached_passwords_file in {}",
                        config.display()
                    ),
                );
            };
            // The configuration always names an index when it names a list.
            let index = index.or(policy.breached_index_file).unwrap_or_else(|| {
                loaded
                    .server
                    .state_dir
                    .join(config::DEFAULT_BREACHED_INDEX_NAME)
            });
            (list, index)
        }
    };
    let size = app::list_stamp(&list).map(|stamp| stamp.len).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} of the list, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let built = app::build_breached_index(&list, &index, &mut |read| bar.set_position(read));
    bar.finish_and_clear();
    match built {
        Ok(summary) => {
            println!(
                "{}: {} hashes from {} lines indexed in {} ({} bytes)",
                list.display(),
                summary.entries,
                summary.lines,
                index.display(),
                summary.index_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_DATAERR, e),
    }
}

/// The operator at the command line, as the account gate sees them.
const CLI_ACTOR: &str = "cli";

async fn reset(
    args: ConfigArg,
    user: String,
    password_file: Option<PathBuf>,
    require_change: bool,
) -> ExitCode {
    use crate::account::{PasswordChoice, ResetRequest};
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing(&config);
    let choice = match password_file {
        None => PasswordChoice::Generate,
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => PasswordChoice::Chosen(crate::types::Secret::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            )),
            Err(e) => return fail(EXIT_USAGE, format!("cannot read {}: {e}", path.display())),
        },
    };
    let generated = matches!(choice, PasswordChoice::Generate);
    let services = match app::build(&config).await {
        Ok(s) => s,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let result = services
        .account
        .reset_password(
            &crate::account::Actor::system(CLI_ACTOR),
            &user,
            ResetRequest {
                choice,
                require_change,
                send_to: Vec::new(),
                send_to_alternate: false,
                show_password: generated,
                mail_key: None,
            },
        )
        .await;
    match result {
        Ok(receipt) => {
            if let Some(password) = receipt.password {
                println!("{}", password.expose());
            }
            eprintln!(
                "lockbridge: the password of `{}` was reset{}",
                receipt.user.user_name,
                if require_change {
                    "; it must be changed at the next sign-in"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(crate::account::AccountError::UnknownUser(name)) => fail(
            EXIT_USAGE,
            format!("no user named `{name}` in the directory"),
        ),
        Err(e) => fail(EXIT_UNAVAILABLE, e),
    }
}

async fn bulk_job(
    args: ConfigArg,
    selection: SelectionArgs,
    kind: crate::bulk::JobKind,
    report: Option<PathBuf>,
) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing(&config);
    let given = usize::from(!selection.users.is_empty())
        + usize::from(selection.group.is_some())
        + usize::from(selection.filter.is_some())
        + usize::from(selection.all);
    if given != 1 {
        return fail(
            EXIT_USAGE,
            "say which accounts with exactly one of --users a,b,c, --group DN, --filter F or --all",
        );
    }
    if let Some(path) = &report
        && path.exists()
    {
        return fail(
            EXIT_USAGE,
            format!(
                "{} exists; the report is written to a new file only",
                path.display()
            ),
        );
    }
    let services = match app::build(&config).await {
        Ok(s) => s,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let deps = services.bulk.clone();
    let population = Population::of(selection.group.as_deref(), selection.filter.as_deref());
    let names = if selection.users.is_empty() {
        match services.account.user_names(population, None).await {
            Ok(names) => names,
            Err(e) => return fail(EXIT_UNAVAILABLE, e),
        }
    } else {
        selection.users
    };
    if names.is_empty() {
        return fail(
            EXIT_USAGE,
            "the selection holds no account; nothing was done",
        );
    }
    let actor = crate::account::Actor::system(CLI_ACTOR);
    let id = match crate::bulk::create_job(&deps, &actor, kind, None, &names).await {
        Ok(id) => id,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let bar = indicatif::ProgressBar::new(names.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} accounts, {elapsed} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let watch = {
        let store = services.store.clone();
        let bar = bar.clone();
        let id = id.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(Some(job)) = store.get_job(&id).await {
                    bar.set_position(job.done + job.refused + job.failed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
    };
    let result = crate::bulk::run_job(&deps, &id).await;
    watch.abort();
    bar.finish_and_clear();
    let job = match result {
        Ok(Some(job)) => job,
        Ok(None) => return fail(EXIT_SOFTWARE, "the job is being run elsewhere"),
        Err(e) => {
            return fail(
                EXIT_UNAVAILABLE,
                format!("job {id} stopped: {e}; the daemon resumes it, nobody is reset twice"),
            );
        }
    };
    println!("job {} ({})", job.id, job.kind);
    println!();
    println!("{:<28} {:>8}", "accounts", job.total);
    println!("{:<28} {:>8}", "done", job.done);
    println!("{:<28} {:>8}", "refused", job.refused);
    println!("{:<28} {:>8}", "failed", job.failed);
    if job.refused + job.failed > 0
        && let Ok(items) = services.store.job_items_page(&id, None, 1000).await
    {
        println!();
        println!("{:<32} {:<10} code", "user", "outcome");
        for item in items.iter().filter(|i| i.status != "done").take(100) {
            println!(
                "{:<32} {:<10} {}",
                item.user_name,
                item.status,
                item.code.as_deref().unwrap_or("")
            );
        }
    }
    let mut code = if job.failed > 0 {
        ExitCode::from(EXIT_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    };
    if let Some(path) = report {
        match crate::bulk::take_report_csv(&deps, &id).await {
            Ok(Some(csv)) => {
                if let Err(e) = write_private(&path, csv.as_bytes()) {
                    code = fail(
                        EXIT_CANTCREAT,
                        format!(
                            "cannot write {}: {e}; the passwords are lost, reset again",
                            path.display()
                        ),
                    );
                } else {
                    println!();
                    println!(
                        "new passwords: {} (mode 0600; erased from the store)",
                        path.display()
                    );
                }
            }
            Ok(None) => code = fail(EXIT_SOFTWARE, "the report was taken already"),
            Err(e) => code = fail(EXIT_UNAVAILABLE, e),
        }
    }
    code
}

/// Creates `path` readable by its owner only and writes `bytes`.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

async fn audit(cmd: AuditCommand) -> ExitCode {
    use crate::audit::chain;

    let args = match &cmd {
        AuditCommand::Verify { config }
        | AuditCommand::Export { config, .. }
        | AuditCommand::Seal { config } => config,
    };
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match app::open_store(&config).await {
        Ok(s) => s,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let key = app::seal_key(&config);
    match cmd {
        AuditCommand::Verify { .. } => match chain::verify(store.as_ref(), &key).await {
            Ok(v) => {
                if let Some(problem) = &v.problem {
                    println!("audit log: TAMPERED: {problem}");
                    println!(
                        "{} records before it are intact{}",
                        v.records,
                        v.last_id
                            .map(|id| format!(" (up to record {id})"))
                            .unwrap_or_default()
                    );
                    return ExitCode::from(EXIT_DATAERR);
                }
                match v.last_id {
                    Some(last) => println!(
                        "audit log: {} records (up to record {last}), chain intact",
                        v.records
                    ),
                    None => println!("audit log: empty"),
                }
                match v.last_sealed {
                    Some((id, at)) => println!(
                        "seals: {} checked; the newest covers record {id} (sealed {})",
                        v.seals,
                        at.to_rfc3339()
                    ),
                    None => println!("seals: none yet"),
                }
                if v.unsealed > 0 {
                    println!(
                        "{} records after the newest seal are covered by the chain only, until \
                         the next seal",
                        v.unsealed
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_UNAVAILABLE, e),
        },
        AuditCommand::Export { since, output, .. } => {
            let since = match since.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
                None => None,
                Some(Ok(t)) => Some(t.with_timezone(&chrono::Utc)),
                Some(Err(_)) => {
                    return fail(
                        EXIT_USAGE,
                        "--since must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
                    );
                }
            };
            let mut out: Box<dyn std::io::Write> = match &output {
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
                Some(path) => match std::fs::File::create(path) {
                    Ok(f) => Box::new(std::io::BufWriter::new(f)),
                    Err(e) => {
                        return fail(
                            EXIT_CANTCREAT,
                            format!("cannot create {}: {e}", path.display()),
                        );
                    }
                },
            };
            match chain::export(store.as_ref(), since, &mut out).await {
                Ok(n) => {
                    drop(out);
                    eprintln!("exported {n} audit records");
                    ExitCode::SUCCESS
                }
                Err(e @ chain::ExportError::Write(_)) => fail(EXIT_CANTCREAT, e),
                Err(e) => fail(EXIT_UNAVAILABLE, e),
            }
        }
        AuditCommand::Seal { .. } => match chain::seal(store.as_ref(), &key).await {
            Ok(Some(s)) => {
                println!("sealed the audit chain at record {}", s.record_id);
                ExitCode::SUCCESS
            }
            Ok(None) => {
                println!("nothing to seal: the audit log is empty or already sealed");
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_UNAVAILABLE, e),
        },
    }
}

async fn store(cmd: StoreCommand) -> ExitCode {
    use subtle::ConstantTimeEq;

    use crate::config::StoreKind;
    use crate::store::copy::{self, CopyError};

    let StoreCommand::Copy { config, to_config } = cmd;
    let source = match load(&config.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let target = match load(&to_config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if source.store.kind != StoreKind::Sqlite {
        return fail(
            EXIT_USAGE,
            format!(
                "{} names a PostgreSQL store; --config must name the SQLite store to copy from",
                config.config.display()
            ),
        );
    }
    if target.store.kind != StoreKind::Postgres {
        return fail(
            EXIT_USAGE,
            format!(
                "{} names a SQLite store; --to-config must name the PostgreSQL store to copy \
                 into (store.kind = \"postgres\")",
                to_config.display()
            ),
        );
    }
    // Token and session hashes are keyed, mail and job secrets sealed and audit seals
    // signed with keys derived from the master key: under another key the copy is useless.
    if !bool::from(source.master_key.expose().ct_eq(target.master_key.expose())) {
        return fail(
            EXIT_CONFIG,
            format!(
                "{} and {} have different master keys (security.master_key or \
                 master_key_file): API tokens, sessions, sealed mail secrets and audit seals \
                 would not work on the copy. Give the new configuration the same master key; \
                 nothing was copied",
                config.config.display(),
                to_config.display()
            ),
        );
    }
    let target_url = target.store.url.clone().unwrap_or_default();
    eprintln!(
        "lockbridge: copying {} into {target_url} (every instance must be stopped)",
        source.store_path.display()
    );
    let report =
        match copy::sqlite_to_postgres(&source.store_path, &app::postgres_options(&target)).await {
            Ok(report) => report,
            Err(e) => {
                let code = match &e {
                    CopyError::NoSource(_) => EXIT_CONFIG,
                    CopyError::SourceSchema { .. } => EXIT_USAGE,
                    CopyError::TargetNotEmpty(_) => EXIT_CANTCREAT,
                    CopyError::BadValue { .. } | CopyError::AuditTime { .. } => EXIT_DATAERR,
                    CopyError::SchemaDrift(_) | CopyError::Mismatch(_) => EXIT_SOFTWARE,
                    CopyError::Source { .. }
                    | CopyError::SourceInUse(_)
                    | CopyError::Target(_)
                    | CopyError::TargetBusy => EXIT_UNAVAILABLE,
                };
                return fail(
                    code,
                    format!("{e}\nnothing was copied: the PostgreSQL database is as it was"),
                );
            }
        };
    println!("copied {} into {target_url}", source.store_path.display());
    println!();
    println!("{:<24} {:>10}", "table", "rows");
    for (table, rows) in &report.tables {
        println!("{table:<24} {rows:>10}");
    }
    let total: u64 = report.tables.iter().map(|(_, n)| n).sum();
    println!("{:<24} {total:>10}", "total");
    println!();
    // The same check `lockbridge audit verify` makes, on the copy as the instances will
    // read it.
    let copied = match app::open_store(&target).await {
        Ok(s) => s,
        Err(e) => {
            return fail(
                EXIT_UNAVAILABLE,
                format!(
                    "the copy is committed, but cannot be opened to check its audit log: {e}; \
                     run `lockbridge audit verify --config {}`",
                    to_config.display()
                ),
            );
        }
    };
    match crate::audit::chain::verify(copied.as_ref(), &app::seal_key(&target)).await {
        Ok(v) if v.problem.is_none() => match v.last_id {
            Some(last) => println!(
                "audit log on PostgreSQL: {} records (up to record {last}), chain intact; \
                     {} seals checked",
                v.records, v.seals
            ),
            None => println!("audit log on PostgreSQL: empty"),
        },
        Ok(v) => {
            println!(
                "audit log on PostgreSQL: {}",
                v.problem.map(|p| p.to_string()).unwrap_or_default()
            );
            println!(
                "the copy holds the log exactly as SQLite does: `lockbridge audit verify \
                 --config {}` reports the same",
                config.config.display()
            );
            return ExitCode::from(EXIT_DATAERR);
        }
        Err(e) => {
            return fail(
                EXIT_UNAVAILABLE,
                format!("the copy is committed, but its audit log could not be checked: {e}"),
            );
        }
    }
    println!();
    println!("next:");
    println!(
        "  1. start the instances with {} (they share the database)",
        to_config.display()
    );
    println!(
        "  2. keep {} as a backup, and start no instance on it again: its state would part \
         from the copy's",
        source.store_path.display()
    );
    ExitCode::SUCCESS
}

async fn serve(config: Config) -> ExitCode {
    init_tracing(&config);
    let address = match config.server.listen_addr() {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                EXIT_UNAVAILABLE,
                format!("cannot listen on {address} (server.listen): {e}"),
            );
        }
    };
    match app::serve(config, listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (app::AppError::Directory(_) | app::AppError::Schedule(_))) => fail(EXIT_CONFIG, e),
        Err(e) => fail(EXIT_SOFTWARE, e),
    }
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn check_config(args: ConfigArg) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("configuration: {}: valid", args.config.display());
    let mut ok = true;
    for (component, result) in app::check(&config).await {
        match result {
            Ok(text) => println!("{component}: ok: {text}"),
            Err(text) => {
                ok = false;
                println!("{component}: FAILED: {text}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_UNAVAILABLE)
    }
}

async fn token(cmd: TokenCommand) -> ExitCode {
    let (args, action) = match cmd {
        TokenCommand::Create { config, name, role } => (config, TokenAction::Create(name, role)),
        TokenCommand::List { config } => (config, TokenAction::List),
        TokenCommand::Revoke { config, name } => (config, TokenAction::Revoke(name)),
    };
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store = match app::open_store(&config).await {
        Ok(s) => s,
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let tokens = app::token_service(&config, store.clone());
    let audit = crate::audit::AuditLog::new(store);
    let actor = format!("cli:{}", whoami());
    match action {
        TokenAction::Create(name, role) => {
            let role = match role.parse::<Role>() {
                Ok(r) => r,
                Err(e) => return fail(EXIT_USAGE, e),
            };
            if name.trim().is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return fail(EXIT_USAGE, "--name must be 1 to 100 printable characters");
            }
            match tokens.create(&name, role).await {
                Ok(issued) => {
                    record(
                        &audit,
                        &actor,
                        crate::audit::Action::TokenCreated,
                        &name,
                        role,
                    )
                    .await;
                    eprintln!(
                        "created token `{}` with role {}; it is shown once, below. Store it in a secret manager.",
                        issued.name, issued.role
                    );
                    println!("{}", issued.token.expose());
                    ExitCode::SUCCESS
                }
                Err(crate::store::StoreError::Conflict(_)) => fail(
                    EXIT_USAGE,
                    format!(
                        "a token named `{name}` exists already; choose another name or revoke it first"
                    ),
                ),
                Err(e) => fail(EXIT_UNAVAILABLE, e),
            }
        }
        TokenAction::List => match tokens.list().await {
            Ok(list) => {
                println!("{:<32} {:<16} {:<25} revoked", "name", "role", "created");
                for t in list {
                    println!(
                        "{:<32} {:<16} {:<25} {}",
                        t.name,
                        t.role,
                        t.created_at.to_rfc3339(),
                        t.revoked_at
                            .map(|r| r.to_rfc3339())
                            .unwrap_or_else(|| "-".into())
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_UNAVAILABLE, e),
        },
        TokenAction::Revoke(name) => match tokens.revoke(&name).await {
            Ok(true) => {
                record(
                    &audit,
                    &actor,
                    crate::audit::Action::TokenRevoked,
                    &name,
                    Role::GlobalAdmin,
                )
                .await;
                eprintln!(
                    // Each daemon polls the revocation mark (`auth::REVOCATION_POLL`).
                    "revoked token `{name}`; every running lockbridge stops accepting it within a second"
                );
                ExitCode::SUCCESS
            }
            Ok(false) => fail(
                EXIT_USAGE,
                format!("no active token named `{name}` (see `lockbridge token list`)"),
            ),
            Err(e) => fail(EXIT_UNAVAILABLE, e),
        },
    }
}

enum TokenAction {
    Create(String, String),
    List,
    Revoke(String),
}

async fn record(
    audit: &crate::audit::AuditLog,
    actor: &str,
    action: crate::audit::Action,
    name: &str,
    role: Role,
) {
    let _ = audit
        .record(crate::audit::AuditEvent {
            actor: actor.to_string(),
            action,
            target: Some(name.to_string()),
            outcome: crate::audit::Outcome::Success,
            detail: (action == crate::audit::Action::TokenCreated).then_some(
                crate::audit::Detail::Token {
                    role: role.as_str(),
                },
            ),
            request_id: None,
        })
        .await;
}

fn whoami() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

async fn sweep(args: ConfigArg, dry_run: bool, at: Option<String>, all: bool) -> ExitCode {
    use crate::sweep::engine::{SweepError, SweepRequest, Trigger, run_once};

    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing(&config);
    let at = match at.as_deref().map(chrono::DateTime::parse_from_rfc3339) {
        None => chrono::Utc::now(),
        Some(Ok(t)) => t.with_timezone(&chrono::Utc),
        Some(Err(_)) => {
            return fail(
                EXIT_USAGE,
                "--at must be an RFC 3339 time such as 2026-03-01T06:00:00Z",
            );
        }
    };
    let services = match app::build(&config).await {
        Ok(s) => s,
        Err(e @ app::AppError::Schedule(_)) => return fail(EXIT_CONFIG, e),
        Err(e) => return fail(EXIT_UNAVAILABLE, e),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let progress_bar = bar.clone();
    let progress = move |run: &crate::store::SweepRun| {
        progress_bar.set_message(format!(
            "{} accounts scanned, {} notices {}",
            run.scanned,
            run.notified,
            if run.dry_run { "due" } else { "queued" }
        ));
    };
    let request = SweepRequest::new(at, dry_run, Trigger::Cli);
    let result = run_once(&services.sweep, request, &progress).await;
    bar.finish_and_clear();
    let outcome = match result {
        Ok(o) => o,
        Err(SweepError::AlreadyRunning) => {
            return fail(EXIT_UNAVAILABLE, SweepError::AlreadyRunning);
        }
        Err(e) => return fail(EXIT_UNAVAILABLE, format!("the sweep failed: {e}")),
    };
    let run = &outcome.run;
    println!(
        "sweep {} as of {}{}",
        run.id,
        run.at.to_rfc3339(),
        if dry_run {
            " (dry run: nothing sent)"
        } else {
            ""
        }
    );
    println!();
    println!("{:<28} {:>8}", "accounts scanned", run.scanned);
    println!(
        "{:<28} {:>8}",
        if dry_run {
            "notices due"
        } else {
            "notices queued"
        },
        run.notified
    );
    println!(
        "{:<28} {:>8}",
        "already notified earlier", run.already_notified
    );
    println!("{:<28} {:>8}", "expired", run.expired);
    println!("{:<28} {:>8}", "due but no mail address", run.no_mail);
    println!(
        "{:<28} {:>8}",
        "without a change time", outcome.no_change_time
    );
    println!(
        "{:<28} {:>8}",
        "long expired, left alone", outcome.expired_beyond_horizon
    );
    println!("{:<28} {:>8}", "failed", run.failed);
    if let Some(cap) = outcome.daily_cap {
        println!("{:<28} {:>8}", "bulk mail waiting", cap.waiting);
        if cap.beyond_today > 0 {
            println!(
                "outbox.max_bulk_per_day = {} ({} sent in the last 24 h): {} of them wait for \
                 the following days",
                cap.limit, cap.sent_last_day, cap.beyond_today
            );
        }
    }
    // The accounts, read back page by page from the sweep's report in the store; on a
    // large directory tens of thousands, so only the first ones unless --all.
    let mut after = None;
    let mut listed = 0;
    loop {
        let wanted = if all {
            REPORT_PAGE
        } else {
            LISTED.saturating_sub(listed)
        };
        if wanted == 0 {
            let more = services
                .sweep
                .store
                .sweep_report_page(&run.id, after, 1)
                .await
                .is_ok_and(|next| !next.is_empty());
            if more {
                println!("... (more accounts: --all lists every one; so does the digest's CSV)");
            }
            break;
        }
        let page = match services
            .sweep
            .store
            .sweep_report_page(&run.id, after, wanted.min(REPORT_PAGE))
            .await
        {
            Ok(page) => page,
            Err(e) => {
                return fail(
                    EXIT_UNAVAILABLE,
                    format!("cannot read the sweep's report: {e}"),
                );
            }
        };
        if after.is_none() && !page.is_empty() {
            println!();
            println!(
                "{:<24} {:<8} {:<14} {:>5}  expires",
                "user", "notice", "status", "days"
            );
        }
        for line in &page {
            println!(
                "{:<24} {:<8} {:<14} {:>5}  {}",
                line.user_name, line.notice, line.status, line.days_left, line.expires_at_local
            );
        }
        listed += u32::try_from(page.len()).unwrap_or(u32::MAX);
        match page.last() {
            Some(last) if page.len() == wanted.min(REPORT_PAGE) as usize => {
                after = Some(last.seq);
            }
            _ => break,
        }
    }
    if !dry_run && run.notified > 0 {
        println!();
        println!("the running daemon delivers the queued messages (outbox)");
    }
    if run.failed > 0 {
        ExitCode::from(EXIT_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    }
}
