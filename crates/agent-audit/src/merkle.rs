//! RFC 6962 (Certificate Transparency) Merkle trees over the audit log's record
//! hashes, for checkpoints, inclusion proofs and consistency proofs.
//!
//! Leaf `i`'s *data* is record `i`'s 32-byte SHA-256 hash. Hashing follows
//! [RFC 6962 section 2.1](https://www.rfc-editor.org/rfc/rfc6962#section-2.1)
//! (unchanged in RFC 9162 section 2.1.1): a leaf hash is `SHA-256(0x00 || data)`,
//! an interior node is `SHA-256(0x01 || left || right)`, and the empty tree's root
//! is `SHA-256("")`. The prefixes keep a leaf from ever being passed off as an
//! interior node (second-preimage resistance). Because the roots, paths and
//! proofs are the standard ones, any RFC 6962 verifier can check a checkpoint
//! without knowing about this crate.
//!
//! Two tree types:
//! * [`CompactTree`] is for the writer. It keeps only the roots of the perfect
//!   subtrees that make up the tree (the "compact range" or frontier), one per
//!   set bit of the size. That is at most 63 hashes, so the writer can run for
//!   months and still produce the current tree head after every push.
//! * [`MerkleLog`] is for the verifier and the prover. It holds every leaf hash
//!   plus every complete interior node. From those it gives the root at any
//!   earlier size, and inclusion and consistency proofs against any earlier
//!   checkpoint, each in O(log² n) hashing or less.
//!
//! # What the `ct-merkle` crate is used for
//! * Proof verification. [`verify_inclusion`] and [`verify_consistency`] hand
//!   the proof to `ct-merkle`'s `RootHash::verify_inclusion` and
//!   `RootHash::verify_consistency`, which compare roots in constant time. Its
//!   leaf hashing (`SHA-256(0x00 || bytes)` for any `AsRef<[u8]>`) is exactly
//!   RFC 6962 for a 32-byte record hash. Before the call, this module checks the
//!   sizes, the index and the proof length itself. That gives callers precise
//!   errors, and it keeps input that `ct-merkle` documents as panicking (sizes
//!   over 2^63) away from it.
//! * The cross-check in the tests. `ct-merkle`'s `MemoryBackedTree` must agree
//!   with both tree types on every root, and with [`MerkleLog`] on every proof.
//!
//! What is implemented here directly, and why: `ct-merkle` has no incremental
//! O(log n) tree head, because its `MemoryBackedTree` keeps every leaf. It has no
//! root at an older size, and it proves only against its current size, while a
//! proof must target a checkpoint that was written earlier. Its `push` and
//! `prove_*` also panic on bad input. The hashing helpers here are public,
//! because `ct-merkle` keeps its own private. Proof generation follows the
//! `PATH` and `SUBPROOF` definitions of RFC 9162 sections 2.1.3.1 and 2.1.4.1.
//!
//! Known-answer vectors (from transparency-dev/merkle and
//! google/certificate-transparency) live in `tests/vectors/merkle/`. See the
//! README there.
// The module is read on its own by other builds, so it carries its own
// no-panic rules rather than relying on the crate root.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::fmt;

use ct_merkle::{
    ConsistencyProof, ConsistencyVerifError, InclusionProof, InclusionVerifError, RootHash,
};
use sha2::{Digest, Sha256};

/// A SHA-256 digest: a record hash, a leaf hash, an interior node or a root.
pub type Digest32 = [u8; 32];

/// The largest tree size supported, 2^63 leaves.
///
/// `ct-merkle`'s tree arithmetic is defined up to here. A real log can never
/// come near it, so a larger size in a checkpoint means a corrupt or forged
/// checkpoint, and it is rejected rather than computed on.
pub const MAX_TREE_SIZE: u64 = 1 << 63;

/// The RFC 6962 domain-separation prefix for leaf hashes.
const LEAF_PREFIX: [u8; 1] = [0x00];
/// The RFC 6962 domain-separation prefix for interior nodes.
const NODE_PREFIX: [u8; 1] = [0x01];

/// Returns the RFC 6962 leaf hash `SHA-256(0x00 || data)`.
///
/// In the audit log, `data` is a record's 32-byte hash. Any length is accepted
/// so that the published test vectors, whose leaves are of any length, can be
/// checked.
pub fn leaf_hash(data: &[u8]) -> Digest32 {
    Sha256::new_with_prefix(LEAF_PREFIX)
        .chain_update(data)
        .finalize()
        .into()
}

/// Returns the RFC 6962 interior-node hash `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest32, right: &Digest32) -> Digest32 {
    Sha256::new_with_prefix(NODE_PREFIX)
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Returns the root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Digest32 {
    Sha256::digest(b"").into()
}

