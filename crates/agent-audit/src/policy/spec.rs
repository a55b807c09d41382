//! The policy file format (TOML) and its loading: every mistake is
//! reported with the file, the line and the reason.

use std::collections::BTreeMap;
use std::sync::Mutex;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::content::Glob;
use super::score::{Requirement, Tier};
use super::{
    Action, BaselineRule, ContentRule, Effect, Metric, Numeric, PatternGroup, PolicyEngine,
    RateRule, SequenceRule,
};
use crate::error::{AuditError, Result};
use crate::record::{Kind, PayloadPart};

/// Compiled regexes are capped so a policy cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    version: Option<Spanned<String>>,
    #[serde(default = "yes")]
    builtin: bool,
    #[serde(default)]
    disable: Vec<Spanned<String>>,
    #[serde(default)]
    internal_hosts: Vec<String>,
    #[serde(default, rename = "override")]
    overrides: BTreeMap<String, Spanned<OverrideSpec>>,
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
    #[serde(default)]
    sequence: Vec<Spanned<SequenceSpec>>,
    #[serde(default)]
    rate: Vec<Spanned<RateSpec>>,
    #[serde(default)]
    baseline: Vec<Spanned<BaselineSpec>>,
    #[serde(default)]
    tier: Vec<Spanned<TierSpec>>,
    #[serde(default)]
    compliance: Option<ComplianceSpec>,
}

fn yes() -> bool {
    true
}

/// Declares a rule section's struct: its own fields plus the id,
/// description, family, flags, score and action every rule has. (Not
/// `#[serde(flatten)]`: flattening loses the spans errors point at.)
macro_rules! rule_spec {
    ($name:ident { $($field:tt)* }) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            id: String,
            #[serde(default)]
            description: String,
            #[serde(default)]
            family: Option<String>,
            #[serde(default)]
            flags: Vec<String>,
            #[serde(default)]
            score: u32,
            #[serde(default)]
            action: Option<Spanned<String>>,
            $($field)*
        }
    };
}

rule_spec!(RuleSpec {
    #[serde(default)]
    kinds: Vec<Spanned<String>>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    not_tools: Vec<String>,
    #[serde(default, rename = "in")]
    parts: Vec<Spanned<String>>,
    #[serde(default)]
    regex: Vec<Spanned<String>>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    not_regex: Vec<Spanned<String>>,
    #[serde(default)]
    external_url: bool,
    #[serde(default)]
    encoded_blob_bytes: Option<usize>,
    #[serde(default)]
    duration_ms_over: Option<f64>,
    #[serde(default)]
    output_bytes_over: Option<u64>,
    #[serde(default)]
    tokens_over: Option<u64>,
    #[serde(default)]
    cost_usd_over: Option<f64>,
    #[serde(default)]
    permissions_denied: bool,
});

rule_spec!(SequenceSpec {
    steps: Vec<String>,
    #[serde(default)]
    within_s: Option<f64>,
});

rule_spec!(RateSpec {
    #[serde(default)]
    tools: Vec<String>,
    max_calls: u32,
    window_s: f64,
});

rule_spec!(BaselineSpec {
    #[serde(default)]
    tools: Vec<String>,
    metric: Spanned<String>,
    factor: f64,
    #[serde(default = "twenty")]
    min_samples: u32,
});

