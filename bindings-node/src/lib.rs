//! Node bindings of the cibmtr-fhir SDK (napi-rs): the package `cibmtr-fhir`.
//!
//! One module per concept of the core, each a thin layer: marshal the JavaScript arguments,
//! await the core once on the binding's tokio runtime (napi's), and map the core's error to a
//! JavaScript `Error` with a stable `code` in [`error`]. Network calls return Promises and never
//! block the JavaScript thread. The TypeScript declarations (`index.d.ts`) are generated from
//! this code by `napi build`; the types the Rust signatures cannot name are in `header.d.ts`.
#![deny(clippy::all)]
// `cargo test` of the workspace compiles this crate without napi's registration glue.
#![cfg_attr(test, allow(dead_code))]

mod args;
mod auth;
mod cibmtr;
mod error;
mod fhir;
mod http;
mod sandbox;

/// Runs once when Node loads the addon: `CIBMTR_FHIR_LOG=debug` (or `error`, `warn`, `info`,
/// `trace`) prints the SDK's retries, waits and refreshes to standard error; unset or `off`,
/// nothing. No event carries a secret or patient data.
#[napi_derive::module_init]
fn init_logging() {
    cibmtr_fhir::logging::init_from_env();
}

/// `util.inspect` of the classes holding a secret shows their getters with the secret replaced
/// by `'[redacted]'`, whatever the options (`showHidden` and `getters` included), instead of
/// napi's empty `GeneratedKey {}`. Set once, on the prototypes, when the addon loads.
const INSPECT_WITHOUT_SECRETS: &str = r#"(exports) => {
  const custom = Symbol.for('nodejs.util.inspect.custom')
  const secrets = { GeneratedKey: ['privatePem'], RegisteredClient: ['clientSecret'] }
  for (const [name, hidden] of Object.entries(secrets)) {
    const C = exports[name]
    if (typeof C !== 'function') continue
    Object.defineProperty(C.prototype, custom, {
      value: function (depth, options, inspect) {
        const shown = {}
        for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(C.prototype))) {
          if (typeof d.get !== 'function') continue
          const v = this[key]
          shown[key] = hidden.includes(key) && v != null ? '[redacted]' : v
        }
        return `${name} ${inspect(shown, { ...options, depth: options.depth == null ? null : options.depth - 1 })}`
      },
    })
  }
}"#;

#[napi_derive::napi(module_exports)]
pub fn redact_inspect(exports: napi::bindgen_prelude::Object, env: napi::Env) -> napi::Result<()> {
    use napi::bindgen_prelude::{Function, Object};
    let install: Function<Object, ()> = env.run_script(INSPECT_WITHOUT_SECRETS)?;
    install.call(exports)
}
