//! Lab results for form 2402: the catalog of labs CIBMTR prepopulates, the UCUM units the SDK
//! knows and converts between exactly, checking a [`LabResult`] before it is sent, and reading
//! lab results from CSV.
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime};

use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// The form 2402 catalog
// ---------------------------------------------------------------------------------------------

/// One lab of form 2402 as the CIBMTR guide lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabDefinition {
    /// The guide's name, e.g. `Hemoglobin`.
    pub name: String,
    /// The preferred UCUM unit, e.g. `g/dL`.
    pub unit: String,
    /// The candidate LOINC codes, in the guide's order.
    pub loinc_codes: Vec<String>,
    /// The candidate codes measured in moles per volume (their values are not in the preferred
    /// mass unit and cannot be converted to it without a molar mass).
    pub molar_codes: Vec<String>,
}

impl LabDefinition {
    /// Whether `loinc` is one of this lab's moles/volume codes.
    pub fn is_molar(&self, loinc: &str) -> bool {
        self.molar_codes.iter().any(|c| c == loinc)
    }
}

static IG_DISPLAYS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let mut r =
        csv::Reader::from_reader(include_str!("../../data/ig-lab-loinc-valuesets.csv").as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.expect("bundled ig-lab-loinc-valuesets.csv is valid CSV");
            (rec[0].trim().to_owned(), rec[1].trim().to_owned())
        })
        .collect()
});

static CATALOG: LazyLock<Vec<LabDefinition>> = LazyLock::new(|| {
    let mut r = csv::Reader::from_reader(include_str!("../../data/form2402-labs.csv").as_bytes());
    r.records()
        .map(|rec| {
            let rec = rec.expect("bundled form2402-labs.csv is valid CSV");
            let loinc_codes: Vec<String> = rec[2]
                .split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            let molar_codes = loinc_codes
                .iter()
                .filter(|c| ig_display(c).is_some_and(|d| d.contains("[Moles/volume]")))
                .cloned()
                .collect();
            LabDefinition {
                name: rec[0].trim().to_owned(),
                unit: rec[1].trim().to_owned(),
                loinc_codes,
                molar_codes,
            }
        })
        .collect()
});

/// The labs of form 2402 with their preferred units and candidate LOINC codes.
pub fn lab_catalog() -> &'static [LabDefinition] {
    &CATALOG
}

/// The form 2402 lab a LOINC code belongs to, if any.
pub fn lab_for_code(loinc: &str) -> Option<&'static LabDefinition> {
    let loinc = loinc.trim();
    lab_catalog()
        .iter()
        .find(|d| d.loinc_codes.iter().any(|c| c == loinc))
}

/// The display the CIBMTR implementation guide's value sets give a LOINC code (used for
/// `Observation.code.coding[0].display`).
pub fn ig_display(loinc: &str) -> Option<&'static str> {
    IG_DISPLAYS.get(loinc.trim()).map(String::as_str)
}

// ---------------------------------------------------------------------------------------------
// Units
// ---------------------------------------------------------------------------------------------

/// What a unit measures. Values convert only within one dimension, and only between units that
/// share a base (`U/L` and `[IU]/L` are both enzyme activity but never converted into each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// Mass per volume (`g/dL`, `mg/L`, `ug/dL`, ...).
    MassConcentration,
    /// Entities (cells) per volume (`10*9/L`, `10*3/uL`, `/uL`, ...).
    NumberConcentration,
    /// Amount of substance per volume (`mmol/L`, `umol/L`, ...).
    MolarConcentration,
    /// A percentage (`%`).
    Percent,
    /// Enzyme activity per volume (`U/L`, `[IU]/L`).
    EnzymeActivity,
}

impl Dimension {
    fn describe(self) -> &'static str {
        match self {
            Dimension::MassConcentration => "mass/volume",
            Dimension::NumberConcentration => "count/volume",
            Dimension::MolarConcentration => "moles/volume",
            Dimension::Percent => "percent",
            Dimension::EnzymeActivity => "enzyme activity/volume",
        }
    }
}

