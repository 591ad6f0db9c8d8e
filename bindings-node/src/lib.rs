//! Node bindings (napi-rs).
#![deny(clippy::all)]