/// Why a root or proof could not be produced, or why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// A tree size was asked for that is larger than the number of leaves held.
    SizeOutOfRange {
        /// The tree size that was asked for.
        size: u64,
        /// How many leaves are available.
        available: u64,
    },
    /// A leaf index is not inside a tree of the given size.
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size the index was meant to be in.
        size: u64,
    },
    /// A consistency proof was asked for, or given, from a larger tree to a
    /// smaller one.
    SizesOutOfOrder {
        /// The size of the earlier tree.
        old_size: u64,
        /// The size of the later tree.
        new_size: u64,
    },
    /// A tree size is over [`MAX_TREE_SIZE`].
    TreeTooLarge {
        /// The tree size that was rejected.
        size: u64,
    },
    /// The proof does not have the number of hashes that the sizes (and index)
    /// call for.
    WrongProofLength {
        /// The number of hashes RFC 6962 calls for.
        expected: usize,
        /// The number of hashes given.
        actual: usize,
    },
    /// A compact-tree frontier does not have one hash per set bit of its size.
    WrongFrontierLength {
        /// The tree size of the frontier.
        size: u64,
        /// The number of hashes that size calls for.
        expected: usize,
        /// The number of hashes given.
        actual: usize,
    },
    /// The proof is well-formed but does not reproduce the expected root hash
    /// (or, for a consistency proof, both expected roots).
    RootMismatch,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SizeOutOfRange { size, available } => write!(
                f,
                "tree size {size} is out of range: only {available} leaves are available"
            ),
            Self::IndexOutOfRange { index, size } => write!(
                f,
                "leaf index {index} is out of range for a tree of size {size}"
            ),
            Self::SizesOutOfOrder { old_size, new_size } => write!(
                f,
                "old tree size {old_size} is larger than new tree size {new_size}"
            ),
            Self::TreeTooLarge { size } => write!(
                f,
                "tree size {size} exceeds the supported maximum of 2^63 leaves"
            ),
            Self::WrongProofLength { expected, actual } => write!(
                f,
                "wrong proof length: got {actual} hashes, expected {expected}"
            ),
            Self::WrongFrontierLength {
                size,
                expected,
                actual,
            } => write!(
                f,
                "wrong frontier length for tree size {size}: got {actual} hashes, expected {expected}"
            ),
            Self::RootMismatch => {
                f.write_str("root mismatch: the proof does not reproduce the expected root hash")
            }
        }
    }
}

impl std::error::Error for ProofError {}

/// Incremental tree head: O(log n) memory.
///
/// The tree is held as the roots of its perfect subtrees, largest (leftmost)
/// first, one for each set bit of [`size`](Self::size). This is the "compact
/// range" or frontier. A push merges subtrees of equal height like the carries
/// of a binary increment. [`root`](Self::root) folds the frontier right to
/// left, which is exactly how RFC 6962 splits a tree: at the largest power of
/// two below its size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactTree {
    /// Number of leaves pushed so far.
    size: u64,
    /// Perfect-subtree roots, largest first. Invariant: `len == size.count_ones()`.
    frontier: Vec<Digest32>,
}

impl CompactTree {
    /// Creates an empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a tree from a saved [`size`](Self::size) and
    /// [`frontier`](Self::frontier), so that a writer can resume after a
    /// restart without rehashing the whole log.
    ///
    /// Fails if the size is over [`MAX_TREE_SIZE`] or if the frontier does not
    /// have one hash per set bit of `size`. The hashes themselves cannot be
    /// checked here. The next checkpoint's consistency proof checks them.
    pub fn from_frontier(size: u64, frontier: Vec<Digest32>) -> Result<Self, ProofError> {
        if size > MAX_TREE_SIZE {
            return Err(ProofError::TreeTooLarge { size });
        }
        let expected = size.count_ones() as usize;
        if frontier.len() != expected {
            return Err(ProofError::WrongFrontierLength {
                size,
                expected,
                actual: frontier.len(),
            });
        }
        Ok(Self { size, frontier })
    }

    /// Appends a leaf whose data is `leaf_data` (a record's 32-byte hash).
    ///
    /// A tree that already holds [`MAX_TREE_SIZE`] leaves is left unchanged.
    /// That size cannot be reached in practice. Use [`try_push`](Self::try_push)
    /// to be told about it.
    pub fn push(&mut self, leaf_data: &[u8]) {
        // The only failure is a full tree, documented above. Ignoring it here
        // keeps `push` infallible for the writer's hot path.
        let _ = self.try_push(leaf_data);
    }

    /// Appends a leaf like [`push`](Self::push), but fails with
    /// [`ProofError::TreeTooLarge`] instead of ignoring a push to a full tree.
    pub fn try_push(&mut self, leaf_data: &[u8]) -> Result<(), ProofError> {
        if self.size >= MAX_TREE_SIZE {
            return Err(ProofError::TreeTooLarge {
                size: self.size.saturating_add(1),
            });
        }
        self.push_leaf_hash(leaf_hash(leaf_data));
        Ok(())
    }

    /// Appends a leaf given by its RFC 6962 leaf hash (`leaf_hash` of its
    /// data), computed elsewhere: the verifier hashes leaves in parallel.
    /// Like [`push`](Self::push), a full tree is left unchanged.
    pub fn push_leaf_hash(&mut self, leaf: Digest32) {
        if self.size >= MAX_TREE_SIZE {
            return;
        }
        let mut carry = leaf;
        // Each trailing one bit of the old size is a perfect subtree as tall as
        // the one being carried, so the two become siblings under a new parent.
        for _ in 0..self.size.trailing_ones() {
            match self.frontier.pop() {
                Some(left) => carry = node_hash(&left, &carry),
                // Unreachable while the invariant holds. Stopping still leaves
                // a well-formed frontier.
                None => break,
            }
        }
        self.frontier.push(carry);
        // Cannot overflow: size < MAX_TREE_SIZE was checked above.
        self.size += 1;
    }

    /// Returns the number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the RFC 6962 root of the leaves pushed so far. For an empty
    /// tree that is [`empty_root`].
    pub fn root(&self) -> Digest32 {
        let mut from_right = self.frontier.iter().rev();
        match from_right.next() {
            None => empty_root(),
            Some(last) => from_right.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// Returns the frontier: the perfect-subtree roots, largest first. Save it
    /// with [`size`](Self::size) to resume later with
    /// [`from_frontier`](Self::from_frontier).
    pub fn frontier(&self) -> &[Digest32] {
        &self.frontier
    }
}

/// All leaves of a stream, for proofs.
///
/// It stores the leaf hashes and every complete interior node, about 2n hashes
/// in all. `levels[k][j]` is the root of the perfect subtree over leaves
/// `j * 2^k .. (j + 1) * 2^k`. Every subtree that RFC 6962 recursion visits
/// starts at a multiple of its split size. So any root or proof, at any earlier
/// size, is a few stored nodes combined along one path, and nothing is
/// rehashed from the leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleLog {
    /// `levels[0]` holds the leaf hashes. Each higher level holds the parents
    /// of complete pairs of the level below.
    levels: Vec<Vec<Digest32>>,
}

impl MerkleLog {
    /// Builds the tree over `leaves`, the leaf *data* in order. In the audit
    /// log that is the records' 32-byte hashes.
    pub fn from_leaf_data(leaves: Vec<Digest32>) -> Self {
        Self::from_leaf_bytes(leaves)
    }

