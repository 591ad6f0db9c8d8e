//! The CIBMTR Direct FHIR workflow (`cibmtr_fhir::cibmtr`): CRID, the de-identified Patient,
//! lab results one by one or in bulk, the form 2402 lab catalog.
use std::path::PathBuf;
use std::sync::Arc;

use cibmtr_fhir::Error;
use cibmtr_fhir::cibmtr::{
    self as core, Demographics, Environment, LabOptions, Progress, ProgressFn, SubmitOptions,
    UriFamily,
};
use cibmtr_fhir::fhir::FhirVersion;
use cibmtr_fhir::journal::{BatchInfo, Journal, JournalPart};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use serde_json::{Map, Value, json};

use crate::auth::TokenProvider;
use crate::convert::{Accepts, Json, JsonList, check_args, json_to_py, py_to_json};
use crate::error::{OrRaise, invalid, to_py_err, wrong_type};
use crate::fhir::FhirClient;
use crate::http::HttpConfig;
use crate::runtime::{awaitable, wait, with_python};

/// One lab result for form 2402: LOINC code, value, UCUM unit and a timezone-aware collection
/// time (`effective`: ISO 8601 text with an offset, or an aware datetime); optionally a reference
/// range, a comparator (`<`, `<=`, `>=`, `>`; or a value like `"<5"`), a status and a display.
/// Built from keywords or `LabResult.from_dict(d)`; checked in full when submitted (or by
/// `check()`).
#[pyclass(module = "cibmtr_fhir", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct LabResult {
    inner: core::LabResult,
}

