//! The pure CIBMTR domain: CRID registration input, the form 2402 catalog and units, lab checks,
//! submission identifiers, the FHIR resources and CSV input. No network.
use chrono::NaiveDate;
use serde_json::{Value, json};

use cibmtr_fhir::cibmtr::{
    Ccn, Demographics, Dimension, ETHNICITY_CODES, LOINC, LabOptions, LabResult, RACE_CODES,
    SUBMISSION_ID_SYSTEM, UCUM, UriFamily, convert, ig_display, is_crid_system,
    is_transplant_center_system, known_units, lab_catalog, lab_for_code, labs_csv_inputs,
    observation_resource, observation_search_by_crid, observation_search_by_submission_id,
    observation_submission_id, parse_crid_response, patient_matches, patient_resource,
    patient_search_params, read_labs_csv, submission_id, unit,
};
use cibmtr_fhir::fhir::FhirVersion;
use cibmtr_fhir::{Error, ErrorKind, Secret};

const FIRST: &str = "Zebulon";
const LAST: &str = "Quackenbush";
const MAIDEN: &str = "Featherstonehaugh";
const SSN: &str = "123-45-6789";
const DOB: &str = "1980-02-03";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()
}

fn ccn() -> Ccn {
    Ccn::parse("12345").unwrap()
}

fn full_patient() -> Demographics {
    Demographics {
        ssn: Some(Secret::new(SSN)),
        mothers_maiden_name: Some(MAIDEN.into()),
        race: vec!["2106-3".into(), "2028-9".into()],
        ethnicity: Some("2186-5".into()),
        nmdp_rid: Some(1234567),
        ebmt_cic: Some("CIC1".into()),
        ebmt_id: Some("EB99".into()),
        cibmtr_team: Some(42),
        cibmtr_iubmid: Some("IU77".into()),
        ..Demographics::new(FIRST, LAST, DOB, "F")
    }
}

