//! Schema v1: the typed events callers submit and the kind-specific fields
//! of every record kind.
//!
//! An [`Event`] is what an agent hands to the log: envelope context (time,
//! trace ids, principal, risk), one [`Body`] for its kind, and optional
//! payload parts (arguments, results, prompts ...). The writer turns it into
//! a record: it adds `v`, `stream_id`, `seq`, `event_id`, the part hashes,
//! `payload_digest`, `prev` and `hash` (see `chain`). Field names follow the
//! seeds (`args_hash`, `result_status`, `duration_ms`, `input_tokens` ...).
//! Writer-only kinds (`gap`, `checkpoint`, `stream_start`, `stream_end`)
//! cannot be submitted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{AuditError, Result};
use crate::ids::{SpanId, Timestamp, TraceId};
use crate::jcs::MAX_SAFE_INTEGER;

/// Schema version written in every record's `v`.
pub const SCHEMA_VERSION: u64 = 1;

/// A counter: a JSON number up to 2^53-1, a decimal string above, so that
/// every value survives canonical JSON (RFC 8785 numbers are doubles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Counter(pub u64);

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.0 <= MAX_SAFE_INTEGER {
            s.serialize_u64(self.0)
        } else {
            s.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Counter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            N(u64),
            S(String),
        }
        match Repr::deserialize(d)? {
            Repr::N(n) => Ok(Counter(n)),
            Repr::S(s) => s
                .parse::<u64>()
                .map(Counter)
                .map_err(|_| serde::de::Error::custom(format!("not a counter: {s:?}"))),
        }
    }
}

impl From<u64> for Counter {
    fn from(n: u64) -> Self {
        Counter(n)
    }
}

/// Every record kind of schema v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An agent task begins; carries the task kind and the input hash.
    TraceStart,
    /// An agent task ends; carries the outcome and the trace's risk score.
    TraceEnd,
    /// One model call.
    LlmCall,
    /// One tool invocation.
    ToolCall,
    /// A sub-agent was started (a span the child's steps nest under).
    AgentSpawn,
    /// The agent chose an action (e.g. the tool calls an LLM requested).
    Decision,
    /// A read, write or delete of agent memory.
    Memory,
    /// Documents were retrieved (RAG).
    Retrieval,
    /// A guardrail or classifier verdict.
    Guardrail,
    /// A human approved, denied or edited an action.
    HumanReview,
    /// A policy rule flagged or blocked something.
    Policy,
    /// Events were lost (queue full, I/O trouble); carries the count.
    Gap,
    /// Signed Merkle tree head over the stream so far.
    Checkpoint,
    /// First record of a stream: writer identity and public key.
    StreamStart,
    /// Last record of a stream (before its final checkpoint).
    StreamEnd,
}

impl Kind {
    /// All kinds, in schema order.
    pub const ALL: [Kind; 15] = [
        Kind::TraceStart,
        Kind::TraceEnd,
        Kind::LlmCall,
        Kind::ToolCall,
        Kind::AgentSpawn,
        Kind::Decision,
        Kind::Memory,
        Kind::Retrieval,
        Kind::Guardrail,
        Kind::HumanReview,
        Kind::Policy,
        Kind::Gap,
        Kind::Checkpoint,
        Kind::StreamStart,
        Kind::StreamEnd,
    ];

    /// The record's `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TraceStart => "trace_start",
            Kind::TraceEnd => "trace_end",
            Kind::LlmCall => "llm_call",
            Kind::ToolCall => "tool_call",
            Kind::AgentSpawn => "agent_spawn",
            Kind::Decision => "decision",
            Kind::Memory => "memory",
            Kind::Retrieval => "retrieval",
            Kind::Guardrail => "guardrail",
            Kind::HumanReview => "human_review",
            Kind::Policy => "policy",
            Kind::Gap => "gap",
            Kind::Checkpoint => "checkpoint",
            Kind::StreamStart => "stream_start",
            Kind::StreamEnd => "stream_end",
        }
    }

    /// Parses a `kind` string.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// Kinds only the writer may produce.
    pub fn is_writer_only(self) -> bool {
        matches!(
            self,
            Kind::Gap | Kind::Checkpoint | Kind::StreamStart | Kind::StreamEnd
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the principal's caller is a person or a system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Caller {
    /// A human started the task.
    Human,
    /// A scheduled job, another service or another agent started it.
    System,
}

/// Who the agent acted for. Shared (`Arc`) by every event of a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Principal {
    /// The customer organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The end user, in clear (only when user ids are not hashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The end user as a keyed hash (`hmac-sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id_hash: Option<String>,
    /// The agent (name and version, e.g. `writer-v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The conversation or session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Human or system caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
}

