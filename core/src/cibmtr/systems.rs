//! The identifier and code systems of the CIBMTR Direct FHIR API, and the CIBMTR Center Number.
//!
//! CIBMTR's guides have spelled the CRID identifier system and the transplant-center security
//! system under two roots over the years (`http://cibmtr.org/...` and
//! `http://terminology.cibmtr.org/...`). What we *write* is configurable ([`UriFamily`]); what we
//! *read* back from a server is accepted in either family ([`is_crid_system`],
//! [`is_transplant_center_system`]).
use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The security label system that CIBMTR's redaction step adds to a stored resource
/// (`meta.security`), with code [`REDACTED_CODE`].
pub const REDACTED_SECURITY_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
/// The code of the redaction security label.
pub const REDACTED_CODE: &str = "REDACTED";
/// UCUM, the unit system of every `Quantity` we write.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// LOINC, the code system of lab Observations.
pub const LOINC: &str = "http://loinc.org";
/// The system of the content-derived identifier the SDK puts on every Observation it builds
/// (see [`crate::cibmtr::submission_id`]).
pub const SUBMISSION_ID_SYSTEM: &str = "urn:cibmtr-fhir:submission-id";

const CIBMTR_CRID: &str = "http://cibmtr.org/identifier/CRID";
const CIBMTR_TRANSPLANT_CENTER: &str = "http://cibmtr.org/codesystem/transplant-center";
const TERMINOLOGY_CRID: &str = "http://terminology.cibmtr.org/identifier/CRID";
const TERMINOLOGY_TRANSPLANT_CENTER: &str =
    "http://terminology.cibmtr.org/codesystem/transplant-center";

/// Which root the CRID identifier system and the transplant-center security system are written
/// under. Responses are read in both families whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UriFamily {
    /// `http://cibmtr.org/identifier/CRID`, `http://cibmtr.org/codesystem/transplant-center`.
    #[default]
    Cibmtr,
    /// `http://terminology.cibmtr.org/identifier/CRID`,
    /// `http://terminology.cibmtr.org/codesystem/transplant-center`.
    Terminology,
}

impl UriFamily {
    /// The system of the CRID in `Patient.identifier`.
    pub fn crid_system(self) -> &'static str {
        match self {
            UriFamily::Cibmtr => CIBMTR_CRID,
            UriFamily::Terminology => TERMINOLOGY_CRID,
        }
    }
    /// The system of the `rc_<CCN>` security label in `meta.security`.
    pub fn transplant_center_system(self) -> &'static str {
        match self {
            UriFamily::Cibmtr => CIBMTR_TRANSPLANT_CENTER,
            UriFamily::Terminology => TERMINOLOGY_TRANSPLANT_CENTER,
        }
    }
}

impl FromStr for UriFamily {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().trim_end_matches('/').to_ascii_lowercase().as_str() {
            "cibmtr" | "http://cibmtr.org" => Ok(UriFamily::Cibmtr),
            "terminology" | "http://terminology.cibmtr.org" => Ok(UriFamily::Terminology),
            _ => Err(Error::validation(
                "uri_family",
                "must be cibmtr (http://cibmtr.org) or terminology (http://terminology.cibmtr.org)",
            )),
        }
    }
}

impl fmt::Display for UriFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriFamily::Cibmtr => "cibmtr",
            UriFamily::Terminology => "terminology",
        })
    }
}

/// Whether `system` is the CRID identifier system of either URI family.
pub fn is_crid_system(system: &str) -> bool {
    system == CIBMTR_CRID || system == TERMINOLOGY_CRID
}

/// Whether `system` is the transplant-center security system of either URI family.
pub fn is_transplant_center_system(system: &str) -> bool {
    system == CIBMTR_TRANSPLANT_CENTER || system == TERMINOLOGY_TRANSPLANT_CENTER
}

/// A CIBMTR Center Number: exactly five ASCII digits (surrounding whitespace is ignored).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ccn(String);

impl Ccn {
    /// Parses a CCN, refusing anything that is not exactly five digits.
    pub fn parse(s: &str) -> Result<Ccn> {
        let s = s.trim();
        if s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Ccn(s.to_owned()))
        } else {
            Err(Error::validation("ccn", "must be exactly 5 digits"))
        }
    }
    /// The five digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The security label code, `rc_<CCN>`.
    pub fn security_code(&self) -> String {
        format!("rc_{}", self.0)
    }
}

impl FromStr for Ccn {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ccn::parse(s)
    }
}

impl fmt::Display for Ccn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Ccn {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
