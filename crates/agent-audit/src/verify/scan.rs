//! A strict, narrow JSON reader for the verifier's fast path.
//!
//! The writer lays every envelope out as canonical JSON (RFC 8785: no
//! whitespace, sorted keys, integers without exponent). Reading the few
//! top-level fields the sequence checks need ([`Head`]) from such text
//! does not need a general parser: this one walks the members once,
//! checks every value is well-formed JSON, and gives up (None) on anything
//! a canonical envelope would not hold: whitespace, escapes in the fields
//! it reads, `\u` surrogates, exponents, deep nesting, a duplicate of a
//! field it reads, `hash` / `sig` / `payload` inside the envelope. Giving
//! up is always safe: the caller then runs the full check, which is the
//! authority and says what is wrong. Whatever it accepts, `serde_json`
//! accepts with the same values (a test compares them over mutated
//! records).

/// The top-level fields of an envelope the sequence checks need.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Head<'a> {
    pub v: Option<u64>,
    pub stream_id: Option<&'a str>,
    pub seq: Option<u64>,
    pub prev: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub payload_digest: Option<&'a str>,
    pub tree_size: Option<u64>,
    pub root: Option<&'a str>,
    pub public_key: Option<&'a str>,
}

/// Nesting this reader follows before giving up (serde_json's limit is 128).
const MAX_DEPTH: usize = 64;

/// Reads `members`, the text of a JSON object without its closing `}`
/// (an envelope as the writer lays it out, before `,"hash":`).
pub(super) fn head(members: &[u8]) -> Option<Head<'_>> {
    let text = std::str::from_utf8(members).ok()?;
    let mut r = Reader {
        b: text.as_bytes(),
        text,
        i: 0,
    };
    r.eat(b'{')?;
    let mut head = Head::default();
    let mut seen = 0u16;
    if r.at_end() {
        // `{` then the closing brace the caller stripped: an empty object.
        return Some(head);
    }
    loop {
        let key = r.plain_string()?;
        r.eat(b':')?;
        let bit = match key {
            "v" => 0,
            "stream_id" => 1,
            "seq" => 2,
            "prev" => 3,
            "kind" => 4,
            "payload_digest" => 5,
            "tree_size" => 6,
            "root" => 7,
            "public_key" => 8,
            // Unhashed fields belong after the envelope, never in it.
            "hash" | "sig" | "payload" => return None,
            _ => {
                r.skip_value(0)?;
                u16::MAX
            }
        };
        if bit != u16::MAX {
            if seen & (1 << bit) != 0 {
                return None;
            }
            seen |= 1 << bit;
            match bit {
                0 => head.v = Some(r.u64()?),
                1 => head.stream_id = Some(r.plain_string()?),
                2 => head.seq = Some(r.u64()?),
                3 => head.prev = Some(r.plain_string()?),
                4 => head.kind = Some(r.plain_string()?),
                5 => head.payload_digest = Some(r.plain_string()?),
                6 => head.tree_size = Some(r.u64()?),
                7 => head.root = Some(r.plain_string()?),
                _ => head.public_key = Some(r.plain_string()?),
            }
        }
        if r.at_end() {
            return Some(head);
        }
        r.eat(b',')?;
    }
}

/// Whether `text` is exactly one JSON value, as far as this reader can
/// tell (false also where it gives up: the caller then parses it fully).
pub(super) fn is_one_value(text: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    let mut r = Reader {
        b: s.as_bytes(),
        text: s,
        i: 0,
    };
    r.skip_value(0).is_some() && r.at_end()
}

struct Reader<'a> {
    b: &'a [u8],
    /// The same bytes, known to be UTF-8.
    text: &'a str,
    i: usize,
}

/// What a byte inside a JSON string is: 0 plain, 1 `"`, 2 `\`, 3 a
/// control character (not allowed raw).
const STRING_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = 3;
        c += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 2;
    t
};

