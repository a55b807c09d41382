//! Policy: rules that flag, alert on, route for review, require approval
//! for, or block agent steps; sequence, rate and baseline rules over a
//! trace; risk scores per step and per trace.
//!
//! A [`PolicyEngine`] is evaluated in two places:
//! - on the caller thread, before a tool runs ([`PolicyEngine::pre_check`]),
//!   only for tools that a `block` or `require_approval` rule can match
//!   ([`ToolGate`]; every other tool stays on the fast path);
//! - on the background writer ([`PolicyEngine::observe`]) for every event:
//!   flags and scores go into the record, each matched rule becomes a
//!   `policy` record next to it, `alert` verdicts go to the alert handler.
//!
//! Scores (documented in `docs/policy.md`): a step's score is the caller's
//! score plus the scores of the rules it matched, capped at 100. A trace's
//! score combines its steps like independent risks:
//! `100 × (1 − Π (1 − sᵢ/100))`, rounded; it is written in `trace_end`.

mod content;
pub mod score;
mod spec;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use regex::{Regex, RegexSet};
use serde_json::Value;

pub use content::Glob;
pub use score::{Requirement, Tier};

use crate::error::Result;
use crate::ids::{SpanId, Timestamp, TraceId};
use crate::record::{Body, Event, Kind, PayloadPart, PolicyVerdict, ResultStatus, Risk};

/// The built-in rule pack (TOML, the same format as a policy file).
pub const BUILTIN_POLICY: &str = include_str!("builtin.toml");

/// What a rule does when it matches. Ordered by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Add flags and score to the step.
    Flag,
    /// ... and call the application's alert handler (off the hot path).
    Alert,
    /// ... and put the trace on the review queue (`agent-audit review`).
    Review,
    /// Ask the application's approver before the tool runs; deny by default.
    RequireApproval,
    /// Stop the tool before it runs.
    Block,
}

impl Action {
    /// The action's name in policy files and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Flag => "flag",
            Action::Alert => "alert",
            Action::Review => "review",
            Action::RequireApproval => "require_approval",
            Action::Block => "block",
        }
    }

    /// Parses an action name.
    pub fn parse(s: &str) -> Option<Action> {
        [
            Action::Flag,
            Action::Alert,
            Action::Review,
            Action::RequireApproval,
            Action::Block,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Whether the action decides before the tool runs.
    pub fn is_gate(self) -> bool {
        matches!(self, Action::RequireApproval | Action::Block)
    }
}

/// What a matched rule contributes.
#[derive(Clone, Debug, PartialEq)]
pub struct Effect {
    /// Flags added to the step.
    pub flags: Vec<String>,
    /// Score added to the step (0..=100).
    pub score: u32,
    /// What happens.
    pub action: Action,
}

/// Numeric conditions (all given must hold).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Numeric {
    /// The step took longer than this.
    pub duration_ms_over: Option<f64>,
    /// The result is larger than this many bytes.
    pub output_bytes_over: Option<u64>,
    /// Input plus output tokens above this.
    pub tokens_over: Option<u64>,
    /// Cost above this many US dollars.
    pub cost_usd_over: Option<f64>,
    /// The call was refused at least one permission.
    pub permissions_denied: bool,
}

impl Numeric {
    fn is_empty(&self) -> bool {
        // The same as `*self == Numeric::default()`, field by field.
        self.duration_ms_over.is_none()
            && self.output_bytes_over.is_none()
            && self.tokens_over.is_none()
            && self.cost_usd_over.is_none()
            && !self.permissions_denied
    }
}

/// A rule over one step.
#[derive(Clone, Debug)]
pub struct ContentRule {
    /// Stable id, recorded in `policy` records.
    pub id: String,
    /// What the rule is for.
    pub description: String,
    /// Rule family for reporting (defaults to the id).
    pub family: String,
    /// Event kinds it applies to (empty: any).
    pub kinds: Vec<Kind>,
    /// Tool-name globs (empty: any step; given: tool calls only).
    pub tools: Vec<Glob>,
    /// Tool names excluded.
    pub not_tools: Vec<Glob>,
    /// Payload parts searched by the content conditions.
    pub parts: Vec<PayloadPart>,
    /// Whether the rule has regex or keyword conditions.
    has_pattern: bool,
    /// (group, index in the group's set) of its pattern, one per part.
    slots: Vec<(usize, usize)>,
    /// None of these may match.
    pub not_regex: Option<Regex>,
    /// Some URL in the parts must point outside.
    pub external_url: bool,
    /// An encoded (base64/hex) run at least this long must appear.
    pub encoded_blob: Option<usize>,
    /// Numeric conditions.
    pub numeric: Numeric,
    /// What it does.
    pub effect: Effect,
}

impl ContentRule {
    /// Whether the rule can be decided from a tool's name and arguments
    /// alone, before the tool runs.
    pub fn is_pre_exec(&self) -> bool {
        self.kinds.iter().all(|k| *k == Kind::ToolCall)
            && self.parts.iter().all(|p| *p == PayloadPart::Args)
            && self.numeric.is_empty()
    }

    fn applies_to_tool(&self, tool: &str) -> bool {
        (self.tools.is_empty() || content::any_glob(&self.tools, tool))
            && !content::any_glob(&self.not_tools, tool)
    }
}

/// Flags in order within one trace (e.g. a credential read, then an
/// external send).
#[derive(Clone, Debug)]
pub struct SequenceRule {
    /// Stable id.
    pub id: String,
    /// What the rule is for.
    pub description: String,
    /// Rule family.
    pub family: String,
    /// Flags that must occur in this order; the last one on the current step.
    pub steps: Vec<String>,
    /// All within this many milliseconds (None: the whole trace).
    pub within_ms: Option<i64>,
    /// What it does.
    pub effect: Effect,
}

