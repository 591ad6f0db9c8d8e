//! Argument types, checked before anything else: a value of the wrong JavaScript type, a missing
//! required argument, an options object that is not an object or has a key the function does
//! not know is a `TypeError` naming the argument (`tokenUrl`, `options.http`), as Node's own
//! functions throw (`code` `ERR_INVALID_ARG_TYPE` or `ERR_INVALID_ARG_VALUE`). Without this,
//! napi would throw a plain `Error` that does not say which argument was wrong, and would read
//! `{ http: 5 }` or `'opts'` as an empty options object.
//!
//! Only types are checked here; whether a value is usable (an empty client id, a malformed URL)
//! is the core's business (`VALIDATION`). A value of the wrong type is never shown in the message
//! unless it is a number or a boolean: a misplaced string may be a password.
use napi::bindgen_prelude::*;
use napi::{Env, JsValue, ValueType, sys};

/// What a JavaScript value must be.
pub(crate) enum Kind {
    Text,
    Number,
    Bool,
    /// An array of strings.
    Texts,
    /// An object whose values are strings (`headers`, `defaultParams`).
    TextMap,
    Function,
    /// A plain object with these optional keys; the name is the TypeScript type's.
    Options(&'static str, &'static [(&'static str, Kind)]),
    /// An object napi reads further (a flow, a resource, a JWKS): named for the message.
    Object(&'static str),
    /// One of the four flow objects (`AuthFlow`).
    Flow,
    /// A string, a bigint or a number (a CRID).
    Crid,
    /// Either kind.
    Either(&'static Kind, &'static Kind),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Text => "of type string".into(),
            Kind::Number => "of type number".into(),
            Kind::Bool => "of type boolean".into(),
            Kind::Texts => "an array of strings".into(),
            Kind::TextMap => "an object of strings".into(),
            Kind::Function => "of type function".into(),
            Kind::Options(name, _) | Kind::Object(name) => format!("an object ({name})"),
            Kind::Flow => {
                "a PasswordGrant, ClientCredentials, BackendServices or AuthorizationCode".into()
            }
            Kind::Crid => "a string, a bigint or a number (a CRID)".into(),
            Kind::Either(a, b) => format!("{} or {}", a.describe(), b.describe()),
        }
    }
}

/// Options of a function that takes only `http`.
pub(crate) const HTTP_ONLY: &[(&str, Kind)] = &[("http", crate::http::HTTP_CONFIG)];

/// A JavaScript error of `class` (`TypeError`) with `code`, as a napi error that rethrows it.
fn js_error_of(env: &Env, code: &str, message: String) -> napi::Error {
    let build = || -> Result<napi::Error> {
        let code = env.create_string(code)?;
        let msg = env.create_string(&message)?;
        let mut raw = std::ptr::null_mut();
        check_status!(unsafe {
            sys::napi_create_type_error(env.raw(), code.raw(), msg.raw(), &mut raw)
        })?;
        let error = unsafe { Unknown::from_napi_value(env.raw(), raw)? };
        Ok(napi::Error::from(error))
    };
    build().unwrap_or_else(|_| napi::Error::new(Status::InvalidArg, message))
}

fn what(path: &str) -> &'static str {
    if path.contains('.') || path.contains('[') {
        "property"
    } else {
        "argument"
    }
}

/// `Received ...` as Node says it, without showing a string's content.
fn received(v: &Unknown) -> Result<String> {
    Ok(match v.get_type()? {
        ValueType::Undefined => "Received undefined".into(),
        ValueType::Null => "Received null".into(),
        ValueType::Number => format!(
            "Received type number ({})",
            v.coerce_to_number()?.get_double()?
        ),
        ValueType::Boolean => format!("Received type boolean ({})", v.coerce_to_bool()?),
        ValueType::Object if v.is_array()? => "Received an array".into(),
        t => format!("Received type {}", type_name(t)),
    })
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::String => "string",
        ValueType::Symbol => "symbol",
        ValueType::Object => "object",
        ValueType::Function => "function",
        ValueType::BigInt => "bigint",
        ValueType::External => "external",
        _ => "unknown",
    }
}

