//! The `cibmtr-fhir` binary, run as a user would.
use std::process::Command;

use cibmtr_fhir_sandbox::{Fault, OktaCredentials, Route, Sandbox, SandboxConfig};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cibmtr-fhir"))
}

/// A sandbox whose Okta takes 100 token requests a second: tests that ask for tokens in several
/// processes are not throttled.
async fn unthrottled_sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig {
        okta_rate_per_second: 100,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[test]
fn demo_runs_the_whole_workflow() {
    let out = bin().arg("demo").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "-> 1 token request(s) at the server",
        "500 callers after invalidate() -> 1 token request(s)",
        "3 attempts with a wrong password -> 1 token request(s)",
        "CRID 9007199254740993; the same demographics again -> 9007199254740993",
        "Patients on the server: 1",
        "[\"rc_12345\", \"REDACTED\"]",
        "line 16: failed: invalid effective",
        "created 0, already present 14, failed 1 -> 0 new POST(s)",
        "500 created, 0 already present, 0 failed",
        "duplicates on the server: 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// `cibmtr-fhir demo | head -c 16`: the reader leaves after the first bytes; the demo still
/// finishes, without a panic and with its usual status.
#[test]
fn a_closed_standard_output_is_not_a_panic() {
    use std::io::Read;
    let mut child = bin()
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"cibmtr-fhir demo");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// Plain http to loopback needs no root certificates: on a machine without any (a slim
/// container without `ca-certificates`; here `SSL_CERT_FILE` and `SSL_CERT_DIR` point at
/// nothing) the demo runs as it does anywhere. An https URL then fails with a configuration
/// error that says why, before any request.
#[test]
fn plain_http_needs_no_root_certificates_and_https_says_why_it_cannot_run() {
    let empty = tempfile::tempdir().unwrap();
    let no_roots = |cmd: &mut Command| {
        cmd.env("SSL_CERT_FILE", empty.path().join("none.pem"))
            .env("SSL_CERT_DIR", empty.path())
            .env("CIBMTR_FHIR_CONFIG", "/nonexistent/cibmtr-fhir.toml")
            .env_remove("CIBMTR_PROFILE");
    };
    let mut demo = bin();
    demo.arg("demo");
    no_roots(&mut demo);
    let (out, err, code) = run_ok(&mut demo);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("500 created, 0 already present, 0 failed"),
        "{out}"
    );

    let mut https = bin();
    https
        .args(["token", "--flow", "client-credentials"])
        .args([
            "--token-url",
            "https://127.0.0.1:9/token",
            "--client-id",
            "x",
        ])
        .env("CIBMTR_CLIENT_SECRET", "not-printed-secret");
    no_roots(&mut https);
    let (out, err, code) = run_ok(&mut https);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("cannot build the HTTP client") && err.contains("No CA certificates"),
        "{err}"
    );
    assert!(!err.contains("not-printed-secret") && !out.contains("not-printed-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_prints_a_token_and_keeps_secrets_out_of_errors() {
    let sb = unthrottled_sandbox().await;
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

/// The environment a centre would set, pointing at a sandbox; secrets only in the environment.
fn cibmtr_env(cmd: &mut Command, sb: &Sandbox, store: &std::path::Path) {
    let o = &sb.credentials.okta;
    cmd.env("CIBMTR_TOKEN_STORE", store)
        .env("CIBMTR_TOKEN_URL", &o.token_url)
        .env("CIBMTR_BASE_URL", &sb.urls.cibmtr_base)
        .env("CIBMTR_CLIENT_ID", &o.client_id)
        .env("CIBMTR_USERNAME", &o.username)
        .env("CIBMTR_SCOPE", &o.scope)
        .env("CIBMTR_CCN", "12345")
        .env("CIBMTR_CLIENT_SECRET", &o.client_secret)
        .env("CIBMTR_PASSWORD", &o.password)
        .env("CIBMTR_FHIR_CONFIG", "/nonexistent/cibmtr-fhir.toml")
        .env("CIBMTR_FHIR_LOG", "trace")
        .env_remove("CIBMTR_PROFILE");
}

/// `token --flow password` for the sandbox's Okta user, cached in `store` (secrets from the
/// environment the caller sets).
fn password_token(cmd: &mut Command, o: &OktaCredentials, store: &std::path::Path) {
    cmd.args(["token", "--flow", "password", "--token-url", &o.token_url])
        .args(["--client-id", &o.client_id, "--username", &o.username])
        .arg("--store")
        .arg(store);
}

fn run_ok(cmd: &mut Command) -> (String, String, i32) {
    let out = cmd.output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

fn example_csv() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/form2402-labs.csv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_patient_and_labs_submit_twice_submits_nothing_twice() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let store = dir.path().join("token.json");

    let mut all_output = String::new();
    // A retried token request and a retried search, so that the trace-level log has something
    // to say.
    let once_503 = Fault {
        status: 503,
        times: 1,
        ..Fault::default()
    };
    sb.set_fault(Route::OktaToken, once_503.clone());
    sb.set_fault(Route::ObservationSearch, once_503);
    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    cmd.args([
        "crid",
        "register",
        "--first-name",
        "Annabel",
        "--last-name",
        "Smithfield",
    ])
    .args([
        "--birth-date",
        "1961-07-04",
        "--gender",
        "female",
        "--race",
        "2106-3",
    ])
    .env("CIBMTR_PATIENT_SSN", "123-45-6789");
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let crid = out.trim().to_owned();
    assert_eq!(crid, "9007199254740993");
    all_output += &(out + &err);

    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    cmd.args(["patient", "ensure", "--crid", &crid]);
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), sb.patients()[0]["id"].as_str().unwrap());
    all_output += &(out + &err);

    for run in 0..2 {
        let mut cmd = bin();
        cibmtr_env(&mut cmd, &sb, &store);
        cmd.args(["labs", "submit", "--crid", &crid, "--csv"])
            .arg(example_csv())
            .arg("--report")
            .arg(&report);
        let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
            .await
            .unwrap();
        assert_eq!(
            code, 3,
            "one row has no timezone: partial success\n{out}{err}"
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(r["file_rows"], 15);
        assert_eq!(r["failed"], 1);
        let (created, present) = if run == 0 { (14, 0) } else { (0, 14) };
        assert_eq!(r["created"], created, "run {run}: {out}");
        assert_eq!(r["already_present"], present, "run {run}");
        let bad = r["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["status"] == "failed")
            .unwrap();
        assert_eq!(bad["line"], 16);
        assert_eq!(bad["error"]["field"], "effective");
        all_output += &(out + &err);
    }
    assert_eq!(sb.observations().len(), 14);
    assert_eq!(sb.patients().len(), 1);

    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    cmd.args(["observations", "--crid", &crid]);
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 14);
    all_output += &err;

    // Five processes, one token between them: the token store (as Okta's per-user limit wants).
    // (Two requests: the first answered 503.)
    assert_eq!(sb.token_requests(&sb.credentials.okta.client_id), 2);
    assert_eq!(sb.tokens_issued(), 1);
    // Every command ran with CIBMTR_FHIR_LOG=trace: the retries were logged, and nothing the
    // sandbox saw on the wire (client secret, password, access token, demographics) was printed.
    assert!(all_output.contains("retrying"), "{all_output}");
    let seen = sb.secrets_seen();
    let o = &sb.credentials.okta;
    for must in [
        &o.client_secret,
        &o.password,
        "123-45-6789",
        "Annabel",
        "Smithfield",
        "1961-07-04",
    ] {
        assert!(
            seen.iter().any(|s| s == must),
            "the sandbox recorded {must:?}"
        );
    }
    assert!(seen.len() >= 7, "{} values", seen.len());
    let leaked = seen.iter().find(|s| all_output.contains(s.as_str()));
    assert_eq!(leaked, None);
    // The scan can fail: `token` prints the access token, as it is asked to.
    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    let o = &sb.credentials.okta;
    password_token(&mut cmd, o, &store);
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let token = out.trim();
    assert!(sb.secrets_seen().iter().any(|s| s == token) && out.contains(token));
}

/// `labs submit` without `--crid`: each row goes to its own `crid` column, and a row without one
/// is reported, not sent. The JSON report (streamed to standard output and to `--report`) has
/// every row by line, with the text of a sorted `Value` map pretty-printed (what the CLI printed
/// before it streamed the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_several_recipients_is_reported_row_by_row() {
    let sb = unthrottled_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("token.json");
    let mut crids = Vec::new();
    for (first, last) in [("Ada", "Quill"), ("Bo", "Reyes")] {
        let mut cmd = bin();
        cibmtr_env(&mut cmd, &sb, &store);
        cmd.args([
            "crid",
            "register",
            "--first-name",
            first,
            "--last-name",
            last,
        ])
        .args(["--birth-date", "1970-01-31", "--gender", "female"]);
        let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
            .await
            .unwrap();
        assert_eq!(code, 0, "{err}");
        crids.push(out.trim().to_owned());
    }
    let (a, b) = (&crids[0], &crids[1]);
    let csv = dir.path().join("labs.csv");
    std::fs::write(
        &csv,
        format!(
            "crid,loinc,value,unit,effective\n\
             {a},718-7,13.1,g/dL,2024-03-01T07:45:00-06:00\n\
             ,718-7,13.2,g/dL,2024-03-01T07:45:00-06:00\n\
             {b},718-7,13.3,g/dL,2024-03-01T07:45:00-06:00\n\
             {a},718-7,13.4,g/dL,2024-03-01T07:45:00\n"
        ),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    cmd.args(["labs", "submit", "--json", "--csv"])
        .arg(&csv)
        .arg("--report")
        .arg(&report);
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 3, "two rows failed: partial success\n{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out, serde_json::to_string_pretty(&r).unwrap() + "\n");
    assert_eq!(std::fs::read_to_string(&report).unwrap() + "\n", out);
    let counts = (
        &r["file_rows"],
        &r["created"],
        &r["already_present"],
        &r["failed"],
    );
    assert_eq!(
        counts,
        (&4.into(), &2.into(), &0.into(), &2.into()),
        "{out}"
    );
    assert_eq!(r["batch_id"], serde_json::Value::Null);
    let items = r["items"].as_array().unwrap();
    let lines: Vec<_> = items.iter().map(|i| i["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 3, 4, 5]);
    assert_eq!(
        items[1],
        serde_json::json!({"line": 3, "status": "failed", "error": {"kind": "VALIDATION",
            "field": "crid", "message": "invalid crid: no --crid given and the row has no crid"}})
    );
    for (item, crid) in [(&items[0], a), (&items[2], b)] {
        assert_eq!(item["crid"], crid.as_str());
        assert_eq!(item["status"], "created");
        let id = item["id"].as_str().unwrap();
        let stored = sb.observations();
        let obs = stored.iter().find(|o| o["id"] == id).unwrap();
        // Sent for the row's own recipient: the Patient it refers to carries the row's CRID.
        let subject = obs["subject"]["reference"].as_str().unwrap();
        let patients = sb.patients();
        let patient = patients
            .iter()
            .find(|p| format!("Patient/{}", p["id"].as_str().unwrap()) == subject)
            .unwrap();
        assert!(patient.to_string().contains(crid.as_str()), "{patient}");
    }
    assert_eq!(
        (&items[3]["crid"], &items[3]["status"]),
        (&a.as_str().into(), &"failed".into())
    );
    assert_eq!(items[3]["error"]["field"], "effective");
    assert_eq!(sb.observations().len(), 2);

    // The same file again, as a summary: nothing sent, the failures by line.
    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    cmd.args(["labs", "submit", "--no-progress", "--csv"])
        .arg(&csv);
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("line 3: failed: invalid crid: no --crid given and the row has no crid"),
        "{out}"
    );
    assert!(out.contains("line 5: failed: invalid effective"), "{out}");
    let counts: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(counts, ["0", "2", "2", "4"], "{out}");
    assert_eq!(sb.observations().len(), 2);

    // Once more with `--json` into a pipe whose reader has gone: the report is dropped quietly
    // and the status still says partial success.
    let mut cmd = bin();
    cibmtr_env(&mut cmd, &sb, &store);
    cmd.args(["labs", "submit", "--json", "--csv"])
        .arg(&csv)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("cannot write"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_a_named_profile_and_secret_files() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let o = &sb.credentials.okta;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    let password_file = dir.path().join("password");
    std::fs::write(&secret_file, format!("{}\n", o.client_secret)).unwrap();
    std::fs::write(&password_file, &o.password).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.sandbox]\ntoken_url = {:?}\nbase_url = {:?}\nclient_id = {:?}\n\
             username = {:?}\nscope = {:?}\nccn = \"12345\"\nuri_family = \"terminology\"\n\
             client_secret_file = {:?}\npassword_file = {:?}\ntoken_store = {:?}\n",
            o.token_url,
            sb.urls.cibmtr_base,
            o.client_id,
            o.username,
            o.scope,
            secret_file,
            password_file,
            dir.path().join("token.json"),
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let mut cmd = bin();
        cmd.arg("--config").arg(&config).args(args);
        for var in [
            "CIBMTR_CLIENT_SECRET",
            "CIBMTR_PASSWORD",
            "CIBMTR_BASE_URL",
            "CIBMTR_CCN",
        ] {
            cmd.env_remove(var);
        }
        cmd
    };
    let mut cmd = run(vec![
        "--profile".into(),
        "sandbox".into(),
        "patient".into(),
        "ensure".into(),
        "--crid".into(),
        "42".into(),
    ]);
    let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());
    // The profile's URI family was used.
    assert_eq!(
        sb.patients()[0]["identifier"][0]["system"],
        "http://terminology.cibmtr.org/identifier/CRID"
    );
    // A second process reuses the token from the profile's token store.
    let mut cmd = run(vec![
        "--profile".into(),
        "sandbox".into(),
        "patient".into(),
        "ensure".into(),
        "--crid".into(),
        "42".into(),
    ]);
    let (out2, _, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(out, out2);
    assert_eq!(sb.token_requests(&o.client_id), 1);
    assert_eq!(sb.patients().len(), 1);

    // An unknown profile is a configuration error.
    let mut cmd = run(vec![
        "--profile".into(),
        "nope".into(),
        "patient".into(),
        "ensure".into(),
        "--crid".into(),
        "42".into(),
    ]);
    let (_, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("no profile \"nope\""), "{err}");
}

#[test]
fn keys_generate_writes_a_private_key_and_its_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err, code) = run_ok(
        bin()
            .args(["keys", "generate", "--algorithm", "es384", "--out-dir"])
            .arg(dir.path()),
    );
    assert_eq!(code, 0, "{err}");
    let kid = out.trim();
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("jwks.json")).unwrap())
            .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid);
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(jwks["keys"][0].get("d").is_none(), "public only");
    let pem = dir.path().join("private-key.pem");
    assert!(
        std::fs::read_to_string(&pem)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Never overwrites an existing key.
    let (_, _, code) = run_ok(
        bin()
            .args(["keys", "generate", "--out-dir"])
            .arg(dir.path()),
    );
    assert_eq!(code, 2);
}