/// A tool called more than `max_calls` times within a window in one trace.
#[derive(Clone, Debug)]
pub struct RateRule {
    /// Stable id.
    pub id: String,
    /// What the rule is for.
    pub description: String,
    /// Rule family.
    pub family: String,
    /// Tools counted (each tool name counted on its own).
    pub tools: Vec<Glob>,
    /// Calls allowed in the window.
    pub max_calls: u32,
    /// Window length.
    pub window_ms: i64,
    /// What it does.
    pub effect: Effect,
}

/// Which measurement a baseline rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `duration_ms`.
    DurationMs,
    /// `output_bytes`.
    OutputBytes,
}

/// A tool whose duration or output size is far above its running mean.
#[derive(Clone, Debug)]
pub struct BaselineRule {
    /// Stable id.
    pub id: String,
    /// What the rule is for.
    pub description: String,
    /// Rule family.
    pub family: String,
    /// Tools watched.
    pub tools: Vec<Glob>,
    /// What is measured.
    pub metric: Metric,
    /// Fires above `factor` × the tool's mean ...
    pub factor: f64,
    /// ... once the mean has this many samples.
    pub min_samples: u32,
    /// What it does.
    pub effect: Effect,
}

/// The content patterns of every rule that looks at one payload part.
#[derive(Debug)]
struct PatternGroup {
    part: PayloadPart,
    set: RegexSet,
}

/// A rule that matched, as the caller or the writer sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The rule's id.
    pub rule_id: String,
    /// The rule's family.
    pub family: String,
    /// Why (the rule's description; never the matched text, which may be
    /// a secret).
    pub reason: String,
    /// What the rule contributes.
    pub effect: Effect,
}

/// The caller-thread decision for one tool call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreVerdict {
    /// The strongest gating verdict (block before require_approval), if any.
    pub decision: Option<Verdict>,
    /// Every verdict found before the call (flags and score for its event).
    pub verdicts: Vec<Verdict>,
}

impl PreVerdict {
    /// Flags and score of the verdicts, for the tool's event.
    pub fn risk(&self) -> Risk {
        risk_of(&self.verdicts, 0)
    }

    /// The records of a call this decision stopped before it ran: the
    /// tool's own event (`event`, as it would have been recorded: span,
    /// arguments, principal) with status `blocked` and the verdicts'
    /// flags and score, then the `policy` record naming the deciding
    /// rule. Both bindings write exactly these, in this order.
    pub fn blocked_records(&self, mut event: Event) -> Vec<Event> {
        if let Body::ToolCall(c) = &mut event.body {
            c.outcome.result_status = Some(ResultStatus::Blocked);
        }
        // The caller's own flags and score stay; the verdicts' add to them.
        let caller = std::mem::take(&mut event.risk);
        let mut risk = risk_of(&self.verdicts, caller.score);
        for f in caller.flags.into_iter().rev() {
            if !risk.flags.contains(&f) {
                risk.flags.insert(0, f);
            }
        }
        event.risk = risk;
        let policy = self
            .decision
            .as_ref()
            .map(|d| PolicyEngine::verdict_event(d, &event));
        let mut out = Vec::with_capacity(2);
        out.push(event);
        out.extend(policy);
        out
    }
}

/// Which caller-thread checks a tool needs. Compute it once per tool (it
/// depends only on the name) and keep it: [`ToolGate::is_open`] tools skip
/// the check entirely.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolGate {
    /// Gating content rules that can match this tool.
    content: Vec<usize>,
    /// Gating sequence rules this tool can complete.
    sequences: Vec<usize>,
    /// Content rules whose flags feed those sequences.
    feeders: Vec<usize>,
    /// Gating rate rules counting this tool.
    rates: Vec<usize>,
    /// Whether calls of this tool must be recorded in trace memory now
    /// (they can feed a gating sequence or rate rule).
    remember: bool,
}

impl ToolGate {
    /// No caller-thread check is needed for this tool.
    pub fn is_open(&self) -> bool {
        self.content.is_empty()
            && self.sequences.is_empty()
            && self.rates.is_empty()
            && !self.remember
    }
}

/// Per-trace memory for sequence and rate rules and the trace score.
#[derive(Debug, Default)]
struct TraceMemory {
    /// (flag, time in ms) in the order seen, bounded.
    flags: VecDeque<(String, i64)>,
    /// Call times per tool name, bounded.
    calls: HashMap<String, VecDeque<i64>>,
    /// Flags dropped from the front of `flags` so far.
    popped: u64,
    /// Spans already recorded by the caller-thread check, with the
    /// absolute index of their first flag.
    pre_observed: HashMap<SpanId, u64>,
    /// Π (1 − sᵢ/100) over the steps so far.
    safe: f64,
    /// Every flag seen in the trace.
    all_flags: BTreeSet<String>,
    /// Last touch, for eviction.
    touched: u64,
}

const MAX_TRACES: usize = 20_000;
const MAX_FLAGS_PER_TRACE: usize = 512;
const MAX_CALLS_PER_TOOL: usize = 1024;

#[derive(Debug, Default)]
struct Memory {
    traces: HashMap<TraceId, TraceMemory>,
    clock: u64,
    /// (count, mean) per (baseline rule, tool).
    /// Per tool name, per baseline rule (by index): samples and mean.
    baselines: HashMap<String, Vec<(u64, f64)>>,
}

