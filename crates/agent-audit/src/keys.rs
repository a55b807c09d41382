//! Signing keys: Ed25519 in PKCS#8 PEM files, key ids, and the signature
//! format used by checkpoints and per-record signatures.
//!
//! A signature covers a record's 32-byte `hash` under a domain tag, so the
//! same key can never be tricked into signing something that reads as a
//! record hash in another protocol. Format: `ed25519:<key_id>:<hex sig>`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::hazmat::ExpandedSecretKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::{DecodePublicKey, EncodePublicKey};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};

use crate::error::{AuditError, ErrorKind, Result};

/// What every signature signs before the record hash.
const SIGNING_DOMAIN: &[u8] = b"agent-audit/v1 record-hash\n";

/// File name of the development key created when none is configured.
pub const DEV_KEY_FILE: &str = "dev-signing-key.pem";

fn key_err(msg: impl Into<String>) -> AuditError {
    AuditError::new(ErrorKind::Key, msg)
}

/// Key id: first 16 hex characters of SHA-256 over the raw public key.
pub fn key_id_of(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    hex::encode(&digest[..8])
}

/// A private signing key with its id.
pub struct KeyPair {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.key_id)
    }
}

impl KeyPair {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Result<KeyPair> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| key_err(format!("no randomness for a new key: {e}")))?;
        Ok(KeyPair::from_secret(&secret))
    }

    fn from_secret(secret: &[u8; 32]) -> KeyPair {
        let key = SigningKey::from_bytes(secret);
        let key_id = key_id_of(&key.verifying_key().to_bytes());
        KeyPair { key, key_id }
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<KeyPair> {
        let key = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| key_err(format!("not an Ed25519 PKCS#8 PEM private key: {e}")))?;
        let key_id = key_id_of(&key.verifying_key().to_bytes());
        Ok(KeyPair { key, key_id })
    }

    /// Reads a PKCS#8 PEM private key file.
    pub fn load(path: &Path) -> Result<KeyPair> {
        let pem = fs::read_to_string(path).map_err(|e| {
            key_err(format!("cannot read signing key {}: {e}", path.display())).with_source(e)
        })?;
        KeyPair::from_pem(&pem).map_err(|e| key_err(format!("{}: {}", path.display(), e.message())))
    }

    /// PKCS#8 PEM text of the private key.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| key_err(format!("cannot encode key: {e}")))
    }

    /// Writes the private key to a new file readable by the owner only.
    /// Refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let pem = self.to_pem()?;
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(path)
            .map_err(|e| AuditError::io(format!("cannot create key file {}", path.display()), e))?;
        f.write_all(pem.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| AuditError::io(format!("cannot write key file {}", path.display()), e))
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            key_id: self.key_id.clone(),
        }
    }

    /// Length of every `sign_hash` result of this key.
    pub fn signature_len(&self) -> usize {
        "ed25519:".len() + self.key_id.len() + 1 + 2 * ed25519_dalek::SIGNATURE_LENGTH
    }

    /// `sign_hash` of each of `hashes`, the same signatures (Ed25519 is
    /// deterministic), made faster together: RFC 8032's steps on
    /// curve25519-dalek's primitives, as `ed25519_dalek`'s own signing
    /// does, except that the nonce points `R` of the whole batch share one
    /// field inversion (`compress_batch_alloc`), a fifth of a lone
    /// signature's time, and the key is expanded once.
    pub fn sign_hashes(&self, hashes: &[[u8; 32]]) -> Vec<String> {
        if hashes.len() < 2 {
            return hashes.iter().map(|h| self.sign_hash(h)).collect();
        }
        let esk = ExpandedSecretKey::from(self.key.as_bytes());
        let public = self.key.verifying_key();
        let wide = |parts: [&[u8]; 4]| -> Scalar {
            let mut h = Sha512::new();
            for p in parts {
                h.update(p);
            }
            Scalar::from_bytes_mod_order_wide(&h.finalize().into())
        };
        // r = H(prefix || M), R = rB, k = H(R || A || M), s = r + k·a,
        // with M = SIGNING_DOMAIN || hash.
        let nonces: Vec<Scalar> = hashes
            .iter()
            .map(|h| wide([&esk.hash_prefix, SIGNING_DOMAIN, h, &[]]))
            .collect();
        let points: Vec<EdwardsPoint> = nonces.iter().map(EdwardsPoint::mul_base).collect();
        let compressed = EdwardsPoint::compress_batch_alloc(&points);
        hashes
            .iter()
            .zip(&nonces)
            .zip(&compressed)
            .map(|((h, r), big_r)| {
                let k = wide([big_r.as_bytes(), public.as_bytes(), SIGNING_DOMAIN, h]);
                let s = k * esk.scalar + *r;
                let mut sig = [0u8; 64];
                sig[..32].copy_from_slice(big_r.as_bytes());
                sig[32..].copy_from_slice(s.as_bytes());
                self.format_signature(&sig)
            })
            .collect()
    }

    fn format_signature(&self, sig: &[u8; 64]) -> String {
        let mut out = String::with_capacity(self.signature_len());
        out.push_str("ed25519:");
        out.push_str(&self.key_id);
        out.push(':');
        crate::ids::push_hex(&mut out, sig);
        out
    }

    /// Signs a record hash: `ed25519:<key_id>:<hex>`.
    pub fn sign_hash(&self, hash: &[u8; 32]) -> String {
        let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + 32);
        msg.extend_from_slice(SIGNING_DOMAIN);
        msg.extend_from_slice(hash);
        let sig: Signature = self.key.sign(&msg);
        self.format_signature(&sig.to_bytes())
    }
}