impl Principal {
    /// Checks what [`Event::validate`] checks of an event's principal: a
    /// user in clear or hashed, not both, and a hash in its format.
    pub fn validate(&self) -> Result<()> {
        if self.user_id.is_some() && self.user_id_hash.is_some() {
            return Err(AuditError::invalid_event(
                "principal has both user_id and user_id_hash; give one",
            ));
        }
        if let Some(h) = &self.user_id_hash {
            let ok = ["hmac-sha256:", "sha256:"].iter().any(|pre| {
                h.strip_prefix(pre).is_some_and(|x| {
                    x.len() == 64
                        && x.bytes()
                            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                })
            });
            if !ok {
                return Err(AuditError::invalid_event(
                    "principal.user_id_hash must be hmac-sha256:<64 hex> (or sha256:<64 hex>)",
                ));
            }
        }
        Ok(())
    }
}

/// Risk flags and score carried by a step or a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    /// Flag names such as `sends_external_message`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// 0..=100.
    #[serde(default)]
    pub score: u32,
}

impl Risk {
    /// No flags, score 0.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty() && self.score == 0
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Finished normally.
    Ok,
    /// Raised or returned an error.
    Error,
    /// Ran out of time.
    Timeout,
    /// A policy stopped it before it ran.
    Blocked,
    /// Cancelled by the caller.
    Cancelled,
}

/// How much of the payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Hashes only; no payload is stored.
    Hash,
    /// Redacted payload plus hashes of the unredacted values (default).
    #[default]
    Redacted,
    /// Payload as given, plus hashes.
    Raw,
}

impl CaptureMode {
    /// `hash` | `redacted` | `raw`, as written in records.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Hash => "hash",
            CaptureMode::Redacted => "redacted",
            CaptureMode::Raw => "raw",
        }
    }

    /// Parses `hash` | `redacted` | `raw`.
    pub fn parse(s: &str) -> Result<CaptureMode> {
        match s {
            "hash" => Ok(CaptureMode::Hash),
            "redacted" => Ok(CaptureMode::Redacted),
            "raw" => Ok(CaptureMode::Raw),
            _ => Err(AuditError::config(format!(
                "capture must be hash, redacted or raw, got {s:?}"
            ))),
        }
    }
}

/// Named parts of an event's payload. Each part stored gets a
/// `<part>_hash` field in the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadPart {
    /// Tool arguments by parameter name.
    Args,
    /// Tool result.
    Result,
    /// Error message and details.
    Error,
    /// Task input (trace_start).
    Input,
    /// Task output (trace_end).
    Output,
    /// Chat messages sent to a model.
    Messages,
    /// A plain prompt.
    Prompt,
    /// The model's completion.
    Completion,
    /// Reasoning or rationale text.
    Reasoning,
    /// A retrieval query.
    Query,
    /// Retrieved documents' content.
    Documents,
    /// Memory content.
    Content,
    /// A reviewer's reason.
    Reason,
    /// Options a decision chose among.
    Alternatives,
}

impl PayloadPart {
    /// Every part.
    pub const ALL: [PayloadPart; 14] = [
        PayloadPart::Args,
        PayloadPart::Result,
        PayloadPart::Error,
        PayloadPart::Input,
        PayloadPart::Output,
        PayloadPart::Messages,
        PayloadPart::Prompt,
        PayloadPart::Completion,
        PayloadPart::Reasoning,
        PayloadPart::Query,
        PayloadPart::Documents,
        PayloadPart::Content,
        PayloadPart::Reason,
        PayloadPart::Alternatives,
    ];

