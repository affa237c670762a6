//! One measured rate beside the baseline it is judged against, both from the same run.

use serde::{Deserialize, Serialize};

/// One measured figure with its baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// paystream's rate (per second).
    pub value: f64,
    /// The baseline's rate (per second), measured in the same run.
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// value / baseline.
    pub ratio: f64,
    /// Unit of both.
    pub unit: String,
}

impl Figure {
    /// `value` beside `baseline`, and their ratio (0 when the baseline is 0).
    pub fn new(name: &str, value: f64, baseline_name: &str, baseline: f64, unit: &str) -> Self {
        Self {
            name: name.into(),
            value,
            baseline,
            baseline_name: baseline_name.into(),
            ratio: ratio(value, baseline),
            unit: unit.into(),
        }
    }
}

/// `value / baseline`, or 0 for a baseline of 0 (not measured).
pub fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    }
}
