//! The CIBMTR Direct FHIR Service API (core `cibmtr`): CRID registration, the de-identified
//! Patient, lab Observations for form 2402, bulk submission with progress, the lab catalog.
//!
//! A CRID is a 64-bit integer that can exceed 2^53, so it leaves as a decimal `string` and is
//! taken as a `string`, a `bigint`, or a `number` only while that number is still exact.
use std::sync::Arc;

use cibmtr_fhir::cibmtr::{self, Demographics, Environment, LabOptions, LabResult, SubmitOptions};
use cibmtr_fhir::journal::{BatchInfo, Journal, JournalPart};
use napi::Env;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::{Map, Value};

use crate::args::{self, Kind, text};
use crate::error::{CoreResult, ErrorInfo, OrThrow, invalid, settle};
use crate::fhir::{AUTH_FLOW, AuthFlow, FhirClient, Resource, provider_of, resources};
use crate::http::{self, HTTP_CONFIG, HttpConfig};

/// A CRID as JavaScript gives it (`Crid` in TypeScript: `string | bigint | number`).
pub type Crid = Either3<String, BigInt, f64>;

/// The `crid` argument, of a type that can be a CRID.
fn crid_arg(env: &Env, v: Unknown<'_>) -> Result<Crid> {
    args::arg(env, "crid", &Kind::Crid, v)
}

/// An object of fields or the first of the positional ones (`demographics`, `lab`).
const FIELDS_OR_TEXT: Kind = Kind::Either(&Kind::Object("an object of fields"), &Kind::Text);

/// The keys of [`SubmitLabsOptions`] and their JavaScript types.
const SUBMIT_LABS_OPTIONS: Kind = Kind::Options(
    "SubmitLabsOptions",
    &[
        ("concurrency", Kind::Number),
        ("useBundles", Kind::Bool),
        ("bundleSize", Kind::Number),
        ("progress", Kind::Function),
        ("journal", Kind::Text),
        ("resume", Kind::Text),
    ],
);

/// The CRID as the core's `i64`, refusing anything that is not a whole number exactly.
pub(crate) fn crid(value: Crid) -> CoreResult<i64> {
    match value {
        Either3::A(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid("crid", "must be a whole number (a decimal string)")),
        Either3::B(b) => match b.get_i64() {
            (v, true) => Ok(v),
            _ => Err(invalid("crid", "does not fit in 64 bits")),
        },
        Either3::C(n) => {
            // 2^53 - 1: above it a number may already have lost digits before it got here.
            const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE {
                Ok(n as i64)
            } else {
                Err(invalid(
                    "crid",
                    "is not an exact integer number; pass a CRID as a string or a bigint",
                ))
            }
        }
    }
}

/// The fields of `first` (an object), or the positional fields named in `positional` followed
/// by the entries of the trailing options object: the two call shapes the API allows, as the one
/// JSON object the core reads.
fn one_object(
    what: &str,
    first: Value,
    positional: Vec<(&str, Option<Value>)>,
    options: Option<Value>,
) -> CoreResult<Value> {
    if first.is_object() {
        if positional.iter().any(|(_, v)| v.is_some()) || options.is_some() {
            return Err(invalid(
                what,
                "give either one object or the positional arguments, not both",
            ));
        }
        return Ok(first);
    }
    let mut map = Map::new();
    let mut fields = vec![(positional_first(what), Some(first))];
    fields.extend(positional);
    for (k, v) in fields {
        if let Some(v) = v {
            map.insert(k.to_owned(), v);
        }
    }
    match options {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => map.extend(o),
        Some(_) => return Err(invalid("options", "must be an object")),
    }
    Ok(Value::Object(map))
}

fn positional_first(what: &str) -> &'static str {
    if what == "lab" { "loinc" } else { "firstName" }
}

/// A lab from `{ loinc, value, unit, effective, ... }`; `referenceRange: [low, high]` (the
/// API's name for the pair) is spread into the core's `referenceLow`/`referenceHigh`.
/// The labs array as JSON text, written by the engine's own `JSON.stringify`: one call, where
/// reading each lab through napi costs a call per property (10,000 labs: 3 ms instead of 33 ms
/// on the JavaScript thread). `JSON.stringify` reads objects as napi did (own enumerable
/// properties; `undefined` left out; `NaN` and `Infinity` become `null`, as they did), and also
/// honours `toJSON` (a `Date` becomes its ISO string). What it cannot write (a `BigInt`, a
/// cycle) is its own `TypeError`.
fn labs_json(env: &Env, labs: Unknown<'_>) -> Result<String> {
    let json: Object = env.get_global()?.get_named_property("JSON")?;
    let stringify: Function<Unknown, Option<String>> = json.get_named_property("stringify")?;
    Ok(stringify.call(labs)?.unwrap_or_else(|| "null".into()))
}

