//! [`CibmtrClient`]: the Direct FHIR Service workflow — CRID, the de-identified Patient, lab
//! Observations one by one or in bulk — with nothing created twice.
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::demographics::{Demographics, parse_crid_response};
use super::labs::{LabOptions, LabResult};
use super::resources::{
    LabObservation, observation_search_by_crid, observation_search_by_submission_id,
    observation_submission_id, patient_matches, patient_resource, patient_search_params,
    submission_id,
};
use super::systems::{Ccn, SUBMISSION_ID_SYSTEM, UriFamily};
use crate::auth::TokenProvider;
use crate::error::{Error, Result};
use crate::fhir::{FhirClient, FhirVersion};
use crate::http::HttpClient;
use crate::journal::{JournalPart, JournalState, NewItem, Recorder};

/// A CIBMTR environment, preset with the guide's URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Environment {
    /// The test environment (`dev-api.nmdp.org`, Okta preview).
    #[default]
    Test,
    /// Production (`api.nmdp.org`, Okta).
    Production,
}

impl Environment {
    /// The Okta token URL the guide gives for this environment.
    pub fn token_url(self) -> &'static str {
        match self {
            Environment::Test => {
                "https://nmdp.oktapreview.com/oauth2/ausaexcazhLhxKnJs0h7/v1/token"
            }
            Environment::Production => "https://nmdp.okta.com/oauth2/ausaexcazhLhxKnJs0h7/v1/token",
        }
    }
    /// The Direct FHIR Service API base URL (`{base}/CRID`, `{base}/Patient`, ...).
    pub fn api_base(self) -> &'static str {
        match self {
            Environment::Test => "https://dev-api.nmdp.org/cibmtrehrclientbackendexttest/v1",
            Environment::Production => "https://api.nmdp.org/cibmtrehrclientbackend/v1",
        }
    }
}

impl std::str::FromStr for Environment {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "test" => Ok(Environment::Test),
            "production" | "prod" => Ok(Environment::Production),
            _ => Err(Error::validation(
                "environment",
                "must be test or production",
            )),
        }
    }
}

/// What happened to one lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemStatus {
    /// The server created the Observation.
    Created,
    /// An Observation with the same content was already on the server (or earlier in the same
    /// batch); nothing was sent.
    AlreadyPresent,
    /// Not submitted: the error says why.
    Failed,
}

impl ItemStatus {
    /// `created`, `already_present` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Created => "created",
            ItemStatus::AlreadyPresent => "already_present",
            ItemStatus::Failed => "failed",
        }
    }
}

/// The outcome of one lab of a submission.
#[derive(Debug, Clone)]
pub struct ItemResult {
    /// Position in the input, from 0.
    pub index: usize,
    pub status: ItemStatus,
    /// The server's Observation id (created or found).
    pub id: Option<String>,
    /// The content-derived identifier the Observation carries.
    pub submission_id: Option<String>,
    pub error: Option<Error>,
    /// Non-fatal remarks: a code outside the form 2402 catalog, a unit conversion, ...
    pub warnings: Vec<String>,
}

impl ItemResult {
    /// This item as JSON (see [`SubmissionReport::to_json`]).
    pub fn to_json(&self) -> Value {
        to_value(self)
    }
}

/// An item as JSON, with where it came from: the recipient's CRID (as a string) and the line of
/// the CSV file it was read from, when known. Its `Serialize` writes the keys in the order
/// of a [`Value`] map (sorted), so streaming it and printing its [`to_json`](ItemResult::to_json)
/// give the same text.
#[derive(Debug, Clone, Copy)]
pub struct ItemJson<'a> {
    pub item: &'a ItemResult,
    pub crid: Option<i64>,
    pub line: Option<usize>,
}

impl ItemJson<'_> {
    /// This item, with its CRID and line, as a [`Value`].
    pub fn to_json(&self) -> Value {
        to_value(self)
    }
}

impl serde::Serialize for ItemJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let i = self.item;
        let mut m = s.serialize_map(None)?;
        if let Some(crid) = self.crid {
            m.serialize_entry("crid", &Text(&crid))?;
        }
        if let Some(e) = &i.error {
            m.serialize_entry("error", &ErrorJson(e))?;
        }
        m.serialize_entry("id", &i.id)?;
        m.serialize_entry("index", &i.index)?;
        if let Some(line) = self.line {
            m.serialize_entry("line", &line)?;
        }
        m.serialize_entry("status", i.status.as_str())?;
        m.serialize_entry("submission_id", &i.submission_id)?;
        m.serialize_entry("warnings", &i.warnings)?;
        m.end()
    }
}

impl serde::Serialize for ItemResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ItemJson {
            item: self,
            crid: None,
            line: None,
        }
        .serialize(s)
    }
}

/// An error as JSON: `kind` (the stable code), `message`, and the fields a caller branches on.
pub fn error_json(e: &Error) -> Value {
    to_value(ErrorJson(e))
}

/// [`error_json`] as `Serialize`: the keys in sorted order, as a [`Value`] map has them.
struct ErrorJson<'a>(&'a Error);