impl Memory {
    fn trace(&mut self, id: TraceId) -> &mut TraceMemory {
        self.clock += 1;
        if self.traces.len() >= MAX_TRACES && !self.traces.contains_key(&id) {
            self.evict();
        }
        let clock = self.clock;
        let t = self.traces.entry(id).or_insert_with(|| TraceMemory {
            safe: 1.0,
            ..TraceMemory::default()
        });
        t.touched = clock;
        t
    }

    /// Drops the least recently touched tenth: traces that never end
    /// cannot grow memory without bound.
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.traces.values().map(|t| t.touched).collect();
        ages.sort_unstable();
        let cut = ages.get(ages.len() / 10).copied().unwrap_or(0);
        self.traces.retain(|_, t| t.touched > cut);
    }
}

/// A loaded policy: its version, rules and tiers.
#[derive(Debug)]
pub struct PolicyEngine {
    version: String,
    content: Vec<ContentRule>,
    groups: Vec<PatternGroup>,
    sequences: Vec<SequenceRule>,
    rates: Vec<RateRule>,
    baselines: Vec<BaselineRule>,
    tiers: Vec<Tier>,
    default_require: Vec<Requirement>,
    internal_hosts: Vec<Glob>,
    memory: Mutex<Memory>,
    /// The rules that apply to each tool name seen, so the globs are
    /// matched once per tool, not once per call.
    tool_rules: Mutex<ToolCache>,
}

/// The rules whose tool globs admit one tool name (or, for events that
/// are not tool calls, the rules without tool globs).
#[derive(Debug, Default)]
struct ToolRules {
    /// The tool's name (empty for events that are not tool calls).
    name: Box<str>,
    /// Content rules (their kinds are checked per event).
    content: Box<[usize]>,
    /// Rate rules counting the tool.
    rates: Box<[usize]>,
    /// Baseline rules watching the tool.
    baselines: Box<[usize]>,
}

/// [`ToolRules`] per tool name seen, and for events that are not tool calls.
#[derive(Debug, Default)]
struct ToolCache {
    tools: HashMap<String, std::sync::Arc<ToolRules>>,
    non_tool: Option<std::sync::Arc<ToolRules>>,
    /// The last few tools looked up: compared before hashing the name.
    recent: [Option<std::sync::Arc<ToolRules>>; RECENT_TOOLS],
    /// The entry of `recent` the next new tool replaces.
    next: usize,
}

const RECENT_TOOLS: usize = 4;

impl ToolCache {
    fn get(&mut self, tool: &str) -> Option<std::sync::Arc<ToolRules>> {
        for rules in self.recent.iter().flatten() {
            if *rules.name == *tool {
                return Some(rules.clone());
            }
        }
        let rules = self.tools.get(tool)?.clone();
        self.remember_recent(&rules);
        Some(rules)
    }

    fn remember_recent(&mut self, rules: &std::sync::Arc<ToolRules>) {
        if let Some(slot) = self.recent.get_mut(self.next % RECENT_TOOLS) {
            *slot = Some(rules.clone());
        }
        self.next = (self.next + 1) % RECENT_TOOLS;
    }
}

/// Text of each payload part, rendered on first use into buffers kept
/// from one event to the next ([`Scratch`]).
struct Texts<'a> {
    payload: Payload<'a>,
    /// Rendered parts (text, whether cut): the first `used` are this event's.
    rendered: &'a mut Vec<(PayloadPart, String, bool)>,
    used: usize,
    /// The text of several parts, one after the other.
    joined: &'a mut String,
}

/// The payload parts a check looks at.
#[derive(Clone, Copy)]
enum Payload<'a> {
    /// An event's parts.
    Parts(&'a std::collections::BTreeMap<PayloadPart, Value>),
    /// Only the arguments, before the call (not copied into a map).
    Args(&'a Value),
}

impl<'a> Payload<'a> {
    fn get(self, p: PayloadPart) -> Option<&'a Value> {
        match self {
            Payload::Parts(parts) => parts.get(&p),
            Payload::Args(args) => (p == PayloadPart::Args).then_some(args),
        }
    }
}

impl<'a> Texts<'a> {
    fn new(
        payload: Payload<'a>,
        rendered: &'a mut Vec<(PayloadPart, String, bool)>,
        joined: &'a mut String,
    ) -> Self {
        Texts {
            payload,
            rendered,
            used: 0,
            joined,
        }
    }

    /// Position of part `p` in `rendered`, rendering it first if needed.
    fn render(&mut self, p: PayloadPart) -> usize {
        let done = self.rendered.get(..self.used).unwrap_or_default();
        if let Some(i) = done.iter().position(|(q, _, _)| *q == p) {
            return i;
        }
        let at = self.used;
        if at == self.rendered.len() {
            self.rendered.push((p, String::new(), false));
        }
        if let Some(slot) = self.rendered.get_mut(at) {
            slot.0 = p;
            slot.1.clear();
            slot.2 = self
                .payload
                .get(p)
                .is_some_and(|v| content::render_text(v, &mut slot.1));
        }
        self.used = at + 1;
        at
    }

    fn part(&mut self, p: PayloadPart) -> &str {
        let i = self.render(p);
        self.rendered.get(i).map_or("", |r| r.1.as_str())
    }