    /// Builds the tree over leaf data of any length. The published RFC 6962
    /// test vectors need this.
    pub fn from_leaf_bytes<I>(leaves: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut log = Self::default();
        for leaf in leaves {
            log.push(leaf.as_ref());
        }
        log
    }

    /// Appends one leaf, so that a verifier can stream a log. The amortised
    /// cost is O(1) hashes.
    pub fn push(&mut self, leaf_data: &[u8]) {
        let mut hash = leaf_hash(leaf_data);
        let mut level = 0;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                return;
            };
            row.push(hash);
            // An odd length means the new node has no sibling yet. An even
            // length means it just completed a pair, and their parent is the
            // next level's newest node.
            if !row.len().is_multiple_of(2) {
                return;
            }
            let [.., left, right] = row.as_slice() else {
                return;
            };
            hash = node_hash(left, right);
            level += 1;
        }
    }

    /// Returns the number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, Vec::len) as u64
    }

    /// Returns the RFC 6962 root of the first `size` leaves. This is the tree
    /// head a checkpoint of that size should carry.
    pub fn root_at(&self, size: u64) -> Result<Digest32, ProofError> {
        self.check_size(size)?;
        self.range_hash(0, size)
    }

    /// Returns the RFC 6962 audit path (`PATH(index, D[0:size])`, ordered leaf
    /// to root) proving that leaf `index` is in the tree of the first `size`
    /// leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest32>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        self.path_in_range(index, 0, size)
    }

    /// Returns the RFC 6962 consistency proof (`PROOF(old_size, D[0:new_size])`)
    /// that the tree of the first `new_size` leaves extends the tree of the
    /// first `old_size` leaves.
    ///
    /// The proof is empty when `old_size` is 0 (every tree extends the empty
    /// tree) or when the sizes are equal.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Digest32>, ProofError> {
        if old_size > new_size {
            return Err(ProofError::SizesOutOfOrder { old_size, new_size });
        }
        self.check_size(new_size)?;
        if old_size == 0 || old_size == new_size {
            return Ok(Vec::new());
        }
        // RFC 9162 2.1.4.1 SUBPROOF(m, D[lo:hi], known), unrolled from the top.
        // Each step records the subtree on the side where the old tree does
        // not end. The result is reversed at the end, because proofs run bottom
        // up. Invariant: 1 <= m <= hi - lo.
        let mut proof = Vec::new();
        let (mut lo, mut hi, mut m) = (0, new_size, old_size);
        // Whether the old tree's root is the current subtree's root, so that
        // the verifier already has it. That stays true only while the path
        // goes left.
        let mut old_root_known = true;
        loop {
            let n = hi - lo;
            if m == n {
                if !old_root_known {
                    proof.push(self.range_hash(lo, hi)?);
                }
                break;
            }
            // Here 1 <= m < n, so n >= 2 and the split exists.
            let k = split_point(n);
            if m <= k {
                proof.push(self.range_hash(lo + k, hi)?);
                hi = lo + k;
            } else {
                proof.push(self.range_hash(lo, lo + k)?);
                lo += k;
                m -= k;
                old_root_known = false;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// Fails unless the log holds at least `size` leaves.
    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        let available = self.size();
        if size > available {
            return Err(ProofError::SizeOutOfRange { size, available });
        }
        Ok(())
    }

    /// Returns the RFC 6962 Merkle tree hash of leaves `start..end`.
    ///
    /// A range that is an aligned perfect subtree is a stored node. Any other
    /// range is split as RFC 6962 splits it. For ranges that come from the RFC
    /// recursion (the start is a multiple of the split), the left half is
    /// always stored, so this costs O(log n).
    fn range_hash(&self, start: u64, end: u64) -> Result<Digest32, ProofError> {
        let out_of_range = ProofError::SizeOutOfRange {
            size: end,
            available: self.size(),
        };
        if end > self.size() {
            return Err(out_of_range);
        }
        let len = match end.checked_sub(start) {
            None => return Err(out_of_range),
            Some(0) => return Ok(empty_root()),
            Some(len) => len,
        };
        if len.is_power_of_two() && start.is_multiple_of(len) {
            let level = len.trailing_zeros() as usize;
            let slot = usize::try_from(start >> level).ok();
            // Present whenever end <= size, which was checked above.
            return slot
                .and_then(|slot| self.levels.get(level)?.get(slot))
                .copied()
                .ok_or(out_of_range);
        }
        // Here len >= 2 (a length of 1 is a power of two), so the split exists.
        let k = split_point(len);
        let left = self.range_hash(start, start + k)?;
        let right = self.range_hash(start + k, end)?;
        Ok(node_hash(&left, &right))
    }

    /// Returns the audit path of leaf `index` in the tree over leaves
    /// `start..end`. Requires `start <= index < end <= size`.
    fn path_in_range(&self, index: u64, start: u64, end: u64) -> Result<Vec<Digest32>, ProofError> {
        // RFC 9162 2.1.3.1 PATH(m, D[n]), unrolled from the top. At each split,
        // record the half that does not hold `index`, then descend into the
        // half that does. Reverse at the end, because paths run leaf to root.
        let mut proof = Vec::new();
        let (mut lo, mut hi) = (start, end);
        while hi - lo > 1 {
            let mid = lo + split_point(hi - lo);
            if index < mid {
                proof.push(self.range_hash(mid, hi)?);
                hi = mid;
            } else {
                proof.push(self.range_hash(lo, mid)?);
                lo = mid;
            }
        }
        proof.reverse();
        Ok(proof)
    }
}

