//! What a hop spends: CPU time and context switches of a process (or of some of its
//! threads), read from /proc before and after a measured stretch.
//!
//! CPU time comes from each thread's `schedstat` (nanoseconds on the CPU), not from `stat`'s
//! clock ticks: a 2,000-echo run costs the gateway a few hundred milliseconds, which ticks
//! (10 ms) would only resolve to a few percent. Context switches are voluntary plus
//! involuntary, summed over the threads.

/// CPU time and context switches so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Time on the CPU, in µs.
    pub cpu_us: f64,
    /// Context switches (voluntary + involuntary).
    pub switches: f64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, before: Usage) -> Usage {
        Usage {
            cpu_us: self.cpu_us - before.cpu_us,
            switches: self.switches - before.switches,
        }
    }
}

/// All threads of process `pid`.
pub fn of_process(pid: u32) -> Option<Usage> {
    of_threads(pid, |_| true)
}

/// The threads of process `pid` whose name (`comm`) passes `keep`.
pub fn of_threads(pid: u32, keep: impl Fn(&str) -> bool) -> Option<Usage> {
    let mut total = Usage::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !keep(comm.trim_end()) {
            continue;
        }
        // A thread that ended between the listing and the reads counts nothing.
        let sched = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        if let Some(ns) = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            total.cpu_us += ns / 1e3;
        }
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        for l in status.lines() {
            if l.starts_with("voluntary_ctxt_switches")
                || l.starts_with("nonvoluntary_ctxt_switches")
            {
                total.switches += l
                    .split(':')
                    .nth(1)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    Some(total)
}