/// A JSON object from (name, Python value) pairs, leaving out the None ones.
fn object(fields: &[(&str, Option<&Bound<'_, PyAny>>)]) -> Result<Value, Error> {
    let mut map = Map::new();
    for (name, value) in fields {
        if let Some(v) = value.filter(|v| !v.is_none()) {
            map.insert((*name).to_owned(), py_to_json(v, name)?);
        }
    }
    Ok(Value::Object(map))
}

/// The types of a lab's text arguments (`TypeError` naming the argument); `value` and the
/// reference range are left to the core, which reads numbers from str too.
fn lab_arg_types(
    unit: Option<&Bound<'_, PyAny>>,
    effective: Option<&Bound<'_, PyAny>>,
    comparator: Option<&Bound<'_, PyAny>>,
    status: Option<&Bound<'_, PyAny>>,
    display: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    check_args(&[
        ("unit", unit, Accepts::Str, false),
        ("effective", effective, Accepts::StrOrDate, false),
        ("comparator", comparator, Accepts::Str, false),
        ("status", status, Accepts::Str, false),
        ("display", display, Accepts::Str, false),
    ])
}

impl LabResult {
    /// A lab from a `LabResult` or a dict (errors are the core's, naming the field).
    fn extract(obj: &Bound<'_, PyAny>) -> Result<core::LabResult, Error> {
        if let Ok(lab) = obj.cast::<LabResult>() {
            return Ok(lab.get().inner.clone());
        }
        core::LabResult::from_json(&py_to_json(obj, "lab")?)
    }
}

#[pymethods]
impl LabResult {
    #[new]
    #[pyo3(signature = (loinc, value, unit, effective, *, reference_low = None, reference_high = None, comparator = None, status = None, display = None))]
    fn new(
        loinc: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        unit: &Bound<'_, PyAny>,
        effective: &Bound<'_, PyAny>,
        reference_low: Option<&Bound<'_, PyAny>>,
        reference_high: Option<&Bound<'_, PyAny>>,
        comparator: Option<&Bound<'_, PyAny>>,
        status: Option<&Bound<'_, PyAny>>,
        display: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        check_args(&[("loinc", Some(loinc), Accepts::Str, true)])?;
        lab_arg_types(Some(unit), Some(effective), comparator, status, display)?;
        let v = object(&[
            ("loinc", Some(loinc)),
            ("value", Some(value)),
            ("unit", Some(unit)),
            ("effective", Some(effective)),
            ("reference_low", reference_low),
            ("reference_high", reference_high),
            ("comparator", comparator),
            ("status", status),
            ("display", display),
        ])
        .or_raise()?;
        let inner = core::LabResult::from_json(&v).or_raise()?;
        Ok(LabResult { inner })
    }

    /// A lab from a dict with the same keys (snake_case or camelCase); unknown keys are refused
    /// by name.
    #[staticmethod]
    fn from_dict(d: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(LabResult {
            inner: core::LabResult::from_json(&py_to_json(d, "lab").or_raise()?).or_raise()?,
        })
    }

    /// The lab as a dict (absent optional fields left out).
    fn to_dict(&self) -> Json {
        Json(self.inner.to_json())
    }

    /// Validates the lab as a submission would (without sending anything) and returns the
    /// warnings (a code outside the form 2402 catalog, a non-preferred unit, a conversion).
    /// `strict` refuses codes outside the catalog; `convert_units` converts to the preferred unit.
    #[pyo3(signature = (*, strict = false, convert_units = false))]
    fn check(&self, strict: bool, convert_units: bool) -> PyResult<Vec<String>> {
        let opts = LabOptions {
            strict,
            convert_units,
        };
        Ok(self.inner.check(&opts).or_raise()?.warnings)
    }

    /// The LOINC code.
    #[getter]
    fn loinc(&self) -> &str {
        &self.inner.loinc
    }
    /// The numeric value.
    #[getter]
    fn value(&self) -> f64 {
        self.inner.value
    }
    /// The UCUM unit code.
    #[getter]
    fn unit(&self) -> &str {
        &self.inner.unit
    }
    /// When the sample was collected (ISO 8601 with an offset).
    #[getter]
    fn effective(&self) -> &str {
        &self.inner.effective
    }
    /// `<`, `<=`, `>=`, `>` or None.
    #[getter]
    fn comparator(&self) -> Option<&str> {
        self.inner.comparator.as_deref()
    }
    /// The low end of the reference range, or None.
    #[getter]
    fn reference_low(&self) -> Option<f64> {
        self.inner.reference_low
    }
    /// The high end of the reference range, or None.
    #[getter]
    fn reference_high(&self) -> Option<f64> {
        self.inner.reference_high
    }
    /// `registered`, `preliminary`, `final` or `amended` (None: final).
    #[getter]
    fn status(&self) -> Option<&str> {
        self.inner.status.as_deref()
    }
    /// The code's display, or None (the guide's is used).
    #[getter]
    fn display(&self) -> Option<&str> {
        self.inner.display.as_deref()
    }

    fn __repr__(&self) -> String {
        format!("LabResult({})", kwargs_repr(&self.inner.to_json()))
    }
}

/// `k=v, ...` of an object, in Python's literal style.
fn kwargs_repr(v: &Value) -> String {
    let Value::Object(map) = v else {
        return String::new();
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s:?}").replace('"', "'"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result of `submit_lab`: `status` (`"created"` or `"already_present"`), `id` (the
/// server's Observation id), `submission_id` (the content-derived identifier the Observation
/// carries) and `warnings`.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct LabSubmission {
    inner: core::LabSubmission,
}

#[pymethods]
impl LabSubmission {
    /// `"created"` or `"already_present"`.
    #[getter]
    fn status(&self) -> &'static str {
        self.inner.status.as_str()
    }
    /// The server's Observation id.
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    /// The content-derived identifier the Observation carries.
    #[getter]
    fn submission_id(&self) -> &str {
        &self.inner.submission_id
    }
    /// Remarks: a code outside the catalog, a non-preferred unit, a conversion.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings.clone()
    }
    /// `{"status", "id", "submission_id", "warnings"}`.
    fn to_dict(&self) -> Json {
        Json(json!({
            "status": self.inner.status.as_str(),
            "id": self.inner.id,
            "submission_id": self.inner.submission_id,
            "warnings": self.inner.warnings,
        }))
    }
    fn __repr__(&self) -> String {
        format!(
            "LabSubmission(status={:?}, id={:?}, warnings={})",
            self.inner.status.as_str(),
            self.inner.id,
            self.inner.warnings.len()
        )
        .replace('"', "'")
    }
}

/// What `submit_labs` did with every input item: counts (`created`, `already_present`, `failed`,
/// `total`), `elapsed` seconds, and one dict per item in input order (`index`, `status`, `id`,
/// `submission_id`, `warnings`, `error` for failures with `kind`, `message` and `field`; `line`
/// for rows of a CSV file). `to_list()`, `to_dict()`, `to_dataframe()`; iterating gives the items.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct SubmissionReport {
    inner: core::SubmissionReport,
    /// The CSV line of each item, when the input was a file.
    lines: Option<Vec<usize>>,
}

