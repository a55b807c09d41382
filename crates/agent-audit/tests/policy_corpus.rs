//! The built-in rule pack against a labelled corpus of agent traffic
//! (`tests/corpus/policy.jsonl`, described in `tests/corpus/README.md`):
//! detection and false-positive rates per rule family.
//!
//! `cargo test -p agent-audit --test policy_corpus -- --nocapture` prints
//! the table and every misclassified item.

use std::collections::{BTreeMap, BTreeSet};

use agent_audit::policy::PolicyEngine;
use agent_audit::record::{Decision, LlmCall, ModelInfo, ToolCall, ToolInfo};
use agent_audit::{Body, Event, PayloadPart, SpanId, TraceId};
use serde_json::Value;

/// Lowest detection rate accepted in any family.
const MIN_DETECTION: f64 = 0.95;
/// Highest false-positive rate accepted in any family.
const MAX_FALSE_POSITIVES: f64 = 0.02;
/// Corpus size the rates are meaningful at.
const MIN_RISKY: usize = 150;
const MIN_BENIGN: usize = 300;
/// Positives each family needs so its detection rate means something.
const MIN_RISKY_PER_FAMILY: usize = 15;

/// One corpus line.
struct Item {
    id: String,
    note: String,
    event: Event,
    expect: BTreeSet<String>,
}

fn load() -> Vec<Item> {
    let mut seen = BTreeSet::new();
    include_str!("corpus/policy.jsonl")
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let at = format!("policy.jsonl:{}", i + 1);
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{at}: {e}"));
            let text = |key: &str| -> String {
                v[key]
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .unwrap_or_else(|| panic!("{at}: `{key}` must be a non-empty string"))
                    .to_string()
            };
            let id = text("id");
            assert!(seen.insert(id.clone()), "{at}: duplicate id {id}");
            let note = text("note");
            let body = match text("kind").as_str() {
                "tool_call" => Body::ToolCall(ToolCall {
                    tool: ToolInfo {
                        name: text("tool"),
                        ..ToolInfo::default()
                    },
                    ..ToolCall::default()
                }),
                "llm_call" => {
                    assert!(v.get("tool").is_none(), "{at}: a model call has no tool");
                    Body::LlmCall(LlmCall {
                        model: ModelInfo {
                            name: "corpus-model".into(),
                            provider: Some("corpus".into()),
                            ..ModelInfo::default()
                        },
                        ..LlmCall::default()
                    })
                }
                "decision" => {
                    assert!(v.get("tool").is_none(), "{at}: a decision has no tool");
                    Body::Decision(Decision {
                        decision: "call_tools".into(),
                        ..Decision::default()
                    })
                }
                other => panic!("{at}: kind {other:?} (expected tool_call, llm_call or decision)"),
            };
            let mut event = Event::new(body);
            let parts = v["parts"]
                .as_object()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| panic!("{at}: `parts` must be a non-empty object"));
            for (name, value) in parts {
                let part = PayloadPart::parse(name)
                    .unwrap_or_else(|| panic!("{at}: unknown payload part {name:?}"));
                event = event.with_part(part, value.clone());
            }
            let expect = v["expect"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: `expect` must be a list of families"))
                .iter()
                .map(|f| {
                    f.as_str()
                        .unwrap_or_else(|| panic!("{at}: families are strings"))
                        .to_string()
                })
                .collect();
            Item {
                id,
                note,
                event,
                expect,
            }
        })
        .collect()
}

/// The families the pack reports for one item, judged alone: a fresh
/// engine and a fresh trace, so no sequence, rate or baseline state leaks
/// from one item into the next.
fn detect(item: &Item) -> BTreeSet<String> {
    let engine = PolicyEngine::builtin().expect("built-in pack loads");
    let mut event = item
        .event
        .clone()
        .in_trace(TraceId::random(), SpanId::random(), None);
    engine
        .observe(&mut event)
        .into_iter()
        .map(|v| v.family)
        .collect()
}

#[derive(Default)]
struct Row {
    risky: usize,
    detected: usize,
    /// Items not labelled with the family: benign ones and risky ones of
    /// other families.
    others: usize,
    false_positives: usize,
    misses: Vec<String>,
    wrong: Vec<String>,
}

