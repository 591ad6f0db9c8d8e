//! `cibmtr-fhir`: the command line of the cibmtr-fhir SDK.
//!
//! Exit status: 0 success; 1 a server or network error; 2 bad input or configuration;
//! 3 `labs submit` finished but some rows failed (see the report).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cibmtr_fhir::auth::{
    ClientAuthMethod, ClientCredentials, KeyAlgorithm, PasswordGrant, StoreKey, TokenStore,
    generate_key,
};
use cibmtr_fhir::cibmtr::{Demographics, LabOptions, SubmitOptions};
use cibmtr_fhir::{Error, ErrorKind};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use clap::{Parser, Subcommand, ValueEnum};

/// `println!` for the command's output. A standard output the reader has closed (`| head`) is
/// not an error: the rest of the output is dropped and the command finishes, its exit status
/// still saying how the work went (`println!` would panic). Any other write error ends the
/// process with status 1 and says why on standard error.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

/// The body of [`outln!`].
fn write_out(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// `value` as pretty JSON and a newline on standard output, streamed (no text of the whole
/// value in memory); like [`outln!`], a closed pipe ends the output quietly.
fn print_json(value: &impl serde::Serialize) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

/// `value` as pretty JSON into a new file at `path`, streamed.
fn write_json_file(path: &std::path::Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(path)?);
    serde_json::to_writer_pretty(&mut out, value)?;
    out.flush()
}

mod demo;
mod journal;
mod labs;
mod settings;

use settings::{ConnectionArgs, secret};

#[derive(Parser)]
#[command(
    name = "cibmtr-fhir",
    version,
    about = "Report to CIBMTR and talk to SMART on FHIR servers without hand-rolled OAuth"
)]
struct Cli {
    /// The profile of the config file to use (default: `default`).
    #[arg(long, global = true, env = "CIBMTR_PROFILE")]
    profile: Option<String>,
    /// The config file (default: $CIBMTR_FHIR_CONFIG or ~/.config/cibmtr-fhir/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log retries, waits and token refreshes to standard error (-v info, -vv debug, -vvv
    /// trace; or CIBMTR_FHIR_LOG=LEVEL). Never shows a secret or patient data.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the sandbox in-process and run the whole CIBMTR workflow against it.
    Demo,
    /// Serve the local sandbox until interrupted; print its URLs and test credentials as JSON.
    Sandbox {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Lifetime of the Okta-like tokens, in seconds.
        #[arg(long, default_value_t = 1800)]
        okta_token_ttl: u64,
    },
    /// Print a valid access token (cached in --store when given). Secrets come from the
    /// environment or a file, never from the command line.
    Token(TokenArgs),
    /// CRID registration.
    Crid {
        #[command(subcommand)]
        command: CridCommand,
    },
    /// The recipient's de-identified Patient.
    Patient {
        #[command(subcommand)]
        command: PatientCommand,
    },
    /// Lab results for form 2402.
    Labs {
        #[command(subcommand)]
        command: LabsCommand,
    },
    /// Print the Observations CIBMTR holds for a CRID, as JSON.
    Observations {
        #[arg(long)]
        crid: i64,
        #[command(flatten)]
        conn: ConnectionArgs,
    },
    /// Key pairs for SMART Backend Services, and the key of a shared token store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The submission journal: list the batches `labs submit --journal` recorded, export one for
    /// audit (CSV or JSON).
    Journal {
        #[command(subcommand)]
        command: journal::JournalCommand,
    },
}

#[derive(Subcommand)]
enum CridCommand {
    /// Register a recipient (or find the CRID already registered) and print the CRID. The SSN,
    /// if any, comes from $CIBMTR_PATIENT_SSN or --ssn-file, never from the command line.
    Register(Box<CridArgs>),
}

#[derive(clap::Args)]
struct CridArgs {
    #[arg(long)]
    first_name: String,
    #[arg(long)]
    last_name: String,
    /// YYYY-MM-DD.
    #[arg(long)]
    birth_date: String,
    /// M or F.
    #[arg(long)]
    gender: String,
    #[arg(long)]
    ssn_file: Option<PathBuf>,
    /// Race code (repeatable): 1002-5, 2028-9, 2054-5, 2076-8, 2106-3, ASKU, UNK.
    #[arg(long)]
    race: Vec<String>,
    /// 2135-2, 2186-5 or UNK.
    #[arg(long)]
    ethnicity: Option<String>,
    #[arg(long)]
    nmdp_rid: Option<i64>,
    #[command(flatten)]
    conn: ConnectionArgs,
}