    /// The text of several parts, one after the other.
    fn joined(&mut self, parts: &[PayloadPart]) -> &str {
        if let [one] = parts {
            return self.part(*one);
        }
        let mut at = [0usize; 16];
        if parts.len() > at.len() {
            // More parts than there are kinds of part: not from a policy file.
            let mut out = String::new();
            for p in parts {
                out.push_str(self.part(*p));
            }
            *self.joined = out;
            return self.joined;
        }
        for (slot, p) in at.iter_mut().zip(parts) {
            *slot = self.render(*p);
        }
        self.joined.clear();
        for i in at.iter().take(parts.len()) {
            if let Some(r) = self.rendered.get(*i) {
                self.joined.push_str(&r.1);
            }
        }
        self.joined
    }

    fn truncated(&self) -> bool {
        self.rendered
            .get(..self.used)
            .unwrap_or_default()
            .iter()
            .any(|r| r.2)
    }
}

/// What one pattern group's set found in this event's text.
#[derive(Debug, Default)]
enum GroupMatch {
    /// Not searched yet.
    #[default]
    Unknown,
    /// The event has no such part.
    Absent,
    /// Searched: no pattern matched.
    Nothing,
    /// Searched: these patterns matched.
    Found(regex::SetMatches),
}

/// Buffers the content checks reuse from one event to the next (one set
/// per thread), so a typical event allocates nothing for them.
#[derive(Debug, Default)]
struct Scratch {
    rendered: Vec<(PayloadPart, String, bool)>,
    joined: String,
    groups: Vec<GroupMatch>,
}

/// Buffers larger than this are freed after use rather than kept.
const SCRATCH_KEEP_BYTES: usize = 64 * 1024;

impl Scratch {
    /// Runs `f` with this thread's scratch buffers (empty ones if they are
    /// in use further up the stack).
    fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
        }
        let mut s = SCRATCH.try_with(std::cell::Cell::take).unwrap_or_default();
        let out = f(&mut s);
        s.trim();
        let _ = SCRATCH.try_with(|cell| cell.set(s));
        out
    }

    /// Drops what a huge event left behind.
    fn trim(&mut self) {
        for r in &mut self.rendered {
            if r.1.capacity() > SCRATCH_KEEP_BYTES {
                r.1 = String::new();
            }
        }
        if self.joined.capacity() > SCRATCH_KEEP_BYTES {
            self.joined = String::new();
        }
        self.groups.clear();
    }
}

/// Flags (deduplicated, in order) and capped score of verdicts plus a base.
fn risk_of(verdicts: &[Verdict], base: u32) -> Risk {
    let mut flags: Vec<String> = Vec::new();
    let mut score = base;
    for v in verdicts {
        for f in &v.effect.flags {
            if !flags.contains(f) {
                flags.push(f.clone());
            }
        }
        score = score.saturating_add(v.effect.score);
    }
    Risk {
        flags,
        score: score.min(100),
    }
}

/// Positions of the items that `keep` accepts.
fn indices<T>(items: &[T], keep: impl Fn(&T) -> bool) -> Box<[usize]> {
    items
        .iter()
        .enumerate()
        .filter(|(_, item)| keep(item))
        .map(|(i, _)| i)
        .collect()
}

fn tool_name(event: &Event) -> Option<&str> {
    match &event.body {
        Body::ToolCall(t) => Some(t.tool.name.as_str()),
        _ => None,
    }
}

impl PolicyEngine {
    /// The built-in rule pack alone. Compiled once per process; each
    /// engine returned has its own trace memory.
    pub fn builtin() -> Result<PolicyEngine> {
        static BUILTIN: std::sync::OnceLock<
            std::result::Result<PolicyEngine, crate::error::AuditError>,
        > = std::sync::OnceLock::new();
        match BUILTIN.get_or_init(|| spec::load(BUILTIN_POLICY, "<builtin>", None)) {
            Ok(p) => Ok(p.fresh()),
            Err(e) => Err(crate::error::AuditError::config(e.message().to_string())),
        }
    }

    /// The same rules with empty trace memory (regexes are shared).
    pub fn fresh(&self) -> PolicyEngine {
        PolicyEngine {
            version: self.version.clone(),
            content: self.content.clone(),
            groups: self
                .groups
                .iter()
                .map(|g| PatternGroup {
                    part: g.part,
                    set: g.set.clone(),
                })
                .collect(),
            sequences: self.sequences.clone(),
            rates: self.rates.clone(),
            baselines: self.baselines.clone(),
            tiers: self.tiers.clone(),
            default_require: self.default_require.clone(),
            internal_hosts: self.internal_hosts.clone(),
            memory: Mutex::new(Memory::default()),
            tool_rules: Mutex::new(ToolCache::default()),
        }
    }

