//! The hot path of `audit.tool`: one N-API call per tool call.
//!
//! What stays the same for every call of a tool (its name and version, the
//! options it was wrapped with, its risk) is converted and checked once,
//! when the tool is first called with a log ([`NativeLog::tool_site`]),
//! into a template event. A call then passes only what changes: time,
//! ids, principal (a handle made once per principal object, see
//! [`principal_handle`]), status, duration and the payload parts: the
//! call's arguments themselves when they are all primitives (named here
//! with the tool's parameter names), else JSON text that
//! `JSON.stringify`-like code made in JS or a value copied by `capture`
//! when the call started. The JS thread reads those into one [`Call`] and
//! hands it to the writer ([`AuditLog::emit_source`]), whose thread makes
//! the event, the template's clone with them filled in, and frees it: an
//! event built here and freed there cost the caller more than building it.
//! No generic field-by-field building ([`event_from_map`] and its serde
//! round trips) anywhere; it is the event `event_from_map` builds from the
//! same call's whole `tool_call` object.
//!
//! The site is a plain JS function whose N-API callback data is the
//! template: a call reads its arguments straight from N-API (ids and
//! small JSON texts into stack buffers) without the per-argument
//! bookkeeping of generated class methods.

use std::ffi::{c_char, c_void};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::Arc;

use agent_audit::ids::decode_hex;
use agent_audit::ingest::event_from_map;
use agent_audit::record::{Body, ResultStatus};
use agent_audit::{
    AuditLog, Event, EventSource, PayloadPart, Principal, SpanId, Timestamp, TraceId,
};
use napi::bindgen_prelude::{Env, External, FromNapiRef, Latin1String, Unknown};
use napi::{JsError, Status, sys};
use napi_derive::napi;
use serde_json::Value;

use crate::NativeLog;
use crate::convert::to_json;
use crate::error::{audit_to_js, to_js};

/// Converts a principal object once (as an event's `principal` field is
/// read); throws `ERR_AUDIT_INVALID_EVENT` where an event carrying it
/// would be refused. The handle is opaque: pass it to a tool site.
#[napi(ts_return_type = "ExternalObject<'Principal'>")]
pub fn principal_handle(env: &Env, value: Unknown<'_>) -> napi::Result<External<Arc<Principal>>> {
    let v = to_json(env, value)?;
    let principal: Principal = serde_json::from_value(v)
        .map_err(|e| to_js(env, "ERR_AUDIT_INVALID_EVENT", &format!("principal: {e}")))?;
    principal.validate().map_err(|e| audit_to_js(env, &e))?;
    Ok(External::new(Arc::new(principal)))
}

/// `count` new span ids (16 lowercase hex each) in one string: ids for
/// the next calls, without a call into Rust and a string per id.
#[napi(ts_return_type = "string")]
pub fn new_span_ids(count: u32) -> Latin1String {
    let mut out = String::with_capacity(count as usize * 16);
    for _ in 0..count {
        SpanId::random().write_to(&mut out);
    }
    // Hex digits: Latin-1 text, which V8 takes without decoding UTF-8.
    Latin1String::from(out)
}

fn invalid(env: &Env, message: &str) -> napi::Error {
    to_js(env, "ERR_AUDIT_INVALID_EVENT", message)
}

/// What a site's function holds: the log and what every call shares.
struct Site {
    log: AuditLog,
    shared: Arc<SiteShared>,
}

/// What every call of a tool shares, also read by the writer thread when
/// it builds a call's event (see [`Call`]).
struct SiteShared {
    template: Event,
    /// The tool's parameter names, for arguments passed as they are.
    params: Vec<String>,
    /// The template's size as the queue's byte bound counts it.
    template_bytes: usize,
}

