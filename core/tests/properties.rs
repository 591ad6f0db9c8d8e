//! Property tests (proptest) for every validator and builder of caller input: demographics and
//! the CRID request, `LabResult::check`, `LabResult::parse` and `from_json`, `Demographics::
//! from_json`, CSV reading, unit conversion, and the Patient and Observation builders.
//!
//! Random input — arbitrary Unicode, near-misses of every rule, values at the edges — must give
//! either a valid result (checked here against the rules the result promises) or a validation
//! error naming a field, never a panic; and a validation error must be raised before any request:
//! the client-level properties use a client whose servers are a closed port, so any request at
//! all would come back as a network error instead.
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate};
use cibmtr_fhir::auth::PasswordGrant;
use cibmtr_fhir::cibmtr::{
    Ccn, CibmtrClient, Demographics, ETHNICITY_CODES, ItemJson, ItemResult, ItemStatus, LOINC,
    LabOptions, LabResult, RACE_CODES, SUBMISSION_ID_SYSTEM, SubmissionReport, SubmitOptions, UCUM,
    UriFamily, convert, error_json, is_crid_system, is_transplant_center_system, known_units,
    lab_catalog, observation_resource, patient_resource, read_labs_csv, submission_id, unit,
};
use cibmtr_fhir::fhir::FhirVersion;
use cibmtr_fhir::http::{HttpClient, HttpConfig};
use cibmtr_fhir::{Error, ErrorKind};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

fn config(cases: u32) -> Config {
    Config {
        cases,
        // No proptest-regressions/ files in the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 6, 30).unwrap()
}

fn ccn() -> Ccn {
    Ccn::parse("12345").unwrap()
}

/// The field a validation error names; anything else fails the property.
fn field(e: &Error) -> Result<&str, TestCaseError> {
    match e {
        Error::Validation { field, rule } => {
            prop_assert!(!rule.is_empty(), "a rule is stated");
            Ok(field.as_str())
        }
        other => Err(TestCaseError::fail(format!(
            "expected a validation error, got {other:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Any string, or one shaped like the inputs the rules are about.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[A-Za-z' -]{0,12}",
        1 => "[ \t\r\n\u{0}\u{7f}\u{200b}\u{feff}]{0,3}[A-Za-z]{0,6}[ \t\u{0}]{0,2}",
    ]
}

fn date_like() -> impl Strategy<Value = String> {
    prop_oneof![
        // Real and impossible calendar dates, past and future.
        (0u32..=10000, 0u32..=13, 0u32..=32).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        "[0-9/. -]{6,12}",
        any::<String>(),
        Just("2025-06-30".to_owned()),
        Just("2025-07-01".to_owned()),
        Just(" 1970-01-31 ".to_owned()),
    ]
}

fn gender() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "M", "F", "m", "f", "male", "FEMALE", " F ", "X", "", "U"
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

fn ssn() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[0-9]{3}-[0-9]{2}-[0-9]{4}",
        "[0-9]{9}",
        "[0-9-]{8,12}",
        "(000|666|9[0-9]{2})-[0-9]{2}-[0-9]{4}",
        "[0-9]{3}-00-[0-9]{4}",
        "[0-9]{3}-[0-9]{2}-0000",
        any::<String>(),
    ])
}

fn code_from(table: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(table.iter().map(|(c, _)| *c).collect::<Vec<_>>())
            .prop_map(str::to_owned),
        Just(" UNK ".to_owned()),
        "[0-9]{4}-[0-9]",
        any::<String>(),
    ]
}

fn demographics() -> impl Strategy<Value = Demographics> {
    (
        (text(), text(), date_like(), gender(), ssn()),
        (
            prop::option::of(text()),
            prop::collection::vec(code_from(RACE_CODES), 0..4),
            prop::option::of(code_from(ETHNICITY_CODES)),
            prop::option::of(any::<i64>()),
        ),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(any::<i64>()),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |(
                (first, last, birth, gender, ssn),
                (maiden, race, ethnicity, rid),
                (cic, ebmt_id, team, iubmid),
            )| Demographics {
                ssn: ssn.map(Into::into),
                mothers_maiden_name: maiden,
                race,
                ethnicity,
                nmdp_rid: rid,
                ebmt_cic: cic,
                ebmt_id,
                cibmtr_team: team,
                cibmtr_iubmid: iubmid,
                ..Demographics::new(first, last, birth, gender)
            },
        )
}