fn field_of(e: &Error) -> &str {
    match e {
        Error::Validation { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// The field of the validation error, asserting no PII leaked into it.
fn invalid_field(d: &Demographics) -> String {
    // No expect_err: its panic message would print the accepted payload, PII and all.
    let Err(e) = d.crid_request(&ccn(), today()) else {
        return "<accepted>".to_owned();
    };
    let shown = format!("{e} {e:?}");
    for pii in [FIRST, LAST, MAIDEN, SSN, DOB, "123456789"] {
        assert!(!shown.contains(pii), "{pii} leaked into {shown}");
    }
    field_of(&e).to_owned()
}

// ----------------------------------------------------------------------------------------------
// systems
// ----------------------------------------------------------------------------------------------

#[test]
fn uri_families_and_their_systems() {
    assert_eq!(UriFamily::default(), UriFamily::Cibmtr);
    assert_eq!(
        UriFamily::Cibmtr.crid_system(),
        "http://cibmtr.org/identifier/CRID"
    );
    assert_eq!(
        UriFamily::Cibmtr.transplant_center_system(),
        "http://cibmtr.org/codesystem/transplant-center"
    );
    assert_eq!(
        UriFamily::Terminology.crid_system(),
        "http://terminology.cibmtr.org/identifier/CRID"
    );
    assert_eq!(
        UriFamily::Terminology.transplant_center_system(),
        "http://terminology.cibmtr.org/codesystem/transplant-center"
    );
    for f in [UriFamily::Cibmtr, UriFamily::Terminology] {
        assert!(is_crid_system(f.crid_system()));
        assert!(is_transplant_center_system(f.transplant_center_system()));
        assert!(!is_crid_system(f.transplant_center_system()));
    }
    assert!(!is_crid_system("http://example.org/identifier/CRID"));
}

#[test]
fn uri_family_from_str() {
    for (s, f) in [
        ("cibmtr", UriFamily::Cibmtr),
        ("http://cibmtr.org", UriFamily::Cibmtr),
        ("Terminology", UriFamily::Terminology),
        ("http://terminology.cibmtr.org", UriFamily::Terminology),
    ] {
        assert_eq!(s.parse::<UriFamily>().unwrap(), f, "{s}");
    }
    let e = "hl7".parse::<UriFamily>().unwrap_err();
    assert_eq!(field_of(&e), "uri_family");
}

#[test]
fn ccn_is_exactly_five_digits() {
    let c = Ccn::parse("01234").unwrap();
    assert_eq!(c.as_str(), "01234");
    assert_eq!(c.security_code(), "rc_01234");
    assert_eq!(c.to_string(), "01234");
    for bad in ["", "1234", "123456", "12a45", "１２３４５", "12 45"] {
        let e = Ccn::parse(bad).unwrap_err();
        assert_eq!(field_of(&e), "ccn", "{bad:?}");
    }
}

// ----------------------------------------------------------------------------------------------
// demographics
// ----------------------------------------------------------------------------------------------

#[test]
fn crid_request_has_the_guides_shape() {
    let body = full_patient().crid_request(&ccn(), today()).unwrap();
    assert_eq!(
        body,
        json!({
            "ccn": "12345",
            "patient": {
                "firstName": FIRST, "lastName": LAST, "birthDate": DOB, "gender": "F",
                "ssn": SSN, "mothersMaidenName": MAIDEN, "race": ["2106-3", "2028-9"],
                "ethnicity": "2186-5", "nmdpRid": 1234567, "ebmtCic": "CIC1", "ebmtId": "EB99",
                "cibmtrTeam": 42, "cibmtrIubmid": "IU77"
            }
        })
    );
}

#[test]
fn crid_request_omits_absent_optionals_and_trims_names() {
    let mut d = Demographics::new("  Ann ", " Lee", DOB, "m");
    d.mothers_maiden_name = Some("   ".into());
    let body = d.crid_request(&ccn(), today()).unwrap();
    assert_eq!(
        body,
        json!({"ccn": "12345", "patient": {
            "firstName": "Ann", "lastName": "Lee", "birthDate": DOB, "gender": "M"}})
    );
}

#[test]
fn gender_is_normalised() {
    for (given, sent) in [
        ("M", "M"),
        ("m", "M"),
        ("male", "M"),
        ("MALE", "M"),
        ("F", "F"),
        ("f", "F"),
        ("Female", "F"),
        (" female ", "F"),
    ] {
        let body = Demographics::new(FIRST, LAST, DOB, given)
            .crid_request(&ccn(), today())
            .unwrap();
        assert_eq!(body["patient"]["gender"], sent, "{given}");
    }
}

#[test]
fn ssn_without_dashes_is_written_with_them() {
    let mut d = Demographics::new(FIRST, LAST, DOB, "F");
    d.ssn = Some(Secret::new("123456789"));
    let body = d.crid_request(&ccn(), today()).unwrap();
    assert_eq!(body["patient"]["ssn"], SSN);
}

#[test]
fn birth_date_on_today_is_accepted() {
    let d = Demographics::new(FIRST, LAST, "2024-05-01", "F");
    assert!(d.crid_request(&ccn(), today()).is_ok());
}

#[test]
fn every_demographics_rule_names_its_field_and_hides_the_value() {
    type Edit = fn(&mut Demographics);
    let cases: &[(&str, &str, Edit)] = &[
        ("blank first name", "first_name", |d| {
            d.first_name = "  ".into()
        }),
        ("blank last name", "last_name", |d| {
            d.last_name = String::new()
        }),
        ("control char in name", "last_name", |d| {
            d.last_name = format!("{LAST}\u{0}x")
        }),
        ("empty birth date", "birth_date", |d| {
            d.birth_date = String::new()
        }),
        ("unpadded birth date", "birth_date", |d| {
            d.birth_date = "1980-2-3".into()
        }),
        ("US birth date", "birth_date", |d| {
            d.birth_date = "02/03/1980".into()
        }),
        ("not a leap year", "birth_date", |d| {
            d.birth_date = "2023-02-29".into()
        }),
        ("month 13", "birth_date", |d| {
            d.birth_date = "1980-13-01".into()
        }),
        ("date-time", "birth_date", |d| {
            d.birth_date = "1980-02-03T00:00:00".into()
        }),
        ("future birth date", "birth_date", |d| {
            d.birth_date = "2024-05-02".into()
        }),
        ("gender X", "gender", |d| d.gender = "X".into()),
        ("gender blank", "gender", |d| d.gender = String::new()),
        ("ssn short", "ssn", |d| {
            d.ssn = Some(Secret::new("123-45-678"))
        }),
        ("ssn letters", "ssn", |d| {
            d.ssn = Some(Secret::new("12a-45-6789"))
        }),
        ("ssn 3-3-4 (guide typo)", "ssn", |d| {
            d.ssn = Some(Secret::new("123-456-7890"))
        }),
        ("ssn area 000", "ssn", |d| {
            d.ssn = Some(Secret::new("000-45-6789"))
        }),
        ("ssn area 666", "ssn", |d| {
            d.ssn = Some(Secret::new("666-45-6789"))
        }),
        ("ssn area 900", "ssn", |d| {
            d.ssn = Some(Secret::new("900-45-6789"))
        }),
        ("ssn area 999", "ssn", |d| {
            d.ssn = Some(Secret::new("999-45-6789"))
        }),
        ("ssn group 00", "ssn", |d| {
            d.ssn = Some(Secret::new("123-00-6789"))
        }),
        ("ssn serial 0000", "ssn", |d| {
            d.ssn = Some(Secret::new("123-45-0000"))
        }),
        ("race code", "race", |d| d.race.push("White".into())),
        ("ethnicity code", "ethnicity", |d| {
            d.ethnicity = Some("Hispanic".into())
        }),
        ("negative nmdp rid", "nmdp_rid", |d| d.nmdp_rid = Some(-1)),
        ("negative team", "cibmtr_team", |d| d.cibmtr_team = Some(-1)),
        ("ebmt cic alone", "ebmt_id", |d| d.ebmt_id = None),
        ("ebmt id alone", "ebmt_cic", |d| d.ebmt_cic = None),
        ("cibmtr team alone", "cibmtr_iubmid", |d| {
            d.cibmtr_iubmid = None
        }),
        ("cibmtr iubmid alone", "cibmtr_team", |d| {
            d.cibmtr_team = None
        }),
    ];
    for (what, field, edit) in cases {
        let mut d = full_patient();
        edit(&mut d);
        assert_eq!(invalid_field(&d), *field, "{what}");
    }
}

#[test]
fn demographics_debug_shows_no_pii() {
    let d = full_patient();
    let shown = format!("{d:?} {d:#?}");
    for pii in [FIRST, LAST, MAIDEN, SSN, DOB, "1234567", "EB99", "IU77"] {
        assert!(!shown.contains(pii), "{pii} leaked into {shown}");
    }
    assert!(shown.contains("[PII]"));
    assert!(shown.contains("2106-3"), "codes are not PII: {shown}");
    // A name typed where a code belongs is not echoed either.
    let mut d = Demographics::new(FIRST, LAST, DOB, LAST);
    d.race = vec![FIRST.into()];
    d.ethnicity = Some(MAIDEN.into());
    let shown = format!("{d:?}");
    for pii in [FIRST, LAST, MAIDEN] {
        assert!(!shown.contains(pii), "{pii} leaked into {shown}");
    }
}

#[test]
fn code_tables_match_the_guide() {
    let races: Vec<&str> = RACE_CODES.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        races,
        [
            "1002-5", "2028-9", "2054-5", "2076-8", "2106-3", "ASKU", "UNK"
        ]
    );
    let eth: Vec<&str> = ETHNICITY_CODES.iter().map(|(c, _)| *c).collect();
    assert_eq!(eth, ["2135-2", "2186-5", "UNK"]);
}

#[test]
fn crid_response_shapes() {
    let current = json!({"perfectMatch": [{"matchedCriteria": ["ssn"], "matchType": "Perfect1", "crid": 3989144}]});
    assert_eq!(parse_crid_response(&current).unwrap(), 3989144);
    assert_eq!(
        parse_crid_response(&json!({"crid": 3989144})).unwrap(),
        3989144
    );
    assert_eq!(
        parse_crid_response(&json!({"crid": "3989144"})).unwrap(),
        3989144
    );
}

#[test]
fn crid_above_2_pow_53_is_exact() {
    let body: Value =
        serde_json::from_str(r#"{"perfectMatch":[{"crid":9007199254740993}]}"#).unwrap();
    assert_eq!(parse_crid_response(&body).unwrap(), 9_007_199_254_740_993);
    let body: Value = serde_json::from_str(r#"{"crid":"9007199254740993"}"#).unwrap();
    assert_eq!(parse_crid_response(&body).unwrap(), 9_007_199_254_740_993);
}

#[test]
fn crid_missing_or_unusable_is_an_error() {
    for body in [
        json!({}),
        json!({"perfectMatch": []}),
        json!({"crid": null}),
        json!({"crid": 12.5}),
        json!({"crid": -4}),
        json!({"crid": "12ab"}),
        json!({"crid": 18446744073709551615u64}),
        serde_json::from_str::<Value>(r#"{"crid": 99999999999999999999}"#).unwrap(),
        json!({"errorMessage": "no match"}),
    ] {
        let e = parse_crid_response(&body).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Http, "{body}");
        assert!(matches!(e, Error::Http { status: 200, .. }));
    }
    let e = parse_crid_response(&json!({"errorMessage": "no match"})).unwrap_err();
    assert!(e.to_string().contains("no match"), "{e}");
}

// ----------------------------------------------------------------------------------------------
// catalog and units
// ----------------------------------------------------------------------------------------------

#[test]
fn catalog_has_the_guides_eleven_labs() {
    let cat = lab_catalog();
    assert_eq!(cat.len(), 11);
    let hgb = cat.iter().find(|d| d.name == "Hemoglobin").unwrap();
    assert_eq!(hgb.unit, "g/dL");
    assert_eq!(hgb.loinc_codes.len(), 12);
    assert_eq!(lab_for_code("718-7").unwrap().name, "Hemoglobin");
    assert_eq!(lab_for_code(" 26464-8 ").unwrap().unit, "10*9/L");
    assert_eq!(lab_for_code("2532-0").unwrap().unit, "U/L");
    assert!(lab_for_code("2160-0").is_none());
    assert_eq!(
        ig_display("718-7"),
        Some("Hemoglobin [Mass/volume] in Blood")
    );
}

#[test]
fn catalog_codes_are_unique_displayed_and_units_known() {
    let mut seen = std::collections::HashSet::new();
    let mut undisplayed = Vec::new();
    for d in lab_catalog() {
        assert!(unit(&d.unit).is_some(), "{} unit {}", d.name, d.unit);
        for c in &d.loinc_codes {
            assert!(seen.insert(c.clone()), "{c} in two labs");
            if ig_display(c).is_none() {
                undisplayed.push(c.as_str());
            }
            // Every catalog code passes check() (shape and check digit).
            LabResult::new(c, 1.0, &d.unit, "2024-05-01T00:00:00Z")
                .check(&LabOptions::default())
                .unwrap_or_else(|e| panic!("{c}: {e}"));
        }
    }
    // The guide lists 71669-6 for Blasts in Blood, but the IG's value-set table does not carry it.
    assert_eq!(undisplayed, ["71669-6"]);
}

#[test]
fn every_ig_loinc_code_passes_the_check_digit() {
    let table = include_str!("../data/ig-lab-loinc-valuesets.csv");
    let mut n = 0;
    for line in table.lines().skip(1) {
        let code = line.split(',').next().unwrap();
        LabResult::new(code, 1.0, "%", "2024-05-01T00:00:00Z")
            .check(&LabOptions::default())
            .unwrap_or_else(|e| panic!("{code}: {e}"));
        n += 1;
    }
    assert!(n > 250, "{n}");
}

#[test]
fn molar_codes_are_three_hemoglobin_and_one_b2m() {
    let molar: Vec<(&str, &str)> = lab_catalog()
        .iter()
        .flat_map(|d| d.molar_codes.iter().map(|c| (d.name.as_str(), c.as_str())))
        .collect();
    assert_eq!(
        molar,
        [
            ("Hemoglobin", "75928-2"),
            ("Hemoglobin", "59260-0"),
            ("Hemoglobin", "93846-4"),
            ("Serum B2-microglobulin", "76484-5"),
        ]
    );
}

#[test]
fn conversions_are_exact_within_a_dimension() {
    assert_eq!(convert(120.0, "g/L", "g/dL"), Some(12.0));
    assert_eq!(convert(12.0, "g/dL", "g/L"), Some(120.0));
    assert_eq!(convert(7.3, "10*3/uL", "10*9/L"), Some(7.3));
    assert_eq!(convert(2.5, "mg/L", "ug/dL"), Some(250.0));
    assert_eq!(convert(4500.0, "/uL", "10*9/L"), Some(4.5));
    assert_eq!(convert(250.0, "/mm3", "10*9/L"), Some(0.25));
    assert_eq!(convert(0.3, "mg/dL", "ug/dL"), Some(300.0));
    // 0.1 + 0.2 style artefacts are rounded away.
    assert_eq!(convert(0.7, "g/L", "g/dL"), Some(0.07));
    assert_eq!(convert(3.3, "ng/mL", "ug/dL"), Some(0.33));
    assert_eq!(convert(5.0, "U/L", "U/L"), Some(5.0));
    assert_eq!(convert(2.0, "kU/L", "U/L"), Some(2000.0));
}

#[test]
fn no_conversion_across_dimensions_or_between_u_and_iu() {
    assert_eq!(convert(8.0, "mmol/L", "g/dL"), None);
    assert_eq!(convert(8.0, "g/dL", "mmol/L"), None);
    assert_eq!(convert(1.0, "%", "10*9/L"), None);
    assert_eq!(convert(100.0, "[IU]/L", "U/L"), None);
    assert_eq!(convert(1.0, "furlong", "g/dL"), None);
    assert_eq!(convert(f64::NAN, "g/L", "g/dL"), None);
    assert_eq!(unit("[IU]/L").unwrap().dimension, Dimension::EnzymeActivity);
    assert_eq!(unit("U/L").unwrap().dimension, Dimension::EnzymeActivity);
    assert!(unit("MG/DL").is_none(), "UCUM codes are case-sensitive");
    assert!(known_units().len() >= 20);
}

// ----------------------------------------------------------------------------------------------
// LabResult::check
// ----------------------------------------------------------------------------------------------

fn hgb() -> LabResult {
    LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00")
}

fn check_field(lab: &LabResult, opts: &LabOptions) -> String {
    field_of(&lab.check(opts).expect_err("should be refused")).to_owned()
}

#[test]
fn a_good_lab_checks_without_warnings() {
    let c = hgb()
        .with_reference_range(12.0, 16.0)
        .check(&LabOptions::default())
        .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.definition.unwrap().name, "Hemoglobin");
    assert_eq!(c.lab, hgb().with_reference_range(12.0, 16.0));
}

#[test]
fn every_lab_rule_names_its_field() {
    type Edit = fn(LabResult) -> LabResult;
    let cases: &[(&str, &str, Edit)] = &[
        ("empty loinc", "loinc", |l| LabResult {
            loinc: " ".into(),
            ..l
        }),
        ("loinc without dash", "loinc", |l| LabResult {
            loinc: "7187".into(),
            ..l
        }),
        ("loinc letters", "loinc", |l| LabResult {
            loinc: "LP-7".into(),
            ..l
        }),
        ("loinc too long", "loinc", |l| LabResult {
            loinc: "12345678-9".into(),
            ..l
        }),
        ("loinc two check digits", "loinc", |l| LabResult {
            loinc: "718-77".into(),
            ..l
        }),
        ("loinc wrong check digit", "loinc", |l| LabResult {
            loinc: "718-8".into(),
            ..l
        }),
        ("NaN", "value", |l| LabResult {
            value: f64::NAN,
            ..l
        }),
        ("infinite", "value", |l| LabResult {
            value: f64::INFINITY,
            ..l
        }),
        ("unknown unit", "unit", |l| LabResult {
            unit: "furlong".into(),
            ..l
        }),
        ("non-UCUM IU", "unit", |l| LabResult {
            unit: "IU/L".into(),
            ..l
        }),
        ("empty unit", "unit", |l| LabResult {
            unit: String::new(),
            ..l
        }),
        ("no offset", "effective", |l| LabResult {
            effective: "2024-05-01T08:30:00".into(),
            ..l
        }),
        ("date alone", "effective", |l| LabResult {
            effective: "2024-05-01".into(),
            ..l
        }),
        ("garbage date", "effective", |l| LabResult {
            effective: "yesterday".into(),
            ..l
        }),
        ("comparator", "comparator", |l| l.with_comparator("~")),
        ("comparator =", "comparator", |l| l.with_comparator("=")),
        ("range inverted", "reference_range", |l| {
            l.with_reference_range(16.0, 12.0)
        }),
        ("range NaN", "reference_low", |l| {
            l.with_reference_range(f64::NAN, 12.0)
        }),
        ("status", "status", |l| l.with_status("cancelled")),
    ];
    for (what, field, edit) in cases {
        assert_eq!(
            check_field(&edit(hgb()), &LabOptions::default()),
            *field,
            "{what}"
        );
    }
}

#[test]
fn effective_without_offset_says_so() {
    let lab = LabResult {
        effective: "2024-05-01T08:30:00".into(),
        ..hgb()
    };
    let e = lab.check(&LabOptions::default()).unwrap_err();
    assert_eq!(field_of(&e), "effective");
    assert!(
        e.to_string().contains("must include a timezone offset"),
        "{e}"
    );
    let lab = LabResult {
        effective: "2024-05-01".into(),
        ..hgb()
    };
    let e = lab.check(&LabOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a date alone"), "{e}");
}

#[test]
fn unknown_unit_suggests_the_ucum_spelling() {
    let e = LabResult {
        unit: "IU/L".into(),
        ..hgb()
    }
    .check(&LabOptions::default())
    .unwrap_err();
    assert!(e.to_string().contains("[IU]/L"), "{e}");
}

#[test]
fn effective_separators_are_normalised() {
    let lab = LabResult {
        effective: "2024-05-01 08:30:00z".into(),
        ..hgb()
    };
    let c = lab.check(&LabOptions::default()).unwrap();
    assert_eq!(c.lab.effective, "2024-05-01T08:30:00Z");
    let lab = LabResult {
        effective: "2024-05-01T08:30:00.250+02:00".into(),
        ..hgb()
    };
    assert!(lab.check(&LabOptions::default()).is_ok());
}

#[test]
fn comparators_and_statuses_accepted() {
    for c in ["<", "<=", ">=", ">"] {
        assert!(
            hgb()
                .with_comparator(c)
                .check(&LabOptions::default())
                .is_ok()
        );
    }
    for s in ["registered", "preliminary", "final", "amended"] {
        assert!(hgb().with_status(s).check(&LabOptions::default()).is_ok());
    }
    // One-sided ranges and equal bounds are fine.
    assert!(
        hgb()
            .with_reference_range(None, 16.0)
            .check(&LabOptions::default())
            .is_ok()
    );
    assert!(
        hgb()
            .with_reference_range(12.0, 12.0)
            .check(&LabOptions::default())
            .is_ok()
    );
}

#[test]
fn unknown_code_warns_or_fails_when_strict() {
    let lab = LabResult::new("2160-0", 1.1, "mg/dL", "2024-05-01T08:30:00Z");
    let c = lab.check(&LabOptions::default()).unwrap();
    assert!(c.definition.is_none());
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("not in the form 2402 catalog"),
        "{:?}",
        c.warnings
    );
    let strict = LabOptions {
        strict: true,
        ..Default::default()
    };
    assert_eq!(check_field(&lab, &strict), "loinc");
    assert!(hgb().check(&strict).is_ok());
}

#[test]
fn convert_units_converts_value_and_range_with_a_warning() {
    let lab = LabResult::new("718-7", 120.0, "g/L", "2024-05-01T08:30:00Z")
        .with_reference_range(120.0, 160.0);
    let opts = LabOptions {
        convert_units: true,
        ..Default::default()
    };
    let c = lab.check(&opts).unwrap();
    assert_eq!(c.lab.value, 12.0);
    assert_eq!(c.lab.unit, "g/dL");
    assert_eq!(
        (c.lab.reference_low, c.lab.reference_high),
        (Some(12.0), Some(16.0))
    );
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("converted 120 g/L to 12 g/dL"),
        "{:?}",
        c.warnings
    );

    let lab = LabResult::new("26464-8", 4500.0, "/uL", "2024-05-01T08:30:00Z");
    let c = lab.check(&opts).unwrap();
    assert_eq!((c.lab.value, c.lab.unit.as_str()), (4.5, "10*9/L"));
}

#[test]
fn without_convert_units_the_value_is_kept_and_a_warning_suggests_it() {
    let lab = LabResult::new("718-7", 120.0, "g/L", "2024-05-01T08:30:00Z");
    let c = lab.check(&LabOptions::default()).unwrap();
    assert_eq!((c.lab.value, c.lab.unit.as_str()), (120.0, "g/L"));
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("convert_units"), "{:?}", c.warnings);
}

#[test]
fn other_dimension_warns_and_never_converts() {
    let opts = LabOptions {
        convert_units: true,
        ..Default::default()
    };
    // A molar Hemoglobin code in mmol/L: kept as is, and the warning says it is a molar code.
    let lab = LabResult::new("59260-0", 8.0, "mmol/L", "2024-05-01T08:30:00Z");
    let c = lab.check(&opts).unwrap();
    assert_eq!((c.lab.value, c.lab.unit.as_str()), (8.0, "mmol/L"));
    assert!(c.warnings[0].contains("moles/volume"), "{:?}", c.warnings);
    // A mass code in a molar unit: pointed at the molar codes.
    let lab = LabResult::new("718-7", 8.0, "mmol/L", "2024-05-01T08:30:00Z");
    let c = lab.check(&opts).unwrap();
    assert!(c.warnings[0].contains("59260-0"), "{:?}", c.warnings);
    // A molar code in a mass unit: mismatch reported.
    let lab = LabResult::new("76484-5", 200.0, "ug/dL", "2024-05-01T08:30:00Z");
    let c = lab.check(&opts).unwrap();
    assert!(
        c.warnings[0].contains("is a moles/volume code"),
        "{:?}",
        c.warnings
    );
    // Percent for a count lab.
    let lab = LabResult::new("26515-7", 8.0, "%", "2024-05-01T08:30:00Z");
    let c = lab.check(&opts).unwrap();
    assert_eq!(c.lab.unit, "%");
    assert!(
        c.warnings[0].contains("not convertible"),
        "{:?}",
        c.warnings
    );
    // U vs [IU] for LDH.
    let lab = LabResult::new("2532-0", 200.0, "[IU]/L", "2024-05-01T08:30:00Z");
    let c = lab.check(&opts).unwrap();
    assert_eq!(c.lab.unit, "[IU]/L");
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn parse_splits_comparators_and_refuses_non_decimals() {
    let l = LabResult::parse(" 718-7 ", " 12.5 ", " g/dL ", "2024-05-01T08:30:00Z").unwrap();
    assert_eq!(
        (l.loinc.as_str(), l.value, l.unit.as_str()),
        ("718-7", 12.5, "g/dL")
    );
    assert_eq!(l.comparator, None);
    for (text, cmp, v) in [
        ("<5", "<", 5.0),
        ("<= 5", "<=", 5.0),
        (">=10", ">=", 10.0),
        ("> 0.5", ">", 0.5),
        ("<-1", "<", -1.0),
    ] {
        let l = LabResult::parse("718-7", text, "g/dL", "2024-05-01T08:30:00Z").unwrap();
        assert_eq!((l.comparator.as_deref(), l.value), (Some(cmp), v), "{text}");
    }
    for v in [".5", "5.", "+3", "-0.25", "0012"] {
        assert!(LabResult::parse("718-7", v, "g/dL", "x").is_ok(), "{v}");
    }
    for bad in [
        "", "abc", "NaN", "inf", "1e3", "1,200", "<", "=5", "5 mg", "1.2.3", "--1",
    ] {
        let e = LabResult::parse("718-7", bad, "g/dL", "x").unwrap_err();
        assert_eq!(field_of(&e), "value", "{bad:?}");
    }
}

// ----------------------------------------------------------------------------------------------
// submission ids and resources
// ----------------------------------------------------------------------------------------------

#[test]
fn submission_id_is_stable_across_equivalent_spellings() {
    let a = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T08:30:00-05:00");
    let b = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T13:30:00Z");
    let c = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T13:30:00.000+00:00");
    let d = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T13:30:00Z").with_status("final");
    let id = submission_id(&a, 3989144, &ccn());
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    for other in [&b, &c, &d] {
        assert_eq!(submission_id(other, 3989144, &ccn()), id);
    }
    // 12 and 12.0 are the same number by the time they are f64; from text they hash equal too.
    let e = LabResult::parse("718-7", "12", "g/dL", "2024-05-01T13:30:00Z").unwrap();
    let f = LabResult::parse("718-7", "12.0", "g/dL", "2024-05-01T13:30:00Z").unwrap();
    assert_eq!(submission_id(&e, 3989144, &ccn()), id);
    assert_eq!(submission_id(&f, 3989144, &ccn()), id);
}

#[test]
fn submission_id_differs_when_the_content_does() {
    let base = LabResult::new("718-7", 12.0, "g/dL", "2024-05-01T13:30:00Z");
    let id = submission_id(&base, 3989144, &ccn());
    let variants = [
        LabResult {
            value: 12.1,
            ..base.clone()
        },
        LabResult {
            loinc: "30313-1".into(),
            ..base.clone()
        },
        LabResult {
            unit: "g/L".into(),
            ..base.clone()
        },
        LabResult {
            effective: "2024-05-01T13:30:01Z".into(),
            ..base.clone()
        },
        base.clone().with_comparator("<"),
        base.clone().with_reference_range(12.0, 16.0),
        base.clone().with_reference_range(None, 12.0),
        base.clone().with_status("amended"),
    ];
    for v in &variants {
        assert_ne!(submission_id(v, 3989144, &ccn()), id, "{v:?}");
    }
    assert_ne!(submission_id(&base, 3989145, &ccn()), id);
    assert_ne!(
        submission_id(&base, 3989144, &Ccn::parse("54321").unwrap()),
        id
    );
    // The display does not change what was measured.
    assert_eq!(
        submission_id(&base.clone().with_display("Hgb"), 3989144, &ccn()),
        id
    );
}

#[test]
fn patient_resource_is_minimal_and_de_identified() {
    for family in [UriFamily::Cibmtr, UriFamily::Terminology] {
        let p = patient_resource(9_007_199_254_740_993, &ccn(), family);
        assert_eq!(
            p,
            json!({
                "resourceType": "Patient",
                "meta": {"security": [{"system": family.transplant_center_system(), "code": "rc_12345"}]},
                "text": {"status": "empty", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">CIBMTR recipient</div>"},
                "identifier": [{"use": "official", "system": family.crid_system(), "value": "9007199254740993"}],
            })
        );
        for key in [
            "name",
            "gender",
            "birthDate",
            "address",
            "telecom",
            "contact",
            "photo",
        ] {
            assert!(p.get(key).is_none(), "{key}");
        }
        assert!(patient_matches(&p, 9_007_199_254_740_993, &ccn()));
    }
}

#[test]
fn patient_search_params_use_both_systems() {
    let q = patient_search_params(3989144, &ccn(), UriFamily::Terminology);
    assert_eq!(
        q,
        vec![
            (
                "_security".to_owned(),
                "http://terminology.cibmtr.org/codesystem/transplant-center|rc_12345".to_owned()
            ),
            (
                "identifier".to_owned(),
                "http://terminology.cibmtr.org/identifier/CRID|3989144".to_owned()
            ),
        ]
    );
}

#[test]
fn patient_matches_reads_either_family() {
    // The server answers in the other family than we wrote, with its redaction label added.
    let server = json!({
        "resourceType": "Patient", "id": "abc",
        "meta": {"security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"},
            {"system": "http://terminology.cibmtr.org/codesystem/transplant-center", "code": "rc_12345"}
        ]},
        "identifier": [{"system": "http://cibmtr.org/identifier/CRID", "value": "3989144"}]
    });
    assert!(patient_matches(&server, 3989144, &ccn()));
    assert!(!patient_matches(&server, 3989145, &ccn()));
    assert!(!patient_matches(
        &server,
        3989144,
        &Ccn::parse("54321").unwrap()
    ));
    let mut other_system = server.clone();
    other_system["identifier"][0]["system"] = "http://example.org/mrn".into();
    assert!(!patient_matches(&other_system, 3989144, &ccn()));
    let mut no_label = server.clone();
    no_label["meta"] = json!({});
    assert!(!patient_matches(&no_label, 3989144, &ccn()));
    let mut not_patient = server;
    not_patient["resourceType"] = "Observation".into();
    assert!(!patient_matches(&not_patient, 3989144, &ccn()));
}