/// Why a signature did not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// Not of the form `ed25519:<key_id>:<128 hex>`.
    Malformed(String),
    /// Signed by a key other than this one.
    UnknownKey(String),
    /// The signature does not match.
    Invalid,
}

impl std::fmt::Display for SigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigError::Malformed(s) => write!(f, "malformed signature: {s}"),
            SigError::UnknownKey(k) => write!(f, "signed by unknown key {k}"),
            SigError::Invalid => f.write_str("signature does not verify"),
        }
    }
}

impl std::error::Error for SigError {}

/// A public verifying key with its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    key_id: String,
}

impl PublicKey {
    /// From the 32 raw bytes in hex (as in `stream_start.public_key`).
    pub fn from_hex(hex_str: &str) -> Result<PublicKey> {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hex_str, &mut raw)
            .map_err(|e| key_err(format!("public key is not 64 hex characters: {e}")))?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|e| key_err(format!("not an Ed25519 public key: {e}")))?;
        Ok(PublicKey {
            key,
            key_id: key_id_of(&raw),
        })
    }

    /// Parses an SPKI PEM public key, or derives it from a PKCS#8 private key PEM.
    pub fn from_pem(pem: &str) -> Result<PublicKey> {
        if let Ok(key) = VerifyingKey::from_public_key_pem(pem) {
            let key_id = key_id_of(&key.to_bytes());
            return Ok(PublicKey { key, key_id });
        }
        KeyPair::from_pem(pem)
            .map(|k| k.public())
            .map_err(|_| key_err("not an Ed25519 public or private key in PEM form"))
    }

    /// Reads a PEM key file (public or private).
    pub fn load(path: &Path) -> Result<PublicKey> {
        let pem = fs::read_to_string(path).map_err(|e| {
            key_err(format!("cannot read key {}: {e}", path.display())).with_source(e)
        })?;
        PublicKey::from_pem(&pem)
            .map_err(|e| key_err(format!("{}: {}", path.display(), e.message())))
    }

    /// SPKI PEM text.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| key_err(format!("cannot encode public key: {e}")))
    }

    /// Hex of the 32 raw bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Checks a `ed25519:<key_id>:<hex>` signature over a record hash.
    pub fn verify_hash(&self, hash: &[u8; 32], sig: &str) -> std::result::Result<(), SigError> {
        let (key_id, sig_bytes) = parse_sig(sig)?;
        if key_id != self.key_id {
            return Err(SigError::UnknownKey(key_id.to_string()));
        }
        let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + 32);
        msg.extend_from_slice(SIGNING_DOMAIN);
        msg.extend_from_slice(hash);
        self.key
            .verify_strict(&msg, &Signature::from_bytes(&sig_bytes))
            .map_err(|_| SigError::Invalid)
    }
}

