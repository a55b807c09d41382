//! JS values to owned JSON, on the calling thread, so nothing JS is ever
//! touched by the writer thread.
//!
//! JSON cannot hold everything JS can, so some values get a marked form
//! (the `$`-prefixed keys are stable, documented in node/README.md):
//! non-finite numbers `{"$float":"NaN"}`, bigints as decimal strings,
//! dates as RFC 3339 strings, bytes (Buffer, typed arrays, ArrayBuffer) as
//! a bounded base64 preview with their length, `Map` / `Set` as
//! `{"$type":"Map","entries":[[k,v]…]}` / `{"$type":"Set","values":[…]}`,
//! class instances by their own enumerable properties plus `"$type"`,
//! errors by name and message, a reference back to an enclosing object as
//! `{"$cycle":true}`, and anything deeper than [`MAX_DEPTH`] or past
//! [`MAX_NODES`] values as `{"$truncated":{"reason":…}}`. A getter that
//! throws is recorded as `{"$error":"getter threw"}` and its exception is
//! cleared: converting never throws into the caller.

use std::sync::Mutex;

use agent_audit::payload::marker::{cycle, marker as marked};
use base64::Engine as _;
use napi::bindgen_prelude::{
    ArrayBuffer, Env, Function, JsObjectValue, JsValue, KeyCollectionMode, KeyConversion,
    KeyFilter, Object, TypedArray, Unknown, ValueType,
};
use serde_json::{Map, Number, Value};

/// Nesting deeper than this is cut (the core cuts at the same depth).
pub const MAX_DEPTH: usize = 64;
/// At most this many values are copied from one argument.
pub const MAX_NODES: usize = 100_000;
/// Bytes of a binary value kept as a preview.
pub const BYTES_PREVIEW: usize = 1024;
/// Largest integer that a double holds exactly (2^53 - 1).
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// A value converted ahead of time (the arguments of a call, taken when
/// the call starts) and handed to `emit` later as an external.
pub struct Captured(pub Mutex<Option<Value>>);

fn truncated(reason: &str) -> Value {
    agent_audit::payload::marker::truncated(reason, None)
}

/// A JS number as JSON: integers exactly, non-finite ones marked.
pub fn number(x: f64) -> Value {
    if !x.is_finite() {
        return agent_audit::payload::marker::float(x);
    }
    if x.fract() == 0.0 && x.abs() <= MAX_SAFE {
        // Exact: |x| < 2^53 fits an i64 without rounding.
        return Value::Number(Number::from(x as i64));
    }
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// Walks one JS value. Holds the path of enclosing objects for cycle
/// detection (a repeated but acyclic reference is copied again, as
/// `JSON.stringify` does).
pub struct Converter<'e> {
    env: &'e Env,
    path: Vec<Object<'e>>,
    nodes: usize,
}

impl<'e> Converter<'e> {
    /// A converter for values of `env`.
    pub fn new(env: &'e Env) -> Self {
        Converter {
            env,
            path: Vec::new(),
            nodes: 0,
        }
    }