    /// The part's key in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadPart::Args => "args",
            PayloadPart::Result => "result",
            PayloadPart::Error => "error",
            PayloadPart::Input => "input",
            PayloadPart::Output => "output",
            PayloadPart::Messages => "messages",
            PayloadPart::Prompt => "prompt",
            PayloadPart::Completion => "completion",
            PayloadPart::Reasoning => "reasoning",
            PayloadPart::Query => "query",
            PayloadPart::Documents => "documents",
            PayloadPart::Content => "content",
            PayloadPart::Reason => "reason",
            PayloadPart::Alternatives => "alternatives",
        }
    }

    /// The envelope field holding this part's hash (`args_hash` ...).
    pub fn hash_field(self) -> &'static str {
        match self {
            PayloadPart::Args => "args_hash",
            PayloadPart::Result => "result_hash",
            PayloadPart::Error => "error_hash",
            PayloadPart::Input => "input_hash",
            PayloadPart::Output => "output_hash",
            PayloadPart::Messages => "messages_hash",
            PayloadPart::Prompt => "prompt_hash",
            PayloadPart::Completion => "completion_hash",
            PayloadPart::Reasoning => "reasoning_hash",
            PayloadPart::Query => "query_hash",
            PayloadPart::Documents => "documents_hash",
            PayloadPart::Content => "content_hash",
            PayloadPart::Reason => "reason_hash",
            PayloadPart::Alternatives => "alternatives_hash",
        }
    }

    /// Parses a part name.
    pub fn parse(s: &str) -> Option<PayloadPart> {
        PayloadPart::ALL.iter().copied().find(|p| p.as_str() == s)
    }
}

/// A tool's identity (seed 001: name, version, publisher, trust level).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// Tool name, e.g. `db.query`.
    pub name: String,
    /// Tool version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Who publishes the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Trust tier of the tool (e.g. `gold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_level: Option<String>,
}

/// A model's identity (seed 004: name, version, provider).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model name as requested, e.g. `claude-opus`.
    pub name: String,
    /// Exact version or version hash as answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Provider, e.g. `anthropic` (OTel `gen_ai.provider.name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// A retrieved document: id and content hash (seed 004).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DocRef {
    /// Document id.
    pub id: String,
    /// `sha256:` of the document content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Retrieval score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// A guardrail's verdict (seed 004: id, verdict, score).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardrailVerdict {
    /// Guardrail id, e.g. `prompt_guard_v2`.
    pub id: String,
    /// Guardrail version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The verdict label, e.g. `BENIGN`.
    pub verdict: String,
    /// Classifier score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Fields shared by every span-like step (tools, model calls, sub-agents).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// ok | error | timeout | blocked | cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<ResultStatus>,
    /// Wall time of the step in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Exception class or error name when the step failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

/// `trace_start`: an agent task begins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceStart {
    /// The task kind, e.g. `customer_support_resolution`.
    pub task_kind: String,
    /// How the caller was authorised (oauth, api_key, client_credentials ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_method: Option<String>,
    /// Data classification of the task (public, internal, confidential, restricted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classification: Option<String>,
    /// Deployment environment (production, staging ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// System prompt version in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_version: Option<String>,
}

/// `trace_end`: an agent task ends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceEnd {
    /// completed | failed | cancelled | blocked | timeout.
    pub outcome: String,
    /// Whole-task wall time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Error type when the task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

/// `llm_call`: one model call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// The model.
    pub model: ModelInfo,
    /// Status, duration, error.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Prompt tokens (OTel `gen_ai.usage.input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<Counter>,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Counter>,
    /// Cost of the call in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Generation parameters (temperature, top_p, max_tokens ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
    /// System prompt version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt_version: Option<String>,
    /// Why generation stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Tools the model asked to call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls_requested: Vec<String>,
}

/// `tool_call`: one tool invocation (seed 001's invocation record).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool.
    pub tool: ToolInfo,
    /// Status, duration, error.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Permissions the call used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions_used: Vec<String>,
    /// Permissions the call asked for and was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions_denied: Vec<String>,
    /// Classification of the data touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classification: Option<String>,
    /// Deployment environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// How the call was authorised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_method: Option<String>,
    /// Number of data subjects whose data the call touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_subjects_affected: Option<Counter>,
    /// Size of the result in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<Counter>,
}