impl serde::Serialize for ErrorJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        if let Error::Auth { error, .. } = e {
            m.serialize_entry("error", error)?;
        }
        if let Error::Validation { field, .. } = e {
            m.serialize_entry("field", field)?;
        }
        m.serialize_entry("kind", e.kind().code())?;
        m.serialize_entry("message", &Text(e))?;
        if let Error::RateLimited {
            retry_after: Some(w),
        } = e
        {
            m.serialize_entry("retry_after", &w.as_secs_f64())?;
        }
        if let Error::Validation { rule, .. } = e {
            m.serialize_entry("rule", rule)?;
        }
        if let Error::Http { status, .. } = e {
            m.serialize_entry("status", status)?;
        }
        m.end()
    }
}

/// A `Display` value as a JSON string, written without an intermediate `String`.
struct Text<'a, T: std::fmt::Display>(&'a T);

impl<T: std::fmt::Display> serde::Serialize for Text<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// `value` as a [`Value`]: the reports' `Serialize` impls write string keys only, so this cannot
/// fail.
fn to_value(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Every input item of a bulk submission, accounted for.
#[derive(Debug, Clone, Default)]
pub struct SubmissionReport {
    /// One entry per input item, in input order.
    pub items: Vec<ItemResult>,
    pub created: usize,
    pub already_present: usize,
    pub failed: usize,
    pub elapsed: Duration,
    /// The journal batch the submission was recorded in, if any.
    pub batch_id: Option<String>,
}

impl SubmissionReport {
    /// Total number of input items.
    pub fn total(&self) -> usize {
        self.items.len()
    }

    /// The report as JSON: counts, and one object per item with `index`, `status`, `id`,
    /// `submission_id`, `warnings` and, for failures, `error` (`kind`, `message` and the `field`
    /// of a validation error). The shape every binding and the CLI share.
    /// Streaming it (`serde_json::to_writer`, `to_string`) gives the same text without the
    /// [`Value`] tree.
    pub fn to_json(&self) -> Value {
        to_value(self)
    }
    fn count(&mut self) {
        self.created = self.tally(ItemStatus::Created);
        self.already_present = self.tally(ItemStatus::AlreadyPresent);
        self.failed = self.tally(ItemStatus::Failed);
    }
    fn tally(&self, s: ItemStatus) -> usize {
        self.items.iter().filter(|i| i.status == s).count()
    }
}

impl serde::Serialize for SubmissionReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("already_present", &self.already_present)?;
        m.serialize_entry("batch_id", &self.batch_id)?;
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("elapsed_ms", &(self.elapsed.as_millis() as u64))?;
        m.serialize_entry("failed", &self.failed)?;
        m.serialize_entry("items", &self.items)?;
        m.serialize_entry("total", &self.total())?;
        m.end()
    }
}

/// Progress of a bulk submission, reported after every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub created: usize,
    pub already_present: usize,
    pub failed: usize,
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options of [`CibmtrClient::submit_labs`].
#[derive(Clone)]
pub struct SubmitOptions {
    /// Requests in flight at once (default 8).
    pub concurrency: usize,
    /// Send transaction Bundles of up to [`bundle_size`](Self::bundle_size) Observations
    /// (later versions of the API accept them; off by default because the guide's does not).
    pub use_bundles: bool,
    /// Entries per Bundle, at most 50.
    pub bundle_size: usize,
    /// Called after every item, from the calling thread or one of the runtime's workers.
    pub progress: Option<ProgressFn>,
    /// Record the submission in this journal batch, before and after each request; a resumed
    /// batch ([`Journal::resume_batch`](crate::journal::Journal::resume_batch)) sends nothing
    /// the journal or the server already holds.
    pub journal: Option<JournalPart>,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            concurrency: 8,
            use_bundles: false,
            bundle_size: 50,
            progress: None,
            journal: None,
        }
    }
}

impl fmt::Debug for SubmitOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitOptions")
            .field("concurrency", &self.concurrency)
            .field("use_bundles", &self.use_bundles)
            .field("bundle_size", &self.bundle_size)
            .field("progress", &self.progress.is_some())
            .field("journal", &self.journal.as_ref().map(|j| j.batch().id()))
            .finish()
    }
}

/// The result of [`CibmtrClient::submit_lab`].
#[derive(Debug, Clone, PartialEq)]
pub struct LabSubmission {
    /// `Created` or `AlreadyPresent`.
    pub status: ItemStatus,
    /// The server's Observation id.
    pub id: String,
    pub submission_id: String,
    pub warnings: Vec<String>,
}

/// A client of CIBMTR's Direct FHIR Service API for one transplant centre (CCN).
///
/// ```no_run
/// # async fn demo() -> cibmtr_fhir::Result<()> {
/// use cibmtr_fhir::auth::PasswordGrant;
/// use cibmtr_fhir::cibmtr::{CibmtrClient, Demographics, Environment, LabResult};
/// let auth = PasswordGrant::builder(Environment::Test.token_url(), "id", "secret", "user", "pw")
///     .scope("cibmtr_fhir")
///     .build()?;
/// let client = CibmtrClient::builder("12345", &auth).environment(Environment::Test).build()?;
/// let crid = client
///     .register_crid(&Demographics::new("Jane", "Doe", "1970-01-31", "F"))
///     .await?;
/// let lab = LabResult::new("718-7", 12.5, "g/dL", "2024-05-01T08:30:00-05:00");
/// let result = client.submit_lab(crid, &lab).await?; // created, or already present
/// # let _ = result; Ok(()) }
/// ```
#[derive(Clone)]
pub struct CibmtrClient {
    inner: Arc<Inner>,
}

