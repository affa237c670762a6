//! The credit lifecycle's rules, as pure functions over plain values: business days, when an
//! installment is overdue, its delinquency bucket, what accrual charges, and how a payment is
//! split between an installment's charges and its principal. No I/O and no wall clock: the
//! business date is an argument. `lifecycle` and `accrual` load, call these, and write.
//!
//! Money: amounts are `numeric(20, 2)`; every charge is computed at full precision and
//! rounded once, to the cent, half to even (banker's rounding), so that rounding does not
//! lean one way over many charges.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use time::{Date, Duration, Weekday};

use paystream_schemas::Allocation;

/// Days a month counts for pro rata die interest (the commercial month of Brazilian
/// consumer credit: 1% a month is 1/30 % a day).
const DAYS_PER_MONTH: i64 = 30;

/// Rounds an amount of money to the cent, half to even.
pub fn round_money(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven)
}

/// A business calendar: Saturdays, Sundays and its holidays are not business days.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
}

impl Calendar {
    /// A calendar with these holidays.
    pub fn new(holidays: impl IntoIterator<Item = Date>) -> Self {
        Self { holidays: holidays.into_iter().collect() }
    }

    /// Whether `day` is a business day.
    pub fn is_business_day(&self, day: Date) -> bool {
        !matches!(day.weekday(), Weekday::Saturday | Weekday::Sunday) && !self.holidays.contains(&day)
    }

    /// The first business day after `day`.
    pub fn next_business_day(&self, day: Date) -> Date {
        let mut d = day + Duration::days(1);
        while !self.is_business_day(d) {
            d += Duration::days(1);
        }
        d
    }

    /// The last business day before `day`.
    pub fn previous_business_day(&self, day: Date) -> Date {
        let mut d = day - Duration::days(1);
        while !self.is_business_day(d) {
            d -= Duration::days(1);
        }
        d
    }

    /// The latest due date that is overdue on `business_date`: an installment due on a day
    /// that is not a business day may be paid on the next business day without penalty, so
    /// it is overdue once that day has passed. Due dates on or before the last business day
    /// before `business_date` are overdue; later ones are not.
    pub fn overdue_cutoff(&self, business_date: Date) -> Date {
        self.previous_business_day(business_date)
    }
}

/// Delinquency buckets by days past due (the `paystream.delinquency` view's `bucket`).
pub fn bucket(days_past_due: i64) -> &'static str {
    match days_past_due {
        i64::MIN..=30 => "1-30",
        31..=60 => "31-60",
        61..=90 => "61-90",
        _ => "90+",
    }
}

/// What an installment's payments pay, one part after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The one-time late fee.
    LateFee,
    /// Late interest.
    Interest,
    /// The installment's principal.
    Principal,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Self::LateFee => "late_fee",
            Self::Interest => "interest",
            Self::Principal => "principal",
        }
    }
}

/// The order in which a payment pays an installment's parts (a contract's
/// `allocation_order`: `late_fee,interest,principal` by default, as the seed engine and
/// Fineract's default strategy do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationOrder(pub [Component; 3]);

impl Default for AllocationOrder {
    fn default() -> Self {
        Self([Component::LateFee, Component::Interest, Component::Principal])
    }
}

impl fmt::Display for AllocationOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.0[0].as_str(), self.0[1].as_str(), self.0[2].as_str())
    }
}

impl FromStr for AllocationOrder {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<Component> = s
            .split(',')
            .map(|p| match p.trim() {
                "late_fee" => Ok(Component::LateFee),
                "interest" => Ok(Component::Interest),
                "principal" => Ok(Component::Principal),
                other => Err(format!("unknown allocation component {other:?}")),
            })
            .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            [a, b, c] if a != b && b != c && a != c => Ok(Self([*a, *b, *c])),
            _ => Err(format!("allocation order {s:?} must name late_fee, interest and principal once each")),
        }
    }
}

/// Amounts per part of an installment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Parts {
    /// The late fee.
    pub late_fee: Decimal,
    /// Late interest.
    pub interest: Decimal,
    /// Principal.
    pub principal: Decimal,
}

