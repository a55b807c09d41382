//! Turning a submitted [`Event`] into a record envelope and payload, on the
//! background thread: ids and time, defaults from the log's settings,
//! user-id hashing, part hashes over the unredacted values, redaction,
//! truncation, the salted payload digest.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chain::fmt_sha256;
use crate::chain::json_err;
use crate::error::{AuditError, Result};
use crate::ids::uuid_v7_at;
use crate::payload::{PayloadLimits, SaltSource, ValueHasher, normalize, truncate_strings};
use crate::record::{Body, CaptureMode, Event, PayloadPart, Principal};
use crate::redact::{RedactionReport, Redactor};

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

/// An encoded event: the envelope fields and the stored payload's JSON text.
pub type Encoded = (Map<String, Value>, Option<Vec<u8>>);

/// Builds envelopes and payloads. One per writer thread.
pub struct RecordEncoder {
    settings: EncoderSettings,
    redactor: Arc<Redactor>,
    hasher: ValueHasher,
    /// User ids are always hashed under the tenant key when hashing is on.
    salts: SaltSource,
    scratch: Vec<u8>,
    // The last principal seen and its encoded form: every event of a trace
    // shares one `Arc`, so this saves a clone, a hash and a serialization.
    principal_cache: Option<(Option<Arc<Principal>>, Option<Value>)>,
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
            hasher: ValueHasher::new(hashing_key),
            salts: SaltSource::default(),
            scratch: Vec::with_capacity(4096),
            principal_cache: None,
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

    fn encoded_principal(&mut self, event: Option<Arc<Principal>>) -> Result<Option<Value>> {
        if let Some((cached, value)) = &self.principal_cache {
            let same = match (cached, &event) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if same {
                return Ok(value.clone());
            }
        }
        let p = self.principal(event.as_ref());
        let value = if p == Principal::default() {
            None
        } else {
            Some(serde_json::to_value(&p).map_err(json_err)?)
        };
        self.principal_cache = Some((event, value.clone()));
        Ok(value)
    }

    /// The envelope (without `v`, `stream_id`, `seq`, `prev`, `hash`) and
    /// the stored payload `{"data":…,"salt":…}` of one event, as canonical
    /// JSON text.
    pub fn encode(&mut self, event: Event) -> Result<Encoded> {
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
        let is_tool = matches!(body, Body::ToolCall(_));
        let Value::Object(mut env) = serde_json::to_value(&body).map_err(json_err)? else {
            return Err(AuditError::invalid_event("event body is not an object"));
        };
        env.insert("event_id".into(), Value::String(uuid_v7_at(ts).to_string()));
        env.insert("ts".into(), Value::String(ts.to_rfc3339()));
        if let Some(t) = trace_id {
            env.insert("trace_id".into(), Value::String(t.to_string()));
        }
        if let Some(s) = span_id {
            env.insert("span_id".into(), Value::String(s.to_string()));
        }
        if let Some(p) = parent_span_id {
            env.insert("parent_span_id".into(), Value::String(p.to_string()));
        }
        if let Some(p) = self.encoded_principal(principal)? {
            env.insert("principal".into(), p);
        }
        let retention = retention_class
            .map(|r| r.to_string())
            .unwrap_or_else(|| self.settings.retention_class.clone());
        env.insert("retention_class".into(), Value::String(retention));
        if let Some(pv) = &self.settings.policy_version {
            env.insert("policy_version".into(), Value::String(pv.clone()));
        }
        env.insert(
            "risk".into(),
            serde_json::to_value(&risk).map_err(json_err)?,
        );
        if let Some(o) = otel {
            env.insert("otel".into(), serde_json::to_value(&o).map_err(json_err)?);
        }
        let capture = capture.unwrap_or(self.settings.capture);
        env.insert(
            "capture".into(),
            serde_json::to_value(capture).map_err(json_err)?,
        );

        let mut report = RedactionReport::default();
        if let Some(meta) = metadata {
            let mut meta = Value::Object(meta);
            normalize(&mut meta, self.settings.limits.max_depth);
            // Metadata sits in the hashed envelope and cannot be erased, so
            // it is redacted in every capture mode, raw included.
            self.redactor.redact_value(&mut meta, &mut report);
            truncate_strings(&mut meta, 1024);
            env.insert("metadata".into(), meta);
        }

        let mut data = Map::new();
        let mut args_redacted = None;
        for (part, mut value) in payload {
            normalize(&mut value, self.settings.limits.max_depth);
            let h = self.hasher.hash_value(&value, &mut self.scratch)?;
            env.insert(part.hash_field().into(), Value::String(h));
            match capture {
                CaptureMode::Hash => {
                    if part == PayloadPart::Args {
                        args_redacted = Some(true);
                    }
                }
                CaptureMode::Redacted | CaptureMode::Raw => {
                    if capture == CaptureMode::Redacted {
                        let before = report.total();
                        self.redactor.redact_value(&mut value, &mut report);
                        if part == PayloadPart::Args {
                            args_redacted = Some(report.total() > before);
                        }
                    } else if part == PayloadPart::Args {
                        args_redacted = Some(false);
                    }
                    truncate_strings(&mut value, self.settings.limits.max_string_bytes);
                    data.insert(part.as_str().into(), value);
                }
            }
        }
        if is_tool && let Some(r) = args_redacted {
            env.insert("args_redacted".into(), Value::Bool(r));
        }
        if !report.is_empty() {
            env.insert("redactions".into(), report.to_json());
        }
        let stored = if data.is_empty() {
            None
        } else {
            let salt = self.salts.next_salt();
            let data = Value::Object(data);
            self.scratch.clear();
            crate::jcs::canonicalize_into(&data, &mut self.scratch)?;
            let digest: [u8; 32] = Sha256::new()
                .chain_update(salt)
                .chain_update(&self.scratch)
                .finalize()
                .into();
            env.insert("payload_digest".into(), Value::String(fmt_sha256(&digest)));
            // The stored payload is itself canonical ("data" sorts before
            // "salt"), so a verifier can check the digest over its bytes
            // without parsing them.
            let mut p = Vec::with_capacity(self.scratch.len() + 96);
            p.extend_from_slice(b"{\"data\":");
            p.extend_from_slice(&self.scratch);
            p.extend_from_slice(b",\"salt\":\"");
            p.extend_from_slice(crate::ids::to_hex(&salt).as_bytes());
            p.extend_from_slice(b"\"}");
            Some(p)
        };
        Ok((env, stored))
    }
}
