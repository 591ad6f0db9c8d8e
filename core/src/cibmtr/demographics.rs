//! CRID registration: the patient's demographics, validated and shaped into the body of
//! `PUT {base}/CRID`, and the CRID read back from the answer.
//!
//! This is the only place the SDK handles personally identifiable information. None of it ever
//! appears in an error message or in `Debug` output: errors name the field and the rule that
//! failed, never the value.
use std::fmt;

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use super::systems::Ccn;
use crate::{Error, Result, Secret};

/// The race codes of the CRID Service API (code, description).
pub const RACE_CODES: &[(&str, &str)] = &[
    ("1002-5", "American Indian or Alaska Native"),
    ("2028-9", "Asian"),
    ("2054-5", "Black or African American"),
    ("2076-8", "Native Hawaiian or Other Pacific Islander"),
    ("2106-3", "White"),
    ("ASKU", "Not Reported"),
    ("UNK", "Unknown"),
];

/// The ethnicity codes of the CRID Service API (code, description).
pub const ETHNICITY_CODES: &[(&str, &str)] = &[
    ("2135-2", "Hispanic or Latino"),
    ("2186-5", "Non Hispanic or Latino"),
    ("UNK", "Unknown"),
];

/// The demographics CIBMTR needs to register a recipient and hand back a CRID.
///
/// The first five fields (with the CCN passed to [`Demographics::crid_request`]) are required by
/// the guide; the rest are optional and left out of the request when absent (a blank optional
/// string counts as absent). `Debug` shows which fields are present but never a name, the birth
/// date, the SSN, the mother's maiden name or a patient registry identifier.
///
/// ```
/// use cibmtr_fhir::cibmtr::{Ccn, Demographics};
/// use chrono::NaiveDate;
///
/// let mut patient = Demographics::new("Jane", "Doe", "1980-02-03", "female");
/// patient.race = vec!["2106-3".into()];
/// let today = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
/// let body = patient.crid_request(&Ccn::parse("12345")?, today)?;
/// assert_eq!(body["ccn"], "12345");
/// assert_eq!(body["patient"]["gender"], "F");
/// assert!(!format!("{patient:?}").contains("Jane"));
/// # Ok::<(), cibmtr_fhir::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Demographics {
    pub first_name: String,
    pub last_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    /// `M` or `F`; `m`, `f`, `male` and `female` (any case) are accepted and normalised.
    pub gender: String,
    /// `###-##-####` (nine bare digits are accepted and written with dashes).
    pub ssn: Option<Secret>,
    pub mothers_maiden_name: Option<String>,
    /// Codes from [`RACE_CODES`].
    pub race: Vec<String>,
    /// A code from [`ETHNICITY_CODES`].
    pub ethnicity: Option<String>,
    pub nmdp_rid: Option<i64>,
    /// EBMT center identification code; given together with `ebmt_id`.
    pub ebmt_cic: Option<String>,
    pub ebmt_id: Option<String>,
    /// Given together with `cibmtr_iubmid`.
    pub cibmtr_team: Option<i64>,
    pub cibmtr_iubmid: Option<String>,
}

impl Demographics {
    /// The four required patient attributes; everything optional starts absent.
    pub fn new(
        first_name: impl Into<String>,
        last_name: impl Into<String>,
        birth_date: impl Into<String>,
        gender: impl Into<String>,
    ) -> Self {
        Demographics {
            first_name: first_name.into(),
            last_name: last_name.into(),
            birth_date: birth_date.into(),
            gender: gender.into(),
            ..Default::default()
        }
    }

