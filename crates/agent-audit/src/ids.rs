//! Identifiers and timestamps: W3C trace-context ids, UUIDv7 event ids,
//! RFC 3339 UTC times with millisecond precision.
//!
//! Trace and span ids are made on the caller's thread for every tool call,
//! so they come from a lock-free counter run through a keyed mixer rather
//! than a syscall. The key is random per process and is re-drawn after a
//! fork ([`reseed_after_fork`]) so a child never repeats its parent's ids.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{AuditError, ErrorKind, Result};

static ID_KEY: AtomicU64 = AtomicU64::new(0);
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        // No OS randomness: fall back to the clock and pid; ids stay unique
        // within the process through the counter.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return now ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(buf)
}

fn id_key() -> u64 {
    let key = ID_KEY.load(Ordering::Relaxed);
    if key != 0 {
        return key;
    }
    let fresh = random_u64() | 1;
    match ID_KEY.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(existing) => existing,
    }
}

/// Draws a new id key; call in a forked child before it makes any id.
pub fn reseed_after_fork() {
    ID_KEY.store(random_u64() | 1, Ordering::Relaxed);
}

// splitmix64's finaliser: a bijection, so distinct counters give distinct
// outputs under one key.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn next_u64() -> u64 {
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let v = mix(n.wrapping_add(id_key()).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ id_key());
    if v == 0 { 1 } else { v }
}

/// A 16-byte W3C trace id (32 lowercase hex characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte W3C span id (16 lowercase hex characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new random, non-zero trace id.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&next_u64().to_be_bytes());
        b[8..].copy_from_slice(&next_u64().to_be_bytes());
        TraceId(b)
    }
    /// Appends the 32 lowercase hex characters to `out`.
    pub fn write_to(&self, out: &mut String) {
        push_hex(out, &self.0);
    }
    /// Appends the 32 lowercase hex characters to `out`.
    pub fn push_to(&self, out: &mut Vec<u8>) {
        push_hex_bytes(out, &self.0);
    }
    /// Parses 32 hex characters (not all zero).
    pub fn parse(s: &str) -> Result<Self> {
        let mut b = [0u8; 16];
        parse_hex_id(s, &mut b, "trace_id")?;
        Ok(TraceId(b))
    }
}

impl SpanId {
    /// A new random, non-zero span id.
    pub fn random() -> Self {
        SpanId(next_u64().to_be_bytes())
    }
    /// Appends the 16 lowercase hex characters to `out`.
    pub fn write_to(&self, out: &mut String) {
        push_hex(out, &self.0);
    }
    /// Appends the 16 lowercase hex characters to `out`.
    pub fn push_to(&self, out: &mut Vec<u8>) {
        push_hex_bytes(out, &self.0);
    }
    /// Parses 16 hex characters (not all zero).
    pub fn parse(s: &str) -> Result<Self> {
        let mut b = [0u8; 8];
        parse_hex_id(s, &mut b, "span_id")?;
        Ok(SpanId(b))
    }
}

