//! PII and secret redaction, applied to every record before it is hashed and stored.
//!
//! An agent's tool arguments, results, prompts and messages pass through a [`Redactor`]
//! on the log's background writer thread, so a value that is redacted never reaches
//! disk and never enters the hash chain. A match is replaced by `[REDACTED:KIND]`, or,
//! when the tenant configured an HMAC key, by a keyed token `<kind:1a2b3c4d>` (the
//! first 8 hex digits of HMAC-SHA256(key, value)) so that equal values still correlate
//! across records without being recoverable.
//!
//! # How detection works
//!
//! Detectors are regular expressions grouped into *families*. A family is only run
//! where a cheap test says one of its patterns could match, because on typical
//! payloads (JSON tool arguments, mostly clean) nearly all the time would otherwise
//! go into running automata over text that holds nothing:
//!
//! * Credentials and labelled secrets (`ghp_...`, `AKIA...`, `eyJ...`, `-----BEGIN`,
//!   `DB_PASSWORD=`, `"apiKey":`, `Authorization:`): the regex engine's SIMD
//!   multi-literal searcher looks for their fixed literals (credential prefixes and
//!   pieces of label words), or, in short texts, where a search's fixed cost would
//!   dominate, a test of every 3-byte window and then a plain loop; the family's
//!   patterns then run, anchored, from the start of the identifier around each hit,
//!   only those whose literals are in that identifier.
//! * `scheme://user:password@host` and e-mail addresses: only when the text has an
//!   `@`; the e-mail regex searches for the `@` first and matches outwards.
//! * Numbers (cards, SSNs, IBANs, IP addresses, phone numbers): a scan that skips
//!   32-byte blocks without a digit, colon or gating byte and reads the others eight
//!   bytes at a time finds the digit runs that could be one (8 or more digits, four
//!   dotted groups, a `::` next to a hex group, an IBAN's `DE89`), and the regex runs
//!   only over small regions around them, and within a region only while a digit (or
//!   two colons) is left. At a match, only the patterns that can start with the byte
//!   there are tried.
//! * Azure AD client secrets: only when the text has `Q~`.
//!
//! Regexes only propose candidates. Each one is then checked by code that a regex
//! cannot express: the Luhn checksum and issuer prefixes for cards, ISO 13616 mod-97
//! and per-country lengths for IBANs, the SSA's never-issued ranges for SSNs, address
//! parsing for IPv6, and the surrounding text, so that a digit run glued to a version
//! string, a decimal or a dashed order id, a `password: string` type annotation or a
//! `token = os.environ[...]` assignment is left alone. When a candidate fails, the
//! family's other patterns get a chance at the same position. Findings from different
//! families that overlap are resolved by priority (a URL's password over the
//! `pass@host.com` look-alike inside it). When nothing matches,
//! [`Redactor::redact_str`] returns the input borrowed, without allocating.
//!
//! # Known limits
//!
//! * Secrets with no recognisable shape and no label (a bare 40-character AWS secret,
//!   an opaque token in prose) cannot be told from other text and are not found.
//! * A four-part version number with no `version`/`v`/`build`-style word right before
//!   it (`release notes for 10.4.2.1`) is indistinguishable from an IPv4 address.
//! * Phone numbers are matched by shape (international `+`/`00` form, North American,
//!   and common European national forms); other national formats are missed.
//! * Numbers split across JSON strings, or obfuscated (`jane [at] acme [dot] io`), are
//!   not reassembled.
//!
//! The corpus in `tests/corpus/redaction.jsonl` measures precision and recall per kind
//! (see the corpus test at the bottom of this file); the `throughput` test prints MB/s.

// Library code must not panic on hostile input: a panic on the writer thread would
// lose audit records. `indexing_slicing` is denied as well because every offset here
// comes from a regex match over untrusted text.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use regex::{CaptureLocations, Regex, RegexBuilder};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What kind of sensitive value was found. `as_str()` gives the stable lowercase name
/// used in records and reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RedactionKind {
    /// An e-mail address.
    Email,
    /// A telephone number (international, North American or European national form).
    Phone,
    /// A payment card number that passes the Luhn check and has a known issuer prefix.
    PaymentCard,
    /// A US social security number outside the ranges the SSA never issues.
    UsSsn,
    /// An international bank account number with a valid mod-97 checksum.
    Iban,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
    /// A JSON Web Token.
    Jwt,
    /// A PEM or OpenSSH private key block.
    PrivateKey,
    /// An AWS access key id or a labelled AWS secret access key.
    AwsKey,
    /// A Google Cloud API key, OAuth client secret, access token or service-account key.
    GcpKey,
    /// An Azure storage or Service Bus key, SAS signature or Azure AD client secret.
    AzureKey,
    /// A GitHub personal, OAuth, app or fine-grained token.
    GithubToken,
    /// A GitLab personal, deploy, trigger or runner token.
    GitlabToken,
    /// A Slack bot, user, app or configuration token, or an incoming-webhook path.
    SlackToken,
    /// A Stripe secret or restricted key, or a webhook signing secret.
    StripeKey,
    /// An OpenAI API key.
    OpenaiKey,
    /// An Anthropic API key.
    AnthropicKey,
    /// The credential in an `Authorization: Bearer ...` header.
    BearerToken,
    /// The password part of a `scheme://user:password@host` URL.
    UrlPassword,
    /// A value labelled as secret (`password=...`, `"api_key": "..."`, a cookie header),
    /// or the whole value under a secret-looking object key.
    SecretValue,
    /// A match of a custom pattern from [`RedactionConfig::custom_patterns`].
    Custom(String),
}

/// Every built-in kind, in declaration order.
static BUILTIN_KINDS: [RedactionKind; 21] = [
    RedactionKind::Email,
    RedactionKind::Phone,
    RedactionKind::PaymentCard,
    RedactionKind::UsSsn,
    RedactionKind::Iban,
    RedactionKind::Ipv4,
    RedactionKind::Ipv6,
    RedactionKind::Jwt,
    RedactionKind::PrivateKey,
    RedactionKind::AwsKey,
    RedactionKind::GcpKey,
    RedactionKind::AzureKey,
    RedactionKind::GithubToken,
    RedactionKind::GitlabToken,
    RedactionKind::SlackToken,
    RedactionKind::StripeKey,
    RedactionKind::OpenaiKey,
    RedactionKind::AnthropicKey,
    RedactionKind::BearerToken,
    RedactionKind::UrlPassword,
    RedactionKind::SecretValue,
];

impl RedactionKind {
    /// The stable lowercase name, e.g. `email`, `payment_card`, or a custom pattern's name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::PaymentCard => "payment_card",
            Self::UsSsn => "us_ssn",
            Self::Iban => "iban",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::Jwt => "jwt",
            Self::PrivateKey => "private_key",
            Self::AwsKey => "aws_key",
            Self::GcpKey => "gcp_key",
            Self::AzureKey => "azure_key",
            Self::GithubToken => "github_token",
            Self::GitlabToken => "gitlab_token",
            Self::SlackToken => "slack_token",
            Self::StripeKey => "stripe_key",
            Self::OpenaiKey => "openai_key",
            Self::AnthropicKey => "anthropic_key",
            Self::BearerToken => "bearer_token",
            Self::UrlPassword => "url_password",
            Self::SecretValue => "secret_value",
            Self::Custom(name) => name,
        }
    }

    /// The uppercase label used in unkeyed replacements, e.g. `PAYMENT_CARD`.
    pub fn label(&self) -> String {
        self.as_str()
            .chars()
            .map(|c| match c {
                '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect()
    }

    /// All built-in kinds (everything except [`RedactionKind::Custom`]).
    pub fn builtin() -> &'static [RedactionKind] {
        &BUILTIN_KINDS
    }

    /// The kind with this name: a built-in kind if the name is one, otherwise `Custom`.
    pub fn from_name(name: &str) -> RedactionKind {
        BUILTIN_KINDS
            .iter()
            .find(|k| k.as_str() == name)
            .cloned()
            .unwrap_or_else(|| RedactionKind::Custom(name.to_owned()))
    }

    /// True for credentials (keys, tokens, passwords) as opposed to personal data.
    pub fn is_credential(&self) -> bool {
        !matches!(
            self,
            Self::Email
                | Self::Phone
                | Self::PaymentCard
                | Self::UsSsn
                | Self::Iban
                | Self::Ipv4
                | Self::Ipv6
                | Self::Custom(_)
        )
    }
}

impl fmt::Display for RedactionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of a [`Redactor`]. `Default` gives the built-in detectors only.
#[derive(Clone, Default)]
pub struct RedactionConfig {
    /// Tenant hashing key. When set, a match is replaced by a keyed token `<email:1a2b3c4d>`
    /// (first 8 hex of HMAC-SHA256(key, matched value)) so equal values still correlate;
    /// otherwise by `[REDACTED:EMAIL]`.
    pub hmac_key: Option<Vec<u8>>,
    /// Extra patterns: (name, regex). Matches are replaced as kind `name`. Names may use
    /// ASCII letters, digits, `_` and `-`, and must not be a built-in kind's name.
    pub custom_patterns: Vec<(String, String)>,
    /// Values (exact strings) that are never redacted (allow-list), e.g. a support
    /// e-mail address.
    pub allow_values: Vec<String>,
    /// Regexes that are never redacted: a match whose whole text matches one of these is
    /// left in place.
    pub allow_patterns: Vec<String>,
    /// Extra object-key names whose values are secret. Matched like the built-in names:
    /// case-insensitively, ignoring `-`, `_` and `.`, as the whole key or its suffix.
    pub secret_keys: Vec<String>,
}

impl fmt::Debug for RedactionConfig {
    // Hand-written so that the tenant key never ends up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionConfig")
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<set>"))
            .field("custom_patterns", &self.custom_patterns)
            .field("allow_values", &self.allow_values)
            .field("allow_patterns", &self.allow_patterns)
            .field("secret_keys", &self.secret_keys)
            .finish()
    }
}

/// Why a [`Redactor`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedactError {
    /// A custom pattern failed to compile.
    InvalidCustomPattern {
        /// The pattern's name from the configuration.
        name: String,
        /// The regex compiler's error.
        source: regex::Error,
    },
    /// A custom pattern's name is empty, has characters that would break the
    /// replacement token, or collides with a built-in kind.
    InvalidCustomName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An allow-list pattern failed to compile.
    InvalidAllowPattern {
        /// The pattern as configured.
        pattern: String,
        /// The regex compiler's error.
        source: regex::Error,
    },
    /// A built-in detector failed to compile. This is a bug in this module, reported
    /// as an error rather than a panic.
    Builtin {
        /// Which detector family.
        family: &'static str,
        /// The regex compiler's error, or a description.
        detail: String,
    },
    /// The HMAC key was rejected.
    InvalidKey,
}

impl fmt::Display for RedactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCustomPattern { name, source } => {
                write!(
                    f,
                    "custom redaction pattern `{name}` is not a valid regex: {source}"
                )
            }
            Self::InvalidCustomName { name, reason } => {
                write!(
                    f,
                    "custom redaction pattern name `{name}` is invalid: {reason}"
                )
            }
            Self::InvalidAllowPattern { pattern, source } => {
                write!(
                    f,
                    "allow-list pattern `{pattern}` is not a valid regex: {source}"
                )
            }
            Self::Builtin { family, detail } => {
                write!(
                    f,
                    "built-in redaction family `{family}` failed to build: {detail}"
                )
            }
            Self::InvalidKey => f.write_str("the redaction HMAC key was rejected"),
        }
    }
}

impl std::error::Error for RedactError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidCustomPattern { source, .. }
            | Self::InvalidAllowPattern { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Strings longer than this are not remembered by a [`RedactionMemo`].
const MEMO_MAX_STRING: usize = 64 * 1024;
/// Slots of a [`RedactionMemo`] (a power of two).
const MEMO_SLOTS: usize = 1024;
/// Bytes of strings a [`RedactionMemo`] holds before it starts over.
const MEMO_MAX_BYTES: usize = 4 << 20;

/// Whether a [`RedactionMemo`] remembers strings like `s`.
fn memo_fits(s: &str) -> bool {
    s.len() <= MEMO_MAX_STRING
}

/// What redaction made of strings searched recently, for
/// [`Redactor::redact_value_memo`]: agents send the same strings again and
/// again (a system prompt and every earlier turn of a conversation with each
/// model call, query templates, the same addresses and paths), and a string
/// met again is then a hash and a comparison instead of a search.
///
/// Bounded: direct-mapped (a new string takes its slot from whatever held
/// it), at most [`MEMO_SLOTS`] strings of up to 64 KiB, and it starts over
/// once they hold more than 4 MiB. A hit compares the whole string, so a
/// hash collision costs a search, never a wrong result. Only strings that
/// pass the cheap first look (digits, `@`, a literal...) are remembered;
/// the rest cost less to look at than to remember.
pub struct RedactionMemo {
    slots: Vec<Option<MemoEntry>>,
    hasher: foldhash::fast::RandomState,
    bytes: usize,
}

struct MemoEntry {
    hash: u64,
    text: Box<str>,
    /// `None`: the string stays as it is.
    redacted: Option<Box<str>>,
    /// What was found, in order, to count again on a hit.
    kinds: Vec<RedactionKind>,
}

impl MemoEntry {
    fn bytes(&self) -> usize {
        self.text.len() + self.redacted.as_ref().map_or(0, |r| r.len())
    }
}

impl Default for RedactionMemo {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RedactionMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactionMemo")
            .field("strings", &self.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl RedactionMemo {
    /// An empty memo (it allocates its slots when first used).
    pub fn new() -> Self {
        RedactionMemo {
            slots: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
            bytes: 0,
        }
    }

    /// Strings remembered.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    fn hash(&self, s: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one(s)
    }

    fn slot(hash: u64) -> usize {
        // The mask keeps the index below MEMO_SLOTS, so the narrowing is exact.
        (hash & (MEMO_SLOTS as u64 - 1)) as usize
    }

    fn get(&self, hash: u64, s: &str) -> Option<&MemoEntry> {
        self.slots
            .get(Self::slot(hash))?
            .as_ref()
            .filter(|e| e.hash == hash && *e.text == *s)
    }

    fn put(&mut self, hash: u64, s: &str, redacted: Option<&str>, kinds: Vec<RedactionKind>) {
        let entry = MemoEntry {
            hash,
            text: s.into(),
            redacted: redacted.map(Into::into),
            kinds,
        };
        if self.bytes + entry.bytes() > MEMO_MAX_BYTES {
            self.slots.clear();
            self.bytes = 0;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(MEMO_SLOTS, || None);
        }
        self.bytes += entry.bytes();
        if let Some(slot) = self.slots.get_mut(Self::slot(hash))
            && let Some(old) = slot.replace(entry)
        {
            self.bytes -= old.bytes();
        }
    }
}

/// Where a walk over a value counts what it found, and its memo if any.
struct Walk<'a> {
    report: &'a mut RedactionReport,
    memo: Option<&'a mut RedactionMemo>,
}

/// What a redaction pass found: a count per kind name.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct RedactionReport {
    counts: BTreeMap<String, u32>,
}

impl RedactionReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one redaction of `kind`.
    pub fn record(&mut self, kind: &RedactionKind) {
        // Look up before inserting so the common case does not allocate a key.
        if let Some(count) = self.counts.get_mut(kind.as_str()) {
            *count = count.saturating_add(1);
        } else {
            self.counts.insert(kind.as_str().to_owned(), 1);
        }
    }

    /// Adds every count of `other` to this report.
    pub fn merge(&mut self, other: &RedactionReport) {
        for (name, n) in &other.counts {
            let count = self.counts.entry(name.clone()).or_insert(0);
            *count = count.saturating_add(*n);
        }
    }

    /// Total number of redactions.
    pub fn total(&self) -> u64 {
        self.counts.values().map(|&n| u64::from(n)).sum()
    }

    /// Counts per kind name, sorted by name.
    pub fn counts(&self) -> &BTreeMap<String, u32> {
        &self.counts
    }

    /// The count for one kind name (0 if none).
    pub fn get(&self, name: &str) -> u32 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// True when nothing was redacted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// [`RedactionReport::to_json`] as canonical JSON text, appended to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        if !self.counts.keys().all(|k| k.is_ascii()) {
            // Non-ASCII kind names (custom patterns) sort by UTF-16 code
            // units, not as the map holds them.
            if let Ok(text) = crate::jcs::canonicalize(&self.to_json()) {
                out.extend_from_slice(&text);
            }
            return;
        }
        // ASCII: the map's byte order is RFC 8785 order.
        out.push(b'{');
        for (i, (k, n)) in self.counts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            crate::jcs::write_json_string(k, out);
            out.push(b':');
            let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
        }
        out.push(b'}');
    }

    /// The counts as a JSON object, e.g. `{"email": 2, "jwt": 1}`, for storing in a record.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.counts
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(*v)))
                .collect(),
        )
    }
}

/// One detected sensitive value: its kind and its byte range in the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was found.
    pub kind: RedactionKind,
    /// Byte range of the value in the scanned string.
    pub range: Range<usize>,
}

/// One detector inside a family regex. The order inside a family matters: at a given
/// start position the regex prefers the earlier alternative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alt {
    PemKey,
    UrlPassword,
    Jwt,
    AwsAccessKey,
    GcpKey,
    AzureAccountKey,
    AzureSig,
    GithubToken,
    GitlabToken,
    SlackToken,
    SlackWebhook,
    StripeKey,
    AnthropicKey,
    OpenaiKey,
    Authorization,
    Bearer,
    Cookie,
    Labelled,
    CliFlag,
    MysqlFlag,
    SqlIdentified,
    PemBase64,
    Sshpass,
    CurlUser,
    PasswordIs,
    AzureAdSecret,
    Email,
    Iban,
    Ssn,
    Card,
    Ipv6,
    Ipv4,
    PhoneIntl,
    PhoneNanp,
    PhoneNational,
    SsnLabelled,
    PhoneLabelled,
}

impl Alt {
    /// Which detector wins when findings from different families overlap.
    fn priority(self) -> u8 {
        match self {
            Alt::PemKey | Alt::PemBase64 => 100,
            Alt::Jwt
            | Alt::AwsAccessKey
            | Alt::GcpKey
            | Alt::AzureAccountKey
            | Alt::AzureSig
            | Alt::GithubToken
            | Alt::GitlabToken
            | Alt::SlackToken
            | Alt::SlackWebhook
            | Alt::StripeKey
            | Alt::AnthropicKey
            | Alt::OpenaiKey
            | Alt::AzureAdSecret => 90,
            Alt::UrlPassword => 85,
            Alt::Authorization | Alt::Bearer => 80,
            Alt::Labelled
            | Alt::CliFlag
            | Alt::MysqlFlag
            | Alt::SqlIdentified
            | Alt::Sshpass
            | Alt::CurlUser
            | Alt::PasswordIs => 70,
            Alt::Cookie => 65,
            Alt::Email => 50,
            Alt::Iban => 46,
            Alt::Card => 45,
            Alt::Ssn | Alt::SsnLabelled => 44,
            Alt::Ipv6 => 43,
            Alt::Ipv4 => 42,
            Alt::PhoneIntl | Alt::PhoneNanp | Alt::PhoneNational | Alt::PhoneLabelled => 30,
        }
    }

    /// Where to resume after a candidate that failed validation. Most detectors resume
    /// one character later so that a shorter candidate inside the rejected one is still
    /// found; e-mail resumes after the candidate because its unbounded local part would
    /// otherwise be rescanned once per character.
    fn skip_whole_on_failure(self) -> bool {
        matches!(self, Alt::Email)
    }
}

/// Priority of custom patterns: the tenant asked for them explicitly.
const CUSTOM_PRIORITY: u8 = 95;

// ---------------------------------------------------------------------------------
// Patterns. `(?P<V>` marks the secret value inside a larger match (only that part is
// replaced), `(?P<K>` the label of a labelled secret and `(?P<S>` an auth scheme; they
// are renamed per alternative when the family is built. Word boundaries are ASCII
// (`(?-u:\b)`) because a Unicode `\b` makes the lazy DFA give up on non-ASCII text.
// ---------------------------------------------------------------------------------

/// A private key block: the BEGIN line, then lines of base64 or `Name: value` headers
/// (encrypted PEM, PGP armor) separated by newlines, JSON-escaped `\n` or spaces, up to
/// the END line; or, for a block cut short (truncated tool output), as many base64
/// lines as follow. Line-shaped rather than "anything up to END" so that a BEGIN with
/// no END cannot run on through the prose after it.
const PEM: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:(?:(?:[ \t]*(?:\\r)?(?:\\n|\r?\n|\r)[ \t]*|[ \t]+)(?:[A-Za-z][A-Za-z-]*:[ \t][^\r\n\\]*|[A-Za-z0-9+/=]+)?)*?(?:[ \t]*(?:\\r)?(?:\\n|\r?\n|\r)[ \t]*|[ \t]+)-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|(?:(?:[ \t]*(?:\\r)?(?:\\n|\r?\n|\r)[ \t]*|[ \t]+)(?:[A-Za-z][A-Za-z-]*:[ \t][A-Za-z0-9,-]+|[A-Za-z0-9+/=]{16,}))*)";

/// The password may contain a raw `#` or `@` (invalid in a URL, common in connection
/// strings); the last `@` before the host ends it.
const URL_PASSWORD: &str =
    r#"://[^\s:/?#@\[\]"'<>]*:(?P<V>[^\s/?@"'<>]+(?:@[^\s/?@"'<>]+)*)@[A-Za-z0-9\[]"#;

const JWT: &str = r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.e[wy][A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*";

const AWS_ACCESS_KEY: &str = r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)";

const GCP_KEY: &str =
    r"(?-u:\b)(?:AIza[0-9A-Za-z_-]{35}|GOCSPX-[0-9A-Za-z_-]{28}|ya29\.[0-9A-Za-z_-]{30,})";

const AZURE_ACCOUNT_KEY: &str = r"(?:AccountKey|SharedAccessKey)=(?P<V>[A-Za-z0-9+/]{30,}={0,2})";

const AZURE_SIG: &str = r"sig=(?P<V>[A-Za-z0-9%+/=]{16,})";

const GITHUB: &str = r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})(?-u:\b)";

const GITLAB: &str = r"(?-u:\b)gl(?:pat|dt|ptt|rt|cbt|soat)-[0-9A-Za-z_-]{20,}";

const SLACK: &str = r"(?-u:\b)(?:xox[abposre]-[0-9A-Za-z-]{10,}|xoxe\.xox[bp]-[0-9A-Za-z-]{10,}|xapp-[0-9]-[0-9A-Za-z-]{10,})";

const SLACK_WEBHOOK: &str = r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<V>[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+){1,4})";

const STRIPE: &str =
    r"(?-u:\b)(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}|whsec_[0-9A-Za-z]{24,})(?-u:\b)";

const ANTHROPIC: &str = r"(?-u:\b)sk-ant-[a-z]{2,8}[0-9]{0,3}-[0-9A-Za-z_-]{20,}";

const OPENAI: &str = r"(?-u:\b)sk-(?:(?:proj|svcacct|admin|None)-)?[0-9A-Za-z_-]{20,}";

const AUTHORIZATION: &str = r#"(?:[Aa]uthorization|AUTHORIZATION)\\?["']?[ \t]*[:=][ \t]*\\?["']?(?:(?P<S>[Bb]asic|BASIC|[Bb]earer|BEARER|[Tt]oken)[ \t]+)?(?P<V>[A-Za-z0-9_.~+/-]{8,}=*)"#;

const BEARER: &str = r"(?-u:\b)(?:[Bb]earer|BEARER)[ \t]+(?P<V>[A-Za-z0-9_.~+/-]{8,}=*)";

/// A cookie header's value: `name=value` pairs and bare attributes separated by `;`.
/// Structured rather than "to the end of the line" so that a non-cookie after the word
/// fails at once instead of after scanning the whole line.
const COOKIE: &str = r#"(?:[Ss]et-[Cc]ookie|SET-COOKIE|[Cc]ookie|COOKIE)\\?["']?[ \t]*:[ \t]*\\?["']?(?P<V>[^\s;"'\\=]+=[^\s;"'\\]*(?:;[ \t]*[^\s;"'\\=]+(?:=[^\s;"'\\]*)?)*)"#;

/// Labels whose value is a secret, longest first where one is a prefix of another so
/// that the regex prefers the longer one at the same position. Spelled out in the
/// usual casings: the prefilter ([`LABEL_LITERALS`]) only finds those anyway, so
/// `(?i)` would only make the automaton bigger.
const SECRET_WORDS: &str = "secret_access_key|SECRET_ACCESS_KEY|SecretAccessKey|secretAccessKey|secret-access-key|client_secret|CLIENT_SECRET|clientSecret|ClientSecret|client-secret|api_key|API_KEY|apiKey|ApiKey|api-key|API-KEY|Api-Key|apikey|APIKEY|access_key|ACCESS_KEY|accessKey|AccessKey|access-key|secret_key|SECRET_KEY|secretKey|SecretKey|secret-key|private_key|PRIVATE_KEY|privateKey|PrivateKey|passphrase|PASSPHRASE|Passphrase|password|PASSWORD|Password|passwd|PASSWD|Passwd|secret|SECRET|Secret|token|TOKEN|Token|credentials|CREDENTIALS|Credentials|pwd|PWD|Pwd";

