//! Log settings as plain data, for the bindings and configuration files:
//! one set of option names for every language (`snake_case`, with the
//! `camelCase` spelling accepted for TypeScript), turned into a
//! [`LogConfig`]. Unknown options are an error, not silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{AuditError, Result};
use crate::policy::PolicyEngine;
use crate::record::{Caller, CaptureMode, Principal};
use crate::redact::RedactionConfig;
use crate::writer::{FsyncPolicy, KeySource, LogConfig, Overflow, PolicySource};
use std::sync::Arc;

/// Redaction settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionOptions {
    /// Extra patterns by name: `{"employee_id": "EMP-\\d{6}"}`.
    #[serde(default, alias = "customPatterns")]
    pub custom_patterns: std::collections::BTreeMap<String, String>,
    /// Exact values never redacted.
    #[serde(default, alias = "allowValues")]
    pub allow_values: Vec<String>,
    /// Regexes of values never redacted.
    #[serde(default, alias = "allowPatterns")]
    pub allow_patterns: Vec<String>,
    /// Extra object keys whose values are secret.
    #[serde(default, alias = "secretKeys")]
    pub secret_keys: Vec<String>,
}

/// Every option of a log writer. Only `dir` is required.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogOptions {
    /// Log directory.
    pub dir: PathBuf,
    /// Path of the Ed25519 PKCS#8 PEM signing key.
    #[serde(default, alias = "signingKey")]
    pub signing_key: Option<PathBuf>,
    /// The signing key as PEM text.
    #[serde(default, alias = "signingKeyPem")]
    pub signing_key_pem: Option<String>,
    /// Default tenant.
    #[serde(default, alias = "tenantId")]
    pub tenant_id: Option<String>,
    /// Default agent.
    #[serde(default, alias = "agentId")]
    pub agent_id: Option<String>,
    /// Default user.
    #[serde(default, alias = "userId")]
    pub user_id: Option<String>,
    /// Default session.
    #[serde(default, alias = "sessionId")]
    pub session_id: Option<String>,
    /// Default caller: `human` or `system`.
    #[serde(default)]
    pub caller: Option<Caller>,
    /// Default retention class (`standard_7y`).
    #[serde(default, alias = "retentionClass")]
    pub retention_class: Option<String>,
    /// Policy version stamped on every event.
    #[serde(default, alias = "policyVersion")]
    pub policy_version: Option<String>,
    /// `hash` | `redacted` (default) | `raw`.
    #[serde(default)]
    pub capture: Option<String>,
    /// Tenant hashing key (UTF-8 text): keyed hashes and redaction tokens.
    #[serde(default, alias = "hashingKey")]
    pub hashing_key: Option<String>,
    /// Store user ids as keyed hashes.
    #[serde(default, alias = "hashUserIds")]
    pub hash_user_ids: bool,
    /// Redaction settings.
    #[serde(default)]
    pub redaction: Option<RedactionOptions>,
    /// Queue bound in events.
    #[serde(default, alias = "queueCapacity")]
    pub queue_capacity: Option<usize>,
    /// Queue bound in bytes.
    #[serde(default, alias = "queueMaxBytes")]
    pub queue_max_bytes: Option<usize>,
    /// `drop` (default) or `block`.
    #[serde(default)]
    pub overflow: Option<String>,
    /// How long `block` waits, in ms (default 1000).
    #[serde(default, alias = "blockTimeoutMs")]
    pub block_timeout_ms: Option<u64>,
    /// Checkpoint every N records.
    #[serde(default, alias = "checkpointEvery")]
    pub checkpoint_every: Option<u64>,
    /// Checkpoint at least this often (ms) while records are unsigned.
    #[serde(default, alias = "checkpointIntervalMs")]
    pub checkpoint_interval_ms: Option<u64>,
    /// `always`, `never`, or a number of milliseconds.
    #[serde(default)]
    pub fsync: Option<Value>,
    /// Rotate segments past this size.
    #[serde(default, alias = "segmentMaxBytes")]
    pub segment_max_bytes: Option<u64>,
    /// Sign every record, not just checkpoints.
    #[serde(default, alias = "signRecords")]
    pub sign_records: bool,
    /// Longest string stored in a payload before truncation.
    #[serde(default, alias = "maxStringBytes")]
    pub max_string_bytes: Option<usize>,
    /// Policy: a TOML file path, `builtin` (the default) or `off`.
    #[serde(default)]
    pub policy: Option<String>,
    /// Policy given as TOML text instead of a file.
    #[serde(default, alias = "policyToml")]
    pub policy_toml: Option<String>,
    /// Exporter URL (`nats://HOST:PORT` ...): ship the log off the machine
    /// from a background thread of the agent's process. Read by the
    /// language bindings, which start the exporter (`agent-audit-ship`)
    /// next to the writer; [`LogOptions::into_config`] ignores it.
    #[serde(default)]
    pub export: Option<String>,
    /// The exporter's name, which names its cursor
    /// (`LOG/.ship-cursor.<name>.json`; default from the URL's scheme,
    /// e.g. `nats`). Read by the bindings, ignored by `into_config`.
    #[serde(default, alias = "exportName")]
    pub export_name: Option<String>,
}

impl LogOptions {
    /// Reads options from a JSON object; unknown or mistyped options are
    /// a `Config` error naming the option.
    pub fn from_value(v: Value) -> Result<LogOptions> {
        serde_json::from_value(v).map_err(|e| AuditError::config(format!("invalid option: {e}")))
    }