    /// A policy file (TOML). Unless it says `builtin = false`, the built-in
    /// pack is included, minus its `disable`d rules and with its
    /// `[override.<id>]` changes. Errors name the file, line and reason.
    pub fn from_file(path: &Path) -> Result<PolicyEngine> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::error::AuditError::config(format!(
                "{}: cannot read the policy file: {e}",
                path.display()
            ))
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// A policy from TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<PolicyEngine> {
        spec::load(BUILTIN_POLICY, "<builtin>", Some((text, origin)))
    }

    /// The version every event records as `policy_version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The content rules.
    pub fn content_rules(&self) -> &[ContentRule] {
        &self.content
    }

    /// The sequence rules.
    pub fn sequence_rules(&self) -> &[SequenceRule] {
        &self.sequences
    }

    /// The rate rules.
    pub fn rate_rules(&self) -> &[RateRule] {
        &self.rates
    }

    /// The baseline rules.
    pub fn baseline_rules(&self) -> &[BaselineRule] {
        &self.baselines
    }

    /// Compliance tiers, highest first.
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Requirements of traces no tier matches.
    pub fn default_requirements(&self) -> &[Requirement] {
        &self.default_require
    }

    /// Which caller-thread checks calls of `tool` need.
    pub fn gate(&self, tool: &str) -> ToolGate {
        let mut g = ToolGate::default();
        for (i, r) in self.content.iter().enumerate() {
            if r.effect.action.is_gate() && r.is_pre_exec() && r.applies_to_tool(tool) {
                g.content.push(i);
            }
        }
        for (i, s) in self.sequences.iter().enumerate() {
            if !s.effect.action.is_gate() {
                continue;
            }
            let mut feeds = false;
            for (ri, r) in self.content.iter().enumerate() {
                if r.is_pre_exec()
                    && r.applies_to_tool(tool)
                    && r.effect.flags.iter().any(|f| s.steps.contains(f))
                {
                    feeds = true;
                    if !g.feeders.contains(&ri) {
                        g.feeders.push(ri);
                    }
                }
            }
            if feeds {
                g.remember = true;
                if !g.sequences.contains(&i) {
                    g.sequences.push(i);
                }
            }
        }
        for (i, r) in self.rates.iter().enumerate() {
            if r.effect.action.is_gate() && content::any_glob(&r.tools, tool) {
                g.rates.push(i);
                g.remember = true;
            }
        }
        g
    }

    /// The caller-thread check before `tool` runs with `args` (its
    /// arguments by parameter name). Only call it for gates that are not
    /// open. Records the call in trace memory when sequence or rate rules
    /// need it, so the writer does not count it twice.
    pub fn pre_check(
        &self,
        gate: &ToolGate,
        tool: &str,
        trace: Option<TraceId>,
        span: Option<SpanId>,
        args: &Value,
    ) -> PreVerdict {
        let mut out = PreVerdict::default();
        if gate.is_open() {
            return out;
        }
        let feeders = gate.feeders.iter().filter(|f| !gate.content.contains(f));
        let all = gate.content.iter().chain(feeders);
        Scratch::with(|s| {
            s.groups.resize_with(self.groups.len(), GroupMatch::default);
            let mut texts = Texts::new(Payload::Args(args), &mut s.rendered, &mut s.joined);
            for &i in all {
                let Some(rule) = self.content.get(i) else {
                    continue;
                };
                if self.content_matches(rule, &mut texts, &mut s.groups) {
                    out.verdicts.push(self.verdict_of(rule));
                }
            }
        });
        let now = Timestamp::now().unix_millis();
        if gate.remember
            && let Some(trace) = trace
            && let Ok(mut mem) = self.memory.lock()
        {
            let t = mem.trace(trace);
            let first_new = t.flags.len();
            let absolute = t.popped + first_new as u64;
            remember_flags(t, &out.verdicts, now);
            remember_call(t, tool, now);
            if let Some(span) = span
                && t.pre_observed.len() < MAX_CALLS_PER_TOOL
            {
                t.pre_observed.insert(span, absolute);
            }
            let first_new = (absolute.saturating_sub(t.popped)) as usize;
            for &si in &gate.sequences {
                if let Some(s) = self.sequences.get(si)
                    && sequence_fires(s, t, first_new, now)
                {
                    out.verdicts.push(Verdict {
                        rule_id: s.id.clone(),
                        family: s.family.clone(),
                        reason: s.description.clone(),
                        effect: s.effect.clone(),
                    });
                }
            }
            for &ri in &gate.rates {
                if let Some(r) = self.rates.get(ri)
                    && rate_fires(r, t.calls.get(tool), now)
                {
                    out.verdicts.push(Verdict {
                        rule_id: r.id.clone(),
                        family: r.family.clone(),
                        reason: r.description.clone(),
                        effect: r.effect.clone(),
                    });
                }
            }
        }
        out.decision = out
            .verdicts
            .iter()
            .filter(|v| v.effect.action.is_gate())
            .max_by_key(|v| v.effect.action)
            .cloned();
        out
    }

    /// Evaluates every rule against an event on the writer: adds flags and
    /// score to `event.risk`, keeps trace memory, writes the trace score
    /// into `trace_end`, and returns the verdicts (each becomes a `policy`
    /// record). Events of a blocked call were judged on the caller thread.
    pub fn observe(&self, event: &mut Event) -> Vec<Verdict> {
        let kind = event.kind();
        if matches!(kind, Kind::Policy | Kind::HumanReview) || kind.is_writer_only() {
            return Vec::new();
        }
        let blocked = matches!(&event.body, Body::ToolCall(t) if t.outcome.result_status == Some(ResultStatus::Blocked));
        let mut verdicts = Vec::new();
        let mut truncated = false;
        let applicable = (!blocked && kind != Kind::TraceEnd)
            .then(|| self.rules_for(kind, tool_name(event).unwrap_or("")));
        if let Some(applicable) = &applicable {
            Scratch::with(|s| {
                s.groups.resize_with(self.groups.len(), GroupMatch::default);
                let mut texts = Texts::new(
                    Payload::Parts(&event.payload),
                    &mut s.rendered,
                    &mut s.joined,
                );
                for rule in applicable
                    .content
                    .iter()
                    .filter_map(|i| self.content.get(*i))
                {
                    if !rule.kinds.is_empty() && !rule.kinds.contains(&kind) {
                        continue;
                    }
                    if !numeric_matches(&rule.numeric, event) {
                        continue;
                    }
                    if self.content_matches(rule, &mut texts, &mut s.groups) {
                        verdicts.push(self.verdict_of(rule));
                    }
                }
                truncated = texts.truncated();
            });
        }
        let mut mem = self.memory.lock();
        if let (Ok(mem), Some(applicable), Body::ToolCall(call)) =
            (&mut mem, &applicable, &event.body)
        {
            self.check_baselines(mem, call, &applicable.baselines, &mut verdicts);
        }
        if truncated {
            event.risk.flags.push("policy_scan_truncated".into());
        }
        let Ok(mut mem) = mem else {
            apply_risk(event, &verdicts);
            return verdicts;
        };
        let now = event.ts.unix_millis();
        match (event.trace_id, kind) {
            (Some(trace), Kind::TraceEnd) => {
                let t = mem.trace(trace);
                let trace_score = (100.0 * (1.0 - t.safe)).round().clamp(0.0, 100.0) as u32;
                let mut flags: Vec<String> = t.all_flags.iter().cloned().collect();
                for f in std::mem::take(&mut event.risk.flags) {
                    if !flags.contains(&f) {
                        flags.push(f);
                    }
                }
                event.risk.flags = flags;
                event.risk.score = event.risk.score.max(trace_score);
                mem.traces.remove(&trace);
                return verdicts;
            }
            (Some(trace), _) => {
                let t = mem.trace(trace);
                let pre = event
                    .span_id
                    .filter(|_| !t.pre_observed.is_empty())
                    .and_then(|s| t.pre_observed.remove(&s));
                if !blocked {
                    let first_new = match pre {
                        // The caller recorded this call's flags already.
                        Some(abs) => abs.saturating_sub(t.popped) as usize,
                        None => {
                            let at = t.flags.len();
                            remember_flags(t, &verdicts, now);
                            at
                        }
                    };
                    // The call joins its tool's call times (unless the caller
                    // recorded it), and the rate rules counting the tool look
                    // at them: one lookup of the tool for both. Sequence
                    // verdicts still come first.
                    let mut rates_fired: Vec<&RateRule> = Vec::new();
                    if let Some(tool) = tool_name(event) {
                        let rates = applicable.as_ref().map_or(&[][..], |a| &a.rates[..]);
                        let mut judge = |q: Option<&VecDeque<i64>>| {
                            for r in rates.iter().filter_map(|i| self.rates.get(*i)) {
                                if rate_fires(r, q, now) {
                                    rates_fired.push(r);
                                }
                            }
                        };
                        if pre.is_some() {
                            if !rates.is_empty() {
                                judge(t.calls.get(tool));
                            }
                        } else if let Some(q) = t.calls.get_mut(tool) {
                            remember_call_in(q, now);
                            judge(Some(q));
                        } else {
                            remember_call(t, tool, now);
                            judge(t.calls.get(tool));
                        }
                    }
                    for s in &self.sequences {
                        if sequence_fires(s, t, first_new, now) {
                            verdicts.push(Verdict {
                                rule_id: s.id.clone(),
                                family: s.family.clone(),
                                reason: s.description.clone(),
                                effect: s.effect.clone(),
                            });
                        }
                    }
                    for r in rates_fired {
                        verdicts.push(Verdict {
                            rule_id: r.id.clone(),
                            family: r.family.clone(),
                            reason: r.description.clone(),
                            effect: r.effect.clone(),
                        });
                    }
                }
                apply_risk(event, &verdicts);
                for f in &event.risk.flags {
                    if t.all_flags.len() < MAX_FLAGS_PER_TRACE && !t.all_flags.contains(f) {
                        t.all_flags.insert(f.clone());
                    }
                }
                t.safe *= 1.0 - f64::from(event.risk.score.min(100)) / 100.0;
            }
            (None, _) => apply_risk(event, &verdicts),
        }
        verdicts
    }

    /// A `policy` record for a verdict about the step `subject` (its span,
    /// tool and trace), as a child of that step.
    pub fn verdict_event(verdict: &Verdict, subject: &Event) -> Event {
        let mut e = Event::new(Body::Policy(PolicyVerdict {
            rule_id: verdict.rule_id.clone(),
            action: verdict.effect.action.as_str().into(),
            tool: tool_name(subject).map(str::to_string),
            subject_span_id: subject.span_id.map(|s| s.to_string()),
            reason: Some(verdict.reason.clone()),
        }));
        e.ts = subject.ts;
        e.trace_id = subject.trace_id;
        e.parent_span_id = subject.span_id;
        e.span_id = subject.trace_id.map(|_| SpanId::random());
        e.principal = subject.principal.clone();
        e.retention_class = subject.retention_class.clone();
        e.risk = Risk {
            flags: verdict.effect.flags.clone(),
            score: verdict.effect.score.min(100),
        };
        e
    }

    /// The rules that can apply to an event of `kind` (and, for tool calls,
    /// of tool `tool`), cached per tool name.
    fn rules_for(&self, kind: Kind, tool: &str) -> std::sync::Arc<ToolRules> {
        let tool_call = kind == Kind::ToolCall;
        if let Ok(mut cache) = self.tool_rules.lock() {
            let hit = if tool_call {
                cache.get(tool)
            } else {
                cache.non_tool.clone()
            };
            if let Some(hit) = hit {
                return hit;
            }
        }
        let rules = std::sync::Arc::new(if tool_call {
            ToolRules {
                name: tool.into(),
                content: indices(&self.content, |r| r.applies_to_tool(tool)),
                rates: indices(&self.rates, |r| content::any_glob(&r.tools, tool)),
                baselines: indices(&self.baselines, |r| content::any_glob(&r.tools, tool)),
            }
        } else {
            ToolRules {
                content: indices(&self.content, |r| r.tools.is_empty()),
                ..ToolRules::default()
            }
        });
        if let Ok(mut cache) = self.tool_rules.lock() {
            if !tool_call {
                cache.non_tool = Some(rules.clone());
            } else if cache.tools.len() < MAX_TRACES {
                cache.tools.insert(tool.to_string(), rules.clone());
                cache.remember_recent(&rules);
            }
        }
        rules
    }

    /// The `human_review` record of an approval asked by `verdict` for the
    /// step `subject`: `decision` is approved | denied | timeout; the
    /// reviewer's reason goes in the (erasable) payload.
    pub fn review_event(
        verdict: &Verdict,
        subject: &Event,
        decision: &str,
        reviewer: Option<String>,
        reason: Option<String>,
        wait_ms: f64,
    ) -> Event {
        let mut e = Event::new(Body::HumanReview(crate::record::HumanReview {
            decision: decision.into(),
            reviewer,
            subject_span_id: subject.span_id.map(|s| s.to_string()),
            decided_at: Some(Timestamp::now().to_rfc3339()),
            wait_ms: Some(wait_ms),
            rule_id: Some(verdict.rule_id.clone()),
        }));
        e.trace_id = subject.trace_id;
        e.parent_span_id = subject.parent_span_id;
        e.span_id = subject.trace_id.map(|_| SpanId::random());
        e.principal = subject.principal.clone();
        e.retention_class = subject.retention_class.clone();
        if let Some(r) = reason {
            e.payload.insert(PayloadPart::Reason, Value::String(r));
        }
        e
    }

    fn verdict_of(&self, rule: &ContentRule) -> Verdict {
        Verdict {
            rule_id: rule.id.clone(),
            family: rule.family.clone(),
            reason: rule.description.clone(),
            effect: rule.effect.clone(),
        }
    }

    #[inline(always)]
    fn content_matches(
        &self,
        rule: &ContentRule,
        texts: &mut Texts<'_>,
        groups: &mut [GroupMatch],
    ) -> bool {
        let needs_text = rule.has_pattern
            || rule.not_regex.is_some()
            || rule.external_url
            || rule.encoded_blob.is_some();
        if !needs_text {
            return true;
        }
        if rule.has_pattern {
            let mut hit = false;
            for &(gi, idx) in &rule.slots {
                let (Some(g), Some(found)) = (self.groups.get(gi), groups.get_mut(gi)) else {
                    continue;
                };
                if let GroupMatch::Unknown = found {
                    *found = if texts.payload.get(g.part).is_none() {
                        GroupMatch::Absent
                    } else {
                        // Most text matches nothing: a plain search says so
                        // without collecting which patterns matched.
                        let text = texts.part(g.part);
                        if g.set.is_match(text) {
                            GroupMatch::Found(g.set.matches(text))
                        } else {
                            GroupMatch::Nothing
                        }
                    };
                }
                if let GroupMatch::Found(m) = found
                    && m.matched(idx)
                {
                    hit = true;
                    break;
                }
            }
            if !hit {
                return false;
            }
        }
        let text = texts.joined(&rule.parts);
        if let Some(n) = rule.encoded_blob
            && content::longest_encoded_run(text) < n
        {
            return false;
        }
        if rule.external_url && !content::has_external_url(text, &self.internal_hosts) {
            return false;
        }
        if let Some(nr) = &rule.not_regex
            && nr.is_match(text)
        {
            return false;
        }
        true
    }

    /// The baseline rules `which` (those watching the call's tool): a
    /// verdict for each the call is far above, then the call's value joins
    /// the running mean.
    fn check_baselines(
        &self,
        mem: &mut Memory,
        call: &crate::record::ToolCall,
        which: &[usize],
        verdicts: &mut Vec<Verdict>,
    ) {
        let tool = call.tool.name.as_str();
        let mut update = |slots: &mut Vec<(u64, f64)>| -> bool {
            let mut any = false;
            for &i in which {
                let Some(rule) = self.baselines.get(i) else {
                    continue;
                };
                let value = match rule.metric {
                    Metric::DurationMs => call.outcome.duration_ms,
                    Metric::OutputBytes => call.output_bytes.map(|c| c.0 as f64),
                };
                let Some(value) = value.filter(|v| v.is_finite()) else {
                    continue;
                };
                any = true;
                if slots.len() <= i {
                    slots.resize(i + 1, (0, 0.0));
                }
                let Some(entry) = slots.get_mut(i) else {
                    continue;
                };
                let (n, mean) = *entry;
                if n >= u64::from(rule.min_samples) && mean > 0.0 && value > rule.factor * mean {
                    verdicts.push(Verdict {
                        rule_id: rule.id.clone(),
                        family: rule.family.clone(),
                        reason: rule.description.clone(),
                        effect: rule.effect.clone(),
                    });
                }
                let n1 = n + 1;
                *entry = (n1, mean + (value - mean) / n1 as f64);
            }
            any
        };
        // Looked up by `&str`: no key is allocated for a tool seen before.
        if let Some(slots) = mem.baselines.get_mut(tool) {
            update(slots);
        } else if mem.baselines.len() < MAX_TRACES {
            let mut slots = Vec::new();
            if update(&mut slots) {
                mem.baselines.insert(tool.to_string(), slots);
            }
        }
    }
}