/// Splits a signature string into its key id and bytes.
pub fn parse_sig(sig: &str) -> std::result::Result<(&str, [u8; 64]), SigError> {
    let mut parts = sig.splitn(3, ':');
    let (Some("ed25519"), Some(key_id), Some(hex_sig)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SigError::Malformed(sig.chars().take(40).collect()));
    };
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(hex_sig, &mut bytes).map_err(|e| SigError::Malformed(format!("{e}")))?;
    Ok((key_id, bytes))
}

/// Loads the configured key, or the log directory's development key,
/// creating it (mode 0600) with a warning on stderr when it is missing.
pub fn load_or_create_dev_key(dir: &Path) -> Result<(KeyPair, PathBuf)> {
    let path = dir.join(DEV_KEY_FILE);
    if path.exists() {
        return Ok((KeyPair::load(&path)?, path));
    }
    let key = KeyPair::generate()?;
    key.save(&path)?;
    eprintln!(
        "agent-audit: warning: no signing key configured; created development key {} \
         (key id {}). Use `agent-audit keygen` and pass signing_key for production logs.",
        path.display(),
        key.key_id()
    );
    Ok((key, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_signatures_are_the_lone_ones() {
        // Checked against ed25519-dalek's own signing, for random keys and
        // hashes, and by verification.
        for n in [0usize, 1, 2, 3, 64] {
            let key = KeyPair::generate().unwrap();
            let hashes: Vec<[u8; 32]> = (0..n)
                .map(|_| {
                    let mut h = [0u8; 32];
                    getrandom::fill(&mut h).unwrap();
                    h
                })
                .collect();
            let batch = key.sign_hashes(&hashes);
            assert_eq!(batch.len(), n);
            for (h, sig) in hashes.iter().zip(&batch) {
                assert_eq!(sig, &key.sign_hash(h));
                assert_eq!(sig.len(), key.signature_len());
                key.public().verify_hash(h, sig).unwrap();
            }
        }
    }

    #[test]
    fn pem_round_trip_and_sign_verify() {
        let k = KeyPair::generate().unwrap();
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let k2 = KeyPair::from_pem(&pem).unwrap();
        assert_eq!(k.key_id(), k2.key_id());
        let h = [7u8; 32];
        let sig = k.sign_hash(&h);
        let public = PublicKey::from_pem(&k.public().to_pem().unwrap()).unwrap();
        public.verify_hash(&h, &sig).unwrap();
        assert_eq!(public.verify_hash(&[8u8; 32], &sig), Err(SigError::Invalid));
        let other = KeyPair::generate().unwrap().public();
        assert!(matches!(
            other.verify_hash(&h, &sig),
            Err(SigError::UnknownKey(_))
        ));
        assert!(matches!(
            public.verify_hash(&h, "rsa:x:y"),
            Err(SigError::Malformed(_))
        ));
        assert_eq!(PublicKey::from_hex(&public.to_hex()).unwrap(), public);
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        let e = KeyPair::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Key);
    }

    #[cfg(unix)]
    #[test]
    fn dev_key_is_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (k1, path) = load_or_create_dev_key(dir.path()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, _) = load_or_create_dev_key(dir.path()).unwrap();
        assert_eq!(k1.key_id(), k2.key_id());
    }
}