struct Inner {
    ccn: Ccn,
    family: UriFamily,
    version: FhirVersion,
    lab_options: LabOptions,
    /// `{base}`: the CRID service.
    api: FhirClient,
    /// `{base}` or `{base}/r3`: Patient and Observation.
    fhir: FhirClient,
    /// One Patient lookup per CRID, however many callers ask at once.
    patients: Mutex<HashMap<i64, Arc<OnceCell<String>>>>,
    item_attempts: u32,
}

impl fmt::Debug for CibmtrClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CibmtrClient")
            .field("ccn", &self.inner.ccn.as_str())
            .field("fhir", &self.inner.fhir.base_url())
            .field("uri_family", &self.inner.family)
            .field("fhir_version", &self.inner.version)
            .finish()
    }
}

/// Builds a [`CibmtrClient`].
pub struct CibmtrClientBuilder {
    ccn: String,
    auth: TokenProvider,
    environment: Environment,
    base_url: Option<String>,
    fhir_path: Option<String>,
    family: UriFamily,
    version: FhirVersion,
    lab_options: LabOptions,
    http: Option<HttpClient>,
    item_attempts: u32,
}

impl CibmtrClientBuilder {
    /// Test (default) or production: picks the API base URL.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }
    /// Overrides the API base URL (e.g. the sandbox's).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
    /// The FHIR root below the base: `None` (the base itself, default) or e.g. `"r3"`.
    pub fn fhir_path(mut self, path: impl Into<String>) -> Self {
        let p: String = path.into();
        self.fhir_path = Some(p.trim_matches('/').to_owned()).filter(|p| !p.is_empty());
        self
    }
    /// The URI family of the CRID identifier and transplant-centre security systems.
    pub fn uri_family(mut self, family: UriFamily) -> Self {
        self.family = family;
        self
    }
    /// The FHIR release of the resources (STU3 by default, as the Direct FHIR API is).
    pub fn fhir_version(mut self, version: FhirVersion) -> Self {
        self.version = version;
        self
    }
    /// Strict mode (a code outside the form 2402 catalog is an error) and unit conversion.
    pub fn lab_options(mut self, options: LabOptions) -> Self {
        self.lab_options = options;
        self
    }
    /// The HTTP client (timeouts, proxy, CAs, retry bounds).
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }
    /// Attempts per lab when the server or network fails transiently (default 5).
    pub fn item_attempts(mut self, attempts: u32) -> Self {
        self.item_attempts = attempts.max(1);
        self
    }
    pub fn build(self) -> Result<CibmtrClient> {
        let ccn = Ccn::parse(&self.ccn)?;
        let base = self
            .base_url
            .unwrap_or_else(|| self.environment.api_base().to_owned());
        let base = base.trim_end_matches('/').to_owned();
        let http = self.http.unwrap_or_else(HttpClient::shared);
        let api = FhirClient::builder(&base)
            .auth(&self.auth)
            .fhir_version(self.version)
            .http_client(http.clone())
            .build()?;
        let fhir_base = match &self.fhir_path {
            Some(p) => format!("{base}/{p}"),
            None => base,
        };
        let fhir = FhirClient::builder(fhir_base)
            .auth(&self.auth)
            .fhir_version(self.version)
            .http_client(http)
            .build()?;
        Ok(CibmtrClient {
            inner: Arc::new(Inner {
                ccn,
                family: self.family,
                version: self.version,
                lab_options: self.lab_options,
                api,
                fhir,
                patients: Mutex::new(HashMap::new()),
                item_attempts: self.item_attempts,
            }),
        })
    }
}

/// Whether a failed request may have had no effect or may be repeated after a check: network
/// trouble, rate limits and server-side 5xx are worth another attempt; the rest is final.
fn transient(e: &Error) -> bool {
    match e {
        Error::Network { .. } | Error::RateLimited { .. } => true,
        Error::Http { status, .. } => *status >= 500 || *status == 408,
        _ => false,
    }
}

fn item_wait(e: &Error, attempt: u32) -> Duration {
    match e {
        Error::RateLimited {
            retry_after: Some(w),
        } => *w,
        _ => crate::http::backoff(attempt),
    }
}

/// The wait before looking for what a failed write may have created. A write the server may
/// still be working on (the SDK stopped waiting, or a gateway did) gets as long again as the
/// request timeout to finish: looked for sooner, it would be missed and sent a second time,
/// and the server would then store both. (A server slower than that can still store a second
/// copy; only a server-side idempotent create could rule that out.)
fn settle_wait(e: &Error, attempt: u32, http: &HttpClient) -> Duration {
    let wait = item_wait(e, attempt);
    if e.may_still_be_processing() {
        wait.max(http.config().timeout)
    } else {
        wait
    }
}