/// A UCUM unit the SDK knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// The UCUM code, case-sensitive (`mg/dL`, `10*9/L`, `[IU]/L`).
    pub code: &'static str,
    pub dimension: Dimension,
    /// The unit's value is `10^exp10` of `base`.
    exp10: i32,
    /// Units convert into each other only when they share this base.
    base: &'static str,
}

const fn u(code: &'static str, dimension: Dimension, exp10: i32, base: &'static str) -> Unit {
    Unit {
        code,
        dimension,
        exp10,
        base,
    }
}

use Dimension::*;

/// Every factor is a power of ten, so conversions are exact decimal shifts.
static UNITS: &[Unit] = &[
    u("g/dL", MassConcentration, 1, "g/L"),
    u("g/L", MassConcentration, 0, "g/L"),
    u("mg/mL", MassConcentration, 0, "g/L"),
    u("mg/dL", MassConcentration, -2, "g/L"),
    u("mg/L", MassConcentration, -3, "g/L"),
    u("ug/mL", MassConcentration, -3, "g/L"),
    u("ug/dL", MassConcentration, -5, "g/L"),
    u("ug/L", MassConcentration, -6, "g/L"),
    u("ng/mL", MassConcentration, -6, "g/L"),
    u("ng/dL", MassConcentration, -8, "g/L"),
    u("ng/L", MassConcentration, -9, "g/L"),
    u("pg/mL", MassConcentration, -9, "g/L"),
    u("10*12/L", NumberConcentration, 12, "/L"),
    u("10*9/L", NumberConcentration, 9, "/L"),
    u("10*6/L", NumberConcentration, 6, "/L"),
    u("10*6/uL", NumberConcentration, 12, "/L"),
    u("10*3/uL", NumberConcentration, 9, "/L"),
    u("10*3/mm3", NumberConcentration, 9, "/L"),
    u("/uL", NumberConcentration, 6, "/L"),
    u("{cells}/uL", NumberConcentration, 6, "/L"),
    u("/mm3", NumberConcentration, 6, "/L"),
    u("/L", NumberConcentration, 0, "/L"),
    u("%", Percent, 0, "%"),
    u("mol/L", MolarConcentration, 0, "mol/L"),
    u("mmol/L", MolarConcentration, -3, "mol/L"),
    u("umol/L", MolarConcentration, -6, "mol/L"),
    u("nmol/L", MolarConcentration, -9, "mol/L"),
    u("pmol/L", MolarConcentration, -12, "mol/L"),
    u("U/L", EnzymeActivity, 0, "U/L"),
    u("U/mL", EnzymeActivity, 3, "U/L"),
    u("kU/L", EnzymeActivity, 3, "U/L"),
    u("[IU]/L", EnzymeActivity, 0, "[IU]/L"),
    u("[IU]/mL", EnzymeActivity, 3, "[IU]/L"),
];

/// Common non-UCUM spellings and the UCUM unit they almost certainly mean. Used only to suggest a
/// fix in the error; never applied silently.
static NEAR_MISSES: &[(&str, &str)] = &[
    ("IU/L", "[IU]/L"),
    ("IU/mL", "[IU]/mL"),
    ("10^9/L", "10*9/L"),
    ("x10^9/L", "10*9/L"),
    ("x10E9/L", "10*9/L"),
    ("10E9/L", "10*9/L"),
    ("10^3/uL", "10*3/uL"),
    ("x10^3/uL", "10*3/uL"),
    ("x10E3/uL", "10*3/uL"),
    ("K/uL", "10*3/uL"),
    ("10^12/L", "10*12/L"),
    ("mcg/dL", "ug/dL"),
    ("mcg/L", "ug/L"),
    ("mcg/mL", "ug/mL"),
    ("\u{b5}g/dL", "ug/dL"),
    ("\u{b5}g/L", "ug/L"),
    ("\u{b5}g/mL", "ug/mL"),
    ("\u{b5}mol/L", "umol/L"),
    ("mg/l", "mg/L"),
    ("g/dl", "g/dL"),
    ("mg/dl", "mg/dL"),
    ("ug/dl", "ug/dL"),
    ("u/L", "U/L"),
    ("u/l", "U/L"),
    ("U/l", "U/L"),
    ("cells/uL", "{cells}/uL"),
    ("percent", "%"),
];