/// Returns the largest power of two strictly below `n`. This is RFC 6962's
/// split point `k`. Requires `n >= 2`, and returns 1 for smaller `n` rather
/// than failing.
fn split_point(n: u64) -> u64 {
    let bits_below = u64::BITS - n.saturating_sub(1).leading_zeros();
    1u64 << bits_below.saturating_sub(1)
}

/// Returns the number of hashes in the audit path of leaf `index` in a tree of
/// `size` leaves. Requires `index < size`.
///
/// Below the level where `index` and the last leaf share a subtree, every
/// level contributes a sibling (`inner`). Above it, `index` lies on the right
/// border, so only levels where it is a right child contribute (`border`). This
/// is the same decomposition transparency-dev/merkle uses.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let last = size.saturating_sub(1);
    let inner = u64::BITS - (index ^ last).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Returns the number of hashes in the consistency proof from `old_size` to
/// `new_size`. Requires `old_size <= new_size`.
fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size == new_size {
        return 0;
    }
    // The proof is the audit path of the old tree's last leaf in the new tree,
    // minus the levels inside the old tree's largest perfect right-edge subtree
    // (of 2^shift leaves). That subtree's root is sent instead, unless it is
    // the whole old tree, whose root the verifier already has.
    let shift = old_size.trailing_zeros();
    let last_old = old_size - 1;
    let inner = u64::BITS - (last_old ^ (new_size - 1)).leading_zeros();
    let border = last_old.checked_shr(inner).unwrap_or(0).count_ones();
    let seed = usize::from(!old_size.is_power_of_two());
    seed + inner.saturating_sub(shift) as usize + border as usize
}

/// Fails if `size` is over [`MAX_TREE_SIZE`].
fn check_verifiable_size(size: u64) -> Result<(), ProofError> {
    if size > MAX_TREE_SIZE {
        return Err(ProofError::TreeTooLarge { size });
    }
    Ok(())
}

/// Wraps a root and its size as `ct-merkle`'s tree head.
fn ct_root(root: &Digest32, size: u64) -> RootHash<Sha256> {
    RootHash::new((*root).into(), size)
}

/// Checks that `proof` shows `leaf_data` at `index` in the tree of `size`
/// leaves whose root is `root`.
///
/// This checks the index and proof length here, then has `ct-merkle`
/// recompute the root (RFC 9162 section 2.1.3.2). As with any RFC 6962
/// verifier, the root must come from a trusted checkpoint of exactly `size`
/// leaves. A proof by itself does not bind the size.
pub fn verify_inclusion(
    leaf_data: &[u8],
    index: u64,
    size: u64,
    proof: &[Digest32],
    root: &Digest32,
) -> Result<(), ProofError> {
    check_verifiable_size(size)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    let wrong_length = ProofError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    let ct_proof = InclusionProof::<Sha256>::try_from_bytes(proof.concat())
        .map_err(|_| wrong_length.clone())?;
    ct_root(root, size)
        .verify_inclusion(&leaf_data, index, &ct_proof)
        .map_err(|err| match err {
            InclusionVerifError::IncorrectHash => ProofError::RootMismatch,
            InclusionVerifError::MalformedProof => wrong_length,
            // Ruled out above. Mapped to the same meaning in case they ever
            // fire.
            InclusionVerifError::IndexOutOfRange | InclusionVerifError::TreeEmpty => {
                ProofError::IndexOutOfRange { index, size }
            }
        })
}