impl SubmissionReport {
    fn items_json(&self) -> Vec<Value> {
        self.inner
            .items
            .iter()
            .map(|item| {
                let line = self.lines.as_ref().and_then(|l| l.get(item.index)).copied();
                core::ItemJson {
                    item,
                    crid: None,
                    line,
                }
                .to_json()
            })
            .collect()
    }
}

#[pymethods]
impl SubmissionReport {
    /// Input items.
    #[getter]
    fn total(&self) -> usize {
        self.inner.total()
    }
    /// Items the server created.
    #[getter]
    fn created(&self) -> usize {
        self.inner.created
    }
    /// Items already on the server or repeated in the input (not sent).
    #[getter]
    fn already_present(&self) -> usize {
        self.inner.already_present
    }
    /// Items not submitted (each says why).
    #[getter]
    fn failed(&self) -> usize {
        self.inner.failed
    }
    /// Seconds the submission took.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.inner.elapsed.as_secs_f64()
    }
    /// The journal batch the submission was recorded in (pass it as `resume=` to continue an
    /// interrupted submission), or None without a journal.
    #[getter]
    fn batch_id(&self) -> Option<String> {
        self.inner.batch_id.clone()
    }
    /// One dict per input item, in input order.
    #[getter]
    fn items(&self) -> JsonList {
        JsonList(self.items_json())
    }
    /// The items that failed.
    fn failures(&self) -> JsonList {
        JsonList(
            self.items_json()
                .into_iter()
                .filter(|i| i["status"] == "failed")
                .collect(),
        )
    }
    /// The items as a list of dicts.
    fn to_list(&self) -> JsonList {
        self.items()
    }
    /// Counts and items: `{"total", "created", "already_present", "failed", "elapsed_ms", "items"}`.
    fn to_dict(&self) -> Json {
        let mut v = self.inner.to_json();
        v["items"] = Value::Array(self.items_json());
        Json(v)
    }
    /// The items as a pandas DataFrame (nested error fields become `error.kind`,
    /// `error.message`, ...). Needs pandas.
    fn to_dataframe<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let items = JsonList(self.items_json()).into_pyobject(py)?;
        py.import("pandas")
            .map_err(|_| {
                pyo3::exceptions::PyImportError::new_err(
                    "to_dataframe() needs pandas: pip install pandas",
                )
            })?
            .call_method1("json_normalize", (items,))
    }
    fn __len__(&self) -> usize {
        self.inner.total()
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        JsonList(self.items_json())
            .into_pyobject(py)?
            .try_iter()
            .map(Bound::into_any)
    }
    fn __repr__(&self) -> String {
        format!(
            "SubmissionReport(total={}, created={}, already_present={}, failed={}, elapsed={:.3}s)",
            self.inner.total(),
            self.inner.created,
            self.inner.already_present,
            self.inner.failed,
            self.inner.elapsed.as_secs_f64()
        )
    }
}