fn twenty() -> u32 {
    20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSpec {
    #[serde(default)]
    action: Option<Spanned<String>>,
    #[serde(default)]
    score: Option<u32>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<String>>,
    #[serde(default)]
    not_tools: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSpec {
    name: String,
    #[serde(default)]
    min_score: Option<u32>,
    #[serde(default)]
    flags_any: Vec<String>,
    #[serde(default)]
    require: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComplianceSpec {
    #[serde(default)]
    default_require: Vec<Spanned<String>>,
}

/// Where a problem is: origin and the text, to turn byte spans into lines.
struct Source<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, at: usize) -> usize {
        let end = at.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    fn err(&self, at: usize, reason: impl std::fmt::Display) -> AuditError {
        AuditError::config(format!("{}:{}: {reason}", self.origin, self.line_of(at)))
    }
}

fn parse_file(src: &Source<'_>) -> Result<FileSpec> {
    toml::from_str::<FileSpec>(src.text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        src.err(at, e.message().trim())
    })
}

fn action(src: &Source<'_>, a: &Option<Spanned<String>>) -> Result<Action> {
    match a {
        None => Ok(Action::Flag),
        Some(s) => Action::parse(s.get_ref()).ok_or_else(|| {
            src.err(
                s.span().start,
                format!(
                    "unknown action {:?} (expected flag, alert, review, require_approval or block)",
                    s.get_ref()
                ),
            )
        }),
    }
}

/// The flags, score and action every kind of rule carries.
macro_rules! effect {
    ($src:expr, $spec:expr, $at:expr) => {
        make_effect($src, &$spec.flags, $spec.score, &$spec.action, $at)
    };
}

fn make_effect(
    src: &Source<'_>,
    flags: &[String],
    score: u32,
    act: &Option<Spanned<String>>,
    at: usize,
) -> Result<Effect> {
    if score > 100 {
        return Err(src.err(at, format!("score must be 0..=100, got {score}")));
    }
    Ok(Effect {
        flags: flags.to_vec(),
        score,
        action: action(src, act)?,
    })
}

/// The globs given, or `*` when none are.
fn tools_or_any(v: &[String]) -> Vec<Glob> {
    if v.is_empty() {
        vec![Glob::new("*")]
    } else {
        globs(v)
    }
}

fn globs(v: &[String]) -> Vec<Glob> {
    v.iter().map(|g| Glob::new(g)).collect()
}

fn check_id(src: &Source<'_>, id: &str, at: usize, seen: &mut Vec<String>) -> Result<()> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(src.err(
            at,
            format!("rule id {id:?} must be non-empty letters, digits, '_', '-' or '.'"),
        ));
    }
    if seen.iter().any(|s| s == id) {
        return Err(src.err(at, format!("rule id {id:?} is used twice")));
    }
    seen.push(id.to_string());
    Ok(())
}

/// Checks a pattern's syntax (cheap: no automaton is built; the rules'
/// patterns are compiled together once, per payload part).
fn check_regex(src: &Source<'_>, pattern: &Spanned<String>) -> Result<()> {
    regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern.get_ref())
        .map(|_| ())
        .map_err(|e| {
            let first = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            src.err(
                pattern.span().start,
                format!("bad regex {:?}: {first}", pattern.get_ref()),
            )
        })
}

/// A content rule before its patterns are grouped.
struct Pending {
    rule: ContentRule,
    pattern: Option<String>,
}

fn content_rule(src: &Source<'_>, spec: &Spanned<RuleSpec>) -> Result<Pending> {
    let at = spec.span().start;
    let r = spec.get_ref();
    let mut kinds = Vec::new();
    for k in &r.kinds {
        let kind = Kind::parse(k.get_ref())
            .filter(|k| !k.is_writer_only() && *k != Kind::Policy)
            .ok_or_else(|| {
                src.err(
                    k.span().start,
                    format!("unknown or unsupported event kind {:?}", k.get_ref()),
                )
            })?;
        kinds.push(kind);
    }
    let mut parts = Vec::new();
    for p in &r.parts {
        let part = PayloadPart::parse(p.get_ref()).ok_or_else(|| {
            src.err(
                p.span().start,
                format!("unknown payload part {:?}", p.get_ref()),
            )
        })?;
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        parts.push(PayloadPart::Args);
    }
    parts.sort();
    let mut alternatives = Vec::new();
    for re in &r.regex {
        check_regex(src, re)?;
        alternatives.push(format!("(?:{})", re.get_ref()));
    }
    let keywords: Vec<String> = r
        .keywords
        .iter()
        .filter(|k| !k.trim().is_empty())
        .map(|k| regex::escape(k.trim()))
        .collect();
    if !keywords.is_empty() {
        alternatives.push(format!(r"(?i:\b(?:{})\b)", keywords.join("|")));
    }
    let not_regex = if r.not_regex.is_empty() {
        None
    } else {
        for re in &r.not_regex {
            check_regex(src, re)?;
        }
        let joined: Vec<String> = r
            .not_regex
            .iter()
            .map(|re| format!("(?:{})", re.get_ref()))
            .collect();
        Some(
            RegexBuilder::new(&joined.join("|"))
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| src.err(at, format!("bad not_regex: {e}")))?,
        )
    };
    let numeric = Numeric {
        duration_ms_over: r.duration_ms_over,
        output_bytes_over: r.output_bytes_over,
        tokens_over: r.tokens_over,
        cost_usd_over: r.cost_usd_over,
        permissions_denied: r.permissions_denied,
    };
    let pattern = (!alternatives.is_empty()).then(|| alternatives.join("|"));
    let has_condition = pattern.is_some()
        || r.external_url
        || r.encoded_blob_bytes.is_some()
        || !numeric.is_empty()
        || !r.tools.is_empty()
        || !kinds.is_empty();
    if !has_condition {
        return Err(src.err(
            at,
            format!(
                "rule {:?} has no condition: it would match every event",
                r.id
            ),
        ));
    }
    let rule = ContentRule {
        id: r.id.clone(),
        description: r.description.clone(),
        family: r.family.clone().unwrap_or_else(|| r.id.clone()),
        kinds,
        tools: globs(&r.tools),
        not_tools: globs(&r.not_tools),
        parts,
        has_pattern: pattern.is_some(),
        slots: Vec::new(),
        not_regex,
        external_url: r.external_url,
        encoded_blob: r.encoded_blob_bytes,
        numeric,
        effect: effect!(src, r, at)?,
    };
    check_gate(src, &rule, at)?;
    Ok(Pending { rule, pattern })
}