/// Checks that `proof` shows the tree of `new_size` leaves with root
/// `new_root` to be an append-only extension of the tree of `old_size` leaves
/// with root `old_root`.
///
/// Equal sizes need an empty proof and equal roots. `old_size == 0` needs an
/// empty proof, and `old_root` must be [`empty_root`]. That is stricter than
/// RFC 9162, which accepts any old root there, but a checkpoint of size 0 that
/// claims another root is corrupt. Otherwise, this checks the sizes and proof
/// length here, then has `ct-merkle` recompute both roots (RFC 9162 section
/// 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Digest32,
    new_root: &Digest32,
    proof: &[Digest32],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    check_verifiable_size(new_size)?;
    let expected = consistency_proof_len(old_size, new_size);
    let wrong_length = ProofError::WrongProofLength {
        expected,
        actual: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if old_size == 0 {
        // `ct-merkle` rejects an empty old tree. Every tree extends the empty
        // tree, so only the claimed roots can be wrong here.
        let empty = empty_root();
        if *old_root != empty || (new_size == 0 && *new_root != empty) {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let ct_proof = ConsistencyProof::<Sha256>::try_from_bytes(proof.concat())
        .map_err(|_| wrong_length.clone())?;
    ct_root(new_root, new_size)
        .verify_consistency(&ct_root(old_root, old_size), &ct_proof)
        .map_err(|err| match err {
            ConsistencyVerifError::VerificationFailure => ProofError::RootMismatch,
            ConsistencyVerifError::MalformedProof => wrong_length,
            ConsistencyVerifError::OldTreeLarger => {
                ProofError::SizesOutOfOrder { old_size, new_size }
            }
            ConsistencyVerifError::NewTreeTooBig => ProofError::TreeTooLarge { size: new_size },
            // Ruled out above, where old_size == 0 is handled. An empty old
            // tree with a non-empty proof cannot match.
            ConsistencyVerifError::OldTreeEmpty => ProofError::RootMismatch,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_merkle::mem_backed_tree::MemoryBackedTree;
    use serde_json::Value;

    const TREE_JSON: &str = include_str!("../tests/vectors/merkle/tree.json");
    const INCLUSION_JSON: &str = include_str!("../tests/vectors/merkle/inclusion.json");
    const CONSISTENCY_JSON: &str = include_str!("../tests/vectors/merkle/consistency.json");
    const SUBTREE_JSON: &str = include_str!("../tests/vectors/merkle/subtree_accumulated.json");

    fn parse(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    fn hex32(value: &Value) -> Digest32 {
        let bytes = hex::decode(value.as_str().unwrap()).unwrap();
        bytes.try_into().unwrap()
    }

    fn hex32_list(value: &Value) -> Vec<Digest32> {
        value.as_array().unwrap().iter().map(hex32).collect()
    }

    fn u64_of(value: &Value) -> u64 {
        value.as_u64().unwrap()
    }

    fn kat_leaves() -> Vec<Vec<u8>> {
        parse(TREE_JSON)["leaves_hex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| hex::decode(v.as_str().unwrap()).unwrap())
            .collect()
    }

    fn kat_roots() -> Vec<Digest32> {
        hex32_list(&parse(TREE_JSON)["roots_by_size"])
    }

    /// Pseudo-random 32-byte leaf data, shaped like the record hashes the log
    /// really uses.
    fn record_hash(i: u64) -> Digest32 {
        Sha256::digest(i.to_le_bytes()).into()
    }

    fn flip(digest: &Digest32, byte: usize) -> Digest32 {
        let mut out = *digest;
        out[byte % 32] ^= 0x10;
        out
    }

    fn ct_root_bytes<T: AsRef<[u8]>>(tree: &MemoryBackedTree<Sha256, T>) -> Digest32 {
        tree.root().as_bytes().as_slice().try_into().unwrap()
    }

    #[test]
    fn kat_hashing_primitives() {
        let tree = parse(TREE_JSON);
        assert_eq!(empty_root(), hex32(&tree["empty_root"]));
        let levels: Vec<Vec<Digest32>> = tree["node_hashes_by_level"]
            .as_array()
            .unwrap()
            .iter()
            .map(hex32_list)
            .collect();
        for (leaf, want) in kat_leaves().iter().zip(&levels[0]) {
            assert_eq!(&leaf_hash(leaf), want);
        }
        for pair in levels.windows(2) {
            for (i, want) in pair[1].iter().enumerate() {
                assert_eq!(&node_hash(&pair[0][2 * i], &pair[0][2 * i + 1]), want);
            }
        }
    }

    #[test]
    fn kat_roots_for_every_size() {
        let leaves = kat_leaves();
        let roots = kat_roots();
        assert_eq!(roots.len(), 9);
        let log = MerkleLog::from_leaf_bytes(&leaves);
        assert_eq!(log.size(), 8);
        let mut compact = CompactTree::new();
        let mut ct = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        for (size, want) in roots.iter().enumerate() {
            if size > 0 {
                compact.push(&leaves[size - 1]);
                ct.push(leaves[size - 1].clone());
            }
            assert_eq!(
                &log.root_at(size as u64).unwrap(),
                want,
                "MerkleLog size {size}"
            );
            assert_eq!(&compact.root(), want, "CompactTree size {size}");
            assert_eq!(compact.size(), size as u64);
            assert_eq!(&ct_root_bytes(&ct), want, "ct-merkle size {size}");
            // A log holding exactly `size` leaves agrees as well.
            let prefix = MerkleLog::from_leaf_bytes(&leaves[..size]);
            assert_eq!(&prefix.root_at(size as u64).unwrap(), want);
        }
    }

    #[test]
    fn kat_compact_frontier_for_every_size() {
        let leaves = kat_leaves();
        let want: Vec<Vec<Digest32>> = parse(TREE_JSON)["compact_range_by_size"]
            .as_array()
            .unwrap()
            .iter()
            .map(hex32_list)
            .collect();
        let mut compact = CompactTree::new();
        assert_eq!(compact.frontier(), want[0].as_slice());
        for (size, leaf) in leaves.iter().enumerate() {
            compact.push(leaf);
            assert_eq!(
                compact.frontier(),
                want[size + 1].as_slice(),
                "size {}",
                size + 1
            );
        }
    }

    #[test]
    fn kat_inclusion_proofs() {
        let leaves = kat_leaves();
        let roots = kat_roots();
        let log = MerkleLog::from_leaf_bytes(&leaves);
        let vectors = parse(INCLUSION_JSON);
        let vectors = vectors["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 7);
        for v in vectors {
            let (index, size) = (u64_of(&v["index"]), u64_of(&v["size"]));
            let want = hex32_list(&v["proof"]);
            // Proved against an older size of the 8-leaf log.
            assert_eq!(
                log.inclusion_proof(index, size).unwrap(),
                want,
                "{index}/{size}"
            );
            let leaf = &leaves[index as usize];
            verify_inclusion(leaf, index, size, &want, &roots[size as usize]).unwrap();
            assert_eq!(
                verify_inclusion(b"WrongLeaf", index, size, &want, &roots[size as usize]),
                Err(ProofError::RootMismatch)
            );
        }
    }

    #[test]
    fn kat_consistency_proofs() {
        let leaves = kat_leaves();
        let roots = kat_roots();
        let log = MerkleLog::from_leaf_bytes(&leaves);
        let vectors = parse(CONSISTENCY_JSON);
        let vectors = vectors["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 5);
        for v in vectors {
            let (old, new) = (u64_of(&v["old_size"]), u64_of(&v["new_size"]));
            let want = hex32_list(&v["proof"]);
            assert_eq!(
                log.consistency_proof(old, new).unwrap(),
                want,
                "{old}->{new}"
            );
            let (old_root, new_root) = (&roots[old as usize], &roots[new as usize]);
            verify_consistency(old, new, old_root, new_root, &want).unwrap();
            if !want.is_empty() {
                assert_eq!(
                    verify_consistency(old, new, new_root, old_root, &want),
                    Err(ProofError::RootMismatch)
                );
            }
        }
    }

    /// True when `[start, end)` is a subtree in the sense of
    /// transparency-dev's `isSubtreeValid`: start is 0, or start is a multiple
    /// of bit_ceil(end - start).
    fn is_valid_subtree(start: u64, end: u64) -> bool {
        start == 0 || start.is_multiple_of((end - start).next_power_of_two())
    }

    #[test]
    fn kat_accumulated_subtree_vectors() {
        let vectors = parse(SUBTREE_JSON);
        let max = u64_of(&vectors["max_size"]);
        let log = MerkleLog::from_leaf_bytes((0..max).map(|i| [i as u8]));
        let mut hashes = Sha256::new();
        let mut paths = Sha256::new();
        for end in 1..=max {
            for start in (0..end).filter(|&s| is_valid_subtree(s, end)) {
                let root = log.range_hash(start, end).unwrap();
                hashes.update(format!("[{start}, {end}) {}\n", hex::encode(root)));
                for index in start..end {
                    let proof = log.path_in_range(index, start, end).unwrap();
                    let mut line = format!("{index} [{start}, {end})");
                    for node in &proof {
                        line.push(' ');
                        line.push_str(&hex::encode(node));
                    }
                    line.push('\n');
                    paths.update(line);
                    // Every such path verifies as a proof in the subtree itself.
                    let leaf = [index as u8];
                    verify_inclusion(&leaf, index - start, end - start, &proof, &root).unwrap();
                }
            }
        }
        let hashes: Digest32 = hashes.finalize().into();
        let paths: Digest32 = paths.finalize().into();
        assert_eq!(hashes, hex32(&vectors["subtree_hash"]["digest"]));
        assert_eq!(paths, hex32(&vectors["subtree_inclusion"]["digest"]));
    }

    #[test]
    fn compact_tree_matches_full_tree_and_ct_merkle_up_to_1000() {
        let leaves: Vec<Digest32> = (0..1000).map(record_hash).collect();
        let log = MerkleLog::from_leaf_data(leaves.clone());
        let mut streamed = MerkleLog::default();
        let mut compact = CompactTree::new();
        let mut ct = MemoryBackedTree::<Sha256, Digest32>::new();
        for size in 0..=1000u64 {
            if size > 0 {
                let leaf = &leaves[size as usize - 1];
                compact.push(leaf);
                streamed.push(leaf);
                ct.push(*leaf);
            }
            let root = log.root_at(size).unwrap();
            assert_eq!(compact.root(), root, "size {size}");
            assert_eq!(compact.size(), size);
            assert_eq!(compact.frontier().len(), size.count_ones() as usize);
            assert_eq!(streamed.root_at(size).unwrap(), root);
            assert_eq!(ct_root_bytes(&ct), root, "ct-merkle size {size}");
        }
        assert_eq!(streamed, log);
    }

    #[test]
    fn ct_merkle_leaf_is_the_record_hash_itself() {
        // A one-leaf tree's root is the leaf hash. So this shows that
        // ct-merkle hashes the 32 bytes exactly as RFC 6962 says, with no
        // length prefix or encoding.
        let record = record_hash(7);
        let mut ct = MemoryBackedTree::<Sha256, Digest32>::new();
        ct.push(record);
        assert_eq!(ct_root_bytes(&ct), leaf_hash(&record));
        let mut manual = vec![0u8];
        manual.extend_from_slice(&record);
        assert_eq!(
            leaf_hash(&record),
            <Digest32>::from(Sha256::digest(&manual))
        );
    }

    #[test]
    fn compact_tree_resumes_from_frontier() {
        let mut original = CompactTree::new();
        for i in 0..37 {
            original.push(&record_hash(i));
        }
        let mut resumed =
            CompactTree::from_frontier(original.size(), original.frontier().to_vec()).unwrap();
        assert_eq!(resumed, original);
        for i in 37..100 {
            original.push(&record_hash(i));
            resumed.push(&record_hash(i));
            assert_eq!(resumed.root(), original.root());
        }
        assert_eq!(
            CompactTree::from_frontier(3, vec![[0; 32]]),
            Err(ProofError::WrongFrontierLength {
                size: 3,
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            CompactTree::from_frontier(u64::MAX, vec![[0; 32]; 64]),
            Err(ProofError::TreeTooLarge { size: u64::MAX })
        );
        let mut full = CompactTree::from_frontier(MAX_TREE_SIZE, vec![[1; 32]]).unwrap();
        let before = full.clone();
        assert_eq!(
            full.try_push(b"x"),
            Err(ProofError::TreeTooLarge {
                size: MAX_TREE_SIZE + 1
            })
        );
        full.push(b"x");
        assert_eq!(full, before);
    }

    /// Inclusion proofs that must not verify, modelled on the corruptions in
    /// transparency-dev's `proof/verify_test.go`.
    fn assert_inclusion_rejects(
        leaf: &Digest32,
        index: u64,
        size: u64,
        proof: &[Digest32],
        root: &Digest32,
    ) {
        let reject = |what: &str, l: &[u8], i: u64, s: u64, p: &[Digest32], r: &Digest32| {
            assert!(
                verify_inclusion(l, i, s, p, r).is_err(),
                "{what} verified (index {index}, size {size})"
            );
        };
        for byte in [0, 13, 31] {
            reject("flipped leaf", &flip(leaf, byte), index, size, proof, root);
            reject("flipped root", leaf, index, size, proof, &flip(root, byte));
        }
        reject("short leaf", &leaf[..31], index, size, proof, root);
        reject("empty root", leaf, index, size, proof, &empty_root());
        for j in 0..proof.len() {
            let mut bad = proof.to_vec();
            bad[j] = flip(&bad[j], j * 7);
            reject("flipped proof hash", leaf, index, size, &bad, root);
        }
        for wrong in [index.wrapping_sub(1), index + 1, index ^ 1, index ^ 2] {
            reject("wrong index", leaf, wrong, size, proof, root);
        }
        reject("size * 2", leaf, index, size * 2, proof, root);
        reject("size / 2", leaf, index, size / 2, proof, root);
        let mut longer = proof.to_vec();
        longer.push(*root);
        reject("trailing root", leaf, index, size, &longer, root);
        let mut longer = vec![*root];
        longer.extend_from_slice(proof);
        reject("preceding root", leaf, index, size, &longer, root);
        if let Some((_, shorter)) = proof.split_last() {
            reject("truncated proof", leaf, index, size, shorter, root);
        }
    }

    /// Consistency proofs that must not verify, modelled on transparency-dev's
    /// `corruptConsistencyProof`.
    fn assert_consistency_rejects(
        old: u64,
        new: u64,
        old_root: &Digest32,
        new_root: &Digest32,
        proof: &[Digest32],
    ) {
        let reject = |what: &str, o: u64, n: u64, or: &Digest32, nr: &Digest32, p: &[Digest32]| {
            assert!(
                verify_consistency(o, n, or, nr, p).is_err(),
                "{what} verified ({old} -> {new})"
            );
        };
        for wrong in [old - 1, old + 1, old ^ 2] {
            reject("wrong old size", wrong, new, old_root, new_root, proof);
        }
        reject("new size * 2", old, new * 2, old_root, new_root, proof);
        reject("new size / 2", old, new / 2, old_root, new_root, proof);
        for byte in [0, 31] {
            let (bad_old, bad_new) = (flip(old_root, byte), flip(new_root, byte));
            reject("flipped old root", old, new, &bad_old, new_root, proof);
            reject("flipped new root", old, new, old_root, &bad_new, proof);
        }
        reject("swapped roots", old, new, new_root, old_root, proof);
        reject("empty proof", old, new, old_root, new_root, &[]);
        for j in 0..proof.len() {
            let mut bad = proof.to_vec();
            bad[j] = flip(&bad[j], j * 5);
            reject("flipped proof hash", old, new, old_root, new_root, &bad);
        }
        for extra in [old_root, new_root, &proof[0]] {
            let mut longer = proof.to_vec();
            longer.push(*extra);
            reject("trailing hash", old, new, old_root, new_root, &longer);
            let mut longer = vec![*extra];
            longer.extend_from_slice(proof);
            reject("preceding hash", old, new, old_root, new_root, &longer);
        }
        reject(
            "truncated proof",
            old,
            new,
            old_root,
            new_root,
            &proof[..proof.len() - 1],
        );
    }

    const EXHAUSTIVE: u64 = 70;

    #[test]
    fn every_inclusion_proof_up_to_70_verifies_matches_ct_merkle_and_resists_tampering() {
        let leaves: Vec<Digest32> = (0..EXHAUSTIVE).map(record_hash).collect();
        let log = MerkleLog::from_leaf_data(leaves.clone());
        let mut ct = MemoryBackedTree::<Sha256, Digest32>::new();
        for size in 1..=EXHAUSTIVE {
            ct.push(leaves[size as usize - 1]);
            let root = log.root_at(size).unwrap();
            for index in 0..size {
                let proof = log.inclusion_proof(index, size).unwrap();
                assert_eq!(proof.len(), inclusion_proof_len(index, size));
                assert_eq!(
                    proof.concat(),
                    ct.prove_inclusion(index as usize).as_bytes(),
                    "ct-merkle disagrees on {index}/{size}"
                );
                let leaf = &leaves[index as usize];
                verify_inclusion(leaf, index, size, &proof, &root).unwrap();
                assert_inclusion_rejects(leaf, index, size, &proof, &root);
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_70_verifies_matches_ct_merkle_and_resists_tampering() {
        let leaves: Vec<Digest32> = (0..EXHAUSTIVE).map(record_hash).collect();
        let log = MerkleLog::from_leaf_data(leaves.clone());
        let roots: Vec<Digest32> = (0..=EXHAUSTIVE).map(|s| log.root_at(s).unwrap()).collect();
        let mut ct = MemoryBackedTree::<Sha256, Digest32>::new();
        for new in 1..=EXHAUSTIVE {
            ct.push(leaves[new as usize - 1]);
            for old in 0..=new {
                let proof = log.consistency_proof(old, new).unwrap();
                assert_eq!(proof.len(), consistency_proof_len(old, new));
                if old > 0 {
                    let theirs = ct.prove_consistency((new - old) as usize);
                    assert_eq!(
                        proof.concat(),
                        theirs.as_bytes(),
                        "ct-merkle disagrees on {old}->{new}"
                    );
                }
                let (old_root, new_root) = (&roots[old as usize], &roots[new as usize]);
                verify_consistency(old, new, old_root, new_root, &proof).unwrap();
                if !proof.is_empty() {
                    assert_consistency_rejects(old, new, old_root, new_root, &proof);
                }
            }
        }
    }

    #[test]
    fn trivial_consistency_cases() {
        let log = MerkleLog::from_leaf_data((0..5).map(record_hash).collect());
        let (empty, r5) = (empty_root(), log.root_at(5).unwrap());
        assert_eq!(log.consistency_proof(0, 5).unwrap(), Vec::<Digest32>::new());
        assert_eq!(log.consistency_proof(5, 5).unwrap(), Vec::<Digest32>::new());
        verify_consistency(0, 0, &empty, &empty, &[]).unwrap();
        verify_consistency(0, 5, &empty, &r5, &[]).unwrap();
        verify_consistency(5, 5, &r5, &r5, &[]).unwrap();
        assert_eq!(
            verify_consistency(0, 5, &r5, &r5, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(0, 0, &empty, &r5, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(5, 5, &empty, &r5, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(5, 5, &r5, &r5, &[r5]),
            Err(ProofError::WrongProofLength {
                expected: 0,
                actual: 1
            })
        );
        assert_eq!(
            verify_consistency(0, 5, &empty, &r5, &[r5]),
            Err(ProofError::WrongProofLength {
                expected: 0,
                actual: 1
            })
        );
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let empty = MerkleLog::from_leaf_data(Vec::new());
        assert_eq!(empty.size(), 0);
        assert_eq!(empty.root_at(0), Ok(empty_root()));
        assert_eq!(
            empty.root_at(1),
            Err(ProofError::SizeOutOfRange {
                size: 1,
                available: 0
            })
        );
        assert_eq!(
            empty.inclusion_proof(0, 0),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );

        let log = MerkleLog::from_leaf_data((0..5).map(record_hash).collect());
        assert_eq!(
            log.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            log.inclusion_proof(0, 6),
            Err(ProofError::SizeOutOfRange {
                size: 6,
                available: 5
            })
        );
        assert_eq!(
            log.root_at(u64::MAX),
            Err(ProofError::SizeOutOfRange {
                size: u64::MAX,
                available: 5
            })
        );
        assert_eq!(
            log.consistency_proof(3, 2),
            Err(ProofError::SizesOutOfOrder {
                old_size: 3,
                new_size: 2
            })
        );
        assert_eq!(
            log.consistency_proof(1, 6),
            Err(ProofError::SizeOutOfRange {
                size: 6,
                available: 5
            })
        );

        let root = log.root_at(5).unwrap();
        let leaf = record_hash(0);
        assert_eq!(
            verify_inclusion(&leaf, 0, 0, &[], &empty_root()),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            verify_inclusion(&leaf, 0, 5, &[], &root),
            Err(ProofError::WrongProofLength {
                expected: 3,
                actual: 0
            })
        );
        assert_eq!(
            verify_inclusion(&leaf, 0, u64::MAX, &[], &root),
            Err(ProofError::TreeTooLarge { size: u64::MAX })
        );
        assert_eq!(
            verify_consistency(1, MAX_TREE_SIZE + 1, &root, &root, &[]),
            Err(ProofError::TreeTooLarge {
                size: MAX_TREE_SIZE + 1
            })
        );
        assert_eq!(
            verify_consistency(6, 5, &root, &root, &[]),
            Err(ProofError::SizesOutOfOrder {
                old_size: 6,
                new_size: 5
            })
        );
    }

    #[test]
    fn verifiers_do_not_panic_on_extreme_sizes() {
        // Sizes come from checkpoints, which may be forged. Every u64 must
        // give an answer, and none may panic inside this module or ct-merkle.
        // Debug builds check arithmetic, so an overflow would show up here.
        let mut sizes = vec![
            1,
            2,
            3,
            (1 << 62) - 1,
            1 << 62,
            (1 << 62) + 1,
            MAX_TREE_SIZE - 2,
            MAX_TREE_SIZE - 1,
            MAX_TREE_SIZE,
            MAX_TREE_SIZE + 1,
            0x5555_5555_5555_5555,
            0x2aaa_aaaa_aaaa_aaab,
            u64::MAX,
        ];
        // Plus some pseudo-random sizes below the cap (xorshift64).
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sizes.push(x >> 1);
        }
        let garbage = |n: usize| vec![[0x5a; 32]; n];
        let root = [0xa5; 32];
        for &size in &sizes {
            let last = size.saturating_sub(1);
            for index in [0, 1, size / 2, last.saturating_sub(1), last, size, u64::MAX] {
                let good_len = if index < size && size <= MAX_TREE_SIZE {
                    inclusion_proof_len(index, size)
                } else {
                    0
                };
                for len in [good_len, 0, 1, 64] {
                    let result = verify_inclusion(b"leaf", index, size, &garbage(len), &root);
                    assert!(result.is_err(), "garbage verified: {index}/{size}/{len}");
                }
            }
            for &old in &sizes {
                let good_len = if old <= size && size <= MAX_TREE_SIZE {
                    consistency_proof_len(old, size)
                } else {
                    0
                };
                for len in [good_len, 1, 64] {
                    // Equal sizes with equal roots and an empty proof are
                    // rightly consistent.
                    if old == size && len == 0 {
                        continue;
                    }
                    let result = verify_consistency(old, size, &root, &root, &garbage(len));
                    assert!(result.is_err(), "garbage verified: {old}->{size}/{len}");
                }
            }
        }
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for (n, k) in [(2, 1), (3, 2), (4, 2), (5, 4), (7, 4), (8, 4), (9, 8)] {
            assert_eq!(split_point(n), k);
        }
        // The same cases transparency-dev checks for downToPowerOfTwo.
        for (n, k) in [(63, 32), (28937, 16384), (u64::MAX, 1 << 63)] {
            assert_eq!(split_point(n), k);
        }
    }

    #[test]
    fn errors_display_clearly() {
        let cases = [
            (
                ProofError::IndexOutOfRange { index: 9, size: 4 },
                "leaf index 9 is out of range for a tree of size 4",
            ),
            (
                ProofError::WrongProofLength {
                    expected: 3,
                    actual: 2,
                },
                "wrong proof length: got 2 hashes, expected 3",
            ),
            (
                ProofError::RootMismatch,
                "root mismatch: the proof does not reproduce the expected root hash",
            ),
            (
                ProofError::SizesOutOfOrder {
                    old_size: 5,
                    new_size: 4,
                },
                "old tree size 5 is larger than new tree size 4",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
            let _: &dyn std::error::Error = &err;
        }
    }
}
