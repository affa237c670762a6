//! A run as the Markdown section of `docs/benchmarks.md`: the targets table (every figure
//! beside its peer), then a paragraph per part, then where the CPU went. One function per
//! section.

use std::fmt::Write as _;

use super::cpu::CpuReport;
use super::edge::EdgeResult;
use super::peers::PeerRuns;
use super::report::{targets, Context, Report, Target};
use crate::loadgen::Latency;

/// The results as a Markdown section.
pub fn markdown(context: &Context, r: &Report) -> String {
    let mut out = String::new();
    header(&mut out, context);
    targets_table(&mut out, &targets(context, r));
    processor(&mut out, context, r);
    relay(&mut out, r);
    if let Some(e) = &r.edge {
        edge(&mut out, e);
    }
    let _ = writeln!(out, "\n![ratios](bench-ratios.svg)\n\n![latency](bench-latency.svg)\n");
    if let Some(e) = &r.edge {
        cpu(&mut out, e);
    }
    scaling(&mut out, r);
    out
}

fn header(out: &mut String, context: &Context) {
    let quick = if context.quick { " --quick" } else { "" };
    let _ =
        writeln!(out, "`scripts/bench{quick}`, {}, commit {}, {}.\n", context.date, context.commit, context.machine);
    if let (Some(commits), Some(rows)) = (context.pg_commits_per_s, context.pg_rows_per_s) {
        let _ = writeln!(
            out,
            "PostgreSQL limits (pgbench, same run): **{}** single-row INSERT commits/s at 32 clients; **{}** rows/s in 100-row INSERT transactions at 8 clients (`scripts/bench`: the mean of the runs right before and right after the processor part).\n",
            thousands(commits),
            thousands(rows)
        );
    }
}

fn figure(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "not measured".into(),
        Some(v) if unit == "ms" || unit == "MiB" => format!("{v:.1} {unit}"),
        Some(v) => format!("{} {unit}", thousands(v)),
    }
}

fn targets_table(out: &mut String, targets: &[Target]) {
    let _ = writeln!(out, "| measurement | paystream | peer | peer figure | ratio | target |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for t in targets {
        let peer_value = if t.peer.is_empty() { "-".into() } else { figure(t.peer_value, &t.unit) };
        let ratio = t.ratio.map_or("-".into(), |r| format!("**{r:.2}**"));
        let target = match (t.target.as_str(), t.met) {
            ("", _) => "-".to_owned(),
            (target, Some(true)) => format!("{target}: met"),
            (target, Some(false)) => format!("{target}: **not met**"),
            (target, None) => format!("{target}: not measured"),
        };
        let peer = if t.peer.is_empty() { "-" } else { &t.peer };
        let _ = writeln!(
            out,
            "| {} | {} | {peer} | {peer_value} | {ratio} | {target} |",
            t.measurement,
            figure(t.value, &t.unit)
        );
    }
    let _ = writeln!(out);
}

fn peer_runs(runs: &PeerRuns) -> String {
    runs.runs
        .iter()
        .map(|r| format!("{} at {} connections", thousands(r.payments_per_s), r.connections))
        .collect::<Vec<_>>()
        .join(", ")
}

fn processor(out: &mut String, context: &Context, r: &Report) {
    if let (Some(u), Some(h)) = (&r.processor_uniform, &r.processor_hot) {
        let _ = writeln!(
            out,
            "- Processor, batched: {} payments/s uniform, {} hot; limited to one payment per transaction: {} uniform, {} hot.",
            thousands(u.value),
            thousands(h.value),
            thousands(u.baseline),
            thousands(h.baseline)
        );
    }
    for (name, runs) in [("uniform", &r.seed_uniform), ("hot", &r.seed_hot)] {
        if let Some(runs) = runs {
            let rows = runs.best().map_or(0.0, |b| b.rows_per_payment);
            let _ = writeln!(
                out,
                "- Seed design, {name}, one call a payment in its own transaction: {} payments/s; {rows:.2} rows written a payment.",
                peer_runs(runs)
            );
        }
    }
    if let (Some(u), Some(rows)) = (&r.processor_uniform, context.pg_rows_per_s) {
        let per_payment = r.processor_rows_per_payment.unwrap_or(6.0);
        let written = u.value * per_payment;
        let _ = writeln!(
            out,
            "- Processor rows written: {per_payment:.2} per payment (inserted and updated, counted by the database), {} rows/s uniform, **{:.2}** of the 100-row INSERT limit.",
            thousands(written),
            written / rows
        );
        if let Some(limit) = context.pg_payment_rows_per_s {
            let _ = writeln!(
                out,
                "- The same rows written by PostgreSQL alone (`benchmarks/sql/rows_limit.sql`: transfer, payment, installment update and outbox share, 100 payments a transaction, none of the processor's reads, locks or logic): {} payments/s, {} rows/s, **{:.2}** of the 100-row INSERT limit.",
                thousands(limit),
                thousands(limit * per_payment),
                limit * per_payment / rows
            );
        }
    }
}