fn check_gate(src: &Source<'_>, rule: &ContentRule, at: usize) -> Result<()> {
    if rule.effect.action.is_gate() && !rule.is_pre_exec() {
        return Err(src.err(
            at,
            format!(
                "rule {:?}: action {} is decided before the tool runs, so the rule may only look at \
                 tool calls (kinds = [\"tool_call\"]), tool names and `in = [\"args\"]`, without numeric conditions",
                rule.id,
                rule.effect.action.as_str()
            ),
        ));
    }
    Ok(())
}

fn requirement(src: &Source<'_>, s: &Spanned<String>) -> Result<Requirement> {
    Requirement::parse(s.get_ref()).ok_or_else(|| {
        src.err(
            s.span().start,
            format!(
                "unknown requirement {:?} (expected one of: {})",
                s.get_ref(),
                Requirement::ALL
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// Everything of one file, before it is merged with the built-in pack.
struct Loaded {
    version: Option<String>,
    builtin: bool,
    disable: Vec<Spanned<String>>,
    internal_hosts: Vec<String>,
    overrides: BTreeMap<String, Spanned<OverrideSpec>>,
    content: Vec<Pending>,
    sequences: Vec<SequenceRule>,
    rates: Vec<RateRule>,
    baselines: Vec<BaselineRule>,
    tiers: Option<Vec<Tier>>,
    default_require: Option<Vec<Requirement>>,
}

fn load_one(src: &Source<'_>) -> Result<Loaded> {
    let f = parse_file(src)?;
    let mut ids = Vec::new();
    let mut content = Vec::new();
    for r in &f.rule {
        check_id(src, &r.get_ref().id, r.span().start, &mut ids)?;
        content.push(content_rule(src, r)?);
    }
    let mut sequences = Vec::new();
    for s in &f.sequence {
        let at = s.span().start;
        let spec = s.get_ref();
        check_id(src, &spec.id, at, &mut ids)?;
        if spec.steps.len() < 2 {
            return Err(src.err(
                at,
                format!("sequence {:?} needs at least two steps (flags)", spec.id),
            ));
        }
        if spec.within_s.is_some_and(|w| !(w.is_finite() && w > 0.0)) {
            return Err(src.err(at, "within_s must be a positive number of seconds"));
        }
        sequences.push(SequenceRule {
            id: spec.id.clone(),
            description: spec.description.clone(),
            family: spec.family.clone().unwrap_or_else(|| spec.id.clone()),
            steps: spec.steps.clone(),
            within_ms: spec.within_s.map(|w| (w * 1000.0) as i64),
            effect: effect!(src, spec, at)?,
        });
    }
    let mut rates = Vec::new();
    for r in &f.rate {
        let at = r.span().start;
        let spec = r.get_ref();
        check_id(src, &spec.id, at, &mut ids)?;
        if !(spec.window_s.is_finite() && spec.window_s > 0.0) {
            return Err(src.err(at, "window_s must be a positive number of seconds"));
        }
        rates.push(RateRule {
            id: spec.id.clone(),
            description: spec.description.clone(),
            family: spec.family.clone().unwrap_or_else(|| spec.id.clone()),
            tools: tools_or_any(&spec.tools),
            max_calls: spec.max_calls,
            window_ms: (spec.window_s * 1000.0) as i64,
            effect: effect!(src, spec, at)?,
        });
    }
    let mut baselines = Vec::new();
    for b in &f.baseline {
        let at = b.span().start;
        let spec = b.get_ref();
        check_id(src, &spec.id, at, &mut ids)?;
        let metric = match spec.metric.get_ref().as_str() {
            "duration_ms" => Metric::DurationMs,
            "output_bytes" => Metric::OutputBytes,
            other => {
                return Err(src.err(
                    spec.metric.span().start,
                    format!("unknown metric {other:?} (expected duration_ms or output_bytes)"),
                ));
            }
        };
        if !(spec.factor.is_finite() && spec.factor > 1.0) {
            return Err(src.err(at, "factor must be a number above 1"));
        }
        let eff = effect!(src, spec, at)?;
        if eff.action.is_gate() {
            return Err(src.err(
                at,
                "a baseline rule is judged after the tool ran: it cannot block or require approval",
            ));
        }
        baselines.push(BaselineRule {
            id: spec.id.clone(),
            description: spec.description.clone(),
            family: spec.family.clone().unwrap_or_else(|| spec.id.clone()),
            tools: tools_or_any(&spec.tools),
            metric,
            factor: spec.factor,
            min_samples: spec.min_samples.max(1),
            effect: eff,
        });
    }
    let tiers = if f.tier.is_empty() {
        None
    } else {
        let mut out = Vec::new();
        for t in &f.tier {
            let spec = t.get_ref();
            let mut require = Vec::new();
            for r in &spec.require {
                require.push(requirement(src, r)?);
            }
            if spec.min_score.is_none() && spec.flags_any.is_empty() {
                return Err(src.err(
                    t.span().start,
                    format!("tier {:?} needs min_score or flags_any", spec.name),
                ));
            }
            out.push(Tier {
                name: spec.name.clone(),
                min_score: spec.min_score,
                flags_any: spec.flags_any.clone(),
                require,
            });
        }
        Some(out)
    };
    let default_require = match &f.compliance {
        None => None,
        Some(c) => {
            let mut out = Vec::new();
            for r in &c.default_require {
                out.push(requirement(src, r)?);
            }
            Some(out)
        }
    };
    Ok(Loaded {
        version: f.version.map(Spanned::into_inner),
        builtin: f.builtin,
        disable: f.disable,
        internal_hosts: f.internal_hosts,
        overrides: f.overrides,
        content,
        sequences,
        rates,
        baselines,
        tiers,
        default_require,
    })
}

/// Applies `[override.<id>]` to whichever built-in rule has that id.
fn apply_override(
    base: &mut Loaded,
    user: &Source<'_>,
    id: &str,
    o: &Spanned<OverrideSpec>,
) -> Result<()> {
    let at = o.span().start;
    let spec = o.get_ref();
    let new_action = match &spec.action {
        Some(a) => Some(action(user, &Some(a.clone()))?),
        None => None,
    };
    if spec.score.is_some_and(|s| s > 100) {
        return Err(user.err(at, "score must be 0..=100"));
    }
    let patch = |e: &mut Effect| {
        if let Some(a) = new_action {
            e.action = a;
        }
        if let Some(s) = spec.score {
            e.score = s;
        }
        if let Some(f) = &spec.flags {
            e.flags = f.clone();
        }
    };
    if let Some(p) = base.content.iter_mut().find(|p| p.rule.id == id) {
        patch(&mut p.rule.effect);
        if let Some(t) = &spec.tools {
            p.rule.tools = globs(t);
        }
        if let Some(t) = &spec.not_tools {
            p.rule.not_tools = globs(t);
        }
        return check_gate(user, &p.rule, at);
    }
    if let Some(s) = base.sequences.iter_mut().find(|s| s.id == id) {
        patch(&mut s.effect);
        return Ok(());
    }
    if let Some(r) = base.rates.iter_mut().find(|r| r.id == id) {
        patch(&mut r.effect);
        if let Some(t) = &spec.tools {
            r.tools = globs(t);
        }
        return Ok(());
    }
    if let Some(b) = base.baselines.iter_mut().find(|b| b.id == id) {
        patch(&mut b.effect);
        if new_action.is_some_and(Action::is_gate) {
            return Err(user.err(at, "a baseline rule cannot block or require approval"));
        }
        return Ok(());
    }
    Err(user.err(at, format!("[override.{id}]: no built-in rule has this id")))
}

/// Loads the built-in pack and, when given, a user policy on top.
pub(super) fn load(
    builtin_text: &str,
    builtin_origin: &str,
    user: Option<(&str, &str)>,
) -> Result<PolicyEngine> {
    let bsrc = Source {
        origin: builtin_origin,
        text: builtin_text,
    };
    let mut base = load_one(&bsrc)?;
    let mut version = base
        .version
        .clone()
        .unwrap_or_else(|| "agent-audit-builtin".into());
    if let Some((text, origin)) = user {
        let usrc = Source { origin, text };
        let u = load_one(&usrc)?;
        version = u.version.clone().ok_or_else(|| {
            usrc.err(
                0,
                "the policy needs a `version` (every event records it as policy_version)",
            )
        })?;
        if version.trim().is_empty() {
            return Err(usrc.err(0, "`version` must not be empty"));
        }
        if !u.builtin {
            base.content.clear();
            base.sequences.clear();
            base.rates.clear();
            base.baselines.clear();
        }
        for d in &u.disable {
            let id = d.get_ref();
            let before =
                base.content.len() + base.sequences.len() + base.rates.len() + base.baselines.len();
            base.content.retain(|p| &p.rule.id != id);
            base.sequences.retain(|s| &s.id != id);
            base.rates.retain(|r| &r.id != id);
            base.baselines.retain(|b| &b.id != id);
            let after =
                base.content.len() + base.sequences.len() + base.rates.len() + base.baselines.len();
            if before == after && u.builtin {
                return Err(usrc.err(
                    d.span().start,
                    format!("disable: no built-in rule has the id {id:?}"),
                ));
            }
        }
        for (id, o) in &u.overrides {
            if !u.builtin {
                return Err(usrc.err(
                    o.span().start,
                    "[override] needs the built-in pack (builtin = true)",
                ));
            }
            apply_override(&mut base, &usrc, id, o)?;
        }
        // A user rule with a built-in rule's id replaces it.
        for p in u.content {
            base.content.retain(|q| q.rule.id != p.rule.id);
            base.content.push(p);
        }
        for s in u.sequences {
            base.sequences.retain(|q| q.id != s.id);
            base.sequences.push(s);
        }
        for r in u.rates {
            base.rates.retain(|q| q.id != r.id);
            base.rates.push(r);
        }
        for b in u.baselines {
            base.baselines.retain(|q| q.id != b.id);
            base.baselines.push(b);
        }
        base.internal_hosts.extend(u.internal_hosts);
        if u.tiers.is_some() {
            base.tiers = u.tiers;
        }
        if u.default_require.is_some() {
            base.default_require = u.default_require;
        }
    }
    build(version, base)
}

fn build(version: String, loaded: Loaded) -> Result<PolicyEngine> {
    // One pattern set per payload part: each part's text is scanned once
    // for every rule that looks at it.
    let mut groups: Vec<(PayloadPart, Vec<String>)> = Vec::new();
    let mut content = Vec::new();
    for mut p in loaded.content {
        if let Some(pattern) = p.pattern.take() {
            for part in p.rule.parts.clone() {
                let gi = match groups.iter().position(|(q, _)| *q == part) {
                    Some(i) => i,
                    None => {
                        groups.push((part, Vec::new()));
                        groups.len() - 1
                    }
                };
                p.rule.slots.push((gi, groups[gi].1.len()));
                groups[gi].1.push(pattern.clone());
            }
        }
        content.push(p.rule);
    }
    let mut compiled = Vec::new();
    for (part, patterns) in groups {
        let set: RegexSet = RegexSetBuilder::new(&patterns)
            .size_limit(REGEX_SIZE_LIMIT * 4)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                AuditError::config(format!(
                    "policy: the rules' patterns do not compile together: {e}"
                ))
            })?;
        compiled.push(PatternGroup { part, set });
    }
    Ok(PolicyEngine {
        version,
        content,
        groups: compiled,
        sequences: loaded.sequences,
        rates: loaded.rates,
        baselines: loaded.baselines,
        tiers: loaded.tiers.unwrap_or_default(),
        default_require: loaded.default_require.unwrap_or_default(),
        internal_hosts: globs(&loaded.internal_hosts),
        memory: Mutex::new(super::Memory::default()),
        tool_rules: Mutex::new(super::ToolCache::default()),
    })
}