impl<'a> Reader<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes, as `&str` (None when it has one: the
    /// caller gives up rather than unescape).
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            let c = self.peek()?;
            match STRING_CLASS.get(usize::from(c)).copied().unwrap_or(0) {
                0 => self.i += 1,
                1 => break,
                _ => return None,
            }
        }
        let s = self.text.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    /// Any well-formed string.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            // Plain bytes, eight at a time while none of them can end the
            // run (a quote, a backslash or a control character).
            while let Some(chunk) = self.b.get(self.i..self.i + 8) {
                let w = u64::from_le_bytes(chunk.try_into().ok()?);
                if has_special(w) {
                    break;
                }
                self.i += 8;
            }
            let c = self.peek()?;
            match STRING_CLASS.get(usize::from(c)).copied().unwrap_or(0) {
                0 => self.i += 1,
                1 => {
                    self.i += 1;
                    return Some(());
                }
                2 => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            let s = std::str::from_utf8(hex).ok()?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            let code = u32::from_str_radix(s, 16).ok()?;
                            // Surrogates (pairs or lone): left to the full parser.
                            if (0xD800..=0xDFFF).contains(&code) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// A non-negative integer without sign, fraction or exponent that fits
    /// a u64 (what serde reads into `Option<u64>`; null is given up on).
    fn u64(&mut self) -> Option<u64> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = self.b.get(start..self.i)?;
        if digits.is_empty() || (digits.len() > 1 && digits.first() == Some(&b'0')) {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.text.get(start..self.i)?.parse().ok()
    }

    /// A number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`; exponents are given up on.
    fn skip_number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let start = self.i;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
            if self.i == start {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        Some(())
    }

    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_string()?;
                    self.eat(b':')?;
                    self.skip_value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.skip_number(),
        }
    }
}

