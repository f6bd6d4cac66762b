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