    /// The writer configuration these options describe. `export` and
    /// `export_name` are not part of it: the bindings start the exporter.
    pub fn into_config(self) -> Result<LogConfig> {
        if self.dir.as_os_str().is_empty() {
            return Err(AuditError::config("dir must not be empty"));
        }
        let mut c = LogConfig::new(self.dir);
        c.key = match (self.signing_key, self.signing_key_pem) {
            (Some(_), Some(_)) => {
                return Err(AuditError::config(
                    "give signing_key (a path) or signing_key_pem, not both",
                ));
            }
            (Some(p), None) => KeySource::File(p),
            (None, Some(pem)) => KeySource::Pem(pem),
            (None, None) => KeySource::Development,
        };
        c.principal = Principal {
            tenant_id: self.tenant_id,
            user_id: self.user_id,
            user_id_hash: None,
            agent_id: self.agent_id,
            session_id: self.session_id,
            caller: self.caller,
        };
        if let Some(r) = self.retention_class {
            c.retention_class = r;
        }
        c.policy_version = self.policy_version;
        c.policy = match (self.policy.as_deref(), self.policy_toml) {
            (Some(_), Some(_)) => {
                return Err(AuditError::config(
                    "give policy (a path) or policy_toml, not both",
                ));
            }
            (None, Some(text)) => {
                PolicySource::Engine(Arc::new(PolicyEngine::from_toml(&text, "<policy_toml>")?))
            }
            (None | Some("builtin"), None) => PolicySource::Builtin,
            (Some("off"), None) => PolicySource::Off,
            (Some(path), None) => PolicySource::Engine(Arc::new(PolicyEngine::from_file(
                std::path::Path::new(path),
            )?)),
        };
        if let Some(m) = self.capture {
            c.capture = CaptureMode::parse(&m)?;
        }
        c.hashing_key = self.hashing_key.map(String::into_bytes);
        c.hash_user_ids = self.hash_user_ids;
        if let Some(r) = self.redaction {
            c.redaction = RedactionConfig {
                hmac_key: c.hashing_key.clone(),
                custom_patterns: r.custom_patterns.into_iter().collect(),
                allow_values: r.allow_values,
                allow_patterns: r.allow_patterns,
                secret_keys: r.secret_keys,
            };
        } else {
            c.redaction.hmac_key = c.hashing_key.clone();
        }
        if let Some(n) = self.queue_capacity {
            c.queue_capacity = n;
        }
        if let Some(n) = self.queue_max_bytes {
            c.queue_max_bytes = n;
        }
        let block = Duration::from_millis(self.block_timeout_ms.unwrap_or(1000));
        c.overflow = match self.overflow.as_deref() {
            None | Some("drop") => Overflow::Drop,
            Some("block") => Overflow::Block(block),
            Some(other) => {
                return Err(AuditError::config(format!(
                    "overflow must be drop or block, got {other:?}"
                )));
            }
        };
        if let Some(n) = self.checkpoint_every {
            c.checkpoint_every = n;
        }
        if let Some(ms) = self.checkpoint_interval_ms {
            c.checkpoint_interval = Duration::from_millis(ms.max(1));
        }
        if let Some(f) = self.fsync {
            c.fsync = match &f {
                Value::String(s) if s == "always" => FsyncPolicy::Always,
                Value::String(s) if s == "never" => FsyncPolicy::Never,
                Value::Number(n) if n.as_u64().is_some() => {
                    FsyncPolicy::Interval(Duration::from_millis(n.as_u64().unwrap_or(1000)))
                }
                other => {
                    return Err(AuditError::config(format!(
                        "fsync must be \"always\", \"never\" or milliseconds, got {other}"
                    )));
                }
            };
        }
        if let Some(n) = self.segment_max_bytes {
            c.segment_max_bytes = n;
        }
        c.sign_records = self.sign_records;
        if let Some(n) = self.max_string_bytes {
            c.limits.max_string_bytes = n;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snake_and_camel_case_both_work() {
        let a =
            LogOptions::from_value(json!({"dir": "/tmp/x", "tenant_id": "t", "fsync": "always"}))
                .unwrap()
                .into_config()
                .unwrap();
        let b = LogOptions::from_value(json!({"dir": "/tmp/x", "tenantId": "t", "fsync": 250}))
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(a.principal.tenant_id, b.principal.tenant_id);
        assert_eq!(a.fsync, FsyncPolicy::Always);
        assert_eq!(b.fsync, FsyncPolicy::Interval(Duration::from_millis(250)));
    }

    #[test]
    fn unknown_and_bad_options_are_config_errors() {
        for bad in [
            json!({"dir": "/tmp/x", "tenant": "t"}),
            json!({"dir": "/tmp/x", "capture": "everything"}),
            json!({"dir": "/tmp/x", "overflow": "explode"}),
            json!({"dir": "/tmp/x", "fsync": "sometimes"}),
            json!({"tenant_id": "t"}),
        ] {
            let r = LogOptions::from_value(bad.clone()).and_then(LogOptions::into_config);
            let e = r.unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}: {e}");
        }
    }

    #[test]
    fn export_options_are_read_and_left_to_the_bindings() {
        let o = LogOptions::from_value(
            json!({"dir": "/tmp/x", "export": "nats://127.0.0.1:4222", "exportName": "central"}),
        )
        .unwrap();
        assert_eq!(o.export.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(o.export_name.as_deref(), Some("central"));
        assert!(o.into_config().is_ok());
        let o = LogOptions::from_value(json!({"dir": "/tmp/x", "export_name": "n"})).unwrap();
        assert_eq!(o.export_name.as_deref(), Some("n"));
        assert!(
            LogOptions::from_value(json!({"dir": "/tmp/x", "exporter": "nats://h:1"})).is_err()
        );
    }
}
