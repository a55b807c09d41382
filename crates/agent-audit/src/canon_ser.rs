//! Serde values written straight as RFC 8785 text, without building a
//! `serde_json::Value` first.
//!
//! The writer serializes a record body once per event. Going through
//! `serde_json::to_value` built a map of owned keys and values, which
//! [`crate::jcs::canonicalize_into`] then walked and the writer freed.
//! Here each value is written as canonical text as serde hands it over;
//! only objects buffer their members, to sort them. The bytes are exactly
//! those of `canonicalize(&to_value(x)?)` (tests check it on every record
//! kind): non-finite floats become `null` as `to_value` makes them, an
//! integer beyond ±(2^53−1) is [`CanonError::UnsafeInteger`], nesting
//! deeper than [`MAX_DEPTH`] is [`CanonError::DepthExceeded`], and a key
//! given twice keeps its last value.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::ser::{self, Serialize};

use crate::error::AuditError;
use crate::jcs::{self, CanonError, MAX_DEPTH};

/// Why a value could not be written.
#[derive(Debug)]
pub(crate) enum Error {
    /// The value has no canonical form.
    Canon(CanonError),
    /// The value's `Serialize` implementation refused, or produced
    /// something JSON cannot hold (a map key that is not a string).
    Custom(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Canon(e) => e.fmt(f),
            Error::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

impl From<CanonError> for Error {
    fn from(e: CanonError) -> Self {
        Error::Canon(e)
    }
}

impl From<Error> for AuditError {
    fn from(e: Error) -> Self {
        match e {
            Error::Canon(c) => AuditError::from(c),
            Error::Custom(m) => AuditError::invalid_event(format!("cannot serialize: {m}")),
        }
    }
}

type Result<T = ()> = std::result::Result<T, Error>;

/// Appends `value` as canonical JSON text to `out`.
pub(crate) fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result {
    value.serialize(Canon { out, depth: 0 })
}

/// Serializes a value into `out`; `depth` counts the containers around it,
/// as in [`crate::jcs`].
struct Canon<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
}

fn enter(depth: usize) -> Result<usize> {
    let inner = depth + 1;
    if inner >= MAX_DEPTH {
        return Err(Error::Canon(CanonError::DepthExceeded));
    }
    Ok(inner)
}

impl<'a> Canon<'a> {
    fn raw(self, bytes: &[u8]) -> Result {
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn f64(self, f: f64) -> Result {
        if f.is_finite() {
            jcs::write_f64(f, self.out)?;
            Ok(())
        } else {
            // `serde_json::to_value` turns NaN and the infinities into null.
            self.raw(b"null")
        }
    }

    /// Opens `{"variant":` around a variant's content; returns the
    /// content's depth.
    fn open_variant(&mut self, variant: &str) -> Result<usize> {
        let inner = enter(self.depth)?;
        self.out.push(b'{');
        jcs::write_json_string(variant, self.out);
        self.out.push(b':');
        Ok(inner)
    }
}

impl<'a> ser::Serializer for Canon<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Obj<'a>;
    type SerializeStruct = Obj<'a>;
    type SerializeStructVariant = Obj<'a>;

