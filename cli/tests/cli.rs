//! The `cibmtr-fhir` binary, run as a user would.
use std::process::Command;

use cibmtr_fhir_sandbox::{Sandbox, SandboxConfig};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cibmtr-fhir"))
}

#[test]
fn demo_runs_and_shows_single_flight() {
    let out = bin().arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("10,001 calls in"), "{text}");
    assert!(
        text.contains("-> 1 token request(s) at the server"),
        "{text}"
    );
    assert!(text.contains("500 callers -> 1 token request(s)"), "{text}");
    assert!(text.contains("3 attempts -> 1 token request(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_prints_a_token_and_keeps_secrets_out_of_errors() {
    let sb = Sandbox::start(SandboxConfig {
        okta_rate_per_second: 100,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = sb.credentials.okta.clone();
    let (client_id, secret, password) = (
        c.client_id.clone(),
        c.client_secret.clone(),
        c.password.clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("t.json");
    let c2 = c.clone();
    let _ = &dir;
    let run = move |password: &str| {
        bin()
            .args([
                "token",
                "--flow",
                "password",
                "--token-url",
                &c.token_url,
                "--client-id",
                &c.client_id,
                "--username",
                &c.username,
                "--scope",
                &c.scope,
                "--store",
                store.to_str().unwrap(),
            ])
            .env("CIBMTR_CLIENT_SECRET", &c.client_secret)
            .env("CIBMTR_PASSWORD", password)
            .output()
            .unwrap()
    };
    let (a, b) = tokio::task::spawn_blocking({
        let run = run.clone();
        let p = c2.password.clone();
        move || (run(&p), run(&p))
    })
    .await
    .unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let token = String::from_utf8(a.stdout).unwrap();
    assert!(token.trim().len() > 20);
    assert_eq!(
        token,
        String::from_utf8(b.stdout).unwrap(),
        "the second run reuses the stored token"
    );
    assert_eq!(sb.token_requests(&client_id), 1);
    let bad = tokio::task::spawn_blocking(move || run("wrong-password-123"))
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err =
        String::from_utf8_lossy(&bad.stderr).to_string() + &String::from_utf8_lossy(&bad.stdout);
    assert!(err.contains("invalid_grant"), "{err}");
    for s in [
        "wrong-password-123",
        secret.as_str(),
        password.as_str(),
        token.trim(),
    ] {
        assert!(!err.contains(s), "leaked: {err}");
    }
}

#[test]
fn missing_secret_is_a_usage_error_naming_the_variable() {
    let out = bin()
        .args([
            "token",
            "--flow",
            "client-credentials",
            "--token-url",
            "https://auth.example.org/token",
            "--client-id",
            "x",
        ])
        .env_remove("CIBMTR_CLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CIBMTR_CLIENT_SECRET"));
}
