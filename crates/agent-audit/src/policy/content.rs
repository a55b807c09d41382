//! What the content rules look at: the text of payload parts, tool-name
//! globs, outside URLs and long encoded runs.

use serde_json::Value;

/// Text scanned per payload part is capped so a huge argument cannot stall
/// the caller; a capped scan is reported by the `policy_scan_truncated` flag.
pub(crate) const MAX_SCAN_BYTES: usize = 4 * 1024 * 1024;

/// Renders a value as the lines the rules' regexes see: one line per
/// leaf, `key: value` (the key is the nearest object key; none at the top).
/// Returns whether the text was cut at [`MAX_SCAN_BYTES`].
pub(crate) fn render_text(v: &Value, out: &mut String) -> bool {
    render(v, "", out, 0)
}

fn render(v: &Value, key: &str, out: &mut String, depth: usize) -> bool {
    if out.len() >= MAX_SCAN_BYTES {
        return true;
    }
    match v {
        Value::Object(m) => {
            if depth > 64 {
                return false;
            }
            for (k, item) in m {
                if render(item, k, out, depth + 1) {
                    return true;
                }
            }
            false
        }
        Value::Array(a) => {
            if depth > 64 {
                return false;
            }
            for item in a {
                if render(item, key, out, depth + 1) {
                    return true;
                }
            }
            false
        }
        Value::Null => false,
        leaf => {
            if !key.is_empty() {
                out.push_str(key);
                out.push_str(": ");
            }
            match leaf {
                Value::String(s) => {
                    let room = MAX_SCAN_BYTES.saturating_sub(out.len());
                    if s.len() > room {
                        let mut cut = room;
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        out.push_str(&s[..cut]);
                        out.push('\n');
                        return true;
                    }
                    out.push_str(s);
                }
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => {
                    use std::fmt::Write as _;
                    // Formatted in place: no String per number.
                    let _ = write!(out, "{n}");
                }
                _ => {}
            }
            out.push('\n');
            false
        }
    }
}

/// A shell-style glob over tool names: `*` any run, `?` one character;
/// compared case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// A glob from its pattern.
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_ascii_lowercase())
    }

    /// The pattern as written (lower-cased).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let p = self.0.as_bytes();
        let s = name.as_bytes();
        let (mut pi, mut si) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si].to_ascii_lowercase()) {
                pi += 1;
                si += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, si));
                pi += 1;
            } else if let Some((sp, ss)) = star {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
}

/// Whether any of `globs` matches `name`.
pub(crate) fn any_glob(globs: &[Glob], name: &str) -> bool {
    globs.iter().any(|g| g.matches(name))
}

/// Hosts that count as inside: loopback, private and link-local ranges,
/// `localhost`, and the policy's `internal_hosts` globs.
pub(crate) fn is_internal_host(host: &str, internal: &[Glob]) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    if h == "localhost"
        || h.ends_with(".localhost")
        || h.ends_with(".internal")
        || h.ends_with(".local")
    {
        return true;
    }
    if h.starts_with('[') || h.contains(':') {
        // IPv6 literal: loopback, unique-local and link-local only.
        let bare = h.trim_start_matches('[').trim_end_matches(']');
        return bare == "::1"
            || bare.starts_with("fc")
            || bare.starts_with("fd")
            || bare.starts_with("fe80");
    }
    let octets: Vec<u8> = h.split('.').filter_map(|p| p.parse().ok()).collect();
    if octets.len() == 4 && h.split('.').count() == 4 {
        return match (octets[0], octets[1]) {
            (10, _) | (127, _) | (192, 168) | (169, 254) | (0, _) => true,
            (172, b) => (16..=31).contains(&b),
            (100, b) => (64..=127).contains(&b),
            _ => false,
        };
    }
    any_glob(internal, &h)
}

/// Whether the text names an `http(s)://` URL whose host is outside.
pub(crate) fn has_external_url(text: &str, internal: &[Glob]) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = memchr::memmem::find(&bytes[from..], b"://") {
        let at = from + pos;
        from = at + 3;
        let scheme_ok = [b"https".as_slice(), b"http", b"wss", b"ws", b"ftp"]
            .iter()
            .any(|s| at >= s.len() && bytes[at - s.len()..at].eq_ignore_ascii_case(s));
        if !scheme_ok {
            continue;
        }
        let rest = &text[at + 3..];
        let end = rest
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"' || c == '\''
            })
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let host = if host_port.starts_with('[') {
            host_port
                .split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            host_port.split(':').next().unwrap_or("").to_string()
        };
        if !host.is_empty() && !is_internal_host(&host, internal) {
            return true;
        }
    }
    false
}