/// `agent_spawn`: a sub-agent was started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSpawn {
    /// The child agent's id.
    pub child_agent_id: String,
    /// Status, duration, error.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What the child was asked to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_kind: Option<String>,
}

/// `decision`: the agent chose what to do next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What was decided, e.g. `call_tools` or `escalate_to_human`.
    pub decision: String,
    /// Tools chosen, when the decision is to call tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Confidence 0..1 when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// `memory`: agent memory was read, written or deleted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryOp {
    /// read | write | delete.
    pub operation: String,
    /// Which memory store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// The memory key (hash it when it may be personal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `retrieval`: documents were retrieved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    /// Index or source name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Documents retrieved, by id and hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retrieved_docs: Vec<DocRef>,
    /// Status, duration, error.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// `guardrail`: a guardrail or classifier gave a verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Guardrail {
    /// The verdicts given.
    pub guardrails: Vec<GuardrailVerdict>,
    /// What was checked: input, output, tool_args ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What followed: allow, flag, redact, block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// `human_review`: a person approved, denied or edited an action.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HumanReview {
    /// approved | denied | edited | timeout.
    pub decision: String,
    /// Who reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// The span of the step that was reviewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_span_id: Option<String>,
    /// When the decision was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// How long the action waited for the decision, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<f64>,
    /// The policy rule that asked for the review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
}

/// `policy`: a rule flagged or blocked something.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyVerdict {
    /// The rule's id.
    pub rule_id: String,
    /// flag | alert | review | require_approval | block.
    pub action: String,
    /// The tool concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The span of the step concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_span_id: Option<String>,
    /// Why the rule matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `gap`: events were lost. Loss is never silent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// How many events were lost.
    pub lost: Counter,
    /// queue_full (event bound) | queue_bytes (byte bound) | invalid_event.
    pub reason: String,
}

/// `checkpoint`: signed RFC 6962 tree head over records `0..tree_size`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Number of records covered (the checkpoint's own seq).
    pub tree_size: Counter,
    /// `sha256:` hex of the Merkle root.
    pub root: String,
    /// Id of the key that signs it.
    pub key_id: String,
}

/// `stream_start`: a writer opened a stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStart {
    /// Random id of this writer instance.
    pub writer_id: String,
    /// Library name and version that wrote the stream.
    pub writer: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Signature algorithm (`ed25519`).
    pub alg: String,
    /// Key id of the signing key.
    pub key_id: String,
    /// Public key, hex of the 32 raw bytes.
    pub public_key: String,
    /// Writer settings that matter to a reader (checkpoint interval, fsync).
    #[serde(default)]
    pub settings: Map<String, Value>,
}

/// `stream_end`: a writer closed its stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamEnd {
    /// Records written before this one.
    pub records: Counter,
    /// Events lost over the stream's life.
    pub lost: Counter,
    /// Why the stream closed: shutdown (an explicit call), exit, signal,
    /// or dropped (every handle went away without a shutdown).
    pub reason: String,
}

/// The kind-specific part of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Body {
    TraceStart(TraceStart),
    TraceEnd(TraceEnd),
    LlmCall(LlmCall),
    ToolCall(ToolCall),
    AgentSpawn(AgentSpawn),
    Decision(Decision),
    Memory(MemoryOp),
    Retrieval(Retrieval),
    Guardrail(Guardrail),
    HumanReview(HumanReview),
    Policy(PolicyVerdict),
    Gap(Gap),
    Checkpoint(Checkpoint),
    StreamStart(StreamStart),
    StreamEnd(StreamEnd),
}