fn apply_risk(event: &mut Event, verdicts: &[Verdict]) {
    if verdicts.is_empty() {
        return;
    }
    let r = risk_of(verdicts, event.risk.score);
    for f in r.flags {
        if !event.risk.flags.contains(&f) {
            event.risk.flags.push(f);
        }
    }
    event.risk.score = r.score;
}

fn remember_flags(t: &mut TraceMemory, verdicts: &[Verdict], now: i64) {
    for f in risk_of(verdicts, 0).flags {
        if t.flags.len() >= MAX_FLAGS_PER_TRACE {
            t.flags.pop_front();
            t.popped += 1;
        }
        t.flags.push_back((f, now));
    }
}

fn remember_call(t: &mut TraceMemory, tool: &str, now: i64) {
    if let Some(q) = t.calls.get_mut(tool) {
        remember_call_in(q, now);
    } else if t.calls.len() < MAX_FLAGS_PER_TRACE {
        t.calls.insert(tool.to_string(), VecDeque::from([now]));
    }
}

/// Adds a call at `now` to a tool's call times.
fn remember_call_in(q: &mut VecDeque<i64>, now: i64) {
    if q.len() >= MAX_CALLS_PER_TOOL {
        q.pop_front();
    }
    q.push_back(now);
}

/// Whether the flags from index `first_new` on (the current step's)
/// complete the sequence after its earlier steps, in order.
fn sequence_fires(s: &SequenceRule, t: &TraceMemory, first_new: usize, now: i64) -> bool {
    let Some((last, earlier)) = s.steps.split_last() else {
        return false;
    };
    if !t.flags.iter().skip(first_new).any(|(f, _)| f == last) {
        return false;
    }
    let mut want = earlier.iter();
    let mut next = want.next();
    for (f, at) in t.flags.iter().take(first_new) {
        let Some(w) = next else { break };
        if s.within_ms.is_some_and(|win| now - at > win) {
            continue;
        }
        if f == w {
            next = want.next();
        }
    }
    next.is_none()
}

