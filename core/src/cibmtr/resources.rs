//! The FHIR resources the Direct FHIR API takes, built as JSON for STU3 or R4: the de-identified
//! Patient and lab Observations (the guide's Figures 5 and 8), and the searches that find them.
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::labs::{LabResult, ig_display, parse_effective};
use super::systems::{
    Ccn, LOINC, SUBMISSION_ID_SYSTEM, UCUM, UriFamily, is_crid_system, is_transplant_center_system,
};
use crate::fhir::FhirVersion;

/// The narrative of our Patient: FHIR requires a `div` whenever `text` is present, and it must
/// say nothing about the person.
const PATIENT_DIV: &str = "<div xmlns=\"http://www.w3.org/1999/xhtml\">CIBMTR recipient</div>";

fn security(ccn: &Ccn, family: UriFamily) -> Value {
    json!([{ "system": family.transplant_center_system(), "code": ccn.security_code() }])
}

/// The minimal de-identified Patient the guide asks for: the `rc_<CCN>` security label and the
/// CRID identifier, nothing else about the person (no name, gender, birth date, address or
/// telecom; the demographics went to the CRID service).
pub fn patient_resource(crid: i64, ccn: &Ccn, family: UriFamily) -> Value {
    json!({
        "resourceType": "Patient",
        "meta": { "security": security(ccn, family) },
        "text": { "status": "empty", "div": PATIENT_DIV },
        "identifier": [{
            "use": "official",
            "system": family.crid_system(),
            "value": crid.to_string(),
        }],
    })
}

/// The query that finds the Patient of a CRID at a center:
/// `_security=<transplant-center system>|rc_<CCN>&identifier=<CRID system>|<CRID>`.
pub fn patient_search_params(crid: i64, ccn: &Ccn, family: UriFamily) -> Vec<(String, String)> {
    vec![
        (
            "_security".to_owned(),
            format!(
                "{}|{}",
                family.transplant_center_system(),
                ccn.security_code()
            ),
        ),
        (
            "identifier".to_owned(),
            format!("{}|{crid}", family.crid_system()),
        ),
    ]
}