/// The labs `labs_json` wrote. Numbers are read back exactly (serde_json's `float_roundtrip`):
/// a value one unit in the last place off would give the lab another submission id than
/// the Python or Rust packages give it, and a re-run from another language would send it twice.
fn labs_from_json(text: &str) -> CoreResult<Vec<Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Array(labs)) => Ok(labs),
        _ => Err(invalid("labs", "must be an array of labs")),
    }
}

fn lab_from(mut v: Value) -> CoreResult<LabResult> {
    if let Some(map) = v.as_object_mut() {
        let key = ["referenceRange", "reference_range"]
            .into_iter()
            .find(|k| map.contains_key(*k));
        if let Some(key) = key {
            match map.remove(key) {
                Some(Value::Array(pair)) if pair.len() == 2 => {
                    map.insert("referenceLow".into(), pair[0].clone());
                    map.insert("referenceHigh".into(), pair[1].clone());
                }
                Some(Value::Null) | None => {}
                Some(_) => return Err(invalid("referenceRange", "must be [low, high]")),
            }
        }
    }
    LabResult::from_json(&v)
}

/// Options of `CibmtrClient`.
#[napi(object)]
#[derive(Default)]
pub struct CibmtrClientOptions {
    /// `test` (default) or `production`: picks the API base URL.
    #[napi(ts_type = "'test' | 'production'")]
    pub environment: Option<String>,
    /// Overrides the API base URL (e.g. the sandbox's `urls.cibmtrBase`).
    pub base_url: Option<String>,
    /// The FHIR root below the base, e.g. `r3` (default: the base itself).
    pub fhir_path: Option<String>,
    /// URI family of the CRID and transplant-centre systems (default `cibmtr`).
    #[napi(ts_type = "'cibmtr' | 'terminology'")]
    pub uri_family: Option<String>,
    /// FHIR release of the resources (default `STU3`, as the Direct FHIR API is).
    #[napi(ts_type = "FhirVersion")]
    pub fhir_version: Option<String>,
    /// How labs are checked against the form 2402 catalog.
    pub lab_options: Option<LabCheckOptions>,
    /// Attempts per lab when the server or network fails transiently (default 5).
    pub item_attempts: Option<u32>,
    /// Timeouts, a proxy, extra CA certificates and retry bounds for this client's requests.
    pub http: Option<HttpConfig>,
}

/// How labs are checked against the form 2402 catalog.
#[napi(object)]
#[derive(Default)]
pub struct LabCheckOptions {
    /// A LOINC code outside the catalog is an error (otherwise a warning).
    pub strict: Option<bool>,
    /// Convert values in another unit of the right dimension to the preferred unit, exactly,
    /// with a warning (otherwise only a warning).
    pub convert_units: Option<bool>,
}

/// Progress of `submitLabs`, reported after every item.
#[napi(object, object_from_js = false)]
pub struct Progress {
    pub done: u32,
    pub total: u32,
    pub created: u32,
    pub already_present: u32,
    pub failed: u32,
}

/// Options of `submitLabs`.
#[napi(object, object_to_js = false)]
pub struct SubmitLabsOptions {
    /// Requests in flight at once (default 8).
    pub concurrency: Option<u32>,
    /// Send transaction Bundles (for servers that accept them; default false).
    pub use_bundles: Option<bool>,
    /// Entries per Bundle, at most 50 (default 50).
    pub bundle_size: Option<u32>,
    /// Called on the JavaScript thread after every item.
    #[napi(ts_type = "(progress: Progress) => void")]
    pub progress: Option<ThreadsafeFunction<Progress, (), Progress, Status, false>>,
    /// A SQLite journal file recording every item before and after its request (the report's
    /// `batchId` names the batch).
    pub journal: Option<String>,
    /// A `batchId` of that journal to continue after an interruption: nothing the journal or the
    /// server already holds is sent again.
    pub resume: Option<String>,
}

