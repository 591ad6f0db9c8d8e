//! A short fuzz run of every parser of server input on stable Rust: the same target functions
//! as the cargo-fuzz targets in `fuzz/` (`cibmtr_fhir::fuzzing`), driven over their seed corpus
//! (`fuzz/corpus/<target>/`) and then over inputs mutated from it (bit flips, byte edits,
//! deleted, repeated and spliced ranges, tokens that matter to the parsers).
//!
//! `FUZZ_SMOKE_EXECS` sets the mutated inputs per target (default 10,000), `FUZZ_SMOKE_SEED` the
//! random seed (default: fixed, so a plain `cargo test` is repeatable). A crashing input is
//! written to `target/fuzz-smoke-crashes/<target>-<n>` and fails the test; `cargo fuzz run
//! <target>` (nightly, `scripts/test-reliability.sh --fuzz-minutes N`) explores far longer.
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use cibmtr_fhir::fuzzing::TARGETS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Tokens worth inserting whole: JSON structure, numbers at the edges of every type, URL and
/// header syntax, the redirect harness's `STATE` placeholder.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e400",
    "-0",
    "18446744073709551615",
    "9223372036854775808",
    "9007199254740993",
    "1.5",
    "\\u0000",
    "\\ud800",
    "\"access_token\"",
    "\"expires_in\"",
    "\"refresh_token\"",
    "\"crid\"",
    "\"perfectMatch\"",
    "\"errorMessage\"",
    "\"error\"",
    "\"resourceType\"",
    "\"Bundle\"",
    "\"OperationOutcome\"",
    "\"issue\"",
    "\"diagnostics\"",
    "\"link\"",
    "\"relation\"",
    "\"next\"",
    "\"url\"",
    "\"entry\"",
    "\"resource\"",
    "\"token_endpoint\"",
    "\"authorization_endpoint\"",
    "\"keys\"",
    "\"kty\"",
    "\"RSA\"",
    "\"EC\"",
    "\"n\"",
    "\"e\"",
    "\"x\"",
    "\"y\"",
    "\"d\"",
    "<title>",
    "</title>",
    "<html>",
    "http://",
    "https://",
    "//",
    "127.0.0.1",
    "[::1]",
    "localhost",
    "@",
    "#",
    "?",
    "&",
    "=",
    "%",
    "%00",
    "%2F",
    "+",
    "STATE",
    "state=STATE",
    "code=",
    "error=",
    "\n",
    "\r\n",
    " GMT",
    "Fri, 31 Dec 9999",
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len();
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = rng.r#gen();
            }
            2 => {
                let i = rng.gen_range(0..=len);
                data.insert(i, rng.r#gen());
            }
            3 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 16));
                data.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..=len.min(a + 32));
                let copy = data[a..b].to_vec();
                let at = rng.gen_range(0..=data.len());
                data.splice(at..at, copy);
            }
            5 => {
                let t = DICTIONARY[rng.gen_range(0..DICTIONARY.len())].as_bytes();
                let at = rng.gen_range(0..=len);
                data.splice(at..at, t.iter().copied());
            }
            6 => {
                // Splice: the head of this input, the tail of another.
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let at = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ if len > 0 => {
                // A number-looking run replaced by an extreme one.
                let i = rng.gen_range(0..len);
                if data[i].is_ascii_digit() {
                    let end = (i..len).find(|&j| !data[j].is_ascii_digit()).unwrap_or(len);
                    let n = ["18446744073709551615", "0", "99999999999999999999999", "-1"]
                        [rng.gen_range(0..4)];
                    data.splice(i..end, n.bytes());
                }
            }
            _ => data.push(rng.r#gen()),
        }
    }
    data.truncate(64 * 1024);
    data
}

#[test]
fn every_parser_of_server_input_survives_its_corpus_and_mutations() {
    let execs: usize = std::env::var("FUZZ_SMOKE_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("FUZZ_SMOKE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let crash_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-smoke-crashes");
    // Keep the panics of crashing inputs short; the input is saved for replay.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| eprintln!("crash: {info}")));
    let mut crashes = Vec::new();
    let mut total = 0usize;
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let started = Instant::now();
        let seeds = corpus(name);
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        let mut run = |input: &[u8]| {
            if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
                std::fs::create_dir_all(&crash_dir).unwrap();
                let path = crash_dir.join(format!("{name}-{}", crashes.len()));
                std::fs::write(&path, input).unwrap();
                crashes.push(format!(
                    "{name}: {:?} (saved as {})",
                    String::from_utf8_lossy(&input[..input.len().min(200)]),
                    path.display()
                ));
            }
        };
        for s in &seeds {
            run(s);
        }
        for _ in 0..execs {
            let input = mutate(&mut rng, &seeds);
            run(&input);
        }
        let n = seeds.len() + execs;
        total += n;
        println!(
            "FUZZ-SMOKE | {name} | {n} executions ({} seeds) | {:.2} s",
            seeds.len(),
            started.elapsed().as_secs_f64()
        );
    }
    std::panic::set_hook(default_hook);
    println!(
        "FUZZ-SMOKE | all | {total} executions, {} crashes, seed {seed}",
        crashes.len()
    );
    assert!(
        crashes.is_empty(),
        "crashing inputs:\n{}",
        crashes.join("\n")
    );
}