#[test]
fn observation_shape_for_stu3_and_r4_and_both_families() {
    let lab = LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00")
        .with_comparator("<")
        .with_reference_range(12.0, 16.0);
    for (version, category) in [
        (
            FhirVersion::Stu3,
            "http://hl7.org/fhir/observation-category",
        ),
        (
            FhirVersion::R4,
            "http://terminology.hl7.org/CodeSystem/observation-category",
        ),
    ] {
        for family in [UriFamily::Cibmtr, UriFamily::Terminology] {
            let o = observation_resource(&lab, 3989144, "pat-1", &ccn(), family, version);
            let id = submission_id(&lab, 3989144, &ccn());
            assert_eq!(
                o,
                json!({
                    "resourceType": "Observation",
                    "meta": {"security": [{"system": family.transplant_center_system(), "code": "rc_12345"}]},
                    "identifier": [{"system": SUBMISSION_ID_SYSTEM, "value": id}],
                    "status": "final",
                    "category": [{"coding": [{"system": category, "code": "laboratory", "display": "Laboratory"}]}],
                    "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin [Mass/volume] in Blood"}]},
                    "subject": {"reference": "Patient/pat-1"},
                    "effectiveDateTime": "2024-05-01T08:30:00-05:00",
                    "valueQuantity": {"value": 12.5, "unit": "g/dL", "system": UCUM, "code": "g/dL", "comparator": "<"},
                    "referenceRange": [{
                        "low": {"value": 12.0, "unit": "g/dL", "system": UCUM, "code": "g/dL"},
                        "high": {"value": 16.0, "unit": "g/dL", "system": UCUM, "code": "g/dL"}
                    }]
                })
            );
            assert_eq!(observation_submission_id(&o), Some(id.as_str()));
        }
    }
}