#[derive(Subcommand)]
enum PatientCommand {
    /// Print the Patient id for a CRID, creating the Patient only if CIBMTR has none.
    Ensure {
        #[arg(long)]
        crid: i64,
        #[command(flatten)]
        conn: ConnectionArgs,
    },
}

#[derive(Subcommand)]
enum LabsCommand {
    /// Submit the labs of a CSV file (columns loinc, value, unit, effective; optional
    /// reference_low, reference_high, comparator, status, display, crid). Rows already at
    /// CIBMTR are not sent again.
    ///
    /// With --journal every row is recorded (by line) before and after its request in a SQLite
    /// journal, so a crash leaves an exact picture; --resume continues an interrupted run of the
    /// same file without sending anything twice. `cibmtr-fhir journal` lists and exports batches.
    Submit {
        #[arg(long)]
        csv: PathBuf,
        /// The recipient; else each row's `crid` column.
        #[arg(long)]
        crid: Option<i64>,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Send transaction Bundles of up to 50 (only for servers that accept them).
        #[arg(long)]
        bundles: bool,
        /// Refuse codes outside the form 2402 catalog.
        #[arg(long)]
        strict: bool,
        /// Convert values to the catalog's preferred unit where the conversion is exact.
        #[arg(long)]
        convert_units: bool,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Print the JSON report instead of the summary.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Record the submission in this journal (SQLite; without a value the default,
        /// ~/.local/share/cibmtr-fhir/journal.sqlite3). Also `journal` in the profile.
        #[arg(long, env = "CIBMTR_JOURNAL", num_args = 0..=1, default_missing_value = "")]
        journal: Option<PathBuf>,
        /// Do not record in a journal, even if the profile names one.
        #[arg(long, conflicts_with_all = ["journal", "resume"])]
        no_journal: bool,
        /// Continue an interrupted batch: the given batch id, or without a value the newest
        /// incomplete batch of this same file. Rows the journal or CIBMTR hold are not sent
        /// again; rows in flight when the run stopped are looked up first. Uses the journal
        /// (the default one if none is named); with nothing to resume, starts a new batch.
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        resume: Option<String>,
        #[command(flatten)]
        conn: ConnectionArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key pair: writes the private key (PKCS#8 PEM, mode 0600) and the public JWKS to
    /// register with the server, and prints the key id.
    Generate {
        #[arg(long, value_enum, default_value = "rs384")]
        algorithm: Alg,
        /// Directory for `private-key.pem` and `jwks.json`.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// Print a new key for a shared (Redis) token store: 32 random bytes in base64. Give the same
    /// key to every process of the fleet as $CIBMTR_FHIR_STORE_KEY (or in a file named by
    /// $CIBMTR_FHIR_STORE_KEY_FILE); it seals the tokens at rest.
    StoreKey,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    Rs384,
    Es384,
}

#[derive(Clone, Copy, ValueEnum)]
enum Flow {
    Password,
    ClientCredentials,
}

#[derive(clap::Args)]
struct TokenArgs {
    #[arg(long, value_enum)]
    flow: Flow,
    #[arg(long, env = "CIBMTR_TOKEN_URL")]
    token_url: String,
    #[arg(long, env = "CIBMTR_CLIENT_ID")]
    client_id: String,
    /// Service-account user (password flow).
    #[arg(long, env = "CIBMTR_USERNAME")]
    username: Option<String>,
    #[arg(long)]
    scope: Option<String>,
    /// client_secret_post (default) or client_secret_basic (client-credentials flow).
    #[arg(long, default_value = "client_secret_post")]
    auth_method: String,
    /// A file holding the client secret (else $CIBMTR_CLIENT_SECRET).
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// A file holding the password (else $CIBMTR_PASSWORD).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Share the token across processes and runs: a file path (mode 0600, one host) or a
    /// redis://, rediss:// or valkey:// URL shared by a fleet of hosts (one token request per
    /// token lifetime between them). A Redis store seals tokens with the key in
    /// $CIBMTR_FHIR_STORE_KEY (`cibmtr-fhir keys store-key` makes one); URL parameters
    /// lock_timeout_ms, timeout_ms and prefix tune it.
    #[arg(long, env = "CIBMTR_TOKEN_STORE")]
    store: Option<String>,
}

/// Exit status for "finished, but some rows failed".
const PARTIAL: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => None,
        1 => Some(tracing::Level::INFO),
        2 => Some(tracing::Level::DEBUG),
        _ => Some(tracing::Level::TRACE),
    };
    match level {
        Some(level) => cibmtr_fhir::logging::init_stderr(level),
        None => cibmtr_fhir::logging::init_from_env(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e.kind() {
                ErrorKind::Validation | ErrorKind::Config => 2,
                _ => 1,
            })
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Error> {
    let profile = || settings::load_profile(cli.config.as_deref(), cli.profile.as_deref());
    match cli.command {
        Command::Demo => demo::run().await.map(|_| 0),
        Command::Sandbox {
            port,
            okta_token_ttl,
        } => serve(port, okta_token_ttl).await.map(|_| 0),
        Command::Token(args) => token(args).await.map(|_| 0),
        Command::Crid {
            command: CridCommand::Register(a),
        } => {
            let conn = a.conn.clone().merged(profile()?);
            let ssn = match &a.ssn_file {
                Some(_) => Some(secret("ssn", a.ssn_file.as_deref(), "CIBMTR_PATIENT_SSN")?),
                None => std::env::var("CIBMTR_PATIENT_SSN").ok().map(Into::into),
            };
            let d = Demographics {
                ssn,
                race: a.race.clone(),
                ethnicity: a.ethnicity.clone(),
                nmdp_rid: a.nmdp_rid,
                ..Demographics::new(&a.first_name, &a.last_name, &a.birth_date, &a.gender)
            };
            let auth = conn.password_grant()?;
            let client = conn.cibmtr_client(&auth, LabOptions::default())?;
            outln!("{}", client.register_crid(&d).await?);
            Ok(0)
        }
        Command::Patient {
            command: PatientCommand::Ensure { crid, conn },
        } => {
            let conn = conn.merged(profile()?);
            let auth = conn.password_grant()?;
            let client = conn.cibmtr_client(&auth, LabOptions::default())?;
            outln!("{}", client.ensure_patient(crid).await?);
            Ok(0)
        }
        Command::Labs {
            command:
                LabsCommand::Submit {
                    csv,
                    crid,
                    concurrency,
                    bundles,
                    strict,
                    convert_units,
                    report,
                    json,
                    no_progress,
                    journal,
                    no_journal,
                    resume,
                    conn,
                },
        } => {
            let profile = profile()?;
            let journal_path = if no_journal {
                None
            } else {
                journal
                    .or(profile.journal.clone())
                    .or(resume.as_ref().map(|_| PathBuf::new()))
            };
            let conn = conn.merged(profile);
            let auth = conn.password_grant()?;
            let client = conn.cibmtr_client(
                &auth,
                LabOptions {
                    strict,
                    convert_units,
                },
            )?;
            let options = SubmitOptions {
                concurrency,
                use_bundles: bundles,
                ..Default::default()
            };
            let progress =
                !no_progress && !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
            let (rows, sha) = labs::read_csv(&csv)?;
            let batch = match journal_path {
                None => None,
                Some(path) => Some(journal::batch_for(
                    &path,
                    &csv,
                    &sha,
                    rows.len(),
                    resume.as_deref(),
                    &client,
                )?),
            };
            let mut options = options;
            let out =
                labs::submit_rows(&client, rows, crid, &mut options, progress, batch.as_ref())
                    .await?;
            if let Some(path) = report {
                write_json_file(&path, &out).map_err(|e| Error::Config {
                    message: format!(
                        "cannot write the report to {}: {}",
                        path.display(),
                        e.kind()
                    ),
                })?;
            }
            if json {
                print_json(&out);
            } else {
                labs::print_summary(&out);
            }
            Ok(if out.failed > 0 { PARTIAL } else { 0 })
        }
        Command::Observations { crid, conn } => {
            let conn = conn.merged(profile()?);
            let auth = conn.password_grant()?;
            let client = conn.cibmtr_client(&auth, LabOptions::default())?;
            let all = client.observations(crid).await?;
            outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            Ok(0)
        }
        Command::Keys {
            command: KeysCommand::Generate { algorithm, out_dir },
        } => keys(algorithm, &out_dir).map(|_| 0),
        Command::Keys {
            command: KeysCommand::StoreKey,
        } => {
            // Printing the new key is the command's purpose (like `openssl rand`).
            outln!("{}", StoreKey::generate().to_base64().expose());
            Ok(0)
        }
        Command::Journal { command } => {
            let profile = profile()?;
            journal::run(command, profile.journal).map(|_| 0)
        }
    }
}

fn keys(alg: Alg, dir: &std::path::Path) -> Result<(), Error> {
    let key = generate_key(match alg {
        Alg::Rs384 => KeyAlgorithm::RS384,
        Alg::Es384 => KeyAlgorithm::ES384,
    })?;
    let io = |e: std::io::Error| Error::Config {
        message: format!("cannot write to {}: {}", dir.display(), e.kind()),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let pem_path = dir.join("private-key.pem");
    write_private(&pem_path, key.private_pem.expose().as_bytes()).map_err(io)?;
    let jwks_path = dir.join("jwks.json");
    std::fs::write(
        &jwks_path,
        serde_json::to_string_pretty(&key.jwks).unwrap_or_default(),
    )
    .map_err(io)?;
    outln!("{}", key.key_id);
    eprintln!(
        "wrote {} (keep it secret) and {} (register it with the server)",
        pem_path.display(),
        jwks_path.display()
    );
    Ok(())
}

/// Creates `path` readable by its owner only, refusing to overwrite an existing key.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

async fn token(a: TokenArgs) -> Result<(), Error> {
    let client_secret = secret(
        "client_secret",
        a.client_secret_file.as_deref(),
        "CIBMTR_CLIENT_SECRET",
    )?;
    let store = match &a.store {
        Some(location) => TokenStore::parse(location)?,
        None => TokenStore::Memory,
    };
    let token = match a.flow {
        Flow::Password => {
            let username = a.username.ok_or_else(|| Error::Validation {
                field: "username".into(),
                rule: "is required for the password flow (--username or $CIBMTR_USERNAME)".into(),
            })?;
            let password = secret("password", a.password_file.as_deref(), "CIBMTR_PASSWORD")?;
            let mut b =
                PasswordGrant::builder(a.token_url, a.client_id, client_secret, username, password)
                    .token_store(store);
            if let Some(s) = a.scope {
                b = b.scope(s);
            }
            b.build()?.token().await?
        }
        Flow::ClientCredentials => {
            let method: ClientAuthMethod = a.auth_method.parse()?;
            let mut b = ClientCredentials::builder(a.token_url, a.client_id, client_secret)
                .auth_method(method)
                .token_store(store);
            if let Some(s) = a.scope {
                b = b.scope(s);
            }
            b.build()?.token().await?
        }
    };
    outln!("{}", token.secret());
    Ok(())
}

async fn serve(port: u16, ttl: u64) -> Result<(), Error> {
    let sb = Sandbox::start(SandboxConfig {
        port,
        okta_token_ttl: Duration::from_secs(ttl),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Config {
        message: format!("cannot start the sandbox on 127.0.0.1:{port}: {e}"),
    })?;
    let c = &sb.credentials;
    // These are the sandbox's own throw-away test credentials; printing them is the point.
    let info = serde_json::json!({
        "base": sb.urls.base, "admin": sb.urls.admin, "protected": sb.urls.protected,
        "cibmtr_base": sb.urls.cibmtr_base, "msk_fhir": sb.urls.msk_fhir, "aidbox_fhir": sb.urls.aidbox_fhir,
        "okta": {"token_url": c.okta.token_url, "client_id": c.okta.client_id, "client_secret": c.okta.client_secret,
                 "username": c.okta.username, "password": c.okta.password, "scope": c.okta.scope},
        "msk": {"token_url": c.msk.token_url, "client_id": c.msk.client_id, "client_secret": c.msk.client_secret, "scope": c.msk.scope},
        "ccn": "12345",
    });
    // A closed stdout (`| head`) must not take the server down with a panic.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::to_string_pretty(&info).unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
    eprintln!("sandbox serving on {}; Ctrl-C to stop", sb.urls.base);
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
