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
use crate::tooling::first_retained;

/// The entries one segment's records imply, keyed as the [`IndexCheck`] it came from.
pub(crate) struct SegmentTally {
    keys: [RandomState; 2],
    covered: std::ops::Range<u64>,
    expected: Vec<u128>,
}

impl SegmentTally {
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
                self.expected[bucket] ^= keyed(&self.keys, &entry);
            }
        }
    }
}

fn keyed([a, b]: &[RandomState; 2], entry: &[u8]) -> u128 {
    (u128::from(a.hash_one(entry)) << 64) | u128::from(b.hash_one(entry))
}

/// Accumulates the entries the records imply, then compares them with the buckets.
pub(crate) struct IndexCheck {
    keys: [RandomState; 2],
    /// Records in `covered` must have their entries in the index.
    covered: std::ops::Range<u64>,
    expected: Vec<u128>,
    /// `expected` as it stood when the records noted reached each marked record number.
    marks: Vec<(u64, Vec<u128>)>,
}

impl IndexCheck {
    pub(crate) fn new(dir: &Path, first_retained: u64) -> Self {
        Self {
            keys: [RandomState::new(), RandomState::new()],
            covered: first_retained..watermark(dir).seq,
            expected: vec![0; BUCKET_COUNT],
            marks: Vec::new(),
        }
    }

    /// Marks that the records noted so far are those below `seq` (a segment boundary, where a
    /// sweep's `pruned` marker can land).
    pub(crate) fn mark(&mut self, seq: u64) {
        if seq <= self.covered.start || seq >= self.covered.end {
            // Nothing noted yet, or nothing noted from here on: no need to start there.
            return;
        }
        if let Some(last) = self.marks.last_mut()
            && last.0 == seq
        {
            last.1.clone_from(&self.expected);
            return;
        }
        self.marks.push((seq, self.expected.clone()));
    }

    /// Forgets the records noted since the mark at `seq` (a segment retention removed while it
    /// was read; its records are pruned now).
    pub(crate) fn undo_to(&mut self, seq: u64) {
        if seq <= self.covered.start {
            self.marks.clear();
            self.expected.iter_mut().for_each(|e| *e = 0);
        } else if let Some(i) = self.marks.iter().position(|(at, _)| *at == seq) {
            self.expected.clone_from(&self.marks[i].1);
            self.marks.truncate(i + 1);
        }
    }

    /// An empty tally of one segment's entries, to be noted on another thread and added with
    /// [`IndexCheck::add`]: the tally is a XOR per bucket, so the order of segments is free.
    pub(crate) fn segment_tally(&self) -> SegmentTally {
        SegmentTally {
            keys: self.keys.clone(),
            covered: self.covered.clone(),
            expected: vec![0; BUCKET_COUNT],
        }
    }

    /// Adds the entries a segment's tally noted.
    pub(crate) fn add(&mut self, tally: &SegmentTally) {
        for (mine, theirs) in self.expected.iter_mut().zip(&tally.expected) {
            *mine ^= theirs;
        }
    }

    fn keyed(&self, entry: &[u8]) -> u128 {
        keyed(&self.keys, entry)
    }

    /// The buckets (as paths relative to the log) whose entries differ from what the records imply,
    /// from the first retained record on. Compaction may drop entries below a marker a sweep
    /// writes while the buckets are read, so the marker is read again afterwards and the
    /// comparison repeated from there when it moved.
    pub(crate) fn mismatched_buckets(&self, dir: &Path) -> Result<Vec<String>, AuditError> {
        let mut pruned = first_retained(dir);
        let mut tries = 0;
        loop {
            let mismatched = self.mismatched_from(dir, pruned)?;
            let now = first_retained(dir);
            tries += 1;
            if now == pruned || tries == 4 {
                return Ok(mismatched);
            }
            pruned = now;
        }
    }

    fn mismatched_from(&self, dir: &Path, pruned: u64) -> Result<Vec<String>, AuditError> {
        // What the records below the start contributed; the start is a marked boundary (where a
        // marker lands), else the nearest one below it.
        let (start, noted_below) = if pruned <= self.covered.start {
            (self.covered.start, None)
        } else if pruned >= self.covered.end {
            (pruned, Some(&self.expected))
        } else {
            match self.marks.iter().rev().find(|(at, _)| *at <= pruned) {
                Some((at, expected)) => (*at, Some(expected)),
                None => (self.covered.start, None),
            }
        };
        let covered = start..self.covered.end;
        let mut mismatched = Vec::new();
        for (n, expected) in self.expected.iter().enumerate() {
            let expected = expected ^ noted_below.map_or(0, |below| below[n]);
            let (name, mut entries) = bucket_entries(dir, n)?;
            entries.retain(|(seq, _)| covered.contains(seq));
            entries.sort_unstable();
            entries.dedup();
            let held = entries
                .iter()
                .fold(0u128, |acc, (_, entry)| acc ^ self.keyed(entry));
            if held != expected {
                mismatched.push(name);
            }
        }
        Ok(mismatched)
    }
}
