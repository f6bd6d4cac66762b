//! The result table: one row per figure, columns direct / peer / Portcullis and the ratios.

use std::fmt::Write;

/// One measured figure.
#[derive(Debug)]
pub struct Row {
    pub figure: String,
    pub unit: String,
    pub direct: Option<f64>,
    pub peer_name: String,
    pub peer: Option<f64>,
    pub ours: Option<f64>,
    /// The target, as text (e.g. "≥ 0.80× direct").
    pub target: String,
    /// Whether the target holds, when it can be judged.
    pub holds: Option<bool>,
}

#[derive(Debug, Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

impl Table {
    pub fn push(&mut self, row: Row) {
        eprintln!(
            "{}: direct {} | {} {} | portcullis {} {}",
            row.figure,
            num(row.direct),
            row.peer_name,
            num(row.peer),
            num(row.ours),
            row.unit
        );
        self.rows.push(row);
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Portcullis comparison run\n\n{header}\n");
        let _ = writeln!(
            s,
            "| figure | unit | direct | peer | peer value | Portcullis | Portcullis / direct | Portcullis / peer | target | holds |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let holds = match r.holds {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.figure,
                r.unit,
                num(r.direct),
                r.peer_name,
                num(r.peer),
                num(r.ours),
                ratio(r.ours, r.direct),
                ratio(r.ours, r.peer),
                r.target,
                holds
            );
        }
        s
    }
}

/// How many rounds [`interleaved`] runs: 5, or 1 with `--quick`.
fn rounds(quick: bool) -> usize {
    if quick { 1 } else { 5 }
}

/// "median of 5 rounds", for a figure's name.
pub fn of_rounds(n: usize) -> String {
    match n {
        1 => "one round".into(),
        n => format!("median of {n} rounds"),
    }
}

/// Measures `N` paths in interleaved rounds: each round runs `measure` once for every path
/// (by its index), in an order rotated by one each round; returns each path's results, by
/// round. For the figures whose targets are within a run's noise (pgbench `-c 1`, the ssh
/// upload and echo): on a shared 2-core VM one run of a path moves by ±30 %, and paths
/// measured one after another meet different neighbours; interleaved rounds meet the same
/// ones, and the table shows each path's median.
pub fn interleaved<R, const N: usize>(
    quick: bool,
    mut measure: impl FnMut(usize) -> anyhow::Result<R>,
) -> anyhow::Result<[Vec<R>; N]> {
    let mut runs: [Vec<R>; N] = std::array::from_fn(|_| Vec::new());
    for round in 0..rounds(quick) {
        for i in (0..N).map(|i| (i + round) % N) {
            runs[i].push(measure(i)?);
        }
    }
    Ok(runs)
}

/// The median of `xs` (the mean of the middle two for an even count; 0 when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// "a–b": the smallest and largest of `xs`, formatted with `f`.
pub fn spread(xs: &[f64], f: impl Fn(f64) -> String) -> String {
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if xs.is_empty() {
        "—".into()
    } else {
        format!("{}–{}", f(lo), f(hi))
    }
}