fn relay(out: &mut String, r: &Report) {
    if let (Some(rate), Some(l)) = (r.relay_half_peak_rate, &r.relay_latency_at_half_peak) {
        // Half the drain rate of a filled outbox can exceed what a writer, the relay and a
        // reader sustain together on these cores: then the queue grows for the whole run and
        // the latency says so, not what the target is about.
        let overload = match &r.relay_sustained {
            Some((sustained, _)) if rate > *sustained => format!(
                "; above the {} events/s that the writer, the relay and the reader sustain together (next line), so the queue grows throughout",
                thousands(*sustained)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "- Relay commit-to-Kafka latency (outbox commit to the record read back) at half its drain rate, {} events/s open loop: {}{overload}.",
            thousands(rate),
            l.brief()
        );
    }
    if let Some((rate, l)) = &r.relay_sustained {
        let _ = writeln!(
            out,
            "- Relay sustained while a writer commits the events and a reader reads them back on the same cores (closed loop): {} events/s; at half that, {} events/s open loop: {}.",
            thousands(*rate),
            thousands(rate / 2.0),
            l.brief()
        );
    }
}

fn edge(out: &mut String, e: &EdgeResult) {
    let rss: Vec<String> = e.peak_rss_mib.iter().map(|(k, v)| format!("{k} {v:.0} MiB")).collect();
    let _ = writeln!(
        out,
        "- Peak RSS of each service process (ingest over its peak and pipeline runs): {}.",
        rss.join(", ")
    );
    let _ = writeln!(out, "- Ingest HTTP latency at its peak (closed loop): {}.", e.ingest_latency_at_peak.brief());
    if let Some((rate, l)) = &e.ingest_alone_half_peak {
        let p99s = |turns: &[Latency]| turns.iter().map(|l| format!("{:.1}", l.p99_ms)).collect::<Vec<_>>().join(", ");
        let _ = writeln!(
            out,
            "- Ingest alone at half its peak ({} req/s, open loop), {} turns: HTTP p99 {} ms; the median turn: {}. The bare server at the same rate, in turns alternating with these: p99 {} ms.",
            thousands(*rate),
            e.ingest_half_peak_turns.len(),
            p99s(&e.ingest_half_peak_turns),
            l.brief(),
            p99s(&e.bare_half_peak_turns)
        );
    }
    let _ = writeln!(
        out,
        "- Whole pipeline sustained (closed loop until the last outcome event is read back): {} payments/s; at half that rate ({} payments/s, open loop) ingest HTTP {}.",
        thousands(e.pipeline_sustained),
        thousands(e.half_peak_rate),
        e.ingest_latency_at_half_peak.brief()
    );
    if let Some(l) = &e.e2e_latency_at_half_peak {
        let _ = writeln!(
            out,
            "- End to end at half rate (webhook's intended send to its outcome event read back): {}; {} payments with exactly one outcome, {} missing or doubled.",
            l.brief(),
            e.e2e_outcomes_ok,
            e.e2e_outcomes_bad
        );
    }
    if let Some(seed) = &e.seed_pipeline {
        let by: Vec<String> = seed
            .sustained_by_connections
            .iter()
            .map(|(c, rate)| format!("{} at {c} connections", thousands(*rate)))
            .collect();
        let run = &seed.run;
        let _ = writeln!(
            out,
            "- Seed design end to end (its handler calling the function per webhook, answering after the commit; its polling relay): sustained {} payments/s; at half the rate of {} connections ({} payments/s): HTTP {}, end to end {}; {} payments with exactly one outcome, {} missing or doubled.",
            by.join(", "),
            seed.connections,
            thousands(run.half_rate),
            run.http_at_half.brief(),
            run.e2e_at_half.as_ref().map_or("not measured".into(), Latency::brief),
            run.outcomes_ok,
            run.outcomes_bad
        );
    }
}

fn cpu_table(out: &mut String, title: &str, report: &CpuReport) {
    let _ = writeln!(
        out,
        "\n{title}: {} payments in {:.1} s.\n\n| process | CPU ms per payment | cores busy |\n|---|---|---|",
        thousands(report.payments as f64),
        report.window_s
    );
    for p in &report.processes {
        let _ = writeln!(out, "| {} | {:.3} | {:.2} |", p.name, p.cpu_ms_per_payment, p.cores);
    }
}

fn cpu(out: &mut String, e: &EdgeResult) {
    if e.pipeline_cpu.is_none() && e.seed_pipeline.as_ref().and_then(|s| s.run.cpu.as_ref()).is_none() {
        return;
    }
    let _ = writeln!(
        out,
        "Where the time goes, while each pipeline sustains its rate (`/proc/<pid>/stat`, user + system; PostgreSQL is all of its server's processes, the broker its JVM, the machine every core):"
    );
    if let Some(report) = &e.pipeline_cpu {
        cpu_table(out, "paystream", report);
    }
    if let Some(report) = e.seed_pipeline.as_ref().and_then(|s| s.run.cpu.as_ref()) {
        cpu_table(out, "Seed design", report);
    }
    let _ = writeln!(out);
}

fn scaling(out: &mut String, r: &Report) {
    let Some(points) = &r.scaling else { return };
    let seed = r.seed_uniform.as_ref().map(PeerRuns::rate).filter(|v| *v > 0.0);
    let _ = writeln!(out, "\nScaling (pre-filled topic of 12 partitions, processor members as separate processes; 1, 2 and 4 members in interleaved rounds):\n");
    let _ = writeln!(
        out,
        "| members | installments | payments/s (median of the rounds) | each round | / seed design, uniform | payments a transaction | batch apply p99 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let finished = |rate: Option<f64>| rate.map_or("did not finish".to_owned(), thousands);
    for p in points {
        let rate = finished(p.payments_per_s);
        let rounds: Vec<String> = p.rounds.iter().map(|r| finished(*r)).collect();
        let rounds = if rounds.is_empty() { "-".to_owned() } else { rounds.join(", ") };
        let ratio = match (p.payments_per_s, seed) {
            (Some(v), Some(s)) => format!("{:.2}", v / s),
            _ => "-".into(),
        };
        let p99 = p.batch_p99_ms.map_or("-".to_owned(), |ms| format!("≤ {ms:.0} ms"));
        let size = p.payments_per_transaction.map_or("-".to_owned(), |n| format!("{n:.0}"));
        let _ = writeln!(
            out,
            "| {} | {} | {rate} | {rounds} | {ratio} | {size} | {p99} |",
            p.members,
            thousands(f64::from(p.installments))
        );
    }
    let _ = writeln!(out, "\n![scaling](bench-scaling.svg)");
}

/// `12345.6` as `12,346`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Replaces what stands between the results markers of a Markdown file with `section`.
pub fn splice(document: &str, section: &str) -> Option<String> {
    const START: &str = "<!-- bench:results:start -->";
    const END: &str = "<!-- bench:results:end -->";
    let a = document.find(START)? + START.len();
    let b = document[a..].find(END)? + a;
    Some(format!("{}\n{}\n{}", &document[..a], section.trim_end(), &document[b..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thousands are grouped by three, negatives keep their sign.
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1234.0), "-1,234");
    }

    /// Only what stands between the markers is replaced; a document without them is refused.
    #[test]
    fn splice_replaces_only_between_markers() {
        let doc = "a\n<!-- bench:results:start -->\nold\n<!-- bench:results:end -->\nb\n";
        let out = splice(doc, "new\n").unwrap();
        assert_eq!(out, "a\n<!-- bench:results:start -->\nnew\n<!-- bench:results:end -->\nb\n");
        assert!(splice("no markers", "x").is_none());
    }

    /// A report with no part run still lists every target, each as not measured.
    #[test]
    fn every_target_is_listed() {
        let md = markdown(&Context::default(), &Report::default());
        let rows = targets(&Context::default(), &Report::default()).len();
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(table.len(), rows + 2, "{md}");
        assert!(table[2..].iter().all(|l| l.contains("| not measured |")), "{md}");
    }
}
