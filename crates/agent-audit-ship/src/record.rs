//! What the shipper and the collector read of a record without verifying
//! it: its stream, seq and kind, and the partition (tenant, retention
//! class) it belongs to; and the one way both turn a tenant or retention
//! class into a NATS subject token and a directory name.

use std::borrow::Cow;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Partition token for a missing or empty value.
pub const UNKNOWN: &str = "_unknown";

/// Where a stream goes in the central log: `DIR/<tenant>/<retention_class>/`.
/// Both are tokens made by [`partition_token`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Partition {
    /// Tenant token.
    pub tenant: String,
    /// Retention class token.
    pub retention_class: String,
}

impl Partition {
    /// The partition of records that name none.
    pub fn unknown() -> Partition {
        Partition {
            tenant: UNKNOWN.into(),
            retention_class: UNKNOWN.into(),
        }
    }
}

/// The top-level fields of a record the routing needs.
#[derive(Clone, Debug)]
pub struct RecordInfo {
    /// `stream_id`.
    pub stream_id: Option<String>,
    /// `seq`.
    pub seq: Option<u64>,
    /// `kind`.
    pub kind: Option<String>,
    /// The partition, for a record that has a `retention_class` or a
    /// `principal`: every event record does; the writer's own records
    /// (`stream_start`, `checkpoint`, `gap`, `stream_end`) do not. A
    /// missing tenant is `_unknown`.
    pub partition: Option<Partition>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    stream_id: Option<Cow<'a, str>>,
    seq: Option<u64>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    principal: Option<PrincipalHead<'a>>,
    #[serde(borrow)]
    retention_class: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PrincipalHead<'a> {
    #[serde(borrow)]
    tenant_id: Option<Cow<'a, str>>,
}

/// Reads the routing fields of one record line; `None` when the line is
/// not a JSON object with those fields well-typed (the verifier will say
/// what is wrong with it).
pub fn record_info(line: &[u8]) -> Option<RecordInfo> {
    let h: Head<'_> = serde_json::from_slice(line).ok()?;
    let partition = (h.principal.is_some() || h.retention_class.is_some()).then(|| Partition {
        tenant: partition_token(
            h.principal
                .as_ref()
                .and_then(|p| p.tenant_id.as_deref())
                .unwrap_or_default(),
        ),
        retention_class: partition_token(h.retention_class.as_deref().unwrap_or_default()),
    });
    Some(RecordInfo {
        stream_id: h.stream_id.map(Cow::into_owned),
        seq: h.seq,
        kind: h.kind.map(Cow::into_owned),
        partition,
    })
}