    fn serialize_bool(self, v: bool) -> Result {
        self.raw(if v { b"true" } else { b"false" })
    }
    fn serialize_i8(self, v: i8) -> Result {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result {
        Ok(jcs::write_safe_i64(v, self.out)?)
    }
    fn serialize_i128(self, v: i128) -> Result {
        if let Ok(u) = u64::try_from(v) {
            self.serialize_u64(u)
        } else if let Ok(i) = i64::try_from(v) {
            self.serialize_i64(i)
        } else {
            Err(Error::Canon(CanonError::UnsafeInteger(v.to_string())))
        }
    }
    fn serialize_u8(self, v: u8) -> Result {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result {
        Ok(jcs::write_safe_u64(v, self.out)?)
    }
    fn serialize_u128(self, v: u128) -> Result {
        match u64::try_from(v) {
            Ok(u) => self.serialize_u64(u),
            Err(_) => Err(Error::Canon(CanonError::UnsafeInteger(v.to_string()))),
        }
    }
    fn serialize_f32(self, v: f32) -> Result {
        self.f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result {
        self.f64(v)
    }
    fn serialize_char(self, v: char) -> Result {
        let mut b = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut b))
    }
    fn serialize_str(self, v: &str) -> Result {
        jcs::write_json_string(v, self.out);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result {
        // As `to_value`: an array of numbers.
        enter(self.depth)?;
        self.out.push(b'[');
        for (i, b) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            jcs::write_safe_u64(u64::from(*b), self.out)?;
        }
        self.out.push(b']');
        Ok(())
    }
    fn serialize_none(self) -> Result {
        self.raw(b"null")
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        self.raw(b"null")
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result {
        self.raw(b"null")
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        let inner = self.open_variant(variant)?;
        value.serialize(Canon {
            out: &mut *self.out,
            depth: inner,
        })?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>> {
        Seq::open(self.out, self.depth, b"]")
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>> {
        let inner = self.open_variant(variant)?;
        Seq::open(self.out, inner, b"]}")
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Obj<'a>> {
        Obj::open(self.out, self.depth, b"")
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Obj<'a>> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        mut self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Obj<'a>> {
        let inner = self.open_variant(variant)?;
        Obj::open(self.out, inner, b"}")
    }
}

/// An array being written: members go straight to the output.
pub(crate) struct Seq<'a> {
    out: &'a mut Vec<u8>,
    inner: usize,
    first: bool,
    close: &'static [u8],
}

impl<'a> Seq<'a> {
    fn open(out: &'a mut Vec<u8>, depth: usize, close: &'static [u8]) -> Result<Self> {
        let inner = enter(depth)?;
        out.push(b'[');
        Ok(Seq {
            out,
            inner,
            first: true,
            close,
        })
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value.serialize(Canon {
            out: &mut *self.out,
            depth: self.inner,
        })
    }

    fn close(self) -> Result {
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

/// The four array-shaped serde traits, each writing elements in order.
macro_rules! seq_impls {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.element(value)
            }
            fn end(self) -> Result {
                self.close()
            }
        }
    )*};
}

seq_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// An object being written: members are buffered, then sorted.
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    inner: usize,
    members: Vec<u8>,
    entries: Vec<(Cow<'static, str>, Range<usize>)>,
    key: Option<Cow<'static, str>>,
    close: &'static [u8],
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>, depth: usize, close: &'static [u8]) -> Result<Self> {
        Ok(Obj {
            out,
            inner: enter(depth)?,
            members: Vec::new(),
            entries: Vec::new(),
            key: None,
            close,
        })
    }

    fn member<T: Serialize + ?Sized>(&mut self, key: Cow<'static, str>, value: &T) -> Result {
        let start = self.members.len();
        value.serialize(Canon {
            out: &mut self.members,
            depth: self.inner,
        })?;
        self.entries.push((key, start..self.members.len()));
        Ok(())
    }

    fn close(mut self) -> Result {
        sort_members(&mut self.entries);
        self.out.push(b'{');
        let mut first = true;
        for (i, (k, r)) in self.entries.iter().enumerate() {
            // A key given twice keeps its last value, as in a map.
            if self.entries.get(i + 1).is_some_and(|(next, _)| next == k) {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            jcs::write_json_string(k, self.out);
            self.out.push(b':');
            self.out
                .extend_from_slice(self.members.get(r.clone()).unwrap_or_default());
        }
        self.out.push(b'}');
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

/// RFC 8785 member order (UTF-16 code units); stable, so equal keys keep
/// the order they were given in.
fn sort_members(entries: &mut [(Cow<'static, str>, Range<usize>)]) {
    if entries.iter().all(|(k, _)| k.is_ascii()) {
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    } else {
        entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    }
}

impl ser::SerializeMap for Obj<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error::Custom("map value without a key".into()))?;
        self.member(key, value)
    }
    fn end(self) -> Result {
        self.close()
    }
}

/// The two struct-shaped serde traits: fields are members under their
/// (static) names.
macro_rules! struct_impls {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Obj<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result {
                self.member(Cow::Borrowed(key), value)
            }
            fn end(self) -> Result {
                self.close()
            }
        }
    )*};
}

struct_impls!(SerializeStruct, SerializeStructVariant);

/// Record field names, sorted. A body's keys come through the map path
/// (its `kind` tag, a flattened struct's fields) as borrowed text; one of
/// these is kept as a `&'static str` instead of being copied per record.
const KNOWN_KEYS: &[&str] = &[
    "action",
    "agent_id",
    "alg",
    "authorization_method",
    "body",
    "caller",
    "capture",
    "child_agent_id",
    "confidence",
    "cost_usd",
    "data_classification",
    "data_subjects_affected",
    "decided_at",
    "decision",
    "duration_ms",
    "environment",
    "error_type",
    "finish_reason",
    "flags",
    "guardrails",
    "hash",
    "host",
    "id",
    "input_tokens",
    "key",
    "key_id",
    "kind",
    "lost",
    "metadata",
    "model",
    "name",
    "operation",
    "otel",
    "outcome",
    "output_bytes",
    "output_tokens",
    "params",
    "parent_span_id",
    "payload",
    "permissions_denied",
    "permissions_used",
    "pid",
    "principal",
    "provider",
    "public_key",
    "publisher",
    "reason",
    "records",
    "result_status",
    "retention_class",
    "retrieved_docs",
    "reviewer",
    "risk",
    "root",
    "rule_id",
    "score",
    "session_id",
    "settings",
    "source",
    "span_id",
    "store",
    "subject_span_id",
    "system_prompt_version",
    "target",
    "task_kind",
    "tenant_id",
    "tool",
    "tool_calls_requested",
    "tools",
    "trace_id",
    "tree_size",
    "trust_level",
    "ts",
    "user_id",
    "user_id_hash",
    "verdict",
    "version",
    "wait_ms",
    "writer",
    "writer_id",
];

/// `key` as a static name when it is a record field name, else a copy.
fn intern(key: &str) -> Cow<'static, str> {
    match KNOWN_KEYS.binary_search(&key) {
        Ok(i) => KNOWN_KEYS
            .get(i)
            .map_or_else(|| Cow::Owned(key.to_owned()), |k| Cow::Borrowed(*k)),
        Err(_) => Cow::Owned(key.to_owned()),
    }
}

