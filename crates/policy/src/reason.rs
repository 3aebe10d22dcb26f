//! Deny reasons: the stable codes clients, dashboards and the audit log use.

use std::fmt;

/// Why a request was denied. Codes are stable API: never rename one; add new
/// variants instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DenyReason {
    /// No grant names this consumer for this operation (and none admits any
    /// consumer with consent), or the service/operation is unknown.
    NoGrant,
    /// A `[[denial]]` names the consumer or supplier. Beats every grant.
    ExplicitlyDenied,
    /// The token names a supplier the grant does not allow to act.
    SupplierNotAllowed,
    /// The grant's `valid_from` lies in the future.
    GrantNotYetValid,
    /// The grant's `valid_to` has passed.
    GrantExpired,
    /// The token lacks a scope the grant requires.
    ScopeMissing,
    /// No `Tollbu-Purpose` was declared.
    PurposeMissing,
    /// The declared purpose is not one the grant lists.
    PurposeNotAllowed,
    /// The operation concerns a person but no subject was given.
    SubjectMissing,
    /// The subject fails its check digits, or is given more than once.
    SubjectInvalid,
    /// The grant requires consent and the token carries none.
    ConsentMissing,
    /// A consent exists, but from another person than the subject.
    ConsentWrongSubject,
    /// A consent exists, but it was given to another organisation.
    ConsentWrongConsumer,
    /// A consent exists, but no right covers the resource, action or metadata.
    ConsentNotCovering,
    /// A consent exists, but its `validTo` has passed.
    ConsentExpired,
    /// A consent exists, but its `consented` time lies in the future.
    ConsentNotYetValid,
    /// The token is restricted to one person (`pid`) and the request concerns another, or none.
    TokenPersonMismatch,
}

impl DenyReason {
    /// Every reason, in the order the engine checks them.
    pub const ALL: &'static [DenyReason] = &[
        DenyReason::NoGrant,
        DenyReason::ExplicitlyDenied,
        DenyReason::SupplierNotAllowed,
        DenyReason::GrantNotYetValid,
        DenyReason::GrantExpired,
        DenyReason::ScopeMissing,
        DenyReason::PurposeMissing,
        DenyReason::PurposeNotAllowed,
        DenyReason::SubjectMissing,
        DenyReason::SubjectInvalid,
        DenyReason::ConsentMissing,
        DenyReason::ConsentWrongSubject,
        DenyReason::ConsentWrongConsumer,
        DenyReason::ConsentNotCovering,
        DenyReason::ConsentExpired,
        DenyReason::ConsentNotYetValid,
        DenyReason::TokenPersonMismatch,
    ];

    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::NoGrant => "no_grant",
            DenyReason::ExplicitlyDenied => "explicitly_denied",
            DenyReason::SupplierNotAllowed => "supplier_not_allowed",
            DenyReason::GrantNotYetValid => "grant_not_yet_valid",
            DenyReason::GrantExpired => "grant_expired",
            DenyReason::ScopeMissing => "scope_missing",
            DenyReason::PurposeMissing => "purpose_missing",
            DenyReason::PurposeNotAllowed => "purpose_not_allowed",
            DenyReason::SubjectMissing => "subject_missing",
            DenyReason::SubjectInvalid => "subject_invalid",
            DenyReason::ConsentMissing => "consent_missing",
            DenyReason::ConsentWrongSubject => "consent_wrong_subject",
            DenyReason::ConsentWrongConsumer => "consent_wrong_consumer",
            DenyReason::ConsentNotCovering => "consent_not_covering",
            DenyReason::ConsentExpired => "consent_expired",
            DenyReason::ConsentNotYetValid => "consent_not_yet_valid",
            DenyReason::TokenPersonMismatch => "token_person_mismatch",
        }
    }

    /// Parses a code back into a reason (test files use codes).
    pub fn from_code(code: &str) -> Option<DenyReason> {
        DenyReason::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// How far a grant got before failing; when no grant applies, the
    /// failure with the highest rank is reported as the most specific one.
    pub(crate) fn rank(self) -> u8 {
        match self {
            DenyReason::NoGrant | DenyReason::ExplicitlyDenied => 0,
            DenyReason::SupplierNotAllowed => 1,
            DenyReason::GrantNotYetValid | DenyReason::GrantExpired => 2,
            DenyReason::ScopeMissing => 3,
            DenyReason::PurposeMissing | DenyReason::PurposeNotAllowed => 4,
            DenyReason::SubjectMissing | DenyReason::SubjectInvalid => 5,
            DenyReason::ConsentMissing => 6,
            DenyReason::ConsentWrongSubject => 7,
            DenyReason::ConsentWrongConsumer => 8,
            DenyReason::ConsentNotCovering => 9,
            DenyReason::ConsentExpired | DenyReason::ConsentNotYetValid => 10,
            // Decided before any grant.
            DenyReason::TokenPersonMismatch => 11,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for r in DenyReason::ALL {
            let code = r.code();
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(seen.insert(code), "duplicate {code}");
            assert_eq!(DenyReason::from_code(code), Some(*r));
        }
        assert_eq!(DenyReason::from_code("nope"), None);
    }
}
