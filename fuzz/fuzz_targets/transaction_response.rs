#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cibmtr_fhir::fuzzing::transaction_response(data));