#[test]
fn observation_optional_parts() {
    let lab = LabResult::new("2160-0", 1.0, "mg/dL", "2024-05-01T08:30:00Z")
        .with_status("amended")
        .with_reference_range(None, 1.3);
    let o = observation_resource(&lab, 1, "p", &ccn(), UriFamily::Cibmtr, FhirVersion::R4);
    assert_eq!(o["status"], "amended");
    assert!(o["valueQuantity"].get("comparator").is_none());
    assert_eq!(
        o["code"]["coding"][0]["display"],
        "Creatinine [Mass/volume] in Serum or Plasma"
    );
    assert!(o["referenceRange"][0].get("low").is_none());
    assert_eq!(o["referenceRange"][0]["high"]["value"], 1.3);
    // A given display wins; no range, no referenceRange; a code without IG display has none.
    let lab = LabResult::new("1234-5", 1.0, "%", "2024-05-01T08:30:00Z").with_display("Custom");
    let o = observation_resource(&lab, 1, "p", &ccn(), UriFamily::Cibmtr, FhirVersion::R4);
    assert_eq!(o["code"]["coding"][0]["display"], "Custom");
    assert!(o.get("referenceRange").is_none());
    let lab = LabResult::new("1234-5", 1.0, "%", "2024-05-01T08:30:00Z");
    let o = observation_resource(&lab, 1, "p", &ccn(), UriFamily::Cibmtr, FhirVersion::R4);
    assert!(o["code"]["coding"][0].get("display").is_none());
}