/// `-v`/`-vv`/`-vvv` and `CIBMTR_FHIR_LOG` print the SDK's retries to stderr; without them
/// nothing is logged; an unknown level is named in one line and the command still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_flags_and_the_log_variable_switch_logging_on() {
    let sb = unthrottled_sandbox().await;
    let c = sb.credentials.okta.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for (i, (flag, env)) in [
        (None, None),
        (Some("-v"), None),
        (Some("-vv"), None),
        (Some("-vvv"), None),
        (None, Some("debug")),
        (None, Some("loud")),
    ]
    .into_iter()
    .enumerate()
    {
        // Each run meets one 503 from the token endpoint first.
        sb.set_fault(
            Route::OktaToken,
            Fault {
                status: 503,
                times: 1,
                ..Fault::default()
            },
        );
        let mut cmd = bin();
        cmd.args(flag);
        password_token(&mut cmd, &c, &dir.path().join(format!("t{i}.json")));
        cmd.env("CIBMTR_CLIENT_SECRET", &c.client_secret)
            .env("CIBMTR_PASSWORD", &c.password)
            .env_remove("CIBMTR_FHIR_LOG");
        if let Some(level) = env {
            cmd.env("CIBMTR_FHIR_LOG", level);
        }
        let (out, err, code) = tokio::task::spawn_blocking(move || run_ok(&mut cmd))
            .await
            .unwrap();
        assert_eq!(code, 0, "{flag:?} {env:?}: {err}");
        assert!(!out.trim().is_empty());
        outputs.push(err);
    }
    let retried = |e: &String| e.contains("token request failed") && e.contains("retrying");
    assert!(
        outputs[0].is_empty(),
        "no logging by default: {}",
        outputs[0]
    );
    // -v is info: the retry is a debug event.
    assert!(!retried(&outputs[1]), "{}", outputs[1]);
    assert!(
        retried(&outputs[2]) && outputs[2].contains("DEBUG"),
        "{}",
        outputs[2]
    );
    assert!(
        retried(&outputs[3]) && outputs[3].contains("TRACE"),
        "{}",
        outputs[3]
    );
    assert!(retried(&outputs[4]), "{}", outputs[4]);
    assert!(
        outputs[5].contains("CIBMTR_FHIR_LOG=\"loud\" is not a level") && !retried(&outputs[5]),
        "{}",
        outputs[5]
    );
    for e in &outputs {
        assert!(
            !e.contains(&c.password) && !e.contains(&c.client_secret),
            "{e}"
        );
    }
}