/// The result of `submitLab`.
#[napi(object, object_from_js = false)]
pub struct LabSubmission {
    #[napi(ts_type = "'created' | 'already_present'")]
    pub status: String,
    /// The server's Observation id.
    pub id: String,
    /// The content-derived identifier the Observation carries.
    pub submission_id: String,
    /// Non-fatal remarks (a code outside the catalog, a unit other than the preferred one).
    pub warnings: Vec<String>,
}

/// The outcome of one lab of a batch.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    /// Position in the input, from 0.
    pub index: u32,
    #[napi(ts_type = "'created' | 'already_present' | 'failed'")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    pub warnings: Vec<String>,
    /// Why the item failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The line of the CSV file the item came from (`submitLabsCsv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// Every input item of a batch, accounted for.
#[napi(object, object_from_js = false, object_to_js = false)]
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmissionReport {
    pub total: u32,
    pub created: u32,
    pub already_present: u32,
    pub failed: u32,
    pub elapsed_ms: f64,
    /// The journal batch the submission was recorded in (with the `journal` option).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// One per input item, in input order.
    pub items: Vec<ItemResult>,
}

impl SubmissionReport {
    /// The core's report; `lines[i]` is the CSV line of input `i`, when the input was a file.
    fn new(r: cibmtr::SubmissionReport, lines: Option<&[usize]>) -> Self {
        SubmissionReport {
            total: r.total() as u32,
            created: r.created as u32,
            already_present: r.already_present as u32,
            failed: r.failed as u32,
            elapsed_ms: r.elapsed.as_secs_f64() * 1000.0,
            batch_id: r.batch_id,
            items: r
                .items
                .into_iter()
                .map(|i| ItemResult {
                    index: i.index as u32,
                    status: i.status.as_str().to_owned(),
                    line: lines.and_then(|l| l.get(i.index)).map(|l| *l as u32),
                    id: i.id,
                    submission_id: i.submission_id,
                    warnings: i.warnings,
                    error: i.error.as_ref().map(ErrorInfo::from_core),
                })
                .collect(),
        }
    }
}

// The report reaches JavaScript as one JSON text that `JSON.parse` turns into plain objects:
// the same objects napi's field-by-field conversion gives (`None` fields left out, as napi
// leaves them), built in a fraction of the time; for a batch of thousands, one napi call per
// property of every item was a good part of what the binding added to the core's time.
impl ToNapiValue for SubmissionReport {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        // Plain strings, numbers and the server's JSON: serialising cannot fail.
        let text = serde_json::to_string(&val).map_err(|e| Error::from_reason(e.to_string()))?;
        let env = Env::from_raw(env);
        let json: Object = env.get_global()?.get_named_property("JSON")?;
        let parse: Function<String, Unknown> = json.get_named_property("parse")?;
        Ok(parse.call(text)?.raw())
    }
}

/// The journal and batch to resume of a submission's options.
type JournalChoice = Option<(String, Option<String>)>;

/// The core's options of a bulk submission (the progress callback is called on the JavaScript
/// thread), and the journal choice, resolved by [`journal_part`] once the inputs are known.
fn submit_options(
    options: Option<SubmitLabsOptions>,
) -> CoreResult<(SubmitOptions, JournalChoice)> {
    let mut opts = SubmitOptions::default();
    let Some(o) = options else {
        return Ok((opts, None));
    };
    let journal = match (o.journal, o.resume) {
        (Some(path), resume) => Some((path, resume)),
        (None, Some(_)) => {
            return Err(invalid(
                "resume",
                "needs the journal option: the journal file the batch is in",
            ));
        }
        (None, None) => None,
    };
    if let Some(c) = o.concurrency {
        opts.concurrency = c as usize;
    }
    if let Some(u) = o.use_bundles {
        opts.use_bundles = u;
    }
    if let Some(n) = o.bundle_size {
        opts.bundle_size = n as usize;
    }
    if let Some(callback) = o.progress {
        opts.progress = Some(Arc::new(move |p: cibmtr::Progress| {
            let progress = Progress {
                done: p.done as u32,
                total: p.total as u32,
                created: p.created as u32,
                already_present: p.already_present as u32,
                failed: p.failed as u32,
            };
            callback.call(progress, ThreadsafeFunctionCallMode::NonBlocking);
        }));
    }
    Ok((opts, journal))
}