/// The UCUM units the SDK knows.
pub fn known_units() -> &'static [Unit] {
    UNITS
}

/// The known unit with this exact (case-sensitive) UCUM code.
pub fn unit(code: &str) -> Option<&'static Unit> {
    UNITS.iter().find(|u| u.code == code)
}

/// Like [`unit`] but an error naming the rule (and a likely UCUM spelling) for unknown units.
fn known_unit(code: &str) -> Result<&'static Unit> {
    if let Some(u) = unit(code) {
        return Ok(u);
    }
    let rule = match NEAR_MISSES.iter().find(|(k, _)| *k == code) {
        Some((k, v)) => format!("{k} is not a UCUM unit; did you mean {v}?"),
        None => "must be a UCUM unit the SDK knows (e.g. g/dL, 10*9/L, %, U/L, ug/dL)".to_owned(),
    };
    Err(Error::validation("unit", rule))
}

/// Converts `value` from one UCUM unit to another, exactly, within one dimension: `g/L` to
/// `g/dL` divides by 10, `10*3/uL` to `10*9/L` multiplies by 1, `mg/L` to `ug/dL` multiplies by
/// 100. `None` for unknown units, for units of different dimensions (moles never become grams:
/// that takes a molar mass), between `U` and `[IU]`, and for a non-finite value.
///
/// The result is rounded to 10 significant digits so decimal shifts do not leave binary
/// artefacts (0.30000000000000004).
pub fn convert(value: f64, from: &str, to: &str) -> Option<f64> {
    let (f, t) = (unit(from)?, unit(to)?);
    if f.base != t.base || !value.is_finite() {
        return None;
    }
    if f.code == t.code {
        return Some(value);
    }
    let shift = f.exp10 - t.exp10;
    // Multiplying or dividing by an exact power of ten (10^k is exact in f64 for k <= 22) is
    // correctly rounded; multiplying by 0.1 would not be.
    let scaled = if shift >= 0 {
        value * 10f64.powi(shift)
    } else {
        value / 10f64.powi(-shift)
    };
    round_significant(scaled)
}

fn round_significant(v: f64) -> Option<f64> {
    let r: f64 = format!("{v:.9e}").parse().ok()?;
    r.is_finite().then_some(if r == 0.0 { 0.0 } else { r })
}

// ---------------------------------------------------------------------------------------------
// Lab results
// ---------------------------------------------------------------------------------------------

/// The comparators a `valueQuantity` may carry.
const COMPARATORS: &[&str] = &["<", "<=", ">=", ">"];
/// The Observation statuses that make sense for a submitted lab value.
const STATUSES: &[&str] = &["registered", "preliminary", "final", "amended"];

/// One lab value for one patient, as it will become an Observation.
///
/// ```
/// use cibmtr_fhir::cibmtr::{LabOptions, LabResult};
///
/// let lab = LabResult::new("718-7", 120.0, "g/L", "2024-05-01T08:30:00-05:00")
///     .with_reference_range(120.0, 160.0);
/// let checked = lab.check(&LabOptions { convert_units: true, ..Default::default() })?;
/// assert_eq!((checked.lab.value, checked.lab.unit.as_str()), (12.0, "g/dL"));
/// assert!(checked.warnings[0].contains("converted 120 g/L to 12 g/dL"));
///
/// let parsed = LabResult::parse("26515-7", "<5", "10*9/L", "2024-05-01T13:30:00Z")?;
/// assert_eq!(parsed.comparator.as_deref(), Some("<"));
/// # Ok::<(), cibmtr_fhir::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LabResult {
    /// The LOINC code, e.g. `718-7`.
    pub loinc: String,
    pub value: f64,
    /// A UCUM unit code, e.g. `g/dL`.
    pub unit: String,
    /// When the sample was collected: an RFC 3339 date-time with an offset or `Z`.
    pub effective: String,
    /// `<`, `<=`, `>=` or `>`.
    pub comparator: Option<String>,
    pub reference_low: Option<f64>,
    pub reference_high: Option<f64>,
    /// `registered`, `preliminary`, `final` (the default) or `amended`.
    pub status: Option<String>,
    /// The code's display; the implementation guide's display is used when absent.
    pub display: Option<String>,
}