/// The demographics of `register_crid` as the core reads them.
fn demographics(
    first_name: &Bound<'_, PyAny>,
    last_name: &Bound<'_, PyAny>,
    birth_date: &Bound<'_, PyAny>,
    gender: &Bound<'_, PyAny>,
    ssn: Option<&Bound<'_, PyAny>>,
    race: Option<&Bound<'_, PyAny>>,
    ethnicity: Option<&Bound<'_, PyAny>>,
    mothers_maiden_name: Option<&Bound<'_, PyAny>>,
    nmdp_rid: Option<&Bound<'_, PyAny>>,
    ebmt_cic: Option<&Bound<'_, PyAny>>,
    ebmt_id: Option<&Bound<'_, PyAny>>,
    cibmtr_team: Option<&Bound<'_, PyAny>>,
    cibmtr_iubmid: Option<&Bound<'_, PyAny>>,
) -> PyResult<Demographics> {
    use Accepts::{Int, Str, StrOrDate, StrOrList};
    check_args(&[
        ("first_name", Some(first_name), Str, true),
        ("last_name", Some(last_name), Str, true),
        ("birth_date", Some(birth_date), StrOrDate, true),
        ("gender", Some(gender), Str, true),
        ("ssn", ssn, Str, false),
        ("race", race, StrOrList, false),
        ("ethnicity", ethnicity, Str, false),
        ("mothers_maiden_name", mothers_maiden_name, Str, false),
        ("nmdp_rid", nmdp_rid, Int, false),
        ("ebmt_cic", ebmt_cic, Str, false),
        ("ebmt_id", ebmt_id, Str, false),
        ("cibmtr_team", cibmtr_team, Int, false),
        ("cibmtr_iubmid", cibmtr_iubmid, Str, false),
    ])?;
    let v = object(&[
        ("first_name", Some(first_name)),
        ("last_name", Some(last_name)),
        ("birth_date", Some(birth_date)),
        ("gender", Some(gender)),
        ("ssn", ssn),
        ("race", race),
        ("ethnicity", ethnicity),
        ("mothers_maiden_name", mothers_maiden_name),
        ("nmdp_rid", nmdp_rid),
        ("ebmt_cic", ebmt_cic),
        ("ebmt_id", ebmt_id),
        ("cibmtr_team", cibmtr_team),
        ("cibmtr_iubmid", cibmtr_iubmid),
    ])
    .or_raise()?;
    Demographics::from_json(&v).or_raise()
}

/// The lab of `submit_lab`: a `LabResult` or dict as the second argument, or its fields.
fn one_lab(
    lab_or_loinc: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
    unit: Option<&Bound<'_, PyAny>>,
    effective: Option<&Bound<'_, PyAny>>,
    reference_range: Option<&Bound<'_, PyAny>>,
    comparator: Option<&Bound<'_, PyAny>>,
    status: Option<&Bound<'_, PyAny>>,
    display: Option<&Bound<'_, PyAny>>,
) -> PyResult<core::LabResult> {
    if lab_or_loinc.cast::<LabResult>().is_ok() || lab_or_loinc.cast::<PyDict>().is_ok() {
        return LabResult::extract(lab_or_loinc).or_raise();
    }
    if !lab_or_loinc.is_instance_of::<PyString>() {
        return Err(wrong_type(
            "lab_or_loinc",
            "a LabResult, a dict or a LOINC code (str)",
            lab_or_loinc,
        ));
    }
    lab_arg_types(unit, effective, comparator, status, display)?;
    let (low, high) = match reference_range.filter(|r| !r.is_none()) {
        None => (None, None),
        Some(r) => {
            let (low, high): (Bound<'_, PyAny>, Bound<'_, PyAny>) = r.extract().map_err(|_| {
                to_py_err(invalid(
                    "reference_range",
                    "must be a (low, high) pair; either may be None",
                ))
            })?;
            (Some(low), Some(high))
        }
    };
    let v = object(&[
        ("loinc", Some(lab_or_loinc)),
        ("value", value),
        ("unit", unit),
        ("effective", effective),
        ("reference_low", low.as_ref()),
        ("reference_high", high.as_ref()),
        ("comparator", comparator),
        ("status", status),
        ("display", display),
    ])
    .or_raise()?;
    core::LabResult::from_json(&v).or_raise()
}

const LABS: &str = "an iterable of dicts or LabResults";

/// The items of `submit_labs`: each a `LabResult` or a dict; one that cannot be read becomes a
/// failed item of the report, not an exception.
fn lab_inputs(labs: &Bound<'_, PyAny>) -> PyResult<Vec<cibmtr_fhir::Result<core::LabResult>>> {
    if labs.is_instance_of::<PyString>() || labs.is_instance_of::<PyDict>() {
        return Err(wrong_type("labs", LABS, labs));
    }
    let mut out = Vec::new();
    for item in labs
        .try_iter()
        .map_err(|_| wrong_type("labs", LABS, labs))?
    {
        out.push(LabResult::extract(&item?));
    }
    Ok(out)
}

fn options(
    concurrency: i64,
    use_bundles: bool,
    bundle_size: i64,
    progress: Option<Py<PyAny>>,
    journal: Option<JournalPart>,
) -> SubmitOptions {
    // A negative count reaches the core as 0, whose rule names the field ("must be at least 1"),
    // rather than failing the conversion to usize with an OverflowError.
    let count = |n: i64| usize::try_from(n).unwrap_or(0);
    SubmitOptions {
        concurrency: count(concurrency),
        use_bundles,
        bundle_size: count(bundle_size),
        progress: progress.map(progress_fn),
        journal,
    }
}