fn wrong_type(env: &Env, path: &str, kind: &Kind, v: &Unknown) -> Result<napi::Error> {
    Ok(js_error_of(
        env,
        "ERR_INVALID_ARG_TYPE",
        format!(
            "The \"{path}\" {} must be {}. {}",
            what(path),
            kind.describe(),
            received(v)?
        ),
    ))
}

/// Checks `v` against `kind`; `path` names it in the error.
fn check(env: &Env, path: &str, kind: &Kind, v: &Unknown) -> Result<()> {
    let t = v.get_type()?;
    let object = t == ValueType::Object;
    let ok = match kind {
        Kind::Text => t == ValueType::String,
        Kind::Number => t == ValueType::Number,
        Kind::Bool => t == ValueType::Boolean,
        Kind::Function => t == ValueType::Function,
        Kind::Object(_) => object,
        Kind::Flow => {
            object && unsafe { crate::fhir::AuthFlow::from_napi_value(env.raw(), v.raw()) }.is_ok()
        }
        Kind::Crid => matches!(t, ValueType::String | ValueType::BigInt | ValueType::Number),
        Kind::Either(a, b) => {
            return check(env, path, a, v).or_else(|_| {
                check(env, path, b, v)
                    .map_err(|_| wrong_type(env, path, kind, v).unwrap_or_else(|e| e))
            });
        }
        Kind::Texts if object && v.is_array()? => {
            let array = unsafe { Array::from_napi_value(env.raw(), v.raw())? };
            for i in 0..array.len() {
                let item: Unknown = array.get(i)?.expect("an index below the length");
                check(env, &format!("{path}[{i}]"), &Kind::Text, &item)?;
            }
            true
        }
        Kind::TextMap | Kind::Options(..) if object && !v.is_array()? => {
            let obj = unsafe { Object::from_napi_value(env.raw(), v.raw())? };
            for key in Object::keys(&obj)? {
                let value: Unknown = obj.get_named_property(&key)?;
                let spec = match kind {
                    Kind::Options(name, keys) => match keys.iter().find(|(k, _)| *k == key) {
                        Some((_, spec)) => spec,
                        None => {
                            let known: Vec<_> = keys.iter().map(|(k, _)| *k).collect();
                            return Err(js_error_of(
                                env,
                                "ERR_INVALID_ARG_VALUE",
                                format!(
                                    "The \"{path}.{key}\" property is not an option of {name}: the options are {}",
                                    known.join(", ")
                                ),
                            ));
                        }
                    },
                    _ => &Kind::Text,
                };
                // An absent option may be written `undefined` (or `null`).
                if !matches!(value.get_type()?, ValueType::Undefined | ValueType::Null) {
                    check(env, &format!("{path}.{key}"), spec, &value)?;
                }
            }
            true
        }
        Kind::Texts | Kind::TextMap | Kind::Options(..) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(wrong_type(env, path, kind, v)?)
    }
}

/// The required argument `v`, checked against `kind`, as napi converts it to `T`.
pub(crate) fn arg<T: FromNapiValue>(env: &Env, name: &str, kind: &Kind, v: Unknown) -> Result<T> {
    check(env, name, kind, &v)?;
    unsafe { T::from_napi_value(env.raw(), v.raw()) }.map_err(|e| {
        js_error_of(
            env,
            "ERR_INVALID_ARG_VALUE",
            format!("The \"{name}\" {} is invalid: {}", what(name), e.reason),
        )
    })
}

/// An optional argument: absent, `undefined` or `null` is `None`.
pub(crate) fn opt<T: FromNapiValue>(
    env: &Env,
    name: &str,
    kind: &Kind,
    v: Option<Unknown>,
) -> Result<Option<T>> {
    match v {
        Some(v) if !matches!(v.get_type()?, ValueType::Undefined | ValueType::Null) => {
            arg(env, name, kind, v).map(Some)
        }
        _ => Ok(None),
    }
}

/// `opt` for the trailing options object, defaulting to its `Default`.
pub(crate) fn options<T: FromNapiValue + Default>(
    env: &Env,
    kind: &Kind,
    v: Option<Unknown>,
) -> Result<T> {
    Ok(opt(env, "options", kind, v)?.unwrap_or_default())
}

/// A required string argument.
pub(crate) fn text(env: &Env, name: &str, v: Unknown) -> Result<String> {
    arg(env, name, &Kind::Text, v)
}
