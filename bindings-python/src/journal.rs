//! The submission journal read from Python (`cibmtr_fhir::journal`): its batches, a batch's items
//! and the audit export, through the SDK's own SQLite. Python's `sqlite3` is a second copy of
//! SQLite, which must not open the file in a process where the SDK has it open (the two copies do
//! not see each other's locks).
use std::path::PathBuf;

use cibmtr_fhir::Error;
use cibmtr_fhir::journal::{self as core, BatchSummary, JournalItem};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use crate::convert::{Json, JsonList};
use crate::error::OrRaise;

fn config(message: String) -> Error {
    Error::Config { message }
}

/// The submission journal that `submit_labs(..., journal=path)` writes: an SQLite file, read here
/// with the SDK's own SQLite, so it is safe in a process that is also submitting (Python's
/// `sqlite3` is not: two copies of SQLite in one process do not see each other's locks).
/// `batches()`, `batch(id)`, `items(id)`, `export(id, format)` (the same CSV and JSON as
/// `cibmtr-fhir journal export`) and `to_dataframe(id)`.
#[pyclass(module = "cibmtr_fhir", frozen)]
pub struct Journal {
    inner: core::Journal,
    /// The path as given.
    path: PathBuf,
}

impl Journal {
    /// Runs `f` on the journal with the GIL released.
    fn read<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&core::Journal) -> cibmtr_fhir::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| f(&self.inner)).or_raise()
    }
}

#[pymethods]
impl Journal {
    /// Opens the journal at `path` (a `ConfigError` naming it if there is no file there, or if the
    /// file is not an SQLite database). The file is made by `submit_labs(..., journal=path)`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let p = path.clone();
        let inner = py
            .detach(move || core::Journal::open_existing(&p))
            .or_raise()?;
        Ok(Journal { inner, path })
    }

    /// The journal's path, as given.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The columns of the CSV export, in order.
    #[classattr]
    #[pyo3(name = "CSV_COLUMNS")]
    fn csv_columns(py: Python<'_>) -> PyResult<Py<PyTuple>> {
        Ok(PyTuple::new(py, core::CSV_COLUMNS)?.unbind())
    }

    /// Every batch, newest first, as dicts: `id`, `status` (`complete`, `incomplete`,
    /// `failures` or `empty`), `created_at`, `updated_at`, `ccn`, `server`, `source`,
    /// `source_sha256`, `label`, `expected`, and the counts `total`, `pending`, `sending`,
    /// `created`, `already_present`, `failed`.
    fn batches(&self, py: Python<'_>) -> PyResult<JsonList> {
        let batches = self.read(py, |j| j.batches())?;
        Ok(JsonList(
            batches.iter().map(BatchSummary::to_json).collect(),
        ))
    }

    /// One batch, as a dict like those of `batches()` (a `ValidationError` on `batch` if the
    /// journal has no such batch).
    fn batch(&self, py: Python<'_>, batch_id: &str) -> PyResult<Json> {
        Ok(Json(self.read(py, |j| j.batch(batch_id))?.to_json()))
    }

    /// A batch's items by item number (the input's index, or the CSV line), as dicts: `item`,
    /// `crid` (str), `submission_id`, `state` (`pending`, `sending`, `created`,
    /// `already_present` or `failed`), `server_id` (the Observation's id), `error_kind`,
    /// `error`, `attempts`, `lab` (the lab as sent, a dict), `created_at`, `sent_at`, `done_at`
    /// (UTC, ISO 8601). A `ValidationError` on `batch` if the journal has no such batch.
    fn items(&self, py: Python<'_>, batch_id: &str) -> PyResult<JsonList> {
        let items = self.read(py, |j| j.items(batch_id))?;
        Ok(JsonList(items.iter().map(JournalItem::to_json).collect()))
    }

    /// The batch for audit, as text: `format="csv"` (one row per item, the columns of
    /// `Journal.CSV_COLUMNS`) or `"json"` (`{"batch": {...}, "items": [...]}`), byte for byte
    /// what `cibmtr-fhir journal export` prints. Also written to `path` when given.
    #[pyo3(signature = (batch_id, format = "csv", path = None))]
    fn export(
        &self,
        py: Python<'_>,
        batch_id: &str,
        format: &str,
        path: Option<PathBuf>,
    ) -> PyResult<String> {
        let format: core::ExportFormat = format.parse().or_raise()?;
        self.read(py, |j| {
            let text = String::from_utf8(j.export(batch_id, format)?)
                .map_err(|e| config(format!("the export is not UTF-8: {e}")))?;
            if let Some(path) = &path {
                std::fs::write(path, &text).map_err(|e| {
                    config(format!("cannot write {}: {}", path.display(), e.kind()))
                })?;
            }
            Ok(text)
        })
    }

    /// A batch's items as a pandas DataFrame, one row per item (the lab's fields become
    /// `lab.loinc`, `lab.value`, ...). Needs pandas.
    fn to_dataframe<'py>(&self, py: Python<'py>, batch_id: &str) -> PyResult<Bound<'py, PyAny>> {
        let pandas = py.import("pandas").map_err(|_| {
            pyo3::exceptions::PyImportError::new_err(
                "to_dataframe() needs pandas: pip install pandas",
            )
        })?;
        let items = self.items(py, batch_id)?.into_pyobject(py)?;
        pandas.call_method1("json_normalize", (items,))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let path = PyString::new(py, &self.path.display().to_string()).repr()?;
        Ok(format!("Journal({path})"))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Journal>()
}