/// What may follow a secret label: an optional closing quote of a JSON/YAML key, a
/// separator (`=`, `:`, `=>`, `:=`) and a quoted or bare value; or, as in SQL's
/// `PASSWORD 'x'`, whitespace and a quoted value; or an XML element's text
/// (`<password>x</password>`).
const LABEL_VALUE: &str = r#"(?:\\?["'])?(?:[ \t]*(?:=>|:=|[:=])[ \t]*(?:\\?"(?P<V>[^"\\\r\n]+)\\?"|'(?P<V>[^'\\\r\n]+)'|(?P<V>[^\s"'`,;&<>(){}\[\]\\|]+))|[ \t]+(?:"(?P<V>[^"\\\r\n]+)"|'(?P<V>[^'\\\r\n]+)')|>(?P<V>[^<\r\n]+)</)"#;

const CLI_FLAG: &str = r#"--(?:[a-z0-9]+-)*(?P<K>password|passwd|passphrase|token|secret|api-key|apikey|access-key|secret-key|client-secret|auth-token)[ \t]+(?:"(?P<V>[^"\r\n]+)"|'(?P<V>[^'\r\n]+)'|(?P<V>[^\s"'`;&|]+))"#;

/// The arguments before the flag are bounded: unbounded, a long line with many `mysql`
/// words would be rescanned once per word.
const MYSQL_FLAG: &str =
    r#"(?-u:\b)mysql(?:dump|admin|sh|import)?(?:[ \t]+[^\s|;&]+){0,24}?[ \t]+-p(?P<V>[^\s'"|;&]+)"#;

/// A PEM block encoded once more in base64, as in Kubernetes secrets (`LS0tLS1CRUdJTi`
/// is `-----BEGIN`); validation decodes the start to tell keys from certificates.
const PEM_BASE64: &str = r"LS0tLS1CRUdJTi[A-Za-z0-9+/]{20,}={0,2}";

const SSHPASS: &str =
    r#"(?-u:\b)sshpass[ \t]+-p[ \t]*(?:'(?P<V>[^'\r\n]+)'|"(?P<V>[^"\r\n]+)"|(?P<V>[^\s'"]+))"#;

/// `curl -u user:password`; arguments bounded as in [`MYSQL_FLAG`].
const CURL_USER: &str = r#"(?-u:\b)curl(?:[ \t]+[^\s|;&]+){0,24}?[ \t]+(?:-u|--user)(?:[ \t]+|=)['"]?[^:\s'"]*:(?P<V>[^\s'"]+)"#;

/// `the password is Summer2024!` in a chat or a CRM note.
const PASSWORD_IS: &str = r#"(?P<K>[Pp]assword|PASSWORD|[Pp]assphrase|PASSPHRASE)[ \t]+(?:is|was|IS)[ \t]+(?P<V>[^\s"'`,;<>]+)"#;

const SQL_IDENTIFIED: &str = r"(?:IDENTIFIED|identified|Identified)[ \t]+(?:BY|by|By)[ \t]+(?:PASSWORD[ \t]+)?'(?P<V>[^'\r\n]+)'";

const AZURE_AD_SECRET: &str = r"[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}";

/// The local part may hold an apostrophe between letters (`o'brien@...`), and both
/// parts Latin, Greek or Cyrillic letters (`müller@münchen.de`). Not every script:
/// Chinese or Japanese text runs on without spaces, and the address would take the
/// words around it. Unbounded repetitions rather than
/// RFC 5321's limits: bounded ones over Unicode classes make a huge automaton, and
/// the single required `@` lets the regex engine search for it first and match
/// outwards, which is what makes this fast.
const EMAIL: &str = r"[\p{Latin}\p{Greek}\p{Cyrillic}0-9._%+-]+(?:'[\p{Latin}\p{Greek}\p{Cyrillic}0-9._%+-]+)?@[\p{Latin}\p{Greek}\p{Cyrillic}0-9][\p{Latin}\p{Greek}\p{Cyrillic}0-9-]*(?:\.[\p{Latin}\p{Greek}\p{Cyrillic}0-9][\p{Latin}\p{Greek}\p{Cyrillic}0-9-]*)*\.[\p{Latin}\p{Greek}\p{Cyrillic}]{2,24}";

/// An URL-encoded address (`?email=jane%40acme.io`). A separate regex: an `(?:@|%40)`
/// alternation would cost the `@` regex its fast inner-literal search.
const EMAIL_ENCODED: &str = r"[\p{Latin}\p{Greek}\p{Cyrillic}0-9._+-]+%40[\p{Latin}\p{Greek}\p{Cyrillic}0-9][\p{Latin}\p{Greek}\p{Cyrillic}0-9-]*(?:\.[\p{Latin}\p{Greek}\p{Cyrillic}0-9][\p{Latin}\p{Greek}\p{Cyrillic}0-9-]*)*\.[\p{Latin}\p{Greek}\p{Cyrillic}]{2,24}";

/// Upper or lower case, not mixed.
const IBAN: &str = r"(?-u:\b)(?:[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}|[a-z]{2}[0-9]{2}(?: ?[a-z0-9]){11,30})(?-u:\b)";

const SSN: &str = r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)";

const CARD: &str = r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)";

const IPV4: &str = r"(?-u:\b)(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}(?-u:\b)";

/// `+44 ...`, `(+44) ...` or, with the international call prefix, `00 44 ...`.
const PHONE_INTL: &str = r"(?:\(\+[1-9][0-9]{0,3}\)|\+[1-9][0-9]{0,3}|(?-u:\b)00 ?[1-9][0-9]{0,3})(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,5})){1,7}";

const PHONE_NANP: &str = r"(?:(?-u:\b)1[ .-]?)?(?:\([2-9][0-9]{2}\)[ .-]?|(?-u:\b)[2-9][0-9]{2}[ ./-])[2-9][0-9]{2}[ .-][0-9]{4}(?-u:\b)";

const PHONE_NATIONAL: &str = r"(?-u:\b)(?:0[1-9][0-9]{1,3} [0-9]{3,4} ?[0-9]{3,4}|0[1-9][0-9]{3} [0-9]{6}|0[1-9](?:[ .][0-9]{2}){4})(?-u:\b)";

const SSN_LABELLED: &str = r#"(?i:ssn|social security(?: number| no\.?)?)[A-Za-z_]*\\?["']?[ \t]*[:=#]?[ \t]*\\?["']?(?P<V>[0-9]{3}[ -]?[0-9]{2}[ -]?[0-9]{4})(?-u:\b)"#;

const PHONE_LABELLED: &str = r#"(?i:phone|tel|mobile|cell|fax|whatsapp)[A-Za-z_]*\\?["']?[ \t]*[:=][ \t]*\\?["']?(?P<V>\+?[0-9]{10,15})(?-u:\b)"#;

/// The IPv6 candidate pattern: full form, full form with an embedded IPv4 tail, and
/// `::`-compressed forms. `Ipv6Addr::from_str` has the final word.
fn ipv6_pattern() -> String {
    let h = "[0-9A-Fa-f]{1,4}";
    let d4 = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}";
    format!(
        r"(?-u:\b)(?:{h}:){{7}}{h}|(?-u:\b)(?:{h}:){{6}}{d4}|(?:(?-u:\b){h}(?::{h}){{0,6}})?::(?:(?:{h}:){{0,5}}{d4}|{h}(?::{h}){{0,6}})?"
    )
}

/// Credentials, and secrets introduced by a label (`DB_PASSWORD=`, `"apiKey": `,
/// `Authorization:`, `--token`). The family is only tried where [`CREDENTIAL_LITERALS`]
/// or [`LABEL_LITERALS`] hit, from the start of the identifier around the hit, so
/// every alternative starts with a lazy identifier prefix: a label word may end a
/// longer identifier (`DB_PASSWORD`).
fn secret_family(extra_words: &str) -> Vec<(Alt, String)> {
    let alts = [
        (Alt::PemKey, PEM),
        (Alt::Jwt, JWT),
        (Alt::AwsAccessKey, AWS_ACCESS_KEY),
        (Alt::GcpKey, GCP_KEY),
        (Alt::AzureAccountKey, AZURE_ACCOUNT_KEY),
        (Alt::AzureSig, AZURE_SIG),
        (Alt::GithubToken, GITHUB),
        (Alt::GitlabToken, GITLAB),
        (Alt::SlackToken, SLACK),
        (Alt::SlackWebhook, SLACK_WEBHOOK),
        (Alt::StripeKey, STRIPE),
        (Alt::AnthropicKey, ANTHROPIC),
        (Alt::OpenaiKey, OPENAI),
        (Alt::MysqlFlag, MYSQL_FLAG),
        (Alt::SqlIdentified, SQL_IDENTIFIED),
        (Alt::PemBase64, PEM_BASE64),
        (Alt::Sshpass, SSHPASS),
        (Alt::CurlUser, CURL_USER),
        (Alt::PasswordIs, PASSWORD_IS),
        (Alt::CliFlag, CLI_FLAG),
        (Alt::Authorization, AUTHORIZATION),
        (Alt::Bearer, BEARER),
        (Alt::Cookie, COOKIE),
    ];
    let prefix = "[A-Za-z0-9_.-]*?";
    let mut out: Vec<(Alt, String)> = alts
        .iter()
        .map(|(alt, p)| (*alt, format!("{prefix}{p}")))
        .collect();
    out.push((
        Alt::Labelled,
        format!("{prefix}(?P<K>{SECRET_WORDS}){LABEL_VALUE}"),
    ));
    if !extra_words.is_empty() {
        out.push((
            Alt::Labelled,
            format!("{prefix}(?P<K>(?i:{extra_words})){LABEL_VALUE}"),
        ));
    }
    out
}

/// Literals of which every [`secret_family`] match contains at least one, inside the
/// identifier where the match starts: the fixed prefixes of credentials
/// ([`CREDENTIAL_LITERALS`]) and distinctive pieces of the label words in the casings
/// the patterns accept ([`LABEL_LITERALS`]). Two sets searched one after the other
/// are faster than one: the regex engine's SIMD multi-literal searcher (Teddy) slows
/// down sharply as a set approaches its limit of 64 literals, and pieces rather than
/// whole words keep the sets small.
const CREDENTIAL_LITERALS: &[&str] = &[
    "-----BEGIN ",
    "eyJ",
    "AKIA",
    "ASIA",
    "AIza",
    "GOCSPX-",
    "ya29.",
    "AccountKey=",
    "SharedAccessKey=",
    "sig=",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "gldt-",
    "glptt-",
    "glrt-",
    "glcbt-",
    "glsoat-",
    "xox",
    "xapp-",
    "hooks.slack.com/",
    "sk_",
    "rk_",
    "whsec_",
    "sk-",
    "mysql",
    "IDENTIFIED",
    "identified",
    "Identified",
    "LS0tLS1CRUdJTi",
    "sshpass",
    "curl",
];

/// The stems of secret-looking labels (`password`, `api_key` ...), in the
/// casings the prefilter and the per-pattern needles both look for; each
/// list adds its own extras. One list, so the two cannot drift apart.
macro_rules! secret_label_stems {
    ($($extra:literal),* $(,)?) => {
        &[
            "assw",
            "ASSW",
            "assp",
            "ASSP",
            "ecret",
            "ECRET",
            "oken",
            "OKEN",
            "pi_key",
            "PI_KEY",
            "piKey",
            "pi-key",
            "PI-KEY",
            "pi-Key",
            "pikey",
            "PIKEY",
            "ccess_key",
            "CCESS_KEY",
            "ccessKey",
            "ccess-key",
            "rivate_key",
            "RIVATE_KEY",
            "rivateKey",
            "redentials",
            "REDENTIALS",
            $($extra),*
        ]
    };
}

/// See [`CREDENTIAL_LITERALS`]. All at least four bytes long: Teddy fingerprints on
/// the first `min(4, shortest)` bytes, and one 3-byte literal made this set 2.5 times
/// slower. Hence `pwd=` rather than `pwd` (ODBC's `PWD=` is the case that matters).
const LABEL_LITERALS: &[&str] = secret_label_stems!(
    "uthorization",
    "UTHORIZATION",
    "ookie",
    "OOKIE",
    "earer",
    "EARER",
    "pwd=",
    "PWD=",
    "Pwd=",
);

fn number_family() -> Vec<(Alt, String)> {
    vec![
        (Alt::Iban, IBAN.to_owned()),
        (Alt::Ssn, SSN.to_owned()),
        (Alt::Card, CARD.to_owned()),
        (Alt::Ipv6, ipv6_pattern()),
        (Alt::Ipv4, IPV4.to_owned()),
        (Alt::PhoneIntl, PHONE_INTL.to_owned()),
        (Alt::PhoneNanp, PHONE_NANP.to_owned()),
        (Alt::PhoneNational, PHONE_NATIONAL.to_owned()),
        (Alt::SsnLabelled, SSN_LABELLED.to_owned()),
        (Alt::PhoneLabelled, PHONE_LABELLED.to_owned()),
    ]
}

/// Capture-group indices of one alternative.
#[derive(Debug, Clone, Default)]
struct Groups {
    whole: usize,
    values: Vec<usize>,
    key: Option<usize>,
    scheme: Option<usize>,
}

#[derive(Debug)]
struct AltSlot {
    alt: Alt,
    /// The alternative alone, anchored at the start; captures come from here.
    anchored: Regex,
    groups: Groups,
    /// The pattern starts with `(?-u:\b)`. Anchored searches run on a slice that starts
    /// at the candidate, where the regex cannot see the byte before, so the boundary
    /// is checked by hand.
    left_boundary: bool,
    /// The alternative has no inner groups: its span comes from a plain anchored
    /// search (the lazy DFA alone), without running a capture engine.
    plain: bool,
    /// The bytes a match can start with. An alternative is only tried where the text
    /// starts with one of them.
    first: FirstBytes,
}

/// A set of bytes that every non-empty match of a pattern starts with, and whether
/// the pattern can match the empty string (then it is tried everywhere).
#[derive(Debug, Clone, Copy)]
struct FirstBytes {
    bits: [u64; 4],
    nullable: bool,
}

impl FirstBytes {
    /// Every byte, and empty matches: the answer when the pattern is not understood.
    const ANY: FirstBytes = FirstBytes {
        bits: [u64::MAX; 4],
        nullable: true,
    };

    /// The first bytes of `pattern`'s matches, from its syntax tree.
    fn of(pattern: &str) -> FirstBytes {
        match regex_syntax::Parser::new().parse(pattern) {
            Ok(hir) => Self::of_hir(&hir, 0),
            Err(_) => Self::ANY,
        }
    }

    fn of_hir(hir: &regex_syntax::hir::Hir, depth: usize) -> FirstBytes {
        use regex_syntax::hir::{Class, HirKind};
        // Patterns here are shallow; a deep one is simply tried everywhere.
        if depth > 64 {
            return Self::ANY;
        }
        let mut out = FirstBytes {
            bits: [0; 4],
            nullable: false,
        };
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => out.nullable = true,
            HirKind::Literal(lit) => match lit.0.first() {
                Some(&b) => out.add_range(b, b),
                None => out.nullable = true,
            },
            HirKind::Class(Class::Bytes(class)) => {
                for r in class.ranges() {
                    out.add_range(r.start(), r.end());
                }
            }
            HirKind::Class(Class::Unicode(class)) => {
                for r in class.ranges() {
                    let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                    if lo < 0x80 {
                        // ASCII characters are their own first byte.
                        out.add_range(lo as u8, hi.min(0x7F) as u8);
                    }
                    if hi >= 0x80 {
                        // Any multi-byte character: every leading byte, to be safe.
                        out.add_range(0xC0, 0xFF);
                    }
                }
            }
            HirKind::Repetition(rep) => {
                out = Self::of_hir(&rep.sub, depth + 1);
                out.nullable |= rep.min == 0;
            }
            HirKind::Capture(cap) => out = Self::of_hir(&cap.sub, depth + 1),
            HirKind::Concat(subs) => {
                out.nullable = true;
                for sub in subs {
                    let first = Self::of_hir(sub, depth + 1);
                    out.union(&first);
                    if !first.nullable {
                        out.nullable = false;
                        break;
                    }
                }
            }
            HirKind::Alternation(subs) => {
                for sub in subs {
                    let first = Self::of_hir(sub, depth + 1);
                    out.union(&first);
                    out.nullable |= first.nullable;
                }
            }
        }
        out
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            if let Some(word) = self.bits.get_mut(usize::from(b >> 6)) {
                *word |= 1 << (b & 63);
            }
        }
    }

    /// Adds the bytes of `other` (not its nullability).
    fn union(&mut self, other: &FirstBytes) {
        for (a, b) in self.bits.iter_mut().zip(other.bits) {
            *a |= b;
        }
    }

    /// Whether a match can start at a text whose first byte is `first` (None: the
    /// text is empty).
    fn may_start(&self, first: Option<u8>) -> bool {
        self.nullable
            || first.is_some_and(|b| {
                self.bits
                    .get(usize::from(b >> 6))
                    .is_some_and(|word| word & (1 << (b & 63)) != 0)
            })
    }
}

#[derive(Debug)]
struct Family {
    /// All alternatives combined, for unanchored families: finds where a match starts.
    /// Prefiltered families know where to look and do without.
    regex: Option<Regex>,
    alts: Vec<AltSlot>,
    /// For a family anchored at identifier starts: which alternatives can match at a
    /// start, from the literals in the identifier. Replaces the first-byte test there.
    needles: Option<Needles>,
    /// An unanchored family of one capture-free alternative without assertions: the
    /// unanchored match is the anchored one, so it is validated as it is.
    direct: bool,
    /// For an unanchored family: what every match needs (for numbers, a digit or
    /// two colons). Text without it is not searched.
    needs: Option<Needs>,
}

/// What every match of an unanchored family contains: an ASCII digit, or else at
/// least `colons` colons (for numbers: IPv6 written with hex letters only has `::`
/// or seven colons). From the patterns' syntax trees.
#[derive(Debug, Clone, Copy)]
struct Needs {
    colons: usize,
}

impl Needs {
    /// None when an alternative may match without a digit or a colon.
    fn of(alts: &[(Alt, String)]) -> Option<Needs> {
        let mut colons = usize::MAX;
        for (_, pattern) in alts {
            let hir = regex_syntax::Parser::new()
                .parse(&strip_group_names(pattern))
                .ok()?;
            if ByteSet::DIGITS.min_count(&hir, 0) == 0 {
                colons = colons.min(ByteSet::COLON.min_count(&hir, 0));
            }
        }
        (colons > 0).then_some(Needs { colons })
    }

    /// Whether `text` could hold a match: eight bytes at a time.
    fn met_by(&self, text: &[u8]) -> bool {
        let mut colons = 0usize;
        let mut chunks = text.chunks_exact(8);
        for chunk in chunks.by_ref() {
            let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let w = u64::from_le_bytes(chunk);
            if swar_digit_mask(w) != 0 {
                return true;
            }
            let c = swar_eq_mask(w, b':');
            if c != 0 {
                colons += c.count_ones() as usize;
                if colons >= self.colons {
                    return true;
                }
            }
        }
        for &b in chunks.remainder() {
            if b.is_ascii_digit() {
                return true;
            }
            if b == b':' {
                colons += 1;
                if colons >= self.colons {
                    return true;
                }
            }
        }
        false
    }
}

/// A set of bytes.
#[derive(Debug, Clone, Copy)]
struct ByteSet([u64; 4]);

impl ByteSet {
    /// ASCII digits.
    const DIGITS: ByteSet = ByteSet([0x03FF << b'0', 0, 0, 0]);
    const COLON: ByteSet = ByteSet([1 << b':', 0, 0, 0]);

    fn contains(&self, b: u8) -> bool {
        self.0
            .get(usize::from(b >> 6))
            .is_some_and(|word| word & (1 << (b & 63)) != 0)
    }

    /// The fewest bytes of this set a match of `hir` can contain, as far as its syntax
    /// tree tells (a lower bound).
    fn min_count(&self, hir: &regex_syntax::hir::Hir, depth: usize) -> usize {
        use regex_syntax::hir::{Class, HirKind};
        if depth > 64 {
            return 0;
        }
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => 0,
            HirKind::Literal(lit) => lit.0.iter().filter(|&&b| self.contains(b)).count(),
            // A class counts when every member is one of the bytes.
            HirKind::Class(Class::Bytes(class)) => usize::from(
                class
                    .ranges()
                    .iter()
                    .all(|r| (r.start()..=r.end()).all(|b| self.contains(b))),
            ),
            HirKind::Class(Class::Unicode(class)) => usize::from(class.ranges().iter().all(|r| {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                hi < 0x80 && (lo..=hi).all(|c| u8::try_from(c).is_ok_and(|b| self.contains(b)))
            })),
            HirKind::Repetition(rep) => usize::try_from(rep.min)
                .unwrap_or(usize::MAX)
                .saturating_mul(self.min_count(&rep.sub, depth + 1)),
            HirKind::Capture(cap) => self.min_count(&cap.sub, depth + 1),
            HirKind::Concat(subs) => subs
                .iter()
                .map(|sub| self.min_count(sub, depth + 1))
                .fold(0, usize::saturating_add),
            HirKind::Alternation(subs) => subs
                .iter()
                .map(|sub| self.min_count(sub, depth + 1))
                .min()
                .unwrap_or(0),
        }
    }
}

/// Literals of which every match of an alternative of the secret family has one,
/// starting inside the identifier where the match starts (the identifier prefix only
/// spans identifier characters, and each pattern starts with one). A subset of the
/// prefilter literals, split per alternative; three-letter `pwd` forms for the
/// labels because the label regex accepts them without the `=` the prefilter needs.
fn alt_needles(alt: Alt) -> Option<&'static [&'static str]> {
    const LABEL: &[&str] = secret_label_stems!("pwd", "PWD", "Pwd");
    let needles: &'static [&'static str] = match alt {
        Alt::PemKey => &["-----BEGIN "],
        Alt::Jwt => &["eyJ"],
        Alt::AwsAccessKey => &["AKIA", "ASIA"],
        Alt::GcpKey => &["AIza", "GOCSPX-", "ya29."],
        Alt::AzureAccountKey => &["AccountKey=", "SharedAccessKey="],
        Alt::AzureSig => &["sig="],
        Alt::GithubToken => &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        Alt::GitlabToken => &["glpat-", "gldt-", "glptt-", "glrt-", "glcbt-", "glsoat-"],
        Alt::SlackToken => &["xox", "xapp-"],
        Alt::SlackWebhook => &["hooks.slack.com/"],
        Alt::StripeKey => &["sk_", "rk_", "whsec_"],
        Alt::AnthropicKey | Alt::OpenaiKey => &["sk-"],
        Alt::MysqlFlag => &["mysql"],
        Alt::SqlIdentified => &["IDENTIFIED", "identified", "Identified"],
        Alt::PemBase64 => &["LS0tLS1CRUdJTi"],
        Alt::Sshpass => &["sshpass"],
        Alt::CurlUser => &["curl"],
        Alt::PasswordIs => &["assw", "ASSW", "assp", "ASSP"],
        Alt::CliFlag => &[
            "assw",
            "assp",
            "oken",
            "ecret",
            "pi-key",
            "pikey",
            "ccess-key",
        ],
        Alt::Authorization => &["uthorization", "UTHORIZATION"],
        Alt::Bearer => &["earer", "EARER"],
        Alt::Cookie => &["ookie", "OOKIE"],
        Alt::Labelled => LABEL,
        _ => return None,
    };
    Some(needles)
}

/// One needle: its first (up to) four bytes as a little-endian word and a mask of
/// the bytes that count, for a quick test before the full comparison.
#[derive(Debug, Clone)]
struct Needle {
    head: u32,
    head_mask: u32,
    bytes: &'static [u8],
    alts: u64,
}

/// The first four bytes of `b` as a little-endian word (zero-padded) and the mask of
/// the bytes present.
fn head_word(b: &[u8]) -> (u32, u32) {
    // The common case, four bytes or more, in one load.
    if let Some(&[a, b1, c, d]) = b.first_chunk::<4>() {
        return (u32::from_le_bytes([a, b1, c, d]), u32::MAX);
    }
    let mut word = [0u8; 4];
    let mut mask = [0u8; 4];
    for ((w, m), &c) in word.iter_mut().zip(mask.iter_mut()).zip(b) {
        *w = c;
        *m = 0xFF;
    }
    (u32::from_le_bytes(word), u32::from_le_bytes(mask))
}

/// [`alt_needles`] of a family's alternatives, indexed by first byte.
#[derive(Debug)]
struct Needles {
    /// Per first byte: the needles that start with it and the alternatives (bits by
    /// index in the family) they stand for.
    by_first: Vec<Vec<Needle>>,
    /// The first two bytes of every needle, as a bit set indexed by `b0 << 8 | b1`:
    /// most positions in an identifier start no needle, and one bit test rules them
    /// out. None when a needle is shorter than two bytes.
    pairs: Option<Box<[u64; 1024]>>,
    /// Alternatives without needles (a configured label word, matched case
    /// insensitively): always candidates.
    always: u64,
}

