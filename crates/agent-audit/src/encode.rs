//! Turning a submitted [`Event`] into a record envelope and payload, on the
//! background thread: ids and time, defaults from the log's settings,
//! user-id hashing, part hashes over the unredacted values, redaction,
//! truncation, the salted payload digest.

use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chain::json_err;
use crate::envelope::Envelope;
use crate::error::{AuditError, Result};
use crate::ids::write_uuid_v7_at;
use crate::jcs;
use crate::payload::{PayloadLimits, SaltSource, ValueHasher, normalize, truncate_strings};
use crate::record::{
    Body, CaptureMode, Event, Outcome, PayloadPart, Principal, ResultStatus, ToolCall, ToolInfo,
};
use crate::redact::{RedactionMemo, RedactionReport, Redactor};

/// Log-wide defaults and switches the encoder applies to every event.
#[derive(Clone, Debug, Default)]
pub struct EncoderSettings {
    /// Principal used when an event has none; fills its missing fields otherwise.
    pub principal: Principal,
    /// Retention class when an event has none.
    pub retention_class: String,
    /// Policy version written on every event, when set.
    pub policy_version: Option<String>,
    /// Default capture mode.
    pub capture: CaptureMode,
    /// Store user ids as keyed hashes (`user_id_hash`).
    pub hash_user_ids: bool,
    /// Bounds on stored payloads.
    pub limits: PayloadLimits,
}

/// A principal as given on an event, and its canonical text once defaults
/// are filled in (`None`: nothing to write).
type CachedPrincipal = (Option<Arc<Principal>>, Option<Vec<u8>>);

/// Builds envelopes and payloads. One per writer thread.
pub struct RecordEncoder {
    settings: EncoderSettings,
    redactor: Arc<Redactor>,
    /// What redaction made of strings seen recently (this encoder's redactor).
    memo: RedactionMemo,
    hasher: ValueHasher,
    /// User ids are always hashed under the tenant key when hashing is on.
    salts: SaltSource,
    // The last principal seen and its canonical text: every event of a
    // trace shares one `Arc`, so this saves a clone, a hash and a
    // serialization.
    principal_cache: Option<CachedPrincipal>,
    // Reused per record: canonical payload parts, their names and ranges,
    // the stored payload, id and time text.
    data: Vec<u8>,
    parts: Vec<(&'static str, Range<usize>)>,
    payload: Vec<u8>,
    has_payload: bool,
    ids: String,
}

impl RecordEncoder {
    /// An encoder; `hashing_key` is the tenant hashing key.
    pub fn new(
        settings: EncoderSettings,
        redactor: Arc<Redactor>,
        hashing_key: Option<&[u8]>,
    ) -> Result<Self> {
        if settings.hash_user_ids && hashing_key.is_none() {
            return Err(AuditError::config(
                "hash_user_ids needs a tenant hashing key (a plain hash of a user id is still personal data)",
            ));
        }
        Ok(RecordEncoder {
            settings,
            redactor,
            memo: RedactionMemo::new(),
            hasher: ValueHasher::new(hashing_key),
            salts: SaltSource::default(),
            principal_cache: None,
            data: Vec::with_capacity(4096),
            parts: Vec::with_capacity(4),
            payload: Vec::with_capacity(4096),
            has_payload: false,
            ids: String::with_capacity(80),
        })
    }

    fn principal(&self, event: Option<&Arc<Principal>>) -> Principal {
        let d = &self.settings.principal;
        let mut p = match event {
            Some(p) => (**p).clone(),
            None => d.clone(),
        };
        if p.tenant_id.is_none() {
            p.tenant_id.clone_from(&d.tenant_id);
        }
        if p.agent_id.is_none() {
            p.agent_id.clone_from(&d.agent_id);
        }
        if p.session_id.is_none() {
            p.session_id.clone_from(&d.session_id);
        }
        if p.caller.is_none() {
            p.caller = d.caller;
        }
        if p.user_id.is_none() && p.user_id_hash.is_none() {
            p.user_id.clone_from(&d.user_id);
            p.user_id_hash.clone_from(&d.user_id_hash);
        }
        if self.settings.hash_user_ids
            && let Some(uid) = p.user_id.take()
        {
            p.user_id_hash = Some(self.hasher.hash_bytes(uid.as_bytes()));
        }
        p
    }

