//! The income register: `GET /persons/{pid}/income/{year}`, with invented
//! but plausible yearly income (salary, benefits, pensions, capital income).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use tollbu_policy::ids::complete_orgno;

use super::Refusal;
use crate::people::{Person, SplitMix64, seed};
use crate::respond;

pub const FIRST_INCOME_YEAR: u16 = 2015;
pub const LAST_INCOME_YEAR: u16 = 2025;
/// Pays benefits and pensions. Organisation number of NAV, a public body.
const PUBLIC_PAYER: &str = "889640782";
/// Pays capital income: the devkit's demo bank.
const BANK_PAYER: &str = "310000027";

/// One person's income for one year, as the registry serialises it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Income {
    pub pid: String,
    pub year: u16,
    pub total: u64,
    pub items: Vec<IncomeItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncomeItem {
    /// `salary`, `benefit`, `pension` or `capital_income`.
    pub kind: &'static str,
    pub amount: u64,
    /// Organisation number of the payer.
    pub payer: String,
}

/// `person`'s income in `year`, or `None` outside the register's years.
/// Minors before working age have a record with no items.
pub fn income(person: &Person, year: u16) -> Option<Income> {
    if !(FIRST_INCOME_YEAR..=LAST_INCOME_YEAR).contains(&year) {
        return None;
    }
    // Stable per person: employer and salary level. Varies per year: extras.
    let mut stable = SplitMix64::new(seed(person.index, 2));
    let mut yearly = SplitMix64::new(seed(person.index, 1_000 + u64::from(year)));
    let age = i32::from(year) - person.birth_date.year();
    let employer = employer(&mut stable);
    let base_salary = 300_000 + stable.below(800_000);
    // Wages rise about 3 % a year from 2015.
    let growth = 1.03_f64.powi(i32::from(year - FIRST_INCOME_YEAR));
    let round = |x: f64| ((x / 100.0).round() as u64) * 100;

    let mut items = Vec::new();
    let mut add = |kind, amount: u64, payer: &str| {
        if amount > 0 {
            items.push(IncomeItem {
                kind,
                amount,
                payer: payer.to_owned(),
            });
        }
    };
    match age {
        ..16 => {}
        16..=19 => add(
            "salary",
            round(20_000.0 + yearly.below(100_000) as f64),
            &employer,
        ),
        20..=66 => {
            add("salary", round(base_salary as f64 * growth), &employer);
            if yearly.below(100) < 15 {
                add(
                    "benefit",
                    round(10_000.0 + yearly.below(140_000) as f64),
                    PUBLIC_PAYER,
                );
            }
        }
        _ => add(
            "pension",
            round((200_000 + stable.below(200_000)) as f64 * growth),
            PUBLIC_PAYER,
        ),
    }
    if age >= 18 && yearly.below(100) < 10 {
        add(
            "capital_income",
            round(1_000.0 + yearly.below(60_000) as f64),
            BANK_PAYER,
        );
    }
    Some(Income {
        pid: person.pid.clone(),
        year,
        total: items.iter().map(|i| i.amount).sum(),
        items,
    })
}

/// A synthetic employer: a valid organisation number in the 31xxxxxxx range
/// used for synthetic organisations.
fn employer(rng: &mut SplitMix64) -> String {
    loop {
        if let Some(orgno) = complete_orgno(&format!("31{:06}", rng.below(1_000_000))) {
            return orgno;
        }
    }
}

pub(super) fn route(req: &Request<Bytes>) -> Response<Full<Bytes>> {
    super::serve(req, |segments| {
        let ["persons", pid, "income", year] = segments else {
            return Err(Refusal::UnknownPath);
        };
        super::require_get(req)?;
        let person = super::lookup(pid)?;
        let year = parse_year(year)?;
        let record = income(person, year).ok_or(Refusal::UnknownYear(year))?;
        Ok(respond::json(StatusCode::OK, &serde_json::json!(record)))
    })
}

fn parse_year(text: &str) -> Result<u16, Refusal> {
    if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::MalformedYear(text.to_owned()));
    }
    text.parse()
        .map_err(|_| Refusal::MalformedYear(text.to_owned()))
}
