//! `cibmtr-fhir`: the command line of the cibmtr-fhir SDK.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cibmtr_fhir::auth::{ClientAuthMethod, ClientCredentials, PasswordGrant, TokenStore};
use cibmtr_fhir::{Error, Secret};
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cibmtr-fhir",
    version,
    about = "Report to CIBMTR and talk to SMART on FHIR servers without hand-rolled OAuth"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local sandbox in-process and walk through the token engine against it.
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
    /// Share the token through this file (mode 0600) across processes and runs.
    #[arg(long)]
    store: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Demo => demo().await,
            Command::Sandbox {
                port,
                okta_token_ttl,
            } => serve(port, okta_token_ttl).await,
            Command::Token(args) => token(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e.kind() {
                cibmtr_fhir::ErrorKind::Validation | cibmtr_fhir::ErrorKind::Config => 2,
                _ => 1,
            })
        }
    }
}

fn secret(field: &str, file: Option<&PathBuf>, var: &str) -> Result<Secret, Error> {
    if let Some(path) = file {
        let s = std::fs::read_to_string(path).map_err(|e| Error::Config {
            message: format!("cannot read {field} file {}: {e}", path.display()),
        })?;
        return Ok(Secret::new(s.trim_end_matches(['\r', '\n']).to_owned()));
    }
    std::env::var(var)
        .map(Secret::new)
        .map_err(|_| Error::Validation {
            field: field.into(),
            rule: format!(
                "is required: set ${var} or pass --{}-file",
                field.replace('_', "-")
            ),
        })
}

async fn token(a: TokenArgs) -> Result<(), Error> {
    let client_secret = secret(
        "client_secret",
        a.client_secret_file.as_ref(),
        "CIBMTR_CLIENT_SECRET",
    )?;
    let store = a.store.map(TokenStore::File).unwrap_or_default();
    let token = match a.flow {
        Flow::Password => {
            let username = a.username.ok_or_else(|| Error::Validation {
                field: "username".into(),
                rule: "is required for the password flow (--username or $CIBMTR_USERNAME)".into(),
            })?;
            let password = secret("password", a.password_file.as_ref(), "CIBMTR_PASSWORD")?;
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
    println!("{}", token.secret());
    Ok(())
}

async fn serve(port: u16, ttl: u64) -> Result<(), Error> {
    if port != 0 {
        return Err(Error::Validation {
            field: "port".into(),
            rule: "only 0 (a free port on 127.0.0.1) is supported by this version".into(),
        });
    }
    let sb = Sandbox::start(SandboxConfig {
        okta_token_ttl: Duration::from_secs(ttl),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Config {
        message: format!("cannot start the sandbox: {e}"),
    })?;
    let c = &sb.credentials;
    // These are the sandbox's own throw-away test credentials; printing them is the point.
    let info = serde_json::json!({
        "base": sb.urls.base, "admin": sb.urls.admin, "protected": sb.urls.protected,
        "okta": {"token_url": c.okta.token_url, "client_id": c.okta.client_id, "client_secret": c.okta.client_secret,
                 "username": c.okta.username, "password": c.okta.password, "scope": c.okta.scope},
        "msk": {"token_url": c.msk.token_url, "client_id": c.msk.client_id, "client_secret": c.msk.client_secret, "scope": c.msk.scope},
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&info).unwrap_or_default()
    );
    eprintln!("sandbox serving on {}; Ctrl-C to stop", sb.urls.base);
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

async fn demo() -> Result<(), Error> {
    let sb = Sandbox::start(SandboxConfig {
        okta_token_ttl: Duration::from_secs(3),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Config {
        message: format!("cannot start the sandbox: {e}"),
    })?;
    println!("cibmtr-fhir demo — sandbox on {}", sb.urls.base);
    let c = &sb.credentials.okta;
    let okta = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        c.password.as_str(),
    )
    .scope(&c.scope)
    .build()?;

    println!(
        "\n1. Okta password grant (CIBMTR): first token() asks the server, the next 10,000 are cached"
    );
    let t0 = Instant::now();
    okta.token().await?;
    for _ in 0..10_000 {
        okta.token().await?;
    }
    println!(
        "   10,001 calls in {:.1} ms -> {} token request(s) at the server",
        t0.elapsed().as_secs_f64() * 1e3,
        sb.token_requests(&c.client_id)
    );

    println!("\n2. 500 concurrent callers after invalidate(): single flight");
    okta.invalidate();
    let before = sb.token_requests(&c.client_id);
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let a = okta.clone();
            tokio::spawn(async move { a.token().await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| Error::Config {
            message: e.to_string(),
        })??;
    }
    println!(
        "   500 callers -> {} token request(s)",
        sb.token_requests(&c.client_id) - before
    );

    println!(
        "\n3. 3-second tokens used continuously for 6 s: refreshed ahead of expiry, never expired"
    );
    let before = sb.token_requests(&c.client_id);
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs(6) {
        okta.token().await?;
        calls += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "   {calls} calls -> {} token request(s) (about one per 2.5 s)",
        sb.token_requests(&c.client_id) - before
    );

    println!("\n4. Wrong password: refused once, remembered, not retried");
    let wrong = PasswordGrant::builder(
        &c.token_url,
        &c.client_id,
        c.client_secret.as_str(),
        &c.username,
        "wrong",
    )
    .scope(&c.scope)
    .build()?;
    let before = sb.token_requests(&c.client_id);
    for _ in 0..3 {
        if let Err(e) = wrong.token().await {
            println!("   {e}");
        }
    }
    println!(
        "   3 attempts -> {} token request(s)",
        sb.token_requests(&c.client_id) - before
    );

    println!("\n5. MSK client credentials (secret in the form body, scope=full)");
    let m = &sb.credentials.msk;
    let msk = ClientCredentials::builder(&m.token_url, &m.client_id, m.client_secret.as_str())
        .scope("full")
        .build()?;
    let t = msk.token().await?;
    println!(
        "   token for scope {:?}, {:?}",
        t.scope().unwrap_or(""),
        msk
    );

    let s = okta.stats();
    println!(
        "\nSummary (Okta flow): {} token requests, {} cache hits, {} refreshes, {} failures",
        s.token_requests, s.cache_hits, s.refreshes, s.failures
    );
    Ok(())
}