    fn encoded_principal(&mut self, event: Option<Arc<Principal>>) -> Result<()> {
        if let Some((cached, _)) = &self.principal_cache {
            let same = match (cached, &event) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if same {
                return Ok(());
            }
        }
        let p = self.principal(event.as_ref());
        let bytes = if p == Principal::default() {
            None
        } else {
            let v = serde_json::to_value(&p).map_err(json_err)?;
            Some(jcs::canonicalize(&v)?)
        };
        self.principal_cache = Some((event, bytes));
        Ok(())
    }

    /// The stored payload of the last [`RecordEncoder::encode`]:
    /// `{"data":…,"salt":…}` as canonical JSON text, if the event stored one.
    pub fn payload(&self) -> Option<&[u8]> {
        self.has_payload.then_some(self.payload.as_slice())
    }

    /// Fills `env` with the envelope of one event (without `v`,
    /// `stream_id`, `seq`, `prev`, `hash`) and keeps its stored payload
    /// for [`RecordEncoder::payload`]. Every value goes into the envelope
    /// as canonical text: no `serde_json::Map` is built per record.
    pub fn encode(&mut self, event: Event, env: &mut Envelope) -> Result<()> {
        let Event {
            ts,
            trace_id,
            span_id,
            parent_span_id,
            principal,
            retention_class,
            risk,
            capture,
            metadata,
            otel,
            body,
            payload,
        } = event;
        self.has_payload = false;
        env.clear();
        let is_tool = matches!(body, Body::ToolCall(_));
        match &body {
            Body::ToolCall(call) => tool_call_fields(call, env),
            other => env.extend_object(other)?,
        }
        // Ids and the time are ASCII with nothing to escape.
        env.ascii_with("event_id", |b| write_uuid_v7_at(ts, b));
        self.ids.clear();
        ts.write_rfc3339(&mut self.ids);
        env.ascii_with("ts", |b| b.extend_from_slice(self.ids.as_bytes()));
        if let Some(t) = trace_id {
            env.ascii_with("trace_id", |b| t.push_to(b));
        }
        if let Some(s) = span_id {
            env.ascii_with("span_id", |b| s.push_to(b));
        }
        if let Some(p) = parent_span_id {
            env.ascii_with("parent_span_id", |b| p.push_to(b));
        }
        self.encoded_principal(principal)?;
        if let Some((_, Some(p))) = &self.principal_cache {
            env.raw("principal", p);
        }
        match &retention_class {
            Some(r) => env.str("retention_class", r),
            None => env.str("retention_class", &self.settings.retention_class),
        }
        if let Some(pv) = &self.settings.policy_version {
            env.str("policy_version", pv);
        }
        if risk.is_empty() {
            env.raw("risk", br#"{"flags":[],"score":0}"#);
        } else {
            env.ser("risk", &risk)?;
        }
        if let Some(o) = otel {
            env.ser("otel", &o)?;
        }
        let capture = capture.unwrap_or(self.settings.capture);
        env.str("capture", capture.as_str());

        let mut report = RedactionReport::default();
        if let Some(meta) = metadata {
            let mut meta = Value::Object(meta);
            normalize(&mut meta, self.settings.limits.max_depth);
            // Metadata sits in the hashed envelope and cannot be erased, so
            // it is redacted in every capture mode, raw included.
            self.redactor
                .redact_value_memo(&mut meta, &mut report, &mut self.memo);
            truncate_strings(&mut meta, 1024);
            env.value("metadata", &meta)?;
        }

        // Each part is canonicalized once for its hash; the stored copy
        // reuses those bytes unless redaction or truncation changed it.
        self.parts.clear();
        self.data.clear();
        let mut args_redacted = None;
        for (part, mut value) in payload {
            let start = self.data.len();
            // Most values need no normalizing: canonicalizing within the
            // payload's depth limit says so, and normalizing first would be
            // another walk of every value.
            let max_depth = self.settings.limits.max_depth;
            if jcs::canonicalize_within(&value, &mut self.data, max_depth).is_err() {
                normalize(&mut value, max_depth);
                jcs::canonicalize_into(&value, &mut self.data)?;
            }
            let hashed = self.data.get(start..).unwrap_or_default();
            let hasher = &self.hasher;
            env.ascii_with(part.hash_field(), |b| hasher.push_hash(hashed, b));
            match capture {
                CaptureMode::Hash => {
                    self.data.truncate(start);
                    if part == PayloadPart::Args {
                        args_redacted = Some(true);
                    }
                }
                CaptureMode::Redacted | CaptureMode::Raw => {
                    let mut changed = false;
                    if capture == CaptureMode::Redacted {
                        let before = report.total();
                        self.redactor
                            .redact_value_memo(&mut value, &mut report, &mut self.memo);
                        changed = report.total() > before;
                        if part == PayloadPart::Args {
                            args_redacted = Some(changed);
                        }
                    } else if part == PayloadPart::Args {
                        args_redacted = Some(false);
                    }
                    // No string of a value is longer than the value's canonical
                    // text: one that fits the limit, unredacted, has nothing to cut.
                    let max_string = self.settings.limits.max_string_bytes;
                    if changed || self.data.len() - start > max_string {
                        changed |= truncate_strings(&mut value, max_string);
                    }
                    if changed {
                        self.data.truncate(start);
                        jcs::canonicalize_into(&value, &mut self.data)?;
                    }
                    self.parts.push((part.as_str(), start..self.data.len()));
                }
            }
        }
        if is_tool && let Some(r) = args_redacted {
            env.bool("args_redacted", r);
        }
        if !report.is_empty() {
            env.with("redactions".into(), |b| report.write_canonical(b));
        }
        if !self.parts.is_empty() {
            // Part names are ASCII: byte order is RFC 8785 order.
            self.parts.sort_unstable_by_key(|(name, _)| *name);
            let salt = self.salts.next_salt();
            self.payload.clear();
            self.payload.extend_from_slice(b"{\"data\":");
            let data_start = self.payload.len();
            self.payload.push(b'{');
            for (i, (name, range)) in self.parts.iter().enumerate() {
                if i > 0 {
                    self.payload.push(b',');
                }
                jcs::write_json_string(name, &mut self.payload);
                self.payload.push(b':');
                self.payload
                    .extend_from_slice(self.data.get(range.clone()).unwrap_or_default());
            }
            self.payload.push(b'}');
            let digest: [u8; 32] = Sha256::new()
                .chain_update(salt)
                .chain_update(self.payload.get(data_start..).unwrap_or_default())
                .finalize()
                .into();
            env.ascii_with("payload_digest", |b| crate::chain::push_sha256(b, &digest));
            // The stored payload is itself canonical ("data" sorts before
            // "salt"), so a verifier can check the digest over its bytes
            // without parsing them.
            self.payload.extend_from_slice(b",\"salt\":\"");
            crate::ids::push_hex_bytes(&mut self.payload, &salt);
            self.payload.extend_from_slice(b"\"}");
            self.has_payload = true;
        }
        Ok(())
    }
}

/// The fields of a `tool_call` body, written straight into the envelope.
///
/// The most common record's body: serde writes it through its map path
/// (its `Outcome` is flattened), a key and a dispatch per field. The
/// destructuring has no `..`, so a field added to these structs does not
/// compile here until it is written; a test compares the output with the
/// serde path's for every combination of fields.
fn tool_call_fields(call: &ToolCall, env: &mut Envelope) {
    let ToolCall {
        tool,
        outcome,
        permissions_used,
        permissions_denied,
        data_classification,
        environment,
        authorization_method,
        data_subjects_affected,
        output_bytes,
    } = call;
    let ToolInfo {
        name,
        version,
        publisher,
        trust_level,
    } = tool;
    let Outcome {
        result_status,
        duration_ms,
        error_type,
    } = outcome;
    env.raw("kind", b"\"tool_call\"");
    env.with("tool".into(), |b| {
        // RFC 8785 order: name, publisher, trust_level, version.
        b.extend_from_slice(b"{\"name\":");
        jcs::write_json_string(name, b);
        for (key, value) in [
            (&b",\"publisher\":"[..], publisher),
            (&b",\"trust_level\":"[..], trust_level),
            (&b",\"version\":"[..], version),
        ] {
            if let Some(v) = value {
                b.extend_from_slice(key);
                jcs::write_json_string(v, b);
            }
        }
        b.push(b'}');
    });
    if let Some(s) = result_status {
        let text: &[u8] = match s {
            ResultStatus::Ok => b"\"ok\"",
            ResultStatus::Error => b"\"error\"",
            ResultStatus::Timeout => b"\"timeout\"",
            ResultStatus::Blocked => b"\"blocked\"",
            ResultStatus::Cancelled => b"\"cancelled\"",
        };
        env.raw("result_status", text);
    }
    if let Some(d) = duration_ms {
        env.with("duration_ms".into(), |b| {
            // As serde's path: a non-finite number is written as null.
            if jcs::write_f64(*d, b).is_err() {
                b.extend_from_slice(b"null");
            }
        });
    }
    if let Some(e) = error_type {
        env.str("error_type", e);
    }
    for (key, list) in [
        ("permissions_used", permissions_used),
        ("permissions_denied", permissions_denied),
    ] {
        if !list.is_empty() {
            env.with(key.into(), |b| {
                b.push(b'[');
                for (i, p) in list.iter().enumerate() {
                    if i > 0 {
                        b.push(b',');
                    }
                    jcs::write_json_string(p, b);
                }
                b.push(b']');
            });
        }
    }
    for (key, value) in [
        ("data_classification", data_classification),
        ("environment", environment),
        ("authorization_method", authorization_method),
    ] {
        if let Some(v) = value {
            env.str(key, v);
        }
    }
    // A counter above 2^53-1 travels as a string, as `Counter` serializes.
    if let Some(n) = data_subjects_affected {
        env.u64("data_subjects_affected", n.0);
    }
    if let Some(n) = output_bytes {
        env.u64("output_bytes", n.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Counter;

    fn text(env: &mut Envelope) -> String {
        let mut out = Vec::new();
        env.write_canonical(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn tool_call_fields_match_the_serde_path() {
        let strings = ["", "crm.update", "é\"\\\n\u{1}x", "\u{1f600}"];
        let statuses = [
            None,
            Some(ResultStatus::Ok),
            Some(ResultStatus::Error),
            Some(ResultStatus::Timeout),
            Some(ResultStatus::Blocked),
            Some(ResultStatus::Cancelled),
        ];
        let durations = [
            None,
            Some(12.5),
            Some(0.0),
            Some(-0.0),
            Some(1e21),
            Some(f64::NAN),
        ];
        let counters = [
            None,
            Some(Counter(0)),
            Some(Counter(1 << 53)),
            Some(Counter(u64::MAX)),
        ];
        let mut n = 0;
        // Each field cycles through its values at its own pace, so the
        // cases cover every value of every field and many combinations.
        for i in 0..720usize {
            let pick = |opts: usize, salt: usize| (i / salt.max(1)) % opts;
            let opt = |k: usize, salt: usize| {
                let j = pick(strings.len() + 1, salt);
                (j > 0).then(|| strings[(j - 1 + k) % strings.len()].to_string())
            };
            let list = |salt: usize| -> Vec<String> {
                strings
                    .iter()
                    .take(pick(3, salt))
                    .map(|s| s.to_string())
                    .collect()
            };
            let call = ToolCall {
                tool: ToolInfo {
                    name: strings[pick(strings.len(), 1)].into(),
                    version: opt(0, 2),
                    publisher: opt(1, 3),
                    trust_level: opt(2, 5),
                },
                outcome: Outcome {
                    result_status: statuses[pick(statuses.len(), 7)],
                    duration_ms: durations[pick(durations.len(), 11)],
                    error_type: opt(3, 13),
                },
                permissions_used: list(17),
                permissions_denied: list(19),
                data_classification: opt(0, 23),
                environment: opt(1, 29),
                authorization_method: opt(2, 31),
                data_subjects_affected: counters[pick(counters.len(), 37)],
                output_bytes: counters[pick(counters.len(), 41)],
            };
            let mut fast = Envelope::new();
            tool_call_fields(&call, &mut fast);
            let mut serde = Envelope::new();
            serde.extend_object(&Body::ToolCall(call.clone())).unwrap();
            assert_eq!(text(&mut fast), text(&mut serde), "{call:?}");
            n += 1;
        }
        assert_eq!(n, 720);
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;
    use crate::redact::RedactionConfig;
    use serde_json::json;

    fn stored(limits: PayloadLimits, capture: CaptureMode, args: Value) -> String {
        let settings = EncoderSettings {
            retention_class: "standard".into(),
            capture,
            limits,
            ..Default::default()
        };
        let redactor = Arc::new(Redactor::new(RedactionConfig::default()).unwrap());
        let mut encoder = RecordEncoder::new(settings, redactor, None).unwrap();
        let event =
            Event::new(Body::ToolCall(ToolCall::default())).with_part(PayloadPart::Args, args);
        let mut env = Envelope::new();
        encoder.encode(event, &mut env).unwrap();
        String::from_utf8(encoder.payload().unwrap().to_vec()).unwrap()
    }

    /// The encoder skips the truncation walk for a value whose canonical
    /// text fits the string limit, unless redaction changed it: a token
    /// can be longer than what it replaces.
    #[test]
    fn strings_are_cut_when_redaction_makes_them_too_long() {
        let limits = |max_string_bytes| PayloadLimits {
            max_string_bytes,
            max_depth: 64,
        };
        let short = json!("mail x@ab.io");
        let s = stored(limits(14), CaptureMode::Redacted, short.clone());
        assert!(
            s.contains(r#""$truncated""#) && s.contains(r#""head":"mail [REDACTED""#),
            "{s}"
        );
        assert!(s.contains(r#""bytes":21"#), "{s}");
        // Fits before and after: kept as it is.
        let s = stored(limits(64), CaptureMode::Redacted, short.clone());
        assert!(s.contains(r#""args":"mail [REDACTED:EMAIL]""#), "{s}");
        let s = stored(limits(14), CaptureMode::Raw, short);
        assert!(s.contains(r#""args":"mail x@ab.io""#), "{s}");
        // Too long before redaction, nothing to redact: cut.
        let s = stored(limits(8), CaptureMode::Raw, json!({"k": "0123456789"}));
        assert!(s.contains(r#""head":"01234567""#), "{s}");
        // Deeper than the limit, and an integer past 2^53: normalized.
        let s = stored(
            PayloadLimits {
                max_string_bytes: 100,
                max_depth: 2,
            },
            CaptureMode::Raw,
            json!({"a": [[1]], "n": u64::MAX}),
        );
        assert!(
            s.contains(r#""a":[{"$truncated":{"reason":"depth"}}]"#),
            "{s}"
        );
        assert!(s.contains(r#""n":"18446744073709551615""#), "{s}");
    }
}