/// Whether the calls of one tool in a trace (`q`, ending with the call
/// made at `now`) go over the rule's rate.
fn rate_fires(r: &RateRule, q: Option<&VecDeque<i64>>, now: i64) -> bool {
    let Some(q) = q else {
        return false;
    };
    // More than max_calls within the window ending at call `last` (made
    // at `time`): the call max_calls places back is inside it.
    let n = r.max_calls as usize;
    let over = |last: usize, time: i64| {
        last >= n && q.get(last - n).is_some_and(|at| time - at <= r.window_ms)
    };
    let Some(last) = q.len().checked_sub(1) else {
        return false;
    };
    if !over(last, now) {
        return false;
    }
    // A rule that blocks or asks stops every call over the limit; one that
    // flags, alerts or routes for review reports a burst once, when it
    // crosses the limit, rather than writing a verdict per looping call.
    r.effect.action.is_gate()
        || last == 0
        || !q
            .get(last - 1)
            .is_some_and(|&previous| over(last - 1, previous))
}

fn numeric_matches(n: &Numeric, event: &Event) -> bool {
    if n.is_empty() {
        return true;
    }
    let (duration, output, denied) = match &event.body {
        Body::ToolCall(t) => (
            t.outcome.duration_ms,
            t.output_bytes.map(|c| c.0),
            !t.permissions_denied.is_empty(),
        ),
        Body::LlmCall(l) => (l.outcome.duration_ms, None, false),
        Body::Retrieval(r) => (r.outcome.duration_ms, None, false),
        Body::AgentSpawn(a) => (a.outcome.duration_ms, None, false),
        _ => (None, None, false),
    };
    if let Some(limit) = n.duration_ms_over
        && !duration.is_some_and(|d| d > limit)
    {
        return false;
    }
    if let Some(limit) = n.output_bytes_over {
        let size = output.or_else(|| {
            event
                .payload
                .get(&PayloadPart::Result)
                .map(|v| crate::record::approx_value_bytes(v) as u64)
        });
        if size.is_none_or(|s| s <= limit) {
            return false;
        }
    }
    if let Some(limit) = n.tokens_over {
        let Body::LlmCall(l) = &event.body else {
            return false;
        };
        let total = l.input_tokens.map_or(0, |c| c.0) + l.output_tokens.map_or(0, |c| c.0);
        if total <= limit {
            return false;
        }
    }
    if let Some(limit) = n.cost_usd_over {
        let Body::LlmCall(l) = &event.body else {
            return false;
        };
        if !l.cost_usd.is_some_and(|c| c > limit) {
            return false;
        }
    }
    if n.permissions_denied && !denied {
        return false;
    }
    true
}

