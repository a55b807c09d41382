//! Each tamper class is made on a real log and must be named by the
//! verifier; crashes and erasures must not read as tampering.

mod common;

use agent_audit::chain::{envelope_hash, fmt_sha256, take_unhashed};
use agent_audit::keys::KeyPair;
use agent_audit::verify::{FindingCode, Severity, StreamStatus, VerifyOptions, verify_log};
use common::*;
use serde_json::{Map, Value};

fn verify(dir: &std::path::Path) -> agent_audit::verify::VerifyReport {
    verify_log(dir, &VerifyOptions::default()).unwrap()
}

fn codes(r: &agent_audit::verify::VerifyReport) -> Vec<FindingCode> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Tampered)
        .map(|f| f.code)
        .collect()
}

fn parse(line: &str) -> Map<String, Value> {
    match serde_json::from_str(line).unwrap() {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

/// Re-hashes a record after an edit, as a forger who knows the format would.
fn rehash(mut m: Map<String, Value>) -> String {
    let un = take_unhashed(&mut m);
    let h = envelope_hash(&Value::Object(m.clone()), &mut Vec::new()).unwrap();
    m.insert("hash".into(), Value::String(fmt_sha256(&h)));
    if let Some(p) = un.payload {
        m.insert("payload".into(), p);
    }
    serde_json::to_string(&m).unwrap()
}

fn tool_line_index(lines: &[String], nth: usize) -> usize {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"kind\":\"tool_call\""))
        .nth(nth)
        .unwrap()
        .0
}

#[test]
fn clean_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 50, |_| {});
    let r = verify(dir.path());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.streams[0].status, StreamStatus::Clean);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn changed_byte_in_envelope_is_hash_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 3);
    lines[i] = lines[i].replace("\"duration_ms\":1.5", "\"duration_ms\":2.5");
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::HashMismatch],
        "{:#?}",
        r.findings
    );
    let f = &r.findings[0];
    assert_eq!(f.seq, Some(i as u64));
    assert!(f.offset.is_some() && f.file.is_some());
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn changed_byte_in_payload_is_payload_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 5);
    lines[i] = lines[i].replace("ORD-000005", "ORD-000006");
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::PayloadMismatch],
        "{:#?}",
        r.findings
    );
}

#[test]
fn deleted_record_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 7);
    lines.remove(i);
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    let c = codes(&r);
    assert_eq!(c[0], FindingCode::MissingRecords, "{:#?}", r.findings);
    assert_eq!(r.findings[0].seq, Some(i as u64));
    // Every later signed root no longer matches the records present.
    assert!(c.contains(&FindingCode::CheckpointMismatch));
}

#[test]
fn inserted_record_with_reused_seq_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 4);
    let mut forged = parse(&lines[i]);
    forged.insert("result_status".into(), Value::String("error".into()));
    lines.insert(i + 1, rehash(forged));
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::ConflictingRecord],
        "{:#?}",
        r.findings
    );
}

#[test]
fn inserted_record_with_renumbering_breaks_chain_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let lines = read_lines(&seg);
    let i = tool_line_index(&lines, 4);
    // The forger inserts a record and renumbers and re-hashes every later
    // one, keeping every prev link consistent.
    let mut out: Vec<String> = lines[..=i].to_vec();
    let mut prev = parse(&lines[i])["hash"].clone();
    let mut insert = parse(&lines[i]);
    insert.insert(
        "event_id".into(),
        Value::String("01a20000-0000-7000-8000-000000000000".into()),
    );
    let mut rest = vec![insert];
    rest.extend(lines[i + 1..].iter().map(|l| parse(l)));
    for (seq, mut m) in (i as u64 + 1..).zip(rest) {
        m.insert("seq".into(), Value::from(seq));
        m.insert("prev".into(), prev.clone());
        let line = rehash(m);
        prev = parse(&line)["hash"].clone();
        out.push(line);
    }
    write_lines(&seg, &out);
    let r = verify(dir.path());
    let c = codes(&r);
    assert!(
        c.contains(&FindingCode::CheckpointMismatch) || c.contains(&FindingCode::BadSignature),
        "{:#?}",
        r.findings
    );
}