impl CibmtrClient {
    /// A client for the centre `ccn` (5 digits) authenticating with `auth`.
    pub fn builder(ccn: impl Into<String>, auth: &TokenProvider) -> CibmtrClientBuilder {
        CibmtrClientBuilder {
            ccn: ccn.into(),
            auth: auth.clone(),
            environment: Environment::default(),
            base_url: None,
            fhir_path: None,
            family: UriFamily::default(),
            version: FhirVersion::Stu3,
            lab_options: LabOptions::default(),
            http: None,
            item_attempts: 5,
        }
    }

    /// The centre number.
    pub fn ccn(&self) -> &str {
        self.inner.ccn.as_str()
    }

    /// The FHIR client behind Patient and Observation calls.
    pub fn fhir(&self) -> &FhirClient {
        &self.inner.fhir
    }

    /// Registers (or looks up) a recipient and returns the CRID. The demographics are validated
    /// before anything is sent. The CRID service is a PUT: the same demographics give the same
    /// CRID, so a retry is harmless.
    pub async fn register_crid(&self, demographics: &Demographics) -> Result<i64> {
        let today = chrono::Local::now().date_naive();
        let body = demographics.crid_request(&self.inner.ccn, today)?;
        let answer = self.inner.api.put_json("CRID", &body).await?;
        parse_crid_response(&answer)
    }

    /// The id of the recipient's de-identified Patient, created only if the server has none:
    /// searched by security label and CRID first, searched again after any failure whose effect
    /// is unknown, and looked up once per CRID however many tasks ask at once.
    pub async fn ensure_patient(&self, crid: i64) -> Result<String> {
        if crid <= 0 {
            return Err(Error::validation("crid", "must be a positive number"));
        }
        let cell = {
            let mut map = self.inner.patients.lock().unwrap();
            map.entry(crid).or_default().clone()
        };
        cell.get_or_try_init(|| self.find_or_create_patient(crid))
            .await
            .cloned()
    }