#[test]
fn observation_searches() {
    assert_eq!(
        observation_search_by_crid(9_007_199_254_740_993),
        vec![(
            "subject:Patient.identifier".to_owned(),
            "9007199254740993".to_owned()
        )]
    );
    assert_eq!(
        observation_search_by_submission_id("abc"),
        vec![(
            "identifier".to_owned(),
            "urn:cibmtr-fhir:submission-id|abc".to_owned()
        )]
    );
}

// ----------------------------------------------------------------------------------------------
// CSV
// ----------------------------------------------------------------------------------------------

#[test]
fn csv_rows_are_all_kept_with_line_numbers() {
    let text = "\
CRID,LOINC,Value,Unit,Effective,Reference_Low,Reference_High,Comparator,Status,Display,Notes
3989144,718-7,12.5,g/dL,2024-05-01T08:30:00-05:00,12,16,,,,first
3989144,26515-7,<20,10*9/L,2024-05-01T08:30:00-05:00,,,,final,,
3989145,718-7,twelve,g/dL,2024-05-01T08:30:00-05:00,,,,,,bad value
,,,,,,,,,,

abc,718-7,12,g/dL,2024-05-01T08:30:00Z,,,,,,bad crid
3989145,718-7,12,g/dL,2024-05-01T08:30:00Z,x,,,,,bad low
3989145,718-7,<12,g/dL,2024-05-01T08:30:00Z,,,>,,,conflict
3989145,718-7,,g/dL,2024-05-01T08:30:00Z
3989145,718-7,11,g/dL,2024-05-01T08:30:00Z,,,<=,amended,Hgb
";
    let rows = read_labs_csv(text.as_bytes()).unwrap();
    let summary: Vec<(usize, Option<i64>, Result<f64, String>)> = rows
        .iter()
        .map(|r| {
            (
                r.line,
                r.crid,
                r.result
                    .as_ref()
                    .map(|l| l.value)
                    .map_err(|e| field_of(e).to_owned()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, Some(3989144), Ok(12.5)),
            (3, Some(3989144), Ok(20.0)),
            (4, Some(3989145), Err("value".to_owned())),
            (7, None, Err("crid".to_owned())),
            (8, Some(3989145), Err("reference_low".to_owned())),
            (9, Some(3989145), Err("comparator".to_owned())),
            (10, Some(3989145), Err("value".to_owned())),
            (11, Some(3989145), Ok(11.0)),
        ]
    );
    let first = rows[0].result.as_ref().unwrap();
    assert_eq!(first.reference_low, Some(12.0));
    assert_eq!(first.reference_high, Some(16.0));
    assert_eq!(
        rows[1].result.as_ref().unwrap().comparator.as_deref(),
        Some("<")
    );
    let last = rows[7].result.as_ref().unwrap();
    assert_eq!(last.comparator.as_deref(), Some("<="));
    assert_eq!(last.status.as_deref(), Some("amended"));
    assert_eq!(last.display.as_deref(), Some("Hgb"));
    assert!(last.check(&LabOptions::default()).is_ok());
}

#[test]
fn csv_without_crid_column_and_with_bom() {
    let text = "\u{feff}effective,unit,value,loinc\n2024-05-01T08:30:00Z,%,55,26511-6\n";
    let rows = read_labs_csv(text.as_bytes()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].crid, None);
    assert_eq!(rows[0].result.as_ref().unwrap().loinc, "26511-6");
}