impl Parts {
    /// All three.
    pub fn total(&self) -> Decimal {
        self.late_fee + self.interest + self.principal
    }

    fn get_mut(&mut self, c: Component) -> &mut Decimal {
        match c {
            Component::LateFee => &mut self.late_fee,
            Component::Interest => &mut self.interest,
            Component::Principal => &mut self.principal,
        }
    }

    fn get(&self, c: Component) -> Decimal {
        match c {
            Component::LateFee => self.late_fee,
            Component::Interest => self.interest,
            Component::Principal => self.principal,
        }
    }

    /// As the event carries it, with what was kept as credit.
    pub fn allocation(&self, credit: Decimal) -> Allocation {
        Allocation { late_fee: self.late_fee, interest: self.interest, principal: self.principal, credit }
    }
}

/// Splits `amount` over what is owed, part by part in `order`: each part is paid in full
/// before the next gets anything. Returns the split and what is left over (beyond what is
/// owed). Nothing negative is taken: a negative `owed` part counts as zero.
pub fn allocate(amount: Decimal, owed: Parts, order: AllocationOrder) -> (Parts, Decimal) {
    let mut left = amount.max(Decimal::ZERO);
    let mut split = Parts::default();
    for c in order.0 {
        let take = left.min(owed.get(c).max(Decimal::ZERO));
        *split.get_mut(c) = take;
        left -= take;
    }
    (split, left)
}

/// Takes `amount` back from what a payment paid (`paid`), in the reverse of the order it
/// was paid in: the part paid last is taken back first, so a full reversal takes back
/// exactly the split and a partial one leaves the charges paid longest.
pub fn unallocate(amount: Decimal, paid: Parts, order: AllocationOrder) -> Parts {
    let mut left = amount.max(Decimal::ZERO);
    let mut back = Parts::default();
    for c in order.0.into_iter().rev() {
        let take = left.min(paid.get(c).max(Decimal::ZERO));
        *back.get_mut(c) = take;
        left -= take;
    }
    back
}

/// A contract's late-payment terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The one-time late fee, as a fraction of the overdue principal (0.02: the 2% cap of
    /// Brazilian consumer credit, Código de Defesa do Consumidor art. 52 §1).
    pub late_fee_rate: Decimal,
    /// Late interest a month, charged pro rata die (0.01: 1% a month).
    pub monthly_interest_rate: Decimal,
}

impl Default for Terms {
    fn default() -> Self {
        Self { late_fee_rate: Decimal::new(2, 2), monthly_interest_rate: Decimal::new(1, 2) }
    }
}

/// What accrual needs of an overdue installment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdue {
    /// What is due of principal.
    pub amount_due: Decimal,
    /// What has been paid of it.
    pub amount_paid: Decimal,
    /// Its due date.
    pub due_date: Date,
    /// The last day interest is charged for; `None` before the first accrual.
    pub accrued_through: Option<Date>,
}

/// What one accrual run charges an installment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charges {
    /// The overdue principal the charges are computed on.
    pub base: Decimal,
    /// The late fee charged now (zero when it was charged before).
    pub late_fee: Decimal,
    /// Late interest charged now.
    pub interest: Decimal,
    /// The days of interest it covers (since `accrued_through`, or the due date).
    pub days: i64,
}

/// Charges an overdue installment for `business_date`: the late fee once (at its first
/// accrual), and simple interest on the overdue principal for each calendar day since the
/// last day charged, so that days missed are caught up in one charge. Interest does not
/// compound (it is computed on principal, never on charges). A date at or before the last
/// day charged charges nothing.
pub fn accrue(installment: &Overdue, terms: &Terms, business_date: Date) -> Charges {
    let base = (installment.amount_due - installment.amount_paid).max(Decimal::ZERO);
    let first = installment.accrued_through.is_none();
    let from = installment.accrued_through.unwrap_or(installment.due_date);
    let days = (business_date - from).whole_days().max(0);
    let late_fee = if first && days > 0 { round_money(base * terms.late_fee_rate) } else { Decimal::ZERO };
    let interest =
        round_money(base * terms.monthly_interest_rate * Decimal::from(days) / Decimal::from(DAYS_PER_MONTH));
    Charges { base, late_fee, interest, days }
}