impl LabResult {
    pub fn new(
        loinc: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        effective: impl Into<String>,
    ) -> Self {
        LabResult {
            loinc: loinc.into(),
            value,
            unit: unit.into(),
            effective: effective.into(),
            comparator: None,
            reference_low: None,
            reference_high: None,
            status: None,
            display: None,
        }
    }

    /// Sets the reference range; either bound may be `None` (`.with_reference_range(None, 5.0)`).
    #[must_use]
    pub fn with_reference_range(
        mut self,
        low: impl Into<Option<f64>>,
        high: impl Into<Option<f64>>,
    ) -> Self {
        self.reference_low = low.into();
        self.reference_high = high.into();
        self
    }

    /// Sets the comparator (`<`, `<=`, `>=`, `>`).
    #[must_use]
    pub fn with_comparator(mut self, comparator: impl Into<String>) -> Self {
        self.comparator = Some(comparator.into());
        self
    }

    /// Sets the status (`registered`, `preliminary`, `final`, `amended`).
    #[must_use]
    pub fn with_status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Sets the code's display.
    #[must_use]
    pub fn with_display(mut self, display: impl Into<String>) -> Self {
        self.display = Some(display.into());
        self
    }

    /// A lab result from text (a CSV row): the value must be a plain decimal number, optionally
    /// led by a comparator (`<5`, `>= 10`) that is split off into [`LabResult::comparator`].
    /// Only the value is parsed here; [`LabResult::check`] validates the rest.
    pub fn parse(loinc: &str, value: &str, unit: &str, effective: &str) -> Result<LabResult> {
        let (comparator, value) = parse_value(value)?;
        let mut lab = LabResult::new(loinc.trim(), value, unit.trim(), effective.trim());
        lab.comparator = comparator.map(str::to_owned);
        Ok(lab)
    }

    /// Validates the result and relates it to the form 2402 catalog. Nothing is converted unless
    /// [`LabOptions::convert_units`] asks for it, and every conversion is reported in
    /// [`CheckedLab::warnings`].
    pub fn check(&self, opts: &LabOptions) -> Result<CheckedLab> {
        let mut lab = self.clone();
        lab.loinc = check_loinc(&self.loinc)?;
        if !self.value.is_finite() {
            return Err(Error::validation("value", "must be a finite number"));
        }
        lab.unit = self.unit.trim().to_owned();
        let given_unit = known_unit(&lab.unit)?;
        lab.effective = check_effective(&self.effective)?;
        lab.comparator = match self.comparator.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) if COMPARATORS.contains(&c) => Some(c.to_owned()),
            Some(_) => {
                return Err(Error::validation(
                    "comparator",
                    "must be one of <, <=, >= or >",
                ));
            }
        };
        for (field, v) in [
            ("reference_low", self.reference_low),
            ("reference_high", self.reference_high),
        ] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(Error::validation(field, "must be a finite number"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.reference_low, self.reference_high)
            && lo > hi
        {
            return Err(Error::validation(
                "reference_range",
                "low must not be greater than high",
            ));
        }
        lab.status = match self.status.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) if STATUSES.contains(&s) => Some(s.to_owned()),
            Some(_) => {
                return Err(Error::validation(
                    "status",
                    "must be one of registered, preliminary, final or amended",
                ));
            }
        };
        lab.display = self
            .display
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned);

        let mut warnings = Vec::new();
        let definition = lab_for_code(&lab.loinc);
        match definition {
            None if opts.strict => {
                return Err(Error::validation(
                    "loinc",
                    "is not in the form 2402 catalog (strict mode accepts only catalog codes)",
                ));
            }
            None => warnings.push(format!(
                "LOINC {} is not in the form 2402 catalog: CIBMTR stores it but it will not \
                 prepopulate form 2402",
                lab.loinc
            )),
            Some(def) => unit_warnings(&mut lab, given_unit, def, opts, &mut warnings)?,
        }
        Ok(CheckedLab {
            lab,
            definition,
            warnings,
        })
    }
}