impl Body {
    /// This body's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Body::TraceStart(_) => Kind::TraceStart,
            Body::TraceEnd(_) => Kind::TraceEnd,
            Body::LlmCall(_) => Kind::LlmCall,
            Body::ToolCall(_) => Kind::ToolCall,
            Body::AgentSpawn(_) => Kind::AgentSpawn,
            Body::Decision(_) => Kind::Decision,
            Body::Memory(_) => Kind::Memory,
            Body::Retrieval(_) => Kind::Retrieval,
            Body::Guardrail(_) => Kind::Guardrail,
            Body::HumanReview(_) => Kind::HumanReview,
            Body::Policy(_) => Kind::Policy,
            Body::Gap(_) => Kind::Gap,
            Body::Checkpoint(_) => Kind::Checkpoint,
            Body::StreamStart(_) => Kind::StreamStart,
            Body::StreamEnd(_) => Kind::StreamEnd,
        }
    }

    /// Calls `f` with every float field (for validation), allocation-free.
    fn for_each_float(&self, mut f: impl FnMut(&'static str, f64)) {
        let outcome = |o: &Outcome, f: &mut dyn FnMut(&'static str, f64)| {
            if let Some(d) = o.duration_ms {
                f("duration_ms", d);
            }
        };
        match self {
            Body::LlmCall(c) => {
                outcome(&c.outcome, &mut f);
                if let Some(x) = c.cost_usd {
                    f("cost_usd", x);
                }
            }
            Body::ToolCall(c) => outcome(&c.outcome, &mut f),
            Body::AgentSpawn(c) => outcome(&c.outcome, &mut f),
            Body::Retrieval(c) => {
                outcome(&c.outcome, &mut f);
                for s in c.retrieved_docs.iter().filter_map(|d| d.score) {
                    f("score", s);
                }
            }
            Body::TraceEnd(c) => {
                if let Some(d) = c.duration_ms {
                    f("duration_ms", d);
                }
            }
            Body::Decision(c) => {
                if let Some(x) = c.confidence {
                    f("confidence", x);
                }
            }
            Body::Guardrail(g) => {
                for s in g.guardrails.iter().filter_map(|v| v.score) {
                    f("score", s);
                }
            }
            Body::HumanReview(h) => {
                if let Some(x) = h.wait_ms {
                    f("wait_ms", x);
                }
            }
            _ => {}
        }
    }
}

/// Optional OpenTelemetry context active when the event happened, so an
/// investigator can pivot from the audit log to the observability trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OtelContext {
    /// OTel trace id (32 hex).
    pub trace_id: String,
    /// OTel span id (16 hex).
    pub span_id: String,
}

/// What a caller submits to the log. Cheap to build on the caller thread:
/// no hashing, no I/O; the background writer does the rest.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// When the step started (for spans) or happened.
    pub ts: Timestamp,
    /// The trace this event belongs to.
    pub trace_id: Option<TraceId>,
    /// This step's span.
    pub span_id: Option<SpanId>,
    /// The enclosing step's span.
    pub parent_span_id: Option<SpanId>,
    /// Who the agent acted for; defaults to the log's configured principal.
    pub principal: Option<Arc<Principal>>,
    /// Retention class; defaults to the log's.
    pub retention_class: Option<Arc<str>>,
    /// Risk flags and score of this step.
    pub risk: Risk,
    /// Per-event capture mode; defaults to the log's.
    pub capture: Option<CaptureMode>,
    /// Small, filterable extra metadata (redacted like the payload).
    pub metadata: Option<Map<String, Value>>,
    /// OpenTelemetry ids active at the time, if any.
    pub otel: Option<OtelContext>,
    /// The kind and its fields.
    pub body: Body,
    /// Payload parts: arguments, results, prompts ... (erasable).
    pub payload: BTreeMap<PayloadPart, Value>,
}

impl Event {
    /// A new event of the given body at the current time, with no context.
    pub fn new(body: Body) -> Self {
        Event {
            ts: Timestamp::now(),
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            principal: None,
            retention_class: None,
            risk: Risk::default(),
            capture: None,
            metadata: None,
            otel: None,
            body,
            payload: BTreeMap::new(),
        }
    }

    /// Sets a payload part (builder style).
    pub fn with_part(mut self, part: PayloadPart, value: Value) -> Self {
        self.payload.insert(part, value);
        self
    }

    /// Sets trace, span and parent ids (builder style).
    pub fn in_trace(mut self, trace: TraceId, span: SpanId, parent: Option<SpanId>) -> Self {
        self.trace_id = Some(trace);
        self.span_id = Some(span);
        self.parent_span_id = parent;
        self
    }