/// The journal batch a submission records into (numbered by CSV line for a file).
fn journal_part(
    choice: JournalChoice,
    source: &str,
    lines: Option<&[usize]>,
) -> CoreResult<Option<JournalPart>> {
    let Some((path, resume)) = choice else {
        return Ok(None);
    };
    let journal = Journal::open(path)?;
    let batch = match resume {
        Some(id) => journal.resume_batch(&id)?,
        None => journal.start_batch(&BatchInfo {
            source: Some(source.to_owned()),
            ..Default::default()
        })?,
    };
    Ok(Some(match lines {
        Some(l) => batch.numbered(l.iter().map(|&n| n as u64).collect()),
        None => batch.into(),
    }))
}

/// A form 2402 lab of the catalog.
#[napi(object, object_from_js = false)]
pub struct LabDefinition {
    pub name: String,
    /// The preferred UCUM unit.
    pub unit: String,
    /// Candidate LOINC codes.
    pub loinc_codes: Vec<String>,
    /// Codes whose values are moles per volume, not the preferred mass unit.
    pub molar_codes: Vec<String>,
}

/// The form 2402 labs: preferred unit and candidate LOINC codes.
#[napi]
pub fn lab_catalog() -> Vec<LabDefinition> {
    cibmtr::lab_catalog()
        .iter()
        .map(|d| LabDefinition {
            name: d.name.clone(),
            unit: d.unit.clone(),
            loinc_codes: d.loinc_codes.clone(),
            molar_codes: d.molar_codes.clone(),
        })
        .collect()
}

/// The URLs a CIBMTR environment is preset with.
#[napi(object, object_from_js = false)]
pub struct EnvironmentUrls {
    /// The Okta token URL for the password grant.
    pub token_url: String,
    /// The Direct FHIR Service API base.
    pub api_base: String,
}

/// The preset URLs of `test` or `production`.
#[napi(ts_args_type = "name: 'test' | 'production'")]
pub fn environment(env: Env, name: String) -> Result<EnvironmentUrls> {
    let e: Environment = name.parse().or_throw(&env)?;
    Ok(EnvironmentUrls {
        token_url: e.token_url().to_owned(),
        api_base: e.api_base().to_owned(),
    })
}

/// A client of CIBMTR's Direct FHIR Service API for one transplant centre (CCN).
#[napi]
pub struct CibmtrClient {
    inner: cibmtr::CibmtrClient,
}

impl CibmtrClient {
    pub(crate) fn wrap(inner: cibmtr::CibmtrClient) -> Self {
        CibmtrClient { inner }
    }
}