impl Needles {
    /// Needles for `alts`. Only the first `Labelled` alternative is the built-in word
    /// list; a later one holds configured words and gets none.
    fn build(alts: &[AltSlot]) -> Needles {
        let mut by_first: Vec<Vec<Needle>> = vec![Vec::new(); 256];
        let mut pairs = Some(Box::new([0u64; 1024]));
        let mut always = 0u64;
        let mut seen_labelled = false;
        for (i, slot) in alts.iter().enumerate().take(64) {
            let bit = 1u64 << i;
            let needles = if slot.alt == Alt::Labelled && seen_labelled {
                None
            } else {
                alt_needles(slot.alt)
            };
            seen_labelled |= slot.alt == Alt::Labelled;
            match needles {
                Some(needles) => {
                    for n in needles {
                        let bytes = n.as_bytes();
                        let Some(list) = bytes
                            .first()
                            .and_then(|&b| by_first.get_mut(usize::from(b)))
                        else {
                            always |= bit;
                            continue;
                        };
                        match (bytes, &mut pairs) {
                            (&[b0, b1, ..], Some(set)) => {
                                let pair = usize::from(b0) << 8 | usize::from(b1);
                                if let Some(word) = set.get_mut(pair >> 6) {
                                    *word |= 1 << (pair & 63);
                                }
                            }
                            _ => pairs = None,
                        }
                        match list.iter_mut().find(|n| n.bytes == bytes) {
                            Some(n) => n.alts |= bit,
                            None => {
                                let (head, head_mask) = head_word(bytes);
                                list.push(Needle {
                                    head,
                                    head_mask,
                                    bytes,
                                    alts: bit,
                                });
                            }
                        }
                    }
                }
                None => always |= bit,
            }
        }
        Needles {
            by_first,
            pairs,
            always,
        }
    }

    /// The alternatives that can match at the start of `rest`: those with a needle
    /// starting inside the identifier there.
    fn candidates(&self, rest: &[u8]) -> u64 {
        let mut mask = self.always;
        let is_ident = |b: u8| IDENT_BYTE.get(usize::from(b)).is_some_and(|&x| x);
        match &self.pairs {
            Some(pairs) => {
                // Every position in the identifier with the byte after it (which may
                // be past the identifier: needles like `sig=` end outside it). No
                // needle starts at a position whose pair of bytes starts none, and no
                // needle is shorter than two bytes.
                let Some(&first) = rest.first() else {
                    return mask;
                };
                if !is_ident(first) {
                    return mask;
                }
                let mut prev = first;
                for (i, &b) in rest.iter().enumerate().skip(1) {
                    let pair = usize::from(prev) << 8 | usize::from(b);
                    if pairs
                        .get(pair >> 6)
                        .is_some_and(|word| word & (1 << (pair & 63)) != 0)
                    {
                        mask |= self.at(rest, i - 1);
                    }
                    if !is_ident(b) {
                        break;
                    }
                    prev = b;
                }
            }
            None => {
                for i in 0..rest
                    .iter()
                    .position(|&b| !is_ident(b))
                    .unwrap_or(rest.len())
                {
                    mask |= self.at(rest, i);
                }
            }
        }
        mask
    }

    /// The alternatives of the needles that start at `rest[i]`.
    fn at(&self, rest: &[u8], i: usize) -> u64 {
        let (Some(tail), Some(list)) = (
            rest.get(i..),
            rest.get(i).and_then(|&b| self.by_first.get(usize::from(b))),
        ) else {
            return 0;
        };
        let (word, _) = head_word(tail);
        let mut mask = 0;
        for n in list {
            if word & n.head_mask == n.head && (n.bytes.len() <= 4 || tail.starts_with(n.bytes)) {
                mask |= n.alts;
            }
        }
        mask
    }
}

/// The identifier bytes `[A-Za-z0-9_.-]`.
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const IDENT_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-';
        b += 1;
    }
    table
};

/// A family that is only tried where a literal prefilter hits.
#[derive(Debug)]
struct Prefiltered {
    /// Alternations of plain literals: cheap to search for.
    pre: Vec<Regex>,
    /// The same literals, searched by hand in short texts, where the regex search's
    /// fixed cost is most of the work. Empty when a literal is too short for
    /// [`Literals`].
    short: Vec<Literals>,
    /// The family, anchored.
    family: Family,
    /// Hits are inside a label word: back up to the start of the identifier.
    back_up: bool,
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(64 << 20)
        .dfa_size_limit(16 << 20)
        .build()
}

/// Gives the placeholder groups of alternative `i` unique names.
fn rename_groups(pattern: &str, i: usize) -> String {
    let pattern = pattern
        .replace("(?P<K>", &format!("(?P<k{i}>"))
        .replace("(?P<S>", &format!("(?P<s{i}>"));
    let mut out = String::with_capacity(pattern.len() + 32);
    let mut n = 0;
    let mut rest = pattern.as_str();
    while let Some(at) = rest.find("(?P<V>") {
        out.push_str(rest.get(..at).unwrap_or_default());
        out.push_str(&format!("(?P<v{i}_{n}>"));
        n += 1;
        rest = rest.get(at + "(?P<V>".len()..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// Turns the placeholder groups into non-capturing ones.
fn strip_group_names(pattern: &str) -> String {
    pattern
        .replace("(?P<V>", "(?:")
        .replace("(?P<K>", "(?:")
        .replace("(?P<S>", "(?:")
}

fn groups_of(regex: &Regex, i: usize) -> Option<Groups> {
    let whole_name = format!("a{i}");
    let value_prefix = format!("v{i}_");
    let key_name = format!("k{i}");
    let scheme_name = format!("s{i}");
    let mut whole = None;
    let mut groups = Groups::default();
    for (idx, name) in regex.capture_names().enumerate() {
        match name {
            Some(n) if n == whole_name => whole = Some(idx),
            Some(n) if n.starts_with(&value_prefix) => groups.values.push(idx),
            Some(n) if n == key_name => groups.key = Some(idx),
            Some(n) if n == scheme_name => groups.scheme = Some(idx),
            _ => {}
        }
    }
    groups.whole = whole?;
    Some(groups)
}

/// Longest text an anchored match may span. The patterns keep candidates short, but a
/// hostile input could line up many hits that each run long and then fail
/// validation; this bounds the rescanning per hit. Generous: a PGP private key block
/// is a few kilobytes.
const MAX_MATCH: usize = 64 * 1024;

/// Most alternatives in one family; lets the match set live on the stack.
const MAX_ALTS: usize = 40;

fn build_family(
    family: &'static str,
    alts: &[(Alt, String)],
    anchored: bool,
) -> Result<Family, RedactError> {
    let err = |detail: String| RedactError::Builtin { family, detail };
    if alts.len() > MAX_ALTS {
        return Err(err(format!("more than {MAX_ALTS} alternatives")));
    }
    let renamed: Vec<String> = alts
        .iter()
        .enumerate()
        .map(|(i, (_, p))| rename_groups(p, i))
        .collect();
    // The combined regex only answers "is there a match, where": no capture groups,
    // which keeps its automaton small.
    let regex = if anchored {
        None
    } else {
        let combined = alts
            .iter()
            .map(|(_, p)| format!("(?:{})", strip_group_names(p)))
            .collect::<Vec<_>>()
            .join("|");
        Some(compile(&combined).map_err(|e| err(e.to_string()))?)
    };
    let mut slots = Vec::with_capacity(alts.len());
    for (i, ((alt, pattern), body)) in alts.iter().zip(&renamed).enumerate() {
        let anchored = compile(&format!("^(?P<a{i}>{body})")).map_err(|e| err(e.to_string()))?;
        let groups =
            groups_of(&anchored, i).ok_or_else(|| err(format!("no anchored group a{i}")))?;
        let plain = groups.values.is_empty() && groups.key.is_none() && groups.scheme.is_none();
        slots.push(AltSlot {
            alt: *alt,
            anchored,
            groups,
            left_boundary: pattern.starts_with(r"(?-u:\b)"),
            plain,
            first: FirstBytes::of(&strip_group_names(body)),
        });
    }
    let direct = match (alts, slots.as_slice()) {
        ([(_, pattern)], [slot]) => {
            !anchored
                && slot.plain
                && !slot.left_boundary
                && !pattern.contains(['^', '$'])
                && !pattern.contains("\\b")
                && !pattern.contains("\\B")
        }
        _ => false,
    };
    let needs = if anchored { None } else { Needs::of(alts) };
    Ok(Family {
        regex,
        alts: slots,
        needles: None,
        direct,
        needs,
    })
}

fn build_prefiltered(
    family: &'static str,
    literal_sets: &[Vec<String>],
    alts: &[(Alt, String)],
    back_up: bool,
) -> Result<Prefiltered, RedactError> {
    let mut pre = Vec::with_capacity(literal_sets.len());
    let short = literal_sets
        .iter()
        .map(|literals| Literals::build(literals))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    for literals in literal_sets {
        let pattern = literals
            .iter()
            .map(|l| regex::escape(l))
            .collect::<Vec<_>>()
            .join("|");
        pre.push(compile(&pattern).map_err(|e| RedactError::Builtin {
            family,
            detail: e.to_string(),
        })?);
    }
    let mut family = build_family(family, alts, true)?;
    if back_up {
        family.needles = Some(Needles::build(&family.alts));
    }
    Ok(Prefiltered {
        pre,
        short,
        family,
        back_up,
    })
}

/// A list of literals, found the way a regex alternation of them finds them
/// (leftmost-first: the leftmost position where one matches, and there the first
/// literal in list order), without the regex engine's fixed cost per search.
#[derive(Debug)]
struct Literals {
    literals: Vec<Box<[u8]>>,
    /// Per first byte: indices into `literals` of those starting with it, in order.
    by_first: Vec<Vec<usize>>,
    /// The first two bytes of every literal, as a bit set indexed by `b0 << 8 | b1`.
    pairs: Box<[u64; 1024]>,
}

impl Literals {
    /// None when a literal is shorter than two bytes.
    fn build(literals: &[String]) -> Option<Literals> {
        let mut by_first = vec![Vec::new(); 256];
        let mut pairs = Box::new([0u64; 1024]);
        for (i, lit) in literals.iter().enumerate() {
            let &[b0, b1, ..] = lit.as_bytes() else {
                return None;
            };
            by_first.get_mut(usize::from(b0))?.push(i);
            let pair = usize::from(b0) << 8 | usize::from(b1);
            *pairs.get_mut(pair >> 6)? |= 1 << (pair & 63);
        }
        Some(Literals {
            literals: literals
                .iter()
                .map(|l| l.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            by_first,
            pairs,
        })
    }

    /// The leftmost-first match at or after `pos`, as `(start, end)`.
    fn find_at(&self, text: &str, pos: usize) -> Option<(usize, usize)> {
        let hay = text.as_bytes().get(pos..)?;
        for (i, pair) in hay.windows(2).enumerate() {
            let &[b0, b1] = pair else {
                continue;
            };
            let pair = usize::from(b0) << 8 | usize::from(b1);
            if self
                .pairs
                .get(pair >> 6)
                .is_none_or(|word| word & (1 << (pair & 63)) == 0)
            {
                continue;
            }
            let (Some(tail), Some(list)) = (hay.get(i..), self.by_first.get(usize::from(b0)))
            else {
                continue;
            };
            for lit in list.iter().filter_map(|&k| self.literals.get(k)) {
                if tail.starts_with(lit) {
                    return Some((pos + i, pos + i + lit.len()));
                }
            }
        }
        None
    }
}

/// A validated match, before overlap resolution.
#[derive(Debug, Clone)]
struct Found {
    kind: RedactionKind,
    start: usize,
    end: usize,
    priority: u8,
}

/// A raw regex match of one alternative, with absolute offsets.
struct Hit<'t> {
    alt: Alt,
    start: usize,
    end: usize,
    value: Option<(usize, usize)>,
    key: Option<(usize, usize)>,
    scheme: Option<&'t str>,
}

impl<'t> Hit<'t> {
    fn from_locs(
        alt: Alt,
        groups: &Groups,
        locs: &CaptureLocations,
        text: &'t str,
        offset: usize,
    ) -> Option<Hit<'t>> {
        let (s, e) = locs.get(groups.whole)?;
        let value = groups
            .values
            .iter()
            .find_map(|&g| locs.get(g))
            .map(|(a, b)| (a + offset, b + offset));
        let part = |g: Option<usize>| {
            g.and_then(|g| locs.get(g))
                .and_then(|(a, b)| text.get(a + offset..b + offset))
        };
        Some(Hit {
            alt,
            start: s + offset,
            end: e + offset,
            value,
            key: groups
                .key
                .and_then(|g| locs.get(g))
                .map(|(a, b)| (a + offset, b + offset)),
            scheme: part(groups.scheme),
        })
    }

    /// The secret part: the value group when the pattern has one, else the whole match.
    fn span(&self) -> (usize, usize) {
        self.value.unwrap_or((self.start, self.end))
    }
}

/// Detects and replaces PII and secrets. Compiled once; `Send + Sync`, so one instance
/// can serve every log's background writer thread.
pub struct Redactor {
    secrets: Prefiltered,
    /// `scheme://user:password@host`; only searched when the text has an `@`.
    urls: Prefiltered,
    azure_ad: Family,
    emails: Family,
    encoded_emails: Family,
    numbers: Family,
    custom: Vec<(RedactionKind, Regex)>,
    allow_values: HashSet<String>,
    allow_patterns: Vec<Regex>,
    /// Normalised extra secret key names from the configuration.
    secret_keys: Vec<String>,
    /// Keyed with the tenant key once; cloned per match, which is cheaper than re-keying.
    mac: Option<HmacSha256>,
    /// The first three bytes of every secret prefilter literal, hashed into a bit set;
    /// None when a (configured) literal is shorter than three bytes.
    trigrams: Option<Box<Trigrams>>,
}

impl fmt::Debug for Redactor {
    // The regexes are large and the key is secret, so neither is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("keyed", &self.mac.is_some())
            .field(
                "custom",
                &self
                    .custom
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("allow_values", &self.allow_values.len())
            .field("allow_patterns", &self.allow_patterns.len())
            .field("secret_keys", &self.secret_keys)
            .finish()
    }
}

/// Texts up to this length are tested against [`Trigrams`] before the secret
/// prefilter runs: on short strings, the regex searches' fixed cost per call is most
/// of the work, and most short strings hold no literal at all.
const TRIGRAM_MAX_LEN: usize = 64;

/// The 3-byte prefixes of literals: a bit set of their hashes for a quick test, and
/// the prefixes themselves to confirm a hit, so that a text passes only when it
/// really holds one of them. If no 3-byte window of a text is a prefix, the text
/// contains none of the literals.
struct Trigrams {
    bits: [u64; 1024],
    /// Sorted, deduplicated.
    exact: Vec<u32>,
}

impl Trigrams {
    /// Hashes the three bytes in the low 24 bits of `x` to 16 bits.
    fn hash(x: u32) -> usize {
        ((x << 8).wrapping_mul(0x9E37_79B1) >> 16) as usize
    }

    fn build<'a>(literals: impl IntoIterator<Item = &'a str>) -> Option<Box<Trigrams>> {
        let mut set = Box::new(Trigrams {
            bits: [0; 1024],
            exact: Vec::new(),
        });
        for lit in literals {
            let &[a, b, c, ..] = lit.as_bytes() else {
                return None;
            };
            let x = (u32::from(a) << 16) | (u32::from(b) << 8) | u32::from(c);
            let h = Self::hash(x);
            *set.bits.get_mut(h >> 6)? |= 1 << (h & 63);
            set.exact.push(x);
        }
        set.exact.sort_unstable();
        set.exact.dedup();
        Some(set)
    }

    /// [`quick_scan`]'s [`BYTE_CLASS`] bits of `bytes`, and whether one of its 3-byte
    /// windows is a literal's prefix, in one pass.
    fn classify(&self, bytes: &[u8]) -> (u8, bool) {
        let class = |b: u8| {
            BYTE_CLASS
                .get(usize::from(b))
                .copied()
                .unwrap_or(NEEDS_SCAN)
        };
        let mut iter = bytes.iter();
        let (Some(&a), Some(&b)) = (iter.next(), iter.next()) else {
            return (bytes.iter().fold(0, |acc, &b| acc | class(b)), false);
        };
        let mut acc = class(a) | class(b);
        let mut x = (u32::from(a) << 8) | u32::from(b);
        let mut hit = false;
        for &c in iter {
            acc |= class(c);
            x = (x << 8) | u32::from(c);
            let h = Self::hash(x);
            hit = hit
                || self
                    .bits
                    .get(h >> 6)
                    .is_some_and(|word| word & (1 << (h & 63)) != 0)
                    && self.exact.binary_search(&(x & 0x00FF_FFFF)).is_ok();
        }
        (acc, hit)
    }
}

fn valid_custom_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may only contain ASCII letters, digits, `_` and `-`");
    }
    if BUILTIN_KINDS.iter().any(|k| k.as_str() == name) {
        return Err("collides with a built-in kind");
    }
    Ok(())
}

