//! Pure RFC 9162 Merkle tree math: roots, inclusion and consistency proofs, and their verification.
//!
//! Nothing here touches storage. Hashes come through [`HashReader`], which only has to answer for
//! *perfect* subtrees (2^level leaves starting at a multiple of 2^level), exactly what tlog tiles store.

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::hash::{Hash, empty_root, node_hash};

/// Source of hashes of complete (perfect) subtrees.
pub trait HashReader {
    /// Hash of the perfect subtree of height `level` whose leaves are `[index << level, (index + 1) << level)`.
    fn node(&self, level: u8, index: u64) -> Result<Hash, AuditError>;
}

/// Leaf hashes held in memory; the reference implementation used by tests and the verifier.
impl HashReader for [Hash] {
    fn node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        let width = 1u64 << level;
        let start = index * width;
        let end = start + width;
        if end > self.len() as u64 {
            return Err(AuditError::OutOfRange {
                index: end - 1,
                size: self.len() as u64,
            });
        }
        if level == 0 {
            return Ok(self[start as usize]);
        }
        let left = self.node(level - 1, index * 2)?;
        let right = self.node(level - 1, index * 2 + 1)?;
        Ok(node_hash(&left, &right))
    }
}

/// "This leaf is in the tree of this size": RFC 9162 §2.1.3 audit path, nearest sibling first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    #[serde(with = "crate::hash::hex_hash")]
    pub leaf_hash: Hash,
    #[serde(with = "crate::hash::hex_hash")]
    pub root: Hash,
    #[serde(with = "crate::hash::hex_hashes")]
    pub path: Vec<Hash>,
}

/// "The tree of size `new` extends the tree of size `old`": RFC 9162 §2.1.4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    #[serde(with = "crate::hash::hex_hash")]
    pub old_root: Hash,
    #[serde(with = "crate::hash::hex_hash")]
    pub new_root: Hash,
    #[serde(with = "crate::hash::hex_hashes")]
    pub path: Vec<Hash>,
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]) for a range that the RFC recursion can produce (`start` aligned to the range's
/// largest power-of-two split), computed from perfect subtrees and folded right to left.
pub fn range_hash<R: HashReader + ?Sized>(r: &R, start: u64, end: u64) -> Result<Hash, AuditError> {
    if start >= end {
        return Ok(empty_root());
    }
    let mut parts = Vec::with_capacity(64);
    let mut at = start;
    while at < end {
        let align = if at == 0 { 63 } else { at.trailing_zeros() };
        let fit = 63 - (end - at).leading_zeros();
        let level = align.min(fit);
        parts.push(r.node(level as u8, at >> level)?);
        at += 1u64 << level;
    }
    let mut acc = parts.pop().unwrap_or_else(empty_root);
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// Root hash of the first `size` leaves.
pub fn root<R: HashReader + ?Sized>(r: &R, size: u64) -> Result<Hash, AuditError> {
    range_hash(r, 0, size)
}

fn path<R: HashReader + ?Sized>(
    r: &R,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), AuditError> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(r, m, start, start + k, out)?;
        out.push(range_hash(r, start + k, end)?);
    } else {
        path(r, m - k, start + k, end, out)?;
        out.push(range_hash(r, start, start + k)?);
    }
    Ok(())
}