#[napi]
impl CibmtrClient {
    #[napi(
        constructor,
        ts_args_type = "ccn: string, auth: AuthFlow, options?: CibmtrClientOptions"
    )]
    pub fn new(
        env: Env,
        ccn: Unknown<'_>,
        auth: Unknown<'_>,
        options: Option<Unknown<'_>>,
    ) -> Result<Self> {
        const OPTIONS: Kind = Kind::Options(
            "CibmtrClientOptions",
            &[
                ("environment", Kind::Text),
                ("baseUrl", Kind::Text),
                ("fhirPath", Kind::Text),
                ("uriFamily", Kind::Text),
                ("fhirVersion", Kind::Text),
                (
                    "labOptions",
                    Kind::Options(
                        "LabCheckOptions",
                        &[("strict", Kind::Bool), ("convertUnits", Kind::Bool)],
                    ),
                ),
                ("itemAttempts", Kind::Number),
                ("http", HTTP_CONFIG),
            ],
        );
        let ccn = text(&env, "ccn", ccn)?;
        let auth: AuthFlow = args::arg(&env, "auth", &AUTH_FLOW, auth)?;
        let o: CibmtrClientOptions = args::options(&env, &OPTIONS, options)?;
        let mut b = cibmtr::CibmtrClient::builder(ccn, &provider_of(&auth));
        if let Some(e) = o.environment {
            b = b.environment(e.parse().or_throw(&env)?);
        }
        if let Some(u) = o.base_url {
            b = b.base_url(u);
        }
        if let Some(p) = o.fhir_path {
            b = b.fhir_path(p);
        }
        if let Some(f) = o.uri_family {
            b = b.uri_family(f.parse().or_throw(&env)?);
        }
        if let Some(v) = o.fhir_version {
            b = b.fhir_version(v.parse().or_throw(&env)?);
        }
        if let Some(l) = o.lab_options {
            b = b.lab_options(LabOptions {
                strict: l.strict.unwrap_or(false),
                convert_units: l.convert_units.unwrap_or(false),
            });
        }
        if let Some(n) = o.item_attempts {
            b = b.item_attempts(n);
        }
        if let Some(h) = http::client(o.http).or_throw(&env)? {
            b = b.http_client(h);
        }
        Ok(CibmtrClient {
            inner: b.build().or_throw(&env)?,
        })
    }

    /// The centre number.
    #[napi(getter)]
    pub fn ccn(&self) -> String {
        self.inner.ccn().to_owned()
    }

    /// The FHIR client behind the Patient and Observation calls.
    #[napi(getter)]
    pub fn fhir(&self) -> FhirClient {
        FhirClient::wrap(self.inner.fhir().clone())
    }

    /// Registers (or looks up) a recipient and returns the CRID as a decimal string. Give one
    /// object (`{ firstName, lastName, birthDate, gender, ssn, race, ethnicity, ... }`) or the
    /// four required fields followed by an object of the optional ones. Validated before
    /// anything is sent.
    #[napi(
        ts_args_type = "...demographics: [demographics: Demographics] | [firstName: string, lastName: string, birthDate: string, gender: string, options?: DemographicsOptions]"
    )]
    pub fn register_crid(
        &self,
        env: Env,
        first: Unknown<'_>,
        last_name: Option<Unknown<'_>>,
        birth_date: Option<Unknown<'_>>,
        gender: Option<Unknown<'_>>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<String>> {
        let first: Value = args::arg(&env, "demographics", &FIELDS_OR_TEXT, first)?;
        let positional = |name, v| args::opt::<Value>(&env, name, &Kind::Text, v);
        let last_name = positional("lastName", last_name)?;
        let birth_date = positional("birthDate", birth_date)?;
        let gender = positional("gender", gender)?;
        let options = args::opt(
            &env,
            "options",
            &Kind::Object("DemographicsOptions"),
            options,
        )?;
        let client = self.inner.clone();
        settle(&env, async move {
            let demographics = one_object(
                "demographics",
                first,
                vec![
                    ("lastName", last_name),
                    ("birthDate", birth_date),
                    ("gender", gender),
                ],
                options,
            )
            .and_then(|v| Demographics::from_json(&v))?;
            Ok(client.register_crid(&demographics).await?.to_string())
        })
    }

    /// The id of the recipient's de-identified Patient, created only if the server has none.
    #[napi(ts_args_type = "crid: Crid")]
    pub fn ensure_patient(&self, env: Env, crid: Unknown<'_>) -> Result<AsyncBlock<String>> {
        let crid = crid_arg(&env, crid)?;
        let client = self.inner.clone();
        settle(&env, async move {
            client.ensure_patient(self::crid(crid)?).await
        })
    }

    /// The recipient's Patient if the server has one, else `null`.
    #[napi(
        ts_args_type = "crid: Crid",
        ts_return_type = "Promise<Resource | null>"
    )]
    pub fn find_patient(&self, env: Env, crid: Crid) -> Result<AsyncBlock<Option<Resource>>> {
        let client = self.inner.clone();
        settle(&env, async move {
            let found = client.find_patient(self::crid(crid)?).await?;
            Ok(found.map(Resource::from))
        })
    }

    /// Submits one lab unless an Observation with the same content is already there. Give one
    /// object (`{ loinc, value, unit, effective, referenceRange, comparator, status, display }`)
    /// or `loinc, value, unit, effective` followed by an object of the optional fields.
    #[napi(
        ts_args_type = "crid: Crid, ...lab: [lab: LabInput] | [loinc: string, value: number | string, unit: string, effective: string, options?: LabInputOptions]"
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn submit_lab(
        &self,
        env: Env,
        crid: Unknown<'_>,
        lab: Unknown<'_>,
        value: Option<Value>,
        unit: Option<Value>,
        effective: Option<Value>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<LabSubmission>> {
        let crid = crid_arg(&env, crid)?;
        let lab: Value = args::arg(&env, "lab", &FIELDS_OR_TEXT, lab)?;
        let options = args::opt(&env, "options", &Kind::Object("LabInputOptions"), options)?;
        let client = self.inner.clone();
        settle(&env, async move {
            let crid = self::crid(crid)?;
            let fields = vec![("value", value), ("unit", unit), ("effective", effective)];
            let lab = one_object("lab", lab, fields, options).and_then(lab_from)?;
            let s = client.submit_lab(crid, &lab).await?;
            Ok(LabSubmission {
                status: s.status.as_str().to_owned(),
                id: s.id,
                submission_id: s.submission_id,
                warnings: s.warnings,
            })
        })
    }

    /// Submits many labs for one recipient, `concurrency` at a time. Never stops because one
    /// item failed: the report accounts for every input item. Items already on the server are
    /// reported as already present and not sent. `labs` may also be the path of a CSV file
    /// (as `submitLabsCsv`).
    #[napi(ts_args_type = "crid: Crid, labs: LabInput[] | string, options?: SubmitLabsOptions")]
    pub fn submit_labs(
        &self,
        env: Env,
        crid: Unknown<'_>,
        labs: Unknown<'_>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<SubmissionReport>> {
        const LABS: Kind = Kind::Either(&Kind::Object("an array of labs"), &Kind::Text);
        let crid = crid_arg(&env, crid)?;
        let labs: Either<String, Unknown<'_>> = args::arg(&env, "labs", &LABS, labs)?;
        let options = args::opt(&env, "options", &SUBMIT_LABS_OPTIONS, options)?;
        let labs = match labs {
            Either::A(path) => return self.labs_csv(env, crid, path, options),
            Either::B(labs) if labs.is_array()? => labs_json(&env, labs)?,
            // Not an array: the type error napi's own reading gives.
            Either::B(labs) => {
                let _: Vec<Value> = args::arg(&env, "labs", &LABS, labs)?;
                return Err(Error::from_reason("labs: not an array"));
            }
        };
        let (mut opts, journal) = submit_options(options).or_throw(&env)?;
        let client = self.inner.clone();
        settle(&env, async move {
            let crid = self::crid(crid)?;
            let inputs = match cibmtr::labs_from_json_text(&labs) {
                // The common shape, read without a JSON tree per lab.
                Some(labs) => labs.into_iter().map(Ok).collect(),
                // A lab that cannot be read is a failed item of the report, like a bad CSV row.
                None => labs_from_json(&labs)?.into_iter().map(lab_from).collect(),
            };
            opts.journal = journal_part(journal, "node", None)?;
            let report = client.submit_lab_inputs(crid, inputs, &opts).await?;
            Ok(SubmissionReport::new(report, None))
        })
    }

    /// `submitLabs` for a CSV file (`loinc,value,unit,effective` and optionally
    /// `reference_low,reference_high,comparator,status,display,crid`): every row is in the
    /// report with its `line`; a row that cannot be read, or whose `crid` is another
    /// recipient's, is a failed item.
    #[napi(ts_args_type = "crid: Crid, path: string, options?: SubmitLabsOptions")]
    pub fn submit_labs_csv(
        &self,
        env: Env,
        crid: Unknown<'_>,
        path: Unknown<'_>,
        options: Option<Unknown<'_>>,
    ) -> Result<AsyncBlock<SubmissionReport>> {
        let crid = crid_arg(&env, crid)?;
        let path = text(&env, "path", path)?;
        let options = args::opt(&env, "options", &SUBMIT_LABS_OPTIONS, options)?;
        self.labs_csv(env, crid, path, options)
    }
}