fn rate(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

#[test]
fn builtin_pack_detection_and_false_positive_rates_per_family() {
    let corpus = load();
    let engine = PolicyEngine::builtin().expect("built-in pack loads");
    // The families measured: those of the pack's content rules. Sequence,
    // rate and baseline rules judge several steps, not one item.
    let families: BTreeSet<String> = engine
        .content_rules()
        .iter()
        .map(|r| r.family.clone())
        .collect();
    for item in &corpus {
        for f in &item.expect {
            assert!(
                families.contains(f),
                "{}: unknown family {f:?} (the pack's: {families:?})",
                item.id
            );
        }
    }

    let mut rows: BTreeMap<String, Row> = families
        .iter()
        .map(|f| (f.clone(), Row::default()))
        .collect();
    let (mut risky, mut benign, mut benign_flagged, mut risky_exact) = (0, 0, 0, 0);
    let mut unexpected: Vec<String> = Vec::new();
    for item in &corpus {
        let got = detect(item);
        if item.expect.is_empty() {
            benign += 1;
            if !got.is_empty() {
                benign_flagged += 1;
            }
        } else {
            risky += 1;
            if got == item.expect {
                risky_exact += 1;
            }
        }
        for f in got.difference(&families) {
            unexpected.push(format!("{} (family {f})", item.id));
        }
        for (family, row) in rows.iter_mut() {
            let hit = got.contains(family);
            if item.expect.contains(family) {
                row.risky += 1;
                if hit {
                    row.detected += 1;
                } else {
                    row.misses
                        .push(format!("{}: {} (got {got:?})", item.id, item.note));
                }
            } else {
                row.others += 1;
                if hit {
                    row.false_positives += 1;
                    row.wrong.push(format!("{}: {}", item.id, item.note));
                }
            }
        }
    }

    println!(
        "policy corpus: {} items, {risky} risky, {benign} benign",
        corpus.len()
    );
    println!("detection: risky items of the family flagged with it");
    println!(
        "false positives: items not labelled with the family (benign items and risky items \
         of other families) flagged with it"
    );
    println!(
        "{:<17} {:>5} {:>8} {:>9} {:>7} {:>7} {:>7}",
        "family", "risky", "detected", "detection", "others", "FP", "FP rate"
    );
    let (mut all_risky, mut all_detected, mut all_others, mut all_fp) = (0, 0, 0, 0);
    for (family, r) in &rows {
        println!(
            "{family:<17} {:>5} {:>8} {:>8.1}% {:>7} {:>7} {:>6.2}%",
            r.risky,
            r.detected,
            100.0 * rate(r.detected, r.risky),
            r.others,
            r.false_positives,
            100.0 * rate(r.false_positives, r.others)
        );
        all_risky += r.risky;
        all_detected += r.detected;
        all_others += r.others;
        all_fp += r.false_positives;
    }
    println!(
        "{:<17} {all_risky:>5} {all_detected:>8} {:>8.1}% {all_others:>7} {all_fp:>7} {:>6.2}%",
        "all (labels)",
        100.0 * rate(all_detected, all_risky),
        100.0 * rate(all_fp, all_others)
    );
    println!(
        "benign items flagged at all: {benign_flagged} of {benign} ({:.2}%); risky items with \
         exactly their families: {risky_exact} of {risky} ({:.1}%)",
        100.0 * rate(benign_flagged, benign),
        100.0 * rate(risky_exact, risky)
    );

    let mut problems = Vec::new();
    for (family, r) in &rows {
        for m in &r.misses {
            println!("MISS {family:<16} {m}");
        }
        for w in &r.wrong {
            println!("FP   {family:<16} {w}");
        }
        if r.risky < MIN_RISKY_PER_FAMILY {
            problems.push(format!(
                "{family}: only {} risky items (need {MIN_RISKY_PER_FAMILY})",
                r.risky
            ));
        }
        if rate(r.detected, r.risky) < MIN_DETECTION {
            problems.push(format!(
                "{family}: detection {:.1}% < {:.0}%; missed: {}",
                100.0 * rate(r.detected, r.risky),
                100.0 * MIN_DETECTION,
                r.misses.join("; ")
            ));
        }
        if rate(r.false_positives, r.others) > MAX_FALSE_POSITIVES {
            problems.push(format!(
                "{family}: false positives {:.2}% > {:.0}%; flagged: {}",
                100.0 * rate(r.false_positives, r.others),
                100.0 * MAX_FALSE_POSITIVES,
                r.wrong.join("; ")
            ));
        }
    }
    if !unexpected.is_empty() {
        problems.push(format!(
            "verdicts outside the measured families: {}",
            unexpected.join(", ")
        ));
    }
    if risky < MIN_RISKY || benign < MIN_BENIGN {
        problems.push(format!(
            "corpus too small: {risky} risky (need {MIN_RISKY}), {benign} benign (need {MIN_BENIGN})"
        ));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