    /// The Patient for `crid` if the server has one.
    pub async fn find_patient(&self, crid: i64) -> Result<Option<Value>> {
        let ccn = &self.inner.ccn;
        // Our family first; then the other, since servers answer in either.
        for family in [self.inner.family, other_family(self.inner.family)] {
            let found = self
                .inner
                .fhir
                .search_all("Patient", &pairs(&patient_search_params(crid, ccn, family)))
                .await?;
            if let Some(p) = found.into_iter().find(|p| patient_matches(p, crid, ccn)) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    async fn find_or_create_patient(&self, crid: i64) -> Result<String> {
        let resource = patient_resource(crid, &self.inner.ccn, self.inner.family);
        let mut attempt = 0;
        loop {
            let result = async {
                if let Some(p) = self.find_patient(crid).await? {
                    return resource_id(&p);
                }
                let created = self.inner.fhir.create(&resource).await?;
                resource_id(&created)
            }
            .await;
            match result {
                Err(e) if transient(&e) && attempt + 1 < self.inner.item_attempts => {
                    tokio::time::sleep(settle_wait(&e, attempt, self.inner.fhir.http())).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Submits one lab result unless an Observation with the same content is already there.
    pub async fn submit_lab(&self, crid: i64, lab: &LabResult) -> Result<LabSubmission> {
        let checked = lab.check(&self.inner.lab_options)?;
        let patient_id = self.ensure_patient(crid).await?;
        let sid = submission_id(&checked.lab, crid, &self.inner.ccn);
        let body = self.observation(&checked.lab, &sid, &patient_id).to_body();
        let (status, id) = self.submit_checked(&body, &sid, true).await?;
        Ok(LabSubmission {
            status,
            id,
            submission_id: sid,
            warnings: checked.warnings,
        })
    }

    /// Posts `obs` unless an Observation carrying `sid` is on the server. `check_first` is false
    /// when the caller has just listed the server's identifiers; after any failure whose effect
    /// is unknown the server is always checked again before another POST.
    async fn submit_checked(
        &self,
        body: &Bytes,
        sid: &str,
        mut check_first: bool,
    ) -> Result<(ItemStatus, String)> {
        let mut attempt = 0;
        // Whether an earlier POST of ours may have been processed although its answer was lost:
        // then finding the identifier means we created it.
        let mut posted = false;
        loop {
            let mut sending = false;
            let result = async {
                if check_first && let Some(id) = self.find_by_submission_id(sid).await? {
                    let status = if posted {
                        ItemStatus::Created
                    } else {
                        ItemStatus::AlreadyPresent
                    };
                    return Ok((status, id));
                }
                sending = true;
                let id = self
                    .inner
                    .fhir
                    .create_id_json("Observation", body.clone())
                    .await?;
                Ok((ItemStatus::Created, id))
            }
            .await;
            match result {
                Err(e) if transient(&e) && attempt + 1 < self.inner.item_attempts => {
                    tracing::debug!(
                        attempt,
                        "lab submission failed ({e}); checking and retrying"
                    );
                    posted |= sending && !matches!(e, Error::RateLimited { .. });
                    let wait = if sending {
                        settle_wait(&e, attempt, self.inner.fhir.http())
                    } else {
                        item_wait(&e, attempt)
                    };
                    tokio::time::sleep(wait).await;
                    // The POST may have reached the server: look before posting again.
                    check_first = true;
                    attempt += 1;
                }
                Err(e)
                    if transient(&e)
                        && (posted || sending)
                        && !matches!(e, Error::RateLimited { .. }) =>
                {
                    // Out of attempts, but a POST may have been stored although its answer was
                    // lost: look once more, so the report does not call failed what is there.
                    tokio::time::sleep(settle_wait(&e, attempt, self.inner.fhir.http())).await;
                    return match self.find_by_submission_id(sid).await {
                        Ok(Some(id)) => Ok((ItemStatus::Created, id)),
                        _ => Err(e),
                    };
                }
                other => return other,
            }
        }
    }

    async fn find_by_submission_id(&self, sid: &str) -> Result<Option<String>> {
        let page = self
            .inner
            .fhir
            .search_page(
                "Observation",
                &pairs(&observation_search_by_submission_id(sid)),
            )
            .await?;
        let first = page
            .get("entry")
            .and_then(Value::as_array)
            .and_then(|e| e.iter().find_map(|e| e.get("resource")));
        first.map(resource_id).transpose()
    }

    /// Submits many labs for one recipient, `concurrency` at a time (one by one, as the API takes
    /// no Bundles, unless [`SubmitOptions::use_bundles`]). Never stops because one item failed;
    /// the report accounts for every input item. Items already on the server (from an earlier
    /// run of the same batch) or repeated in the input are reported as already present and not
    /// sent.
    pub async fn submit_labs(
        &self,
        crid: i64,
        labs: Vec<LabResult>,
        options: &SubmitOptions,
    ) -> Result<SubmissionReport> {
        self.submit_lab_inputs(crid, labs.into_iter().map(Ok).collect(), options)
            .await
    }

    /// Like [`submit_labs`](Self::submit_labs) for inputs that may already have failed to parse
    /// (rows of a CSV file): those are reported as failed with their error, in place.
    pub async fn submit_lab_inputs(
        &self,
        crid: i64,
        inputs: Vec<Result<LabResult>>,
        options: &SubmitOptions,
    ) -> Result<SubmissionReport> {
        let started = Instant::now();
        if options.concurrency == 0 {
            return Err(Error::validation("concurrency", "must be at least 1"));
        }
        if options.use_bundles && !(1..=50).contains(&options.bundle_size) {
            return Err(Error::validation("bundle_size", "must be between 1 and 50"));
        }
        let total = inputs.len();
        let tracker = Arc::new(Tracker::new(total, options.progress.clone()));

        // Validate everything before any request. `labs[i]` is input `i` checked, or `None` once
        // it needs no request (invalid, already on the server, repeated); it takes over the
        // buffer of `inputs` (same element size), so the report is all this adds per item. The
        // Observations are built only when their turn to be sent comes: a few kB of JSON tree
        // each, built all at once they would make the memory grow far beyond the report.
        let mut items: Vec<ItemResult> = Vec::with_capacity(total);
        let mut labs: Vec<Option<LabResult>> = inputs
            .into_iter()
            .enumerate()
            .map(
                |(index, input)| match input.and_then(|lab| lab.check(&self.inner.lab_options)) {
                    Ok(c) => {
                        let sid = submission_id(&c.lab, crid, &self.inner.ccn);
                        items.push(ItemResult {
                            index,
                            status: ItemStatus::Failed,
                            id: None,
                            submission_id: Some(sid),
                            error: None,
                            warnings: c.warnings,
                        });
                        Some(c.lab)
                    }
                    Err(e) => {
                        items.push(ItemResult {
                            index,
                            status: ItemStatus::Failed,
                            id: None,
                            submission_id: None,
                            error: Some(e),
                            warnings: Vec::new(),
                        });
                        tracker.done(ItemStatus::Failed);
                        None
                    }
                },
            )
            .collect();

        // The journal records every item before anything is sent; resuming, it says which items
        // an earlier run saw arrive (not sent again) and which were in flight when it stopped
        // (in doubt: the server's answer below decides).
        let mut in_doubt: Vec<bool> = Vec::new();
        let mut inserted = None;
        let shared_recorder: Option<Arc<Recorder>> = match &options.journal {
            None => None,
            Some(part) => {
                let recorded: Vec<NewItem<'_>> = items
                    .iter()
                    .zip(&labs)
                    .map(|(item, lab)| NewItem {
                        submission_id: item.submission_id.as_deref(),
                        lab: lab.as_ref(),
                        error: item.error.as_ref(),
                    })
                    .collect();
                // One by one, a new batch's first inputs are marked as being sent by the insert
                // itself (see JournalPart::begin); Bundles mark each Bundle.
                let head = if options.use_bundles {
                    0
                } else {
                    (total / 4).clamp(64, 512)
                };
                let (recorder, prior, rows) = part.begin(crid, &recorded, head)?;
                inserted = Some(rows);
                drop(recorded);
                in_doubt = vec![false; total];
                for (k, p) in prior.into_iter().enumerate() {
                    let Some(p) = p.filter(|_| labs[k].is_some()) else {
                        continue;
                    };
                    match (p.state, p.server_id) {
                        (JournalState::Created | JournalState::AlreadyPresent, Some(id)) => {
                            let item = &mut items[k];
                            item.status = if p.state == JournalState::Created {
                                ItemStatus::Created
                            } else {
                                ItemStatus::AlreadyPresent
                            };
                            item.id = Some(id);
                            item.warnings.push(format!(
                                "recorded as {} by an earlier run of batch {}; not sent again",
                                p.state.as_str(),
                                recorder.batch_id()
                            ));
                            tracker.done(item.status);
                            labs[k] = None;
                        }
                        (JournalState::Sending, _) => in_doubt[k] = true,
                        _ => {}
                    }
                }
                Some(Arc::new(recorder))
            }
        };
        let recorder = shared_recorder.as_deref();

        let pending = labs.iter().filter(|l| l.is_some()).count();
        if pending == 0 {
            if let Some(rows) = inserted {
                rows.committed().await?;
            }
            return Ok(finish(items, started, recorder).await);
        }
        let fail_pending = |mut items: Vec<ItemResult>, labs: &[Option<LabResult>], e: Error| {
            for (item, _) in items.iter_mut().zip(labs).filter(|(_, l)| l.is_some()) {
                if let Some(r) = recorder {
                    r.outcome(item.index, ItemStatus::Failed, None, Some(&e));
                }
                item.error = Some(e.clone());
                tracker.done(ItemStatus::Failed);
            }
            items
        };

        // The Patient, and what the server already holds for this recipient by submission
        // identifier (reported as already present, not sent; as created if an interrupted run of
        // this batch sent it), while the journal commits its new rows. No outcome is recorded and
        // nothing sent before those rows are committed.
        let looked_up = match self.ensure_patient(crid).await {
            Ok(id) => self.existing_submissions(crid).await.map(|m| (id, m)),
            Err(e) => Err(e),
        };
        if let Some(rows) = inserted {
            rows.committed().await?;
        }
        let (patient_id, existing) = match looked_up {
            Ok(found) => found,
            Err(e) => return Ok(finish(fail_pending(items, &labs, e), started, recorder).await),
        };
        for (item, lab) in items.iter_mut().zip(labs.iter_mut()) {
            let found = item
                .submission_id
                .as_ref()
                .and_then(|sid| existing.get(sid));
            if let (Some(_), Some(id)) = (&lab, found) {
                item.status = if in_doubt.get(item.index) == Some(&true) {
                    item.warnings.push(
                        "created by an earlier, interrupted run of this batch; not sent again"
                            .into(),
                    );
                    ItemStatus::Created
                } else {
                    ItemStatus::AlreadyPresent
                };
                item.id = Some(id.clone());
                if let Some(r) = recorder {
                    r.outcome(item.index, item.status, Some(id), None);
                }
                tracker.done(item.status);
                *lab = None;
            }
        }
        drop(existing);

        // Repeated in this batch: sent once, the repeats reported after the first.
        let mut duplicates: Vec<(usize, usize)> = Vec::new();
        {
            let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(pending);
            for (index, (item, lab)) in items.iter().zip(labs.iter_mut()).enumerate() {
                let Some(sid) = item.submission_id.as_deref().filter(|_| lab.is_some()) else {
                    continue;
                };
                match first_of.entry(sid) {
                    Entry::Occupied(first) => {
                        duplicates.push((index, *first.get()));
                        *lab = None;
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                }
            }
        }
        // The sending order, for the journal's marks (8 bytes an item).
        let order: Vec<usize> = match recorder {
            Some(_) => (0..labs.len()).filter(|&i| labs[i].is_some()).collect(),
            None => Vec::new(),
        };
        let to_send = labs
            .into_iter()
            .enumerate()
            .filter_map(|(index, lab)| Some((index, lab?)));

        // The requests are driven by a task on the runtime's workers, beside the connection
        // tasks, not by whichever thread polls this future: polled from a `block_on` thread (a
        // CLI's `main`, a language binding), every response would wake that thread from a worker
        // (a futex wake and a context switch per request), a third of the throughput on a small
        // machine. Dropping this future aborts the task, so it still stops the submission.
        let sender = self.clone();
        let send_options = options.clone();
        let task_tracker = tracker.clone();
        let task_recorder = shared_recorder.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move {
            sender
                .send_all(
                    &patient_id,
                    to_send,
                    items,
                    &send_options,
                    &task_tracker,
                    task_recorder.as_deref().map(|r| (r, order)),
                )
                .await
        }));
        let mut items = match (&mut task.0).await {
            Ok(items) => items,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                return Err(Error::Network {
                    message: "the async runtime shut down during the submission".into(),
                });
            }
        };
        for (index, first) in duplicates {
            let (status, id, error) = {
                let f = &items[first];
                (f.status, f.id.clone(), f.error.clone())
            };
            let item = &mut items[index];
            item.warnings.push(format!(
                "same content as item {first} of this batch; not sent twice"
            ));
            if status == ItemStatus::Failed {
                item.error = error;
            } else {
                item.status = ItemStatus::AlreadyPresent;
                item.id = id;
            }
            if let Some(r) = recorder {
                r.outcome(index, item.status, item.id.as_deref(), item.error.as_ref());
            }
            tracker.done(item.status);
        }
        Ok(finish(items, started, recorder).await)
    }

    /// The lab's Observation for the recipient's Patient, in this client's URI family and FHIR
    /// version (as a `Value` or as a request body).
    fn observation<'a>(
        &self,
        lab: &'a LabResult,
        submission_id: &'a str,
        patient_id: &'a str,
    ) -> LabObservation<'a> {
        LabObservation::new(
            lab,
            submission_id,
            patient_id,
            &self.inner.ccn,
            self.inner.family,
            self.inner.version,
        )
    }

    /// Sends `to_send` (`concurrency` at a time, or in Bundles) and records each outcome in
    /// `items`, which it returns, and in the journal (each item marked as sending, committed,
    /// before its request leaves).
    #[allow(clippy::too_many_arguments)]
    async fn send_all(
        &self,
        patient_id: &str,
        to_send: impl Iterator<Item = (usize, LabResult)>,
        mut items: Vec<ItemResult>,
        options: &SubmitOptions,
        tracker: &Tracker,
        journal: Option<(&Recorder, Vec<usize>)>,
    ) -> Vec<ItemResult> {
        let (recorder, order) = match journal {
            Some((r, order)) => (Some(r), order),
            None => (None, Vec::new()),
        };
        // Each sent item's submission identifier (computed by the checks) goes with its request
        // and comes back with its outcome: neither hashed again nor copied.
        let mut sids: Vec<Option<String>> =
            items.iter_mut().map(|i| i.submission_id.take()).collect();
        let to_send = to_send.map(|(index, lab)| {
            let sid = sids[index].take().unwrap_or_default();
            (index, lab, sid)
        });
        let mut done = |index: usize, sid: String, outcome: Result<(ItemStatus, String)>| {
            if let Some(r) = recorder {
                match &outcome {
                    Ok((status, id)) => r.outcome(index, *status, Some(id), None),
                    Err(e) => r.outcome(index, ItemStatus::Failed, None, Some(e)),
                }
            }
            let item = &mut items[index];
            item.submission_id = Some(sid);
            record(item, outcome);
        };
        if options.use_bundles {
            let mut outcomes = futures_util::stream::iter(to_send)
                .chunks(options.bundle_size)
                .map(|chunk| self.send_chunk(patient_id, chunk, tracker, recorder))
                .buffer_unordered(options.concurrency);
            while let Some(results) = outcomes.next().await {
                for (index, sid, outcome) in results {
                    done(index, sid, outcome);
                }
            }
        } else {
            // Items marked "sending" per journal commit: a commit per few dozen labs, not per
            // lab. After a crash, marked items that had not left are looked up on the server
            // like those that had, so a wider window costs only lookups on resume.
            let window = (8 * options.concurrency).clamp(64, 1024);
            let marks = recorder.map(|j| j.marks(order, window));
            let marks = marks.as_ref();
            let mut outcomes = futures_util::stream::iter(to_send.enumerate())
                .map(|(position, (index, lab, sid))| {
                    // Built when its turn comes: at most `concurrency` exist at once.
                    let body = self.observation(&lab, &sid, patient_id).to_body();
                    async move {
                        let r = match marks {
                            Some(m) => match m.ready(position).await {
                                Ok(()) => self.submit_checked(&body, &sid, false).await,
                                Err(e) => Err(e),
                            },
                            None => self.submit_checked(&body, &sid, false).await,
                        };
                        tracker.done(r.as_ref().map(|r| r.0).unwrap_or(ItemStatus::Failed));
                        (index, sid, r)
                    }
                })
                .buffer_unordered(options.concurrency);
            while let Some((index, sid, outcome)) = outcomes.next().await {
                done(index, sid, outcome);
            }
        }
        // The identifiers of the items that were not sent go back where they were.
        for (item, sid) in items.iter_mut().zip(sids) {
            if sid.is_some() {
                item.submission_id = sid;
            }
        }
        items
    }

    /// Submission identifiers already on the server for `crid`, with their Observation ids.
    async fn existing_submissions(&self, crid: i64) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        let mut params = observation_search_by_crid(crid);
        params.push(("_count".into(), "1000".into()));
        let mut stream = self.inner.fhir.search("Observation", &pairs(&params));
        while let Some(obs) = stream.next().await {
            let obs = obs?;
            if let (Some(id), Some(sid)) = (
                obs.get("id").and_then(Value::as_str),
                observation_submission_id(&obs),
            ) {
                out.insert(sid.to_owned(), id.to_owned());
            }
        }
        Ok(out)
    }

    /// One transaction Bundle of `chunk`, each entry conditional on its submission identifier so
    /// that a repeated Bundle creates nothing twice; the outcome of each entry.
    async fn send_chunk(
        &self,
        patient_id: &str,
        chunk: Vec<(usize, LabResult, String)>,
        tracker: &Tracker,
        journal: Option<&Recorder>,
    ) -> Vec<(usize, String, Result<(ItemStatus, String)>)> {
        let chunk: Vec<(usize, String, Value)> = chunk
            .into_iter()
            .map(|(index, lab, sid)| {
                let obs = self.observation(&lab, &sid, patient_id).to_value();
                (index, sid, obs)
            })
            .collect();
        let marked = match journal {
            Some(j) => {
                let indices: Vec<usize> = chunk.iter().map(|(i, _, _)| *i).collect();
                j.sending(&indices).await
            }
            None => Ok(()),
        };
        let results = match marked {
            Ok(()) => self.send_bundle(&chunk).await,
            Err(e) => chunk.iter().map(|_| Err(e.clone())).collect(),
        };
        chunk
            .into_iter()
            .zip(results)
            .map(|((index, sid, _), r)| {
                tracker.done(r.as_ref().map(|r| r.0).unwrap_or(ItemStatus::Failed));
                (index, sid, r)
            })
            .collect()
    }

    async fn send_bundle(
        &self,
        chunk: &[(usize, String, Value)],
    ) -> Vec<Result<(ItemStatus, String)>> {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|(_, sid, obs)| {
                json!({
                    "resource": obs,
                    "request": {
                        "method": "POST",
                        "url": "Observation",
                        "ifNoneExist": format!("identifier={SUBMISSION_ID_SYSTEM}|{sid}"),
                    }
                })
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let mut attempt = 0;
        let response = loop {
            match self.inner.fhir.idempotent_transaction(&bundle).await {
                Err(e) if transient(&e) && attempt + 1 < self.inner.item_attempts => {
                    tokio::time::sleep(item_wait(&e, attempt)).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => return chunk.iter().map(|_| Err(e.clone())).collect(),
        };
        transaction_results(&response, chunk.len())
    }

    /// Every Observation the server holds for `crid` (all pages).
    pub async fn observations(&self, crid: i64) -> Result<Vec<Value>> {
        let crid_s = crid.to_string();
        self.inner
            .fhir
            .search_all(
                "Observation",
                &[("subject:Patient.identifier", crid_s.as_str())],
            )
            .await
    }
}

/// Borrowed query pairs for the FHIR client.
fn pairs(params: &[(String, String)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn other_family(f: UriFamily) -> UriFamily {
    match f {
        UriFamily::Cibmtr => UriFamily::Terminology,
        UriFamily::Terminology => UriFamily::Cibmtr,
    }
}

fn resource_id(resource: &Value) -> Result<String> {
    resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Http {
            status: 200,
            message: "the server's resource has no id".into(),
            outcome: None,
        })
}

/// The outcome of each of the `requests` entries of a transaction Bundle, from the server's
/// `transaction-response` (one entry per request, in order; any other count fails them all).
pub(crate) fn transaction_results(
    response: &Value,
    requests: usize,
) -> Vec<Result<(ItemStatus, String)>> {
    let entries = response
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if entries.len() != requests {
        let e = Error::Http {
            status: 200,
            message: format!(
                "transaction response has {} entries for {requests} requests",
                entries.len(),
            ),
            outcome: None,
        };
        return (0..requests).map(|_| Err(e.clone())).collect();
    }
    entries.iter().map(bundle_entry_result).collect()
}

/// One entry of a `transaction-response`: `201` created, `200` an existing match.
fn bundle_entry_result(entry: &Value) -> Result<(ItemStatus, String)> {
    let status = entry
        .pointer("/response/status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let code: u16 = status
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let id = entry
        .pointer("/resource/id")
        .and_then(Value::as_str)
        .filter(|id| !id.trim().is_empty())
        .map(str::to_owned)
        .or_else(|| {
            entry
                .pointer("/response/location")
                .and_then(Value::as_str)
                .and_then(|l| crate::fhir::id_from_location(l, "Observation"))
        });
    match (code, id) {
        (201, Some(id)) => Ok((ItemStatus::Created, id)),
        (200, Some(id)) => Ok((ItemStatus::AlreadyPresent, id)),
        _ => Err(Error::Http {
            status: if code == 0 { 200 } else { code },
            message: format!("transaction entry answered {status:?} without an Observation id"),
            outcome: None,
        }),
    }
}

/// Records the outcome of a sent item.
fn record(item: &mut ItemResult, outcome: Result<(ItemStatus, String)>) {
    match outcome {
        Ok((status, id)) => {
            item.status = status;
            item.id = Some(id);
        }
        Err(e) => item.error = Some(e),
    }
}

/// A spawned task, aborted when this handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The report; with a journal, once every outcome is committed.
async fn finish(
    items: Vec<ItemResult>,
    started: Instant,
    journal: Option<&Recorder>,
) -> SubmissionReport {
    if let Some(r) = journal
        && let Err(e) = r.finish().await
    {
        tracing::warn!(error = %e, "the journal could not record the end of the submission");
    }
    let mut report = SubmissionReport {
        items,
        elapsed: started.elapsed(),
        batch_id: journal.map(|r| r.batch_id().to_owned()),
        ..Default::default()
    };
    report.count();
    report
}

/// Counts finished items and reports progress.
struct Tracker {
    total: usize,
    counts: Mutex<Progress>,
    callback: Option<ProgressFn>,
}

impl Tracker {
    fn new(total: usize, callback: Option<ProgressFn>) -> Self {
        Tracker {
            total,
            counts: Mutex::new(Progress {
                done: 0,
                total,
                created: 0,
                already_present: 0,
                failed: 0,
            }),
            callback,
        }
    }
    fn done(&self, status: ItemStatus) {
        let snapshot = {
            let mut c = self.counts.lock().unwrap();
            c.done += 1;
            match status {
                ItemStatus::Created => c.created += 1,
                ItemStatus::AlreadyPresent => c.already_present += 1,
                ItemStatus::Failed => c.failed += 1,
            }
            debug_assert!(c.done <= self.total);
            *c
        };
        if let Some(cb) = &self.callback {
            cb(snapshot);
        }
    }
}
