//! Python values to owned JSON values on the caller's thread (the hot
//! path), and JSON values back to Python objects (reports, documents).
//!
//! The copy never raises: whatever it cannot represent becomes a marker
//! object, so that logging can never break the agent it watches.
//!
//! | Python | JSON |
//! | --- | --- |
//! | `None`, `bool`, `str` | null, boolean, string (lone surrogates become U+FFFD) |
//! | `int` | number within ±(2^53−1), else its decimal string |
//! | `float` | number; NaN and ±inf as `{"$float": "NaN" \| "Infinity" \| "-Infinity"}` (JSON cannot hold them) |
//! | `dict`, `Mapping` | object; non-string keys become strings (`1` → `"1"`, `None` → `"null"`) |
//! | `list`, `tuple` | array (a `namedtuple` becomes an object of its fields) |
//! | `set`, `frozenset` | array sorted by canonical JSON text, so equal sets hash alike |
//! | `bytes`, `bytearray`, `memoryview` | `{"$bytes": base64}` |
//! | `datetime`, `date`, `time` | ISO 8601 string |
//! | `UUID`, `Decimal`, `PurePath` | string |
//! | `Enum` | its value, converted |
//! | dataclass, pydantic model | object of its fields (`model_dump()`) |
//! | numpy scalar / small array | `.item()` / `.tolist()` |
//! | anything else | `{"$type": "module.QualName", "$repr": bounded repr}` |
//!
//! Bounds (per converted value, all configurable): containers nested
//! deeper than `max_depth` become `{"$truncated": {"reason": "depth"}}`;
//! containers longer than `max_items` keep their first `max_items` entries
//! and say how long they were (`{"$truncated": {"reason": "items", "len": N}}`
//! as the last element, or under the key `"$truncated"` for objects); once
//! about `max_bytes` have been copied, what is left becomes
//! `{"$truncated": {"reason": "budget"}}`. Strings are not cut here: the
//! writer stores long ones truncated but hashes them whole. A container
//! met again inside itself becomes `{"$cycle": true}`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use agent_audit::payload::marker::{cycle, marker};
use base64::Engine;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PySet,
    PyString, PyTuple, PyType,
};
use serde_json::{Map, Value};

/// Largest integer a JSON number holds exactly (RFC 8785 numbers are doubles).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Bounds of one conversion.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest nesting of containers kept.
    pub max_depth: usize,
    /// Most entries kept per container.
    pub max_items: usize,
    /// Approximate bytes copied before the rest is replaced by a marker.
    pub max_bytes: usize,
    /// Longest `repr` kept for objects of unknown types (characters).
    pub max_repr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_items: 1000,
            max_bytes: 8 * 1024 * 1024,
            max_repr: 1000,
        }
    }
}

/// Python types met on the slower paths, imported once.
struct KnownTypes {
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    uuid: Py<PyType>,
    decimal: Py<PyType>,
    enum_: Py<PyType>,
    pure_path: Py<PyType>,
    mapping: Py<PyType>,
    dataclass_fields: Py<PyAny>,
}

static KNOWN: PyOnceLock<Option<KnownTypes>> = PyOnceLock::new();

fn known(py: Python<'_>) -> Option<&KnownTypes> {
    KNOWN
        .get_or_init(py, || {
            let ty = |module: &str, name: &str| -> PyResult<Py<PyType>> {
                Ok(py
                    .import(module)?
                    .getattr(name)?
                    .cast_into::<PyType>()?
                    .unbind())
            };
            let load = || -> PyResult<KnownTypes> {
                Ok(KnownTypes {
                    datetime: ty("datetime", "datetime")?,
                    date: ty("datetime", "date")?,
                    time: ty("datetime", "time")?,
                    uuid: ty("uuid", "UUID")?,
                    decimal: ty("decimal", "Decimal")?,
                    enum_: ty("enum", "Enum")?,
                    pure_path: ty("pathlib", "PurePath")?,
                    mapping: ty("collections.abc", "Mapping")?,
                    dataclass_fields: py.import("dataclasses")?.getattr("fields")?.unbind(),
                })
            };
            load().ok()
        })
        .as_ref()
}

