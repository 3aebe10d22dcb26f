//! `verify`'s check of the subject and consumer index against the records. Queries, the citizen
//! report and the console answer from the index; the tree proves the records, not the index. So
//! an index that lost entries (a deleted or truncated bucket) or had them rewritten would make
//! those answers leave out requests while `verify` said the log was fine.
//!
//! Per bucket, a keyed hash of the *set* of entries the records imply is compared with the same
//! hash of the entries the bucket holds, over the records the index claims to cover (from the
//! first retained record to the watermark). The key is drawn afresh for every run, so nobody can
//! prepare entries that cancel out; duplicates, which a crash can leave, count once.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::Path;

use crate::error::AuditError;
use crate::index::{BUCKET_COUNT, IndexKind, bucket_entries, entry_bytes, watermark};
use crate::record::Record;

/// Accumulates the entries the records imply, then compares them with the buckets.
pub(crate) struct IndexCheck {
    keys: [RandomState; 2],
    /// Records in `covered` must have their entries in the index.
    covered: std::ops::Range<u64>,
    expected: Vec<u128>,
}

impl IndexCheck {
    pub(crate) fn new(dir: &Path, first_retained: u64) -> Self {
        Self {
            keys: [RandomState::new(), RandomState::new()],
            covered: first_retained..watermark(dir).seq,
            expected: vec![0; BUCKET_COUNT],
        }
    }

    /// Notes the entries record `seq` (at `offset` in the segment starting at `segment`) implies.
    pub(crate) fn note_record(&mut self, seq: u64, segment: u64, offset: u64, record: &Record) {
        if !self.covered.contains(&seq) {
            return;
        }
        for (kind, key) in [
            (IndexKind::Subject, &record.subject),
            (IndexKind::Consumer, &record.consumer),
        ] {
            if let Some(key) = key {
                let (bucket, entry) = entry_bytes(kind, key, seq, segment, offset);
                self.expected[bucket] ^= self.keyed(&entry);
            }
        }
    }

    fn keyed(&self, entry: &[u8]) -> u128 {
        let [a, b] = &self.keys;
        (u128::from(a.hash_one(entry)) << 64) | u128::from(b.hash_one(entry))
    }

    /// The buckets (as paths relative to the log) whose entries differ from what the records imply.
    pub(crate) fn mismatched_buckets(&self, dir: &Path) -> Result<Vec<String>, AuditError> {
        let mut mismatched = Vec::new();
        for (n, expected) in self.expected.iter().enumerate() {
            let (name, mut entries) = bucket_entries(dir, n)?;
            entries.retain(|(seq, _)| self.covered.contains(seq));
            entries.sort_unstable();
            entries.dedup();
            let held = entries
                .iter()
                .fold(0u128, |acc, (_, entry)| acc ^ self.keyed(entry));
            if held != *expected {
                mismatched.push(name);
            }
        }
        Ok(mismatched)
    }
}
