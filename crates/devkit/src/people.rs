//! Deterministic synthetic people for the example registries and for tests.
//!
//! Person `i` is the same on every machine and every run: its fields come
//! from splitmix64 over `i`. National identity numbers carry valid check
//! digits and add 80 to the month, the mark Skatteetaten's synthetic (Tenor)
//! numbers use, so no number here can belong to a real person.

mod names;

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Serialize;
use time::{Date, Month};
use tollbu_policy::ids::complete_pid;

/// How many people exist: indices `0..POPULATION_SIZE`.
pub const POPULATION_SIZE: u32 = 2_000;
/// Added to the birth month in synthetic identity numbers.
pub const SYNTHETIC_MONTH_OFFSET: u32 = 80;

/// One synthetic person, serialised exactly as the population registry
/// answers `GET /persons/{pid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    #[serde(skip)]
    pub index: u32,
    pub pid: String,
    pub name: Name,
    #[serde(serialize_with = "serialize_date")]
    pub birth_date: Date,
    pub address: Address,
    pub marital_status: &'static str,
    pub citizenships: Vec<Citizenship>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Name {
    pub given: &'static str,
    pub family: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub street: String,
    pub postal_code: &'static str,
    pub city: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Citizenship {
    /// ISO 3166-1 alpha-3.
    pub country: &'static str,
    #[serde(serialize_with = "serialize_date")]
    pub since: Date,
}

struct Population {
    people: Vec<Person>,
    by_pid: HashMap<String, u32>,
}

/// Built once, on first use (a few milliseconds).
static POPULATION: LazyLock<Population> = LazyLock::new(build);

/// Person `i`, or `None` when `i >= POPULATION_SIZE`.
pub fn person(i: u32) -> Option<Person> {
    all().get(i as usize).cloned()
}

/// The identity number of person `i % POPULATION_SIZE`: total, so tests and
/// examples can name "some person" without unwrapping.
pub fn example_pid(i: u32) -> String {
    person(i % POPULATION_SIZE)
        .map(|p| p.pid)
        .unwrap_or_default()
}

/// The person with identity number `pid`, in O(1).
pub fn by_pid(pid: &str) -> Option<&'static Person> {
    let population = &*POPULATION;
    let i = *population.by_pid.get(pid)?;
    population.people.get(i as usize)
}

/// Everyone, in index order.
pub fn all() -> &'static [Person] {
    &POPULATION.people
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to make
/// invented data look varied; not for anything secret.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` for small `n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len() as u64) as usize).copied()
    }
}

/// Seeds are spread so neighbouring people and years do not correlate.
pub(crate) fn seed(i: u32, stream: u64) -> u64 {
    u64::from(i).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn build() -> Population {
    let mut people = Vec::with_capacity(POPULATION_SIZE as usize);
    let mut by_pid = HashMap::with_capacity(POPULATION_SIZE as usize);
    for i in 0..POPULATION_SIZE {
        if let Some(p) = generate(i, |pid| by_pid.contains_key(pid)) {
            by_pid.insert(p.pid.clone(), i);
            people.push(p);
        }
    }
    Population { people, by_pid }
}

fn generate(i: u32, taken: impl Fn(&str) -> bool) -> Option<Person> {
    let mut rng = SplitMix64::new(seed(i, 1));
    let year = 1940 + rng.below(76) as i32; // 1940..=2015
    let month = Month::try_from(1 + rng.below(12) as u8).ok()?;
    let day = 1 + rng.below(u64::from(month.length(year))) as u8;
    let birth_date = Date::from_calendar_date(year, month, day).ok()?;

    // Individual numbers 000-499 mark births 1900-1999, 500-999 births
    // 2000-2039. Walk from a random start until both check digits exist and
    // the number is not taken; every century range has plenty of valid ones.
    let (low, span) = if year >= 2000 { (500, 500) } else { (0, 500) };
    let start = rng.below(span);
    let (pid, individual) = (0..span).find_map(|step| {
        let individual = low + (start + step) % span;
        let nine = format!(
            "{day:02}{:02}{:02}{individual:03}",
            u8::from(month) as u32 + SYNTHETIC_MONTH_OFFSET,
            year % 100
        );
        complete_pid(&nine)
            .filter(|pid| !taken(pid))
            .map(|pid| (pid, individual))
    })?;

    // The third digit of the individual number is odd for men.
    let male = individual % 2 == 1;
    let given = rng.pick(if male {
        names::GIVEN_MALE
    } else {
        names::GIVEN_FEMALE
    })?;
    let family = rng.pick(names::FAMILY)?;
    let (postal_code, city) = rng.pick(names::POSTAL_AREAS)?;
    let street = format!("{} {}", rng.pick(names::STREETS)?, 1 + rng.below(120));

    let adult = year <= 2007;
    let marital_status = if adult {
        rng.pick(names::MARITAL_ADULT)?
    } else {
        "ugift"
    };

    let mut citizenships = Vec::with_capacity(2);
    match rng.below(100) {
        // Born Norwegian.
        0..=87 => citizenships.push(Citizenship {
            country: "NOR",
            since: birth_date,
        }),
        // Born abroad, naturalised some years later (if that is not in the future).
        88..=95 => {
            let country = rng.pick(names::OTHER_COUNTRIES)?;
            citizenships.push(Citizenship {
                country,
                since: birth_date,
            });
            let naturalised = year + 8 + rng.below(15) as i32;
            if naturalised <= 2024 {
                let since = Date::from_calendar_date(
                    naturalised,
                    Month::try_from(1 + rng.below(12) as u8).ok()?,
                    1,
                )
                .ok()?;
                citizenships.push(Citizenship {
                    country: "NOR",
                    since,
                });
            }
        }
        // Foreign citizens only.
        _ => {
            let country = rng.pick(names::OTHER_COUNTRIES)?;
            citizenships.push(Citizenship {
                country,
                since: birth_date,
            });
        }
    }

    Some(Person {
        index: i,
        pid,
        name: Name { given, family },
        birth_date,
        address: Address {
            street,
            postal_code,
            city,
        },
        marital_status,
        citizenships,
    })
}

fn serialize_date<S: serde::Serializer>(date: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn splitmix64_matches_reference_output() {
        // First outputs for seed 0 from the reference implementation
        // (https://prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