/// A LOINC-shaped code with the right check digit.
fn valid_loinc() -> impl Strategy<Value = String> {
    "[0-9]{1,7}".prop_map(|num| {
        let sum: u32 = num
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 0 {
                    (d * 2) / 10 + (d * 2) % 10
                } else {
                    d
                }
            })
            .sum();
        format!("{num}-{}", (10 - sum % 10) % 10)
    })
}

fn loinc() -> impl Strategy<Value = String> {
    let catalog: Vec<String> = lab_catalog()
        .iter()
        .flat_map(|d| d.loinc_codes.clone())
        .collect();
    prop_oneof![
        4 => prop::sample::select(catalog),
        2 => valid_loinc(),
        1 => "[0-9]{0,9}-[0-9]{0,2}",
        1 => " ?[0-9]{3,5}-[0-9] ?",
        1 => any::<String>(),
    ]
}

fn unit_code() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = known_units().iter().map(|u| u.code).collect();
    prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["IU/L", "10^9/L", "mcg/dL", "g/dl", "percent", "K/uL", ""])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1.0e6..1.0e6f64,
        1 => any::<f64>(),
        1 => prop::sample::select(vec![
            0.0, -0.0, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 1e300, -1e300, 1e-300, 1.5e306,
            -1.5e306, 4.9e-324, f64::NAN, f64::INFINITY, f64::NEG_INFINITY,
        ]),
    ]
}

/// A form 2402 code with a unit of its own dimension (so the conversion rules apply), or
/// anything at all.
fn code_and_unit() -> impl Strategy<Value = (String, String)> {
    let coherent: Vec<(String, String)> = lab_catalog()
        .iter()
        .flat_map(|d| {
            let preferred = unit(&d.unit).unwrap().dimension;
            let units: Vec<&'static str> = known_units()
                .iter()
                .filter(|u| u.dimension == preferred)
                .map(|u| u.code)
                .collect();
            let mut pairs = Vec::new();
            for c in &d.loinc_codes {
                for u in &units {
                    pairs.push((c.clone(), (*u).to_owned()));
                }
            }
            pairs
        })
        .collect();
    prop_oneof![
        1 => prop::sample::select(coherent),
        1 => (loinc(), unit_code()),
    ]
}

fn effective() -> impl Strategy<Value = String> {
    let offset = prop_oneof![
        Just("Z".to_owned()),
        Just("z".to_owned()),
        Just(String::new()),
        (prop::sample::select(vec!['+', '-']), 0u32..=25, 0u32..=61)
            .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
    ];
    prop_oneof![
        5 => (
            (0u32..=10000, 0u32..=13, 0u32..=32),
            (0u32..=25, 0u32..=61, 0u32..=61),
            prop::sample::select(vec!["T", "t", " ", "_"]),
            prop::option::of("[0-9]{1,9}"),
            offset,
        )
            .prop_map(|((y, mo, d), (h, mi, s), sep, frac, off)| {
                let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
                format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
            }),
        1 => date_like(),
        1 => any::<String>(),
    ]
}

fn comparator() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec!["<", "<=", ">=", ">", " < ", "", "=", "~", "<<"])
            .prop_map(str::to_owned),
        any::<String>(),
    ])
}

fn status() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        prop::sample::select(vec![
            "registered",
            "preliminary",
            "final",
            "amended",
            " final ",
            "",
            "cancelled",
            "FINAL",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ])
}

fn lab() -> impl Strategy<Value = LabResult> {
    (
        (code_and_unit(), value(), effective()),
        (
            comparator(),
            prop::option::of(value()),
            prop::option::of(value()),
            status(),
            prop::option::of(text()),
        ),
    )
        .prop_map(
            |(((loinc, unit), value, effective), (cmp, low, high, status, display))| LabResult {
                comparator: cmp,
                reference_low: low,
                reference_high: high,
                status,
                display,
                ..LabResult::new(loinc, value, unit, effective)
            },
        )
}

fn options() -> impl Strategy<Value = LabOptions> {
    (any::<bool>(), any::<bool>()).prop_map(|(strict, convert_units)| LabOptions {
        strict,
        convert_units,
    })
}

