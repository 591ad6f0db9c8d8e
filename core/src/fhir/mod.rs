//! Generic FHIR over HTTP: [`FhirClient`] (read, search with paging, create, update, conditional
//! create) for STU3 and R4 JSON.

mod client;

pub use client::{
    CreateOutcome, FHIR_JSON, FhirClient, FhirClientBuilder, ResourceStream, id_from_location,
};
pub(crate) use client::{bundle_resources, http_error, next_link, parse_body};

/// The FHIR release a server speaks. CIBMTR's Direct FHIR API is STU3; most SMART servers are R4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FhirVersion {
    /// FHIR STU3 (3.0.x).
    Stu3,
    /// FHIR R4 (4.0.x).
    #[default]
    R4,
}

impl std::str::FromStr for FhirVersion {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "STU3" | "R3" | "3" | "3.0" => Ok(FhirVersion::Stu3),
            "R4" | "4" | "4.0" => Ok(FhirVersion::R4),
            _ => Err(crate::Error::validation(
                "fhir_version",
                "must be STU3 or R4",
            )),
        }
    }
}