fn unit_warnings(
    lab: &mut LabResult,
    given: &'static Unit,
    def: &'static LabDefinition,
    opts: &LabOptions,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let preferred = unit(&def.unit).expect("every catalog unit is a known unit");
    let molar_code = def.is_molar(&lab.loinc);
    if molar_code && given.dimension != MolarConcentration {
        warnings.push(format!(
            "LOINC {} is a moles/volume code for {} but {} is {}: use a mass/volume code for \
             values in {}",
            lab.loinc,
            def.name,
            given.code,
            given.dimension.describe(),
            given.code
        ));
        return Ok(());
    }
    if !molar_code && given.dimension == MolarConcentration && !def.molar_codes.is_empty() {
        warnings.push(format!(
            "LOINC {} is not a moles/volume code but {} is moles/volume: use one of {} for \
             molar {} values",
            lab.loinc,
            given.code,
            def.molar_codes.join(", "),
            def.name
        ));
        return Ok(());
    }
    if given.code == preferred.code {
        return Ok(());
    }
    if given.base != preferred.base {
        let why = if molar_code {
            format!(
                "LOINC {} is a moles/volume code, so its value in {} is not in the preferred {} \
                 for {}",
                lab.loinc, given.code, preferred.code, def.name
            )
        } else {
            format!(
                "unit {} ({}) is not convertible to the preferred {} ({}) for {}",
                given.code,
                given.dimension.describe(),
                preferred.code,
                preferred.dimension.describe(),
                def.name
            )
        };
        warnings.push(format!(
            "{why}; the SDK does not convert it, CIBMTR's translation engine may"
        ));
        return Ok(());
    }
    if !opts.convert_units {
        warnings.push(format!(
            "unit {} is not the preferred {} for {}; sent as given (set convert_units to convert \
             exactly before submission, or CIBMTR's translation engine may convert it)",
            given.code, preferred.code, def.name
        ));
        return Ok(());
    }
    // Units of one base always convert, unless the result is beyond what a number can hold
    // (1e306 in 10*12/L is 1e309 in 10*9/L).
    let conv = |field: &str, v: f64| {
        convert(v, given.code, preferred.code).ok_or_else(|| {
            Error::validation(
                field,
                format!(
                    "is too large to convert from {} to {}",
                    given.code, preferred.code
                ),
            )
        })
    };
    let (old_value, new_value) = (lab.value, conv("value", lab.value)?);
    lab.reference_low = lab
        .reference_low
        .map(|v| conv("reference_low", v))
        .transpose()?;
    lab.reference_high = lab
        .reference_high
        .map(|v| conv("reference_high", v))
        .transpose()?;
    lab.value = new_value;
    lab.unit = preferred.code.to_owned();
    let range = if lab.reference_low.is_some() || lab.reference_high.is_some() {
        " (and the reference range)"
    } else {
        ""
    };
    warnings.push(format!(
        "converted {old_value} {} to {new_value} {}{range}, the preferred unit for {}",
        given.code, preferred.code, def.name
    ));
    Ok(())
}