/// A map key as text, accepting what `serde_json` accepts as a key:
/// strings, chars, booleans, integers, unit variants and newtypes of those.
pub(crate) struct KeyText;

fn key_error() -> Error {
    Error::Custom("key must be a string".into())
}

impl ser::Serializer for KeyText {
    type Ok = Cow<'static, str>;
    type Error = Error;
    type SerializeSeq = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeTuple = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeTupleStruct = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeTupleVariant = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeMap = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeStruct = ser::Impossible<Cow<'static, str>, Error>;
    type SerializeStructVariant = ser::Impossible<Cow<'static, str>, Error>;

    fn serialize_bool(self, v: bool) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_i8(self, v: i8) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_i16(self, v: i16) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_i32(self, v: i32) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_i64(self, v: i64) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_i128(self, v: i128) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_u8(self, v: u8) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_u16(self, v: u16) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_u32(self, v: u32) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_u64(self, v: u64) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_u128(self, v: u128) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_f32(self, _: f32) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_f64(self, _: f64) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_char(self, v: char) -> Result<Cow<'static, str>> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Cow<'static, str>> {
        Ok(intern(v))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Cow<'static, str>> {
        Ok(Cow::Borrowed(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Cow<'static, str>> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Cow<'static, str>> {
        Err(key_error())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(key_error())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(key_error())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
        Err(key_error())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(key_error())
    }
}

/// Sink for the members of a top-level object, each as a field of
/// [`crate::envelope::Envelope`]: `add(key, value)` writes one.
pub(crate) trait Fields {
    /// Adds `key` with `value` written as canonical text.
    fn add<T: Serialize + ?Sized>(&mut self, key: Cow<'static, str>, value: &T) -> Result;
}

/// Serializes a value that must be an object (a record body) into its
/// members, handed one by one to a [`Fields`] sink.
pub(crate) struct Members<'a, F: Fields>(pub(crate) &'a mut F);

/// What a top-level object is being built into.
pub(crate) struct MembersOf<'a, F: Fields> {
    sink: &'a mut F,
    key: Option<Cow<'static, str>>,
}

fn not_an_object() -> Error {
    Error::Custom("record body is not an object".into())
}

impl<'a, F: Fields> ser::Serializer for Members<'a, F> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = MembersOf<'a, F>;
    type SerializeStruct = MembersOf<'a, F>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_bool(self, _: bool) -> Result {
        Err(not_an_object())
    }
    fn serialize_i64(self, _: i64) -> Result {
        Err(not_an_object())
    }
    fn serialize_u64(self, _: u64) -> Result {
        Err(not_an_object())
    }
    fn serialize_i8(self, _: i8) -> Result {
        Err(not_an_object())
    }
    fn serialize_i16(self, _: i16) -> Result {
        Err(not_an_object())
    }
    fn serialize_i32(self, _: i32) -> Result {
        Err(not_an_object())
    }
    fn serialize_u8(self, _: u8) -> Result {
        Err(not_an_object())
    }
    fn serialize_u16(self, _: u16) -> Result {
        Err(not_an_object())
    }
    fn serialize_u32(self, _: u32) -> Result {
        Err(not_an_object())
    }
    fn serialize_f32(self, _: f32) -> Result {
        Err(not_an_object())
    }
    fn serialize_f64(self, _: f64) -> Result {
        Err(not_an_object())
    }
    fn serialize_char(self, _: char) -> Result {
        Err(not_an_object())
    }
    fn serialize_str(self, _: &str) -> Result {
        Err(not_an_object())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result {
        Err(not_an_object())
    }
    fn serialize_none(self) -> Result {
        Err(not_an_object())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result {
        Err(not_an_object())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result {
        Err(not_an_object())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result {
        Err(not_an_object())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        self.0.add(Cow::Borrowed(variant), value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(not_an_object())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
        Err(not_an_object())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(not_an_object())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(not_an_object())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MembersOf<'a, F>> {
        Ok(MembersOf {
            sink: self.0,
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MembersOf<'a, F>> {
        self.serialize_map(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant> {
        // `to_value` would make `{"variant":{…}}`: one member holding an
        // object. No record body is shaped so; refuse rather than guess.
        Err(not_an_object())
    }
}

impl<F: Fields> ser::SerializeMap for MembersOf<'_, F> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.key = Some(key.serialize(KeyText)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error::Custom("map value without a key".into()))?;
        self.sink.add(key, value)
    }
    fn end(self) -> Result {
        Ok(())
    }
}

impl<F: Fields> ser::SerializeStruct for MembersOf<'_, F> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        self.sink.add(Cow::Borrowed(key), value)
    }
    fn end(self) -> Result {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    fn both<T: Serialize>(x: &T) -> (std::result::Result<String, String>, String) {
        let mut out = Vec::new();
        let ours = write(x, &mut out)
            .map(|()| String::from_utf8(out).unwrap())
            .map_err(|e| e.to_string());
        let theirs = serde_json::to_value(x)
            .map_err(|e| e.to_string())
            .and_then(|v| jcs::canonicalize(&v).map_err(|e| e.to_string()))
            .map(|b| String::from_utf8(b).unwrap());
        (ours, theirs.unwrap_or_else(|e| format!("error: {e}")))
    }

    fn same<T: Serialize + fmt::Debug>(x: &T) {
        let (ours, theirs) = both(x);
        assert_eq!(ours.as_deref(), Ok(theirs.as_str()), "{x:?}");
    }

    #[test]
    fn record_field_names_are_borrowed_other_keys_copied() {
        assert!(
            KNOWN_KEYS.windows(2).all(|w| w[0] < w[1]),
            "KNOWN_KEYS must stay sorted"
        );
        for k in KNOWN_KEYS {
            assert!(matches!(intern(k), Cow::Borrowed(b) if b == *k));
        }
        for k in ["", "Kind", "kind ", "zzz", "a\"b"] {
            assert!(matches!(intern(k), Cow::Owned(o) if o == k));
        }
    }

    #[derive(Serialize, Debug)]
    enum Shape {
        Unit,
        New(u8),
        Tuple(i32, String),
        Struct { b: f32, a: Option<char> },
    }

    #[derive(Serialize, Debug)]
    struct Inner {
        z: u16,
        y: &'static str,
    }

    #[derive(Serialize, Debug)]
    struct Everything {
        shapes: Vec<Shape>,
        #[serde(flatten)]
        inner: Inner,
        nan: f64,
        inf: f64,
        tiny: f64,
        neg: i64,
        big_i128: i128,
        bytes: serde_bytes_like::Bytes,
        int_keys: BTreeMap<i32, bool>,
        unit: (),
        tuple: (u8, &'static str),
        text: &'static str,
        nothing: Option<u8>,
    }

    mod serde_bytes_like {
        /// Serializes through `serialize_bytes`.
        #[derive(Debug)]
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }

    #[test]
    fn every_serde_shape_matches_canonicalizing_to_value() {
        same(&Everything {
            shapes: vec![
                Shape::Unit,
                Shape::New(7),
                Shape::Tuple(-3, "t".into()),
                Shape::Struct {
                    b: 0.1,
                    a: Some('\u{e9}'),
                },
            ],
            inner: Inner { z: 9, y: "why" },
            nan: f64::NAN,
            inf: f64::NEG_INFINITY,
            tiny: 1e-7,
            neg: -9_007_199_254_740_991,
            big_i128: -5,
            bytes: serde_bytes_like::Bytes(vec![0, 255, 16]),
            int_keys: BTreeMap::from([(-1, true), (10, false), (2, true)]),
            unit: (),
            tuple: (1, "\"quoted\"\n"),
            text: "\u{1}\u{7f}\u{2028}",
            nothing: None,
        });
    }

    #[test]
    fn json_values_match_including_utf16_key_order() {
        for v in [
            json!(null),
            json!([]),
            json!({}),
            json!({"\u{e000}": 1, "\u{1f600}": 2, "a": {"b": [1.5, -0.0, 1e21, 100]}}),
            json!({"z": [{"y": 1, "x": [true, false, null]}], "é": "ü", "": 0}),
            json!(9_007_199_254_740_991u64),
            json!(-9_007_199_254_740_991i64),
        ] {
            same(&v);
        }
    }

    #[test]
    fn errors_match_too() {
        let (ours, theirs) = both(&json!({"n": 9_007_199_254_740_992u64}));
        assert_eq!(ours.unwrap_err(), theirs.trim_start_matches("error: "));
        let (ours, theirs) = both(&json!([-9_007_199_254_740_992i64]));
        assert_eq!(ours.unwrap_err(), theirs.trim_start_matches("error: "));
        let (ours, _) = both(&u128::MAX);
        assert!(ours.unwrap_err().contains("safe range"));
        // 127 nested arrays are allowed, 128 are not, as in `jcs`.
        let mut deep = Value::Null;
        for _ in 0..127 {
            deep = Value::Array(vec![deep]);
        }
        same(&deep);
        let deeper = Value::Array(vec![deep]);
        let (ours, theirs) = both(&deeper);
        assert_eq!(ours.unwrap_err(), theirs.trim_start_matches("error: "));
        // Keys JSON cannot hold are refused.
        let (ours, _) = both(&BTreeMap::from([((1, 2), 3)]));
        assert_eq!(ours.unwrap_err(), "key must be a string");
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        struct Twice;
        impl Serialize for Twice {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("b", &1)?;
                m.serialize_entry("a", &2)?;
                m.serialize_entry("b", &3)?;
                m.end()
            }
        }
        let mut out = Vec::new();
        write(&Twice, &mut out).unwrap();
        assert_eq!(out, br#"{"a":2,"b":3}"#);
        assert_eq!(
            jcs::canonicalize(&serde_json::to_value(Twice).unwrap()).unwrap(),
            out
        );
    }
}
