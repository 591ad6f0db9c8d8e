//! The CLI on a shared Redis token store (a real `redis-server` on loopback): the location string
//! of `--store`, `$CIBMTR_TOKEN_STORE` and the profile goes through to the core. Needs
//! `redis-server`: run by scripts/test-fleet.sh, not by a plain `cargo test`.
use std::process::Command;

use cibmtr_fhir::auth::StoreKey;
use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};

#[path = "../../core/tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cibmtr-fhir"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_crid_register_share_one_token_through_redis() {
    let redis = RedisServer::start();
    let sb = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 1000,
        ..Default::default()
    })
    .await
    .unwrap();
    let key = StoreKey::generate().to_base64();
    let o = sb.credentials.okta.clone();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.fleet]\ntoken_store = \"{}\"\nclient_id = \"{}\"\nusername = \"{}\"\n\
             scope = \"{}\"\nccn = \"12345\"\ntoken_url = \"{}\"\nbase_url = \"{}\"\n",
            redis.url(),
            o.client_id,
            o.username,
            o.scope,
            o.token_url,
            sb.urls.cibmtr_base
        ),
    )
    .unwrap();
    let (url, k) = (redis.url(), key.expose().to_owned());
    let outputs = tokio::task::spawn_blocking(move || {
        let token = |store: &str| {
            bin()
                .args(["token", "--flow", "password", "--token-url", &o.token_url])
                .args(["--client-id", &o.client_id, "--username", &o.username])
                .args(["--scope", &o.scope, "--store", store])
                .env("CIBMTR_CLIENT_SECRET", &o.client_secret)
                .env("CIBMTR_PASSWORD", &o.password)
                .env("CIBMTR_FHIR_STORE_KEY", &k)
                .output()
                .unwrap()
        };
        let a = token(&url);
        let b = token(&url);
        // The profile's token_store is a Redis URL too: `crid register` reads the same token.
        let c = bin()
            .args(["--config"])
            .arg(&config)
            .args([
                "--profile",
                "fleet",
                "crid",
                "register",
                "--first-name",
                "Re",
            ])
            .args([
                "--last-name",
                "Dis",
                "--birth-date",
                "1970-01-31",
                "--gender",
                "F",
            ])
            .env("CIBMTR_CLIENT_SECRET", &o.client_secret)
            .env("CIBMTR_PASSWORD", &o.password)
            .env("CIBMTR_FHIR_STORE_KEY", &k)
            .env_remove("CIBMTR_TOKEN_STORE")
            .env_remove("CIBMTR_PROFILE")
            .output()
            .unwrap();
        // Without the key: a usage error that says where the key goes.
        let d = bin()
            .args(["token", "--flow", "password", "--token-url", &o.token_url])
            .args(["--client-id", &o.client_id, "--username", &o.username])
            .args(["--store", &url])
            .env("CIBMTR_CLIENT_SECRET", &o.client_secret)
            .env("CIBMTR_PASSWORD", &o.password)
            .env_remove("CIBMTR_FHIR_STORE_KEY")
            .env_remove("CIBMTR_FHIR_STORE_KEY_FILE")
            .output()
            .unwrap();
        (a, b, c, d)
    })
    .await
    .unwrap();
    let (a, b, c, d) = outputs;
    for out in [&a, &b, &c] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(a.stdout, b.stdout, "one token for both runs");
    assert_eq!(
        sb.token_requests(&sb.credentials.okta.client_id),
        1,
        "token, token and crid register made one token request between them"
    );
    assert_eq!(d.status.code(), Some(2));
    let err = String::from_utf8_lossy(&d.stderr);
    assert!(err.contains("CIBMTR_FHIR_STORE_KEY"), "{err}");
    let token = String::from_utf8_lossy(&a.stdout).trim().to_owned();
    assert!(!err.contains(&token));
}