impl Redactor {
    /// Compiles the detectors. A custom or allow-list pattern that does not compile, or
    /// an unusable custom name, is an error naming the pattern.
    pub fn new(config: RedactionConfig) -> Result<Redactor, RedactError> {
        let mut custom = Vec::with_capacity(config.custom_patterns.len());
        for (name, pattern) in &config.custom_patterns {
            valid_custom_name(name).map_err(|reason| RedactError::InvalidCustomName {
                name: name.clone(),
                reason,
            })?;
            let regex = compile(pattern).map_err(|source| RedactError::InvalidCustomPattern {
                name: name.clone(),
                source,
            })?;
            custom.push((RedactionKind::Custom(name.clone()), regex));
        }
        let allow_patterns = config
            .allow_patterns
            .iter()
            .map(|p| {
                compile(&format!("^(?:{p})$")).map_err(|source| RedactError::InvalidAllowPattern {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let extra_words = config
            .secret_keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| regex::escape(k))
            .collect::<Vec<_>>()
            .join("|");
        let mac = match &config.hmac_key {
            Some(key) => {
                Some(HmacSha256::new_from_slice(key).map_err(|_| RedactError::InvalidKey)?)
            }
            None => None,
        };
        let credential_literals: Vec<String> = CREDENTIAL_LITERALS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut literals: Vec<String> = LABEL_LITERALS.iter().map(|s| (*s).to_owned()).collect();
        // Configured secret keys are matched case-insensitively by the label regex; the
        // prefilter looks for their usual casings.
        for key in config.secret_keys.iter().filter(|k| !k.is_empty()) {
            let mut capitalized = key.to_ascii_lowercase();
            if let Some(first) = capitalized.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            literals.extend([
                key.to_ascii_lowercase(),
                key.to_ascii_uppercase(),
                capitalized,
            ]);
        }
        let trigrams = Trigrams::build(
            credential_literals
                .iter()
                .chain(literals.iter())
                .map(String::as_str),
        );
        Ok(Redactor {
            trigrams,
            secrets: build_prefiltered(
                "secrets",
                &[credential_literals, literals],
                &secret_family(&extra_words),
                true,
            )?,
            urls: build_prefiltered(
                "urls",
                &[vec!["://".to_owned()]],
                &[(Alt::UrlPassword, URL_PASSWORD.to_owned())],
                false,
            )?,
            azure_ad: build_family(
                "azure_ad",
                &[(Alt::AzureAdSecret, AZURE_AD_SECRET.to_owned())],
                false,
            )?,
            emails: build_family("emails", &[(Alt::Email, EMAIL.to_owned())], false)?,
            encoded_emails: build_family(
                "encoded_emails",
                &[(Alt::Email, EMAIL_ENCODED.to_owned())],
                false,
            )?,
            numbers: build_family("numbers", &number_family(), false)?,
            custom,
            allow_values: config.allow_values.into_iter().collect(),
            allow_patterns,
            secret_keys: config
                .secret_keys
                .iter()
                .map(|k| normalize_key(k))
                .filter(|k| !k.is_empty())
                .collect(),
            mac,
        })
    }

    /// Redacts every string in the value in place, and whole values under secret-looking
    /// keys (password, passwd, secret, token, api_key, apikey, access_key, private_key,
    /// authorization, cookie, set-cookie, session, credentials, client_secret ...
    /// case-insensitive, with -, _ or camelCase variants, as the whole key or its
    /// suffix). Object keys are scanned too. Integers are checked as well (a card
    /// number stored as a JSON number becomes a string token). `null`, booleans and
    /// empty strings under secret keys are kept: they carry no secret and their
    /// presence is useful evidence. Counts what was found into `report`.
    pub fn redact_value(&self, value: &mut Value, report: &mut RedactionReport) {
        let mut walk = Walk { report, memo: None };
        self.redact_tree(value, &mut walk, 0);
    }

    /// [`Redactor::redact_value`], remembering in `memo` what became of the
    /// strings it searched, so that a string met again (a system prompt, the
    /// earlier turns a conversation resends with every model call, a query
    /// template, an address) is not searched again. The result is the same as
    /// without the memo. Use one memo per thread, with one redactor.
    pub fn redact_value_memo(
        &self,
        value: &mut Value,
        report: &mut RedactionReport,
        memo: &mut RedactionMemo,
    ) {
        let mut walk = Walk {
            report,
            memo: Some(memo),
        };
        self.redact_tree(value, &mut walk, 0);
    }

    /// [`Redactor::redact_value`] by recursion down to [`MAX_RECURSION`] levels, which
    /// needs no heap allocation; deeper subtrees go to [`Redactor::redact_deep`].
    fn redact_tree(&self, value: &mut Value, walk: &mut Walk<'_>, depth: usize) {
        self.redact_node(value, walk, &mut |child, walk| {
            if depth < MAX_RECURSION {
                self.redact_tree(child, walk, depth + 1);
            } else {
                self.redact_deep(child, walk);
            }
        });
    }

    /// [`Redactor::redact_value`] with an explicit stack instead of recursion: values
    /// built in code (not parsed) have no depth limit, and the writer thread must not
    /// overflow its stack.
    fn redact_deep(&self, value: &mut Value, walk: &mut Walk<'_>) {
        let mut stack: Vec<&mut Value> = Vec::with_capacity(16);
        stack.push(value);
        while let Some(v) = stack.pop() {
            self.redact_node(v, walk, &mut |child, _| stack.push(child));
        }
    }

    /// Redacts one node of a value: a string or integer in place, an object's keys and
    /// the values under its secret keys. Every other child (array items, values under
    /// plain keys) goes to `visit`. Nodes are independent of each other, so the order
    /// in which children are visited does not change the result.
    fn redact_node<'v>(
        &self,
        v: &'v mut Value,
        walk: &mut Walk<'_>,
        visit: &mut dyn FnMut(&'v mut Value, &mut Walk<'_>),
    ) {
        match v {
            Value::String(s) => {
                if let Some(new) = self.redact_string(s, walk) {
                    *s = new;
                }
            }
            Value::Number(n) => {
                // Formatted on the stack, as `Display` would: most numbers are small
                // and clean.
                let mut buf = [0u8; 24];
                let text = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => format_integer(u, false, &mut buf),
                    (None, Some(i)) => format_integer(i.unsigned_abs(), i < 0, &mut buf),
                    (None, None) => return,
                };
                if let Cow::Owned(new) = self.redact_str(text, walk.report) {
                    *v = Value::String(new);
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    visit(item, walk);
                }
            }
            Value::Object(map) => {
                // One pass over the keys tells whether any could hold something to
                // redact, and whether any could name a service account's private key
                // (only then is `type` looked up).
                let (mut may_hold, mut may_private_key) = (!self.custom.is_empty(), false);
                for k in map.keys() {
                    let (hold, private_key) = key_flags(k);
                    may_hold |= hold;
                    may_private_key |= private_key;
                }
                if may_hold && self.redact_keys(map, walk.report) {
                    may_private_key = map.keys().any(|k| key_flags(k).1);
                }
                let service_account = may_private_key
                    && map.get("type").and_then(Value::as_str) == Some("service_account");
                for (key, child) in map.iter_mut() {
                    match self.secret_key_kind(key, service_account) {
                        Some(kind) => self.redact_whole(child, kind, walk.report),
                        None => visit(child, walk),
                    }
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// Redacts one string. Returns the input borrowed when nothing was found.
    pub fn redact_str<'a>(&self, s: &'a str, report: &mut RedactionReport) -> Cow<'a, str> {
        let found = self.collect(s);
        if found.is_empty() {
            return Cow::Borrowed(s);
        }
        Cow::Owned(self.replace_found(s, &found, report))
    }

    /// A string value met in a walk: `None` when it stays as it is. Strings the
    /// walk's memo has seen are not searched again.
    fn redact_string(&self, s: &str, walk: &mut Walk<'_>) -> Option<String> {
        let Some(memo) = walk.memo.as_deref_mut().filter(|_| memo_fits(s)) else {
            return match self.redact_str(s, walk.report) {
                Cow::Owned(new) => Some(new),
                Cow::Borrowed(_) => None,
            };
        };
        let pre = self.prescan(s)?;
        let hash = memo.hash(s);
        if let Some(seen) = memo.get(hash, s) {
            for kind in &seen.kinds {
                walk.report.record(kind);
            }
            return seen.redacted.as_deref().map(str::to_owned);
        }
        let found = self.collect_prescanned(s, pre);
        let redacted = (!found.is_empty()).then(|| self.replace_found(s, &found, walk.report));
        let kinds = found.into_iter().map(|f| f.kind).collect();
        memo.put(hash, s, redacted.as_deref(), kinds);
        redacted
    }

    /// `s` with each finding replaced by its token, counted into `report`.
    fn replace_found(&self, s: &str, found: &[Found], report: &mut RedactionReport) -> String {
        let mut out = String::with_capacity(s.len() + 16 * found.len());
        let mut last = 0;
        for f in found {
            out.push_str(s.get(last..f.start).unwrap_or_default());
            self.write_token(&mut out, &f.kind, s.get(f.start..f.end).unwrap_or_default());
            report.record(&f.kind);
            last = f.end;
        }
        out.push_str(s.get(last..).unwrap_or_default());
        out
    }

    /// What [`Redactor::redact_str`] would replace, without replacing it: each finding's
    /// kind and byte range, in order, non-overlapping, allow-list applied.
    pub fn find(&self, s: &str) -> Vec<Finding> {
        self.collect(s)
            .into_iter()
            .map(|f| Finding {
                kind: f.kind,
                range: f.start..f.end,
            })
            .collect()
    }

    /// The replacement for `value` of kind `kind`: `<kind:hex8>` when keyed, else
    /// `[REDACTED:KIND]`.
    pub fn token_for(&self, kind: &RedactionKind, value: &str) -> String {
        let mut out = String::new();
        self.write_token(&mut out, kind, value);
        out
    }

    fn write_token(&self, out: &mut String, kind: &RedactionKind, value: &str) {
        use std::fmt::Write as _;
        match &self.mac {
            Some(mac) => {
                let mut mac = mac.clone();
                mac.update(value.as_bytes());
                let digest = mac.finalize().into_bytes();
                out.push('<');
                out.push_str(kind.as_str());
                out.push(':');
                for b in digest.iter().take(4) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "{b:02x}");
                }
                out.push('>');
            }
            None => {
                out.push_str("[REDACTED:");
                // `kind.label()`, without building it first.
                out.extend(kind.as_str().chars().map(|c| match c {
                    '-' => '_',
                    c => c.to_ascii_uppercase(),
                }));
                out.push(']');
            }
        }
    }

    fn is_allowed(&self, value: &str) -> bool {
        self.allow_values.contains(value) || self.allow_patterns.iter().any(|p| p.is_match(value))
    }

    /// Runs every family whose cheap gate passes, validates candidates, applies the
    /// allow-list and resolves overlaps between families.
    fn collect(&self, text: &str) -> Vec<Found> {
        match self.prescan(text) {
            Some(pre) => self.collect_prescanned(text, pre),
            None => Vec::new(),
        }
    }

    /// The cheap first look at `text`: `None` when nothing can be found in it
    /// (most strings of a payload: short and clean, no digit, colon or gating
    /// byte, and no literal), else what [`Redactor::collect_prescanned`] needs.
    fn prescan(&self, text: &str) -> Option<Prescan> {
        if text.is_empty() {
            return None;
        }
        // One pass finds the number regions and the rare bytes that gate the `Q~`,
        // `@` and `%40` families; in a short text, the same pass looks for the
        // literals' first three bytes.
        let bytes = text.as_bytes();
        let (quick, literal) = match &self.trigrams {
            Some(t) if bytes.len() <= TRIGRAM_MAX_LEN => {
                let (acc, literal) = t.classify(bytes);
                (quick_scan_from(bytes, acc), literal)
            }
            _ => (quick_scan(bytes), true),
        };
        if quick.as_ref().is_some_and(|q| q.rare == 0) && !literal && self.custom.is_empty() {
            return None;
        }
        Some(Prescan {
            scan: quick.unwrap_or_else(|| scan_bytes(bytes)),
            literal,
        })
    }

    /// [`Redactor::collect`] after its [`Redactor::prescan`].
    fn collect_prescanned(&self, text: &str, pre: Prescan) -> Vec<Found> {
        let mut out = Vec::new();
        let Prescan { scan, literal } = pre;
        if literal {
            self.scan_prefiltered(&self.secrets, text, &mut out, true);
        }
        if scan.rare & HAS_TILDE != 0 && text.contains("Q~") {
            self.scan_unanchored(&self.azure_ad, text, 0, text.len(), &mut out, true);
        }
        if scan.rare & HAS_AT != 0 {
            self.scan_prefiltered(&self.urls, text, &mut out, true);
            self.scan_unanchored(&self.emails, text, 0, text.len(), &mut out, true);
        }
        if scan.rare & HAS_PERCENT != 0 && text.contains("%40") {
            self.scan_unanchored(&self.encoded_emails, text, 0, text.len(), &mut out, true);
        }
        let mut pos = 0;
        for (start, end) in scan.regions {
            pos = self.scan_unanchored(&self.numbers, text, start.max(pos), end, &mut out, true);
        }
        for (kind, regex) in &self.custom {
            for m in regex.find_iter(text) {
                if !m.is_empty() {
                    out.push(Found {
                        kind: kind.clone(),
                        start: m.start(),
                        end: m.end(),
                        priority: CUSTOM_PRIORITY,
                    });
                }
            }
        }
        if out.is_empty() {
            return out;
        }
        if !self.allow_values.is_empty() || !self.allow_patterns.is_empty() {
            out.retain(|f| !self.is_allowed(text.get(f.start..f.end).unwrap_or_default()));
        }
        resolve_overlaps(out)
    }

    /// Tries an anchored family at every prefilter hit.
    fn scan_prefiltered(
        &self,
        pf: &Prefiltered,
        text: &str,
        out: &mut Vec<Found>,
        reclassify: bool,
    ) {
        // In a short text, the literals are found by hand.
        let short = text.len() <= TRIGRAM_MAX_LEN && pf.short.len() == pf.pre.len();
        for (k, pre) in pf.pre.iter().enumerate() {
            let mut pos = 0;
            let mut last_start = usize::MAX;
            while pos < text.len() {
                let found = match pf.short.get(k) {
                    Some(lits) if short => lits.find_at(text, pos),
                    _ => pre.find_at(text, pos).map(|m| (m.start(), m.end())),
                };
                let Some((m_start, m_end)) = found else {
                    break;
                };
                let start = if pf.back_up {
                    match identifier_start(text, m_start) {
                        Some(start) => start,
                        // Deep inside a long run of identifier characters (a base64
                        // blob): not where a label or a credential starts.
                        None => {
                            pos = m_end;
                            continue;
                        }
                    }
                } else {
                    m_start
                };
                // Several literals in one identifier lead to the same start.
                if start == last_start {
                    pos = m_end;
                    continue;
                }
                last_start = start;
                let mut reach = 0;
                let found =
                    self.first_valid_alt(&pf.family, (text, text), start, reclassify, &mut reach);
                match found {
                    Some(found) => {
                        pos = found.end.max(m_end);
                        out.push(found);
                    }
                    // A long candidate was rejected (`token=$...` running on for
                    // kilobytes): hits inside it would each rescan the same text.
                    None if reach > start + 256 => pos = reach,
                    None => pos = next_char_boundary(text, m_start),
                }
            }
        }
    }

    /// Matches an anchored family at `start` and validates the match.
    fn match_at(
        &self,
        family: &Family,
        text: &str,
        start: usize,
        reclassify: bool,
    ) -> Option<Found> {
        self.first_valid_alt(family, (text, text), start, reclassify, &mut 0)
    }

    /// Scans `text[from..end]` with an unanchored family (the regex sees the text before
    /// `from` for its word boundaries). Returns where scanning stopped.
    fn scan_unanchored(
        &self,
        family: &Family,
        text: &str,
        from: usize,
        end: usize,
        out: &mut Vec<Found>,
        reclassify: bool,
    ) -> usize {
        let (Some(hay), Some(regex)) = (text.get(..end), family.regex.as_ref()) else {
            return from;
        };
        let mut pos = from;
        while pos < hay.len() {
            // No match fits in what is left (after a number, the rest of its region
            // is often prose): skip the search. Not tested before the first search,
            // which looks at a region found around digits or colons.
            if pos > from
                && let Some(needs) = &family.needs
                && !hay
                    .as_bytes()
                    .get(pos..)
                    .is_some_and(|rest| needs.met_by(rest))
            {
                break;
            }
            let Some(m) = regex.find_at(hay, pos) else {
                break;
            };
            let start = m.start();
            let next_char = next_char_boundary(text, start);
            let found = match family.alts.first() {
                Some(slot) if family.direct && m.len() <= MAX_MATCH => {
                    let hit = Hit {
                        alt: slot.alt,
                        start,
                        end: m.end(),
                        value: None,
                        key: None,
                        scheme: None,
                    };
                    self.validate(&hit, text, reclassify)
                }
                _ => self.first_valid_alt(family, (hay, text), start, reclassify, &mut 0),
            };
            match found {
                Some(found) => {
                    pos = found.end.max(next_char);
                    out.push(found);
                }
                None => {
                    let whole = family
                        .alts
                        .first()
                        .is_some_and(|slot| slot.alt.skip_whole_on_failure());
                    pos = if whole {
                        m.end().max(next_char)
                    } else {
                        next_char
                    };
                }
            }
        }
        pos.max(from)
    }

    /// The first alternative, in family order, that matches at `start` and passes
    /// validation. Trying them in order is the combined regex's leftmost-first choice,
    /// plus a fallback to later alternatives when the preferred one fails validation.
    /// Captures come from each alternative's own small anchored regex: on the combined
    /// one they would need the slow PikeVM engine. `hay` may be cut short (a number
    /// region); validation sees the whole `text`. `reach` is set to the end of the
    /// longest candidate that matched but failed validation.
    fn first_valid_alt(
        &self,
        family: &Family,
        (hay, text): (&str, &str),
        start: usize,
        reclassify: bool,
        reach: &mut usize,
    ) -> Option<Found> {
        let rest = hay.get(start..ceil_char_boundary(hay, start.saturating_add(MAX_MATCH)))?;
        // Most candidates are ruled out for most alternatives without running them.
        let mut matched = [true; MAX_ALTS];
        let matched = matched.get_mut(..family.alts.len())?;
        if let Some(needles) = &family.needles {
            // The few alternatives whose literals are in the identifier; each is then
            // tried on its own.
            let mask = needles.candidates(rest.as_bytes());
            if mask == 0 {
                return None;
            }
            for (i, m) in matched.iter_mut().enumerate() {
                *m = i < 64 && mask & (1 << i) != 0;
            }
        } else if family.alts.len() > 1 {
            // Only the alternatives that can start with the byte here; each is then
            // tried on its own (an anchored search that fails within a few bytes).
            let first = rest.as_bytes().first().copied();
            let mut any = false;
            for (m, slot) in matched.iter_mut().zip(&family.alts) {
                *m = slot.first.may_start(first);
                any |= *m;
            }
            if !any {
                return None;
            }
        }
        let mut locs: Option<CaptureLocations> = None;
        for (slot, _) in family.alts.iter().zip(matched.iter()).filter(|(_, m)| **m) {
            if slot.left_boundary && prev_byte(text, start).is_some_and(is_word_byte) {
                continue;
            }
            let hit = if slot.plain || slot.alt == Alt::Bearer {
                let Some(m) = slot.anchored.find_at(rest, 0) else {
                    continue;
                };
                // `Bearer` is followed by blanks and a value that has none, so the
                // value starts after the match's last blank.
                let value = (slot.alt == Alt::Bearer)
                    .then(|| m.as_str().bytes().rposition(|b| b == b' ' || b == b'\t'))
                    .flatten()
                    .map(|i| (start + m.start() + i + 1, start + m.end()));
                Hit {
                    alt: slot.alt,
                    start: start + m.start(),
                    end: start + m.end(),
                    value,
                    key: None,
                    scheme: None,
                }
            } else {
                let locs = match &mut locs {
                    Some(l) if l.len() == slot.anchored.captures_len() => l,
                    _ => locs.insert(slot.anchored.capture_locations()),
                };
                if slot.anchored.captures_read_at(locs, rest, 0).is_none() {
                    continue;
                }
                let Some(hit) = Hit::from_locs(slot.alt, &slot.groups, locs, text, start) else {
                    continue;
                };
                hit
            };
            if let Some(found) = self.validate(&hit, text, reclassify) {
                return Some(found);
            }
            *reach = (*reach).max(hit.end);
        }
        None
    }

    /// If `value` as a whole is a specific credential (a JWT after `Bearer`, a GitHub
    /// token in a URL password, an OpenAI key under `api_key=`), its kind.
    fn specific_kind(&self, value: &str) -> Option<RedactionKind> {
        let mut found = Vec::new();
        // Credentials start with one of the credential literals; check that first.
        if starts_with_credential_literal(value) {
            found.extend(self.match_at(&self.secrets.family, value, 0, false));
        } else if value.contains("Q~") {
            self.scan_unanchored(&self.azure_ad, value, 0, value.len(), &mut found, false);
        }
        match found.as_slice() {
            [f] if f.start == 0 && f.end == value.len() && f.priority >= 90 => Some(f.kind.clone()),
            _ => None,
        }
    }

    fn found(&self, kind: RedactionKind, alt: Alt, start: usize, end: usize) -> Option<Found> {
        (end > start).then_some(Found {
            kind,
            start,
            end,
            priority: alt.priority(),
        })
    }

    /// A credential inside a larger match: reported as the specific kind when the value
    /// is one, else as `fallback`.
    fn credential(
        &self,
        text: &str,
        (a, b): (usize, usize),
        fallback: RedactionKind,
        alt: Alt,
        reclassify: bool,
    ) -> Option<Found> {
        let value = text.get(a..b)?;
        let kind = if reclassify {
            self.specific_kind(value).unwrap_or(fallback)
        } else {
            fallback
        };
        self.found(kind, alt, a, b)
    }

    fn validate(&self, hit: &Hit<'_>, text: &str, reclassify: bool) -> Option<Found> {
        use RedactionKind as K;
        let (a, b) = hit.span();
        let value = text.get(a..b)?;
        let alt = hit.alt;
        match alt {
            Alt::PemKey => {
                // A private key inside a GCP service-account JSON is that account's key.
                // Looked for near the key only: a text with many keys stays linear.
                let lo = floor_char_boundary(text, a.saturating_sub(4096));
                let hi = ceil_char_boundary(text, b.saturating_add(4096));
                let near = text.get(lo..hi).unwrap_or_default();
                let kind = if near.contains("service_account") {
                    K::GcpKey
                } else {
                    K::PrivateKey
                };
                self.found(kind, alt, a, b)
            }
            Alt::UrlPassword => {
                if is_placeholder(value) || is_placeholder_word(value) {
                    return None;
                }
                self.credential(text, (a, b), K::UrlPassword, alt, reclassify)
            }
            Alt::Jwt => self.found(K::Jwt, alt, a, b),
            Alt::AwsAccessKey => self.found(K::AwsKey, alt, a, b),
            Alt::GcpKey => {
                token_end_ok(text, b, b"_-").then(|| self.found(K::GcpKey, alt, a, b))?
            }
            Alt::AzureAccountKey => self.found(K::AzureKey, alt, a, b),
            Alt::AzureSig => {
                let sig_at = a.saturating_sub("sig=".len());
                if !matches!(prev_byte(text, sig_at), Some(b'?' | b'&' | b';')) {
                    return None;
                }
                // `sig=` is only an Azure SAS signature next to the other SAS fields.
                let lo = floor_char_boundary(text, a.saturating_sub(600));
                let hi = ceil_char_boundary(text, b.saturating_add(600));
                let around = text.get(lo..hi).unwrap_or_default();
                let sas = ["sv=", "sr=", "skn=", "se=", "sp="]
                    .iter()
                    .filter(|f| around.contains(*f))
                    .count()
                    >= 2;
                sas.then(|| self.found(K::AzureKey, alt, a, b))?
            }
            Alt::GithubToken => self.found(K::GithubToken, alt, a, b),
            Alt::GitlabToken => {
                token_end_ok(text, b, b"_-").then(|| self.found(K::GitlabToken, alt, a, b))?
            }
            Alt::SlackToken => {
                token_end_ok(text, b, b"_-").then(|| self.found(K::SlackToken, alt, a, b))?
            }
            Alt::SlackWebhook => {
                (value.len() >= 20).then(|| self.found(K::SlackToken, alt, a, b))?
            }
            Alt::StripeKey => self.found(K::StripeKey, alt, a, b),
            Alt::AnthropicKey => {
                token_end_ok(text, b, b"_-").then(|| self.found(K::AnthropicKey, alt, a, b))?
            }
            Alt::OpenaiKey => {
                if !token_end_ok(text, b, b"_-") || value.starts_with("sk-ant-") {
                    return None;
                }
                let body = value.get(3..).unwrap_or_default();
                let prefixed = ["proj-", "svcacct-", "admin-", "None-"]
                    .iter()
                    .any(|p| body.starts_with(p));
                let random = has_digit(body) && has_upper(body) && has_lower(body);
                (random && (prefixed || body.len() >= 32))
                    .then(|| self.found(K::OpenaiKey, alt, a, b))?
            }
            Alt::AzureAdSecret => {
                let charset = |c: u8| c.is_ascii_alphanumeric() || b"_~.-".contains(&c);
                if prev_byte(text, a).is_some_and(charset) || byte_at(text, b).is_some_and(charset)
                {
                    return None;
                }
                self.found(K::AzureKey, alt, a, b)
            }
            Alt::Authorization => {
                let scheme = hit.scheme.map(str::to_ascii_lowercase);
                match scheme.as_deref() {
                    Some("bearer") => {
                        if !bearer_ok(value) {
                            return None;
                        }
                        self.credential(text, (a, b), K::BearerToken, alt, reclassify)
                    }
                    Some("basic") => (value.len() >= 8 && !is_placeholder(value))
                        .then(|| self.found(K::SecretValue, alt, a, b))?,
                    _ => {
                        if is_placeholder(value) || !looks_credential(value) {
                            return None;
                        }
                        self.credential(text, (a, b), K::SecretValue, alt, reclassify)
                    }
                }
            }
            Alt::Bearer => {
                if !bearer_ok(value) {
                    return None;
                }
                self.credential(text, (a, b), K::BearerToken, alt, reclassify)
            }
            Alt::Cookie => {
                let trimmed = value.trim_end();
                if !trimmed.contains('=') || is_placeholder(trimmed) {
                    return None;
                }
                self.found(K::SecretValue, alt, a, a + trimmed.len())
            }
            Alt::Labelled => {
                let key = hit
                    .key
                    .and_then(|(ks, ke)| text.get(ks..ke))
                    .unwrap_or_default();
                if !labelled_value_ok(text, hit, key, value) {
                    return None;
                }
                let identifier = normalize_key(
                    text.get(hit.start..hit.key.map_or(a, |(_, ke)| ke))
                        .unwrap_or_default(),
                );
                let aws = identifier.ends_with("secretaccesskey")
                    || (identifier.contains("aws") && identifier.ends_with("secretkey"));
                let fallback = if aws { K::AwsKey } else { K::SecretValue };
                self.credential(text, (a, b), fallback, alt, reclassify)
            }
            Alt::CliFlag => {
                if value.starts_with('-') || is_placeholder(value) || is_code_word(value) {
                    return None;
                }
                self.credential(text, (a, b), K::SecretValue, alt, reclassify)
            }
            Alt::PemBase64 => {
                let decoded = base64_decode_prefix(value, 96);
                let is_key = decoded
                    .windows(b"PRIVATE KEY".len())
                    .any(|w| w == b"PRIVATE KEY");
                is_key.then(|| self.found(K::PrivateKey, alt, a, b))?
            }
            Alt::PasswordIs => {
                // A sentence may end right after the value.
                let trimmed = value.trim_end_matches(['.', ',']);
                let b = a + trimmed.len();
                if is_placeholder(trimmed) || is_code_word(trimmed) || !looks_credential(trimmed) {
                    return None;
                }
                self.found(K::SecretValue, alt, a, b)
            }
            Alt::MysqlFlag | Alt::SqlIdentified | Alt::Sshpass | Alt::CurlUser => {
                if is_placeholder(value) {
                    return None;
                }
                self.found(K::SecretValue, alt, a, b)
            }
            Alt::Email => {
                validate_email(text, a, b).and_then(|(s, e)| self.found(K::Email, alt, s, e))
            }
            Alt::Iban => validate_iban(value)
                .filter(|_| !glued_number(text, a, a))
                .and_then(|len| self.found(K::Iban, alt, a, a + len)),
            Alt::Ssn => (ssn_ok(value) && !glued_number(text, a, b))
                .then(|| self.found(K::UsSsn, alt, a, b))?,
            Alt::SsnLabelled => {
                if !label_start_ok(text, hit.start) {
                    return None;
                }
                ssn_ok(value).then(|| self.found(K::UsSsn, alt, a, b))?
            }
            Alt::Card => {
                if glued_number(text, a, b) {
                    return None;
                }
                validate_card(value).and_then(|len| {
                    if glued_number(text, a, a + len) {
                        return None;
                    }
                    self.found(K::PaymentCard, alt, a, a + len)
                })
            }
            Alt::Ipv6 => validate_ipv6(text, a, b).then(|| self.found(K::Ipv6, alt, a, b))?,
            Alt::Ipv4 => validate_ipv4(text, a, b).then(|| self.found(K::Ipv4, alt, a, b))?,
            Alt::PhoneIntl => {
                let before = prev_byte(text, a);
                let before2 = a.checked_sub(1).and_then(|i| prev_byte(text, i));
                // Glued to a word or to a number (`x+44`, `1.00 44 ...`).
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'+')
                    || (matches!(before, Some(b'.' | b','))
                        && before2.is_some_and(|c| c.is_ascii_digit()))
                {
                    return None;
                }
                validate_intl_phone(value).and_then(|len| {
                    if glued_number(text, a, a + len) {
                        return None;
                    }
                    self.found(K::Phone, alt, a, a + len)
                })
            }
            Alt::PhoneNanp => {
                if glued_number(text, a, b) || !nanp_ok(value) {
                    return None;
                }
                self.found(K::Phone, alt, a, b)
            }
            Alt::PhoneNational => {
                let digits = value.bytes().filter(u8::is_ascii_digit).count();
                if glued_number(text, a, b) || !(10..=11).contains(&digits) {
                    return None;
                }
                self.found(K::Phone, alt, a, b)
            }
            Alt::PhoneLabelled => {
                if !label_start_ok(text, hit.start) {
                    return None;
                }
                self.found(K::Phone, alt, a, b)
            }
        }
    }

    /// Renames object keys that contain PII (an e-mail address used as a map key).
    /// Returns whether any key changed.
    fn redact_keys(
        &self,
        map: &mut serde_json::Map<String, Value>,
        report: &mut RedactionReport,
    ) -> bool {
        let mut key_report = RedactionReport::new();
        if !map.keys().any(|k| {
            (!self.custom.is_empty() || may_hold_value(k))
                && matches!(self.redact_str(k, &mut key_report), Cow::Owned(_))
        }) {
            return false;
        }
        let old = std::mem::take(map);
        for (key, child) in old {
            let mut new_key = match self.redact_str(&key, report) {
                Cow::Owned(k) => k,
                Cow::Borrowed(_) => key,
            };
            // Two distinct keys can redact to the same token; keep both entries.
            let mut n = 2;
            while map.contains_key(&new_key) {
                let base = new_key.trim_end_matches(|c: char| c.is_ascii_digit() || c == '#');
                new_key = format!("{base}#{n}");
                n += 1;
            }
            map.insert(new_key, child);
        }
        true
    }

    /// The kind to use for the value under `key`, or None when the key is not secret.
    fn secret_key_kind(&self, key: &str, service_account: bool) -> Option<RedactionKind> {
        // Without configured names or a service account, only the built-in names can
        // match: rule most keys out from their last three letters and digits, which
        // are the last three bytes of the normalised key.
        if self.secret_keys.is_empty()
            && !service_account
            && !raw_tail3(key).is_some_and(is_secret_tail)
        {
            return None;
        }
        // Normalised on the stack: keys are short, and this runs for every key.
        let mut buf = [0u8; 64];
        let owned;
        let normalized = match normalize_key_into(key, &mut buf) {
            Some(n) => n,
            None => {
                owned = normalize_key(key);
                owned.as_bytes()
            }
        };
        if service_account && (normalized == b"privatekey" || normalized == b"privatekeyid") {
            return Some(RedactionKind::GcpKey);
        }
        if !is_secret_key(normalized)
            && !self
                .secret_keys
                .iter()
                .any(|k| normalized.ends_with(k.as_bytes()))
        {
            return None;
        }
        if normalized.ends_with(b"secretaccesskey") {
            return Some(RedactionKind::AwsKey);
        }
        Some(RedactionKind::SecretValue)
    }

    /// Replaces the whole value under a secret key with one token.
    fn redact_whole(&self, v: &mut Value, kind: RedactionKind, report: &mut RedactionReport) {
        let (text, kind) = match &mut *v {
            Value::Null | Value::Bool(_) => return,
            Value::String(s) if s.is_empty() => return,
            Value::String(s) => {
                if self.is_allowed(s) {
                    return;
                }
                let kind = if kind == RedactionKind::SecretValue {
                    self.whole_string_kind(s).unwrap_or(kind)
                } else {
                    kind
                };
                (std::mem::take(s), kind)
            }
            other => (serde_json::to_string(other).unwrap_or_default(), kind),
        };
        report.record(&kind);
        *v = Value::String(self.token_for(&kind, &text));
    }

