//! JVM bindings (uniffi): the native library `cibmtr_fhir_uniffi`.
uniffi::setup_scaffolding!();