/// A renegotiated schedule: `total` in `count` monthly installments from `first_due`, equal
/// to the cent, the last taking what rounding leaves (so that they add up to `total`
/// exactly); a due day past a month's end falls on its last day.
pub fn schedule(total: Decimal, count: u32, first_due: Date) -> Vec<(Date, Decimal)> {
    let count = count.max(1);
    let each = (total / Decimal::from(count)).round_dp_with_strategy(2, RoundingStrategy::ToZero);
    let mut out = Vec::with_capacity(count as usize);
    for k in 0..count {
        let amount = if k + 1 == count { total - each * Decimal::from(count - 1) } else { each };
        out.push((add_months(first_due, k), amount));
    }
    out
}

fn add_months(day: Date, months: u32) -> Date {
    let index = day.month() as u32 - 1 + months;
    let year = day.year() + (index / 12) as i32;
    let month = time::Month::try_from((index % 12 + 1) as u8).unwrap_or(time::Month::December);
    let last = month.length(year);
    Date::from_calendar_date(year, month, day.day().min(last)).unwrap_or(day)
}

/// What a renegotiation replaces: the open parts of the installments it takes over, less a
/// discount no larger than what they owe. `None` when the discount is negative or exceeds
/// what is owed, or nothing is owed.
pub fn renegotiated_total(owed: &[Parts], discount: Decimal) -> Option<(Decimal, Decimal)> {
    let outstanding: Decimal = owed.iter().map(Parts::total).sum();
    (outstanding > Decimal::ZERO && discount >= Decimal::ZERO && discount < outstanding)
        .then(|| (outstanding, outstanding - discount))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    fn d(s: &str) -> Decimal {
        s.parse().expect("a decimal")
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        // 2026-04-03 is Good Friday, a national holiday in Brazil.
        let cal = Calendar::new([date!(2026 - 04 - 03)]);
        assert!(cal.is_business_day(date!(2026 - 04 - 02)));
        assert!(!cal.is_business_day(date!(2026 - 04 - 03)));
        assert!(!cal.is_business_day(date!(2026 - 04 - 04)));
        assert_eq!(cal.next_business_day(date!(2026 - 04 - 02)), date!(2026 - 04 - 06));
        assert_eq!(cal.previous_business_day(date!(2026 - 04 - 06)), date!(2026 - 04 - 02));
    }

    #[test]
    fn a_due_date_on_a_non_business_day_is_not_overdue_before_the_next_business_day_passes() {
        let cal = Calendar::default();
        // Due Saturday 2026-02-14: payable on Monday the 16th; overdue on Tuesday the 17th.
        let due = date!(2026 - 02 - 14);
        assert!(due > cal.overdue_cutoff(date!(2026 - 02 - 16)), "Monday: still payable");
        assert!(due <= cal.overdue_cutoff(date!(2026 - 02 - 17)), "Tuesday: overdue");
        // Due on a business day: overdue the next business day.
        let due = date!(2026 - 02 - 10);
        assert!(due > cal.overdue_cutoff(date!(2026 - 02 - 10)));
        assert!(due <= cal.overdue_cutoff(date!(2026 - 02 - 11)));
    }

    #[test]
    fn buckets() {
        assert_eq!(
            [bucket(1), bucket(30), bucket(31), bucket(60), bucket(61), bucket(90), bucket(91)],
            ["1-30", "1-30", "31-60", "31-60", "61-90", "61-90", "90+"]
        );
    }

    #[test]
    fn allocation_orders_parse_and_print() {
        let order: AllocationOrder = "principal,interest,late_fee".parse().expect("valid");
        assert_eq!(order.to_string(), "principal,interest,late_fee");
        assert_eq!(AllocationOrder::default().to_string(), "late_fee,interest,principal");
        assert!("principal,principal,late_fee".parse::<AllocationOrder>().is_err());
        assert!("principal,interest".parse::<AllocationOrder>().is_err());
        assert!("fees,interest,principal".parse::<AllocationOrder>().is_err());
    }

    #[test]
    fn a_payment_pays_the_late_fee_then_interest_then_principal() {
        let owed = Parts { late_fee: d("2.00"), interest: d("1.50"), principal: d("100.00") };
        let (split, rest) = allocate(d("50.00"), owed, AllocationOrder::default());
        assert_eq!(split, Parts { late_fee: d("2.00"), interest: d("1.50"), principal: d("46.50") });
        assert_eq!(rest, Decimal::ZERO);
        let (split, rest) = allocate(d("1.00"), owed, AllocationOrder::default());
        assert_eq!(split, Parts { late_fee: d("1.00"), interest: Decimal::ZERO, principal: Decimal::ZERO });
        assert_eq!(rest, Decimal::ZERO);
        let (split, rest) = allocate(d("110.00"), owed, AllocationOrder::default());
        assert_eq!(split, owed);
        assert_eq!(rest, d("6.50"));
        let principal_first: AllocationOrder = "principal,interest,late_fee".parse().expect("valid");
        let (split, _) = allocate(d("101.00"), owed, principal_first);
        assert_eq!(split, Parts { late_fee: Decimal::ZERO, interest: d("1.00"), principal: d("100.00") });
    }

    #[test]
    fn a_reversal_takes_back_what_was_paid_last_first() {
        let paid = Parts { late_fee: d("2.00"), interest: d("1.50"), principal: d("46.50") };
        let order = AllocationOrder::default();
        assert_eq!(unallocate(d("50.00"), paid, order), paid, "a full reversal takes back exactly the split");
        assert_eq!(
            unallocate(d("47.00"), paid, order),
            Parts { late_fee: Decimal::ZERO, interest: d("0.50"), principal: d("46.50") }
        );
    }

    #[test]
    fn accrual_charges_the_fee_once_and_interest_per_day() {
        let terms = Terms::default();
        let mut inst = Overdue {
            amount_due: d("350.00"),
            amount_paid: d("50.00"),
            due_date: date!(2026 - 02 - 10),
            accrued_through: None,
        };
        let first = accrue(&inst, &terms, date!(2026 - 02 - 11));
        // 2% of 300.00; 300.00 * 1% / 30 * 1 day = 0.10.
        assert_eq!(first, Charges { base: d("300.00"), late_fee: d("6.00"), interest: d("0.10"), days: 1 });
        inst.accrued_through = Some(date!(2026 - 02 - 11));
        // Five days missed (Thursday to Monday) are caught up in one charge, without the fee.
        let later = accrue(&inst, &terms, date!(2026 - 02 - 16));
        assert_eq!(later, Charges { base: d("300.00"), late_fee: Decimal::ZERO, interest: d("0.50"), days: 5 });
        // The same date again, or an earlier one, charges nothing.
        inst.accrued_through = Some(date!(2026 - 02 - 16));
        let again = accrue(&inst, &terms, date!(2026 - 02 - 16));
        assert_eq!((again.late_fee, again.interest, again.days), (Decimal::ZERO, Decimal::ZERO, 0));
        assert_eq!(accrue(&inst, &terms, date!(2026 - 02 - 12)).interest, Decimal::ZERO);
    }

    #[test]
    fn accrual_rounds_half_to_even_once() {
        // 0.75 * 2% = 0.015 -> 0.02 (half to even: 1 is odd, goes up); 0.25 * 2% = 0.005 -> 0.00.
        let terms = Terms::default();
        let inst = |due: &str| Overdue {
            amount_due: d(due),
            amount_paid: Decimal::ZERO,
            due_date: date!(2026 - 02 - 10),
            accrued_through: None,
        };
        assert_eq!(accrue(&inst("0.75"), &terms, date!(2026 - 02 - 11)).late_fee, d("0.02"));
        assert_eq!(accrue(&inst("0.25"), &terms, date!(2026 - 02 - 11)).late_fee, d("0.00"));
        assert_eq!(round_money(d("0.125")), d("0.12"));
        assert_eq!(round_money(d("0.135")), d("0.14"));
    }

    #[test]
    fn schedules_add_up_and_keep_month_ends() {
        let plan = schedule(d("1000.00"), 3, date!(2026 - 01 - 31));
        assert_eq!(
            plan,
            vec![
                (date!(2026 - 01 - 31), d("333.33")),
                (date!(2026 - 02 - 28), d("333.33")),
                (date!(2026 - 03 - 31), d("333.34"))
            ]
        );
        let plan = schedule(d("0.05"), 12, date!(2026 - 11 - 10));
        assert_eq!(plan.iter().map(|(_, a)| *a).sum::<Decimal>(), d("0.05"));
        assert_eq!(plan[2].0, date!(2027 - 01 - 10));
    }

    #[test]
    fn renegotiation_totals() {
        let owed = [
            Parts { late_fee: d("2.00"), interest: d("1.00"), principal: d("100.00") },
            Parts { late_fee: Decimal::ZERO, interest: Decimal::ZERO, principal: d("100.00") },
        ];
        assert_eq!(renegotiated_total(&owed, d("3.00")), Some((d("203.00"), d("200.00"))));
        assert_eq!(renegotiated_total(&owed, d("203.00")), None, "a discount of everything is a write-off");
        assert_eq!(renegotiated_total(&owed, d("-1")), None);
        assert_eq!(renegotiated_total(&[], Decimal::ZERO), None);
    }

    fn money() -> impl Strategy<Value = Decimal> {
        (0i64..10_000_000).prop_map(|c| Decimal::new(c, 2))
    }

    proptest! {
        /// A split never takes more than the amount or more than a part owes, and what it
        /// takes plus what is left is the amount.
        #[test]
        fn allocation_conserves_money(amount in money(), fee in money(), interest in money(), principal in money()) {
            let owed = Parts { late_fee: fee, interest, principal };
            let (split, rest) = allocate(amount, owed, AllocationOrder::default());
            prop_assert_eq!(split.total() + rest, amount);
            prop_assert!(split.late_fee <= fee && split.interest <= interest && split.principal <= principal);
            prop_assert!(rest >= Decimal::ZERO);
            prop_assert!(rest.is_zero() || split == owed);
            // Taking it all back returns exactly the split.
            prop_assert_eq!(unallocate(split.total(), split, AllocationOrder::default()), split);
        }

        /// Charges are never negative, accrual for the same date twice charges nothing the
        /// second time, and catching up N days at once charges what N single days would, to
        /// within the rounding of each charge.
        #[test]
        fn accrual_is_idempotent_and_catches_up(due in 1i64..10_000_000, paid in 0i64..10_000_000, days in 1i64..40) {
            let terms = Terms::default();
            let start = time::macros::date!(2026 - 01 - 15);
            let inst = Overdue {
                amount_due: Decimal::new(due, 2),
                amount_paid: Decimal::new(paid.min(due), 2),
                due_date: start,
                accrued_through: Some(start),
            };
            let at = start + Duration::days(days);
            let once = accrue(&inst, &terms, at);
            prop_assert!(once.interest >= Decimal::ZERO && once.late_fee.is_zero());
            let after = Overdue { accrued_through: Some(at), ..inst };
            prop_assert_eq!(accrue(&after, &terms, at).interest, Decimal::ZERO);
            let mut daily = Decimal::ZERO;
            let mut step = inst;
            for k in 1..=days {
                let day = start + Duration::days(k);
                daily += accrue(&step, &terms, day).interest;
                step.accrued_through = Some(day);
            }
            prop_assert!((daily - once.interest).abs() <= Decimal::new(days, 2) / Decimal::TWO + Decimal::new(1, 2));
        }
    }
}
