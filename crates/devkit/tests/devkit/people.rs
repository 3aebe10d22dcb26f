use std::collections::HashSet;

use tollbu_devkit::people::{self, POPULATION_SIZE, SYNTHETIC_MONTH_OFFSET};
use tollbu_policy::ids::is_valid_pid;

#[test]
fn everyone_has_a_valid_unique_synthetic_identity_number() {
    let all = people::all();
    assert_eq!(all.len(), POPULATION_SIZE as usize);
    assert!(all.len() >= 1_000);
    let mut seen = HashSet::new();
    for (i, p) in all.iter().enumerate() {
        assert_eq!(p.index as usize, i);
        assert!(is_valid_pid(&p.pid), "{}", p.pid);
        assert!(seen.insert(p.pid.clone()), "duplicate {}", p.pid);
        // ddMMyy with the synthetic month offset, matching the birth date.
        let month: u32 = p.pid[2..4].parse().unwrap();
        assert_eq!(
            month,
            u32::from(u8::from(p.birth_date.month())) + SYNTHETIC_MONTH_OFFSET
        );
        let day: u8 = p.pid[0..2].parse().unwrap();
        assert_eq!(day, p.birth_date.day());
        let yy: i32 = p.pid[4..6].parse().unwrap();
        assert_eq!(yy, p.birth_date.year() % 100);
        // Individual number range encodes the century.
        let individual: u32 = p.pid[6..9].parse().unwrap();
        assert_eq!(individual >= 500, p.birth_date.year() >= 2000, "{}", p.pid);
        assert!(!p.citizenships.is_empty());
        assert!(p.citizenships.iter().all(|c| c.since >= p.birth_date));
    }
}

#[test]
fn people_are_deterministic_and_found_by_pid() {
    for i in [0, 1, 2, 500, POPULATION_SIZE - 1] {
        let p = people::person(i).unwrap();
        assert_eq!(people::person(i).unwrap(), p);
        assert_eq!(people::by_pid(&p.pid).unwrap(), &p);
        assert_eq!(people::example_pid(i), p.pid);
    }
    assert_eq!(people::person(POPULATION_SIZE), None);
    assert_eq!(people::example_pid(POPULATION_SIZE), people::example_pid(0));
    assert!(people::by_pid("01010112345").is_none());
}

#[test]
fn pinned_people_do_not_drift() {
    // The demo issuer config names persons 0 and 1 in its consents; if the
    // generator changes, those pids (and this test) must be updated together.
    assert_eq!(people::example_pid(0), "05885624741");
    assert_eq!(people::example_pid(1), "30877747758");
}

#[test]
fn person_json_has_the_registry_shape() {
    let p = people::person(3).unwrap();
    let v = serde_json::to_value(&p).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "address",
            "birth_date",
            "citizenships",
            "marital_status",
            "name",
            "pid"
        ]
    );
    assert_eq!(v["pid"], p.pid);
    assert_eq!(v["name"]["given"], p.name.given);
    assert!(v["address"]["postal_code"].as_str().unwrap().len() == 4);
    let birth = v["birth_date"].as_str().unwrap();
    assert_eq!(birth.len(), 10);
    assert_eq!(&birth[4..5], "-");
    assert!(v["citizenships"][0]["country"].as_str().unwrap().len() == 3);
}