/// `journal=` (the SQLite journal file) and `resume=` (a batch id of it to continue): the batch
/// the submission records into, numbered by CSV line when the input was a file.
fn journal_part(
    journal: Option<PathBuf>,
    resume: Option<String>,
    source: Option<&std::path::Path>,
    lines: Option<&[usize]>,
) -> PyResult<Option<JournalPart>> {
    let Some(path) = journal else {
        return match resume {
            Some(_) => Err(to_py_err(invalid(
                "resume",
                "needs journal=: the journal file the batch is in",
            ))),
            None => Ok(None),
        };
    };
    let journal = Journal::open(path).or_raise()?;
    let batch = match resume {
        Some(id) => journal.resume_batch(&id).or_raise()?,
        None => journal
            .start_batch(&BatchInfo {
                source: Some(
                    source
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "python".into()),
                ),
                ..Default::default()
            })
            .or_raise()?,
    };
    Ok(Some(match lines {
        Some(l) => batch.numbered(l.iter().map(|&n| n as u64).collect()),
        None => batch.into(),
    }))
}

/// A Python callable as the core's progress callback: called after every item with
/// `{"done", "total", "created", "already_present", "failed"}`. An exception in it is reported
/// as unraisable and does not stop the submission.
fn progress_fn(callback: Py<PyAny>) -> ProgressFn {
    Arc::new(move |p: Progress| {
        with_python(|py| {
            let call = || -> PyResult<()> {
                let d = PyDict::new(py);
                d.set_item("done", p.done)?;
                d.set_item("total", p.total)?;
                d.set_item("created", p.created)?;
                d.set_item("already_present", p.already_present)?;
                d.set_item("failed", p.failed)?;
                callback.call1(py, (d,))?;
                Ok(())
            };
            if let Err(e) = call() {
                e.write_unraisable(py, Some(callback.bind(py)));
            }
        });
    })
}

/// A client of CIBMTR's Direct FHIR Service API for one transplant centre (CCN), authenticating
/// with any flow (CIBMTR: `PasswordGrant`). `environment` is `"test"` or `"production"`;
/// `base_url` overrides its API URL (e.g. the sandbox's), `fhir_path` the FHIR root below it
/// (`"r3"`), `uri_family` the CRID/centre systems (`"cibmtr"` or `"terminology"`). `strict`
/// refuses LOINC codes outside the form 2402 catalog; `convert_units` converts values to the
/// catalog's preferred unit (with a warning).
#[pyclass(module = "cibmtr_fhir", subclass, frozen)]
pub struct CibmtrClient {
    inner: core::CibmtrClient,
}

impl CibmtrClient {
    /// The core client (usable after a `fork()` too: the core's HTTP pool is per process).
    fn core(&self) -> PyResult<&core::CibmtrClient> {
        Ok(&self.inner)
    }
}

#[pymethods]
impl CibmtrClient {
    #[new]
    #[pyo3(signature = (ccn, auth, environment = "test", base_url = None, *, fhir_path = None, uri_family = "cibmtr", fhir_version = "STU3", strict = false, convert_units = false, http = None))]
    fn new(
        ccn: String,
        auth: PyRef<'_, TokenProvider>,
        environment: &str,
        base_url: Option<String>,
        fhir_path: Option<String>,
        uri_family: &str,
        fhir_version: &str,
        strict: bool,
        convert_units: bool,
        http: Option<&Bound<'_, HttpConfig>>,
    ) -> PyResult<Self> {
        let mut b = core::CibmtrClient::builder(ccn, &auth.provider)
            .environment(environment.parse::<Environment>().or_raise()?)
            .uri_family(uri_family.parse::<UriFamily>().or_raise()?)
            .fhir_version(fhir_version.parse::<FhirVersion>().or_raise()?)
            .lab_options(LabOptions {
                strict,
                convert_units,
            })
            .http_client(HttpConfig::client_or_default(http));
        if let Some(u) = base_url {
            b = b.base_url(u);
        }
        if let Some(p) = fhir_path {
            b = b.fhir_path(p);
        }
        Ok(CibmtrClient {
            inner: b.build().or_raise()?,
        })
    }