#[napi]
impl NativeLog {
    /// The recorder of one tool's calls: `template` is a `tool_call` event
    /// without the fields that change per call (no ids, time, status,
    /// duration or payload); throws `ERR_AUDIT_INVALID_EVENT` where such
    /// an event would be refused. The function returned queues one call's
    /// event: `ts` in epoch milliseconds, `status` (0 ok, 1 error,
    /// 2 cancelled, 3 timeout, 4 blocked), the duration, the ids, the
    /// payload parts `args` and `result`, then (left out when there are
    /// none) a principal handle (none: the log's), the retention class,
    /// the error type and the `error` part. A payload part is JSON text, a
    /// `capture`d value, or a number, boolean or null as itself;
    /// undefined leaves it out. `args` may also be a count `n` (at most
    /// 20): the call's first `n` arguments, primitives, follow `error` and
    /// are recorded by the names in `params` (as the converter stores the
    /// object of them). It returns false when the queue was full and
    /// throws as `emit` does.
    #[napi(
        ts_return_type = "(ts: number, status: number, durationMs: number, traceId: string, spanId: string, parentSpanId: string | undefined, args: unknown, result?: unknown, principal?: ExternalObject<'Principal'>, retentionClass?: string, errorType?: string, error?: unknown, ...named: unknown[]) => boolean"
    )]
    pub fn tool_site<'e>(
        &self,
        env: &'e Env,
        template: Unknown<'_>,
        params: Option<Vec<String>>,
    ) -> napi::Result<Unknown<'e>> {
        let Value::Object(mut m) = to_json(env, template)? else {
            return Err(invalid(env, "an event must be an object"));
        };
        let template = event_from_map(&mut m).map_err(|e| audit_to_js(env, &e))?;
        if !matches!(template.body, Body::ToolCall(_)) || !template.payload.is_empty() {
            return Err(invalid(
                env,
                "a tool site is a tool_call event without payload",
            ));
        }
        let data = Box::into_raw(Box::new(Site {
            log: self.log.clone(),
            shared: Arc::new(SiteShared {
                template_bytes: template.approx_bytes(),
                template,
                params: params.unwrap_or_default(),
            }),
        }));
        let name = "emitToolCall";
        let mut f = ptr::null_mut();
        // SAFETY: plain N-API calls on the calling (JS) thread's env. The
        // function owns `data`: the finalizer added next frees it once
        // the function is collected; if either call fails, nothing else
        // holds it and it is freed here.
        unsafe {
            let mut status = sys::napi_create_function(
                env.raw(),
                name.as_ptr().cast::<c_char>(),
                name.len() as isize,
                Some(emit_tool_call),
                data.cast::<c_void>(),
                &mut f,
            );
            if status == sys::Status::napi_ok {
                status = sys::napi_add_finalizer(
                    env.raw(),
                    f,
                    data.cast::<c_void>(),
                    Some(drop_site),
                    ptr::null_mut(),
                    ptr::null_mut(),
                );
            }
            if status != sys::Status::napi_ok {
                drop(Box::from_raw(data));
                return Err(napi::Error::new(
                    Status::from(status),
                    "cannot create the tool site",
                ));
            }
            Ok(Unknown::from_raw_unchecked(env.raw(), f))
        }
    }
}