    /// Validates every field and builds the body of the CRID registration request:
    /// `{"ccn": "12345", "patient": {"firstName": .., "lastName": .., "birthDate": ..,
    /// "gender": .., ...}}`, optional keys omitted when absent. `today` bounds the birth date.
    pub fn crid_request(&self, ccn: &Ccn, today: NaiveDate) -> Result<Value> {
        let mut p = Map::new();
        p.insert(
            "firstName".into(),
            required_name("first_name", &self.first_name)?.into(),
        );
        p.insert(
            "lastName".into(),
            required_name("last_name", &self.last_name)?.into(),
        );
        p.insert(
            "birthDate".into(),
            birth_date(&self.birth_date, today)?.into(),
        );
        p.insert("gender".into(), gender(&self.gender)?.into());
        if let Some(ssn) = &self.ssn {
            p.insert("ssn".into(), normalise_ssn(ssn.expose())?.into());
        }
        if let Some(m) = optional(&self.mothers_maiden_name) {
            p.insert("mothersMaidenName".into(), m.into());
        }
        let race = race_codes(&self.race)?;
        if !race.is_empty() {
            p.insert("race".into(), json!(race));
        }
        if let Some(e) = optional(&self.ethnicity) {
            if !ETHNICITY_CODES.iter().any(|(c, _)| *c == e) {
                return Err(Error::validation(
                    "ethnicity",
                    "must be one of 2135-2, 2186-5 or UNK",
                ));
            }
            p.insert("ethnicity".into(), e.into());
        }
        if let Some(rid) = self.nmdp_rid {
            if rid < 0 {
                return Err(Error::validation("nmdp_rid", "must not be negative"));
            }
            p.insert("nmdpRid".into(), rid.into());
        }
        match (optional(&self.ebmt_cic), optional(&self.ebmt_id)) {
            (Some(cic), Some(id)) => {
                p.insert("ebmtCic".into(), cic.into());
                p.insert("ebmtId".into(), id.into());
            }
            (Some(_), None) => {
                return Err(Error::validation(
                    "ebmt_id",
                    "is required when ebmt_cic is given (EBMT CIC and ID come together)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::validation(
                    "ebmt_cic",
                    "is required when ebmt_id is given (EBMT CIC and ID come together)",
                ));
            }
            (None, None) => {}
        }
        if let Some(team) = self.cibmtr_team
            && team < 0
        {
            return Err(Error::validation("cibmtr_team", "must not be negative"));
        }
        match (self.cibmtr_team, optional(&self.cibmtr_iubmid)) {
            (Some(team), Some(iubmid)) => {
                p.insert("cibmtrTeam".into(), team.into());
                p.insert("cibmtrIubmid".into(), iubmid.into());
            }
            (Some(_), None) => {
                return Err(Error::validation(
                    "cibmtr_iubmid",
                    "is required when cibmtr_team is given (CIBMTR team and IUBMID come together)",
                ));
            }
            (None, Some(_)) => {
                return Err(Error::validation(
                    "cibmtr_team",
                    "is required when cibmtr_iubmid is given (CIBMTR team and IUBMID come together)",
                ));
            }
            (None, None) => {}
        }
        Ok(json!({ "ccn": ccn.as_str(), "patient": Value::Object(p) }))
    }
}

/// Shown in place of a value `Debug` must not print.
const PII: &str = "[PII]";
/// Shown in place of a code that is not in its table (it might be a misplaced name).
const UNRECOGNISED: &str = "[unrecognised]";

impl fmt::Debug for Demographics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn hidden<T>(o: &Option<T>) -> Option<&'static str> {
            o.as_ref().map(|_| PII)
        }
        fn code<'a>(table: &[(&str, &str)], c: &'a str) -> &'a str {
            if table.iter().any(|(k, _)| *k == c.trim()) {
                c
            } else {
                UNRECOGNISED
            }
        }
        let gender = match gender(&self.gender) {
            Ok(_) => self.gender.as_str(),
            Err(_) if self.gender.is_empty() => "",
            Err(_) => UNRECOGNISED,
        };
        let race: Vec<&str> = self.race.iter().map(|c| code(RACE_CODES, c)).collect();
        f.debug_struct("Demographics")
            .field("first_name", &PII)
            .field("last_name", &PII)
            .field("birth_date", &PII)
            .field("gender", &gender)
            .field("ssn", &hidden(&self.ssn))
            .field("mothers_maiden_name", &hidden(&self.mothers_maiden_name))
            .field("race", &race)
            .field(
                "ethnicity",
                &self.ethnicity.as_deref().map(|c| code(ETHNICITY_CODES, c)),
            )
            .field("nmdp_rid", &hidden(&self.nmdp_rid))
            .field("ebmt_cic", &self.ebmt_cic)
            .field("ebmt_id", &hidden(&self.ebmt_id))
            .field("cibmtr_team", &self.cibmtr_team)
            .field("cibmtr_iubmid", &hidden(&self.cibmtr_iubmid))
            .finish()
    }
}

