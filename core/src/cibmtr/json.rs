//! Plain-data forms of the CIBMTR inputs and outputs, for the language bindings: a Python `dict`,
//! a JavaScript object or a Kotlin map arrives here as JSON and is read in one place, with the
//! same field names (snake_case or camelCase) and the same errors in every language.
use serde_json::{Map, Value, json};

use super::demographics::Demographics;
use super::labs::{LabDefinition, LabResult, lab_catalog};
use crate::error::{Error, Result};

/// The keys of an object, checked against the known ones so that a typo (`efective`) is an error
/// naming the key rather than a silently missing field.
fn object<'a>(v: &'a Value, what: &str, known: &[&str]) -> Result<&'a Map<String, Value>> {
    let map = v
        .as_object()
        .ok_or_else(|| Error::validation(what, "must be an object (a dict / plain object)"))?;
    for key in map.keys() {
        if !known.iter().any(|field| spells(key, field)) {
            return Err(Error::validation(
                key,
                format!("is not a field of {what} (known: {})", known.join(", ")),
            ));
        }
    }
    Ok(map)
}

/// Whether `key` spells the snake_case `field`, as itself or in camelCase (each ASCII capital
/// stands for `_` and its lower case), without building the snake_case text: a lab read from a
/// JavaScript or Python object asks this for each of its keys per field.
fn spells(key: &str, field: &str) -> bool {
    let mut rest = field.bytes();
    for c in key.bytes() {
        let ok = if c.is_ascii_uppercase() {
            rest.next() == Some(b'_') && rest.next() == Some(c.to_ascii_lowercase())
        } else {
            rest.next() == Some(c)
        };
        if !ok {
            return false;
        }
    }
    rest.next().is_none()
}

/// The value under `field` (given in snake_case) or its camelCase spelling.
fn get<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| spells(k, field))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

fn string(map: &Map<String, Value>, field: &str) -> Result<Option<String>> {
    match get(map, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::validation(field, "must be a string")),
    }
}

fn required_string(map: &Map<String, Value>, field: &str) -> Result<String> {
    string(map, field)?.ok_or_else(|| Error::validation(field, "is required"))
}

fn number(map: &Map<String, Value>, field: &str) -> Result<Option<f64>> {
    match get(map, field) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| Error::validation(field, "must be a number")),
        Some(_) => Err(Error::validation(field, "must be a number")),
    }
}

fn integer(map: &Map<String, Value>, field: &str) -> Result<Option<i64>> {
    match get(map, field) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::validation(field, "must be a whole number")),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::validation(field, "must be a whole number")),
        Some(_) => Err(Error::validation(field, "must be a whole number")),
    }
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

/// `reference_range` as API.md spells it: `[low, high]`, either bound `null`.
fn reference_range(map: &Map<String, Value>) -> Result<Option<(Option<f64>, Option<f64>)>> {
    let Some(v) = get(map, "reference_range") else {
        return Ok(None);
    };
    let bound = |b: &Value| match b {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64()),
        _ => Err(Error::validation(
            "reference_range",
            "bounds must be numbers or null",
        )),
    };
    match v.as_array().map(Vec::as_slice) {
        Some([low, high]) => Ok(Some((bound(low)?, bound(high)?))),
        _ => Err(Error::validation(
            "reference_range",
            "must be [low, high] (either may be null)",
        )),
    }
}

impl LabResult {
    /// Reads a lab from an object with the fields of [`LabResult`] (snake_case or camelCase).
    /// `value` may be a number or a decimal string with a leading comparator (`"<5"`), as in
    /// [`LabResult::parse`]. Unknown keys are an error naming the key.
    pub fn from_json(v: &Value) -> Result<LabResult> {
        let map = object(v, "lab", LAB_FIELDS)?;
        let loinc = required_string(map, "loinc")?;
        let unit = required_string(map, "unit")?;
        let effective = required_string(map, "effective")?;
        let mut lab = match get(map, "value") {
            None => return Err(Error::validation("value", "is required")),
            Some(Value::String(s)) => LabResult::parse(&loinc, s, &unit, &effective)?,
            Some(Value::Number(n)) => LabResult::new(
                loinc,
                n.as_f64()
                    .ok_or_else(|| Error::validation("value", "must be a number"))?,
                unit,
                effective,
            ),
            Some(_) => return Err(Error::validation("value", "must be a number")),
        };
        if let Some(c) = string(map, "comparator")? {
            lab.comparator = Some(c);
        }
        lab.reference_low = number(map, "reference_low")?;
        lab.reference_high = number(map, "reference_high")?;
        if let Some((low, high)) = reference_range(map)? {
            if lab.reference_low.is_some() || lab.reference_high.is_some() {
                return Err(Error::validation(
                    "reference_range",
                    "give reference_range or reference_low/reference_high, not both",
                ));
            }
            (lab.reference_low, lab.reference_high) = (low, high);
        }
        lab.status = string(map, "status")?;
        lab.display = string(map, "display")?;
        Ok(lab)
    }