/// `^\d{1,7}-\d$` with a correct LOINC (mod 10) check digit.
fn check_loinc(loinc: &str) -> Result<String> {
    let l = loinc.trim();
    if l.is_empty() {
        return Err(Error::validation("loinc", "is required"));
    }
    let Some((num, check)) = l.split_once('-') else {
        return Err(Error::validation(
            "loinc",
            "must look like a LOINC code (e.g. 718-7)",
        ));
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if num.is_empty() || num.len() > 7 || check.len() != 1 || !digits(num) || !digits(check) {
        return Err(Error::validation(
            "loinc",
            "must look like a LOINC code (e.g. 718-7)",
        ));
    }
    if loinc_check_digit(num) != check.as_bytes()[0] - b'0' {
        return Err(Error::validation(
            "loinc",
            "has a wrong check digit (the part after the dash); check the code for a typo",
        ));
    }
    Ok(l.to_owned())
}

/// LOINC's mod 10 check digit (the Luhn algorithm) of the part before the dash.
fn loinc_check_digit(num: &str) -> u8 {
    let sum: u32 = num
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let d2 = d * 2;
                d2 / 10 + d2 % 10
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

const EFFECTIVE_EXAMPLE: &str = "e.g. 2024-05-01T08:30:00-05:00 or 2024-05-01T13:30:00Z";

/// An RFC 3339 date-time with an offset. A space or lower-case `t`/`z` is normalised to FHIR's
/// `T`/`Z`; a date-time without an offset and a date alone are refused with a rule that says so.
fn check_effective(effective: &str) -> Result<String> {
    let mut e = effective.trim().to_owned();
    if e.len() > 10
        && e.is_char_boundary(10)
        && e.is_char_boundary(11)
        && matches!(&e[10..11], " " | "t")
    {
        e.replace_range(10..11, "T");
    }
    if e.ends_with('z') {
        e.pop();
        e.push('Z');
    }
    if let Some(t) = parse_effective(&e) {
        // RFC 3339 allows what FHIR's dateTime does not: year 0000 and offsets beyond ±14:00.
        if t.year() < 1 {
            return Err(Error::validation(
                "effective",
                "must have a year from 0001 (FHIR has no year 0000)",
            ));
        }
        if t.offset().local_minus_utc().abs() > 14 * 3600 {
            return Err(Error::validation(
                "effective",
                "must have a timezone offset between -14:00 and +14:00",
            ));
        }
        return Ok(e);
    }
    let rule = if NaiveDate::parse_from_str(&e, "%Y-%m-%d").is_ok() {
        format!(
            "must be a date-time with a timezone offset, not a date alone ({EFFECTIVE_EXAMPLE})"
        )
    } else if NaiveDateTime::parse_from_str(&e, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || NaiveDateTime::parse_from_str(&e, "%Y-%m-%dT%H:%M").is_ok()
    {
        format!("must include a timezone offset ({EFFECTIVE_EXAMPLE})")
    } else {
        format!("must be an RFC 3339 date-time with a timezone offset ({EFFECTIVE_EXAMPLE})")
    };
    Err(Error::validation("effective", rule))
}

pub(crate) fn parse_effective(e: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(e.trim()).ok()
}

/// Splits a leading comparator off and parses a plain decimal (`12`, `-0.5`, `.5`, `12.`).
fn parse_value(text: &str) -> Result<(Option<&'static str>, f64)> {
    const RULE: &str = "must be a finite decimal number, optionally led by <, <=, >= or >";
    let t = text.trim();
    let (comparator, rest) = ["<=", ">=", "<", ">"]
        .iter()
        .find_map(|c| t.strip_prefix(c).map(|r| (Some(*c), r.trim_start())))
        .unwrap_or((None, t));
    let value = parse_decimal(rest).ok_or_else(|| Error::validation("value", RULE))?;
    Ok((comparator, value))
}

fn parse_decimal(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// How [`LabResult::check`] treats codes and units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LabOptions {
    /// Refuse LOINC codes that are not in the form 2402 catalog (otherwise: a warning).
    pub strict: bool,
    /// Convert a value (and its reference range) in a unit of the right dimension to the
    /// catalog's preferred unit, exactly, with a warning saying so (otherwise: a warning only).
    pub convert_units: bool,
}

/// A lab result that passed [`LabResult::check`]: trimmed, normalised and possibly converted,
/// with what the SDK noticed about it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedLab {
    pub lab: LabResult,
    /// The form 2402 lab the code belongs to, if any.
    pub definition: Option<&'static LabDefinition>,
    /// Everything worth a human's attention: unknown codes, units other than the preferred one,
    /// conversions made.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// CSV input
// ---------------------------------------------------------------------------------------------

/// One data row of a labs CSV file. Every row is kept, valid or not, so a submission report can
/// account for each input line.
#[derive(Debug, Clone)]
pub struct CsvLab {
    /// The 1-based line of the file the row starts on (the header is line 1).
    pub line: usize,
    /// The patient, when the file has a `crid` column and the cell is filled and valid.
    pub crid: Option<i64>,
    /// The parsed lab result (not yet [`check`](LabResult::check)ed), or why the row could not be
    /// read.
    pub result: Result<LabResult, Error>,
}

const REQUIRED_COLUMNS: &[&str] = &["loinc", "value", "unit", "effective"];
const OPTIONAL_COLUMNS: &[&str] = &[
    "comparator",
    "reference_low",
    "reference_high",
    "status",
    "display",
    "crid",
];

/// Reads lab results from CSV with a header row. Columns (case-insensitive, any order):
/// `loinc`, `value`, `unit`, `effective` required; `comparator`, `reference_low`,
/// `reference_high`, `status`, `display` and `crid` optional; others are ignored. Rows whose
/// cells are all blank are skipped. A missing required column, an unreadable header or an I/O
/// error fails the whole read; a bad row is returned as a [`CsvLab`] holding its error.
pub fn read_labs_csv<R: Read>(mut reader: R) -> Result<Vec<CsvLab>> {
    // Read whole: lab files are small, and line numbers are then counted from the bytes (the csv
    // crate's own line count lags behind after a skipped blank line).
    let mut data = Vec::new();
    reader
        .read_to_end(&mut data)
        .map_err(|_| Error::validation("csv", "could not be read (I/O error)"))?;
    // Rows come in order, so newlines are counted from where the previous row was found, not
    // from the start of the file each time (which made a long file quadratic).
    let (mut scanned, mut newlines) = (0usize, 0usize);
    let mut line_at = |pos: Option<&csv::Position>| -> usize {
        let Some(p) = pos else { return 0 };
        let mut start = usize::try_from(p.byte())
            .unwrap_or(usize::MAX)
            .min(data.len());
        while start < data.len() && matches!(data[start], b'\r' | b'\n') {
            start += 1;
        }
        if start < scanned {
            (scanned, newlines) = (0, 0);
        }
        newlines += data[scanned..start].iter().filter(|b| **b == b'\n').count();
        scanned = start;
        1 + newlines
    };
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(data.as_slice());
    let headers = r
        .headers()
        .map_err(|e| csv_error("has an unreadable header row", &e))?
        .clone();
    let mut columns: HashMap<&'static str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase();
        if let Some(name) = REQUIRED_COLUMNS
            .iter()
            .chain(OPTIONAL_COLUMNS)
            .find(|c| **c == h)
            && columns.insert(name, i).is_some()
        {
            return Err(Error::validation(
                "csv",
                format!("has the column {name} twice"),
            ));
        }
    }
    if let Some(missing) = REQUIRED_COLUMNS.iter().find(|c| !columns.contains_key(**c)) {
        return Err(Error::validation(
            "csv",
            format!(
                "is missing the required column {missing} (required: {})",
                REQUIRED_COLUMNS.join(", ")
            ),
        ));
    }

    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Err(csv_error("could not be read", &e));
            }
            Err(e) => {
                rows.push(CsvLab {
                    line: line_at(e.position()),
                    crid: None,
                    result: Err(Error::validation(
                        "csv",
                        "row could not be read (invalid UTF-8 or malformed CSV)",
                    )),
                });
                continue;
            }
        };
        let line = line_at(rec.position());
        if rec.iter().all(str::is_empty) {
            continue;
        }
        let cell =
            |name: &str| -> &str { columns.get(name).and_then(|i| rec.get(*i)).unwrap_or("") };
        let (crid, crid_err) = match cell("crid") {
            "" => (None, None),
            c => match c.parse::<i64>() {
                Ok(v) if v > 0 => (Some(v), None),
                _ => (
                    None,
                    Some(Error::validation("crid", "must be a positive whole number")),
                ),
            },
        };
        let result = match crid_err {
            Some(e) => Err(e),
            None => csv_row(&cell),
        };
        rows.push(CsvLab { line, crid, result });
    }
    Ok(rows)
}