/// A JSON value of any shape, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[0-9<>=. -]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_A-Z]{1,16}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object with some of `fields` (snake or camel case), good or bad values, maybe a stray key.
fn object_with(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let good = prop_oneof![
        json_value(),
        loinc().prop_map(Value::from),
        effective().prop_map(Value::from),
        unit_code().prop_map(Value::from),
        value().prop_map(|v| json!(v)),
        text().prop_map(Value::from),
        date_like().prop_map(Value::from),
        Just(json!([12.0, 16.0])),
        Just(json!([null, 5])),
        Just(json!(["1", 2])),
    ];
    (
        prop::collection::vec(
            (prop::sample::select(fields.to_vec()), any::<bool>(), good),
            0..12,
        ),
        prop::option::of(("[a-zA-Z_]{1,10}", json_value())),
        prop::option::of(json_value()),
    )
        .prop_map(|(entries, stray, whole)| {
            if let Some(w) = whole.filter(|w| !w.is_object()) {
                return w;
            }
            let mut map = serde_json::Map::new();
            for (name, camel, v) in entries {
                let key = if camel {
                    camel_case(name)
                } else {
                    name.to_owned()
                };
                map.insert(key, v);
            }
            if let Some((k, v)) = stray {
                map.insert(k, v);
            }
            Value::Object(map)
        })
}

fn camel_case(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

const LAB_FIELDS: &[&str] = &[
    "loinc",
    "value",
    "unit",
    "effective",
    "comparator",
    "reference_low",
    "reference_high",
    "reference_range",
    "status",
    "display",
];
const DEMOGRAPHICS_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "birth_date",
    "gender",
    "ssn",
    "mothers_maiden_name",
    "race",
    "ethnicity",
    "nmdp_rid",
    "ebmt_cic",
    "ebmt_id",
    "cibmtr_team",
    "cibmtr_iubmid",
];
const LAB_CHECK_FIELDS: &[&str] = &[
    "loinc",
    "value",
    "unit",
    "effective",
    "comparator",
    "reference_low",
    "reference_high",
    "reference_range",
    "status",
];

// ---------------------------------------------------------------------------------------------
// What a valid result promises
// ---------------------------------------------------------------------------------------------

fn assert_valid_checked_lab(lab: &LabResult) -> Result<(), TestCaseError> {
    let (num, check) = lab.loinc.split_once('-').expect("LOINC shape");
    prop_assert!(num.len() <= 7 && num.bytes().all(|b| b.is_ascii_digit()) && !num.is_empty());
    prop_assert!(check.len() == 1 && check.bytes().all(|b| b.is_ascii_digit()));
    prop_assert!(lab.value.is_finite(), "value {}", lab.value);
    prop_assert!(unit(&lab.unit).is_some(), "unit {:?}", lab.unit);
    let t = DateTime::parse_from_rfc3339(&lab.effective);
    prop_assert!(t.is_ok(), "effective {:?}", lab.effective);
    let t = t.unwrap();
    prop_assert!(t.year() >= 1, "FHIR has no year 0");
    prop_assert!(t.offset().local_minus_utc().abs() <= 14 * 3600);
    prop_assert!(lab.effective.as_bytes()[10] == b'T');
    if let Some(c) = &lab.comparator {
        prop_assert!(["<", "<=", ">=", ">"].contains(&c.as_str()));
    }
    for b in [lab.reference_low, lab.reference_high]
        .into_iter()
        .flatten()
    {
        prop_assert!(b.is_finite());
    }
    if let (Some(lo), Some(hi)) = (lab.reference_low, lab.reference_high) {
        prop_assert!(lo <= hi);
    }
    if let Some(s) = &lab.status {
        prop_assert!(["registered", "preliminary", "final", "amended"].contains(&s.as_str()));
    }
    Ok(())
}