fn truncated(reason: &str, len: Option<usize>) -> Value {
    agent_audit::payload::marker::truncated(reason, len.map(|n| n as u64))
}

/// A float as JSON: finite numbers as numbers, the rest as a marker.
pub fn float_value(x: f64) -> Value {
    agent_audit::payload::marker::float(x)
}

/// Converts one Python value; never fails and never raises.
pub fn to_value(obj: &Bound<'_, PyAny>, limits: Limits) -> Value {
    Converter::new(limits).top(obj)
}

/// Converts many values into one object under one budget, e.g. a call's
/// arguments by parameter name.
pub struct Converter {
    limits: Limits,
    budget: usize,
    // Addresses of the containers being converted: a cycle is a container
    // met again on its own path (shared references elsewhere are fine).
    path: Vec<usize>,
}

impl Converter {
    /// A converter with a fresh budget.
    pub fn new(limits: Limits) -> Self {
        Converter {
            limits,
            budget: limits.max_bytes,
            path: Vec::new(),
        }
    }

    /// Converts one value at the top level under this converter's budget.
    pub fn top(&mut self, obj: &Bound<'_, PyAny>) -> Value {
        // A bug here must not become an exception in the agent.
        catch_unwind(AssertUnwindSafe(|| self.convert(obj, 0)))
            .unwrap_or_else(|_| marker("$error", Value::String("conversion failed".into())))
    }