/// The rows of a labs CSV file meant for one recipient, as
/// [`CibmtrClient::submit_lab_inputs`](super::CibmtrClient::submit_lab_inputs) takes them, with
/// the line each row starts on (for the report: `inputs[i]` came from line `lines[i]`).
#[derive(Debug)]
pub struct CsvInputs {
    /// One per data row, in file order: the lab, or why the row cannot be submitted.
    pub inputs: Vec<Result<LabResult>>,
    /// The 1-based line of each input (the header is line 1).
    pub lines: Vec<usize>,
}

/// Reads the labs CSV file at `path` (see [`read_labs_csv`]) for the recipient `crid`. A row whose
/// `crid` column names another recipient becomes a failed input (field `crid`), never a lab sent
/// to `crid`. A file that cannot be opened is a [`Error::Config`]; a missing column, a
/// [`Error::Validation`] of `csv`.
pub fn labs_csv_inputs(path: &Path, crid: i64) -> Result<CsvInputs> {
    let file = std::fs::File::open(path).map_err(|e| Error::Config {
        message: format!("cannot open {}: {}", path.display(), e.kind()),
    })?;
    let rows = read_labs_csv(std::io::BufReader::new(file))?;
    let lines = rows.iter().map(|r| r.line).collect();
    let inputs = rows
        .into_iter()
        .map(|r| match r.crid {
            Some(other) if other != crid => Err(Error::validation(
                "crid",
                format!("the row is for CRID {other}, not {crid}"),
            )),
            _ => r.result,
        })
        .collect();
    Ok(CsvInputs { inputs, lines })
}