#[test]
fn swapped_records_are_reordered() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 2);
    lines.swap(i, i + 1);
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(codes(&r), vec![FindingCode::Reordered], "{:#?}", r.findings);
}

#[test]
fn repeated_record_is_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 9);
    let dup = lines[i].clone();
    lines.insert(i + 1, dup);
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::DuplicateRecord],
        "{:#?}",
        r.findings
    );
}

#[test]
fn forged_prev_is_chain_break() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 6);
    let mut m = parse(&lines[i]);
    m.insert("prev".into(), Value::String(fmt_sha256(&[9u8; 32])));
    lines[i] = rehash(m);
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    let c = codes(&r);
    assert_eq!(c[0], FindingCode::ChainBreak, "{:#?}", r.findings);
    assert_eq!(r.findings[0].seq, Some(i as u64));
}

#[test]
fn cut_tail_is_caught_by_the_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let lines = read_lines(&seg);
    // Drop the last three records (tool call, stream_end, final checkpoint).
    write_lines(&seg, &lines[..lines.len() - 3]);
    let r = verify(dir.path());
    assert!(
        codes(&r).contains(&FindingCode::CutTail),
        "{:#?}",
        r.findings
    );
    assert!(!r.with_code(FindingCode::OpenStream).is_empty());
}

#[test]
fn flipped_signature_is_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    let mut m = parse(&lines[i]);
    let sig = m["sig"].as_str().unwrap().to_string();
    let last = sig.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &sig[..sig.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    m.insert("sig".into(), Value::String(flipped));
    lines[i] = serde_json::to_string(&m).unwrap();
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::BadSignature],
        "{:#?}",
        r.findings
    );
}

#[test]
fn unknown_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, |_| {});
    // Trusting only another key.
    let other = KeyPair::generate().unwrap().public();
    let r = verify_log(
        dir.path(),
        &VerifyOptions {
            trusted_keys: vec![other],
        },
    )
    .unwrap();
    assert_eq!(
        codes(&r),
        vec![FindingCode::UnknownKey],
        "{:#?}",
        r.findings
    );
    // Trusting the right key is clean.
    let right = KeyPair::from_pem(FIXED_KEY_PEM).unwrap().public();
    let r = verify_log(
        dir.path(),
        &VerifyOptions {
            trusted_keys: vec![right],
        },
    )
    .unwrap();
    assert!(r.findings.is_empty());
}

#[test]
fn checkpoint_resigned_by_another_key_is_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 5, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    let mut m = parse(&lines[i]);
    let h = agent_audit::chain::parse_sha256(m["hash"].as_str().unwrap()).unwrap();
    let mallory = KeyPair::generate().unwrap();
    m.insert("sig".into(), Value::String(mallory.sign_hash(&h)));
    lines[i] = serde_json::to_string(&m).unwrap();
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::UnknownKey],
        "{:#?}",
        r.findings
    );
}

#[test]
fn torn_last_line_and_open_stream_are_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |_| {});
    let seg = segment(&s);
    let lines = read_lines(&seg);
    // As after a crash: the last two records never made it (so the head
    // is older), and the one before is half written.
    let keep = lines.len() - 2;
    let head_seq = parse(&std::fs::read_to_string(s.join("head.json")).unwrap())["seq"]
        .as_u64()
        .unwrap();
    // Rewrite head.json to the last checkpoint that is still complete.
    let last_cp = lines[..keep - 1]
        .iter()
        .rposition(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    assert!(head_seq as usize > last_cp);
    std::fs::write(s.join("head.json"), format!("{}\n", lines[last_cp])).unwrap();
    let mut text = lines[..keep - 1].join("\n");
    text.push('\n');
    text.push_str(&lines[keep - 1][..40]);
    std::fs::write(&seg, text).unwrap();
    let r = verify(dir.path());
    assert!(codes(&r).is_empty(), "{:#?}", r.findings);
    assert_eq!(r.with_code(FindingCode::TornTail).len(), 1);
    assert_eq!(r.with_code(FindingCode::OpenStream).len(), 1);
    assert_eq!(r.streams[0].status, StreamStatus::Truncated);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn erased_payload_reads_as_erased_not_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 10, |_| {});
    let lines = read_lines(&segment(&s));
    let i = tool_line_index(&lines, 3);
    let id = parse(&lines[i])["event_id"].as_str().unwrap().to_string();
    let n = agent_audit::verify::erase_payloads(dir.path(), &[id], "GDPR Art. 17 request").unwrap();
    assert_eq!(n, 1);
    let r = verify(dir.path());
    assert!(codes(&r).is_empty(), "{:#?}", r.findings);
    assert_eq!(r.with_code(FindingCode::ErasedPayload).len(), 1);
    assert_eq!(r.streams[0].erased_payloads, 1);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn malformed_middle_line_is_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 10, |_| {});
    let seg = segment(&s);
    let mut lines = read_lines(&seg);
    let i = tool_line_index(&lines, 2);
    lines[i].truncate(30);
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert!(
        codes(&r).contains(&FindingCode::MalformedRecord),
        "{:#?}",
        r.findings
    );
}