fn parse_hex_id(s: &str, out: &mut [u8], what: &str) -> Result<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(AuditError::invalid_event(format!(
            "{what} must be {} hex characters, got {s:?}",
            out.len() * 2
        )));
    }
    hex::decode_to_slice(s.to_ascii_lowercase(), out)
        .map_err(|e| AuditError::invalid_event(format!("{what}: {e}")))?;
    if out.iter().all(|b| *b == 0) {
        return Err(AuditError::invalid_event(format!(
            "{what} must not be all zero"
        )));
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A point in time as nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    /// Milliseconds since the epoch.
    pub fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// From milliseconds since the epoch.
    pub fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }

    /// RFC 3339 UTC with millisecond precision, e.g. `2026-04-16T13:44:37.123Z`.
    pub fn to_rfc3339(self) -> String {
        let mut s = String::with_capacity(24);
        self.write_rfc3339(&mut s);
        s
    }

    /// Appends [`Timestamp::to_rfc3339`]'s text to `out` without formatting
    /// machinery (the writer does this for every record).
    pub fn write_rfc3339(self, out: &mut String) {
        let ms = self.unix_millis();
        let secs = ms.div_euclid(1000);
        let milli = ms.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            use std::fmt::Write;
            let _ = write!(
                out,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
                sod / 3600,
                (sod / 60) % 60,
                sod % 60
            );
            return;
        }
        let digits = |out: &mut String, n: i64, width: u32| {
            for i in (0..width).rev() {
                let d = (n / 10i64.pow(i)).rem_euclid(10);
                out.push(char::from(b'0' + d as u8));
            }
        };
        digits(out, y, 4);
        out.push('-');
        digits(out, m, 2);
        out.push('-');
        digits(out, d, 2);
        out.push('T');
        digits(out, sod / 3600, 2);
        out.push(':');
        digits(out, (sod / 60) % 60, 2);
        out.push(':');
        digits(out, sod % 60, 2);
        out.push('.');
        digits(out, milli, 3);
        out.push('Z');
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), or a bare
    /// date `YYYY-MM-DD` (midnight UTC).
    pub fn parse_rfc3339(s: &str) -> Result<Self> {
        let bad = || {
            AuditError::new(
                ErrorKind::InvalidEvent,
                format!("not an RFC 3339 timestamp: {s:?}"),
            )
        };
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64> {
            let part = s.get(range).ok_or_else(bad)?;
            if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse::<i64>().map_err(|_| bad())
        };
        if b.len() < 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return Err(bad());
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return Err(bad());
        }
        let mut nanos_of_day: i64 = 0;
        let mut offset_secs: i64 = 0;
        if b.len() > 10 {
            if !matches!(b.get(10), Some(b'T' | b't' | b' '))
                || b.get(13) != Some(&b':')
                || b.get(16) != Some(&b':')
            {
                return Err(bad());
            }
            let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
            if h > 23 || mi > 59 || se > 60 {
                return Err(bad());
            }
            nanos_of_day = ((h * 60 + mi) * 60 + se.min(59)) * 1_000_000_000;
            let mut i = 19;
            if b.get(i) == Some(&b'.') {
                i += 1;
                let start = i;
                let mut frac: i64 = 0;
                let mut digits = 0;
                while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                    if digits < 9 {
                        frac = frac * 10 + i64::from(c - b'0');
                        digits += 1;
                    }
                    i += 1;
                }
                if i == start {
                    return Err(bad());
                }
                while digits < 9 {
                    frac *= 10;
                    digits += 1;
                }
                nanos_of_day += frac;
            }
            match b.get(i) {
                Some(b'Z' | b'z') if i + 1 == b.len() => {}
                Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
                    let oh = num(i + 1..i + 3)?;
                    let om = num(i + 4..i + 6)?;
                    if oh > 23 || om > 59 {
                        return Err(bad());
                    }
                    offset_secs = (oh * 60 + om) * 60 * if *sign == b'+' { 1 } else { -1 };
                }
                _ => return Err(bad()),
            }
        }
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 - offset_secs;
        Ok(Timestamp(secs * 1_000_000_000 + nanos_of_day))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends the lowercase hex of `bytes` to `out` (a table lookup per
/// byte; `hex::encode` builds its string a character at a time).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        let n = hex_into(&mut buf, chunk);
        // Hex digits are ASCII.
        out.push_str(std::str::from_utf8(buf.get(..n).unwrap_or_default()).unwrap_or_default());
    }
}

/// Appends the lowercase hex digits of `bytes` to `out`.
pub fn push_hex_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut buf = [0u8; 128];
    for chunk in bytes.chunks(64) {
        let n = hex_into(&mut buf, chunk);
        out.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
}

/// Writes the hex digits of `bytes` (at most 64) into `buf`; returns how
/// many were written. Digits go to a stack buffer and into the output in
/// one copy, two at a time from a table: pushing them one `char` at a time
/// cost 2 % of the writer's time.
fn hex_into(buf: &mut [u8; 128], bytes: &[u8]) -> usize {
    static PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 0x0f]];
            i += 1;
        }
        t
    };
    let mut n = 0;
    for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*b)]);
        n += 2;
    }
    n
}