fn csv_row<'a>(cell: &dyn Fn(&str) -> &'a str) -> Result<LabResult> {
    for c in REQUIRED_COLUMNS {
        if cell(c).is_empty() {
            return Err(Error::validation(c, "is required"));
        }
    }
    let mut lab = LabResult::parse(
        cell("loinc"),
        cell("value"),
        cell("unit"),
        cell("effective"),
    )?;
    match (lab.comparator.as_deref(), cell("comparator")) {
        (_, "") => {}
        (None, c) => lab.comparator = Some(c.to_owned()),
        (Some(a), b) if a == b => {}
        (Some(_), _) => {
            return Err(Error::validation(
                "comparator",
                "the comparator column disagrees with the comparator in the value",
            ));
        }
    }
    for (field, slot) in [
        ("reference_low", &mut lab.reference_low),
        ("reference_high", &mut lab.reference_high),
    ] {
        let c = cell(field);
        if !c.is_empty() {
            *slot = Some(
                parse_decimal(c)
                    .ok_or_else(|| Error::validation(field, "must be a finite decimal number"))?,
            );
        }
    }
    for (field, slot) in [("status", &mut lab.status), ("display", &mut lab.display)] {
        let c = cell(field);
        if !c.is_empty() {
            *slot = Some(c.to_owned());
        }
    }
    Ok(lab)
}

fn csv_error(what: &str, e: &csv::Error) -> Error {
    let kind = match e.kind() {
        csv::ErrorKind::Io(_) => "I/O error",
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8",
        _ => "malformed CSV",
    };
    Error::validation("csv", format!("{what} ({kind})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3339 date-times that FHIR's dateTime refuses (found by fhir.resources and npm fhir in
    /// tests/interop/tests/resources.rs) are refused before anything is built.
    #[test]
    fn effective_times_fhir_cannot_carry_are_refused() {
        for e in [
            "0000-01-01T00:00:00Z",
            "1999-12-31T23:59:59+23:59",
            "2024-05-01T08:30:00-14:30",
        ] {
            let err = check_effective(e).unwrap_err();
            assert!(
                matches!(&err, Error::Validation { field, .. } if field == "effective"),
                "{e}: {err:?}"
            );
        }
        for e in [
            "0001-01-01T00:00:00Z",
            "2024-02-29T23:59:59+14:00",
            "2024-05-01T08:30:00-14:00",
        ] {
            assert_eq!(check_effective(e).unwrap(), e);
        }
    }
}
