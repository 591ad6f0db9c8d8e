//! The FHIR resources the Direct FHIR API takes, built as JSON for STU3 or R4: the de-identified
//! Patient and lab Observations (the guide's Figures 5 and 8), and the searches that find them.
use serde_json::{Value, json};
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
    use std::fmt::Write;
    // One buffer, written in place (this runs for every lab of a batch before anything is
    // sent); the text is exactly what the `format!` of the first version wrote.
    let mut canonical = String::with_capacity(256);
    let _ = write!(
        canonical,
        "cibmtr-fhir/observation/v1\nccn={}\ncrid={crid}\nloinc={}\nvalue=",
        ccn.as_str(),
        lab.loinc.trim(),
    );
    write_canonical_number(&mut canonical, lab.value);
    let _ = write!(canonical, "\nunit={}\neffective=", lab.unit.trim());
    match parse_effective(&lab.effective) {
        Some(t) => {
            let utc = t.with_timezone(&chrono::Utc);
            let _ = write!(canonical, "{}", utc.format_with_items(UTC_INSTANT.iter()));
        }
        None => canonical.push_str(lab.effective.trim()),
    }
    let _ = write!(
        canonical,
        "\ncomparator={}\nlow=",
        lab.comparator.as_deref().map(str::trim).unwrap_or("")
    );
    if let Some(low) = lab.reference_low {
        write_canonical_number(&mut canonical, low);
    }
    canonical.push_str("\nhigh=");
    if let Some(high) = lab.reference_high {
        write_canonical_number(&mut canonical, high);
    }
    let _ = write!(canonical, "\nstatus={}", status(lab));
    let digest = Sha256::digest(canonical.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for b in &digest[..16] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0xf)] as char);
    }
    id
}

/// `%Y-%m-%dT%H:%M:%S%.fZ`, parsed once.
static UTC_INSTANT: std::sync::LazyLock<Vec<chrono::format::Item<'static>>> =
    std::sync::LazyLock::new(|| {
        chrono::format::StrftimeItems::new("%Y-%m-%dT%H:%M:%S%.fZ").collect()
    });

/// The shortest decimal that round-trips (`12`, `12.5`, `0.001`), with `-0` as `0`, written
/// into `out`.
fn write_canonical_number(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v == 0.0 {
        out.push('0');
    } else {
        let _ = write!(out, "{v}");
    }
}

fn status(lab: &LabResult) -> &str {
    lab.status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("final")
}

#[cfg(test)]
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
    LabObservation::new(lab, &sid, patient_id, ccn, family, version).to_value()
}

/// [`observation_resource`] for a lab whose [`submission_id`] is already known: the one
/// description of a lab Observation's shape, serialised either as a `Value` (Bundles,
/// [`observation_resource`]) or straight into the text of a request body (the bulk submission's
/// path: no tree of maps per lab).
#[derive(serde::Serialize)]
pub(crate) struct LabObservation<'a> {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    meta: Meta,
    identifier: [Identifier<'a>; 1],
    status: &'a str,
    category: [Codings<'a>; 1],
    code: Codings<'a>,
    subject: PatientReference<'a>,
    #[serde(rename = "effectiveDateTime")]
    effective_date_time: &'a str,
    #[serde(rename = "valueQuantity")]
    value_quantity: Quantity<'a>,
    #[serde(rename = "referenceRange", skip_serializing_if = "Option::is_none")]
    reference_range: Option<[Range<'a>; 1]>,
}

#[derive(serde::Serialize)]
struct Meta {
    security: [SecurityLabel; 1],
}

/// The center's `rc_<CCN>` label.
#[derive(serde::Serialize)]
struct SecurityLabel {
    system: &'static str,
    code: String,
}

#[derive(serde::Serialize)]
struct Identifier<'a> {
    system: &'static str,
    value: &'a str,
}

#[derive(serde::Serialize)]
struct Codings<'a> {
    coding: [Coding<'a>; 1],
}

#[derive(serde::Serialize)]
struct Coding<'a> {
    system: &'static str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a str>,
}