    fn spend(&mut self, n: usize) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget = self.budget.saturating_sub(n);
        true
    }

    fn convert(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        // Exact builtin types first: one pointer comparison each.
        if obj.is_none() {
            return Value::Null;
        }
        if let Ok(s) = obj.cast_exact::<PyString>() {
            return self.string(s);
        }
        if obj.is_exact_instance_of::<PyBool>() {
            return Value::Bool(obj.is_truthy().unwrap_or(false));
        }
        if let Ok(i) = obj.cast_exact::<PyInt>() {
            return self.int(i);
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            self.spend(8);
            return float_value(f.value());
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            return self.dict(d, depth);
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            return self.sequence(obj, l.len(), l.iter(), depth);
        }
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            return self.sequence(obj, t.len(), t.iter(), depth);
        }
        self.convert_other(obj, depth)
    }

    fn convert_other(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        let py = obj.py();
        let types = known(py);
        // Enum before str/int: an IntEnum or StrEnum is recorded by value.
        if let Some(t) = types
            && obj.is_instance(t.enum_.bind(py)).unwrap_or(false)
        {
            return match obj.getattr("value") {
                Ok(v) if depth < self.limits.max_depth => self.convert(&v, depth + 1),
                Ok(_) => truncated("depth", None),
                Err(_) => self.opaque(obj),
            };
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return self.string(s);
        }
        if obj.is_instance_of::<PyBool>() {
            return Value::Bool(obj.is_truthy().unwrap_or(false));
        }
        if let Ok(i) = obj.cast::<PyInt>() {
            return self.int(i);
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            self.spend(8);
            return float_value(f.value());
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return self.dict(d, depth);
        }
        if let Ok(l) = obj.cast::<PyList>() {
            return self.sequence(obj, l.len(), l.iter(), depth);
        }
        if let Ok(t) = obj.cast::<PyTuple>() {
            if obj.hasattr("_fields").unwrap_or(false)
                && let Ok(d) = obj
                    .call_method0("_asdict")
                    .and_then(|d| d.cast_into::<PyDict>().map_err(PyErr::from))
            {
                return self.with_path(obj, depth, |c| c.dict(&d, depth));
            }
            return self.sequence(obj, t.len(), t.iter(), depth);
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return self.bytes(b.as_bytes());
        }
        if let Ok(b) = obj.cast::<PyByteArray>() {
            return self.bytes(&b.to_vec());
        }
        if obj.is_instance_of::<PyMemoryView>() {
            return match obj.call_method0("tobytes") {
                Ok(b) => match b.cast::<PyBytes>() {
                    Ok(b) => self.bytes(b.as_bytes()),
                    Err(_) => self.opaque(obj),
                },
                Err(_) => self.opaque(obj),
            };
        }
        if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
            return self.set(obj, depth);
        }
        if let Some(t) = types {
            if obj.is_instance(t.datetime.bind(py)).unwrap_or(false)
                || obj.is_instance(t.date.bind(py)).unwrap_or(false)
                || obj.is_instance(t.time.bind(py)).unwrap_or(false)
            {
                return self.text_of(obj, obj.call_method0("isoformat"));
            }
            if obj.is_instance(t.uuid.bind(py)).unwrap_or(false)
                || obj.is_instance(t.decimal.bind(py)).unwrap_or(false)
                || obj.is_instance(t.pure_path.bind(py)).unwrap_or(false)
            {
                return self.text_of(obj, obj.str().map(Bound::into_any));
            }
            if !obj.is_instance_of::<PyType>() {
                if obj.hasattr("__dataclass_fields__").unwrap_or(false) {
                    return self.with_path(obj, depth, |c| c.dataclass(obj, t, depth));
                }
                if let Some(v) = self.library_object(obj, depth) {
                    return v;
                }
                if obj.is_instance(t.mapping.bind(py)).unwrap_or(false) {
                    return self.with_path(obj, depth, |c| c.mapping(obj, depth));
                }
            }
        }
        self.opaque(obj)
    }

    /// Pydantic models and numpy values, recognised by shape so neither
    /// library has to be imported.
    fn library_object(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Option<Value> {
        let ty = obj.get_type();
        if ty.hasattr("__pydantic_fields__").unwrap_or(false)
            && ty.hasattr("model_dump").unwrap_or(false)
        {
            return Some(match obj.call_method0("model_dump") {
                Ok(d) if depth < self.limits.max_depth => {
                    self.with_path(obj, depth, |c| c.convert(&d, depth + 1))
                }
                Ok(_) => truncated("depth", None),
                Err(_) => self.opaque(obj),
            });
        }
        let module = ty.getattr("__module__").ok()?;
        let module = module
            .cast::<PyString>()
            .ok()?
            .to_string_lossy()
            .into_owned();
        if module != "numpy" && !module.starts_with("numpy.") {
            return None;
        }
        let size = obj
            .getattr("size")
            .and_then(|s| s.extract::<usize>())
            .unwrap_or(usize::MAX);
        let ndim = obj
            .getattr("ndim")
            .and_then(|s| s.extract::<usize>())
            .unwrap_or(usize::MAX);
        let plain = if ndim == 0 {
            obj.call_method0("item")
        } else if size <= self.limits.max_items && ndim <= self.limits.max_depth {
            obj.call_method0("tolist")
        } else {
            return None;
        };
        Some(match plain {
            Ok(v) => self.convert(&v, depth),
            Err(_) => self.opaque(obj),
        })
    }

    fn with_path<F>(&mut self, obj: &Bound<'_, PyAny>, depth: usize, f: F) -> Value
    where
        F: FnOnce(&mut Self) -> Value,
    {
        if depth >= self.limits.max_depth {
            return truncated("depth", None);
        }
        let addr = obj.as_ptr() as usize;
        if self.path.contains(&addr) {
            return cycle();
        }
        self.path.push(addr);
        let v = f(self);
        self.path.pop();
        v
    }

    fn string(&mut self, s: &Bound<'_, PyString>) -> Value {
        let text = lossy_string(s);
        if !self.spend(text.len() + 2) {
            return truncated("budget", None);
        }
        Value::String(text)
    }

    fn text_of(&mut self, obj: &Bound<'_, PyAny>, text: PyResult<Bound<'_, PyAny>>) -> Value {
        match text {
            Ok(t) => match t.cast::<PyString>() {
                Ok(s) => self.string(s),
                Err(_) => self.opaque(obj),
            },
            Err(_) => self.opaque(obj),
        }
    }

    fn int(&mut self, i: &Bound<'_, PyInt>) -> Value {
        self.spend(8);
        if let Ok(n) = i.extract::<i64>()
            && (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n)
        {
            return Value::from(n);
        }
        // Beyond ±(2^53−1), as decimal text (what the writer does too).
        match i.str() {
            Ok(s) => Value::String(s.to_string_lossy().into_owned()),
            Err(_) => marker("$error", Value::String("int".into())),
        }
    }

    fn bytes(&mut self, b: &[u8]) -> Value {
        let encoded_len = b.len().div_ceil(3) * 4;
        if !self.spend(encoded_len + 12) {
            let mut inner = Map::new();
            inner.insert("reason".into(), Value::String("budget".into()));
            inner.insert("bytes".into(), Value::from(b.len() as u64));
            return marker("$truncated", Value::Object(inner));
        }
        marker(
            "$bytes",
            Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        )
    }

    fn key(&mut self, k: &Bound<'_, PyAny>) -> String {
        if let Ok(s) = k.cast::<PyString>() {
            return lossy_string(s);
        }
        if k.is_none() {
            return "null".into();
        }
        if k.is_instance_of::<PyBool>() {
            return if k.is_truthy().unwrap_or(false) {
                "true"
            } else {
                "false"
            }
            .into();
        }
        match k.str() {
            Ok(s) => bounded(&s.to_string_lossy(), self.limits.max_repr),
            Err(_) => format!("<{}>", qualified_name(k)),
        }
    }

    fn dict(&mut self, d: &Bound<'_, PyDict>, depth: usize) -> Value {
        if depth >= self.limits.max_depth {
            return truncated("depth", None);
        }
        let addr = d.as_ptr() as usize;
        if self.path.contains(&addr) {
            return cycle();
        }
        // Take the entries first: converting a value may run Python code
        // that changes the dict, which must not upset the iteration.
        let len = d.len();
        let entries: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> =
            d.iter().take(self.limits.max_items).collect();
        self.path.push(addr);
        let mut out = Map::new();
        for (k, v) in entries {
            if self.budget == 0 {
                out.insert("$truncated".into(), truncated_inner("budget", len));
                break;
            }
            let key = self.key(&k);
            self.spend(key.len() + 4);
            let value = self.convert(&v, depth + 1);
            out.insert(key, value);
        }
        self.path.pop();
        if len > self.limits.max_items && !out.contains_key("$truncated") {
            out.insert("$truncated".into(), truncated_inner("items", len));
        }
        Value::Object(out)
    }

    fn mapping(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        match obj
            .call_method0("items")
            .and_then(|items| items.try_iter().map(|it| it.collect::<Vec<_>>()))
        {
            Ok(items) => {
                let len = items.len();
                let mut out = Map::new();
                for item in items.into_iter().take(self.limits.max_items) {
                    let Ok(pair) =
                        item.and_then(|p| p.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>())
                    else {
                        continue;
                    };
                    let key = self.key(&pair.0);
                    self.spend(key.len() + 4);
                    let value = self.convert(&pair.1, depth + 1);
                    out.insert(key, value);
                }
                if len > self.limits.max_items {
                    out.insert("$truncated".into(), truncated_inner("items", len));
                }
                Value::Object(out)
            }
            Err(_) => self.opaque(obj),
        }
    }

    fn sequence<'py, I>(
        &mut self,
        obj: &Bound<'py, PyAny>,
        len: usize,
        items: I,
        depth: usize,
    ) -> Value
    where
        I: Iterator<Item = Bound<'py, PyAny>>,
    {
        if depth >= self.limits.max_depth {
            return truncated("depth", None);
        }
        let addr = obj.as_ptr() as usize;
        if self.path.contains(&addr) {
            return cycle();
        }
        self.path.push(addr);
        let mut out = Vec::with_capacity(len.min(self.limits.max_items) + 1);
        for item in items.take(self.limits.max_items) {
            if self.budget == 0 {
                out.push(truncated("budget", Some(len)));
                break;
            }
            self.spend(1);
            out.push(self.convert(&item, depth + 1));
        }
        self.path.pop();
        if len > self.limits.max_items && out.len() == self.limits.max_items {
            out.push(truncated("items", Some(len)));
        }
        Value::Array(out)
    }

    fn set(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Value {
        let items: Vec<Bound<'_, PyAny>> = match obj.try_iter() {
            Ok(it) => it.filter_map(Result::ok).collect(),
            Err(_) => return self.opaque(obj),
        };
        let len = items.len();
        let mut v = self.sequence(obj, len, items.into_iter(), depth);
        if let Value::Array(a) = &mut v {
            // Set order depends on hash seeds; sort so equal sets hash alike.
            let has_marker = len > self.limits.max_items;
            let tail = if has_marker { a.pop() } else { None };
            a.sort_by_cached_key(|x| serde_json::to_string(x).unwrap_or_default());
            a.extend(tail);
        }
        v
    }

    fn dataclass(&mut self, obj: &Bound<'_, PyAny>, t: &KnownTypes, depth: usize) -> Value {
        let py = obj.py();
        let Ok(fields) = t.dataclass_fields.bind(py).call1((obj,)) else {
            return self.opaque(obj);
        };
        let Ok(fields) = fields.try_iter() else {
            return self.opaque(obj);
        };
        let mut out = Map::new();
        for f in fields.take(self.limits.max_items).flatten() {
            let Ok(name) = f.getattr("name") else {
                continue;
            };
            let Ok(name) = name.cast::<PyString>() else {
                continue;
            };
            let key = lossy_string(name);
            let value = match obj.getattr(name) {
                Ok(v) => self.convert(&v, depth + 1),
                Err(_) => Value::Null,
            };
            self.spend(key.len() + 4);
            out.insert(key, value);
        }
        Value::Object(out)
    }

    /// `{"$type": "module.QualName", "$repr": "..."}` with a bounded repr.
    fn opaque(&mut self, obj: &Bound<'_, PyAny>) -> Value {
        let mut m = Map::with_capacity(2);
        m.insert("$type".into(), Value::String(qualified_name(obj)));
        let repr = match obj.repr() {
            Ok(r) => bounded(&r.to_string_lossy(), self.limits.max_repr),
            Err(_) => "<repr failed>".into(),
        };
        self.spend(repr.len() + 32);
        m.insert("$repr".into(), Value::String(repr));
        Value::Object(m)
    }
}

