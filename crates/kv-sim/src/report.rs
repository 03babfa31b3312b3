//! Results: one seed's report and the summary of a campaign.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Requests that succeeded and were made, per condition: "none" when no fault was active
/// at the request's start, otherwise each active fault's label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// label → (succeeded, total).
    pub by_fault: BTreeMap<&'static str, (u64, u64)>,
}

impl Availability {
    /// Counts one request made while `active` faults were in force.
    pub fn record(&mut self, active: &[&'static str], succeeded: bool) {
        let labels: &[&'static str] = if active.is_empty() { &["none"] } else { active };
        let mut seen: Vec<&'static str> = Vec::new();
        for label in labels {
            if seen.contains(label) {
                continue;
            }
            seen.push(label);
            let entry = self.by_fault.entry(label).or_default();
            entry.0 += u64::from(succeeded);
            entry.1 += 1;
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Availability) {
        for (label, (ok, total)) in &other.by_fault {
            let entry = self.by_fault.entry(label).or_default();
            entry.0 += ok;
            entry.1 += total;
        }
    }
}

/// Writes with W ≤ 2 that succeeded, per fault, strict and sloppy apart: what sloppy
/// quorum buys. `*_alone` counts only writes made while a single fault was active.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteAvailability {
    /// Strict writes.
    pub strict: Availability,
    /// Sloppy writes.
    pub sloppy: Availability,
    /// Strict writes while one fault alone was active.
    pub strict_alone: Availability,
    /// Sloppy writes while one fault alone was active.
    pub sloppy_alone: Availability,
}

impl WriteAvailability {
    /// Counts one write made while `faults` faults were active (`labels` name them).
    pub fn record(
        &mut self,
        sloppy: bool,
        faults: usize,
        labels: &[&'static str],
        succeeded: bool,
    ) {
        let (any, alone) = if sloppy {
            (&mut self.sloppy, &mut self.sloppy_alone)
        } else {
            (&mut self.strict, &mut self.strict_alone)
        };
        any.record(labels, succeeded);
        if faults == 1 {
            alone.record(labels, succeeded);
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &WriteAvailability) {
        self.strict.merge(&other.strict);
        self.sloppy.merge(&other.sloppy);
        self.strict_alone.merge(&other.strict_alone);
        self.sloppy_alone.merge(&other.sloppy_alone);
    }
}

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Digest of the fault schedule and the whole client history.
    pub trace_hash: u64,
    /// Simulated time the run covered.
    pub simulated: Duration,
    /// Requests made (the final audit reads included).
    pub ops: u64,
    /// Puts and deletes acknowledged.
    pub acknowledged_writes: u64,
    /// Reads that returned more than one value.
    pub reads_with_siblings: u64,
    /// The fault kinds of the schedule.
    pub faults: Vec<&'static str>,
    /// The schedule, readable.
    pub schedule: Vec<String>,
    /// What each scheduled ring change did (made, or skipped and why).
    pub ring_changes: Vec<String>,
    /// Success rates by fault.
    pub availability: Availability,
    /// Success rates of writes with W ≤ 2 by fault, strict and sloppy.
    pub writes_w2: WriteAvailability,
    /// Broken promises; empty when the run passed.
    pub violations: Vec<String>,
}

/// Totals over many seeds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Simulated time, summed.
    pub simulated: Duration,
    /// Requests.
    pub ops: u64,
    /// Acknowledged writes.
    pub acknowledged_writes: u64,
    /// Reads that returned siblings.
    pub reads_with_siblings: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Ring changes made (the others were skipped: no candidate, or refused).
    pub ring_changes_made: u64,
    /// Success rates by fault.
    pub availability: Availability,
    /// Success rates of writes with W ≤ 2 by fault, strict and sloppy.
    pub writes_w2: WriteAvailability,
    /// Seeds with violations, with their first violation.
    pub failed: Vec<(u64, String)>,
    /// Violations, summed.
    pub violations: u64,
}

impl Summary {
    /// Adds one seed.
    pub fn add(&mut self, report: &SeedReport) {
        self.seeds += 1;
        self.simulated += report.simulated;
        self.ops += report.ops;
        self.acknowledged_writes += report.acknowledged_writes;
        self.reads_with_siblings += report.reads_with_siblings;
        for fault in &report.faults {
            *self.faults.entry(fault).or_default() += 1;
        }
        self.ring_changes_made += report
            .ring_changes
            .iter()
            .filter(|line| !line.contains("skipped"))
            .count() as u64;
        self.availability.merge(&report.availability);
        self.writes_w2.merge(&report.writes_w2);
        self.violations += report.violations.len() as u64;
        if let Some(first) = report.violations.first() {
            self.failed.push((report.seed, first.clone()));
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seeds:               {}", self.seeds)?;
        writeln!(
            f,
            "simulated time:      {:.2} h",
            self.simulated.as_secs_f64() / 3600.0
        )?;
        writeln!(f, "requests:            {}", self.ops)?;
        writeln!(f, "acknowledged writes: {}", self.acknowledged_writes)?;
        writeln!(f, "reads with siblings: {}", self.reads_with_siblings)?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "faults injected:     {}", faults.join(", "))?;
        writeln!(f, "ring changes made:   {}", self.ring_changes_made)?;
        writeln!(
            f,
            "availability (requests succeeded while the fault was active):"
        )?;
        write_rates(f, &self.availability)?;
        let writes = &self.writes_w2;
        for (mode, tally) in [
            ("strict writes with W <= 2, any faults", &writes.strict),
            ("sloppy writes with W <= 2, any faults", &writes.sloppy),
            (
                "strict writes with W <= 2, the fault alone",
                &writes.strict_alone,
            ),
            (
                "sloppy writes with W <= 2, the fault alone",
                &writes.sloppy_alone,
            ),
        ] {
            if tally.by_fault.is_empty() {
                continue;
            }
            writeln!(f, "{mode}:")?;
            write_rates(f, tally)?;
        }
        write!(
            f,
            "violations:          {} in {} seeds",
            self.violations,
            self.failed.len()
        )
    }
}

fn write_rates(f: &mut fmt::Formatter<'_>, tally: &Availability) -> fmt::Result {
    for (label, (ok, total)) in &tally.by_fault {
        let percent = if *total == 0 {
            0.0
        } else {
            100.0 * *ok as f64 / *total as f64
        };
        writeln!(f, "  {label:<14} {percent:6.2}%  ({ok} of {total})")?;
    }
    Ok(())
}