/// The rules the Direct FHIR API (and the sandbox) apply to an Observation, and nothing about
/// the person in it.
fn assert_valid_observation(o: &Value, lab: &LabResult, pid: &str) -> Result<(), TestCaseError> {
    let allowed = [
        "resourceType",
        "meta",
        "identifier",
        "status",
        "category",
        "code",
        "subject",
        "effectiveDateTime",
        "valueQuantity",
        "referenceRange",
    ];
    for k in o.as_object().unwrap().keys() {
        prop_assert!(allowed.contains(&k.as_str()), "unexpected member {k}");
    }
    prop_assert_eq!(&o["resourceType"], "Observation");
    prop_assert!(
        ["registered", "preliminary", "final", "amended"].contains(&o["status"].as_str().unwrap())
    );
    prop_assert!(
        o["meta"]["security"][0]["system"]
            .as_str()
            .is_some_and(is_transplant_center_system)
    );
    prop_assert_eq!(&o["meta"]["security"][0]["code"], "rc_12345");
    prop_assert_eq!(&o["identifier"][0]["system"], SUBMISSION_ID_SYSTEM);
    let sid = o["identifier"][0]["value"].as_str().unwrap();
    prop_assert!(sid.len() == 32 && sid.bytes().all(|b| b.is_ascii_hexdigit()));
    prop_assert_eq!(&o["code"]["coding"][0]["system"], LOINC);
    prop_assert_eq!(
        o["code"]["coding"][0]["code"].as_str(),
        Some(lab.loinc.as_str())
    );
    let subject = format!("Patient/{pid}");
    prop_assert_eq!(o["subject"]["reference"].as_str(), Some(subject.as_str()));
    prop_assert!(DateTime::parse_from_rfc3339(o["effectiveDateTime"].as_str().unwrap()).is_ok());
    let q = &o["valueQuantity"];
    prop_assert!(q["value"].is_number(), "{q}");
    prop_assert_eq!(&q["system"], UCUM);
    prop_assert!(q["code"].as_str().is_some_and(|c| !c.is_empty()));
    if let Some(ranges) = o.get("referenceRange") {
        for bound in ["low", "high"] {
            if let Some(b) = ranges[0].get(bound) {
                prop_assert!(b["value"].is_number());
                prop_assert_eq!(&b["system"], UCUM);
            }
        }
    }
    // Valid JSON text (no NaN or infinity smuggled in).
    let text = serde_json::to_string(o).unwrap();
    prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
    prop_assert!(!text.contains("null") && !text.contains("NaN") && !text.contains("inf"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Demographics and the CRID request
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn crid_request_is_valid_or_names_a_field(d in demographics()) {
        match d.crid_request(&ccn(), today()) {
            Ok(body) => {
                prop_assert_eq!(&body["ccn"], "12345");
                let p = body["patient"].as_object().unwrap();
                for name in ["firstName", "lastName"] {
                    let v = p[name].as_str().unwrap();
                    prop_assert!(!v.is_empty() && v == v.trim());
                    prop_assert!(!v.chars().any(char::is_control));
                }
                let birth = p["birthDate"].as_str().unwrap();
                let date = NaiveDate::parse_from_str(birth, "%Y-%m-%d");
                prop_assert!(date.is_ok_and(|b| b <= today()) && birth.len() == 10);
                prop_assert!(["M", "F"].contains(&p["gender"].as_str().unwrap()));
                if let Some(ssn) = p.get("ssn") {
                    let s = ssn.as_str().unwrap();
                    prop_assert!(s.len() == 11 && &s[3..4] == "-" && &s[6..7] == "-");
                    prop_assert!(!s.starts_with("000") && !s.starts_with("666") && !s.starts_with('9'));
                }
                for r in p.get("race").and_then(Value::as_array).into_iter().flatten() {
                    prop_assert!(RACE_CODES.iter().any(|(c, _)| r == c));
                }
                if let Some(e) = p.get("ethnicity") {
                    prop_assert!(ETHNICITY_CODES.iter().any(|(c, _)| e == c));
                }
                for n in ["nmdpRid", "cibmtrTeam"] {
                    if let Some(v) = p.get(n) {
                        prop_assert!(v.as_i64().is_some_and(|v| v >= 0));
                    }
                }
                prop_assert_eq!(p.contains_key("ebmtCic"), p.contains_key("ebmtId"));
                prop_assert_eq!(p.contains_key("cibmtrTeam"), p.contains_key("cibmtrIubmid"));
            }
            Err(e) => {
                let f = field(&e)?;
                prop_assert!(DEMOGRAPHICS_FIELDS.contains(&f), "field {f}");
                // The error never repeats what the caller gave.
                let msg = e.to_string();
                for secret in [&d.first_name, &d.last_name] {
                    let s = secret.trim();
                    if s.chars().count() >= 6 {
                        prop_assert!(!msg.contains(s), "{msg}");
                    }
                }
            }
        }
    }

    #[test]
    fn demographics_debug_shows_no_name_birth_date_or_ssn(
        first in "[A-Za-z]{8,16}",
        last in "[A-Za-z]{8,16}",
        birth in date_like(),
        ssn in "[1-8][0-9]{2}-[1-9][0-9]-[1-9][0-9]{3}",
        maiden in "[A-Za-z]{8,16}",
    ) {
        let d = Demographics {
            ssn: Some(ssn.clone().into()),
            mothers_maiden_name: Some(maiden.clone()),
            ..Demographics::new(&first, &last, &birth, "F")
        };
        let debug = format!("{d:?}");
        for secret in [&first, &last, &ssn, &maiden] {
            prop_assert!(!debug.contains(secret.as_str()), "{debug}");
        }
        if birth.trim().len() >= 8 {
            prop_assert!(!debug.contains(birth.trim()), "{debug}");
        }
    }

    #[test]
    fn demographics_from_json_reads_or_names_a_field(v in object_with(DEMOGRAPHICS_FIELDS)) {
        match Demographics::from_json(&v) {
            Ok(d) => {
                // What was read then goes through the same validation as any other.
                if let Err(e) = d.crid_request(&ccn(), today()) {
                    prop_assert!(DEMOGRAPHICS_FIELDS.contains(&field(&e)?));
                }
            }
            Err(e) => {
                let f = field(&e)?.to_owned();
                let known = DEMOGRAPHICS_FIELDS.contains(&f.as_str()) || f == "demographics";
                let a_key = v.as_object().is_some_and(|m| m.contains_key(&f));
                prop_assert!(known || a_key, "field {f} of {v}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lab results
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn lab_check_is_valid_or_names_a_field(lab in lab(), opts in options()) {
        match lab.check(&opts) {
            Ok(checked) => {
                assert_valid_checked_lab(&checked.lab)?;
                prop_assert!(!opts.strict || checked.definition.is_some());
                // Normalised once, stable after: checking the result changes nothing more.
                let again = checked.lab.check(&opts);
                prop_assert!(again.is_ok(), "{again:?}");
                prop_assert_eq!(&again.unwrap().lab, &checked.lab);
                prop_assert_eq!(
                    submission_id(&checked.lab, 42, &ccn()),
                    submission_id(&checked.lab.check(&opts).unwrap().lab, 42, &ccn())
                );
                for (family, version) in [
                    (UriFamily::Cibmtr, FhirVersion::Stu3),
                    (UriFamily::Terminology, FhirVersion::R4),
                ] {
                    let obs = observation_resource(&checked.lab, 42, "p-1", &ccn(), family, version);
                    assert_valid_observation(&obs, &checked.lab, "p-1")?;
                }
            }
            Err(e) => {
                let f = field(&e)?;
                prop_assert!(LAB_CHECK_FIELDS.contains(&f), "field {f}");
            }
        }
    }

    #[test]
    fn lab_parse_takes_decimals_and_comparators_or_names_the_value(
        v in prop_oneof![
            "[<>=]{0,2} ?[+-]?[0-9]{0,6}(\\.[0-9]{0,4})?",
            "[0-9eE.+-]{1,8}",
            any::<String>(),
        ],
        code in loinc(),
        unit in unit_code(),
        effective in effective(),
    ) {
        match LabResult::parse(&code, &v, &unit, &effective) {
            Ok(lab) => {
                prop_assert!(lab.value.is_finite());
                prop_assert!(!v.to_ascii_lowercase().contains('e'), "no exponents: {v}");
                if let Some(c) = &lab.comparator {
                    prop_assert!(v.trim().starts_with(c.as_str()));
                }
            }
            Err(e) => prop_assert_eq!(field(&e)?, "value"),
        }
    }

    #[test]
    fn lab_from_json_reads_or_names_a_field(v in object_with(LAB_FIELDS), opts in options()) {
        match LabResult::from_json(&v) {
            Ok(lab) => {
                prop_assert!(lab.value.is_finite() || lab.check(&opts).is_err());
                match lab.check(&opts) {
                    Ok(c) => assert_valid_checked_lab(&c.lab)?,
                    Err(e) => prop_assert!(LAB_CHECK_FIELDS.contains(&field(&e)?)),
                }
                // A lab read from JSON writes itself back to the same lab.
                prop_assert_eq!(LabResult::from_json(&lab.to_json()).ok(), Some(lab));
            }
            Err(e) => {
                let f = field(&e)?.to_owned();
                let known = LAB_FIELDS.contains(&f.as_str()) || f == "lab";
                let a_key = v.as_object().is_some_and(|m| m.contains_key(&f));
                prop_assert!(known || a_key, "field {f} of {v}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Units
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn conversion_is_finite_exact_and_reversible(v in value(), from in unit_code(), to in unit_code()) {
        let Some(out) = convert(v, &from, &to) else {
            return Ok(());
        };
        prop_assert!(out.is_finite(), "{v} {from} -> {out} {to}");
        let (f, t) = (unit(&from).unwrap(), unit(&to).unwrap());
        prop_assert_eq!(f.dimension, t.dimension);
        if from == to {
            prop_assert_eq!(out.to_bits(), v.to_bits());
        } else if v.abs() > 1e-200 && v.abs() < 1e200 {
            let back = convert(out, &to, &from).unwrap();
            prop_assert!(
                ((back - v) / v).abs() < 1e-8,
                "{v} {from} -> {out} {to} -> {back}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// A labs CSV: a header (the columns in any order and case, maybe a stray one, maybe one
/// missing, maybe a BOM) and rows of good, bad and broken cells, quotes and blank lines.
fn csv_text() -> impl Strategy<Value = Vec<u8>> {
    let column = prop::sample::select(vec![
        "loinc",
        "value",
        "unit",
        "effective",
        "comparator",
        "reference_low",
        "reference_high",
        "status",
        "display",
        "crid",
        "LOINC",
        "Value",
        "notes",
    ]);
    let cell = prop_oneof![
        loinc(),
        effective(),
        unit_code(),
        "[<>]?[0-9]{1,4}(\\.[0-9]{1,2})?",
        "[0-9]{1,17}",
        Just(String::new()),
        Just("\"quoted, with comma\"".to_owned()),
        Just("\"unterminated".to_owned()),
        any::<String>(),
    ];
    (
        any::<bool>(),
        prop::collection::vec(column, 0..9),
        prop::collection::vec(prop::collection::vec(cell, 0..10), 0..12),
        prop::sample::select(vec!["\n", "\r\n"]),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
    )
        .prop_map(|(bom, header, rows, nl, junk)| {
            let mut out = Vec::new();
            if bom {
                out.extend_from_slice("\u{feff}".as_bytes());
            }
            out.extend_from_slice(header.join(",").as_bytes());
            for row in rows {
                out.extend_from_slice(nl.as_bytes());
                out.extend_from_slice(row.join(",").as_bytes());
            }
            if let Some(j) = junk {
                out.extend_from_slice(nl.as_bytes());
                out.extend_from_slice(&j);
            }
            out
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn csv_reading_keeps_every_row_or_names_the_problem(data in csv_text()) {
        match read_labs_csv(data.as_slice()) {
            Ok(rows) => {
                let mut last = 1;
                for row in &rows {
                    prop_assert!(row.line > last, "line numbers grow past the header: {rows:?}");
                    last = row.line;
                    prop_assert!(row.crid.is_none_or(|c| c > 0));
                    match &row.result {
                        Ok(lab) => prop_assert!(lab.value.is_finite()),
                        Err(e) => {
                            let f = field(e)?;
                            prop_assert!(
                                LAB_CHECK_FIELDS.contains(&f) || f == "csv" || f == "crid",
                                "field {f}"
                            );
                        }
                    }
                }
                let newlines = data.iter().filter(|b| **b == b'\n').count();
                prop_assert!(last <= newlines + 1);
            }
            Err(e) => prop_assert_eq!(field(&e)?, "csv"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Patient builder
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    /// Whatever CRID, centre and URI family, the Patient carries the security label and the CRID
    /// and nothing else about the person: no name, address, telecom, birth date, gender, SSN or
    /// other identifier.
    #[test]
    fn the_patient_is_minimal_and_de_identified(
        crid in 1i64..=i64::MAX,
        ccn in "[0-9]{5}",
        terminology in any::<bool>(),
    ) {
        let family = if terminology { UriFamily::Terminology } else { UriFamily::Cibmtr };
        let ccn = Ccn::parse(&ccn).unwrap();
        let p = patient_resource(crid, &ccn, family);
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        for k in &keys {
            prop_assert!(["resourceType", "meta", "text", "identifier"].contains(k), "{k}");
        }
        let ids = p["identifier"].as_array().unwrap();
        prop_assert_eq!(ids.len(), 1);
        prop_assert!(is_crid_system(ids[0]["system"].as_str().unwrap()));
        let crid_text = crid.to_string();
        prop_assert_eq!(ids[0]["value"].as_str(), Some(crid_text.as_str()));
        prop_assert_eq!(p["meta"].as_object().unwrap().len(), 1);
        let security = p["meta"]["security"].as_array().unwrap();
        prop_assert_eq!(security.len(), 1);
        let label = ccn.security_code();
        prop_assert_eq!(security[0]["code"].as_str(), Some(label.as_str()));
        // The narrative is the same for everyone: it says nothing about the person.
        prop_assert_eq!(
            &p["text"],
            &patient_resource(1, &Ccn::parse("00000").unwrap(), UriFamily::Cibmtr)["text"]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Never a request
// ---------------------------------------------------------------------------------------------

/// A client of a CIBMTR API and an Okta that are a closed port on this machine: any request
/// fails at once with a network error. One for the whole file, on one runtime.
fn offline() -> &'static (tokio::runtime::Runtime, CibmtrClient) {
    static OFFLINE: std::sync::LazyLock<(tokio::runtime::Runtime, CibmtrClient)> =
        std::sync::LazyLock::new(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", l.local_addr().unwrap());
            drop(l);
            let http = HttpClient::new(HttpConfig {
                timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(1),
                token_retries: 0,
                request_retries: 0,
                ..Default::default()
            })
            .unwrap();
            let auth = PasswordGrant::builder(
                format!("{base}/oauth2/v1/token"),
                "client",
                "secret",
                "user",
                "password",
            )
            .http(http.clone())
            .build()
            .unwrap();
            let client = CibmtrClient::builder("12345", &auth)
                .base_url(format!("{base}/cibmtr"))
                .http_client(http)
                .item_attempts(1)
                .build()
                .unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            (rt, client)
        });
    &OFFLINE
}

proptest! {
    #![proptest_config(config(96))]

    /// The client's answer to bad demographics is the validator's, before any request (a request
    /// to the closed port would be a network error); good ones do go out.
    #[test]
    fn registering_bad_demographics_sends_nothing(d in demographics()) {
        let (rt, client) = offline();
        let local = d.crid_request(&ccn(), chrono::Local::now().date_naive());
        let sent = rt.block_on(client.register_crid(&d));
        match (local, sent) {
            (Err(want), Err(got)) => prop_assert_eq!(field(&got)?, field(&want)?),
            (Ok(_), Err(got)) => prop_assert_eq!(got.kind(), ErrorKind::Network, "{:?}", got),
            (_, Ok(crid)) => prop_assert!(false, "a CRID from a closed port: {crid}"),
        }
    }

    /// The same for labs, one by one and in a batch: a bad lab is a validation error (in the
    /// report, for a batch) and no request is made for it.
    #[test]
    fn submitting_bad_labs_sends_nothing(labs in prop::collection::vec(lab(), 1..6)) {
        let (rt, client) = offline();
        let opts = LabOptions::default();
        for lab in &labs {
            let sent = rt.block_on(client.submit_lab(42, lab));
            match (lab.check(&opts), sent) {
                (Err(want), Err(got)) => prop_assert_eq!(field(&got)?, field(&want)?),
                (Ok(_), Err(got)) => prop_assert_eq!(got.kind(), ErrorKind::Network),
                (_, Ok(r)) => prop_assert!(false, "submitted to a closed port: {r:?}"),
            }
        }
        let report = rt
            .block_on(client.submit_labs(42, labs.clone(), &SubmitOptions::default()))
            .unwrap();
        prop_assert_eq!(report.total(), labs.len());
        for (item, lab) in report.items.iter().zip(&labs) {
            let err = item.error.as_ref().expect("nothing can succeed offline");
            match lab.check(&opts) {
                Err(want) => prop_assert_eq!(field(err)?, field(&want)?),
                Ok(_) => prop_assert_eq!(err.kind(), ErrorKind::Network),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report JSON
// ---------------------------------------------------------------------------------------------

/// The report's JSON as the SDK built it by hand before it streamed it: the oracle of what
/// `to_json`, `serde_json::to_string` and `ItemJson` must keep producing.
mod report_oracle {
    use cibmtr_fhir::Error;
    use cibmtr_fhir::cibmtr::{ItemResult, SubmissionReport};
    use serde_json::{Value, json};

    pub fn error(e: &Error) -> Value {
        let mut v = json!({"kind": e.kind().code(), "message": e.to_string()});
        match e {
            Error::Validation { field, rule } => {
                v["field"] = json!(field);
                v["rule"] = json!(rule);
            }
            Error::Http { status, .. } => v["status"] = json!(status),
            Error::Auth { error, .. } => v["error"] = json!(error),
            Error::RateLimited {
                retry_after: Some(w),
            } => v["retry_after"] = json!(w.as_secs_f64()),
            _ => {}
        }
        v
    }

    pub fn item(i: &ItemResult) -> Value {
        let mut v = json!({
            "index": i.index,
            "status": i.status.as_str(),
            "id": i.id,
            "submission_id": i.submission_id,
            "warnings": i.warnings,
        });
        if let Some(e) = &i.error {
            v["error"] = error(e);
        }
        v
    }

    pub fn report(r: &SubmissionReport) -> Value {
        json!({
            "batch_id": r.batch_id,
            "total": r.total(),
            "created": r.created,
            "already_present": r.already_present,
            "failed": r.failed,
            "elapsed_ms": r.elapsed.as_millis() as u64,
            "items": r.items.iter().map(item).collect::<Vec<_>>(),
        })
    }
}

fn report_error() -> impl Strategy<Value = Error> {
    prop_oneof![
        (text(), text()).prop_map(|(field, rule)| Error::Validation { field, rule }),
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(error, description, status)| Error::Auth {
                error,
                description,
                status
            }),
        proptest::option::of(0u64..10_000_000).prop_map(|ms| Error::RateLimited {
            retry_after: ms.map(Duration::from_millis)
        }),
        (any::<u16>(), text()).prop_map(|(status, message)| Error::Http {
            status,
            message,
            outcome: None
        }),
        text().prop_map(|message| Error::Network { message }),
        text().prop_map(|message| Error::Config { message }),
    ]
}

fn report_item() -> impl Strategy<Value = ItemResult> {
    (
        0usize..100_000,
        prop_oneof![
            Just(ItemStatus::Created),
            Just(ItemStatus::AlreadyPresent),
            Just(ItemStatus::Failed)
        ],
        proptest::option::of(text()),
        proptest::option::of(text()),
        proptest::option::of(report_error()),
        proptest::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(index, status, id, submission_id, error, warnings)| ItemResult {
                index,
                status,
                id,
                submission_id,
                error,
                warnings,
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    /// The report's JSON, as a `Value` and streamed (compact and pretty), is the hand-built one,
    /// key for key and byte for byte; so is an item with its CRID and CSV line (the CLI's rows).
    #[test]
    fn the_streamed_report_is_the_hand_built_one(
        items in proptest::collection::vec(report_item(), 0..6),
        counts in (0usize..1000, 0usize..1000, 0usize..1000),
        elapsed_us in 0u64..10_000_000_000,
        batch_id in proptest::option::of(text()),
        crid in any::<i64>(),
        line in 0usize..1_000_000,
    ) {
        let report = SubmissionReport {
            items,
            created: counts.0,
            already_present: counts.1,
            failed: counts.2,
            elapsed: Duration::from_micros(elapsed_us),
            batch_id,
        };
        let oracle = report_oracle::report(&report);
        prop_assert_eq!(&report.to_json(), &oracle);
        prop_assert_eq!(serde_json::to_string(&report).unwrap(), oracle.to_string());
        prop_assert_eq!(
            serde_json::to_string_pretty(&report).unwrap(),
            serde_json::to_string_pretty(&oracle).unwrap()
        );
        for item in &report.items {
            prop_assert_eq!(item.to_json(), report_oracle::item(item));
            if let Some(e) = &item.error {
                prop_assert_eq!(error_json(e), report_oracle::error(e));
            }
            let mut placed = report_oracle::item(item);
            placed["crid"] = json!(crid.to_string());
            placed["line"] = json!(line);
            let streamed = ItemJson { item, crid: Some(crid), line: Some(line) };
            prop_assert_eq!(serde_json::to_string(&streamed).unwrap(), placed.to_string());
        }
    }
}