/// `{"reference": "Patient/<id>"}`, the text written without being built first.
struct PatientReference<'a>(&'a str);

impl serde::Serialize for PatientReference<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Text<'a>(&'a str);
        impl serde::Serialize for Text<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(&format_args!("Patient/{}", self.0))
            }
        }
        let mut st = s.serialize_struct("Reference", 1)?;
        st.serialize_field("reference", &Text(self.0))?;
        st.end()
    }
}

/// A UCUM quantity: `value`, the optional `comparator`, `unit`, `system` and `code`.
#[derive(serde::Serialize)]
struct Quantity<'a> {
    value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    comparator: Option<&'a str>,
    unit: &'a str,
    system: &'static str,
    code: &'a str,
}

impl<'a> Quantity<'a> {
    fn new(value: f64, unit: &'a str) -> Self {
        Quantity {
            value,
            comparator: None,
            unit,
            system: UCUM,
            code: unit,
        }
    }
}

#[derive(serde::Serialize)]
struct Range<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    low: Option<Quantity<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    high: Option<Quantity<'a>>,
}

impl<'a> LabObservation<'a> {
    pub(crate) fn new(
        lab: &'a LabResult,
        submission_id: &'a str,
        patient_id: &'a str,
        ccn: &Ccn,
        family: UriFamily,
        version: FhirVersion,
    ) -> Self {
        let category_system = match version {
            FhirVersion::Stu3 => "http://hl7.org/fhir/observation-category",
            FhirVersion::R4 => "http://terminology.hl7.org/CodeSystem/observation-category",
        };
        let loinc = lab.loinc.trim();
        let display = lab
            .display
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .or_else(|| ig_display(loinc));
        let unit = lab.unit.trim();
        let mut value_quantity = Quantity::new(lab.value, unit);
        value_quantity.comparator = lab
            .comparator
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let reference_range =
            (lab.reference_low.is_some() || lab.reference_high.is_some()).then(|| {
                [Range {
                    low: lab.reference_low.map(|low| Quantity::new(low, unit)),
                    high: lab.reference_high.map(|high| Quantity::new(high, unit)),
                }]
            });
        LabObservation {
            resource_type: "Observation",
            meta: Meta {
                security: [SecurityLabel {
                    system: family.transplant_center_system(),
                    code: ccn.security_code(),
                }],
            },
            identifier: [Identifier {
                system: SUBMISSION_ID_SYSTEM,
                value: submission_id,
            }],
            status: status(lab),
            category: [Codings {
                coding: [Coding {
                    system: category_system,
                    code: "laboratory",
                    display: Some("Laboratory"),
                }],
            }],
            code: Codings {
                coding: [Coding {
                    system: LOINC,
                    code: loinc,
                    display,
                }],
            },
            subject: PatientReference(patient_id),
            effective_date_time: lab.effective.trim(),
            value_quantity,
            reference_range,
        }
    }