    /// When the whole string under a secret key is one specific credential (optionally
    /// after an auth scheme, as in `"Authorization": "Bearer eyJ..."`), its kind.
    fn whole_string_kind(&self, s: &str) -> Option<RedactionKind> {
        let found = self.collect(s);
        let [f] = found.as_slice() else {
            return None;
        };
        let prefix = s.get(..f.start)?.trim();
        let scheme = prefix.is_empty()
            || ["bearer", "basic", "token"]
                .iter()
                .any(|p| prefix.eq_ignore_ascii_case(p));
        (scheme && f.end == s.trim_end().len()).then(|| f.kind.clone())
    }
}

/// Whether an object key could contain something to redact. Keys are mostly plain
/// identifiers (`tool`, `created_at`), and every detected value has a digit, an `@`,
/// a `%40`, a `:` or non-ASCII letters, or is a long token; skipping the rest halves
/// the work on parsed JSON. Custom patterns are the exception: with any configured,
/// every key is scanned.
fn may_hold_value(key: &str) -> bool {
    key.len() > 40
        || key
            .bytes()
            .any(|b| b.is_ascii_digit() || matches!(b, b'@' | b'%' | b':') || !b.is_ascii())
}

/// [`KEY_CLASS`] bit of the bytes [`may_hold_value`] looks for.
const KEY_HOLD: u8 = 1;
/// [`KEY_CLASS`] bit of `k` and `K`.
const KEY_K: u8 = 2;

/// Per byte of an object key: [`KEY_HOLD`] for ASCII digits, `@`, `%`, `:` and
/// non-ASCII bytes; [`KEY_K`] for `k` and `K`.
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const KEY_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_digit() || matches!(c, b'@' | b'%' | b':') || !c.is_ascii() {
            KEY_HOLD
        } else if c == b'k' || c == b'K' {
            KEY_K
        } else {
            0
        };
        b += 1;
    }
    table
};

/// In one pass over `key`: [`may_hold_value`], and whether the key could normalise
/// ([`normalize_key`]) to `privatekey` or `privatekeyid` (ten bytes or more, one of
/// them a `k`).
fn key_flags(key: &str) -> (bool, bool) {
    let mut acc = 0u8;
    for b in key.bytes() {
        acc |= KEY_CLASS.get(usize::from(b)).copied().unwrap_or(KEY_HOLD);
    }
    (
        key.len() > 40 || acc & KEY_HOLD != 0,
        key.len() >= "privatekey".len() && acc & KEY_K != 0,
    )
}

/// Levels of [`Redactor::redact_value`] handled by recursion before switching to an
/// explicit stack.
const MAX_RECURSION: usize = 32;

/// Writes the decimal form of an integer (`-` first when `negative`) into the end of
/// `buf`, as `Display` does, and returns it.
fn format_integer(mut n: u64, negative: bool, buf: &mut [u8; 24]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            // `n % 10` is below 10.
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'-';
        }
    }
    buf.get(i..)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default()
}

/// Sorts findings and drops overlaps, keeping the higher-priority one (a URL password
/// over the `pass@host.com` e-mail look-alike inside it, a key over a phone number
/// inside it).
fn resolve_overlaps(mut found: Vec<Found>) -> Vec<Found> {
    found.sort_by(|x, y| x.start.cmp(&y.start).then(y.end.cmp(&x.end)));
    // In place: the first `kept` entries are the result so far, and entry `i >= kept`
    // is the next one to place.
    let mut kept = 0usize;
    for i in 0..found.len() {
        let (Some(f), last) = (found.get(i), kept.checked_sub(1).and_then(|k| found.get(k))) else {
            continue;
        };
        match last {
            Some(last) if f.start < last.end => {
                if f.priority > last.priority {
                    // The one before `last` ends at or before `last.start <= f.start`,
                    // so `f` cannot overlap it.
                    found.swap(kept - 1, i);
                }
            }
            _ => {
                found.swap(kept, i);
                kept += 1;
            }
        }
    }
    found.truncate(kept);
    found
}

// ---------------------------------------------------------------------------------
// Small text helpers. All offsets come from regex matches and are char boundaries;
// these still use checked access so a logic error cannot panic.
// ---------------------------------------------------------------------------------

fn byte_at(text: &str, i: usize) -> Option<u8> {
    text.as_bytes().get(i).copied()
}

fn prev_byte(text: &str, i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| byte_at(text, j))
}

/// Decodes up to `max` characters of standard base64 from the start of `s` (whole
/// quanta only); stops at the first character outside the alphabet.
fn base64_decode_prefix(s: &str, max: usize) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(max / 4 * 3);
    for quad in s.as_bytes().chunks_exact(4).take(max / 4) {
        let mut acc = 0u32;
        for &c in quad {
            let Some(v) = value(c) else {
                return out;
            };
            acc = (acc << 6) | v;
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..]);
    }
    out
}

/// Whether `value` starts with one of [`CREDENTIAL_LITERALS`]: what the first secret
/// prefilter would say about its start, without a search through all of it.
fn starts_with_credential_literal(value: &str) -> bool {
    value.as_bytes().first().is_some_and(|&b0| {
        CREDENTIAL_LITERALS
            .iter()
            .any(|l| l.as_bytes().first() == Some(&b0) && value.starts_with(l))
    })
}

/// Start of the identifier (`[A-Za-z0-9_.-]`) around `i`, or None if it starts more
/// than 80 bytes back.
fn identifier_start(text: &str, i: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut j = i;
    while j > 0 {
        match bytes.get(j - 1) {
            Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-') => j -= 1,
            _ => return Some(j),
        }
        if i - j > 80 {
            return None;
        }
    }
    Some(j)
}

/// Bytes of context kept before a digit run: enough for a label such as
/// `"social_security_number": "` or the letters of an IBAN before its first digits.
const REGION_BEFORE: usize = 64;
/// Bytes of context kept after a digit run: the rest of an IBAN or IPv6 address.
const REGION_AFTER: usize = 48;

const SWAR_ONES: u64 = 0x0101_0101_0101_0101;
const SWAR_LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// High bit set in each byte of `w` that equals `byte`, exactly (no false positives
/// from borrows, unlike the shorter "haszero" trick).
fn swar_eq_mask(w: u64, byte: u8) -> u64 {
    let x = w ^ (SWAR_ONES * u64::from(byte));
    !(((x & SWAR_LOW7).wrapping_add(SWAR_LOW7)) | x | SWAR_LOW7)
}

/// High bit set in each byte of `w` that is an ASCII digit, exactly.
fn swar_digit_mask(w: u64) -> u64 {
    // A byte is a digit when it is below 0x80, at least 0x30 and below 0x3A.
    let low = w & SWAR_LOW7;
    let ge_30 = low.wrapping_add(SWAR_ONES * (0x80 - 0x30));
    let lt_3a = !low.wrapping_add(SWAR_ONES * (0x80 - 0x3A));
    ge_30 & lt_3a & !w & (SWAR_ONES * 0x80)
}

/// Bits of [`ByteScan::rare`].
const HAS_TILDE: u8 = 1;
const HAS_AT: u8 = 2;
const HAS_PERCENT: u8 = 4;

const fn rare_bit(c: u8) -> u8 {
    match c {
        b'~' => HAS_TILDE,
        b'@' => HAS_AT,
        b'%' => HAS_PERCENT,
        _ => 0,
    }
}

/// What [`Redactor::prescan`] learnt about a text worth searching.
struct Prescan {
    scan: ByteScan,
    /// Whether a secret literal may occur.
    literal: bool,
}

/// What [`scan_bytes`] found.
struct ByteScan {
    /// Where a number-family pattern could match, sorted and merged.
    regions: Vec<(usize, usize)>,
    /// `HAS_*` bits.
    rare: u8,
}

/// Set in [`BYTE_CLASS`] for the bytes that can start a [`scan_bytes`] region: every
/// region comes from a digit run or from colons.
const NEEDS_SCAN: u8 = 0x80;

/// Per byte: [`NEEDS_SCAN`] for ASCII digits and `:`, and the [`rare_bit`] bits.
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_digit() || c == b':' {
            NEEDS_SCAN
        } else {
            rare_bit(c)
        };
        b += 1;
    }
    table
};

/// Strings up to this length go through [`quick_scan`] first.
const QUICK_SCAN_MAX_LEN: usize = 128;

/// [`scan_bytes`] for a short text with no digit and no `:`, where it would find no
/// region and only the rare bytes: one table lookup per byte. The same for an integer
/// shorter than eight bytes (digits and `-`): too short for a number-family region
/// (see [`DigitRun::is_region`]). None when the text is long or has a digit or a
/// colon otherwise (then `scan_bytes` must run).
fn quick_scan(bytes: &[u8]) -> Option<ByteScan> {
    if bytes.len() > QUICK_SCAN_MAX_LEN {
        return None;
    }
    let mut acc = 0u8;
    for &b in bytes {
        acc |= BYTE_CLASS
            .get(usize::from(b))
            .copied()
            .unwrap_or(NEEDS_SCAN);
    }
    quick_scan_from(bytes, acc)
}

/// [`quick_scan`], given the [`BYTE_CLASS`] bits of all of `bytes`.
fn quick_scan_from(bytes: &[u8], acc: u8) -> Option<ByteScan> {
    if bytes.len() > QUICK_SCAN_MAX_LEN {
        return None;
    }
    let short_integer =
        || bytes.len() < 8 && bytes.iter().all(|&b| b.is_ascii_digit() || b == b'-');
    (acc & NEEDS_SCAN == 0 || short_integer()).then(|| ByteScan {
        regions: Vec::new(),
        rare: acc & !NEEDS_SCAN,
    })
}

/// State of the digit run being read by [`scan_bytes`].
#[derive(Default, Clone, Copy)]
struct DigitRun {
    active: bool,
    start: usize,
    end: usize,
    digits: usize,
    groups: usize,
    first_group: usize,
    last_group: usize,
    dots: usize,
    gap: usize,
    only_date_seps: bool,
}

impl DigitRun {
    fn push(&mut self, i: usize, c: u8, bytes: &[u8], regions: &mut Vec<(usize, usize)>) {
        if c.is_ascii_digit() {
            if !self.active {
                *self = DigitRun {
                    active: true,
                    start: i,
                    groups: 1,
                    only_date_seps: true,
                    ..DigitRun::default()
                };
            } else if self.gap > 0 {
                if self.groups == 1 {
                    self.first_group = self.digits;
                }
                self.groups += 1;
                self.last_group = 0;
            }
            self.digits += 1;
            self.last_group += 1;
            self.gap = 0;
            self.end = i + 1;
        } else if self.active {
            if matches!(c, b' ' | b'.' | b'-' | b'(' | b')' | b'+' | b'/') {
                self.gap += 1;
                self.dots += usize::from(c == b'.');
                self.only_date_seps &= c == b'-' || c == b'/';
                if self.gap <= 2 {
                    return;
                }
            }
            self.finish(bytes, regions);
        }
    }

    fn first_group_len(&self) -> usize {
        if self.groups == 1 {
            self.digits
        } else {
            self.first_group
        }
    }

    fn finish(&mut self, bytes: &[u8], regions: &mut Vec<(usize, usize)>) {
        if !self.active {
            return;
        }
        self.active = false;
        // Every region needs two digits or more (see `is_region`); most runs in hex
        // and base64 text have one.
        if self.digits >= 2 && self.is_region(bytes) {
            regions.push(region_around(bytes, self.start, self.end));
        }
    }

    /// Whether the finished run could be (part of) a number-family match.
    fn is_region(&self, bytes: &[u8]) -> bool {
        let glued = |c: Option<&u8>| c.is_some_and(|&c| is_word_byte(c));
        let glued_start = glued(self.start.checked_sub(1).and_then(|j| bytes.get(j)));
        let glued_end = glued(bytes.get(self.end));
        let effective = if self.groups == 1 {
            // One group glued on both sides is part of a hex digest or an identifier.
            if glued_start && glued_end {
                0
            } else {
                self.digits
            }
        } else {
            self.digits
                - if glued_start { self.first_group } else { 0 }
                - if glued_end { self.last_group } else { 0 }
        };
        // `2024-05-01` and `01/05/2024`: dates are the most common 8-digit runs and no
        // number pattern matches them.
        let date = self.groups == 3 && self.digits == 8 && self.only_date_seps;
        (effective >= 8 && !date)
            || (self.dots >= 3 && self.groups >= 4)
            || (self.first_group_len() >= 2 && self.after_country(bytes))
    }

    /// The run starts right after two letters that start a word, like the `DE89` of
    /// an IBAN whose account part may hold few digits.
    fn after_country(&self, bytes: &[u8]) -> bool {
        let before = |k: usize| {
            self.start
                .checked_sub(k)
                .and_then(|j| bytes.get(j))
                .copied()
        };
        let (c1, c2) = (before(1).unwrap_or(0), before(2).unwrap_or(0));
        ((c1.is_ascii_uppercase() && c2.is_ascii_uppercase())
            || (c1.is_ascii_lowercase() && c2.is_ascii_lowercase()))
            && before(3).is_none_or(|c| !is_word_byte(c))
    }
}

/// Could the `::` at `k` be part of an IPv6 address? Rejects `std::io` and `Foo::bar`
/// (an identifier before or after), which is almost every `::` in code.
fn plausible_double_colon(bytes: &[u8], k: usize) -> bool {
    let mut left = k;
    while left > 0 && k - left < 4 && bytes.get(left - 1).is_some_and(u8::is_ascii_hexdigit) {
        left -= 1;
    }
    let before_ok = left == 0 || bytes.get(left - 1).is_none_or(|&c| !is_word_byte(c));
    let mut right = k + 2;
    while right < k + 6 && bytes.get(right).is_some_and(u8::is_ascii_hexdigit) {
        right += 1;
    }
    let after_ok = bytes.get(right).is_none_or(|&c| !is_word_byte(c));
    before_ok && after_ok && (left < k || right > k + 2)
}

/// The stretches of `bytes` where a number-family pattern could match. Every pattern of
/// that family needs either at least 8 digits in one run of digit groups (separated by
/// at most two of ` .-()+/`), four dot-separated groups (IPv4), or, for IPv6, a `::`
/// next to a hex group or seven colons within 48 bytes. Runs glued to letters on both
/// sides (digits inside a hex digest) do not count. The scan skips blocks of four words
/// that hold none of the bytes it acts on, handles the others eight bytes at a time and
/// looks at single bytes only in words that contain a digit, so the regex runs over a
/// small part of ordinary text.
///
/// The same pass notes which of the bytes that gate other families (`~`, `@`, `%`)
/// occur, so that the text is read once rather than once per byte searched for.
fn scan_bytes(bytes: &[u8]) -> ByteScan {
    let mut regions: Vec<(usize, usize)> = Vec::new();
    let mut rare = 0u8;
    let mut run = DigitRun::default();
    // Colons in the last six words, for the uncompressed IPv6 form.
    let mut colon_window = [0u32; 6];
    let mut colon_sum = 0u32;
    let mut prev_last_colon = false;
    let mut chunks = bytes.chunks_exact(8);
    // Where the next block of four words is tested; a short text is read word by word.
    let mut next_block = if bytes.len() < 2 * SCAN_BLOCK {
        usize::MAX
    } else {
        0
    };
    let mut n = 0;
    while let Some(chunk) = chunks.next() {
        let i = n * 8;
        let word = n;
        n += 1;
        if word >= next_block {
            // One comparison pass without branches (which the compiler turns into
            // SIMD) tells whether any of four words needs a closer look. In prose and
            // JSON most do not.
            match bytes
                .get(i..i + SCAN_BLOCK)
                .and_then(|b| <&[u8; SCAN_BLOCK]>::try_from(b).ok())
            {
                Some(block) if !block_needs_scan(block) => {
                    // What the code below does for words without a digit, colon or
                    // rare byte.
                    if colon_sum != 0 {
                        for k in word..word + SCAN_BLOCK / 8 {
                            if let Some(slot) = colon_window.get_mut(k % 6) {
                                colon_sum -= *slot;
                                *slot = 0;
                            }
                        }
                    }
                    prev_last_colon = false;
                    run.finish(bytes, &mut regions);
                    chunks.nth(SCAN_BLOCK / 8 - 2);
                    n += SCAN_BLOCK / 8 - 1;
                    continue;
                }
                Some(_) => next_block = word + SCAN_BLOCK / 8,
                None => next_block = usize::MAX,
            }
        }
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(chunk);
        if swar_eq_mask(w, b'~') | swar_eq_mask(w, b'@') | swar_eq_mask(w, b'%') != 0 {
            rare |= chunk.iter().fold(0, |acc, &c| acc | rare_bit(c));
        }
        let colons = swar_eq_mask(w, b':');
        // Most words have no colon: skip the population count (a bit-twiddling
        // sequence on CPUs without `popcnt`).
        let count = if colons == 0 { 0 } else { colons.count_ones() };
        if let Some(slot) = colon_window.get_mut(word % 6) {
            colon_sum = colon_sum - *slot + count;
            *slot = count;
        }
        if colons != 0 {
            // Adjacent colons inside the word, or across the previous word's end.
            let pairs = colons & (colons >> 8);
            let across = prev_last_colon && chunk[0] == b':';
            if pairs != 0 || across {
                let first = if across {
                    i - 1
                } else {
                    i + (pairs.trailing_zeros() / 8) as usize
                };
                if plausible_double_colon(bytes, first) {
                    regions.push(region_around(bytes, first, first + 2));
                }
            }
            if colon_sum >= 7 {
                regions.push(region_around(bytes, i.saturating_sub(40), i + 8));
            }
        }
        prev_last_colon = chunk[7] == b':';
        let digits = swar_digit_mask(w);
        if digits == 0 {
            // A run cannot continue across eight bytes without a digit.
            run.finish(bytes, &mut regions);
            continue;
        }
        // Outside a run, bytes before the first digit cannot matter.
        let from = if run.active {
            0
        } else {
            (digits.trailing_zeros() / 8) as usize
        };
        for (k, &c) in chunk.iter().enumerate().skip(from) {
            run.push(i + k, c, bytes, &mut regions);
        }
    }
    let tail_start = bytes.len() - chunks.remainder().len();
    for (k, &c) in bytes.iter().enumerate().skip(tail_start) {
        rare |= rare_bit(c);
        run.push(k, c, bytes, &mut regions);
        let pair = c == b':' && bytes.get(k + 1) == Some(&b':');
        let across = c == b':' && k == tail_start && prev_last_colon;
        if pair || across {
            let first = if across { k - 1 } else { k };
            if plausible_double_colon(bytes, first) {
                regions.push(region_around(bytes, first, first + 2));
            }
        }
    }
    run.finish(bytes, &mut regions);
    if regions.len() > 1 {
        regions.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(regions.len());
        for (s, e) in regions {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        return ByteScan {
            regions: merged,
            rare,
        };
    }
    ByteScan { regions, rare }
}

/// Bytes per block of [`scan_bytes`]'s quick test.
const SCAN_BLOCK: usize = 32;

/// Whether `block` holds a byte that [`scan_bytes`] acts on: an ASCII digit, `:`
/// (both in `0x30..=0x3A`), `~`, `@` or `%`. No early exit, so that it compiles to
/// vector compares.
fn block_needs_scan(block: &[u8; SCAN_BLOCK]) -> bool {
    let mut acc = 0u8;
    for &b in block {
        acc |= u8::from(b.wrapping_sub(b'0') <= b':' - b'0')
            | u8::from(b == b'~')
            | u8::from(b == b'@')
            | u8::from(b == b'%');
    }
    acc != 0
}

/// A region around `start..end` with context, ending where no number pattern can
/// continue (a byte that is neither a word byte nor a separator those patterns use).
fn region_around(bytes: &[u8], start: usize, end: usize) -> (usize, usize) {
    let mut s = start.saturating_sub(REGION_BEFORE);
    // Keep slices on char boundaries: step over UTF-8 continuation bytes.
    while s > 0 && bytes.get(s).is_some_and(|&c| (0x80..0xC0).contains(&c)) {
        s -= 1;
    }
    let mut e = (end + REGION_AFTER).min(bytes.len());
    // Prefer a byte no number pattern uses; in long prose without one, settle for any
    // non-word byte (a number starting near the cut has its own, overlapping region,
    // and overlapping regions are merged).
    let settle = e + 64;
    while let Some(&c) = bytes.get(e) {
        let class = REGION_END.get(usize::from(c)).copied().unwrap_or(0);
        if class == REGION_END_HARD || (class == REGION_END_SOFT && e >= settle) {
            break;
        }
        e += 1;
    }
    (s, e)
}

/// [`REGION_END`] of an ASCII byte that is neither a word byte nor a separator the
/// number patterns use: a region ends there.
const REGION_END_HARD: u8 = 1;
/// [`REGION_END`] of a separator the number patterns use (` .-()+/:`): a region only
/// ends there when it has run on long enough.
const REGION_END_SOFT: u8 = 2;

/// Per byte, how [`region_around`] treats it as the end of a region (0: never).
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const REGION_END: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        let word = c.is_ascii_alphanumeric() || c == b'_';
        let soft = matches!(c, b' ' | b'.' | b'-' | b'(' | b')' | b'+' | b'/' | b':');
        table[b] = if word {
            0
        } else if soft {
            REGION_END_SOFT
        } else {
            REGION_END_HARD
        };
        b += 1;
    }
    table
};

fn next_char_boundary(text: &str, i: usize) -> usize {
    let mut j = i + 1;
    while j < text.len() && !text.is_char_boundary(j) {
        j += 1;
    }
    j
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
}

fn has_upper(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_uppercase())
}

fn has_lower(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_lowercase())
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A token that could continue past `end` (the regex stopped at a length limit or the
/// text continues with token characters) is not the token the pattern describes.
fn token_end_ok(text: &str, end: usize, extra: &[u8]) -> bool {
    byte_at(text, end).is_none_or(|c| !(c.is_ascii_alphanumeric() || extra.contains(&c)))
}

/// True when the number at `start..end` is a fragment of a longer token: glued to
/// letters, or continued by `.`/`-`/`,`/`/` and more digits (a decimal, a version
/// string, a dashed order id like `ORD-2024-000123`, a date).
fn glued_number(text: &str, start: usize, end: usize) -> bool {
    let before = prev_byte(text, start);
    let before2 = start.checked_sub(1).and_then(|i| prev_byte(text, i));
    if before.is_some_and(is_word_byte) {
        return true;
    }
    // `ORD-2024-...`, `v.415`, `a/415`, but a comma only after a digit (`1,234`): in
    // `Smith,(617) 555-0123` it separates fields.
    match before {
        Some(b'.' | b'-' | b'/') if before2.is_some_and(|c| c.is_ascii_alphanumeric()) => {
            return true;
        }
        Some(b',') if before2.is_some_and(|c| c.is_ascii_digit()) => return true,
        _ => {}
    }
    if end > start {
        let after = byte_at(text, end);
        let after2 = byte_at(text, end + 1);
        if after.is_some_and(is_word_byte) {
            return true;
        }
        if matches!(after, Some(b'.' | b'-' | b',' | b'/'))
            && after2.is_some_and(|c| c.is_ascii_digit())
        {
            return true;
        }
    }
    false
}

/// A label like `phone` or `ssn` must start a word (or a camelCase part), so that
/// `hotel:` or `lessn=` are not labels.
fn label_start_ok(text: &str, start: usize) -> bool {
    let first_upper = byte_at(text, start).is_some_and(|c| c.is_ascii_uppercase());
    match prev_byte(text, start) {
        Some(c) if c.is_ascii_lowercase() => first_upper,
        Some(c) if c.is_ascii_uppercase() || c.is_ascii_digit() => false,
        _ => true,
    }
}

/// [`normalize_key`] into `buf`, or None when the result does not fit.
fn normalize_key_into<'b>(key: &str, buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    let mut n = 0;
    for b in key.bytes().filter(u8::is_ascii_alphanumeric) {
        *buf.get_mut(n)? = b.to_ascii_lowercase();
        n += 1;
    }
    buf.get(..n)
}

/// Lowercase ASCII letters and digits only: `X-Api-Key`, `api_key` and `apiKey` all
/// become `apikey`.
fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

const SECRET_KEY_EXACT: &[&str] = &[
    "pwd",
    "session",
    "sessionkey",
    "credential",
    "proxyauthorization",
    "setcookie",
    "connectionstring",
    "sastoken",
];

const SECRET_KEY_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "clientsecret",
    "credentials",
    "cookie",
    "sessionid",
    "sessiontoken",
    "authorization",
    "connectionstring",
];

/// Pagination cursors end in "token" but are not credentials.
const NOT_SECRET_SUFFIXES: &[&str] = &[
    "pagetoken",
    "nexttoken",
    "continuationtoken",
    "paginationtoken",
    "synctoken",
    "cursortoken",
    "resumetoken",
];

/// The last three bytes of `s` as a number (0 when shorter).
const fn tail3(s: &[u8]) -> u32 {
    match s {
        [.., a, b, c] => ((*a as u32) << 16) | ((*b as u32) << 8) | (*c as u32),
        _ => 0,
    }
}