unsafe extern "C" fn drop_site(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` is the `Site` boxed in `tool_site`, handed to exactly
    // this one finalizer.
    drop(unsafe { Box::from_raw(data.cast::<Site>()) });
}

/// Arguments before the primitives of a call recorded by name.
const FIXED: usize = 12;
/// At most this many such primitives.
const MAX_NAMED: usize = 20;
const ARGC: usize = FIXED + MAX_NAMED;

unsafe extern "C" fn emit_tool_call(
    raw_env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let mut argc = ARGC;
    let mut argv = [ptr::null_mut(); ARGC];
    let mut data = ptr::null_mut();
    // SAFETY: N-API calls the callback on the JS thread with its env and
    // callback info; it writes at most `ARGC` arguments and sets `argc`
    // to how many the caller passed.
    let status = unsafe {
        sys::napi_get_cb_info(
            raw_env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    };
    let env = Env::from_raw(raw_env);
    let result = if status != sys::Status::napi_ok || data.is_null() {
        Err(napi::Error::new(
            Status::from(status),
            "cannot read the call",
        ))
    } else {
        // SAFETY: `data` is the `Site` this function was created with; it
        // lives until the function itself is collected.
        let site = unsafe { &*data.cast::<Site>() };
        let given = argv.get(..argc.min(ARGC)).unwrap_or_default();
        emit(
            &Args {
                env: &env,
                argv: given,
            },
            site,
        )
    };
    let mut out = ptr::null_mut();
    match result {
        // SAFETY: plain N-API calls on the JS thread's env.
        Ok(queued) => unsafe {
            sys::napi_get_boolean(raw_env, queued, &mut out);
        },
        Err(e) => unsafe { JsError::from(e).throw_into(raw_env) },
    }
    out
}

/// The arguments of one call; those not passed read as undefined.
struct Args<'a> {
    env: &'a Env,
    argv: &'a [sys::napi_value],
}

impl Args<'_> {
    /// The argument at `i`, or None when not passed or undefined / null.
    fn get(&self, i: usize) -> napi::Result<Option<sys::napi_value>> {
        let Some(&v) = self.argv.get(i) else {
            return Ok(None);
        };
        Ok(match self.value_type(v)? {
            sys::ValueType::napi_undefined | sys::ValueType::napi_null => None,
            _ => Some(v),
        })
    }

    fn value_type(&self, v: sys::napi_value) -> napi::Result<sys::napi_valuetype> {
        let mut t = sys::ValueType::napi_undefined;
        // SAFETY: `v` is an argument of the current call, on its env.
        let status = unsafe { sys::napi_typeof(self.env.raw(), v, &mut t) };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::new(
                Status::from(status),
                "cannot read an argument",
            ));
        }
        Ok(t)
    }

    fn required(&self, i: usize, what: &str) -> napi::Result<sys::napi_value> {
        self.argv
            .get(i)
            .copied()
            .ok_or_else(|| invalid(self.env, &format!("{what} is missing")))
    }

    fn number(&self, i: usize, what: &str) -> napi::Result<f64> {
        let v = self.required(i, what)?;
        let mut x = 0.0;
        // SAFETY: plain N-API call with an argument of the current call.
        let status = unsafe { sys::napi_get_value_double(self.env.raw(), v, &mut x) };
        if status != sys::Status::napi_ok {
            return Err(invalid(self.env, &format!("{what} must be a number")));
        }
        Ok(x)
    }

    /// A string of at most `N - 1` bytes, read into `buf` (Latin-1, which
    /// is ASCII for ids); longer strings are cut and then fail to parse.
    fn short_str<'b, const N: usize>(
        &self,
        v: sys::napi_value,
        buf: &'b mut [u8; N],
        what: &str,
    ) -> napi::Result<&'b [u8]> {
        let mut len = 0usize;
        // SAFETY: `buf` has room for `N` bytes, the terminating NUL included.
        let status = unsafe {
            sys::napi_get_value_string_latin1(
                self.env.raw(),
                v,
                buf.as_mut_ptr().cast::<c_char>(),
                N,
                &mut len,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(invalid(self.env, &format!("{what} must be a string")));
        }
        Ok(buf.get(..len).unwrap_or_default())
    }

    // Ids: hex decoded in place; anything the fast check refuses goes to
    // the core's parser, for its error.
    fn trace_id(&self, i: usize) -> napi::Result<TraceId> {
        let mut buf = [0u8; 40];
        let text = self.short_str(self.required(i, "trace_id")?, &mut buf, "trace_id")?;
        let mut id = [0u8; 16];
        if decode_hex(text, &mut id) && id != [0; 16] {
            return Ok(TraceId(id));
        }
        TraceId::parse(&String::from_utf8_lossy(text)).map_err(|e| audit_to_js(self.env, &e))
    }

    fn span_id(&self, v: sys::napi_value, what: &str) -> napi::Result<SpanId> {
        let mut buf = [0u8; 24];
        let text = self.short_str(v, &mut buf, what)?;
        let mut id = [0u8; 8];
        if decode_hex(text, &mut id) && id != [0; 8] {
            return Ok(SpanId(id));
        }
        SpanId::parse(&String::from_utf8_lossy(text)).map_err(|e| audit_to_js(self.env, &e))
    }

    /// A string argument as UTF-8 (lone surrogates become U+FFFD, as the
    /// converter writes them), short ones through a stack buffer.
    fn with_utf8<T>(
        &self,
        v: sys::napi_value,
        f: impl FnOnce(&[u8]) -> napi::Result<T>,
    ) -> napi::Result<T> {
        const STACK: usize = 1024;
        let env = self.env.raw();
        let mut buf = MaybeUninit::<[u8; STACK]>::uninit();
        let mut len = 0usize;
        // SAFETY: `buf` has room for `STACK` bytes, the NUL included; N-API
        // writes the first `len` bytes (and a NUL after them).
        let status = unsafe {
            sys::napi_get_value_string_utf8(
                env,
                v,
                buf.as_mut_ptr().cast::<c_char>(),
                STACK,
                &mut len,
            )
        };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::new(Status::from(status), "expected a string"));
        }
        // A character is at most 4 bytes: shorter than this, nothing was cut.
        if len + 4 < STACK - 1 {
            // SAFETY: the first `len` bytes were written just above.
            let text = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
            return f(text);
        }
        let mut total = 0usize;
        // SAFETY: the length alone, then the whole string into a buffer
        // of that length plus the NUL.
        let heap = unsafe {
            let status = sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut total);
            if status != sys::Status::napi_ok {
                return Err(napi::Error::new(Status::from(status), "expected a string"));
            }
            let mut heap = vec![0u8; total + 1];
            let status = sys::napi_get_value_string_utf8(
                env,
                v,
                heap.as_mut_ptr().cast::<c_char>(),
                total + 1,
                &mut len,
            );
            if status != sys::Status::napi_ok {
                return Err(napi::Error::new(Status::from(status), "expected a string"));
            }
            heap.truncate(len);
            heap
        };
        f(&heap)
    }

    fn string(&self, i: usize) -> napi::Result<Option<String>> {
        match self.get(i)? {
            None => Ok(None),
            Some(v) => self.with_utf8(v, |b| Ok(Some(String::from_utf8_lossy(b).into_owned()))),
        }
    }

    fn principal(&self, i: usize) -> napi::Result<Option<Arc<Principal>>> {
        let Some(v) = self.get(i)? else {
            return Ok(None);
        };
        // SAFETY: `from_napi_ref` checks that the value is an
        // `External<Arc<Principal>>` made by `principal_handle`.
        let ext = unsafe { External::<Arc<Principal>>::from_napi_ref(self.env.raw(), v) }
            .map_err(|_| invalid(self.env, "principal must be a handle from principalHandle"))?;
        let p: &Arc<Principal> = ext;
        Ok(Some(Arc::clone(p)))
    }

    /// The call's arguments given as they are (primitives) after the
    /// fixed arguments, in order (None for undefined: left out of the
    /// object of them, as the converter leaves undefined values out).
    fn named(&self, count: usize, params: &[String]) -> napi::Result<Named> {
        let values = self
            .argv
            .get(FIXED..FIXED + count)
            .filter(|_| count <= params.len())
            .ok_or_else(|| invalid(self.env, "arguments without parameter names"))?;
        let mut named = Named::with_capacity(values.len());
        for &v in values {
            let value = match self.value_type(v)? {
                sys::ValueType::napi_undefined => None,
                sys::ValueType::napi_null => Some(Value::Null),
                sys::ValueType::napi_number => {
                    let mut x = 0.0;
                    // SAFETY: plain N-API call; `v` was checked to be a number.
                    let status = unsafe { sys::napi_get_value_double(self.env.raw(), v, &mut x) };
                    if status != sys::Status::napi_ok {
                        return Err(invalid(self.env, "cannot read a number"));
                    }
                    Some(crate::convert::number(x))
                }
                sys::ValueType::napi_boolean => {
                    let mut b = false;
                    // SAFETY: plain N-API call; `v` was checked to be a boolean.
                    let status = unsafe { sys::napi_get_value_bool(self.env.raw(), v, &mut b) };
                    if status != sys::Status::napi_ok {
                        return Err(invalid(self.env, "cannot read a boolean"));
                    }
                    Some(Value::Bool(b))
                }
                sys::ValueType::napi_string => Some(self.with_utf8(v, |b| {
                    Ok(Value::String(String::from_utf8_lossy(b).into_owned()))
                })?),
                // SAFETY: `v` is an argument of the current call, on its env.
                _ => Some(to_json(self.env, unsafe {
                    Unknown::from_raw_unchecked(self.env.raw(), v)
                })?),
            };
            named.push(value);
        }
        Ok(named)
    }

    /// A payload part: JSON text, anything else as the converter stores
    /// it (a `capture`d value, a number ...), or nothing for undefined.
    fn part(&self, i: usize) -> napi::Result<Option<Value>> {
        let Some(&v) = self.argv.get(i) else {
            return Ok(None);
        };
        match self.value_type(v)? {
            sys::ValueType::napi_undefined => Ok(None),
            sys::ValueType::napi_string => self.with_utf8(v, |text| {
                serde_json::from_slice(text).map(Some).map_err(|e| {
                    invalid(self.env, &format!("a payload part must be JSON text: {e}"))
                })
            }),
            // SAFETY: `v` is an argument of the current call, on its env.
            _ => to_json(self.env, unsafe {
                Unknown::from_raw_unchecked(self.env.raw(), v)
            })
            .map(Some),
        }
    }
}

fn status_of(code: f64) -> Option<ResultStatus> {
    Some(match code as i64 {
        0 => ResultStatus::Ok,
        1 => ResultStatus::Error,
        2 => ResultStatus::Cancelled,
        3 => ResultStatus::Timeout,
        4 => ResultStatus::Blocked,
        _ => return None,
    })
}

/// A call's arguments recorded by name: the values, in parameter order.
/// Up to four stay inline, so a typical call costs one allocation (its
/// [`Call`]) on the caller's thread.
enum Named {
    Few(usize, [Option<Value>; 4]),
    Many(Vec<Option<Value>>),
}

impl Named {
    fn with_capacity(n: usize) -> Named {
        if n <= 4 {
            Named::Few(0, Default::default())
        } else {
            Named::Many(Vec::with_capacity(n))
        }
    }

    fn push(&mut self, v: Option<Value>) {
        match self {
            Named::Few(len, slots) => {
                if let Some(slot) = slots.get_mut(*len) {
                    *slot = v;
                    *len += 1;
                }
            }
            Named::Many(values) => values.push(v),
        }
    }

    fn into_values(self) -> Vec<Option<Value>> {
        match self {
            Named::Few(len, slots) => slots.into_iter().take(len).collect(),
            Named::Many(values) => values,
        }
    }

    fn values(&self) -> &[Option<Value>] {
        match self {
            Named::Few(len, slots) => slots.get(..*len).unwrap_or_default(),
            Named::Many(values) => values,
        }
    }

    /// The object `{name: value …}`, undefined values left out.
    fn into_object(self, params: &[String]) -> Value {
        let mut m = serde_json::Map::new();
        for (v, name) in self.into_values().into_iter().zip(params) {
            if let Some(v) = v {
                m.insert(name.clone(), v);
            }
        }
        Value::Object(m)
    }
}

/// One call as read from its arguments; the writer thread builds its event
/// (the template's clone with these filled in), so that the event's
/// strings, maps and payload are allocated and freed on one thread.
struct Call {
    site: Arc<SiteShared>,
    ts: Timestamp,
    status: ResultStatus,
    duration_ms: f64,
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    principal: Option<Arc<Principal>>,
    retention_class: Option<Arc<str>>,
    error_type: Option<String>,
    args: CallArgs,
    result: Option<Value>,
    error: Option<Value>,
}

enum CallArgs {
    None,
    Value(Value),
    Named(Named),
}

impl Call {
    fn event(self) -> Event {
        let mut event = self.site.template.clone();
        event.ts = self.ts;
        event.trace_id = Some(self.trace_id);
        event.span_id = Some(self.span_id);
        event.parent_span_id = self.parent_span_id;
        event.principal = self.principal;
        event.retention_class = self.retention_class;
        if let Body::ToolCall(call) = &mut event.body {
            call.outcome.result_status = Some(self.status);
            call.outcome.duration_ms = Some(self.duration_ms);
            call.outcome.error_type = self.error_type;
        }
        let args = match self.args {
            CallArgs::None => None,
            CallArgs::Value(v) => Some(v),
            CallArgs::Named(named) => Some(named.into_object(&self.site.params)),
        };
        for (p, v) in [
            (PayloadPart::Args, args),
            (PayloadPart::Result, self.result),
            (PayloadPart::Error, self.error),
        ] {
            if let Some(v) = v {
                event.payload.insert(p, v);
            }
        }
        event
    }
}

impl EventSource for Call {
    fn approx_bytes(&self) -> usize {
        use agent_audit::record::approx_entry_bytes;
        let args = match &self.args {
            CallArgs::None => 0,
            CallArgs::Value(v) => approx_entry_bytes(0, v),
            CallArgs::Named(named) => {
                let object = Value::Object(serde_json::Map::new());
                approx_entry_bytes(0, &object)
                    + named
                        .values()
                        .iter()
                        .zip(&self.site.params)
                        .filter_map(|(v, name)| {
                            v.as_ref().map(|v| approx_entry_bytes(name.len(), v))
                        })
                        .sum::<usize>()
            }
        };
        let parts = [&self.result, &self.error]
            .into_iter()
            .flatten()
            .map(|v| approx_entry_bytes(0, v))
            .sum::<usize>();
        std::mem::size_of::<Call>()
            + self.site.template_bytes
            + args
            + parts
            + self.error_type.as_ref().map_or(0, |t| 16 + t.len())
    }

    fn build(self: Box<Self>) -> Event {
        (*self).event()
    }
}

fn emit(a: &Args<'_>, site: &Site) -> napi::Result<bool> {
    let env = a.env;
    let status =
        status_of(a.number(1, "status")?).ok_or_else(|| invalid(env, "unknown result status"))?;
    let ts = a.number(0, "ts")?;
    // A count: that many primitives follow the fixed arguments.
    let args = match a.argv.get(6) {
        Some(&v) if a.value_type(v)? == sys::ValueType::napi_number => {
            let count = a.number(6, "args")?;
            CallArgs::Named(a.named(count as usize, &site.shared.params)?)
        }
        _ => a.part(6)?.map_or(CallArgs::None, CallArgs::Value),
    };
    let call = Call {
        site: Arc::clone(&site.shared),
        ts: if ts.is_finite() {
            Timestamp::from_unix_millis(ts as i64)
        } else {
            Timestamp::now()
        },
        status,
        duration_ms: a.number(2, "duration_ms")?,
        trace_id: a.trace_id(3)?,
        span_id: a.span_id(a.required(4, "span_id")?, "span_id")?,
        parent_span_id: match a.get(5)? {
            None => None,
            Some(v) => Some(a.span_id(v, "parent_span_id")?),
        },
        principal: a.principal(8)?,
        retention_class: a.string(9)?.map(Arc::from),
        error_type: a.string(10)?,
        args,
        result: a.part(7)?,
        error: a.part(11)?,
    };
    // What the template does not fix is checked here, so a bad call throws
    // as `emit` would; the writer builds the event of a good one.
    if !(call.duration_ms.is_finite() && call.duration_ms >= 0.0) {
        return site
            .log
            .emit(call.event())
            .map_err(|e| audit_to_js(env, &e));
    }
    site.log
        .emit_source(Box::new(call))
        .map_err(|e| audit_to_js(env, &e))
}
