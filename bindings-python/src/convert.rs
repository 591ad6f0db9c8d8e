//! Plain data between Python and the core's `serde_json::Value`: dicts, lists, str, int, float,
//! bool and None both ways; `datetime` (timezone-aware only) and `date` in, as ISO 8601 text.
//! A value that cannot go over is a `ValidationError` naming the key it was found under.
use cibmtr_fhir::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};
use serde_json::{Map, Number, Value};

use crate::error::{OrRaise, invalid, wrong_type};

/// A JSON value on its way to Python (the result type of awaitables).
pub struct Json(pub Value);

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.0)
    }
}

/// A list of JSON values on its way to Python.
pub struct JsonList(pub Vec<Value>);

impl<'py> IntoPyObject<'py> for JsonList {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for v in &self.0 {
            list.append(json_to_py(py, v)?)?;
        }
        Ok(list.into_any())
    }
}

pub fn json_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, json_to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

static DATETIME: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A Python value as JSON. `field` names the value in errors (for a dict, each value is named by
/// its key).
pub fn py_to_json(obj: &Bound<'_, PyAny>, field: &str) -> Result<Value, Error> {
    let py = obj.py();
    let unsupported = || {
        invalid(
            field,
            format!(
                "has the unsupported type {}; use str, int, float, bool, None, list, dict, date or a timezone-aware datetime",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ),
        )
    };
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        return integer(obj, field);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return float(f.value(), field);
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|_| invalid(field, "is not valid text"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::with_capacity(d.len());
        for (k, item) in d.iter() {
            let key: String = k
                .extract()
                .map_err(|_| invalid(field, "must have str keys"))?;
            let value = py_to_json(&item, &key)?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let mut items = Vec::new();
        for item in obj.try_iter().map_err(|_| unsupported())? {
            items.push(py_to_json(&item.map_err(|_| unsupported())?, field)?);
        }
        return Ok(Value::Array(items));
    }
    let is = |cell: &PyOnceLock<Py<PyType>>, name: &str| {
        cell.import(py, "datetime", name)
            .map(|t| obj.is_instance(t).unwrap_or(false))
            .unwrap_or(false)
    };
    if is(&DATETIME, "datetime") {
        let offset = obj.call_method0("utcoffset").map_err(|_| unsupported())?;
        if offset.is_none() {
            return Err(invalid(
                field,
                "must be timezone-aware: a datetime with tzinfo (e.g. tzinfo=timezone.utc) or an ISO 8601 string with an offset",
            ));
        }
        return iso(obj, field);
    }
    if is(&DATE, "date") {
        return iso(obj, field);
    }
    // numpy and pandas scalars.
    if obj.hasattr("__index__").unwrap_or(false) {
        let i = obj.call_method0("__index__").map_err(|_| unsupported())?;
        return integer(&i, field);
    }
    if obj.hasattr("__float__").unwrap_or(false) {
        let f: f64 = obj
            .call_method0("__float__")
            .and_then(|f| f.extract())
            .map_err(|_| unsupported())?;
        return float(f, field);
    }
    Err(unsupported())
}

fn integer(obj: &Bound<'_, PyAny>, field: &str) -> Result<Value, Error> {
    if let Ok(i) = obj.extract::<i64>() {
        return Ok(Value::from(i));
    }
    obj.extract::<u64>()
        .map(Value::from)
        .map_err(|_| invalid(field, "is too large a number"))
}

fn float(f: f64, field: &str) -> Result<Value, Error> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| invalid(field, "must be a finite number"))
}

fn iso(obj: &Bound<'_, PyAny>, field: &str) -> Result<Value, Error> {
    obj.call_method0("isoformat")
        .and_then(|s| s.extract::<String>())
        .map(Value::String)
        .map_err(|_| invalid(field, "could not be written as ISO 8601"))
}

/// The Python types an argument read as JSON may have, checked before its value is read so that
/// a wrong type is a `TypeError` naming the argument (a wrong value stays the core's
/// `ValidationError`).
#[derive(Clone, Copy)]
pub enum Accepts {
    /// `str`.
    Str,
    /// `int` (or an integer-like such as a numpy integer), not `bool`.
    Int,
    /// `str` (ISO 8601) or a `date` / `datetime`.
    StrOrDate,
    /// `str` or a list / tuple of them.
    StrOrList,
}