/// The top-level `seq` and `kind` of a record line, found by one byte
/// scan that only tracks strings and nesting (nothing is parsed into
/// values): what the tailer needs of every line once a stream's tenant
/// is known, at a fraction of [`record_info`]'s cost. `None` when the line
/// is not an object holding both, well-typed; the caller then falls back
/// to [`record_info`].
pub fn seq_and_kind(line: &[u8]) -> Option<(u64, &str)> {
    let mut i = 0usize;
    let mut depth = 0usize;
    let mut expect_key = false;
    let (mut seq, mut kind) = (None, None);
    while let Some(&b) = line.get(i) {
        match b {
            b'"' => {
                let end = string_end(line, i + 1)?;
                if depth == 1 && expect_key {
                    let key = line.get(i + 1..end)?;
                    let mut j = end + 1;
                    while line.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    if line.get(j) != Some(&b':') {
                        return None;
                    }
                    j += 1;
                    while line.get(j).is_some_and(u8::is_ascii_whitespace) {
                        j += 1;
                    }
                    match key {
                        b"seq" => {
                            let digits = line
                                .get(j..)?
                                .iter()
                                .take_while(|c| c.is_ascii_digit())
                                .count();
                            let text = std::str::from_utf8(line.get(j..j + digits)?).ok()?;
                            seq = Some(text.parse::<u64>().ok()?);
                        }
                        b"kind" => {
                            if line.get(j) != Some(&b'"') {
                                return None;
                            }
                            let kend = string_end(line, j + 1)?;
                            let raw = line.get(j + 1..kend)?;
                            if raw.contains(&b'\\') {
                                return None;
                            }
                            kind = Some(std::str::from_utf8(raw).ok()?);
                        }
                        _ => {}
                    }
                    if let (Some(s), Some(k)) = (seq, kind) {
                        return Some((s, k));
                    }
                    expect_key = false;
                    i = j;
                    continue;
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = b == b'{' && depth == 1;
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' => expect_key = depth == 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Index of the quote closing the string whose content starts at `from`.
fn string_end(line: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let rest = line.get(from..)?;
        let k = rest.iter().position(|&c| c == b'"' || c == b'\\')?;
        if rest.get(k) == Some(&b'"') {
            return Some(from + k);
        }
        from += k + 2;
    }
}

/// A tenant id, retention class or stream id as one safe path component
/// and NATS subject token: ASCII letters, digits, `_` and `-` are kept,
/// every other byte becomes `~XX` (hex); empty becomes `_unknown`;
/// `quarantine` (the collector's own directory) becomes `~quarantine`;
/// over 120 bytes, the head is kept and a hash of the whole appended.
pub fn partition_token(s: &str) -> String {
    if s.is_empty() {
        return UNKNOWN.into();
    }
    if s == "quarantine" {
        return "~quarantine".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    if out.len() > 120 {
        let digest = Sha256::digest(s.as_bytes());
        let mut short: String = out.chars().take(80).collect();
        short.push_str("~~");
        for b in digest.iter().take(12) {
            short.push_str(&format!("{b:02x}"));
        }
        return short;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_safe_and_distinct() {
        assert_eq!(partition_token("acme"), "acme");
        assert_eq!(partition_token("Acme_Corp-2"), "Acme_Corp-2");
        assert_eq!(partition_token(""), "_unknown");
        assert_eq!(partition_token("a.b"), "a~2Eb");
        assert_eq!(partition_token("../x"), "~2E~2E~2Fx");
        assert_eq!(partition_token("a*>"), "a~2A~3E");
        assert_eq!(partition_token("quarantine"), "~quarantine");
        assert_ne!(partition_token("a~2Eb"), partition_token("a.b"));
        let long = "x".repeat(300);
        let t = partition_token(&long);
        assert!(t.len() < 120);
        assert_ne!(t, partition_token(&"x".repeat(301)));
    }

    #[test]
    fn reads_routing_fields() {
        let line = br#"{"v":1,"stream_id":"s1","seq":7,"kind":"tool_call","principal":{"tenant_id":"acme"},"retention_class":"standard_7y","hash":"x"}"#;
        let info = record_info(line).unwrap();
        assert_eq!(info.stream_id.as_deref(), Some("s1"));
        assert_eq!(info.seq, Some(7));
        assert_eq!(
            info.partition,
            Some(Partition {
                tenant: "acme".into(),
                retention_class: "standard_7y".into()
            })
        );
        let cp = br#"{"v":1,"stream_id":"s1","seq":8,"kind":"checkpoint"}"#;
        assert!(record_info(cp).unwrap().partition.is_none());
        let no_tenant = br#"{"seq":9,"kind":"decision","retention_class":"short"}"#;
        assert_eq!(
            record_info(no_tenant).unwrap().partition,
            Some(Partition {
                tenant: "_unknown".into(),
                retention_class: "short".into()
            })
        );
        assert!(record_info(b"{not json").is_none());
    }

    #[test]
    fn the_fast_scan_agrees_with_the_parser() {
        let lines: [&[u8]; 6] = [
            br#"{"kind":"tool_call","metadata":{"seq":99,"kind":"x"},"s":"a\"seq\":5,","seq":7,"v":1}"#,
            br#"{"args":[{"seq":1}],"kind":"checkpoint","seq":12345678901}"#,
            br#"{ "seq" : 3 , "kind" : "decision" }"#,
            br#"{"kind":"a\"b","seq":1}"#,
            br#"{"seq":"12","kind":"decision"}"#,
            br#"{"metadata":{"seq":1,"kind":"x"}}"#,
        ];
        let expect = [
            Some((7, "tool_call")),
            Some((12345678901, "checkpoint")),
            Some((3, "decision")),
            None,
            None,
            None,
        ];
        for (line, want) in lines.iter().zip(expect) {
            assert_eq!(
                seq_and_kind(line),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
            if let Some((s, k)) = want {
                let info = record_info(line).unwrap();
                assert_eq!((info.seq, info.kind.as_deref()), (Some(s), Some(k)));
            }
        }
    }
}