/// [`tail3`] of every entry of [`SECRET_KEY_EXACT`] and [`SECRET_KEY_SUFFIXES`]: a
/// normalised key whose last three bytes are none of these is neither one of the exact
/// names nor ends with one of the suffixes, so [`is_secret_key`] is false for it.
/// Computed from the lists at compile time, so it cannot drift from them.
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const SECRET_KEY_TAILS: [u32; SECRET_KEY_EXACT.len() + SECRET_KEY_SUFFIXES.len()] = {
    let mut out = [0u32; SECRET_KEY_EXACT.len() + SECRET_KEY_SUFFIXES.len()];
    let mut i = 0;
    while i < SECRET_KEY_EXACT.len() {
        out[i] = tail3(SECRET_KEY_EXACT[i].as_bytes());
        i += 1;
    }
    let mut j = 0;
    while j < SECRET_KEY_SUFFIXES.len() {
        out[i + j] = tail3(SECRET_KEY_SUFFIXES[j].as_bytes());
        j += 1;
    }
    out
};

/// A 64-bit filter over [`SECRET_KEY_TAILS`]: a tail whose bit is clear is none of them.
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const SECRET_KEY_TAIL_BITS: u64 = {
    let mut bits = 0u64;
    let mut i = 0;
    while i < SECRET_KEY_TAILS.len() {
        bits |= 1 << tail_bit(SECRET_KEY_TAILS[i]);
        i += 1;
    }
    bits
};

/// The bit of a tail in [`SECRET_KEY_TAIL_BITS`].
const fn tail_bit(tail: u32) -> u32 {
    tail.wrapping_mul(0x9E37_79B1) >> 26
}

/// Whether `tail` is in [`SECRET_KEY_TAILS`].
fn is_secret_tail(tail: u32) -> bool {
    SECRET_KEY_TAIL_BITS & (1 << tail_bit(tail)) != 0 && SECRET_KEY_TAILS.contains(&tail)
}

/// Every built-in secret key name is at least this long (checked at compile time), so
/// [`SECRET_KEY_TAILS`] sees all of its tail.
// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const SECRET_KEY_MIN_LEN: usize = {
    let mut min = usize::MAX;
    let mut i = 0;
    while i < SECRET_KEY_EXACT.len() {
        if SECRET_KEY_EXACT[i].len() < min {
            min = SECRET_KEY_EXACT[i].len();
        }
        i += 1;
    }
    let mut j = 0;
    while j < SECRET_KEY_SUFFIXES.len() {
        if SECRET_KEY_SUFFIXES[j].len() < min {
            min = SECRET_KEY_SUFFIXES[j].len();
        }
        j += 1;
    }
    assert!(
        min >= 3,
        "tail3 needs built-in secret key names of 3 bytes or more"
    );
    min
};

/// [`tail3`] of [`normalize_key`]`(key)`, without normalising the whole key; None when
/// the normalised key would be shorter than three bytes (and so shorter than every
/// built-in name, see [`SECRET_KEY_MIN_LEN`]).
fn raw_tail3(key: &str) -> Option<u32> {
    // Most keys end in three letters or digits.
    if let Some(&[a, b, c]) = key.as_bytes().last_chunk::<3>()
        && a.is_ascii_alphanumeric()
        && b.is_ascii_alphanumeric()
        && c.is_ascii_alphanumeric()
    {
        let lower = |x: u8| u32::from(x.to_ascii_lowercase());
        return Some((lower(a) << 16) | (lower(b) << 8) | lower(c));
    }
    let mut tail = key
        .bytes()
        .rev()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| u32::from(b.to_ascii_lowercase()));
    let (c, b, a) = (tail.next()?, tail.next()?, tail.next()?);
    Some((a << 16) | (b << 8) | c)
}

fn is_secret_key(normalized: &[u8]) -> bool {
    // Most keys are not secret: rule them out with one lookup of their last three
    // bytes before comparing against every name.
    if normalized.len() < SECRET_KEY_MIN_LEN || !is_secret_tail(tail3(normalized)) {
        return false;
    }
    if NOT_SECRET_SUFFIXES
        .iter()
        .any(|s| normalized.ends_with(s.as_bytes()))
    {
        return false;
    }
    SECRET_KEY_EXACT.iter().any(|s| normalized == s.as_bytes())
        || SECRET_KEY_SUFFIXES
            .iter()
            .any(|s| normalized.ends_with(s.as_bytes()))
}

/// Values that stand for a secret rather than being one: environment and template
/// references, masks, and the usual "your key here" fillers.
fn is_placeholder(v: &str) -> bool {
    let v = v.trim();
    if v.is_empty() {
        return true;
    }
    // `contains("{{") || contains("}}")`, without setting up two substring searchers.
    let bytes = v.as_bytes();
    if v.starts_with(['$', '%', '<', '{', '['])
        || memchr::memchr2_iter(b'{', b'}', bytes).any(|i| bytes.get(i + 1) == bytes.get(i))
    {
        return true;
    }
    if v.chars()
        .all(|c| matches!(c, '*' | 'x' | 'X' | '.' | '•' | '#' | '?' | '-' | '_'))
    {
        return true;
    }
    // Compared ignoring ASCII case, without building a lowercase copy.
    let starts_ci = |p: &[u8]| {
        bytes
            .get(..p.len())
            .is_some_and(|b| b.eq_ignore_ascii_case(p))
    };
    if memchr::memchr2_iter(b'r', b'R', bytes).any(|i| {
        bytes
            .get(i..i + b"redacted".len())
            .is_some_and(|w| w.eq_ignore_ascii_case(b"redacted"))
    }) || starts_ci(b"your")
        || starts_ci(b"<your")
    {
        return true;
    }
    const WORDS: &[&str] = &[
        "null",
        "none",
        "nil",
        "undefined",
        "true",
        "false",
        "placeholder",
        "example",
        "todo",
        "tbd",
        "n/a",
        "na",
        "hidden",
        "masked",
        "secret",
        "password",
        "passwd",
        "token",
    ];
    WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
}

/// Literal stand-ins used in documentation URLs like `postgres://user:password@host`.
fn is_placeholder_word(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "pass" | "password" | "passwd" | "pwd" | "secret" | "pw"
    )
}

/// Words that follow a label in prose and code but are not the secret: `password:
/// incorrect`, `token: expired`, `password: str`, `token = None`.
fn is_code_word(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "is",
        "was",
        "the",
        "a",
        "an",
        "to",
        "for",
        "of",
        "and",
        "or",
        "not",
        "no",
        "yes",
        "on",
        "off",
        "in",
        "at",
        "by",
        "with",
        "from",
        "required",
        "invalid",
        "incorrect",
        "expired",
        "missing",
        "empty",
        "reset",
        "changed",
        "updated",
        "set",
        "unset",
        "ok",
        "success",
        "succeeded",
        "failed",
        "failure",
        "error",
        "mismatch",
        "too",
        "must",
        "should",
        "cannot",
        "can",
        "will",
        "has",
        "have",
        "been",
        "be",
        "please",
        "enter",
        "hidden",
        "masked",
        "protected",
        "none",
        "null",
        "nil",
        "undefined",
        "true",
        "false",
        "weak",
        "strong",
        "length",
        "policy",
        "hash",
        "hashed",
        "encrypted",
        "field",
        "value",
        "string",
        "str",
        "bytes",
        "int",
        "number",
        "bool",
        "boolean",
        "any",
        "unknown",
        "object",
        "optional",
        "option",
        "secretstring",
        "secretstr",
        "self",
        "this",
        "cls",
        "args",
        "kwargs",
        "env",
        "config",
        "settings",
        "params",
        "request",
        "response",
        "input",
        "getpass",
        "prompt",
        "default",
        "valid",
        "verified",
        "accepted",
        "rejected",
        "generated",
        "rotated",
        "revoked",
        "refreshed",
        "supplied",
        "provided",
        "used",
        "sent",
        "stored",
        "saved",
        "found",
        "needed",
        "pw",
        "pwd",
        "pass",
        "password",
        "passwd",
        "secret",
        "token",
        "key",
        "apikey",
        "api_key",
        "val",
        "creds",
        "credentials",
        "auth",
        "string;",
        "vec",
        "box",
        "cow",
        "arc",
        "rc",
        "result",
        "promise",
        "type",
        "struct",
        "class",
        "def",
        "fn",
        "let",
        "var",
        "const",
        "return",
        "expires",
        "expiry",
        "refresh",
        "header",
        "cookie",
        "authorization",
        "bearer",
        "basic",
        "new",
        "old",
        "current",
        "confirm",
        "repeat",
        "again",
        "here",
    ];
    let lower = v.to_ascii_lowercase();
    WORDS.contains(&lower.as_str())
}

/// `a.b.c` made of identifiers without digits: a field access (`config.api_key`,
/// `os.environ`), not a secret. Generated tokens with dots have digits.
fn is_ident_chain(v: &str) -> bool {
    v.contains('.')
        && !has_digit(v)
        && v.split('.').all(|part| {
            let mut bytes = part.bytes();
            bytes
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
}

/// A bare value that reads like a credential rather than a word: long enough and with
/// a digit or an inner capital.
fn looks_credential(v: &str) -> bool {
    v.len() >= 8
        && (has_digit(v) || v.bytes().skip(1).any(|b| b.is_ascii_uppercase()) && has_lower(v))
}

fn bearer_ok(v: &str) -> bool {
    v.len() >= 16
        && !is_placeholder(v)
        && (has_digit(v) || (has_upper(v) && has_lower(v)))
        && !is_ident_chain(v)
}

/// Decides whether the value after a secret label is a secret, from how it is written.
fn labelled_value_ok(text: &str, hit: &Hit<'_>, key: &str, value: &str) -> bool {
    let (a, b) = hit.span();
    if is_placeholder(value) || value.starts_with("-----") {
        return false;
    }
    if value.eq_ignore_ascii_case(key) {
        return false;
    }
    let key_end = hit.key.map_or(a, |(_, ke)| ke);
    // `"nextPageToken": "..."`: the whole identifier decides, not just its last word.
    let identifier = normalize_key(text.get(hit.start..key_end).unwrap_or_default());
    if NOT_SECRET_SUFFIXES.iter().any(|s| identifier.ends_with(s)) {
        return false;
    }
    let between = text.get(key_end..a).unwrap_or_default();
    if between == ">" {
        // `<password>x</password>`: only as an element.
        return prev_byte(text, hit.start) == Some(b'<');
    }
    // `PWD=/home/agent`: the shell's working directory, not ODBC's password.
    if key.eq_ignore_ascii_case("pwd")
        && (value.starts_with(['/', '~', '.']) || value.contains(":\\"))
    {
        return false;
    }
    let quoted = matches!(prev_byte(text, a), Some(b'"' | b'\''));
    if quoted {
        return !value.trim().is_empty();
    }
    // A bare value.
    if value.starts_with(['=', ':', '>', '!', '?']) {
        // `password == x`, `token::Kind`, `password ?: x`
        return false;
    }
    if matches!(byte_at(text, b), Some(b'(' | b'[' | b'<' | b'{')) {
        // A call, an index or a generic type: `password = getpass()`,
        // `secret: Option<String>`.
        return false;
    }
    if is_ident_chain(value) || is_code_word(value) {
        return false;
    }
    // `GOOGLE_APPLICATION_CREDENTIALS=/secrets/sa.json`: where the secret is, not it.
    if value.starts_with(['/', '~']) || value.starts_with("./") || value.starts_with("../") {
        return false;
    }
    // `password=db_password`, `token=ACCESS_TOKEN`: a variable, not a value.
    if value.contains('_') && value.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_') {
        return false;
    }
    let spaced = between.ends_with([' ', '\t']);
    let strong = key.to_ascii_lowercase().contains("pass");
    if strong {
        return true;
    }
    // `token: expired` in a log line or `token = tok` in code: a weak label with
    // spacing needs a value that looks generated.
    !spaced || looks_credential(value)
}

/// File extensions that end an `x@y.ext` which is a file name rather than an address.
/// Lowercase ASCII, at most [`FILE_EXT_MAX`] bytes.
const FILE_EXTS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tiff", "pdf", "txt", "log", "json",
    "yaml", "yml", "toml", "lock", "js", "ts", "tsx", "jsx", "css", "html", "map",
];

const FILE_EXT_MAX: usize = 4;

/// Packs up to [`FILE_EXT_MAX`] bytes, lowercased, and their count into one number: two
/// strings of at most that length pack equally exactly when they are equal ignoring
/// ASCII case.
const fn pack_ext(s: &[u8]) -> u64 {
    let mut packed = s.len() as u64;
    let mut rest = s;
    let mut i = 0;
    while let [first, tail @ ..] = rest {
        if i >= FILE_EXT_MAX {
            break;
        }
        packed |= (first.to_ascii_lowercase() as u64) << (8 * (i + 1));
        rest = tail;
        i += 1;
    }
    packed
}

// Evaluated at compile time: an index out of bounds fails the build, not a run.
#[allow(clippy::indexing_slicing)]
const FILE_EXTS_PACKED: [u64; FILE_EXTS.len()] = {
    let mut out = [0u64; FILE_EXTS.len()];
    let mut i = 0;
    while i < FILE_EXTS.len() {
        assert!(
            FILE_EXTS[i].len() <= FILE_EXT_MAX,
            "extension too long to pack"
        );
        out[i] = pack_ext(FILE_EXTS[i].as_bytes());
        i += 1;
    }
    out
};

/// `FILE_EXTS` contains `tld` lowercased: one packed comparison per extension.
fn is_file_ext(tld: &str) -> bool {
    tld.len() <= FILE_EXT_MAX && FILE_EXTS_PACKED.contains(&pack_ext(tld.as_bytes()))
}

fn validate_email(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let value = text.get(start..end)?;
    let (at, at_len) = match value.find('@') {
        Some(at) => (at, 1),
        None => (value.find("%40")?, 3),
    };
    let local = value.get(..at)?;
    let domain = value.get(at + at_len..)?;
    // `https://user@host/...`: the user part of a URL, not a mailbox.
    if start >= 3 && text.get(start - 3..start) == Some("://") {
        return None;
    }
    // The regex stops before a character it cannot take; an ASCII letter or digit
    // there means the address runs on into something else. (Other scripts can follow
    // an address directly: `jane@acme.io日本`.)
    if byte_at(text, end).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    if is_ssh_target(text, start) {
        return None;
    }
    // A leading dot belongs to the text before (`see.jane@x.io` is rare; `...jane@x.io`
    // is an ellipsis), so trim it rather than reject the address.
    let trimmed = local.trim_start_matches('.');
    let start = start + (local.len() - trimmed.len());
    // `contains("..")` without setting up a substring searcher.
    if trimmed.is_empty()
        || trimmed.ends_with('.')
        || trimmed.as_bytes().windows(2).any(|w| w == b"..")
    {
        return None;
    }
    let tld = domain.rsplit('.').next()?;
    // `icon@2x.png`: a retina image name, not an address.
    if is_file_ext(tld) {
        return None;
    }
    // `git@github.com:org/repo.git` and `deploy@host.example.com:/srv`: scp-style
    // remotes name an account on a host, not a mailbox.
    if byte_at(text, end) == Some(b':')
        && byte_at(text, end + 1)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'/' || c == b'~')
    {
        return None;
    }
    Some((start, end))
}

/// True when `user@host` at `start` is the target of an `ssh`-like command on the
/// same line: an account on a host, not a mailbox.
fn is_ssh_target(text: &str, start: usize) -> bool {
    let lo = floor_char_boundary(text, start.saturating_sub(200));
    let Some(before) = text.get(lo..start) else {
        return false;
    };
    // The last of `\n`, `;`, `|` and `&`, found with the SIMD searchers.
    let bytes = before.as_bytes();
    let sep = memchr::memrchr3(b'\n', b';', b'|', bytes).max(memchr::memrchr(b'&', bytes));
    let command = match sep {
        Some(i) => before.get(i + 1..).unwrap_or_default(),
        None => before,
    };
    // Every command name below contains one of these; most text has none. Only the
    // positions of their first bytes are checked.
    if !has_command_trigram(command.as_bytes()) {
        return false;
    }
    command.split_whitespace().any(|word| {
        let name = word.rsplit('/').next().unwrap_or_default();
        matches!(
            name,
            "ssh" | "scp" | "sftp" | "rsync" | "mosh" | "autossh" | "ssh-copy-id" | "sshpass"
        )
    })
}

/// Whether `cmd` contains `ssh`, `scp`, `sft`, `rsy` or `mos`. The positions of `s`,
/// `r` and `m` are found eight bytes at a time (prose has many, too many for a
/// `memchr` search per hit), and only there is the rest compared.
fn has_command_trigram(cmd: &[u8]) -> bool {
    let at = |i: usize| {
        matches!(
            cmd.get(i..i + 3),
            Some(
                [b's', b's', b'h']
                    | [b's', b'c', b'p']
                    | [b's', b'f', b't']
                    | [b'r', b's', b'y']
                    | [b'm', b'o', b's']
            )
        )
    };
    let mut chunks = cmd.chunks_exact(8);
    for (n, chunk) in chunks.by_ref().enumerate() {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(chunk);
        let mut firsts = swar_eq_mask(w, b's') | swar_eq_mask(w, b'r') | swar_eq_mask(w, b'm');
        while firsts != 0 {
            if at(n * 8 + (firsts.trailing_zeros() / 8) as usize) {
                return true;
            }
            firsts &= firsts - 1;
        }
    }
    let tail = cmd.len() - chunks.remainder().len();
    (tail..cmd.len()).any(at)
}

/// ISO 13616 lengths per country.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// Returns the byte length of the IBAN at the start of `cand`: the country's length in
/// characters, possibly printed in groups of four, with a valid mod-97 check.
fn validate_iban(cand: &str) -> Option<usize> {
    let country = cand.get(..2)?.to_ascii_uppercase();
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, l)| *l)?;
    let bytes = cand.as_bytes();
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut end = 0;
    let mut spaced = false;
    for (i, &c) in bytes.iter().enumerate() {
        if n == len {
            break;
        }
        if c == b' ' {
            // Printed form: a space after every group of four.
            if !n.is_multiple_of(4) {
                return None;
            }
            spaced = true;
            continue;
        }
        *chars.get_mut(n)? = c.to_ascii_uppercase();
        n += 1;
        end = i + 1;
    }
    if n != len {
        return None;
    }
    match bytes.get(end) {
        None => {}
        // The candidate continues: only acceptable at a group boundary of the printed
        // form (the regex may have swallowed a following word like ` EUR`).
        Some(b' ') if spaced => {}
        Some(_) => return None,
    }
    let rearranged = chars.get(4..len)?.iter().chain(chars.get(..4)?.iter());
    let mut rem: u32 = 0;
    for &c in rearranged {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            _ => return None,
        };
    }
    (rem == 1).then_some(end)
}