#[test]
fn not_a_log_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    assert!(verify_log(dir.path(), &VerifyOptions::default()).is_err());
    assert!(verify_log(&dir.path().join("missing"), &VerifyOptions::default()).is_err());
}

#[test]
fn hundred_thousand_records_verify() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100_000, |c| {
        c.queue_capacity = 200_000;
        c.queue_max_bytes = 1 << 30;
    });
    let t = std::time::Instant::now();
    let r = verify(dir.path());
    let secs = t.elapsed().as_secs_f64();
    assert!(
        r.findings.is_empty(),
        "{:#?}",
        &r.findings[..r.findings.len().min(5)]
    );
    assert!(r.records > 100_000);
    eprintln!(
        "verified {} records in {secs:.2}s ({:.0}/s)",
        r.records,
        r.records as f64 / secs
    );
}

#[test]
fn reformatted_but_equal_records_still_verify() {
    // The verifier's fast path reads the writer's own layout; a record
    // re-serialised with another key order and spacing is the same record
    // and must verify through the full check.
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 30, |_| {});
    let seg = segment(&s);
    let lines: Vec<String> = read_lines(&seg)
        .iter()
        .map(|l| {
            serde_json::to_string_pretty(&parse(l))
                .unwrap()
                .replace('\n', " ")
        })
        .collect();
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert!(codes(&r).is_empty(), "{:#?}", r.findings);
    assert_eq!(r.streams[0].status, StreamStatus::Clean);
}

#[test]
fn fields_after_the_hash_are_checked_too() {
    // The verifier's fast path hashes the envelope's bytes as they are and
    // reads what follows `hash` by the writer's layout; anything else on
    // the line must still be caught, not skipped.
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 20, |c| c.sign_records = true);
    let seg = segment(&s);
    let original = read_lines(&seg);
    let i = tool_line_index(&original, 2);
    type Edit = (&'static str, fn(&str) -> String, FindingCode);
    let edits: [Edit; 3] = [
        (
            "a field appended after the payload",
            |l| format!("{},\"zz_note\":\"edited\"}}", l.strip_suffix('}').unwrap()),
            FindingCode::HashMismatch,
        ),
        (
            "a field between hash and sig",
            |l| l.replacen(",\"sig\":", ",\"risk_score\":0,\"sig\":", 1),
            FindingCode::HashMismatch,
        ),
        (
            "a salt changed",
            |l| {
                let at = l.find("\"salt\":\"").unwrap() + 8;
                let flipped = if &l[at..at + 1] == "0" { "1" } else { "0" };
                format!("{}{flipped}{}", &l[..at], &l[at + 1..])
            },
            FindingCode::PayloadMismatch,
        ),
    ];
    for (what, edit, code) in edits {
        let mut lines = original.clone();
        lines[i] = edit(&lines[i]);
        assert_ne!(lines[i], original[i], "{what}");
        write_lines(&seg, &lines);
        let r = verify(dir.path());
        assert_eq!(codes(&r), vec![code], "{what}: {:#?}", r.findings);
        assert_eq!(r.findings[0].seq, Some(i as u64), "{what}");
    }
    write_lines(&seg, &original);
    assert!(verify(dir.path()).findings.is_empty());
}