    /// The lab as an object with snake_case keys (absent optional fields left out).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "loinc": self.loinc,
            "value": self.value,
            "unit": self.unit,
            "effective": self.effective,
        });
        for (k, val) in [
            ("comparator", self.comparator.clone().map(Value::from)),
            ("reference_low", self.reference_low.map(Value::from)),
            ("reference_high", self.reference_high.map(Value::from)),
            ("status", self.status.clone().map(Value::from)),
            ("display", self.display.clone().map(Value::from)),
        ] {
            if let Some(val) = val {
                v[k] = val;
            }
        }
        v
    }
}

/// A JSON array of labs in the common shape, read without building a `Value` per lab (a bulk
/// submission from JavaScript reads thousands): every element an object with the keys of
/// [`LabResult`] (snake_case or camelCase), a number `value`, strings where
/// [`LabResult::from_json`] wants strings, and no `reference_range`. `None` when anything is
/// outside that shape; the caller then reads each element with [`LabResult::from_json`], which
/// gives the precise error of each item. Where this gives labs, they are the labs `from_json`
/// gives (the unit test holds the two to that).
pub fn labs_from_json_text(text: &str) -> Option<Vec<LabResult>> {
    use serde::Deserialize as _;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Common {
        loinc: String,
        value: f64,
        unit: String,
        effective: String,
        #[serde(default)]
        comparator: Option<String>,
        #[serde(default, alias = "referenceLow")]
        reference_low: Option<f64>,
        #[serde(default, alias = "referenceHigh")]
        reference_high: Option<f64>,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        display: Option<String>,
    }
    // A derived struct would also read an array positionally: objects only.
    struct Object(Common);
    impl<'de> serde::Deserialize<'de> for Object {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Object;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a lab object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    map: A,
                ) -> std::result::Result<Object, A::Error> {
                    Common::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                        .map(Object)
                }
            }
            d.deserialize_map(Visit)
        }
    }
    let labs: Vec<Object> = serde_json::from_str(text).ok()?;
    Some(
        labs.into_iter()
            .map(|Object(c)| LabResult {
                loinc: c.loinc,
                value: c.value,
                unit: c.unit,
                effective: c.effective,
                comparator: c.comparator,
                reference_low: c.reference_low,
                reference_high: c.reference_high,
                status: c.status,
                display: c.display,
            })
            .collect(),
    )
}

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

impl Demographics {
    /// Reads demographics from an object with the fields of [`Demographics`] (snake_case or
    /// camelCase); `race` is a list of codes or one code. Unknown keys are an error naming the key.
    /// Nothing is validated beyond types here: [`Demographics::crid_request`] does that.
    pub fn from_json(v: &Value) -> Result<Demographics> {
        let map = object(v, "demographics", DEMOGRAPHICS_FIELDS)?;
        let race = match get(map, "race") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| Error::validation("race", "must be a list of code strings"))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(Error::validation("race", "must be a list of code strings")),
        };
        Ok(Demographics {
            ssn: string(map, "ssn")?.map(Into::into),
            mothers_maiden_name: string(map, "mothers_maiden_name")?,
            race,
            ethnicity: string(map, "ethnicity")?,
            nmdp_rid: integer(map, "nmdp_rid")?,
            ebmt_cic: string(map, "ebmt_cic")?,
            ebmt_id: string(map, "ebmt_id")?,
            cibmtr_team: integer(map, "cibmtr_team")?,
            cibmtr_iubmid: string(map, "cibmtr_iubmid")?,
            ..Demographics::new(
                required_string(map, "first_name")?,
                required_string(map, "last_name")?,
                required_string(map, "birth_date")?,
                required_string(map, "gender")?,
            )
        })
    }
}

impl LabDefinition {
    /// `{"name", "unit", "loinc_codes", "molar_codes"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "unit": self.unit,
            "loinc_codes": self.loinc_codes,
            "molar_codes": self.molar_codes,
        })
    }
}