    /// Converts `v`. Fails only when N-API itself fails (a dying
    /// environment); a throwing getter is recorded, not propagated.
    pub fn convert(&mut self, v: Unknown<'e>, depth: usize) -> napi::Result<Value> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Ok(truncated("size"));
        }
        Ok(match v.get_type()? {
            ValueType::Undefined | ValueType::Null => Value::Null,
            ValueType::Boolean => Value::Bool(v.coerce_to_bool()?),
            ValueType::Number => number(v.coerce_to_number()?.get_double()?),
            ValueType::String => Value::String(v.coerce_to_string()?.into_utf8()?.into_owned()?),
            ValueType::BigInt => Value::String(v.coerce_to_string()?.into_utf8()?.into_owned()?),
            ValueType::Symbol => marked("$type", Value::String("symbol".into())),
            ValueType::Function => {
                // SAFETY: the type was checked just above.
                let f: Object<'e> = unsafe { v.cast()? };
                let mut m = Map::new();
                m.insert("$type".into(), Value::String("function".into()));
                if let Some(name) = self.string_prop(&f, "name")?.filter(|n| !n.is_empty()) {
                    m.insert("name".into(), Value::String(name));
                }
                Value::Object(m)
            }
            ValueType::External => self.external(v)?,
            ValueType::Object => self.object(v, depth)?,
            _ => Value::Null,
        })
    }

    fn external(&mut self, v: Unknown<'e>) -> napi::Result<Value> {
        Ok(crate::read_captured(self.env, &v)
            .unwrap_or_else(|| marked("$type", Value::String("external".into()))))
    }

    fn object(&mut self, v: Unknown<'e>, depth: usize) -> napi::Result<Value> {
        if depth >= MAX_DEPTH {
            return Ok(truncated("depth"));
        }
        // SAFETY: the caller checked the type is object.
        let obj: Object<'e> = unsafe { v.cast()? };
        for a in &self.path {
            if self.env.strict_equals(*a, obj)? {
                return Ok(cycle());
            }
        }
        self.path.push(obj);
        let out = self.object_inner(v, obj, depth);
        self.path.pop();
        out
    }

    fn object_inner(
        &mut self,
        v: Unknown<'e>,
        obj: Object<'e>,
        depth: usize,
    ) -> napi::Result<Value> {
        if v.is_array()? {
            let len = obj.get_array_length()?;
            let mut out = Vec::with_capacity(len.min(4096) as usize);
            for i in 0..len {
                let item = match obj.get_element::<Unknown<'e>>(i) {
                    Ok(item) => self.convert(item, depth + 1)?,
                    Err(_) => self.getter_threw(),
                };
                out.push(item);
                if self.nodes > MAX_NODES {
                    out.push(truncated("size"));
                    break;
                }
            }
            return Ok(Value::Array(out));
        }
        let ctor = self.constructor_name(&obj)?;
        match ctor.as_deref() {
            None | Some("Object") => return self.props(&obj, None, depth),
            Some("Map") => return self.collection(obj, "Map", "entries", depth),
            Some("Set") => return self.collection(obj, "Set", "values", depth),
            _ => {}
        }
        let name = ctor.unwrap_or_default();
        if v.is_typedarray()? {
            // SAFETY: checked to be a typed array.
            let ta: TypedArray<'e> = unsafe { v.cast()? };
            return Ok(bytes(&name, &ta.arraybuffer));
        }
        if v.is_arraybuffer()? {
            // SAFETY: checked to be an ArrayBuffer.
            let ab: ArrayBuffer<'e> = unsafe { v.cast()? };
            return Ok(bytes(&name, &ab));
        }
        if v.is_dataview()? {
            let mut m = Map::new();
            m.insert("$type".into(), Value::String(name));
            if let Ok(n) = obj.get_named_property::<f64>("byteLength") {
                m.insert("byteLength".into(), number(n));
            }
            return Ok(Value::Object(m));
        }
        if v.is_date()? {
            let ms = v.coerce_to_number()?.get_double()?;
            return Ok(if ms.is_finite() {
                Value::String(agent_audit::Timestamp::from_unix_millis(ms as i64).to_rfc3339())
            } else {
                marked("$date", Value::String("Invalid Date".into()))
            });
        }
        if v.is_promise()? {
            return Ok(marked("$type", Value::String("Promise".into())));
        }
        if v.is_error()? {
            let mut m = Map::new();
            m.insert("$type".into(), Value::String(name));
            for key in ["name", "message"] {
                if let Some(s) = self.string_prop(&obj, key)? {
                    m.insert(key.into(), Value::String(s));
                }
            }
            if let Value::Object(own) = self.props(&obj, None, depth)? {
                for (k, val) in own {
                    m.entry(k).or_insert(val);
                }
            }
            if obj.has_own_property("cause").unwrap_or(false) {
                let cause = match obj.get_named_property::<Unknown<'e>>("cause") {
                    Ok(c) => self.convert(c, depth + 1)?,
                    Err(_) => self.getter_threw(),
                };
                m.insert("cause".into(), cause);
            }
            return Ok(Value::Object(m));
        }
        if matches!(name.as_str(), "WeakMap" | "WeakSet" | "WeakRef") {
            return Ok(marked("$type", Value::String(name)));
        }
        self.props(&obj, Some(name), depth)
    }

    /// Own enumerable string-keyed properties, plus `$type` for a class.
    fn props(
        &mut self,
        obj: &Object<'e>,
        type_name: Option<String>,
        depth: usize,
    ) -> napi::Result<Value> {
        let keys = obj.get_all_property_names(
            KeyCollectionMode::OwnOnly,
            KeyFilter::Enumerable,
            KeyConversion::NumbersToStrings,
        )?;
        let len = keys.get_array_length()?;
        let mut m = Map::new();
        if let Some(t) = type_name.filter(|t| !t.is_empty()) {
            m.insert("$type".into(), Value::String(t));
        }
        for i in 0..len {
            let key: Unknown<'e> = keys.get_element(i)?;
            if key.get_type()? != ValueType::String {
                continue; // symbol keys have no JSON form
            }
            let name = key.coerce_to_string()?.into_utf8()?.into_owned()?;
            let value = match obj.get_property::<Unknown<'e>, Unknown<'e>>(key) {
                Ok(val) => {
                    if val.get_type()? == ValueType::Undefined {
                        continue; // as JSON.stringify does
                    }
                    self.convert(val, depth + 1)?
                }
                Err(_) => self.getter_threw(),
            };
            m.insert(name, value);
            if self.nodes > MAX_NODES {
                m.insert(
                    "$truncated".into(),
                    marked("reason", Value::String("size".into())),
                );
                break;
            }
        }
        Ok(Value::Object(m))
    }

    fn collection(
        &mut self,
        obj: Object<'e>,
        type_name: &str,
        field: &str,
        depth: usize,
    ) -> napi::Result<Value> {
        // `Array.from` runs the collection's own iterator, as a spread would.
        let items = self
            .env
            .get_global()?
            .get_named_property::<Unknown<'e>>("Array")
            // SAFETY: `Array` is a function, hence an object; a missing or
            // replaced global makes the next call fail, not misbehave.
            .and_then(|a| unsafe { a.cast::<Object<'e>>() })
            .and_then(|a| a.get_named_property::<Function<'e, Unknown<'e>, Unknown<'e>>>("from"))
            .and_then(|from| from.call(obj.to_unknown()));
        let items = match items {
            Ok(items) => self.convert(items, depth)?,
            Err(_) => self.getter_threw(),
        };
        let mut m = Map::new();
        m.insert("$type".into(), Value::String(type_name.into()));
        m.insert(field.into(), items);
        Ok(Value::Object(m))
    }

    fn constructor_name(&mut self, obj: &Object<'e>) -> napi::Result<Option<String>> {
        let ctor = match obj.get_named_property::<Unknown<'e>>("constructor") {
            Ok(c) => c,
            Err(_) => {
                self.clear_exception();
                return Ok(None);
            }
        };
        if ctor.get_type()? != ValueType::Function {
            return Ok(None);
        }
        // SAFETY: checked to be a function, which is an object.
        let ctor: Object<'e> = unsafe { ctor.cast()? };
        self.string_prop(&ctor, "name")
    }

    fn string_prop(&mut self, obj: &Object<'e>, key: &str) -> napi::Result<Option<String>> {
        match obj.get_named_property::<Unknown<'e>>(key) {
            Ok(v) if v.get_type()? == ValueType::String => {
                Ok(Some(v.coerce_to_string()?.into_utf8()?.into_owned()?))
            }
            Ok(_) => Ok(None),
            Err(_) => {
                self.clear_exception();
                Ok(None)
            }
        }
    }

    fn getter_threw(&mut self) -> Value {
        self.clear_exception();
        marked("$error", Value::String("getter threw".into()))
    }

    fn clear_exception(&mut self) {
        let mut pending = false;
        let raw = self.env.raw();
        // SAFETY: plain N-API calls on the current thread's env.
        unsafe {
            if napi::sys::napi_is_exception_pending(raw, &mut pending) == napi::sys::Status::napi_ok
                && pending
            {
                let mut err = std::ptr::null_mut();
                let _ = napi::sys::napi_get_and_clear_last_exception(raw, &mut err);
            }
        }
    }
}

fn bytes(type_name: &str, data: &[u8]) -> Value {
    let keep = data.len().min(BYTES_PREVIEW);
    let mut m = Map::new();
    m.insert(
        "$type".into(),
        Value::String(if type_name.is_empty() {
            "bytes".into()
        } else {
            type_name.into()
        }),
    );
    m.insert("byteLength".into(), Value::from(data.len() as u64));
    m.insert(
        "base64".into(),
        Value::String(
            base64::engine::general_purpose::STANDARD.encode(data.get(..keep).unwrap_or_default()),
        ),
    );
    if keep < data.len() {
        m.insert("truncated".into(), Value::Bool(true));
    }
    Value::Object(m)
}

/// Converts one JS value (see the module docs).
pub fn to_json(env: &Env, v: Unknown<'_>) -> napi::Result<Value> {
    Converter::new(env).convert(v, 0)
}