impl CibmtrClient {
    fn labs_csv(
        &self,
        env: Env,
        crid: Crid,
        path: String,
        options: Option<SubmitLabsOptions>,
    ) -> Result<AsyncBlock<SubmissionReport>> {
        let (mut opts, journal) = submit_options(options).or_throw(&env)?;
        let client = self.inner.clone();
        settle(&env, async move {
            let crid = self::crid(crid)?;
            let csv = cibmtr::labs_csv_inputs(path.as_ref(), crid)?;
            opts.journal = journal_part(journal, &path, Some(&csv.lines))?;
            let report = client.submit_lab_inputs(crid, csv.inputs, &opts).await?;
            Ok(SubmissionReport::new(report, Some(&csv.lines)))
        })
    }
}

#[napi]
impl CibmtrClient {
    /// Every Observation the server holds for the recipient (all pages).
    #[napi(ts_args_type = "crid: Crid", ts_return_type = "Promise<Resource[]>")]
    pub fn observations(&self, env: Env, crid: Crid) -> Result<AsyncBlock<Vec<Resource>>> {
        let client = self.inner.clone();
        settle(&env, async move {
            Ok(resources(client.observations(self::crid(crid)?).await?))
        })
    }

    #[napi(js_name = "toString")]
    pub fn describe(&self) -> String {
        format!(
            "CibmtrClient {{ ccn: {:?}, fhir: {:?} }}",
            self.inner.ccn(),
            self.inner.fhir()
        )
    }

    #[napi(js_name = "toJSON")]
    pub fn to_json(&self) -> String {
        self.describe()
    }
}