/// The whole form 2402 catalog as a list of [`LabDefinition::to_json`] objects.
pub fn lab_catalog_json() -> Value {
    Value::Array(lab_catalog().iter().map(LabDefinition::to_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever `labs_from_json_text` reads is what `from_json` reads; what it cannot read in
    /// the common shape it leaves to `from_json` (`None`), which gives each item's error.
    #[test]
    fn the_fast_reading_of_a_lab_array_is_from_json() {
        let common = [
            json!({"loinc": "718-7", "value": 12.5, "unit": "g/dL", "effective": "2024-05-01T13:30:00Z"}),
            json!({"loinc": " 718-7 ", "value": -0.0, "unit": "g/dL", "effective": "x", "comparator": "<",
                   "referenceLow": 12, "reference_high": 16.5, "status": "amended", "display": "Hgb"}),
            json!({"loinc": "718-7", "value": 1e21, "unit": "g/dL", "effective": "e", "comparator": null,
                   "reference_low": null, "referenceHigh": null, "status": null, "display": null}),
            json!({"effective": "e", "unit": "u", "value": 0.1, "loinc": "l", "reference_low": 1}),
        ];
        let other = [
            json!({"loinc": "26515-7", "value": "<5", "unit": "10*9/L", "effective": "e"}),
            json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "e", "referenceLow": "12"}),
            json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "e", "referenceRange": [1, 2]}),
            json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "e", "reference_range": [1, null]}),
            json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "e", "efective": "typo"}),
            json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "e", "referenceLow": 1, "reference_low": 2}),
            json!({"loinc": null, "value": 1, "unit": "g/dL", "effective": "e"}),
            json!({"loinc": "718-7", "value": null, "unit": "g/dL", "effective": "e"}),
            json!({"loinc": "718-7", "unit": "g/dL", "effective": "e"}),
            json!({"loinc": 718, "value": 1, "unit": "g/dL", "effective": "e"}),
            json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "e", "status": 3}),
            json!({"loinc": "718-7", "value": true, "unit": "g/dL", "effective": "e"}),
            json!(["718-7", 1, "g/dL", "e"]),
            json!("718-7"),
            json!(null),
        ];
        for lab in &common {
            let fast = labs_from_json_text(&json!([lab, lab]).to_string())
                .unwrap_or_else(|| panic!("read in the common shape: {lab}"));
            let slow = LabResult::from_json(lab).unwrap();
            assert_eq!(fast, [slow.clone(), slow], "{lab}");
        }
        for lab in &other {
            assert_eq!(
                labs_from_json_text(&json!([lab]).to_string()),
                None,
                "{lab}"
            );
            // One such item among common ones: the whole array goes to from_json.
            let mixed = json!([common[0], lab]).to_string();
            assert_eq!(labs_from_json_text(&mixed), None, "{lab}");
        }
        assert_eq!(labs_from_json_text("[]"), Some(vec![]));
        for text in ["", "{}", "[", "null", "[1]"] {
            assert_eq!(labs_from_json_text(text), None, "{text}");
        }
    }

    #[test]
    fn labs_from_snake_and_camel_case() {
        let a = LabResult::from_json(&json!({
            "loinc": "718-7", "value": 12.5, "unit": "g/dL",
            "effective": "2024-05-01T08:30:00-05:00", "referenceLow": 12, "reference_high": "16"
        }))
        .unwrap();
        assert_eq!(a.reference_low, Some(12.0));
        assert_eq!(a.reference_high, Some(16.0));
        let b = LabResult::from_json(&a.to_json()).unwrap();
        assert_eq!(a, b);
        let c = LabResult::from_json(&json!({
            "loinc": "26515-7", "value": "<5", "unit": "10*9/L", "effective": "2024-05-01T13:30:00Z"
        }))
        .unwrap();
        assert_eq!(c.comparator.as_deref(), Some("<"));
        let d = LabResult::from_json(&json!({
            "loinc": "718-7", "value": 1, "unit": "g/dL",
            "effective": "2024-05-01T13:30:00Z", "referenceRange": [null, 16]
        }))
        .unwrap();
        assert_eq!((d.reference_low, d.reference_high), (None, Some(16.0)));
    }

    #[test]
    fn lab_errors_name_the_field() {
        let field = |v: Value| match LabResult::from_json(&v).unwrap_err() {
            Error::Validation { field, .. } => field,
            e => panic!("{e:?}"),
        };
        let base = json!({"loinc": "718-7", "value": 1, "unit": "g/dL", "effective": "2024-05-01T13:30:00Z"});
        let mut typo = base.clone();
        typo["efective"] = json!("x");
        assert_eq!(field(typo), "efective");
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("unit");
        assert_eq!(field(missing), "unit");
        let mut wrong = base.clone();
        wrong["value"] = json!([1]);
        assert_eq!(field(wrong), "value");
        assert_eq!(field(json!([1, 2])), "lab");
    }

    #[test]
    fn demographics_from_json() {
        let d = Demographics::from_json(&json!({
            "firstName": "Jane", "last_name": "Doe", "birth_date": "1970-01-31",
            "gender": "F", "race": "2106-3", "nmdpRid": "123"
        }))
        .unwrap();
        assert_eq!(d.race, vec!["2106-3"]);
        assert_eq!(d.nmdp_rid, Some(123));
        let e = Demographics::from_json(&json!({"first_name": "J"})).unwrap_err();
        assert!(matches!(e, Error::Validation { field, .. } if field == "last_name"));
    }

    #[test]
    fn catalog_json() {
        let c = lab_catalog_json();
        assert_eq!(c.as_array().unwrap().len(), 11);
        assert_eq!(c[3]["name"], "Hemoglobin");
    }
}