/// Audit path for leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    r: &R,
    index: u64,
    size: u64,
) -> Result<InclusionProof, AuditError> {
    if index >= size {
        return Err(AuditError::OutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(r, index, 0, size, &mut out)?;
    Ok(InclusionProof {
        index,
        size,
        leaf_hash: r.node(0, index)?,
        root: root(r, size)?,
        path: out,
    })
}

fn subproof<R: HashReader + ?Sized>(
    r: &R,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), AuditError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(r, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(r, m, start, start + k, complete, out)?;
        out.push(range_hash(r, start + k, end)?);
    } else {
        subproof(r, m - k, start + k, end, false, out)?;
        out.push(range_hash(r, start, start + k)?);
    }
    Ok(())
}

/// Proof that the tree of `old` leaves is a prefix of the tree of `new` leaves.
pub fn consistency_proof<R: HashReader + ?Sized>(
    r: &R,
    old: u64,
    new: u64,
) -> Result<ConsistencyProof, AuditError> {
    if old > new {
        return Err(AuditError::BadRequest(format!(
            "old size `{old}` exceeds new size `{new}`"
        )));
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(r, old, 0, new, true, &mut out)?;
    }
    Ok(ConsistencyProof {
        old_size: old,
        new_size: new,
        old_root: root(r, old)?,
        new_root: root(r, new)?,
        path: out,
    })
}

/// RFC 9162 §2.1.3.2. Returns whether `leaf_hash` at `index` is in the tree of `size` with `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2. Returns whether the tree (`old`, `old_root`) is a prefix of (`new`, `new_root`).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return path.is_empty() && old_root == new_root;
    }
    if old == 0 {
        // Every tree extends the empty tree; nothing to prove.
        return path.is_empty() && *old_root == empty_root();
    }
    if path.is_empty() {
        return false;
    }
    let mut proof: Vec<Hash> = Vec::with_capacity(path.len() + 1);
    if old.is_power_of_two() {
        proof.push(*old_root);
    }
    proof.extend_from_slice(path);
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let mut fr = proof[0];
    let mut sr = proof[0];
    for c in &proof[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

/// Streaming tree builder: the right edge of the tree ("compact range"), O(log n) memory.
/// The verifier uses it to get the root at every checkpoint size in one pass over the records.
#[derive(Debug, Default, Clone)]
pub struct CompactRange {
    size: u64,
    /// Perfect subtree roots, largest (leftmost) first; heights strictly decrease.
    stack: Vec<(u8, Hash)>,
}

impl CompactRange {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn push(&mut self, leaf: Hash) {
        let mut cur = (0u8, leaf);
        while let Some(&(h, left)) = self.stack.last() {
            if h != cur.0 {
                break;
            }
            self.stack.pop();
            cur = (h + 1, node_hash(&left, &cur.1));
        }
        self.stack.push(cur);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::hash::leaf_hash;
    use proptest::prelude::*;

    /// Straight transcription of RFC 9162 MTH, the oracle for everything above.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn known_answer_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| leaf_hash(&hex::decode(h).unwrap()))
        .collect()
    }

    #[test]
    fn known_answer_roots() {
        let l = known_answer_leaves();
        assert_eq!(
            hex::encode(root(&l[..], 1).unwrap()),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            hex::encode(root(&l[..], 8).unwrap()),
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
        );
        assert_eq!(
            hex::encode(root(&l[..], 0).unwrap()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn known_answer_proofs_verify() {
        let l = known_answer_leaves();
        for size in 1..=8u64 {
            let r = root(&l[..], size).unwrap();
            for i in 0..size {
                let p = inclusion_proof(&l[..], i, size).unwrap();
                assert!(verify_inclusion(&l[i as usize], i, size, &p.path, &r));
            }
            for old in 1..=size {
                let p = consistency_proof(&l[..], old, size).unwrap();
                assert!(verify_consistency(old, size, &p.old_root, &r, &p.path));
            }
        }
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let l = leaves(3);
        assert!(inclusion_proof(&l[..], 3, 3).is_err());
        assert!(inclusion_proof(&l[..], 0, 4).is_err());
        assert!(consistency_proof(&l[..], 4, 3).is_err());
        assert!(!verify_inclusion(&l[0], 5, 3, &[], &l[0]));
    }

    proptest! {
        #[test]
        fn roots_match_the_rfc_definition(n in 0u64..600) {
            let l = leaves(n);
            let expected = mth(&l);
            prop_assert_eq!(root(&l[..], n).unwrap(), expected);
            let mut c = CompactRange::new();
            for h in &l { c.push(*h); }
            prop_assert_eq!(c.root(), expected);
        }

        #[test]
        fn inclusion_round_trips_and_tampering_fails(n in 1u64..300, i in 0u64..300, flip in 0usize..64) {
            let i = i % n;
            let l = leaves(n);
            let p = inclusion_proof(&l[..], i, n).unwrap();
            prop_assert!(verify_inclusion(&p.leaf_hash, i, n, &p.path, &p.root));
            // Any single changed hash, index or size must break it.
            if !p.path.is_empty() {
                let mut bad = p.path.clone();
                let k = flip % bad.len();
                bad[k][flip % 32] ^= 1;
                prop_assert!(!verify_inclusion(&p.leaf_hash, i, n, &bad, &p.root));
                let mut short = p.path.clone();
                short.pop();
                prop_assert!(!verify_inclusion(&p.leaf_hash, i, n, &short, &p.root));
            }
            let mut leaf = p.leaf_hash;
            leaf[flip % 32] ^= 0x80;
            prop_assert!(!verify_inclusion(&leaf, i, n, &p.path, &p.root));
            if n > 1 {
                prop_assert!(!verify_inclusion(&p.leaf_hash, (i + 1) % n, n, &p.path, &p.root));
            }
        }

        #[test]
        fn consistency_round_trips_and_tampering_fails(n in 1u64..300, m in 1u64..300, flip in 0usize..64) {
            let m = 1 + (m - 1) % n;
            let l = leaves(n);
            let p = consistency_proof(&l[..], m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &p.old_root, &p.new_root, &p.path));
            if !p.path.is_empty() {
                let mut bad = p.path.clone();
                let k = flip % bad.len();
                bad[k][flip % 32] ^= 1;
                prop_assert!(!verify_consistency(m, n, &p.old_root, &p.new_root, &bad));
            }
            let mut other = p.old_root;
            other[flip % 32] ^= 1;
            prop_assert!(!verify_consistency(m, n, &other, &p.new_root, &p.path));
            // A forked tree (one different leaf before `m`) is not consistent with the original.
            let mut forked = l.clone();
            forked[(flip as u64 % m) as usize][0] ^= 1;
            let forked_root = mth(&forked);
            prop_assert!(!verify_consistency(m, n, &p.old_root, &forked_root, &p.path));
        }
    }
}
