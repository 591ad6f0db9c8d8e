//! The CIBMTR Direct FHIR Service API: CRID registration, the de-identified Patient, lab
//! Observations for form 2402 and bulk submission.

pub mod demographics;
mod json;
pub mod labs;
pub mod resources;
pub mod systems;

pub use demographics::{Demographics, ETHNICITY_CODES, RACE_CODES, parse_crid_response};
pub use labs::{
    CheckedLab, CsvInputs, CsvLab, Dimension, LabDefinition, LabOptions, LabResult, Unit, convert,
    ig_display, known_units, lab_catalog, lab_for_code, labs_csv_inputs, read_labs_csv, unit,
};
pub use resources::{
    observation_resource, observation_search_by_crid, observation_search_by_submission_id,
    observation_submission_id, patient_matches, patient_resource, patient_search_params,
    submission_id,
};
pub use systems::{
    Ccn, LOINC, REDACTED_CODE, REDACTED_SECURITY_SYSTEM, SUBMISSION_ID_SYSTEM, UCUM, UriFamily,
    is_crid_system, is_transplant_center_system,
};

mod client;
pub(crate) use client::transaction_results;

pub use json::{lab_catalog_json, labs_from_json_text};

pub use client::{
    CibmtrClient, CibmtrClientBuilder, Environment, ItemJson, ItemResult, ItemStatus,
    LabSubmission, Progress, ProgressFn, SubmissionReport, SubmitOptions, error_json,
};