/// Whether a Patient returned by the server is the one of this CRID at this center: a CRID
/// identifier (either URI family) equal to `crid` and the `rc_<CCN>` label (either family).
pub fn patient_matches(resource: &Value, crid: i64, ccn: &Ccn) -> bool {
    if resource.get("resourceType").is_some_and(|t| t != "Patient") {
        return false;
    }
    let has_crid = array(resource.get("identifier")).any(|id| {
        id.get("system")
            .and_then(Value::as_str)
            .is_some_and(is_crid_system)
            && id
                .get("value")
                .and_then(Value::as_str)
                .and_then(|v| v.trim().parse::<i64>().ok())
                == Some(crid)
    });
    let code = ccn.security_code();
    let has_label = array(resource.pointer("/meta/security")).any(|s| {
        s.get("system")
            .and_then(Value::as_str)
            .is_some_and(is_transplant_center_system)
            && s.get("code").and_then(Value::as_str) == Some(code.as_str())
    });
    has_crid && has_label
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// A content hash identifying one lab value of one patient at one center: SHA-256 over a
/// canonical text of the CCN, CRID, LOINC code, value, unit, collection instant, comparator,
/// reference range and status; 32 hex digits.
///
/// The API takes no Bundles and no conditional creates we can rely on, so a batch that fails
/// half-way is simply run again. Because the identifier depends only on what the lab *says*,
/// the rerun computes the same identifier and finds the Observation already on the server
/// instead of creating a duplicate. Equivalent spellings hash equal: `12` and `12.0`, and
/// `2024-05-01T08:30:00-05:00` and `2024-05-01T13:30:00Z` (the instant is normalised to UTC);
/// an absent status counts as `final`. The display is left out: it names the code, it is not
/// part of the measurement.
pub fn submission_id(lab: &LabResult, crid: i64, ccn: &Ccn) -> String {
    let effective = match parse_effective(&lab.effective) {
        Some(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S%.fZ")
            .to_string(),
        None => lab.effective.trim().to_owned(),
    };
    let opt = |v: Option<f64>| v.map(canonical_number).unwrap_or_default();
    let canonical = format!(
        "cibmtr-fhir/observation/v1\nccn={}\ncrid={crid}\nloinc={}\nvalue={}\nunit={}\n\
         effective={effective}\ncomparator={}\nlow={}\nhigh={}\nstatus={}",
        ccn.as_str(),
        lab.loinc.trim(),
        canonical_number(lab.value),
        lab.unit.trim(),
        lab.comparator.as_deref().map(str::trim).unwrap_or(""),
        opt(lab.reference_low),
        opt(lab.reference_high),
        status(lab),
    );
    let digest = Sha256::digest(canonical.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The shortest decimal that round-trips (`12`, `12.5`, `0.001`), with `-0` as `0`.
fn canonical_number(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else {
        v.to_string()
    }
}

fn status(lab: &LabResult) -> &str {
    lab.status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("final")
}

fn quantity(value: f64, unit: &str) -> Value {
    json!({ "value": value, "unit": unit, "system": UCUM, "code": unit })
}

/// A lab Observation in the shape of the guide's Figure 8: the center's security label, the
/// [`submission_id`] identifier, `status`, the `laboratory` category (in the version's code
/// system), the LOINC code (with the given display or the implementation guide's),
/// `subject` = `Patient/<patient_id>`, `effectiveDateTime`, a UCUM `valueQuantity` and, when
/// known, the `referenceRange`.
///
/// Pass a lab that went through [`LabResult::check`]: this function does not validate (a
/// non-finite value would become `null`).
pub fn observation_resource(
    lab: &LabResult,
    crid: i64,
    patient_id: &str,
    ccn: &Ccn,
    family: UriFamily,
    version: FhirVersion,
) -> Value {
    let sid = submission_id(lab, crid, ccn);
    observation_with_submission_id(lab, &sid, patient_id, ccn, family, version)
}

/// [`observation_resource`] for a lab whose [`submission_id`] is already known.
pub(crate) fn observation_with_submission_id(
    lab: &LabResult,
    submission_id: &str,
    patient_id: &str,
    ccn: &Ccn,
    family: UriFamily,
    version: FhirVersion,
) -> Value {
    let category_system = match version {
        FhirVersion::Stu3 => "http://hl7.org/fhir/observation-category",
        FhirVersion::R4 => "http://terminology.hl7.org/CodeSystem/observation-category",
    };
    let loinc = lab.loinc.trim();
    let mut coding = Map::new();
    coding.insert("system".into(), LOINC.into());
    coding.insert("code".into(), loinc.into());
    if let Some(d) = lab
        .display
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .or_else(|| ig_display(loinc))
    {
        coding.insert("display".into(), d.into());
    }
    let unit = lab.unit.trim();
    let mut value = quantity(lab.value, unit);
    if let Some(c) = lab
        .comparator
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        value["comparator"] = c.into();
    }
    let mut obs = json!({
        "resourceType": "Observation",
        "meta": { "security": security(ccn, family) },
        "identifier": [{ "system": SUBMISSION_ID_SYSTEM, "value": submission_id }],
        "status": status(lab),
        "category": [{ "coding": [{
            "system": category_system,
            "code": "laboratory",
            "display": "Laboratory",
        }] }],
        "code": { "coding": [Value::Object(coding)] },
        "subject": { "reference": format!("Patient/{patient_id}") },
        "effectiveDateTime": lab.effective.trim(),
        "valueQuantity": value,
    });
    if lab.reference_low.is_some() || lab.reference_high.is_some() {
        let mut range = Map::new();
        if let Some(low) = lab.reference_low {
            range.insert("low".into(), quantity(low, unit));
        }
        if let Some(high) = lab.reference_high {
            range.insert("high".into(), quantity(high, unit));
        }
        obs["referenceRange"] = json!([Value::Object(range)]);
    }
    obs
}

/// The guide's search for every Observation of a CRID: `subject:Patient.identifier=<CRID>`.
pub fn observation_search_by_crid(crid: i64) -> Vec<(String, String)> {
    vec![("subject:Patient.identifier".to_owned(), crid.to_string())]
}

/// The search for an Observation the SDK created earlier from the same lab value:
/// `identifier=urn:cibmtr-fhir:submission-id|<id>`.
pub fn observation_search_by_submission_id(submission_id: &str) -> Vec<(String, String)> {
    vec![(
        "identifier".to_owned(),
        format!("{SUBMISSION_ID_SYSTEM}|{submission_id}"),
    )]
}

/// The [`submission_id`] an Observation carries, if it has one.
pub fn observation_submission_id(resource: &Value) -> Option<&str> {
    array(resource.get("identifier"))
        .find(|id| id.get("system").and_then(Value::as_str) == Some(SUBMISSION_ID_SYSTEM))
        .and_then(|id| id.get("value"))
        .and_then(Value::as_str)
}