/// Reads the CRID from the answer to a CRID registration: `perfectMatch[0].crid` (current
/// shape) or a top-level `crid` (older shape), as a JSON integer or a string of digits.
///
/// CRIDs reach 16 digits, above 2^53, so the number is read as an exact integer and never
/// through `f64`. A body without a usable CRID is an [`Error::Http`] with status 200: the server
/// said yes, but not in a shape we can use.
pub fn parse_crid_response(body: &Value) -> Result<i64> {
    let candidate = body
        .get("perfectMatch")
        .and_then(|m| m.get(0))
        .and_then(|m| m.get("crid"))
        .filter(|v| !v.is_null())
        .or_else(|| body.get("crid").filter(|v| !v.is_null()));
    let Some(v) = candidate else {
        let mut message =
            "CRID response had no crid (expected perfectMatch[0].crid or crid)".to_owned();
        if let Some(m) = body.get("errorMessage").and_then(Value::as_str) {
            message.push_str("; the server said: ");
            message.extend(m.chars().take(200));
        }
        return Err(unexpected(message));
    };
    let crid = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<i64>().ok()
            } else {
                None
            }
        }
        _ => None,
    };
    match crid {
        Some(c) if c > 0 => Ok(c),
        _ => Err(unexpected(
            "CRID response had a crid that is not a positive integer within 64 bits".to_owned(),
        )),
    }
}

fn unexpected(message: String) -> Error {
    Error::Http {
        status: 200,
        message,
        outcome: None,
    }
}

fn optional(o: &Option<String>) -> Option<&str> {
    o.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn required_name<'a>(field: &str, v: &'a str) -> Result<&'a str> {
    let v = v.trim();
    if v.is_empty() {
        return Err(Error::validation(
            field,
            "is required and must not be blank",
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(Error::validation(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v)
}

fn birth_date(v: &str, today: NaiveDate) -> Result<String> {
    const RULE: &str = "must be a real date in YYYY-MM-DD form, not in the future";
    let v = v.trim();
    let b = v.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return Err(Error::validation("birth_date", RULE));
    }
    match NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        Ok(d) if d <= today => Ok(v.to_owned()),
        _ => Err(Error::validation("birth_date", RULE)),
    }
}

fn gender(v: &str) -> Result<&'static str> {
    match v.trim().to_ascii_lowercase().as_str() {
        "m" | "male" => Ok("M"),
        "f" | "female" => Ok("F"),
        _ => Err(Error::validation(
            "gender",
            "must be M or F (or male/female)",
        )),
    }
}

/// `###-##-####` with the Social Security Administration's never-issued numbers refused: area
/// 000, 666 or 900-999, group 00, serial 0000.
fn normalise_ssn(v: &str) -> Result<String> {
    let v = v.trim();
    let digits: String = match v.len() {
        11 if v.as_bytes()[3] == b'-' && v.as_bytes()[6] == b'-' => {
            v.chars().filter(|c| *c != '-').collect()
        }
        9 => v.to_owned(),
        _ => String::new(),
    };
    if digits.len() != 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::validation("ssn", "must have the form ###-##-####"));
    }
    let (area, group, serial) = (&digits[..3], &digits[3..5], &digits[5..]);
    if area == "000" || area == "666" || area.starts_with('9') {
        return Err(Error::validation(
            "ssn",
            "has an area number that is never issued (000, 666 or 900-999)",
        ));
    }
    if group == "00" {
        return Err(Error::validation(
            "ssn",
            "has group number 00, which is never issued",
        ));
    }
    if serial == "0000" {
        return Err(Error::validation(
            "ssn",
            "has serial number 0000, which is never issued",
        ));
    }
    Ok(format!("{area}-{group}-{serial}"))
}

fn race_codes(codes: &[String]) -> Result<Vec<&str>> {
    let mut out: Vec<&str> = Vec::new();
    for c in codes.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        if !RACE_CODES.iter().any(|(k, _)| *k == c) {
            return Err(Error::validation(
                "race",
                "each code must be one of 1002-5, 2028-9, 2054-5, 2076-8, 2106-3, ASKU or UNK",
            ));
        }
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}
