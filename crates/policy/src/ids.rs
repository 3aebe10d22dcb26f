//! Norwegian identifiers with mod-11 check digits.
//!
//! One source of truth for the whole workspace: token validation (organisation
//! numbers in `consumer`), policy validation, and the devkit's synthetic people
//! all use these functions.

const ORGNO_WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];
const PID_WEIGHTS_1: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const PID_WEIGHTS_2: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// The mod-11 check digit over `digits` with `weights`, or `None` when the
/// remainder is 1 (no valid check digit exists for that prefix).
fn mod11_check_digit(digits: &[u32], weights: &[u32]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    match sum % 11 {
        0 => Some(0),
        1 => None,
        r => Some(11 - r),
    }
}

fn ascii_digits<const N: usize>(text: &str) -> Option<[u32; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N {
        return None;
    }
    let mut out = [0u32; N];
    for (slot, byte) in out.iter_mut().zip(bytes) {
        if !byte.is_ascii_digit() {
            return None;
        }
        *slot = u32::from(byte - b'0');
    }
    Some(out)
}

/// True when `orgno` is nine ASCII digits whose last is the correct mod-11
/// check digit (weights 3,2,7,6,5,4,3,2).
pub fn is_valid_orgno(orgno: &str) -> bool {
    let Some(d) = ascii_digits::<9>(orgno) else {
        return false;
    };
    mod11_check_digit(&d[..8], &ORGNO_WEIGHTS) == Some(d[8])
}

/// True when `pid` is an 11-digit national identity number (fødselsnummer or
/// D-number shape) whose two mod-11 check digits are correct. The birth date
/// part is not interpreted: synthetic test numbers use shifted months.
pub fn is_valid_pid(pid: &str) -> bool {
    let Some(d) = ascii_digits::<11>(pid) else {
        return false;
    };
    mod11_check_digit(&d[..9], &PID_WEIGHTS_1) == Some(d[9])
        && mod11_check_digit(&d[..10], &PID_WEIGHTS_2) == Some(d[10])
}

/// True when any 11 consecutive ASCII digits in `text` form a valid national identity number,
/// reading past the separators people write a number with (`020284-04827`, `020284.04827`,
/// `020284_04827`, `020284:04827`, a space): for free text (a caller's request id) that must not
/// carry a person's number into a log.
pub fn contains_pid(text: &str) -> bool {
    let mut window = [0u8; 11];
    let mut filled = 0usize;
    for byte in text.bytes() {
        if byte.is_ascii_digit() {
            window.copy_within(1.., 0);
            window[10] = byte;
            filled += 1;
            if filled >= 11 && std::str::from_utf8(&window).is_ok_and(is_valid_pid) {
                return true;
            }
        } else if !b"-_.: ".contains(&byte) {
            filled = 0;
        }
    }
    false
}

/// Completes nine digits into an 11-digit identity number by appending both
/// check digits, or `None` when no valid completion exists for that prefix.
pub fn complete_pid(first_nine: &str) -> Option<String> {
    let d = ascii_digits::<9>(first_nine)?;
    let k1 = mod11_check_digit(&d, &PID_WEIGHTS_1)?;
    let mut ten = [0u32; 10];
    ten[..9].copy_from_slice(&d);
    ten[9] = k1;
    let k2 = mod11_check_digit(&ten, &PID_WEIGHTS_2)?;
    Some(format!("{first_nine}{k1}{k2}"))
}

/// Completes eight digits into a nine-digit organisation number, or `None`
/// when that prefix has no valid check digit.
pub fn complete_orgno(first_eight: &str) -> Option<String> {
    let d = ascii_digits::<8>(first_eight)?;
    let k = mod11_check_digit(&d, &ORGNO_WEIGHTS)?;
    Some(format!("{first_eight}{k}"))
}

/// Splits an ISO 6523 actor id `0192:<orgno>` into the organisation number,
/// refusing other schemes and numbers with a bad check digit.
pub fn orgno_from_iso6523(id: &str) -> Option<&str> {
    let orgno = id.strip_prefix("0192:")?;
    is_valid_orgno(orgno).then_some(orgno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_organisation_numbers() {
        // Published numbers of public bodies (Digdir, Brønnøysundregistrene).
        assert!(is_valid_orgno("991825827"));
        assert!(is_valid_orgno("974760673"));
        assert!(!is_valid_orgno("991825828"));
        assert!(!is_valid_orgno("99182582"));
        assert!(!is_valid_orgno("99182582a"));
        assert!(!is_valid_orgno("９９１８２５８２７"));
    }

    #[test]
    fn an_identity_number_is_found_anywhere_in_free_text() {
        assert!(contains_pid("01819010001"));
        assert!(contains_pid("case-01819010001-x"));
        assert!(
            contains_pid("9901819010001"),
            "inside a longer run of digits"
        );
        assert!(!contains_pid("01819010002"));
        assert!(!contains_pid("0181901000"));
        assert!(!contains_pid("4f1c2a9e-6d3b-4b8a-9c1e-123456789012"));
        for written in [
            "018190-10001",
            "018190.10001",
            "case_018190_10001",
            "01:81:90:100:01",
            "018190 10001",
        ] {
            assert!(contains_pid(written), "{written}");
        }
        assert!(!contains_pid("018190x10001"), "a letter ends the run");
    }

    #[test]
    fn completed_numbers_validate_and_one_digit_changes_are_caught() {
        // Synthetic (month + 80). `010190123` has no valid completion, so the
        // original prefix made this test fail before asserting anything.
        assert_eq!(complete_pid("010190123"), None);
        let pid = complete_pid("018190100").unwrap_or_default();
        assert_eq!(pid, "01819010001");
        assert_eq!(pid.len(), 11);
        assert!(is_valid_pid(&pid));
        for i in 0..11 {
            let mut bytes = pid.clone().into_bytes();
            bytes[i] = if bytes[i] == b'9' { b'0' } else { bytes[i] + 1 };
            let changed = String::from_utf8(bytes).unwrap_or_default();
            assert!(!is_valid_pid(&changed), "{changed} should fail");
        }
    }

    #[test]
    fn iso6523_prefix_is_required() {
        assert_eq!(orgno_from_iso6523("0192:991825827"), Some("991825827"));
        assert_eq!(orgno_from_iso6523("0088:991825827"), None);
        assert_eq!(orgno_from_iso6523("991825827"), None);
        assert_eq!(orgno_from_iso6523("0192:991825828"), None);
    }
}
