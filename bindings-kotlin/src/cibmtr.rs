//! `CibmtrClient`: the CIBMTR Direct FHIR workflow (CRID, de-identified Patient, lab
//! Observations one by one or in bulk), and the form 2402 lab catalog.
use std::sync::Arc;
use std::time::Duration;

use cibmtr_fhir::cibmtr as core;
use serde_json::Value;

use crate::auth::Auth;
use crate::error::{CibmtrFhirError, Result};
use crate::fhir::FhirClient;
use crate::http::HttpOptions;
use crate::runtime::{block, run};

/// A client of CIBMTR's Direct FHIR Service API for one transplant centre (CCN).
#[derive(uniffi::Object)]
#[uniffi::export(Debug)]
pub struct CibmtrClient(pub(crate) core::CibmtrClient);

impl std::fmt::Debug for CibmtrClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A lab result for form 2402: LOINC code, value, UCUM unit and a timezone-aware time.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LabResult {
    /// The LOINC code, e.g. `718-7`.
    pub loinc: String,
    pub value: f64,
    /// A UCUM unit code, e.g. `g/dL`.
    pub unit: String,
    /// An RFC 3339 date-time with an offset or `Z`.
    pub effective: String,
    /// `<`, `<=`, `>=` or `>`.
    #[uniffi(default = None)]
    pub comparator: Option<String>,
    #[uniffi(default = None)]
    pub reference_low: Option<f64>,
    #[uniffi(default = None)]
    pub reference_high: Option<f64>,
    /// `registered`, `preliminary`, `final` (default) or `amended`.
    #[uniffi(default = None)]
    pub status: Option<String>,
    /// The code's display (the guide's display when absent).
    #[uniffi(default = None)]
    pub display: Option<String>,
}

impl From<LabResult> for core::LabResult {
    fn from(l: LabResult) -> Self {
        core::LabResult {
            loinc: l.loinc,
            value: l.value,
            unit: l.unit,
            effective: l.effective,
            comparator: l.comparator,
            reference_low: l.reference_low,
            reference_high: l.reference_high,
            status: l.status,
            display: l.display,
        }
    }
}

/// What happened to one lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ItemStatus {
    /// The server created the Observation.
    Created,
    /// An Observation with the same content was already there; nothing was sent.
    AlreadyPresent,
    /// Not submitted: the item's error says why.
    Failed,
}

impl From<core::ItemStatus> for ItemStatus {
    fn from(s: core::ItemStatus) -> Self {
        match s {
            core::ItemStatus::Created => ItemStatus::Created,
            core::ItemStatus::AlreadyPresent => ItemStatus::AlreadyPresent,
            core::ItemStatus::Failed => ItemStatus::Failed,
        }
    }
}

/// The result of `submitLab`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LabSubmission {
    /// `CREATED` or `ALREADY_PRESENT`.
    pub status: ItemStatus,
    /// The server's Observation id.
    pub id: String,
    /// The content-derived identifier the Observation carries.
    pub submission_id: String,
    /// Non-fatal remarks (a code outside the catalog, a unit other than the preferred one, ...).
    pub warnings: Vec<String>,
}

/// The outcome of one lab of `submitLabs`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ItemResult {
    /// Position in the input, from 0.
    pub index: i64,
    pub status: ItemStatus,
    pub id: Option<String>,
    pub submission_id: Option<String>,
    /// Why the item failed.
    pub error: Option<CibmtrFhirError>,
    pub warnings: Vec<String>,
}

/// Every input item of `submitLabs`, accounted for, in input order.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SubmissionReport {
    pub total: i64,
    pub created: i64,
    pub already_present: i64,
    pub failed: i64,
    pub elapsed: Duration,
    pub items: Vec<ItemResult>,
    /// The report as JSON (the shape the CLI and every binding share).
    pub json: String,
}

/// Progress of `submitLabs`, reported after every item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
    pub created: i64,
    pub already_present: i64,
    pub failed: i64,
}

/// Receives the progress of `submitLabs`. Called on the SDK's threads after every item: keep it
/// quick, and do not call `…Blocking` functions from it.
#[uniffi::export(foreign)]
pub trait ProgressListener: Send + Sync {
    fn on_progress(&self, progress: Progress);
}

/// A lab of the form 2402 catalog.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LabDefinition {
    pub name: String,
    /// The preferred UCUM unit.
    pub unit: String,
    pub loinc_codes: Vec<String>,
    /// Codes whose values are moles/volume, not the preferred mass unit.
    pub molar_codes: Vec<String>,
}