/// The function an application registers for `alert` verdicts.
pub type AlertHandler = std::sync::Arc<dyn Fn(&Alert) + Send + Sync>;

/// An `alert` verdict, as handed to the application's alert handler.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// The rule that fired.
    pub rule_id: String,
    /// Why (the rule's description).
    pub reason: String,
    /// Flags the rule adds.
    pub flags: Vec<String>,
    /// Score the rule adds.
    pub score: u32,
    /// The trace concerned.
    pub trace_id: Option<String>,
    /// The step concerned.
    pub span_id: Option<String>,
    /// The tool concerned.
    pub tool: Option<String>,
}

impl Alert {
    /// The alert as a JSON object (snake_case names), as the bindings
    /// hand it to application callbacks.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "rule_id": self.rule_id,
            "reason": self.reason,
            "flags": self.flags,
            "score": self.score,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "tool": self.tool,
        })
    }

    /// The alert for a verdict about `subject`.
    pub fn new(v: &Verdict, subject: &Event) -> Alert {
        Alert {
            rule_id: v.rule_id.clone(),
            reason: v.reason.clone(),
            flags: v.effect.flags.clone(),
            score: v.effect.score,
            trace_id: subject.trace_id.map(|t| t.to_string()),
            span_id: subject.span_id.map(|s| s.to_string()),
            tool: tool_name(subject).map(str::to_string),
        }
    }
}