#[test]
fn csv_file_for_one_crid_keeps_lines_and_refuses_other_patients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labs.csv");
    std::fs::write(
        &path,
        "loinc,value,unit,effective,crid\n\
         718-7,12,g/dL,2024-05-01T08:30:00Z,42\n\
         \n\
         718-7,13,g/dL,2024-05-01T08:30:00Z,1234\n\
         718-7,,g/dL,2024-05-01T08:30:00Z,\n\
         718-7,14,g/dL,2024-05-01T08:30:00Z,\n",
    )
    .unwrap();
    let csv = labs_csv_inputs(&path, 42).unwrap();
    assert_eq!(csv.lines, [2, 4, 5, 6]);
    let fields: Vec<Option<&str>> = csv
        .inputs
        .iter()
        .map(|r| r.as_ref().err().map(field_of))
        .collect();
    assert_eq!(fields, [None, Some("crid"), Some("value"), None]);
    assert!(
        csv.inputs[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("1234")
    );
    let missing = labs_csv_inputs(&dir.path().join("absent.csv"), 42).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Config);
    assert!(missing.to_string().contains("absent.csv"), "{missing}");
}

#[test]
fn csv_missing_required_column_is_refused() {
    let e = read_labs_csv("loinc,value,effective\n718-7,12,2024-05-01T08:30:00Z\n".as_bytes())
        .unwrap_err();
    assert_eq!(field_of(&e), "csv");
    assert!(e.to_string().contains("unit"), "{e}");
    let e = read_labs_csv("".as_bytes()).unwrap_err();
    assert_eq!(field_of(&e), "csv");
    let e = read_labs_csv("loinc,value,unit,effective,LOINC\n".as_bytes()).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}

#[test]
fn csv_invalid_utf8_row_is_kept_as_an_error() {
    let mut bytes = b"loinc,value,unit,effective\n718-7,12,g/dL,2024-05-01T08:30:00Z\n".to_vec();
    bytes.extend_from_slice(b"718-7,1\xff,g/dL,2024-05-01T08:30:00Z\n");
    bytes.extend_from_slice(b"718-7,13,g/dL,2024-05-01T08:30:00Z\n");
    let rows = read_labs_csv(bytes.as_slice()).unwrap();
    let lines: Vec<(usize, bool)> = rows.iter().map(|r| (r.line, r.result.is_ok())).collect();
    assert_eq!(lines, vec![(2, true), (3, false), (4, true)]);
    assert_eq!(field_of(rows[1].result.as_ref().unwrap_err()), "csv");
}