    /// The event's kind.
    pub fn kind(&self) -> Kind {
        self.body.kind()
    }

    /// Checks what must hold before the event is queued: a kind callers
    /// may submit, finite numbers, a risk score within 0..=100. Cheap: no
    /// payload traversal.
    pub fn validate(&self) -> Result<()> {
        let kind = self.kind();
        if kind.is_writer_only() {
            return Err(AuditError::invalid_event(format!(
                "kind {kind} is written by the log itself and cannot be submitted"
            )));
        }
        let mut bad_float: Option<String> = None;
        self.body.for_each_float(|name, x| {
            if bad_float.is_some() {
                return;
            }
            if !x.is_finite() {
                bad_float = Some(format!("{kind}.{name} must be a finite number, got {x}"));
                return;
            }
            let in_range = match name {
                "confidence" => (0.0..=1.0).contains(&x),
                "score" => true,
                _ => x >= 0.0,
            };
            if !in_range {
                bad_float = Some(format!("{kind}.{name} is out of range: {x}"));
            }
        });
        if let Some(msg) = bad_float {
            return Err(AuditError::invalid_event(msg));
        }
        if self.risk.score > 100 {
            return Err(AuditError::invalid_event(format!(
                "risk score must be 0..=100, got {}",
                self.risk.score
            )));
        }
        if (self.span_id.is_some() || self.parent_span_id.is_some()) && self.trace_id.is_none() {
            return Err(AuditError::invalid_event(
                "span_id or parent_span_id given without trace_id",
            ));
        }
        if self.parent_span_id.is_some() && self.span_id.is_none() {
            return Err(AuditError::invalid_event(
                "parent_span_id given without span_id",
            ));
        }
        let zero_trace = self.trace_id.is_some_and(|t| t.0 == [0u8; 16]);
        let zero_span = [self.span_id, self.parent_span_id]
            .iter()
            .flatten()
            .any(|s| s.0 == [0u8; 8]);
        if zero_trace || zero_span {
            return Err(AuditError::invalid_event(
                "trace and span ids must not be all zero (W3C trace context)",
            ));
        }
        if let Some(o) = &self.otel {
            let hex_of = |s: &str, n: usize| {
                s.len() == n
                    && s.bytes()
                        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                    && s.bytes().any(|c| c != b'0')
            };
            if !hex_of(&o.trace_id, 32) || !hex_of(&o.span_id, 16) {
                return Err(AuditError::invalid_event(
                    "otel trace_id must be 32 and span_id 16 lowercase hex characters, not all zero",
                ));
            }
        }
        if let Some(p) = &self.principal {
            p.validate()?;
        }
        Ok(())
    }

    /// A rough size of the event in memory (the boxed event, its strings
    /// and the heap of its payload and metadata), for the queue's byte
    /// bound: what a queue full of events really holds. Walks the payload,
    /// which the caller has just copied anyway.
    pub fn approx_bytes(&self) -> usize {
        // Allocations of the envelope's own strings and collections (ids,
        // tool and model names, flags), on top of the struct.
        const ENVELOPE_HEAP: usize = 384;
        let payload: usize = self
            .payload
            .values()
            .map(|v| BTREE_ENTRY + heap_at(v, 0))
            .sum();
        let meta = self.metadata.as_ref().map_or(0, |m| {
            m.iter()
                .map(|(k, v)| BTREE_ENTRY + string_heap(k.len()) + heap_at(v, 0))
                .sum()
        });
        std::mem::size_of::<Event>() + ENVELOPE_HEAP + payload + meta
    }
}

/// A rough size in memory of one entry of a JSON object or of an event's
/// payload: its slot, a key of `key_len` bytes and what `value` owns (the
/// measure of [`Event::approx_bytes`]), for an [`EventSource`](crate::EventSource)'s estimate.
pub fn approx_entry_bytes(key_len: usize, value: &Value) -> usize {
    BTREE_ENTRY + string_heap(key_len) + heap_at(value, 0)
}

/// Slot of one entry in a B-tree node (key, value and the node's share),
/// as serde_json's maps store them.
const BTREE_ENTRY: usize = std::mem::size_of::<String>() + std::mem::size_of::<Value>() + 16;

