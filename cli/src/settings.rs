//! Where the command's settings come from: command-line flags, then `CIBMTR_*` environment
//! variables, then a named profile of the config file, then the environment preset. Secrets
//! (client secret, password, SSN) come only from the environment or from files, never from flags,
//! so they stay out of shell history and `ps`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cibmtr_fhir::auth::{PasswordGrant, TokenStore};
use cibmtr_fhir::cibmtr::{CibmtrClient, Environment, LabOptions, UriFamily};
use cibmtr_fhir::{Error, Secret};
use serde::Deserialize;

/// One `[profiles.NAME]` table of the config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub environment: Option<String>,
    pub token_url: Option<String>,
    pub base_url: Option<String>,
    pub fhir_path: Option<String>,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub scope: Option<String>,
    pub ccn: Option<String>,
    pub uri_family: Option<String>,
    /// Where the token is cached, shared by runs and processes: a file (mode 0600) or a
    /// `redis://` / `rediss://` URL (key in $CIBMTR_FHIR_STORE_KEY).
    pub token_store: Option<String>,
    /// The submission journal (SQLite) `labs submit` records into.
    pub journal: Option<PathBuf>,
    pub client_secret_file: Option<PathBuf>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// The config file: `--config`, else `$CIBMTR_FHIR_CONFIG`, else
/// `$XDG_CONFIG_HOME/cibmtr-fhir/config.toml` (or `~/.config/...`).
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Ok(p) = std::env::var("CIBMTR_FHIR_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("cibmtr-fhir").join("config.toml"))
}

/// Loads profile `name` (default `default`). A missing file is fine unless it was named
/// explicitly or a non-default profile was asked for.
pub fn load_profile(explicit: Option<&Path>, name: Option<&str>) -> Result<Profile, Error> {
    let path = config_path(explicit);
    let wanted = name.unwrap_or("default");
    let text = match path.as_deref().map(std::fs::read_to_string) {
        Some(Ok(t)) => t,
        Some(Err(_)) | None if explicit.is_none() && name.is_none() => {
            return Ok(Profile::default());
        }
        _ => {
            return Err(Error::Config {
                message: format!(
                    "cannot read the config file {} (needed for profile {wanted:?})",
                    path.map(|p| p.display().to_string()).unwrap_or_default()
                ),
            });
        }
    };
    let file: ConfigFile = toml::from_str(&text).map_err(|e| Error::Config {
        message: format!("config file is not valid: {}", e.message()),
    })?;
    match file.profiles.get(wanted) {
        Some(p) => Ok(p.clone()),
        None if name.is_none() => Ok(Profile::default()),
        None => Err(Error::Config {
            message: format!("no profile {wanted:?} in the config file"),
        }),
    }
}

/// The settings the CIBMTR commands share, resolved.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ConnectionArgs {
    /// test (default) or production: presets the token and API URLs.
    #[arg(long, env = "CIBMTR_ENVIRONMENT")]
    pub environment: Option<String>,
    #[arg(long, env = "CIBMTR_TOKEN_URL")]
    pub token_url: Option<String>,
    /// The Direct FHIR Service API base URL.
    #[arg(long, env = "CIBMTR_BASE_URL")]
    pub base_url: Option<String>,
    /// The FHIR root below the base (e.g. r3).
    #[arg(long, env = "CIBMTR_FHIR_PATH")]
    pub fhir_path: Option<String>,
    #[arg(long, env = "CIBMTR_CLIENT_ID")]
    pub client_id: Option<String>,
    #[arg(long, env = "CIBMTR_USERNAME")]
    pub username: Option<String>,
    #[arg(long, env = "CIBMTR_SCOPE")]
    pub scope: Option<String>,
    /// The centre's CCN (5 digits).
    #[arg(long, env = "CIBMTR_CCN")]
    pub ccn: Option<String>,
    /// cibmtr (http://cibmtr.org/...) or terminology (http://terminology.cibmtr.org/...).
    #[arg(long, env = "CIBMTR_URI_FAMILY")]
    pub uri_family: Option<String>,
    /// Share the token across runs and processes: a file path (mode 0600, one host) or a
    /// redis://, rediss:// or valkey:// URL (a fleet; tokens sealed with the key in
    /// $CIBMTR_FHIR_STORE_KEY).
    #[arg(long, env = "CIBMTR_TOKEN_STORE")]
    pub token_store: Option<String>,
    /// A file holding the client secret (else $CIBMTR_CLIENT_SECRET).
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,
    /// A file holding the service-account password (else $CIBMTR_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