    /// The centre number.
    #[getter]
    fn ccn(&self) -> &str {
        self.inner.ccn()
    }

    /// The FHIR client behind Patient and Observation calls (for your own searches).
    #[getter]
    fn fhir(&self) -> FhirClient {
        FhirClient::wrap(self.inner.fhir().clone())
    }

    /// Registers (or looks up) a recipient and returns the CRID (int). Everything is validated
    /// before anything is sent; the same demographics give the same CRID. `birth_date` is
    /// `"YYYY-MM-DD"` or a `date`; `gender` `"M"`/`"F"`; `race` a list of codes.
    #[pyo3(signature = (first_name, last_name, birth_date, gender, *, ssn = None, race = None, ethnicity = None, mothers_maiden_name = None, nmdp_rid = None, ebmt_cic = None, ebmt_id = None, cibmtr_team = None, cibmtr_iubmid = None))]
    fn register_crid(
        &self,
        py: Python<'_>,
        first_name: &Bound<'_, PyAny>,
        last_name: &Bound<'_, PyAny>,
        birth_date: &Bound<'_, PyAny>,
        gender: &Bound<'_, PyAny>,
        ssn: Option<&Bound<'_, PyAny>>,
        race: Option<&Bound<'_, PyAny>>,
        ethnicity: Option<&Bound<'_, PyAny>>,
        mothers_maiden_name: Option<&Bound<'_, PyAny>>,
        nmdp_rid: Option<&Bound<'_, PyAny>>,
        ebmt_cic: Option<&Bound<'_, PyAny>>,
        ebmt_id: Option<&Bound<'_, PyAny>>,
        cibmtr_team: Option<&Bound<'_, PyAny>>,
        cibmtr_iubmid: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        let d = demographics(
            first_name,
            last_name,
            birth_date,
            gender,
            ssn,
            race,
            ethnicity,
            mothers_maiden_name,
            nmdp_rid,
            ebmt_cic,
            ebmt_id,
            cibmtr_team,
            cibmtr_iubmid,
        )?;
        wait(py, self.core()?.register_crid(&d))
    }