fn ssn_ok(v: &str) -> bool {
    let digits: Vec<u32> = v
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .collect();
    let [a1, a2, a3, g1, g2, s1, s2, s3, s4] = digits.as_slice() else {
        return false;
    };
    let area = a1 * 100 + a2 * 10 + a3;
    let group = g1 * 10 + g2;
    let serial = s1 * 1000 + s2 * 100 + s3 * 10 + s4;
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Issuer prefixes (IIN ranges) and the lengths each issuer uses.
fn card_brand_ok(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| {
        d.iter()
            .take(k)
            .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
    };
    let (p2, p3, p4) = (prefix(2), prefix(3), prefix(4));
    let long = (16..=19).contains(&n);
    match d.first() {
        Some(4) => n == 13 || n == 16 || n == 19, // Visa
        Some(5) => {
            ((51..=55).contains(&p2) && n == 16) // Mastercard
                || ((p2 == 50 || (56..=58).contains(&p2)) && (13..=19).contains(&n)) // Maestro
        }
        Some(2) => {
            ((2221..=2720).contains(&p4) && n == 16) // Mastercard 2-series
                || ((2200..=2204).contains(&p4) && long) // Mir
        }
        Some(3) => {
            ((p2 == 34 || p2 == 37) && n == 15) // Amex
                || ((3528..=3589).contains(&p4) && long) // JCB
                || (((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&n)) // Diners
        }
        Some(6) => {
            ((p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || p2 == 62) && long) // Discover, UnionPay
                || ((p2 == 63 || p2 == 67) && (13..=19).contains(&n)) // Maestro
        }
        _ => false,
    }
}

/// Returns the byte length of the card number at the start of `cand`. Separators must
/// be consistent; if the whole candidate fails, trailing groups are dropped so that a
/// number followed by another figure (`4111 1111 1111 1111 2029`) is still found.
fn validate_card(cand: &str) -> Option<usize> {
    let mut digits = [0u8; 19];
    let mut n = 0;
    let mut sep: Option<u8> = None;
    // (byte end, digits so far) at each group end
    let mut groups: Vec<(usize, usize)> = Vec::with_capacity(6);
    let mut group_len = 0;
    for (i, c) in cand.bytes().enumerate() {
        if c.is_ascii_digit() {
            *digits.get_mut(n)? = c - b'0';
            n += 1;
            group_len += 1;
        } else {
            if sep.is_some_and(|s| s != c) || group_len == 0 {
                return None;
            }
            sep = Some(c);
            groups.push((i, n));
            group_len = 0;
        }
    }
    groups.push((cand.len(), n));
    let separated = groups.len() > 1;
    if separated {
        // Printed card numbers use groups of 4 (or Amex/Diners 4-6-5, 4-6-4); a group
        // of 1 or 2 digits means this is some other figure.
        let mut prev = 0;
        for &(_, upto) in &groups {
            if !(3..=6).contains(&(upto - prev)) {
                return None;
            }
            prev = upto;
        }
    }
    for &(end, count) in groups.iter().rev() {
        if count < 13 {
            break;
        }
        let d = digits.get(..count)?;
        if luhn(d) && card_brand_ok(d) {
            return Some(end);
        }
    }
    None
}

fn validate_ipv6(text: &str, start: usize, end: usize) -> bool {
    let Some(cand) = text.get(start..end) else {
        return false;
    };
    if cand == "::" {
        return false;
    }
    if prev_byte(text, start).is_some_and(|c| is_word_byte(c) || c == b':' || c == b'.') {
        return false;
    }
    if byte_at(text, end).is_some_and(|c| is_word_byte(c) || c == b':') {
        return false;
    }
    if Ipv6Addr::from_str(cand).is_err() {
        return false;
    }
    let groups: Vec<&str> = cand.split(':').filter(|g| !g.is_empty()).collect();
    if cand.contains("::") {
        // `a::b`, `dead::beef` and similar short forms are far more often code than
        // addresses; `::1` and `fe80::1` have digits.
        groups.len() > 2 || has_digit(cand)
    } else {
        // Eight two-digit groups is an EUI-64/MAC-style identifier.
        !groups.iter().all(|g| g.len() == 2)
    }
}

fn validate_ipv4(text: &str, start: usize, end: usize) -> bool {
    if prev_byte(text, start) == Some(b'.') {
        return false;
    }
    if byte_at(text, end) == Some(b'.')
        && byte_at(text, end + 1).is_some_and(|c| c.is_ascii_digit())
    {
        // An OID or a longer dotted version.
        return false;
    }
    // `version 1.2.3.4`, `v=10.0.0.1`: a four-part version number.
    let before = text.get(floor_char_boundary(text, start.saturating_sub(24))..start);
    let word = before
        .unwrap_or_default()
        .trim_end_matches([' ', '=', ':', '"', '\'', '\t'])
        .rsplit(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    // ... or a section number: `section 4.2.1.3`, `§ 3.1.4.1`.
    if matches!(
        word.as_str(),
        "version"
            | "ver"
            | "v"
            | "build"
            | "release"
            | "firmware"
            | "fw"
            | "section"
            | "sec"
            | "chapter"
            | "clause"
            | "rule"
            | "step"
            | "item"
            | "paragraph"
            | "para"
            | "appendix"
            | "figure"
            | "fig"
            | "table"
            | "article"
            | "art"
    ) || before.unwrap_or_default().trim_end().ends_with('§')
    {
        return false;
    }
    // `1.0.0.0-beta`: a version with a pre-release tag.
    if byte_at(text, end) == Some(b'-')
        && byte_at(text, end + 1).is_some_and(|c| c.is_ascii_alphabetic())
    {
        return false;
    }
    true
}

/// Returns the byte length of an international number: after `+`, `(+..)` or `00`, 8
/// to 15 digits, exactly 11 for country code 1. Trailing groups are dropped until it
/// fits.
fn validate_intl_phone(cand: &str) -> Option<usize> {
    let bytes = cand.as_bytes();
    let body_start = if cand.starts_with("00") { 2 } else { 0 };
    // byte end and digit count at each group end
    let mut ends: Vec<(usize, usize)> = Vec::with_capacity(8);
    let mut n = 0;
    let mut in_group = false;
    for (i, &c) in bytes.iter().enumerate().skip(body_start) {
        if c.is_ascii_digit() {
            n += 1;
            in_group = true;
        } else if in_group && c != b')' {
            ends.push((i, n));
            in_group = false;
        }
    }
    if in_group || bytes.last() == Some(&b')') {
        ends.push((cand.len(), n));
    }
    let country_first = bytes
        .iter()
        .skip(body_start)
        .find(|c| c.is_ascii_digit())
        .copied();
    let min = if body_start > 0 { 10 } else { 8 };
    for &(end, count) in ends.iter().rev() {
        let ok = if country_first == Some(b'1') {
            count == 11 && nanp_ok(cand.get(body_start..end).unwrap_or_default())
        } else {
            (min..=15).contains(&count)
        };
        if ok {
            return Some(end);
        }
    }
    None
}

/// North American numbering plan: area code and exchange both start with 2-9.
fn nanp_ok(v: &str) -> bool {
    // The digits, on the stack: only 10 or 11 of them are accepted.
    let mut buf = [0u8; 11];
    let mut n = 0;
    for b in v.bytes().filter(u8::is_ascii_digit) {
        if let Some(slot) = buf.get_mut(n) {
            *slot = b;
        }
        n += 1;
    }
    let digits = buf.get(..n.min(buf.len())).unwrap_or_default();
    let d = match n {
        10 => digits,
        11 if digits.first() == Some(&b'1') => digits.get(1..).unwrap_or_default(),
        _ => return false,
    };
    matches!(d.first(), Some(b'2'..=b'9')) && matches!(d.get(3), Some(b'2'..=b'9'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new(RedactionConfig::default()).unwrap()
    }

    fn kinds(r: &Redactor, s: &str) -> Vec<(String, String)> {
        r.find(s)
            .into_iter()
            .map(|f| (f.kind.as_str().to_owned(), s[f.range].to_owned()))
            .collect()
    }

    #[test]
    fn report_text_is_the_canonical_form_of_its_json() {
        let kinds = [
            vec![],
            vec![
                RedactionKind::Email,
                RedactionKind::Jwt,
                RedactionKind::Email,
            ],
            vec![
                RedactionKind::Custom("zz".into()),
                RedactionKind::Custom("\u{e000}x".into()),
                RedactionKind::Custom("\u{1f600}".into()),
                RedactionKind::Custom("quote\"d".into()),
                RedactionKind::Phone,
            ],
        ];
        for list in kinds {
            let mut report = RedactionReport::new();
            for _ in 0..3 {
                for k in &list {
                    report.record(k);
                }
            }
            let mut text = Vec::new();
            report.write_canonical(&mut text);
            assert_eq!(text, crate::jcs::canonicalize(&report.to_json()).unwrap());
        }
    }

    #[test]
    fn redactor_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Redactor>();
    }

    #[test]
    fn clean_text_is_borrowed() {
        let r = redactor();
        let mut report = RedactionReport::default();
        let s = r#"{"query":"SELECT id FROM orders WHERE id = 'ORD-2024-000123'","limit":100}"#;
        assert!(matches!(r.redact_str(s, &mut report), Cow::Borrowed(_)));
        assert!(report.is_empty());
        assert_eq!(report.total(), 0);
    }

    #[test]
    fn unkeyed_tokens() {
        let r = redactor();
        let mut report = RedactionReport::default();
        let out = r.redact_str(
            "mail jane.doe@acme.io, card 4111 1111 1111 1111",
            &mut report,
        );
        assert_eq!(out, "mail [REDACTED:EMAIL], card [REDACTED:PAYMENT_CARD]");
        assert_eq!(report.get("email"), 1);
        assert_eq!(report.get("payment_card"), 1);
        assert_eq!(report.total(), 2);
    }

    #[test]
    fn keyed_tokens_correlate() {
        let r = Redactor::new(RedactionConfig {
            hmac_key: Some(b"tenant-key".to_vec()),
            ..Default::default()
        })
        .unwrap();
        let mut report = RedactionReport::default();
        let out = r.redact_str("a jane@acme.io b jane@acme.io c bob@acme.io", &mut report);
        let tokens: Vec<&str> = out.split(' ').filter(|t| t.starts_with('<')).collect();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens[0], tokens[1]);
        assert_ne!(tokens[0], tokens[2]);
        assert!(tokens[0].starts_with("<email:") && tokens[0].len() == "<email:12345678>".len());
        // Matches an independent HMAC computation.
        let mut mac = HmacSha256::new_from_slice(b"tenant-key").unwrap();
        mac.update(b"jane@acme.io");
        let expect = hex::encode(&mac.finalize().into_bytes()[..4]);
        assert_eq!(tokens[0], format!("<email:{expect}>"));
    }

    #[test]
    fn allow_list() {
        let r = Redactor::new(RedactionConfig {
            allow_values: vec!["support@acme.io".into()],
            allow_patterns: vec![r"10\.0\.\d+\.\d+".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            kinds(
                &r,
                "write to support@acme.io or jane@acme.io from 10.0.3.4 or 8.8.8.8"
            ),
            vec![
                ("email".into(), "jane@acme.io".into()),
                ("ipv4".into(), "8.8.8.8".into())
            ]
        );
    }

    #[test]
    fn custom_patterns_and_errors() {
        let r = Redactor::new(RedactionConfig {
            custom_patterns: vec![("employee_id".into(), r"\bEMP-\d{6}\b".into())],
            ..Default::default()
        })
        .unwrap();
        let mut report = RedactionReport::default();
        let out = r.redact_str("assigned to EMP-004211 today", &mut report);
        assert_eq!(out, "assigned to [REDACTED:EMPLOYEE_ID] today");
        assert_eq!(report.get("employee_id"), 1);

        let err = Redactor::new(RedactionConfig {
            custom_patterns: vec![("broken".into(), r"(unclosed".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
        let err = Redactor::new(RedactionConfig {
            custom_patterns: vec![("email".into(), r"x".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, RedactError::InvalidCustomName { .. }));
        let err = Redactor::new(RedactionConfig {
            custom_patterns: vec![("a:b".into(), r"x".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, RedactError::InvalidCustomName { .. }));
        let err = Redactor::new(RedactionConfig {
            allow_patterns: vec!["[".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains('['), "{err}");
    }

    #[test]
    fn redact_value_walks_and_redacts_secret_keys() {
        let r = Redactor::new(RedactionConfig {
            secret_keys: vec!["otp".into()],
            ..Default::default()
        })
        .unwrap();
        let mut v = json!({
            "tool": "http_request",
            "args": {
                "url": "https://api.example.com/v1/users?limit=10",
                "headers": {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "X-Request-Id": "550e8400-e29b-41d4-a716-446655440000"},
                "body": {"email": "jane.doe@acme.io", "password": "hunter2", "remember": true, "token": null, "max_tokens": 1024, "OTP": 123456},
                "card": 4111111111111111u64,
                "jane@acme.io": "key is an address",
            },
            "credentials": {"user": "x", "pass": "y"},
            "sessionId": "abc",
        });
        let mut report = RedactionReport::default();
        r.redact_value(&mut v, &mut report);
        let args = &v["args"];
        assert_eq!(args["headers"]["Authorization"], "[REDACTED:JWT]");
        assert_eq!(
            args["headers"]["X-Request-Id"],
            "550e8400-e29b-41d4-a716-446655440000"
        );
        assert_eq!(args["url"], "https://api.example.com/v1/users?limit=10");
        assert_eq!(args["body"]["email"], "[REDACTED:EMAIL]");
        assert_eq!(args["body"]["password"], "[REDACTED:SECRET_VALUE]");
        assert_eq!(args["body"]["remember"], true);
        assert_eq!(args["body"]["token"], Value::Null);
        assert_eq!(args["body"]["max_tokens"], 1024);
        assert_eq!(args["body"]["OTP"], "[REDACTED:SECRET_VALUE]");
        assert_eq!(args["card"], "[REDACTED:PAYMENT_CARD]");
        assert_eq!(args["[REDACTED:EMAIL]"], "key is an address");
        assert_eq!(v["credentials"], "[REDACTED:SECRET_VALUE]");
        assert_eq!(v["sessionId"], "[REDACTED:SECRET_VALUE]");
        assert_eq!(report.get("jwt"), 1);
        assert_eq!(report.get("email"), 2);
        assert_eq!(report.get("secret_value"), 4);
        assert_eq!(report.get("payment_card"), 1);
    }

    /// Walks with a memo give what fresh walks give, value and counts, the
    /// first time a string is met and when it comes again, under the default
    /// settings, keyed tokens, and custom patterns with an allow-list.
    #[test]
    fn a_memo_changes_nothing_but_the_work() {
        let configs = [
            RedactionConfig::default(),
            RedactionConfig {
                hmac_key: Some(b"tenant-key".to_vec()),
                ..Default::default()
            },
            RedactionConfig {
                custom_patterns: vec![("order".into(), r"\bORD-\d{6}\b".into())],
                allow_values: vec!["jane.doe@example.com".into()],
                allow_patterns: vec![r"^10\.".into()],
                secret_keys: vec!["otp".into()],
                ..Default::default()
            },
        ];
        let texts = fast_path_inputs();
        let values: Vec<Value> = texts
            .chunks(3)
            .enumerate()
            .map(|(i, c)| match i % 3 {
                0 => json!({"text": c[0], "more": c.get(1..).unwrap_or_default()}),
                1 => json!([c, {"password": c[0], "note": c.get(1)}]),
                _ => json!({"x": {"y": {"z": c}}, "ORD-123456 for jane@acme.io": c[0]}),
            })
            .collect();
        for config in configs {
            let r = Redactor::new(config).unwrap();
            let mut memo = RedactionMemo::new();
            let mut hits = 0usize;
            for round in 0..2 {
                for v in &values {
                    let (mut plain, mut memoized) = (v.clone(), v.clone());
                    let (mut a, mut b) = (RedactionReport::new(), RedactionReport::new());
                    r.redact_value(&mut plain, &mut a);
                    let before = memo.len();
                    r.redact_value_memo(&mut memoized, &mut b, &mut memo);
                    hits += usize::from(round == 1 && memo.len() == before);
                    assert_eq!(plain, memoized, "{v}");
                    assert_eq!(a, b, "{v}");
                }
            }
            assert!(memo.len() > 100 && hits > 100, "{memo:?}, {hits} hits");
        }
    }

    #[test]
    fn a_memo_stays_bounded_and_compares_whole_strings() {
        let r = redactor();
        let mut memo = RedactionMemo::new();
        let mut report = RedactionReport::new();
        for i in 0..20_000u32 {
            let mut v = json!(format!(
                "order {i} for user{i}@example.com {}",
                "x".repeat(300)
            ));
            r.redact_value_memo(&mut v, &mut report, &mut memo);
            assert!(memo.len() <= MEMO_SLOTS && memo.bytes <= MEMO_MAX_BYTES);
        }
        assert_eq!(report.get("email"), 20_000);
        // Past the size limit a string is searched, not remembered.
        let mut memo = RedactionMemo::new();
        let mut big = json!(format!("mail jane@acme.io {}", "y".repeat(MEMO_MAX_STRING)));
        r.redact_value_memo(&mut big, &mut report, &mut memo);
        assert!(
            big.as_str()
                .unwrap()
                .starts_with("mail [REDACTED:EMAIL] yyy")
        );
        assert!(memo.is_empty());
        // An entry answers only for its own text, whatever the hash says.
        memo.put(7, "call 555-0100", Some("x"), vec![RedactionKind::Phone]);
        assert!(memo.get(7, "call 555-0100").is_some());
        assert!(memo.get(7, "call 555-0199").is_none());
        assert!(memo.get(7 + MEMO_SLOTS as u64, "call 555-0100").is_none());
    }

    #[test]
    fn service_account_json() {
        let r = redactor();
        let mut v = json!({
            "type": "service_account",
            "project_id": "demo-project",
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n",
            "client_email": "svc@demo-project.iam.gserviceaccount.com",
        });
        let mut report = RedactionReport::default();
        r.redact_value(&mut v, &mut report);
        assert_eq!(v["private_key"], "[REDACTED:GCP_KEY]");
        assert_eq!(v["private_key_id"], "[REDACTED:GCP_KEY]");
        assert_eq!(v["project_id"], "demo-project");
        assert_eq!(report.get("gcp_key"), 2);
    }

    #[test]
    fn deep_values_do_not_overflow() {
        let r = redactor();
        let mut v = json!("jane@acme.io");
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        let mut report = RedactionReport::default();
        r.redact_value(&mut v, &mut report);
        assert_eq!(report.get("email"), 1);
        // Drop iteratively too: the default recursive drop would overflow the stack.
        let mut cur = v;
        while let Value::Array(mut items) = cur {
            cur = items.pop().unwrap_or(Value::Null);
        }
        assert_eq!(cur, "[REDACTED:EMAIL]");
    }

    #[test]
    fn examples_per_kind() {
        let r = redactor();
        let cases: &[(&str, &str, &str)] = &[
            ("ping +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
            ("call (415) 555-0132", "phone", "(415) 555-0132"),
            ("call 415-555-0132.", "phone", "415-555-0132"),
            ("ssn 123-45-6789", "us_ssn", "123-45-6789"),
            (
                "iban DE89 3704 0044 0532 0130 00 EUR",
                "iban",
                "DE89 3704 0044 0532 0130 00",
            ),
            (
                "iban GB29NWBK60161331926819",
                "iban",
                "GB29NWBK60161331926819",
            ),
            ("from 127.0.0.1:8080", "ipv4", "127.0.0.1"),
            (
                "addr [2001:db8::8a2e:370:7334]:443",
                "ipv6",
                "2001:db8::8a2e:370:7334",
            ),
            (
                "dsn=postgres://app:s3cr3t@db.internal:5432/app",
                "url_password",
                "s3cr3t",
            ),
            (
                "AWS_ACCESS_KEY_ID=AKIAZ7XQ3N4R5T6Y7U8I",
                "aws_key",
                "AKIAZ7XQ3N4R5T6Y7U8I",
            ),
        ];
        for (text, kind, value) in cases {
            assert_eq!(
                kinds(&r, text),
                vec![(kind.to_string(), value.to_string())],
                "{text}"
            );
        }
        for clean in [
            "999-12-3456",
            "version 1.2.3.4",
            "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "id 4111111111111112",
            "std::io::Result",
            "at 2024-05-01T10:22:33.123+02:00",
            "v2.3.1-rc.1",
        ] {
            assert_eq!(kinds(&r, clean), vec![], "{clean}");
        }
    }

    #[test]
    fn multibyte_text_around_matches() {
        let r = redactor();
        let mut report = RedactionReport::default();
        for text in [
            "é4111 1111 1111 1111é",
            "日本jane@acme.io日本",
            "—+44 20 7946 0958—",
            "🔑ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5🔑",
            "password=пароль123 and token: ключ",
            "12🙂34 56🙂78 90🙂12 34",
            "::1🙂::🙂fe80::1",
            "\u{0}\u{7f}\u{80}\u{10ffff}4111111111111111",
        ] {
            let out = r.redact_str(text, &mut report);
            // Every replacement lands on char boundaries, or building `out` would
            // have failed; the untouched parts survive.
            assert!(out.chars().count() > 0, "{text}");
        }
        assert_eq!(
            kinds(&r, "日本jane@acme.io日本"),
            vec![("email".into(), "jane@acme.io".into())]
        );
        assert_eq!(
            kinds(&r, "é4111 1111 1111 1111é"),
            vec![("payment_card".into(), "4111 1111 1111 1111".into())]
        );
    }

    /// Inputs built to trip rescanning loops. A quadratic path would take minutes here.
    #[test]
    fn adversarial_inputs_stay_linear() {
        let r = redactor();
        let mut report = RedactionReport::default();
        // Smaller in debug builds, where the regex engine is much slower; still large
        // enough that a quadratic path would show.
        let n = if cfg!(debug_assertions) {
            5_000
        } else {
            20_000
        };
        let inputs = [
            "curl ".repeat(n),
            "mysql -u root ".repeat(n),
            "Cookie: abc ".repeat(n),
            "token=$".repeat(n),
            "password: \"x ".repeat(n),
            "Authorization: Basic ".repeat(n),
            format!("-----BEGIN PRIVATE KEY-----\n{}", "word ".repeat(n)),
            "password: incorrect ".repeat(n),
            "token".repeat(n),
            "9".repeat(5 * n),
            "1.".repeat(5 * n),
            "::".repeat(5 * n),
            "a:".repeat(5 * n),
            "a@".repeat(5 * n),
            format!("{}@x.io", "a".repeat(5 * n)),
            "://a:".repeat(n),
            "-----BEGIN PRIVATE KEY-----\n".repeat(n / 10),
            "eyJ".repeat(5 * n),
            "AKIA".repeat(5 * n),
            "4111 ".repeat(5 * n),
            "+1 ".repeat(5 * n),
            "DE89 ".repeat(5 * n),
            format!("x{}", "A".repeat(5 * n)),
        ];
        for input in &inputs {
            let start = std::time::Instant::now();
            let _ = r.redact_str(input, &mut report);
            let secs = start.elapsed().as_secs_f64();
            println!("{:>8} bytes in {secs:.3}s: {:.40}", input.len(), input);
        }
    }

    #[test]
    fn reclassification_and_code() {
        let r = redactor();
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(
            kinds(&r, &format!("Authorization: Bearer {jwt}")),
            vec![("jwt".into(), jwt.into())]
        );
        let gh = "ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5";
        assert_eq!(
            kinds(&r, &format!("GITHUB_TOKEN={gh}")),
            vec![("github_token".into(), gh.into())]
        );
        assert_eq!(
            kinds(&r, &format!("https://x-access-token:{gh}@github.com/o/r")),
            vec![("github_token".into(), gh.into())]
        );
        for code in [
            "token = os.environ[\"GITHUB_TOKEN\"]",
            "fn check(password: &str) -> bool",
            "if password == confirm:",
            "api_key = config.api_key",
            "password: ${DB_PASSWORD}",
        ] {
            assert_eq!(kinds(&r, code), vec![], "{code}");
        }
    }

    /// Strings for the fast-path tests: every corpus text, pieces of them, and
    /// generated strings over an alphabet rich in the bytes the fast paths look at.
    fn fast_path_inputs() -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in load_corpus() {
            let chars: Vec<char> = case.text.chars().collect();
            for _ in 0..4 {
                let a = (next() as usize) % (chars.len() + 1);
                let b = a + (next() as usize) % (chars.len() - a + 1);
                out.push(chars[a..b].iter().collect());
            }
            out.push(case.text);
        }
        let alphabet: Vec<char> = "aAkKsShHrRmMoOpPtTyYcCfFdDeE019:@~%.-_/ \n;|&é日🙂Q"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = (next() as usize) % 150;
            out.push(
                (0..len)
                    .map(|_| alphabet[(next() as usize) % alphabet.len()])
                    .collect(),
            );
        }
        // Digits, separators and hex letters: number regions, digit runs, IPv6.
        let digits: Vec<char> = "0123456789 .-()+/:abcdefABCDEFxXDE,_@~%\n\"é"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = (next() as usize) % 100;
            out.push(
                (0..len)
                    .map(|_| digits[(next() as usize) % digits.len()])
                    .collect(),
            );
        }
        for word in [
            "ssh deploy@host.example.com",
            "rsync -a x jane@acme.io",
            "cd /srv; ssh jane@acme.io",
            "mosh a@b.io",
            "/usr/bin/scp f jane@acme.io",
        ] {
            out.push(word.to_owned());
        }
        out
    }

    /// `DigitRun` as it was before its methods were reworked.
    #[derive(Default)]
    struct DigitRunReference {
        active: bool,
        start: usize,
        end: usize,
        digits: usize,
        groups: usize,
        first_group: usize,
        last_group: usize,
        dots: usize,
        gap: usize,
        only_date_seps: bool,
        /// The run starts right after two letters that start a word, like the `DE89` of
        /// an IBAN whose account part may hold few digits.
        after_country: bool,
    }

    impl DigitRunReference {
        fn push(&mut self, i: usize, c: u8, bytes: &[u8], regions: &mut Vec<(usize, usize)>) {
            if c.is_ascii_digit() {
                if !self.active {
                    let before = |k: usize| i.checked_sub(k).and_then(|j| bytes.get(j)).copied();
                    let (c1, c2) = (before(1).unwrap_or(0), before(2).unwrap_or(0));
                    let after_country = ((c1.is_ascii_uppercase() && c2.is_ascii_uppercase())
                        || (c1.is_ascii_lowercase() && c2.is_ascii_lowercase()))
                        && before(3).is_none_or(|c| !is_word_byte(c));
                    *self = DigitRunReference {
                        active: true,
                        start: i,
                        groups: 1,
                        only_date_seps: true,
                        after_country,
                        ..DigitRunReference::default()
                    };
                } else if self.gap > 0 {
                    if self.groups == 1 {
                        self.first_group = self.digits;
                    }
                    self.groups += 1;
                    self.last_group = 0;
                }
                self.digits += 1;
                self.last_group += 1;
                self.gap = 0;
                self.end = i + 1;
            } else if self.active {
                if matches!(c, b' ' | b'.' | b'-' | b'(' | b')' | b'+' | b'/') {
                    self.gap += 1;
                    self.dots += usize::from(c == b'.');
                    self.only_date_seps &= c == b'-' || c == b'/';
                    if self.gap <= 2 {
                        return;
                    }
                }
                self.finish(bytes, regions);
            }
        }

        fn first_group_len(&self) -> usize {
            if self.groups == 1 {
                self.digits
            } else {
                self.first_group
            }
        }

        fn finish(&mut self, bytes: &[u8], regions: &mut Vec<(usize, usize)>) {
            if !self.active {
                return;
            }
            self.active = false;
            let glued = |c: Option<&u8>| c.is_some_and(|&c| is_word_byte(c));
            let glued_start = glued(self.start.checked_sub(1).and_then(|j| bytes.get(j)));
            let glued_end = glued(bytes.get(self.end));
            let effective = if self.groups == 1 {
                // One group glued on both sides is part of a hex digest or an identifier.
                if glued_start && glued_end {
                    0
                } else {
                    self.digits
                }
            } else {
                self.digits
                    - if glued_start { self.first_group } else { 0 }
                    - if glued_end { self.last_group } else { 0 }
            };
            // `2024-05-01` and `01/05/2024`: dates are the most common 8-digit runs and no
            // number pattern matches them.
            let date = self.groups == 3 && self.digits == 8 && self.only_date_seps;
            let iban = self.after_country && self.first_group_len() >= 2;
            if (effective >= 8 && !date) || (self.dots >= 3 && self.groups >= 4) || iban {
                regions.push(region_around_reference(bytes, self.start, self.end));
            }
        }
    }

    /// `scan_bytes` as it was before the block test: every word read.
    fn scan_bytes_reference(bytes: &[u8]) -> ByteScan {
        let mut regions: Vec<(usize, usize)> = Vec::new();
        let mut rare = 0u8;
        let mut run = DigitRunReference::default();
        // Colons in the last six words, for the uncompressed IPv6 form.
        let mut colon_window = [0u32; 6];
        let mut colon_sum = 0u32;
        let mut prev_last_colon = false;
        let mut chunks = bytes.chunks_exact(8);
        for (n, chunk) in chunks.by_ref().enumerate() {
            let i = n * 8;
            let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let w = u64::from_le_bytes(chunk);
            if swar_eq_mask(w, b'~') | swar_eq_mask(w, b'@') | swar_eq_mask(w, b'%') != 0 {
                rare |= chunk.iter().fold(0, |acc, &c| acc | rare_bit(c));
            }
            let colons = swar_eq_mask(w, b':');
            if let Some(slot) = colon_window.get_mut(n % 6) {
                colon_sum = colon_sum - *slot + colons.count_ones();
                *slot = colons.count_ones();
            }
            if colons != 0 {
                // Adjacent colons inside the word, or across the previous word's end.
                let pairs = colons & (colons >> 8);
                let across = prev_last_colon && chunk[0] == b':';
                if pairs != 0 || across {
                    let first = if across {
                        i - 1
                    } else {
                        i + (pairs.trailing_zeros() / 8) as usize
                    };
                    if plausible_double_colon(bytes, first) {
                        regions.push(region_around_reference(bytes, first, first + 2));
                    }
                }
                if colon_sum >= 7 {
                    regions.push(region_around_reference(bytes, i.saturating_sub(40), i + 8));
                }
            }
            prev_last_colon = chunk[7] == b':';
            let digits = swar_digit_mask(w);
            if digits == 0 {
                // A run cannot continue across eight bytes without a digit.
                if run.active {
                    run.finish(bytes, &mut regions);
                }
                continue;
            }
            // Outside a run, bytes before the first digit cannot matter.
            let from = if run.active {
                0
            } else {
                (digits.trailing_zeros() / 8) as usize
            };
            for (k, &c) in chunk.iter().enumerate().skip(from) {
                run.push(i + k, c, bytes, &mut regions);
            }
        }
        let tail_start = bytes.len() - chunks.remainder().len();
        for (k, &c) in bytes.iter().enumerate().skip(tail_start) {
            rare |= rare_bit(c);
            run.push(k, c, bytes, &mut regions);
            let pair = c == b':' && bytes.get(k + 1) == Some(&b':');
            let across = c == b':' && k == tail_start && prev_last_colon;
            if pair || across {
                let first = if across { k - 1 } else { k };
                if plausible_double_colon(bytes, first) {
                    regions.push(region_around_reference(bytes, first, first + 2));
                }
            }
        }
        run.finish(bytes, &mut regions);
        if regions.len() > 1 {
            regions.sort_unstable();
            let mut merged: Vec<(usize, usize)> = Vec::with_capacity(regions.len());
            for (s, e) in regions {
                match merged.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            return ByteScan {
                regions: merged,
                rare,
            };
        }
        ByteScan { regions, rare }
    }

    /// The secret-key test as it was before the tail check: every list compared.
    fn is_secret_key_reference(normalized: &[u8]) -> bool {
        !NOT_SECRET_SUFFIXES
            .iter()
            .any(|s| normalized.ends_with(s.as_bytes()))
            && (SECRET_KEY_EXACT.iter().any(|s| normalized == s.as_bytes())
                || SECRET_KEY_SUFFIXES
                    .iter()
                    .any(|s| normalized.ends_with(s.as_bytes())))
    }

    /// `is_ssh_target` as it was before the SIMD searches.
    fn is_ssh_target_reference(text: &str, start: usize) -> bool {
        let lo = floor_char_boundary(text, start.saturating_sub(200));
        let Some(before) = text.get(lo..start) else {
            return false;
        };
        let command = match before
            .bytes()
            .rposition(|b| matches!(b, b'\n' | b';' | b'|' | b'&'))
        {
            Some(i) => before.get(i + 1..).unwrap_or_default(),
            None => before,
        };
        if !command
            .as_bytes()
            .windows(3)
            .any(|w| matches!(w, b"ssh" | b"scp" | b"sft" | b"rsy" | b"mos"))
        {
            return false;
        }
        command.split_whitespace().any(|word| {
            let name = word.rsplit('/').next().unwrap_or_default();
            matches!(
                name,
                "ssh" | "scp" | "sftp" | "rsync" | "mosh" | "autossh" | "ssh-copy-id" | "sshpass"
            )
        })
    }

    /// Every shortcut gives exactly what the full computation gives: the byte scan's
    /// table pass, the secret-key tail check, the key flags, the extension packing,
    /// the SSH-target search and the integer formatting.
    #[test]
    fn fast_paths_match_full_scans() {
        let r = redactor();
        let configured = Redactor::new(RedactionConfig {
            secret_keys: vec!["pin".into(), "ab".into()],
            ..Default::default()
        })
        .unwrap();
        let inputs = fast_path_inputs();
        let mut quick = 0;
        for s in &inputs {
            let bytes = s.as_bytes();
            let full = scan_bytes(bytes);
            let reference = scan_bytes_reference(bytes);
            assert_eq!(full.regions, reference.regions, "{s:?}");
            assert_eq!(full.rare, reference.rare, "{s:?}");
            if let Some(q) = quick_scan(bytes) {
                quick += 1;
                let full = scan_bytes(bytes);
                assert_eq!(q.regions, full.regions, "{s:?}");
                assert_eq!(q.rare, full.rare, "{s:?}");
            }
            // Keys: the tail check against every list.
            let normalized = normalize_key(s);
            let reference = is_secret_key_reference(normalized.as_bytes());
            assert_eq!(is_secret_key(normalized.as_bytes()), reference, "{s:?}");
            let kind = reference.then(|| {
                if normalized.ends_with("secretaccesskey") {
                    RedactionKind::AwsKey
                } else {
                    RedactionKind::SecretValue
                }
            });
            assert_eq!(r.secret_key_kind(s, false), kind, "{s:?}");
            if normalized.len() >= 3 {
                assert_eq!(raw_tail3(s), Some(tail3(normalized.as_bytes())), "{s:?}");
            } else {
                assert_eq!(raw_tail3(s), None, "{s:?}");
            }
            let configured_reference =
                reference || ["pin", "ab"].iter().any(|k| normalized.ends_with(k));
            assert_eq!(
                configured.secret_key_kind(s, false).is_some(),
                configured_reference,
                "{s:?}"
            );
            let (hold, private_key) = key_flags(s);
            assert_eq!(hold, may_hold_value(s), "{s:?}");
            if normalized == "privatekey" || normalized == "privatekeyid" {
                assert!(private_key, "{s:?}");
            }
            for tld in [s.as_str(), s.rsplit('.').next().unwrap_or_default()] {
                assert_eq!(
                    is_file_ext(tld),
                    [
                        "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tiff", "pdf",
                        "txt", "log", "json", "yaml", "yml", "toml", "lock", "js", "ts", "tsx",
                        "jsx", "css", "html", "map",
                    ]
                    .contains(&tld.to_ascii_lowercase().as_str()),
                    "{tld:?}"
                );
            }
            // At every `@` (where e-mail validation asks) and a sample of other places.
            for (i, _) in s
                .char_indices()
                .chain([(s.len(), '@')])
                .filter(|&(i, c)| c == '@' || i % 5 == 0)
            {
                assert_eq!(
                    is_ssh_target(s, i),
                    is_ssh_target_reference(s, i),
                    "{s:?} at {i}"
                );
            }
            for i in 0..bytes.len() {
                let tail = &bytes[i..];
                let mut word = [0u8; 4];
                let mut mask = [0u8; 4];
                for ((w, m), &c) in word.iter_mut().zip(mask.iter_mut()).zip(tail) {
                    *w = c;
                    *m = 0xFF;
                }
                assert_eq!(
                    head_word(tail),
                    (u32::from_le_bytes(word), u32::from_le_bytes(mask))
                );
            }
        }
        // The table pass must not be vacuous.
        assert!(quick > 1000, "only {quick} strings took the quick scan");
        for key in [
            "PASSWORD",
            "api-key",
            "x.Token",
            "page_token",
            "pwd",
            "SetCookie",
            "ab",
        ] {
            let n = normalize_key(key);
            assert_eq!(
                is_secret_key(n.as_bytes()),
                is_secret_key_reference(n.as_bytes()),
                "{key}"
            );
        }
        let mut numbers: Vec<i128> = vec![
            0,
            1,
            -1,
            9,
            10,
            99,
            100,
            4_111_111_111_111_111,
            i128::from(u64::MAX),
            i128::from(i64::MIN),
            i128::from(i64::MAX),
        ];
        numbers.extend((0..64).map(|k| 1i128 << k));
        numbers.extend((0..63).map(|k| -(1i128 << k)));
        for n in numbers {
            let value = match (u64::try_from(n), i64::try_from(n)) {
                (Ok(u), _) => serde_json::Number::from(u),
                (_, Ok(i)) => serde_json::Number::from(i),
                _ => continue,
            };
            let mut buf = [0u8; 24];
            let text = match (value.as_u64(), value.as_i64()) {
                (Some(u), _) => format_integer(u, false, &mut buf).to_owned(),
                (None, Some(i)) => format_integer(i.unsigned_abs(), i < 0, &mut buf).to_owned(),
                (None, None) => unreachable!(),
            };
            assert_eq!(text, value.to_string());
        }
    }

    /// `is_placeholder` as it was before the `memchr` searches.
    fn is_placeholder_reference(v: &str) -> bool {
        let v = v.trim();
        if v.is_empty() {
            return true;
        }
        if v.starts_with(['$', '%', '<', '{', '[']) || v.contains("{{") || v.contains("}}") {
            return true;
        }
        if v.chars()
            .all(|c| matches!(c, '*' | 'x' | 'X' | '.' | '•' | '#' | '?' | '-' | '_'))
        {
            return true;
        }
        // Compared ignoring ASCII case, without building a lowercase copy.
        let bytes = v.as_bytes();
        let starts_ci = |p: &[u8]| {
            bytes
                .get(..p.len())
                .is_some_and(|b| b.eq_ignore_ascii_case(p))
        };
        if bytes
            .windows(b"redacted".len())
            // The first byte alone rules out most windows.
            .any(|w| matches!(w.first(), Some(b'r' | b'R')) && w.eq_ignore_ascii_case(b"redacted"))
            || starts_ci(b"your")
            || starts_ci(b"<your")
        {
            return true;
        }
        const WORDS: &[&str] = &[
            "null",
            "none",
            "nil",
            "undefined",
            "true",
            "false",
            "placeholder",
            "example",
            "todo",
            "tbd",
            "n/a",
            "na",
            "hidden",
            "masked",
            "secret",
            "password",
            "passwd",
            "token",
        ];
        WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
    }

    /// `nanp_ok` as it was, with a `Vec` of the digits.
    fn nanp_ok_reference(v: &str) -> bool {
        let digits: Vec<u8> = v.bytes().filter(u8::is_ascii_digit).collect();
        let d = match digits.len() {
            10 => digits.as_slice(),
            11 if digits.first() == Some(&b'1') => digits.get(1..).unwrap_or_default(),
            _ => return false,
        };
        matches!(d.first(), Some(b'2'..=b'9')) && matches!(d.get(3), Some(b'2'..=b'9'))
    }

    /// `region_around` as it was, before the table.
    fn region_around_reference(bytes: &[u8], start: usize, end: usize) -> (usize, usize) {
        let mut s = start.saturating_sub(REGION_BEFORE);
        // Keep slices on char boundaries: step over UTF-8 continuation bytes.
        while s > 0 && bytes.get(s).is_some_and(|&c| (0x80..0xC0).contains(&c)) {
            s -= 1;
        }
        let mut e = (end + REGION_AFTER).min(bytes.len());
        // Prefer a byte no number pattern uses; in long prose without one, settle for any
        // non-word byte (a number starting near the cut has its own, overlapping region,
        // and overlapping regions are merged).
        let settle = e + 64;
        while let Some(&c) = bytes.get(e) {
            let soft = matches!(c, b' ' | b'.' | b'-' | b'(' | b')' | b'+' | b'/' | b':');
            if c.is_ascii() && !is_word_byte(c) && (!soft || e >= settle) {
                break;
            }
            e += 1;
        }
        (s, e)
    }

    /// `resolve_overlaps` as it was, into a new `Vec`.
    fn resolve_overlaps_reference(mut found: Vec<Found>) -> Vec<Found> {
        found.sort_by(|x, y| x.start.cmp(&y.start).then(y.end.cmp(&x.end)));
        let mut out: Vec<Found> = Vec::with_capacity(found.len());
        for f in found {
            match out.last() {
                Some(last) if f.start < last.end => {
                    if f.priority > last.priority {
                        out.pop();
                        // The one before `last` ends at or before `last.start <= f.start`,
                        // so `f` cannot overlap it.
                        out.push(f);
                    }
                }
                _ => out.push(f),
            }
        }
        out
    }

    /// `Needles::candidates` as it was: every needle at every identifier position.
    fn candidates_reference(needles: &Needles, rest: &[u8]) -> u64 {
        let mut mask = needles.always;
        for (i, &b) in rest.iter().enumerate() {
            if !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
                break;
            }
            for n in &needles.by_first[usize::from(b)] {
                if rest[i..].starts_with(n.bytes) {
                    mask |= n.alts;
                }
            }
        }
        mask
    }

    /// The searches that stand in for regex searches give what the regexes give: the
    /// hand-made literal search, the exact trigram test, the first-byte and the
    /// needle tests of alternatives, the digit-or-colon test of the number family,
    /// and the credential-prefix test.
    #[test]
    fn shortcuts_match_regex_searches() {
        let keys: Vec<String> = vec!["pin".into(), "Session-Id".into()];
        let configured = Redactor::new(RedactionConfig {
            secret_keys: keys.clone(),
            ..Default::default()
        })
        .unwrap();
        let inputs = fast_path_inputs();
        for (r, keys) in [(redactor(), Vec::new()), (configured, keys)] {
            // The configured words go in lowercase, uppercase and capitalized.
            let literals: Vec<String> = CREDENTIAL_LITERALS
                .iter()
                .chain(LABEL_LITERALS)
                .map(|s| (*s).to_owned())
                .chain(keys.iter().flat_map(|k| {
                    let lower = k.to_ascii_lowercase();
                    let capitalized = format!("{}{}", &k[..1].to_ascii_uppercase(), &lower[1..]);
                    [lower, k.to_ascii_uppercase(), capitalized]
                }))
                .collect();
            let trigrams = r.trigrams.as_ref().unwrap();
            let prefixes: HashSet<&[u8]> = literals.iter().map(|l| &l.as_bytes()[..3]).collect();
            assert_eq!(trigrams.exact.len(), prefixes.len());
            let needles = r.secrets.family.needles.as_ref().unwrap();
            let numbers = r.numbers.regex.as_ref().unwrap();
            let needs = r.numbers.needs.unwrap();
            assert_eq!(needs.colons, 2);
            assert_eq!(r.secrets.short.len(), r.secrets.pre.len());
            assert_eq!(r.urls.short.len(), r.urls.pre.len());
            for (n, s) in inputs.iter().enumerate() {
                let bytes = s.as_bytes();
                // Trigrams: exact.
                let (acc, hit) = trigrams.classify(bytes);
                assert_eq!(hit, bytes.windows(3).any(|w| prefixes.contains(w)), "{s:?}");
                let parts = |q: Option<ByteScan>| q.map(|q| (q.regions, q.rare));
                assert_eq!(
                    parts(quick_scan_from(bytes, acc)),
                    parts(quick_scan(bytes)),
                    "{s:?}"
                );
                assert_eq!(
                    starts_with_credential_literal(s),
                    r.secrets.pre[0].find(s).is_some_and(|m| m.start() == 0),
                    "{s:?}"
                );
                for pos in (0..=s.len()).filter(|&p| s.is_char_boundary(p)) {
                    // Literals: in every text as short as where they are used, at a
                    // share of the positions in the others.
                    for pf in [&r.secrets, &r.urls]
                        .into_iter()
                        .filter(|_| s.len() <= TRIGRAM_MAX_LEN || pos % 8 == 0)
                        .filter(|_| keys.is_empty() || n % 3 == 0)
                    {
                        for (pre, lits) in pf.pre.iter().zip(&pf.short) {
                            assert_eq!(
                                lits.find_at(s, pos),
                                pre.find_at(s, pos).map(|m| (m.start(), m.end())),
                                "{s:?} at {pos}"
                            );
                        }
                    }
                    // The rest does not depend on the configured words: checked once,
                    // on a share of the inputs (regex searches at every position are
                    // slow in a debug build).
                    if !keys.is_empty() || n % 2 == 1 {
                        continue;
                    }
                    let rest = &bytes[pos..];
                    assert_eq!(
                        needles.candidates(rest),
                        candidates_reference(needles, rest),
                        "{s:?} at {pos}"
                    );
                    if !needs.met_by(rest) {
                        assert!(numbers.find_at(s, pos).is_none(), "{s:?} at {pos}");
                    }
                    // Each alternative that matches here may start with the byte here.
                    if n % 16 == 0 {
                        for family in [&r.numbers, &r.secrets.family, &r.urls.family] {
                            for slot in &family.alts {
                                if slot.anchored.is_match(&s[pos..]) {
                                    assert!(
                                        slot.first.may_start(rest.first().copied()),
                                        "{:?} {s:?} at {pos}",
                                        slot.alt
                                    );
                                }
                            }
                        }
                    }
                }
                for i in (0..=bytes.len()).step_by(3) {
                    let end = (i + 5).min(bytes.len());
                    assert_eq!(
                        region_around(bytes, i, end),
                        region_around_reference(bytes, i, end),
                        "{s:?} at {i}"
                    );
                }
                // Findings of every family, overlapping as they come.
                let mut found = Vec::new();
                let mut seed = n as u64 + 1;
                for _ in 0..(n % 9) {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let start = (seed >> 33) as usize % 40;
                    found.push(Found {
                        kind: RedactionKind::Email,
                        start,
                        end: start + 1 + (seed >> 45) as usize % 12,
                        priority: (seed >> 20) as u8 % 5,
                    });
                }
                let spans = |v: Vec<Found>| -> Vec<(usize, usize, u8)> {
                    v.iter().map(|f| (f.start, f.end, f.priority)).collect()
                };
                assert_eq!(
                    spans(resolve_overlaps(found.clone())),
                    spans(resolve_overlaps_reference(found))
                );
                assert_eq!(is_placeholder(s), is_placeholder_reference(s), "{s:?}");
                assert_eq!(nanp_ok(s), nanp_ok_reference(s), "{s:?}");
            }
        }
        // Every tail a key can have: three lowercase letters or digits.
        let alnum: Vec<u32> = (b'0'..=b'9').chain(b'a'..=b'z').map(u32::from).collect();
        for &a in &alnum {
            for &b in &alnum {
                for &c in &alnum {
                    let tail = (a << 16) | (b << 8) | c;
                    assert_eq!(
                        is_secret_tail(tail),
                        SECRET_KEY_TAILS.contains(&tail),
                        "{tail:#x}"
                    );
                }
            }
        }
    }

    /// One corpus line: the text and what should be found in it.
    struct Case {
        text: String,
        expect: Vec<(String, String)>,
    }

    fn load_corpus() -> Vec<Case> {
        include_str!("../tests/corpus/redaction.jsonl")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, line)| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("corpus line {}: {e}", i + 1));
                let text = v["text"].as_str().expect("text").to_owned();
                let expect = v["expect"]
                    .as_array()
                    .expect("expect")
                    .iter()
                    .map(|e| {
                        (
                            e["kind"].as_str().expect("kind").to_owned(),
                            e["value"].as_str().expect("value").to_owned(),
                        )
                    })
                    .collect();
                Case { text, expect }
            })
            .collect()
    }

    #[derive(Default, Clone, Copy)]
    struct Score {
        tp: u32,
        fn_: u32,
        fp: u32,
        fp_negative_lines: u32,
    }

    /// Per kind: an expected value is a true positive when a finding of that kind covers
    /// exactly that value (so it is fully replaced and nothing else is); every finding
    /// that is not such a match is a false positive.
    #[test]
    fn corpus_precision_recall() {
        let r = redactor();
        let corpus = load_corpus();
        let mut scores: BTreeMap<String, Score> = BTreeMap::new();
        for k in RedactionKind::builtin() {
            scores.insert(k.as_str().to_owned(), Score::default());
        }
        let (mut positives, mut negatives) = (0u32, 0u32);
        let mut failures = Vec::new();
        for case in &corpus {
            let findings = kinds(&r, &case.text);
            if case.expect.is_empty() {
                negatives += 1;
            } else {
                positives += 1;
            }
            let mut used = vec![false; findings.len()];
            for (kind, value) in &case.expect {
                assert!(
                    case.text.contains(value.as_str()),
                    "value not in text: {value}"
                );
                let hit = findings
                    .iter()
                    .enumerate()
                    .find(|(i, (k, v))| !used[*i] && k == kind && v == value);
                let s = scores.entry(kind.clone()).or_default();
                match hit {
                    Some((i, _)) => {
                        used[i] = true;
                        s.tp += 1;
                    }
                    None => {
                        s.fn_ += 1;
                        failures.push(format!(
                            "FN {kind} {value:?} in {:?} -> {findings:?}",
                            case.text
                        ));
                    }
                }
            }
            let mut fp_kinds_this_line = HashSet::new();
            for (i, (kind, value)) in findings.iter().enumerate() {
                if !used[i] {
                    let s = scores.entry(kind.clone()).or_default();
                    s.fp += 1;
                    if case.expect.is_empty() && fp_kinds_this_line.insert(kind.clone()) {
                        s.fp_negative_lines += 1;
                    }
                    failures.push(format!("FP {kind} {value:?} in {:?}", case.text));
                }
            }
        }
        println!("corpus: {positives} positive lines, {negatives} negative lines");
        println!(
            "{:<14} {:>4} {:>4} {:>4} {:>9} {:>7}",
            "kind", "tp", "fn", "fp", "precision", "recall"
        );
        let (mut tp, mut fn_, mut fp) = (0, 0, 0);
        let (mut strict_tp, mut strict_fn) = (0, 0);
        for (kind, s) in &scores {
            let precision = f64::from(s.tp) / f64::from((s.tp + s.fp).max(1));
            let recall = f64::from(s.tp) / f64::from((s.tp + s.fn_).max(1));
            println!(
                "{kind:<14} {:>4} {:>4} {:>4} {precision:>9.3} {recall:>7.3}",
                s.tp, s.fn_, s.fp
            );
            tp += s.tp;
            fn_ += s.fn_;
            fp += s.fp;
            if kind != "phone" {
                strict_tp += s.tp;
                strict_fn += s.fn_;
            }
        }
        let recall = f64::from(tp) / f64::from((tp + fn_).max(1));
        let precision = f64::from(tp) / f64::from((tp + fp).max(1));
        println!(
            "{:<14} {tp:>4} {fn_:>4} {fp:>4} {precision:>9.3} {recall:>7.3}",
            "all"
        );
        for f in &failures {
            println!("{f}");
        }
        assert!(positives >= 320 && negatives >= 320, "corpus too small");
        let strict_recall = f64::from(strict_tp) / f64::from((strict_tp + strict_fn).max(1));
        assert!(
            strict_recall >= 0.99,
            "recall {strict_recall:.4} (excluding phone) < 0.99"
        );
        let phone = scores.get("phone").copied().unwrap_or_default();
        let phone_recall = f64::from(phone.tp) / f64::from((phone.tp + phone.fn_).max(1));
        assert!(phone_recall >= 0.9, "phone recall {phone_recall:.3} < 0.9");
        for (kind, s) in &scores {
            let rate = f64::from(s.fp_negative_lines) / f64::from(negatives.max(1));
            let limit = if kind == "phone" { 0.02 } else { 0.005 };
            assert!(
                rate <= limit,
                "{kind}: false positives on {:.2}% of negative lines",
                rate * 100.0
            );
        }
    }

    /// Throughput on typical tool-call payloads. Prints MB/s; run with
    /// `cargo test --release -- --ignored --nocapture throughput`.
    #[test]
    #[ignore]
    fn throughput() {
        let start = std::time::Instant::now();
        let r = redactor();
        println!(
            "Redactor::new: {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        );
        let clean = [
            r#"{"tool":"sql_query","args":{"query":"SELECT o.id, o.total_cents, o.created_at FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at >= '2024-01-01' AND o.status = 'shipped' ORDER BY o.created_at DESC LIMIT 100"},"request_id":"550e8400-e29b-41d4-a716-446655440000","ts":"2024-05-01T12:00:00.123Z"}"#,
            r#"{"tool":"shell","args":{"cmd":"cargo build --release --locked && ls -la target/release/ | head -20","cwd":"/home/agent/work/repo","timeout_ms":120000},"attempt":1}"#,
            r#"{"tool":"http_request","args":{"method":"GET","url":"https://api.github.com/repos/rust-lang/regex/commits?per_page=30&page=2","headers":{"Accept":"application/vnd.github+json","User-Agent":"agent/1.4.2"}}}"#,
            r#"{"role":"assistant","content":"I looked at the failing build. The error comes from the version bump to 2.3.1: the lockfile still pins serde at 1.0.197 while the new code uses a method added in 1.0.200. I will update Cargo.lock and rerun the tests, then summarise the results for you."}"#,
            r#"{"tool":"read_file","result":"fn main() {\n    let args: Vec<String> = std::env::args().collect();\n    let n: u64 = args[1].parse().unwrap_or(42);\n    println!(\"fib({}) = {}\", n, fib(n));\n}\n"}"#,
            r#"{"tool":"search","args":{"q":"quarterly revenue 2023 EMEA region growth rate","top_k":10},"result":[{"doc":"reports/q3-2023.pdf","score":0.8731},{"doc":"reports/q4-2023.pdf","score":0.8519}]}"#,
        ];
        let dirty = [
            r#"{"tool":"send_email","args":{"to":"jane.doe@acme.io","subject":"Your order ORD-2024-000123","body":"Hi Jane, your order has shipped. Call us at (415) 555-0132 with questions."}}"#,
            r#"{"tool":"http_request","args":{"method":"POST","url":"https://api.stripe.com/v1/charges","headers":{"Authorization":"Bearer sk_live_51HqLyjWDarjtT1zdp7dcXkxPZFqJvN0r"}}}"#,
        ];
        let mut records: Vec<&str> = Vec::new();
        for i in 0..60_000 {
            if i % 20 == 19 {
                records.push(dirty[i / 20 % dirty.len()]);
            } else {
                records.push(clean[i % clean.len()]);
            }
        }
        let bytes: usize = records.iter().map(|s| s.len()).sum();
        // Best of several runs: on a shared machine, the fastest run is the closest to
        // what one uncontended core does.
        let best_of = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        };
        let run = |label: &str, records: &[&str]| {
            let bytes: usize = records.iter().map(|s| s.len()).sum();
            let mut changed = 0;
            let secs = best_of(&mut || {
                let mut report = RedactionReport::default();
                changed = 0;
                for rec in records {
                    if let Cow::Owned(_) = r.redact_str(rec, &mut report) {
                        changed += 1;
                    }
                }
            });
            println!(
                "{label}: {:.1} MB, {:.0} MB/s ({changed} records changed)",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / secs
            );
        };
        run("redact_str, 1 in 20 records with PII", &records);
        let clean_only: Vec<&str> = records
            .iter()
            .copied()
            .filter(|s| !dirty.contains(s))
            .collect();
        run("redact_str, clean records", &clean_only);
        let big = records.join("\n");
        run("redact_str, one 14 MB string", &[big.as_str()]);
        let values: Vec<Value> = records
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        let mut redactions = 0;
        let mut secs = f64::MAX;
        for _ in 0..5 {
            // The clone is made outside the timed part.
            let mut values = values.clone();
            let start = std::time::Instant::now();
            let mut report = RedactionReport::default();
            for v in &mut values {
                r.redact_value(v, &mut report);
            }
            secs = secs.min(start.elapsed().as_secs_f64());
            redactions = report.total();
        }
        println!(
            "redact_value on parsed records: {:.0} MB/s of JSON text ({redactions} redactions)",
            bytes as f64 / 1e6 / secs
        );
    }
}