/// The form 2402 labs: name, preferred unit and candidate LOINC codes.
#[uniffi::export]
pub fn lab_catalog() -> Vec<LabDefinition> {
    core::lab_catalog()
        .iter()
        .map(|d| LabDefinition {
            name: d.name.clone(),
            unit: d.unit.clone(),
            loinc_codes: d.loinc_codes.clone(),
            molar_codes: d.molar_codes.clone(),
        })
        .collect()
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn report(r: core::SubmissionReport) -> SubmissionReport {
    SubmissionReport {
        total: count(r.total()),
        created: count(r.created),
        already_present: count(r.already_present),
        failed: count(r.failed),
        elapsed: r.elapsed,
        json: serde_json::to_string(&r).unwrap_or_default(),
        items: r
            .items
            .into_iter()
            .map(|i| ItemResult {
                index: count(i.index),
                status: i.status.into(),
                id: i.id,
                submission_id: i.submission_id,
                error: i.error.map(CibmtrFhirError::from),
                warnings: i.warnings,
            })
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
fn demographics(
    first_name: String,
    last_name: String,
    birth_date: String,
    gender: String,
    ssn: Option<String>,
    race: Vec<String>,
    ethnicity: Option<String>,
    mothers_maiden_name: Option<String>,
    nmdp_rid: Option<i64>,
    ebmt_cic: Option<String>,
    ebmt_id: Option<String>,
    cibmtr_team: Option<i64>,
    cibmtr_iubmid: Option<String>,
) -> core::Demographics {
    core::Demographics {
        ssn: ssn.map(Into::into),
        race,
        ethnicity,
        mothers_maiden_name,
        nmdp_rid,
        ebmt_cic,
        ebmt_id,
        cibmtr_team,
        cibmtr_iubmid,
        ..core::Demographics::new(first_name, last_name, birth_date, gender)
    }
}

#[uniffi::export]
impl CibmtrClient {
    /// `environment`: `test` or `production` (picks the API base unless `baseUrl` is given);
    /// `fhirPath`: the FHIR root below the base (e.g. `r3`); `uriFamily`: `cibmtr` or
    /// `terminology`; `fhirVersion`: `STU3` or `R4`; `strict`: refuse codes outside the form 2402
    /// catalog; `convertUnits`: convert to the preferred unit (exactly, with a warning); `http`:
    /// timeouts, proxy, CAs and retry bounds of its requests (the token requests follow `auth`'s).
    #[uniffi::constructor(default(
        environment = "test",
        base_url = None,
        fhir_path = None,
        uri_family = "cibmtr",
        fhir_version = "STU3",
        strict = false,
        convert_units = false,
        http = None
    ))]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ccn: String,
        auth: Arc<dyn Auth>,
        environment: String,
        base_url: Option<String>,
        fhir_path: Option<String>,
        uri_family: String,
        fhir_version: String,
        strict: bool,
        convert_units: bool,
        http: Option<HttpOptions>,
    ) -> Result<Arc<Self>> {
        let mut b = core::CibmtrClient::builder(ccn, &auth.token_provider()?.0)
            .environment(environment.parse()?)
            .uri_family(uri_family.parse()?)
            .fhir_version(fhir_version.parse()?)
            .lab_options(core::LabOptions {
                strict,
                convert_units,
            });
        if let Some(u) = base_url {
            b = b.base_url(u);
        }
        if let Some(p) = fhir_path {
            b = b.fhir_path(p);
        }
        if let Some(h) = crate::http::client(http)? {
            b = b.http_client(h);
        }
        Ok(Arc::new(CibmtrClient(b.build()?)))
    }

    /// The centre number.
    pub fn ccn(&self) -> String {
        self.0.ccn().to_owned()
    }

    /// The FHIR client behind the Patient and Observation calls.
    pub fn fhir(&self) -> Arc<FhirClient> {
        Arc::new(FhirClient(self.0.fhir().clone()))
    }

    /// Registers (or looks up) a recipient and returns the CRID. Everything is validated before
    /// anything is sent; the same demographics give the same CRID.
    #[uniffi::method(default(
        ssn = None,
        race = [],
        ethnicity = None,
        mothers_maiden_name = None,
        nmdp_rid = None,
        ebmt_cic = None,
        ebmt_id = None,
        cibmtr_team = None,
        cibmtr_iubmid = None
    ))]
    #[allow(clippy::too_many_arguments)]
    pub async fn register_crid(
        &self,
        first_name: String,
        last_name: String,
        birth_date: String,
        gender: String,
        ssn: Option<String>,
        race: Vec<String>,
        ethnicity: Option<String>,
        mothers_maiden_name: Option<String>,
        nmdp_rid: Option<i64>,
        ebmt_cic: Option<String>,
        ebmt_id: Option<String>,
        cibmtr_team: Option<i64>,
        cibmtr_iubmid: Option<String>,
    ) -> Result<i64> {
        let c = self.0.clone();
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
        );
        run(async move { c.register_crid(&d).await }).await
    }
    /// `registerCrid()`, blocking the calling thread (for Java; pass `null` for absent values).
    #[allow(clippy::too_many_arguments)]
    pub fn register_crid_blocking(
        &self,
        first_name: String,
        last_name: String,
        birth_date: String,
        gender: String,
        ssn: Option<String>,
        race: Vec<String>,
        ethnicity: Option<String>,
        mothers_maiden_name: Option<String>,
        nmdp_rid: Option<i64>,
        ebmt_cic: Option<String>,
        ebmt_id: Option<String>,
        cibmtr_team: Option<i64>,
        cibmtr_iubmid: Option<String>,
    ) -> Result<i64> {
        block(self.register_crid(
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
        ))
    }

    /// The id of the recipient's de-identified Patient, created only if absent.
    pub async fn ensure_patient(&self, crid: i64) -> Result<String> {
        let c = self.0.clone();
        run(async move { c.ensure_patient(crid).await }).await
    }
    /// `ensurePatient()`, blocking the calling thread (for Java).
    pub fn ensure_patient_blocking(&self, crid: i64) -> Result<String> {
        block(self.ensure_patient(crid))
    }

    /// Submits one lab result unless an Observation with the same content is already there.
    #[uniffi::method(default(
        reference_low = None,
        reference_high = None,
        comparator = None,
        status = None,
        display = None
    ))]
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_lab(
        &self,
        crid: i64,
        loinc: String,
        value: f64,
        unit: String,
        effective: String,
        reference_low: Option<f64>,
        reference_high: Option<f64>,
        comparator: Option<String>,
        status: Option<String>,
        display: Option<String>,
    ) -> Result<LabSubmission> {
        let lab = LabResult {
            loinc,
            value,
            unit,
            effective,
            comparator,
            reference_low,
            reference_high,
            status,
            display,
        };
        self.submit_lab_result(crid, lab).await
    }
    /// `submitLab()`, blocking the calling thread (for Java; pass `null` for absent values).
    #[allow(clippy::too_many_arguments)]
    pub fn submit_lab_blocking(
        &self,
        crid: i64,
        loinc: String,
        value: f64,
        unit: String,
        effective: String,
        reference_low: Option<f64>,
        reference_high: Option<f64>,
        comparator: Option<String>,
        status: Option<String>,
        display: Option<String>,
    ) -> Result<LabSubmission> {
        block(self.submit_lab(
            crid,
            loinc,
            value,
            unit,
            effective,
            reference_low,
            reference_high,
            comparator,
            status,
            display,
        ))
    }

    /// `submitLab()` with a `LabResult`.
    pub async fn submit_lab_result(&self, crid: i64, lab: LabResult) -> Result<LabSubmission> {
        let c = self.0.clone();
        let lab = core::LabResult::from(lab);
        run(async move {
            let s = c.submit_lab(crid, &lab).await?;
            Ok(LabSubmission {
                status: s.status.into(),
                id: s.id,
                submission_id: s.submission_id,
                warnings: s.warnings,
            })
        })
        .await
    }
    /// `submitLabResult()`, blocking the calling thread (for Java).
    pub fn submit_lab_result_blocking(&self, crid: i64, lab: LabResult) -> Result<LabSubmission> {
        block(self.submit_lab_result(crid, lab))
    }

    /// Submits many labs for one recipient, `concurrency` at a time: what the server already
    /// holds is not sent again, no item stops the others, and the report accounts for each.
    /// `useBundles` sends transaction Bundles of `bundleSize` (for servers that accept them).
    #[uniffi::method(default(
        concurrency = 8,
        use_bundles = false,
        bundle_size = 50,
        progress = None
    ))]
    pub async fn submit_labs(
        &self,
        crid: i64,
        labs: Vec<LabResult>,
        concurrency: i32,
        use_bundles: bool,
        bundle_size: i32,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SubmissionReport> {
        let c = self.0.clone();
        let labs: Vec<core::LabResult> = labs.into_iter().map(Into::into).collect();
        let options = core::SubmitOptions {
            concurrency: usize::try_from(concurrency).unwrap_or(0),
            use_bundles,
            bundle_size: usize::try_from(bundle_size).unwrap_or(0),
            progress: progress.map(|l| -> core::ProgressFn {
                Arc::new(move |p: core::Progress| {
                    l.on_progress(Progress {
                        done: count(p.done),
                        total: count(p.total),
                        created: count(p.created),
                        already_present: count(p.already_present),
                        failed: count(p.failed),
                    })
                })
            }),
            ..core::SubmitOptions::default()
        };
        run(async move { c.submit_labs(crid, labs, &options).await.map(report) }).await
    }
    /// `submitLabs()`, blocking the calling thread (for Java).
    pub fn submit_labs_blocking(
        &self,
        crid: i64,
        labs: Vec<LabResult>,
        concurrency: i32,
        use_bundles: bool,
        bundle_size: i32,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SubmissionReport> {
        block(self.submit_labs(crid, labs, concurrency, use_bundles, bundle_size, progress))
    }

    /// Every Observation CIBMTR holds for the CRID (JSON each, all pages).
    pub async fn observations(&self, crid: i64) -> Result<Vec<String>> {
        let c = self.0.clone();
        run(async move {
            Ok(c.observations(crid)
                .await?
                .iter()
                .map(Value::to_string)
                .collect())
        })
        .await
    }
    /// `observations()`, blocking the calling thread (for Java).
    pub fn observations_blocking(&self, crid: i64) -> Result<Vec<String>> {
        block(self.observations(crid))
    }
}
