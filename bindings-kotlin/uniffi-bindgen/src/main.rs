//! `uniffi-bindgen`, pinned to the workspace's uniffi, with two edits of the Kotlin it writes.
//!
//! uniffi 0.32's Kotlin reaches Rust through JNA, and JNA makes every `Structure` with a
//! `Memory` of its own: a `malloc`, an entry in JNA's global table of live allocations and a
//! cleaner registration, undone later by the garbage collector and JNA's cleaner thread. The
//! generated code builds a fresh call status (two structures: the status and its error buffer)
//! for every call, so a method that returns a `String` (clone the handle, call, free the
//! returned buffer) makes six of them. On the 2-core development machine that was about 20 µs of
//! the calling thread's CPU per call plus about 10 µs more in the GC and cleaner threads, for a
//! trivial method and a cached `token()` alike (bench/run.sh measures it). And a `suspend` call
//! that finished on a tokio worker resumed its coroutine through a JNA callback that attached
//! the worker to the JVM and detached it again: a new `java.lang.Thread` per call.
//!
//! The edits:
//! 1. **One idle call status per thread.** A call takes the thread's idle status (or makes one
//!    if it is in use: a call made from a callback inside another call), and hands it back reset
//!    to success with an empty error buffer, which is how a new one starts.
//! 2. **Callback threads stay attached.** The future-continuation callback is registered with a
//!    `CallbackThreadInitializer` that keeps the runtime's worker attached after the callback
//!    (as a daemon thread named `cibmtr-fhir`); JNA detaches it when the thread ends.
//!
//! Each edit replaces text that must occur exactly once in uniffi's output; if a uniffi upgrade
//! changes that text, generation fails here instead of shipping unedited bindings.
use std::path::{Path, PathBuf};

/// The text uniffi 0.32 writes, and what it becomes.
const EDITS: [(&str, &str, &str); 2] = [
    (
        "one idle call status per thread",
        "private inline fun <U, E: kotlin.Exception> uniffiRustCallWithError(errorHandler: UniffiRustCallStatusErrorHandler<E>, callback: (UniffiRustCallStatus) -> U): U {
    var status = UniffiRustCallStatus()
    val return_value = callback(status)
    uniffiCheckCallStatus(errorHandler, status)
    return return_value
}",
        "// Edited by bindings-kotlin/uniffi-bindgen: each thread keeps one idle call status (JNA makes
// every Structure with its own native allocation). A call made while the thread's status is in
// use (from a callback inside another call) makes its own.
private val uniffiIdleCallStatus = ThreadLocal<UniffiRustCallStatus?>()

private inline fun <U, E: kotlin.Exception> uniffiRustCallWithError(errorHandler: UniffiRustCallStatusErrorHandler<E>, callback: (UniffiRustCallStatus) -> U): U {
    val status = uniffiIdleCallStatus.get() ?: UniffiRustCallStatus()
    uniffiIdleCallStatus.set(null)
    try {
        val return_value = callback(status)
        uniffiCheckCallStatus(errorHandler, status)
        return return_value
    } finally {
        // As a new status starts: success, no error buffer (its contents were lifted and freed).
        status.code = UNIFFI_CALL_SUCCESS
        status.error_buf.capacity = 0
        status.error_buf.len = 0
        status.error_buf.data = null
        uniffiIdleCallStatus.set(status)
    }
}",
    ),
    (
        "callback threads stay attached",
        "internal object uniffiRustFutureContinuationCallbackImpl: UniffiRustFutureContinuationCallback {
",
        "internal object uniffiRustFutureContinuationCallbackImpl: UniffiRustFutureContinuationCallback {
    // Edited by bindings-kotlin/uniffi-bindgen: a Rust future completes on a runtime worker, which
    // JNA would otherwise attach to the JVM and detach again for every continuation.
    init {
        com.sun.jna.Native.setCallbackThreadInitializer(
            this,
            com.sun.jna.CallbackThreadInitializer(true, false, \"cibmtr-fhir\"),
        )
    }
",
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    uniffi::uniffi_bindgen_main();
    if let Some(dir) = kotlin_out_dir(&args)
        && let Err(e) = edit_kotlin(&dir)
    {
        eprintln!("uniffi-bindgen: {e}");
        std::process::exit(1);
    }
}

/// The output directory of a `generate` run that wrote Kotlin.
fn kotlin_out_dir(args: &[String]) -> Option<PathBuf> {
    if !args.iter().any(|a| a == "generate") {
        return None;
    }
    let value = |long: &str, short: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            if a == long || a == short {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{long}=")).map(str::to_owned)
            }
        })
    };
    if value("--language", "-l").as_deref() != Some("kotlin") {
        return None;
    }
    value("--out-dir", "-o").map(PathBuf::from)
}

/// Applies every edit to the Kotlin file that holds uniffi's helpers.
fn edit_kotlin(dir: &Path) -> Result<(), String> {
    let mut files = Vec::new();
    collect_kotlin(dir, &mut files).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut edited = 0;
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        if !text.contains("fun <U, E: kotlin.Exception> uniffiRustCallWithError(") {
            continue;
        }
        let mut text = text;
        for (name, from, to) in EDITS {
            if text.matches(from).count() != 1 {
                return Err(format!(
                    "{}: the edit \"{name}\" no longer matches uniffi's Kotlin; \
                     review bindings-kotlin/uniffi-bindgen/src/main.rs for this uniffi version",
                    file.display()
                ));
            }
            text = text.replacen(from, to, 1);
        }
        std::fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        edited += 1;
    }
    if edited == 0 {
        return Err(format!("no uniffi Kotlin found under {}", dir.display()));
    }
    Ok(())
}

fn collect_kotlin(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_kotlin(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "kt") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn only_kotlin_generation_is_edited() {
        let dir = |s: &str| kotlin_out_dir(&args(s));
        assert_eq!(
            dir("bindgen generate --no-format --library x.so --language kotlin --out-dir out"),
            Some(PathBuf::from("out"))
        );
        assert_eq!(
            dir("bindgen generate -l kotlin -o out"),
            Some(PathBuf::from("out"))
        );
        assert_eq!(
            dir("bindgen generate --language=kotlin --out-dir=out"),
            Some(PathBuf::from("out"))
        );
        assert_eq!(
            dir("bindgen generate --language python --out-dir out"),
            None
        );
        assert_eq!(dir("bindgen print-repr x.so"), None);
    }

    #[test]
    fn every_edit_applies_once_or_generation_fails() {
        let tmp = std::env::temp_dir().join(format!("uniffi-bindgen-edit-{}", std::process::id()));
        let pkg = tmp.join("io/x");
        std::fs::create_dir_all(&pkg).unwrap();
        let original: String = EDITS
            .iter()
            .map(|(_, from, _)| format!("{from}\n"))
            .collect();
        std::fs::write(pkg.join("X.kt"), &original).unwrap();
        edit_kotlin(&tmp).unwrap();
        let edited = std::fs::read_to_string(pkg.join("X.kt")).unwrap();
        for (_, from, to) in EDITS {
            assert!(edited.contains(to));
            assert!(!edited.contains(from) || to.contains(from));
        }
        // Helpers whose text changed (a uniffi upgrade): refused, not silently left unedited.
        std::fs::write(
            pkg.join("X.kt"),
            original.replace("var status = UniffiRustCallStatus()", "val status = X()"),
        )
        .unwrap();
        assert!(
            edit_kotlin(&tmp)
                .unwrap_err()
                .contains("one idle call status")
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