/// Decodes hex (either case) into `out`; false when `src` is not exactly
/// `2 * out.len()` hex digits. A table lookup per digit: the verifier
/// decodes several hashes per record.
pub fn decode_hex(src: &[u8], out: &mut [u8]) -> bool {
    if src.len() != out.len() * 2 {
        return false;
    }
    // Ored together: any byte that is not a hex digit sets the high bit.
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let (Some(&a), Some(&b)) = (pair.first(), pair.get(1)) else {
            return false;
        };
        let (h, l) = (HEX_VALUE[usize::from(a)], HEX_VALUE[usize::from(b)]);
        bad |= h | l;
        *o = (h << 4) | (l & 0x0f);
    }
    bad & 0x80 == 0
}

/// The value of each byte as a hex digit; 0xff for bytes that are not one.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

thread_local! {
    // Random bytes for event ids, drawn from the OS in blocks: one syscall
    // per 409 ids instead of one per id.
    static UUID_POOL: std::cell::RefCell<(Vec<u8>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
}

fn fill_uuid_random(rand: &mut [u8; 10]) {
    let ok = UUID_POOL.with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            return false;
        };
        let (buf, pos) = &mut *pool;
        if *pos + 10 > buf.len() {
            buf.resize(4096, 0);
            if getrandom::fill(buf).is_err() {
                buf.clear();
                return false;
            }
            *pos = 0;
        }
        match buf.get(*pos..*pos + 10) {
            Some(chunk) => {
                rand.copy_from_slice(chunk);
                *pos += 10;
                true
            }
            None => false,
        }
    });
    if !ok {
        rand[..8].copy_from_slice(&next_u64().to_le_bytes());
    }
}

/// Appends a new UUIDv7 whose time part is `ts`, hyphenated lowercase.
pub fn write_uuid_v7_at(ts: Timestamp, out: &mut Vec<u8>) {
    let mut buf = uuid::Uuid::encode_buffer();
    out.extend_from_slice(
        uuid_v7_at(ts)
            .hyphenated()
            .encode_lower(&mut buf)
            .as_bytes(),
    );
}

/// A new UUIDv7 whose time part is `ts`.
pub fn uuid_v7_at(ts: Timestamp) -> uuid::Uuid {
    let mut rand = [0u8; 10];
    fill_uuid_random(&mut rand);
    let ms = u64::try_from(ts.unix_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &rand).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-04-16T13:44:37.123Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-04-16T13:44:37.123Z");
        let t2 = Timestamp::parse_rfc3339("2026-04-16T15:44:37.123456+02:00").unwrap();
        assert_eq!(t2.to_rfc3339(), "2026-04-16T13:44:37.123Z");
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::parse_rfc3339("2024-02-29").unwrap().to_rfc3339(),
            "2024-02-29T00:00:00.000Z"
        );
        for bad in [
            "",
            "2026-13-01",
            "2023-02-29",
            "2026-04-16T25:00:00Z",
            "2026-04-16T10:00:00",
            "x",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_unique_hex_and_change_after_reseed() {
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            assert!(seen.insert(SpanId::random()));
        }
        let t = TraceId::random();
        assert_eq!(t.to_string().len(), 32);
        assert_eq!(TraceId::parse(&t.to_string()).unwrap(), t);
        assert!(TraceId::parse(&"0".repeat(32)).is_err());
        assert!(SpanId::parse("xyz").is_err());
        reseed_after_fork();
        assert!(seen.insert(SpanId::random()));
    }

    #[test]
    fn hex_matches_the_hex_crate() {
        let b: Vec<u8> = (0..=255).collect();
        assert_eq!(to_hex(&b), hex::encode(&b));
        let mut back = vec![0u8; 256];
        assert!(decode_hex(to_hex(&b).as_bytes(), &mut back));
        assert_eq!(back, b);
        assert!(decode_hex(b"ABcd", &mut [0u8; 2]));
        assert!(!decode_hex(b"abc", &mut [0u8; 2]));
        assert!(!decode_hex(b"zz", &mut [0u8; 1]));
    }

    #[test]
    fn uuid_v7_carries_time() {
        let ts = Timestamp::parse_rfc3339("2026-04-16T13:44:37.123Z").unwrap();
        let u = uuid_v7_at(ts);
        assert_eq!(u.get_version_num(), 7);
        let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs as i64 * 1000 + i64::from(nanos / 1_000_000),
            ts.unix_millis()
        );
    }
}