fn required(field: &str, v: Option<String>) -> Result<String, Error> {
    v.filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Error::Validation {
            field: field.into(),
            rule: format!(
                "is required: pass --{}, set $CIBMTR_{}, or put {field} in the profile",
                field.replace('_', "-"),
                field.to_ascii_uppercase()
            ),
        })
}

/// A secret from `file`, else the environment variable `var`.
pub fn secret(field: &str, file: Option<&Path>, var: &str) -> Result<Secret, Error> {
    if let Some(path) = file {
        let s = std::fs::read_to_string(path).map_err(|e| Error::Config {
            message: format!(
                "cannot read the {field} file {}: {}",
                path.display(),
                e.kind()
            ),
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

impl ConnectionArgs {
    /// Flags and environment first, the profile for what they leave open.
    pub fn merged(self, p: Profile) -> ConnectionArgs {
        ConnectionArgs {
            environment: self.environment.or(p.environment),
            token_url: self.token_url.or(p.token_url),
            base_url: self.base_url.or(p.base_url),
            fhir_path: self.fhir_path.or(p.fhir_path),
            client_id: self.client_id.or(p.client_id),
            username: self.username.or(p.username),
            scope: self.scope.or(p.scope),
            ccn: self.ccn.or(p.ccn),
            uri_family: self.uri_family.or(p.uri_family),
            token_store: self.token_store.or(p.token_store),
            client_secret_file: self.client_secret_file.or(p.client_secret_file),
            password_file: self.password_file.or(p.password_file),
        }
    }

    fn environment(&self) -> Result<Environment, Error> {
        self.environment
            .as_deref()
            .map(str::parse)
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The Okta password grant described by these settings.
    pub fn password_grant(&self) -> Result<PasswordGrant, Error> {
        let env = self.environment()?;
        let token_url = self
            .token_url
            .clone()
            .unwrap_or_else(|| env.token_url().to_owned());
        let client_id = required("client_id", self.client_id.clone())?;
        let username = required("username", self.username.clone())?;
        let client_secret = secret(
            "client_secret",
            self.client_secret_file.as_deref(),
            "CIBMTR_CLIENT_SECRET",
        )?;
        let password = secret("password", self.password_file.as_deref(), "CIBMTR_PASSWORD")?;
        let mut b = PasswordGrant::builder(token_url, client_id, client_secret, username, password);
        if let Some(s) = &self.scope {
            b = b.scope(s);
        }
        if let Some(location) = &self.token_store {
            b = b.token_store(TokenStore::parse(location)?);
        }
        b.build()
    }

    /// The CIBMTR client described by these settings, with `lab_options`.
    pub fn cibmtr_client(
        &self,
        auth: &PasswordGrant,
        lab_options: LabOptions,
    ) -> Result<CibmtrClient, Error> {
        let ccn = required("ccn", self.ccn.clone())?;
        let mut b = CibmtrClient::builder(ccn, auth)
            .environment(self.environment()?)
            .lab_options(lab_options);
        if let Some(u) = &self.base_url {
            b = b.base_url(u);
        }
        if let Some(p) = &self.fhir_path {
            b = b.fhir_path(p);
        }
        if let Some(f) = &self.uri_family {
            b = b.uri_family(f.parse::<UriFamily>()?);
        }
        b.build()
    }
}