/// A line of an encoded run at least this long, broken by a newline, goes on
/// on the next line: `base64` wraps at 76 columns, PEM at 64, MIME at 76.
const WRAPPED_LINE: usize = 48;

/// A run needs this many distinct characters to count as encoded: base64 and
/// hex use 16 to 64, while a DNA sequence or a row of zeros uses a handful.
const MIN_DISTINCT: u32 = 6;

fn is_encoded_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// Length of the longest run of base64 (or base64url) characters, or of hex
/// digits, in the text; `=` padding counts. A run continues across a line
/// break after a full-width line (wrapped output, [`WRAPPED_LINE`]); runs of
/// fewer than [`MIN_DISTINCT`] distinct characters do not count.
pub(crate) fn longest_encoded_run(text: &str) -> usize {
    let distinct = |seen: u128| seen.count_ones() >= MIN_DISTINCT;
    let mut best = 0;
    // The run so far, and its current line (length and characters seen).
    let (mut run, mut line, mut seen) = (0, 0, 0u128);
    let mut prev = 0u8;
    for &b in text.as_bytes() {
        if is_encoded_byte(b) {
            run += 1;
            line += 1;
            seen |= 1u128 << b;
            if distinct(seen) {
                best = best.max(run);
            }
        } else if (b == b'\n' || b == b'\r') && line >= WRAPPED_LINE && distinct(seen) {
            // A full-width encoded line: the run goes on on the next one.
            line = 0;
            seen = 0;
        } else if b == b'\n' && prev == b'\r' && run > 0 && line == 0 {
            // The LF of a CRLF line break.
        } else {
            run = 0;
            line = 0;
            seen = 0;
        }
        prev = b;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        let g = Glob::new("*send*mail*");
        assert!(g.matches("gmail.send_mail"));
        assert!(g.matches("SEND_EMAIL"));
        assert!(!g.matches("read_email"));
        assert!(Glob::new("db.*").matches("db.query"));
        assert!(!Glob::new("db.*").matches("xdb.query"));
        assert!(Glob::new("sh?ll").matches("shell"));
        assert!(Glob::new("*").matches(""));
        assert!(!Glob::new("a*b").matches("a"));
    }

    #[test]
    fn text_lines_carry_their_key() {
        let mut t = String::new();
        render_text(
            &json!({"method": "POST", "h": {"x": [1, "two"]}, "n": null}),
            &mut t,
        );
        assert_eq!(t, "x: 1\nx: two\nmethod: POST\n");
    }

    #[test]
    fn outside_urls() {
        let none: Vec<Glob> = vec![];
        assert!(has_external_url("url: https://hooks.example.com/x", &none));
        assert!(!has_external_url("url: http://localhost:8080/x", &none));
        assert!(!has_external_url(
            "url: http://10.2.3.4/x https://api.svc.internal/y",
            &none
        ));
        assert!(!has_external_url(
            "url: http://172.20.1.1/x http://192.168.0.9",
            &none
        ));
        assert!(has_external_url("http://172.32.0.1/", &none));
        assert!(!has_external_url("https://user:pw@[::1]:443/", &none));
        assert!(!has_external_url(
            "https://wiki.corp.example/x",
            &[Glob::new("*.corp.example")]
        ));
        assert!(!has_external_url("file:///etc/passwd", &none));
    }

    #[test]
    fn encoded_runs() {
        assert_eq!(longest_encoded_run("ab cd+/ef= x"), 7);
        assert_eq!(longest_encoded_run(""), 0);
        // Wrapped output is one run; a short line ends it.
        let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2";
        assert_eq!(line.len(), 64);
        assert_eq!(longest_encoded_run(&format!("{line}\n{line}\n{line}")), 192);
        assert_eq!(longest_encoded_run(&format!("{line}\r\n{line}")), 128);
        assert_eq!(longest_encoded_run("abc123xyz\nabc123xyz"), 9);
        assert_eq!(longest_encoded_run(&format!("{line}\n\n{line}")), 64);
        // A long run of a few symbols is not an encoding.
        assert_eq!(longest_encoded_run(&"ACGT".repeat(500)), 0);
        assert_eq!(longest_encoded_run(&"0".repeat(2000)), 0);
        assert_eq!(longest_encoded_run(&"0123456789abcdef".repeat(100)), 1600);
        // A low-variety line does not carry the run on to the next line.
        let dna = "ACGT".repeat(100);
        assert_eq!(longest_encoded_run(&format!("{dna}\nmethod: POST")), 6);
    }
}