/// Whether any of the eight bytes of `w` is a quote, a backslash or below
/// 0x20 (SWAR: the high bit of each byte lane marks a candidate).
fn has_special(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let eq = |b: u8| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGH
    };
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (eq(b'"') | eq(b'\\') | control) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: reproducible edits without a dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
        }
    }

    /// What the verifier read before this reader: serde over the members
    /// closed by `}`.
    #[derive(serde::Deserialize)]
    struct SerdeHead<'a> {
        v: Option<u64>,
        #[serde(borrow)]
        stream_id: Option<std::borrow::Cow<'a, str>>,
        seq: Option<u64>,
        #[serde(borrow)]
        prev: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        payload_digest: Option<std::borrow::Cow<'a, str>>,
        tree_size: Option<u64>,
        #[serde(borrow)]
        root: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        public_key: Option<std::borrow::Cow<'a, str>>,
        hash: Option<serde::de::IgnoredAny>,
        sig: Option<serde::de::IgnoredAny>,
        payload: Option<serde::de::IgnoredAny>,
    }

    fn reference(members: &[u8]) -> Option<Head<'static>> {
        let mut closed = members.to_vec();
        closed.push(b'}');
        let h: SerdeHead<'_> = serde_json::from_slice(&closed).ok()?;
        if h.hash.is_some() || h.sig.is_some() || h.payload.is_some() {
            return None;
        }
        let own = |s: Option<std::borrow::Cow<'_, str>>| -> Option<&'static str> {
            s.map(|s| &*Box::leak(s.into_owned().into_boxed_str()))
        };
        Some(Head {
            v: h.v,
            stream_id: own(h.stream_id),
            seq: h.seq,
            prev: own(h.prev),
            kind: own(h.kind),
            payload_digest: own(h.payload_digest),
            tree_size: h.tree_size,
            root: own(h.root),
            public_key: own(h.public_key),
        })
    }

    fn check(members: &[u8]) -> bool {
        match head(members) {
            Some(fast) => {
                let slow = reference(members).unwrap_or_else(|| {
                    panic!(
                        "accepted what serde refuses: {}",
                        String::from_utf8_lossy(members)
                    )
                });
                assert_eq!(fast, slow, "{}", String::from_utf8_lossy(members));
                true
            }
            None => false,
        }
    }

    const ENVELOPE: &str = r#"{"args_hash":"sha256:44e7","args_redacted":true,"duration_ms":12.5,"event_id":"01a23b83","kind":"tool_call","n":[1,-2,0.5,{"a":[]},{},null,false,"x\n\u00e9\"y"],"payload_digest":"sha256:fc7d","prev":"sha256:929f","redactions":{"email":1},"risk":{"flags":[],"score":0},"seq":52261,"stream_id":"01a23b83-ba82","tool":{"name":"crm.update_customer","version":"2.3.1"},"tree_size":0,"ts":"2026-12-03T10:46:57.635Z","v":1"#;

    #[test]
    fn reads_an_envelope_as_serde_does() {
        assert!(check(ENVELOPE.as_bytes()));
        let h = head(ENVELOPE.as_bytes()).unwrap();
        assert_eq!(h.seq, Some(52261));
        assert_eq!(h.kind, Some("tool_call"));
        assert_eq!(h.v, Some(1));
        assert!(check(b"{"));
        for text in [
            // Given up on (the full check decides): whitespace, escapes in
            // read fields, exponents, nulls in read fields, duplicates,
            // unhashed fields, surrogates, trailing bytes.
            r#"{"v": 1"#,
            r#"{"kind":"tool\u005fcall""#,
            r#"{"x":1e5,"v":1"#,
            r#"{"seq":null"#,
            r#"{"seq":1,"seq":2"#,
            r#"{"hash":"sha256:00"#,
            r#"{"x":"\ud83d\ude00""#,
            r#"{"v":1}"#,
            r#"{"v":01"#,
            r#"{"v":-1"#,
            r#"{"v":1.0"#,
            r#"{"v":18446744073709551616"#,
        ] {
            assert!(head(text.as_bytes()).is_none(), "{text}");
        }
        assert!(is_one_value(br#"{"a":[1,2,{"b":"c"}],"d":"\n"}"#));
        assert!(!is_one_value(br#"{"a":1} "#));
        assert!(!is_one_value(br#"{"a":1}{"#));
        assert!(!is_one_value(b"\"\xff\""));
    }

    /// Random edits of real-looking envelopes: whenever the reader accepts
    /// one, serde accepts it with the same values; and the value skipper
    /// never accepts what serde refuses.
    #[test]
    fn agrees_with_serde_on_mutated_envelopes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet = b"{}[]:,\"\\ -+.0123456789eEtrufalsn\x01\x1f\xc3\xa9\xffuabcdef/";
        let fields = [
            "\"v\":1",
            "\"seq\":7",
            "\"kind\":\"x\"",
            "\"hash\":\"h\"",
            "\"prev\":null",
            "\"tree_size\":3",
            "\"root\":\"r\"",
            "\"public_key\":\"-----BEGIN\\n\"",
            "\"seq\":1.5",
            "\"z\":[[[]]]",
            "\"s\":\"\\ud800\"",
            "\"stream_id\":\"s\"",
        ];
        let (mut accepted, mut values) = (0, 0);
        for _ in 0..200_000 {
            let mut t = ENVELOPE.as_bytes().to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(t.len() + 1);
                match rng.below(5) {
                    0 if at < t.len() => {
                        t.remove(at);
                    }
                    1 if at < t.len() => {
                        if let Some(b) = t.get_mut(at) {
                            *b = alphabet[rng.below(alphabet.len())];
                        }
                    }
                    2 => t.insert(at, alphabet[rng.below(alphabet.len())]),
                    3 => {
                        let f = fields[rng.below(fields.len())];
                        t.extend_from_slice(b",");
                        t.extend_from_slice(f.as_bytes());
                    }
                    _ => t.truncate(at.max(1)),
                }
            }
            if check(&t) {
                accepted += 1;
            }
            // The same text as a whole value (with its closing brace).
            let mut closed = t.clone();
            closed.push(b'}');
            if is_one_value(&closed) {
                values += 1;
                assert!(
                    serde_json::from_slice::<serde::de::IgnoredAny>(&closed).is_ok(),
                    "{}",
                    String::from_utf8_lossy(&closed)
                );
            }
        }
        // The edits must leave enough accepted to mean something.
        assert!(accepted > 10_000, "{accepted} accepted");
        assert!(values > 10_000, "{values} values");
    }
}