#[test]
fn many_segments_verify_one_at_a_time() {
    // Segments are read and checked one by one into a reused buffer: the
    // chain, checkpoints and findings must run across segment boundaries.
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 3000, |c| {
        c.segment_max_bytes = 64 * 1024;
        c.checkpoint_every = 100;
    });
    let mut segs: Vec<_> = std::fs::read_dir(&s)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segs.sort();
    assert!(segs.len() > 10, "{} segments", segs.len());
    let r = verify(dir.path());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.streams[0].status, StreamStatus::Clean);
    let lines: usize = segs.iter().map(|p| read_lines(p).len()).sum();
    assert_eq!(r.records, lines as u64);
    assert!(r.streams[0].checkpoints_verified >= 30);

    // A record in a middle segment changed: named with that file and offset.
    let mid = &segs[segs.len() / 2];
    let mut lines = read_lines(mid);
    let j = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"tool_call\""))
        .unwrap();
    let offset: usize = lines[..j].iter().map(|l| l.len() + 1).sum();
    let seq = parse(&lines[j])["seq"].as_u64().unwrap();
    lines[j] = lines[j].replace("\"duration_ms\":1.5", "\"duration_ms\":9.5");
    write_lines(mid, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::HashMismatch],
        "{:#?}",
        r.findings
    );
    let f = &r.findings[0];
    assert_eq!(f.seq, Some(seq));
    assert_eq!(f.offset, Some(offset as u64));
    assert_eq!(f.file.as_deref(), Some(mid.as_path()));

    // The last segment torn mid-line, with an empty segment after it (a
    // crash right after rotating): a torn tail, not tampering.
    let last = segs.last().unwrap();
    let text = std::fs::read(last).unwrap();
    std::fs::write(last, &text[..text.len() - 40]).unwrap();
    std::fs::write(s.join("seg-999999.jsonl"), b"").unwrap();
    let r = verify(dir.path());
    let torn: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.code == FindingCode::TornTail)
        .collect();
    assert_eq!(torn.len(), 1, "{:#?}", r.findings);
    assert_eq!(torn[0].file.as_deref(), Some(last.as_path()));
}

#[test]
fn findings_past_the_first_read_chunks_keep_their_offsets() {
    // A segment is read a few MB at a time: a record far into it, and a
    // torn last line, are named at their own offsets in the file.
    let dir = tempfile::tempdir().unwrap();
    let s = write_log(dir.path(), 40_000, |c| {
        c.queue_capacity = 50_000;
        c.queue_max_bytes = 1 << 30;
    });
    let seg = segment(&s);
    let clean = read_lines(&seg);
    let offset_of =
        |lines: &[String], j: usize| -> u64 { lines[..j].iter().map(|l| l.len() as u64 + 1).sum() };
    let total = offset_of(&clean, clean.len());
    assert!(total > 12 << 20, "segment of {total} bytes");

    // A changed record about three quarters in.
    let mut lines = clean.clone();
    let j = tool_line_index(&lines, 30_000);
    let seq = parse(&lines[j])["seq"].as_u64().unwrap();
    lines[j] = lines[j].replace("\"duration_ms\":1.5", "\"duration_ms\":7.5");
    write_lines(&seg, &lines);
    let r = verify(dir.path());
    assert_eq!(
        codes(&r),
        vec![FindingCode::HashMismatch],
        "{:#?}",
        r.findings
    );
    assert_eq!(r.findings[0].seq, Some(seq));
    assert_eq!(r.findings[0].offset, Some(offset_of(&lines, j)));

    // As after a crash: the last line half written.
    let last = clean.len() - 1;
    let mut text = clean[..last].join("\n");
    text.push('\n');
    text.push_str(&clean[last][..30]);
    std::fs::write(&seg, text).unwrap();
    // The signed head a crash leaves: the last checkpoint written whole.
    let cp = clean[..last]
        .iter()
        .rposition(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    std::fs::write(s.join("head.json"), format!("{}\n", clean[cp])).unwrap();
    let r = verify(dir.path());
    assert!(codes(&r).is_empty(), "{:#?}", r.findings);
    let torn = r.with_code(FindingCode::TornTail);
    assert_eq!(torn.len(), 1, "{:#?}", r.findings);
    assert_eq!(torn[0].offset, Some(offset_of(&clean, last)));
}