    /// `await client.aregister_crid(...)`.
    #[pyo3(signature = (first_name, last_name, birth_date, gender, *, ssn = None, race = None, ethnicity = None, mothers_maiden_name = None, nmdp_rid = None, ebmt_cic = None, ebmt_id = None, cibmtr_team = None, cibmtr_iubmid = None))]
    fn aregister_crid<'py>(
        &self,
        py: Python<'py>,
        first_name: &Bound<'_, PyAny>,
        last_name: &Bound<'_, PyAny>,
        birth_date: &Bound<'_, PyAny>,
        gender: &Bound<'_, PyAny>,
        ssn: Option<&Bound<'_, PyAny>>,
        race: Option<&Bound<'_, PyAny>>,
        ethnicity: Option<&Bound<'_, PyAny>>,
        mothers_maiden_name: Option<&Bound<'_, PyAny>>,
        nmdp_rid: Option<&Bound<'_, PyAny>>,
        ebmt_cic: Option<&Bound<'_, PyAny>>,
        ebmt_id: Option<&Bound<'_, PyAny>>,
        cibmtr_team: Option<&Bound<'_, PyAny>>,
        cibmtr_iubmid: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let d = demographics(
            first_name,
            last_name,
            birth_date,
            gender,
            ssn,
            race,
            ethnicity,
            mothers_maiden_name,
            nmdp_rid,
            ebmt_cic,
            ebmt_id,
            cibmtr_team,
            cibmtr_iubmid,
        )?;
        let c = self.core()?.clone();
        awaitable(py, async move { c.register_crid(&d).await })
    }

    /// The id of the recipient's de-identified Patient, created only if the server has none.
    fn ensure_patient(&self, py: Python<'_>, crid: i64) -> PyResult<String> {
        wait(py, self.core()?.ensure_patient(crid))
    }

    /// `await client.aensure_patient(crid)`.
    fn aensure_patient<'py>(&self, py: Python<'py>, crid: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core()?.clone();
        awaitable(py, async move { c.ensure_patient(crid).await })
    }

    /// Submits one lab unless an Observation with the same content is already there. Give a
    /// `LabResult` or dict, or the fields: `submit_lab(crid, "718-7", 12.5, "g/dL",
    /// "2024-05-01T08:30:00-05:00", reference_range=(12, 16))`.
    #[pyo3(signature = (crid, lab_or_loinc, value = None, unit = None, effective = None, reference_range = None, *, comparator = None, status = None, display = None))]
    fn submit_lab(
        &self,
        py: Python<'_>,
        crid: i64,
        lab_or_loinc: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        unit: Option<&Bound<'_, PyAny>>,
        effective: Option<&Bound<'_, PyAny>>,
        reference_range: Option<&Bound<'_, PyAny>>,
        comparator: Option<&Bound<'_, PyAny>>,
        status: Option<&Bound<'_, PyAny>>,
        display: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<LabSubmission> {
        let lab = one_lab(
            lab_or_loinc,
            value,
            unit,
            effective,
            reference_range,
            comparator,
            status,
            display,
        )?;
        let inner = wait(py, self.core()?.submit_lab(crid, &lab))?;
        Ok(LabSubmission { inner })
    }

    /// `await client.asubmit_lab(...)`.
    #[pyo3(signature = (crid, lab_or_loinc, value = None, unit = None, effective = None, reference_range = None, *, comparator = None, status = None, display = None))]
    fn asubmit_lab<'py>(
        &self,
        py: Python<'py>,
        crid: i64,
        lab_or_loinc: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        unit: Option<&Bound<'_, PyAny>>,
        effective: Option<&Bound<'_, PyAny>>,
        reference_range: Option<&Bound<'_, PyAny>>,
        comparator: Option<&Bound<'_, PyAny>>,
        status: Option<&Bound<'_, PyAny>>,
        display: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let lab = one_lab(
            lab_or_loinc,
            value,
            unit,
            effective,
            reference_range,
            comparator,
            status,
            display,
        )?;
        let c = self.core()?.clone();
        awaitable(py, async move {
            Ok(LabSubmission {
                inner: c.submit_lab(crid, &lab).await?,
            })
        })
    }

    /// Submits many labs for one recipient, `concurrency` at a time, and accounts for every item
    /// in the returned `SubmissionReport` (an unreadable item is a failed item, not an
    /// exception). `labs` is an iterable of dicts or `LabResult`s (`cibmtr_fhir.CibmtrClient`
    /// also takes a pandas DataFrame or a CSV path). `progress` is a callable receiving
    /// `{"done", "total", "created", "already_present", "failed"}` after every item.
    /// `journal`: a SQLite file recording every item before and after its request (the report's
    /// `batch_id` names the batch); `resume`: a batch id of that journal to continue, sending
    /// nothing the journal or the server already holds.
    #[pyo3(signature = (crid, labs, *, concurrency = 8, progress = None, use_bundles = false, bundle_size = 50, journal = None, resume = None))]
    fn submit_labs(
        &self,
        py: Python<'_>,
        crid: i64,
        labs: &Bound<'_, PyAny>,
        concurrency: i64,
        progress: Option<Py<PyAny>>,
        use_bundles: bool,
        bundle_size: i64,
        journal: Option<PathBuf>,
        resume: Option<String>,
    ) -> PyResult<SubmissionReport> {
        let inputs = lab_inputs(labs)?;
        let part = journal_part(journal, resume, None, None)?;
        let opts = options(concurrency, use_bundles, bundle_size, progress, part);
        let inner = wait(py, self.core()?.submit_lab_inputs(crid, inputs, &opts))?;
        Ok(SubmissionReport { inner, lines: None })
    }

    /// `await client.asubmit_labs(...)`.
    #[pyo3(signature = (crid, labs, *, concurrency = 8, progress = None, use_bundles = false, bundle_size = 50, journal = None, resume = None))]
    fn asubmit_labs<'py>(
        &self,
        py: Python<'py>,
        crid: i64,
        labs: &Bound<'_, PyAny>,
        concurrency: i64,
        progress: Option<Py<PyAny>>,
        use_bundles: bool,
        bundle_size: i64,
        journal: Option<PathBuf>,
        resume: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inputs = lab_inputs(labs)?;
        let part = journal_part(journal, resume, None, None)?;
        let opts = options(concurrency, use_bundles, bundle_size, progress, part);
        let c = self.core()?.clone();
        awaitable(py, async move {
            let inner = c.submit_lab_inputs(crid, inputs, &opts).await?;
            Ok(SubmissionReport { inner, lines: None })
        })
    }

    /// `submit_labs` for a CSV file (`loinc,value,unit,effective` and optionally
    /// `reference_low,reference_high,comparator,status,display,crid`); report items carry the
    /// file's `line`.
    #[pyo3(signature = (crid, path, *, concurrency = 8, progress = None, use_bundles = false, bundle_size = 50, journal = None, resume = None))]
    fn submit_labs_csv(
        &self,
        py: Python<'_>,
        crid: i64,
        path: PathBuf,
        concurrency: i64,
        progress: Option<Py<PyAny>>,
        use_bundles: bool,
        bundle_size: i64,
        journal: Option<PathBuf>,
        resume: Option<String>,
    ) -> PyResult<SubmissionReport> {
        let core::CsvInputs { inputs, lines } = core::labs_csv_inputs(&path, crid).or_raise()?;
        let part = journal_part(journal, resume, Some(&path), Some(&lines))?;
        let opts = options(concurrency, use_bundles, bundle_size, progress, part);
        let inner = wait(py, self.core()?.submit_lab_inputs(crid, inputs, &opts))?;
        Ok(SubmissionReport {
            inner,
            lines: Some(lines),
        })
    }

    /// `await client.asubmit_labs_csv(...)`.
    #[pyo3(signature = (crid, path, *, concurrency = 8, progress = None, use_bundles = false, bundle_size = 50, journal = None, resume = None))]
    fn asubmit_labs_csv<'py>(
        &self,
        py: Python<'py>,
        crid: i64,
        path: PathBuf,
        concurrency: i64,
        progress: Option<Py<PyAny>>,
        use_bundles: bool,
        bundle_size: i64,
        journal: Option<PathBuf>,
        resume: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let core::CsvInputs { inputs, lines } = core::labs_csv_inputs(&path, crid).or_raise()?;
        let part = journal_part(journal, resume, Some(&path), Some(&lines))?;
        let opts = options(concurrency, use_bundles, bundle_size, progress, part);
        let c = self.core()?.clone();
        awaitable(py, async move {
            let inner = c.submit_lab_inputs(crid, inputs, &opts).await?;
            Ok(SubmissionReport {
                inner,
                lines: Some(lines),
            })
        })
    }

    /// Every Observation the server holds for `crid` (all pages), as dicts.
    fn observations(&self, py: Python<'_>, crid: i64) -> PyResult<JsonList> {
        wait(py, self.core()?.observations(crid)).map(JsonList)
    }

    /// `await client.aobservations(crid)`.
    fn aobservations<'py>(&self, py: Python<'py>, crid: i64) -> PyResult<Bound<'py, PyAny>> {
        let c = self.core()?.clone();
        awaitable(py, async move { c.observations(crid).await.map(JsonList) })
    }

    fn __repr__(&self) -> String {
        format!("<{:?}>", self.inner)
    }
}