/// A str as UTF-8; each lone surrogate becomes one U+FFFD, never an error.
pub fn lossy_string(s: &Bound<'_, PyString>) -> String {
    if let Ok(text) = s.to_cow() {
        return text.into_owned();
    }
    let Ok(encoded) = s.call_method1("encode", ("utf-8", "surrogatepass")) else {
        return s.to_string_lossy().into_owned();
    };
    let Ok(bytes) = encoded.cast::<PyBytes>() else {
        return s.to_string_lossy().into_owned();
    };
    let mut rest = bytes.as_bytes();
    let mut out = String::with_capacity(rest.len());
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push('\u{FFFD}');
                // A surrogate encoded by `surrogatepass` is 3 bytes: ED A0..BF 80..BF.
                let skip = match after {
                    [0xED, 0xA0..=0xBF, 0x80..=0xBF, ..] => 3,
                    _ => e.error_len().unwrap_or(after.len()).max(1),
                };
                rest = after.get(skip..).unwrap_or_default();
            }
        }
    }
}

fn truncated_inner(reason: &str, len: usize) -> Value {
    agent_audit::payload::marker::truncated_body(reason, Some(len as u64))
}

/// At most `max` characters of `s`, with `…` when cut.
fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `module.QualName` of an object's type (`builtins.` left out).
pub fn qualified_name(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj.get_type();
    let qual = ty
        .qualname()
        .map(|q| q.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    match ty.module() {
        Ok(m) => {
            let m = m.to_string_lossy();
            if m == "builtins" {
                qual
            } else {
                format!("{m}.{qual}")
            }
        }
        Err(_) => qual,
    }
}

/// A JSON value as a Python object (dict, list, str, int, float, bool, None).
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}