impl Accepts {
    fn expected(self) -> &'static str {
        match self {
            Accepts::Str => "a str",
            Accepts::Int => "an int",
            Accepts::StrOrDate => "a str or a date",
            Accepts::StrOrList => "a str or a list of str",
        }
    }

    fn admits(self, obj: &Bound<'_, PyAny>) -> bool {
        let is_str = obj.is_instance_of::<PyString>();
        match self {
            Accepts::Str => is_str,
            Accepts::Int => {
                !obj.is_instance_of::<PyBool>()
                    && (obj.is_instance_of::<PyInt>() || obj.hasattr("__index__").unwrap_or(false))
            }
            Accepts::StrOrDate => {
                is_str
                    || DATE
                        .import(obj.py(), "datetime", "date")
                        .and_then(|t| obj.is_instance(t))
                        .unwrap_or(false)
            }
            Accepts::StrOrList => {
                is_str || obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()
            }
        }
    }
}

/// Checks the types of arguments: `(name, value, accepts, required)`; a missing optional one
/// (None) passes, a required one must be there.
pub fn check_args(args: &[(&str, Option<&Bound<'_, PyAny>>, Accepts, bool)]) -> PyResult<()> {
    for (name, value, accepts, required) in args {
        match value {
            Some(v) if v.is_none() && !required => {}
            Some(v) if !accepts.admits(v) => return Err(wrong_type(name, accepts.expected(), v)),
            _ => {}
        }
    }
    Ok(())
}

/// A dict argument (a resource, a Bundle) as a JSON object; anything else is a `TypeError`.
pub fn dict_arg(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Value> {
    if !obj.is_instance_of::<PyDict>() {
        return Err(wrong_type(field, "a dict", obj));
    }
    py_to_json(obj, field).or_raise()
}

/// A list of str (`redirect_uris`): a lone str is a `TypeError` rather than a list of letters.
pub fn str_list(obj: &Bound<'_, PyAny>, field: &str) -> PyResult<Vec<String>> {
    let wrong = || wrong_type(field, "a list of str", obj);
    if obj.is_instance_of::<PyString>() {
        return Err(wrong());
    }
    let mut out = Vec::new();
    for item in obj.try_iter().map_err(|_| wrong())? {
        out.push(item?.extract::<String>().map_err(|_| wrong())?);
    }
    Ok(out)
}

/// Query parameters from a dict (a list value repeats the parameter) or a sequence of pairs;
/// values may be str, int, float or date/datetime.
pub fn query_pairs(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Vec<(String, String)>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Vec::new());
    };
    let shape = || wrong_type(field, "a dict or a list of (name, value) pairs", obj);
    let text = |v: &Bound<'_, PyAny>, name: &str| -> Result<String, Error> {
        match py_to_json(v, name)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(invalid(name, "must be a str, number or date")),
        }
    };
    let mut out = Vec::new();
    let mut push = |k: &Bound<'_, PyAny>, v: &Bound<'_, PyAny>| -> Result<(), Error> {
        let name: String = k
            .extract()
            .map_err(|_| invalid(field, "parameter names must be str"))?;
        if v.cast::<PyList>().is_ok() || v.cast::<PyTuple>().is_ok() {
            for item in v
                .try_iter()
                .map_err(|_| invalid(&name, "is not iterable"))?
            {
                let item = item.map_err(|_| invalid(&name, "is not iterable"))?;
                out.push((name.clone(), text(&item, &name)?));
            }
        } else {
            out.push((name.clone(), text(v, &name)?));
        }
        Ok(())
    };
    if let Ok(d) = obj.cast::<PyDict>() {
        for (k, v) in d.iter() {
            push(&k, &v).or_raise()?;
        }
        return Ok(out);
    }
    if obj.is_instance_of::<PyString>() {
        return Err(shape());
    }
    let pairs = obj.try_iter().map_err(|_| shape())?;
    for pair in pairs {
        let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            pair.and_then(|p| p.extract()).map_err(|_| shape())?;
        push(&k, &v).or_raise()?;
    }
    Ok(out)
}

/// Borrowed pairs, as the core's search functions take them.
pub fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// A point in time from a timezone-aware datetime or epoch seconds (int or float).
pub fn epoch_time(obj: &Bound<'_, PyAny>, field: &str) -> Result<std::time::SystemTime, Error> {
    let secs = match py_to_json(obj, field)? {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(_) if obj.hasattr("timestamp").unwrap_or(false) => obj
            .call_method0("timestamp")
            .and_then(|t| t.extract::<f64>())
            .map_err(|_| invalid(field, "must be a datetime or epoch seconds"))?,
        _ => {
            return Err(invalid(
                field,
                "must be a timezone-aware datetime or epoch seconds",
            ));
        }
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(invalid(field, "must be a time after 1970"));
    }
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs))
}