/// The form 2402 labs: a list of `{"name", "unit", "loinc_codes", "molar_codes"}`.
#[pyfunction]
pub fn lab_catalog() -> Json {
    Json(core::lab_catalog_json())
}

/// The form 2402 lab a LOINC code belongs to, or None.
#[pyfunction]
pub fn lab_for_code(loinc: &str) -> Option<Json> {
    core::lab_for_code(loinc).map(|d| Json(d.to_json()))
}

/// The preset URLs of a CIBMTR environment (`"test"` or `"production"`):
/// `{"token_url", "api_base"}`.
#[pyfunction]
#[pyo3(signature = (environment = "test"))]
pub fn environment_urls<'py>(py: Python<'py>, environment: &str) -> PyResult<Bound<'py, PyAny>> {
    let e: Environment = environment.parse().or_raise()?;
    json_to_py(
        py,
        &json!({"token_url": e.token_url(), "api_base": e.api_base()}),
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<LabResult>()?;
    m.add_class::<LabSubmission>()?;
    m.add_class::<SubmissionReport>()?;
    m.add_class::<CibmtrClient>()?;
    m.add_function(wrap_pyfunction!(lab_catalog, m)?)?;
    m.add_function(wrap_pyfunction!(lab_for_code, m)?)?;
    m.add_function(wrap_pyfunction!(environment_urls, m)?)?;
    Ok(())
}