    /// The resource as a `Value`.
    pub(crate) fn to_value(&self) -> Value {
        // Plain strings and numbers (a non-finite one is `null`, as `json!` makes it): cannot
        // fail.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The resource as the JSON text of a request body.
    pub(crate) fn to_body(&self) -> bytes::Bytes {
        let mut out = Vec::with_capacity(1024);
        // Writing plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, self);
        out.into()
    }
}

/// The Value-tree builder the typed [`LabObservation`] replaced, kept as the tests' oracle.
#[cfg(test)]
fn observation_as_built_by_hand(
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
    let mut coding = serde_json::Map::new();
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
        let mut range = serde_json::Map::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The labs whose identifiers are pinned below: an identifier must never change from one
    /// version of the SDK to the next, or a re-run with a newer SDK would send every lab again.
    fn pinned_labs() -> Vec<(LabResult, i64)> {
        let mut out = Vec::new();
        let plain = LabResult::new("718-7", 12.5, "g/dL", "2024-01-01T00:00:00Z");
        out.push((plain.clone(), 9_007_199_254_740_993));
        let mut full = LabResult::new(
            " 26515-7 ",
            1e21,
            " 10*9/L ",
            "2024-05-01T08:30:00.12-05:00",
        );
        full.comparator = Some(" < ".into());
        (full.reference_low, full.reference_high) = (Some(-0.0), Some(0.001));
        full.status = Some("amended".into());
        full.display = Some("left out of the identifier".into());
        out.push((full, 1));
        let mut nanos = LabResult::new(
            "777-3",
            -3.25,
            "10*9/L",
            "2023-12-31T23:59:59.123456789+14:00",
        );
        nanos.status = Some(" ".into());
        out.push((nanos, -42));
        out.push((
            LabResult::new("718-7", 0.1, "g/dL", "2024-02-29T12:00:00.5+00:00"),
            7,
        ));
        out.push((LabResult::new("718-7", 12.0, "g/dL", " not a date "), 7));
        out
    }

    #[test]
    fn submission_ids_never_change() {
        let ccn = Ccn::parse("12345").unwrap();
        let ids: Vec<String> = pinned_labs()
            .iter()
            .map(|(lab, crid)| submission_id(lab, *crid, &ccn))
            .collect();
        // Computed by the SDK as of 2026-11-24 (identifier scheme v1).
        assert_eq!(
            ids,
            [
                "f5e74a935977717954f0f01b4b12f568",
                "7d35043fe4fb4bdd849739a98c4587a6",
                "3d33e9a9553154e7edca4b251f6d78ae",
                "16c07d2dc05446c91f479c291d4d2812",
                "194d60e15a3076be8fcaaa82f6820494",
            ]
        );
    }

    /// Every combination of the optional parts, in both FHIR versions and URI families: the typed
    /// builder's `Value` and its request body are the resource the hand-built tree was.
    #[test]
    fn the_typed_observation_is_the_hand_built_one() {
        let ccn = Ccn::parse("12345").unwrap();
        let mut checked = 0;
        for version in [FhirVersion::Stu3, FhirVersion::R4] {
            for family in [UriFamily::Cibmtr, UriFamily::Terminology] {
                for (loinc, display) in [
                    ("718-7", None),
                    (" 718-7 ", Some("  ")),
                    ("99999-9", None),
                    ("26515-7", Some(" Platelets \"in\" blood ")),
                ] {
                    for comparator in [None, Some("<"), Some(" ")] {
                        for (low, high) in [
                            (None, None),
                            (Some(12.0), None),
                            (None, Some(0.1)),
                            (Some(-0.0), Some(1e21)),
                        ] {
                            for (value, status) in [
                                (12.5, None),
                                (f64::NAN, Some("amended")),
                                (0.001, Some(" ")),
                            ] {
                                let mut lab = LabResult::new(
                                    loinc,
                                    value,
                                    " g/dL ",
                                    " 2024-05-01T08:30:00-05:00 ",
                                );
                                lab.display = display.map(str::to_owned);
                                lab.comparator = comparator.map(str::to_owned);
                                (lab.reference_low, lab.reference_high) = (low, high);
                                lab.status = status.map(str::to_owned);
                                let sid = submission_id(&lab, 9_007_199_254_740_993, &ccn);
                                let by_hand = observation_as_built_by_hand(
                                    &lab, &sid, "p/1\"x", &ccn, family, version,
                                );
                                let typed = LabObservation::new(
                                    &lab, &sid, "p/1\"x", &ccn, family, version,
                                );
                                assert_eq!(typed.to_value(), by_hand, "{lab:?}");
                                let body = typed.to_body();
                                let parsed: Value = serde_json::from_slice(&body).unwrap();
                                assert_eq!(parsed, by_hand, "{}", String::from_utf8_lossy(&body));
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 2 * 4 * 3 * 4 * 3);
    }
}