/// A heap block of `len` bytes with the allocator's header and rounding.
fn string_heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        16 + len.next_multiple_of(16)
    }
}

/// Heap bytes a JSON value owns beyond its own slot (bounded recursion,
/// as in [`approx_value_bytes`]).
fn heap_at(v: &Value, depth: usize) -> usize {
    const DEEP: usize = 32;
    const SLOT: usize = std::mem::size_of::<Value>();
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => string_heap(s.len()),
        Value::Array(a) if depth >= DEEP => 16 + 64 * a.len(),
        Value::Object(o) if depth >= DEEP => 16 + 96 * o.len(),
        Value::Array(a) => {
            16 + a.len() * SLOT + a.iter().map(|x| heap_at(x, depth + 1)).sum::<usize>()
        }
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| BTREE_ENTRY + string_heap(k.len()) + heap_at(x, depth + 1))
            .sum(),
    }
}

/// Approximate serialized size of a JSON value, without allocating.
/// Below 32 levels the estimate is coarse (16 bytes an element), so a
/// deeply nested value cannot make this recurse deeply.
pub fn approx_value_bytes(v: &Value) -> usize {
    approx_at(v, 0)
}

fn approx_at(v: &Value, depth: usize) -> usize {
    const DEEP: usize = 32;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        Value::Array(a) if depth >= DEEP => 2 + 16 * a.len(),
        Value::Object(o) if depth >= DEEP => 2 + 16 * o.len(),
        Value::Array(a) => 2 + a.iter().map(|x| 1 + approx_at(x, depth + 1)).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, x)| k.len() + 4 + approx_at(x, depth + 1))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_bytes_counts_what_the_event_holds_in_memory() {
        let small = Event::new(Body::Decision(Default::default()));
        let base = small.approx_bytes();
        assert!(base >= std::mem::size_of::<Event>());
        // 1,000 short strings cost far more than their 8 bytes of text
        // each: a slot, a heap block and its header.
        let list: Vec<Value> = (0..1000)
            .map(|i| Value::String(format!("item{i:04}")))
            .collect();
        let big = small
            .clone()
            .with_part(PayloadPart::Args, Value::Array(list));
        let extra = big.approx_bytes() - base;
        assert!(extra > 1000 * (8 + 32 + 16), "{extra}");
        assert!(extra < 1000 * 128, "{extra}");
    }

    #[test]
    fn counter_switches_to_string_above_2_53() {
        assert_eq!(serde_json::to_string(&Counter(5)).unwrap(), "5");
        assert_eq!(
            serde_json::to_string(&Counter(MAX_SAFE_INTEGER + 1)).unwrap(),
            "\"9007199254740992\""
        );
        let c: Counter = serde_json::from_str("\"18446744073709551615\"").unwrap();
        assert_eq!(c.0, u64::MAX);
    }

    #[test]
    fn body_serializes_with_kind_tag_and_flattened_outcome() {
        let b = Body::ToolCall(ToolCall {
            tool: ToolInfo {
                name: "db.query".into(),
                version: Some("2.3.1".into()),
                ..Default::default()
            },
            outcome: Outcome {
                result_status: Some(ResultStatus::Ok),
                duration_ms: Some(84.0),
                error_type: None,
            },
            ..Default::default()
        });
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["kind"], "tool_call");
        assert_eq!(v["result_status"], "ok");
        assert_eq!(v["tool"]["version"], "2.3.1");
        let back: Body = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn validation_rejects_nan_and_writer_kinds() {
        let mut e = Event::new(Body::LlmCall(LlmCall {
            cost_usd: Some(f64::NAN),
            ..Default::default()
        }));
        assert!(e.validate().unwrap_err().to_string().contains("cost_usd"));
        e.body = Body::Gap(Gap::default());
        assert!(e.validate().is_err());
    }

    #[test]
    fn kinds_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for p in PayloadPart::ALL {
            assert_eq!(PayloadPart::parse(p.as_str()), Some(p));
            assert_eq!(p.hash_field(), format!("{}_hash", p.as_str()));
        }
    }
}
