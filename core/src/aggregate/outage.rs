//! Runs of failed connects from one flow, ended by the next success: the
//! client's view of how long a destination was not accepting.

use super::cause::FailureCause;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outage {
    pub first_failure_ns: u64,
    pub last_failure_ns: u64,
    pub failures: u64,
    /// Failures that were refusals (nothing listening).
    pub refused: u64,
    /// The first connect that succeeded after it; None while it lasts.
    pub recovered_ns: Option<u64>,
    /// The destination had accepted this client before the run began: it
    /// was up and went away. Refusals from a port that never accepted are
    /// no restart.
    pub accepted_before: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Outages {
    /// The run in progress: failures with no success since.
    pub current: Option<Outage>,
    /// The last run that a success ended.
    pub last: Option<Outage>,
    /// A connect succeeded (or a connection was found open) at some time.
    pub ever_connected: bool,
}

impl Outages {
    pub fn failed(&mut self, cause: FailureCause, ts_ns: u64) {
        let o = self.current.get_or_insert(Outage {
            first_failure_ns: ts_ns,
            accepted_before: self.ever_connected,
            ..Outage::default()
        });
        o.failures += 1;
        o.refused += u64::from(cause == FailureCause::Refused);
        o.last_failure_ns = o.last_failure_ns.max(ts_ns);
    }

    /// A connection to the destination is open (one that predates the
    /// agent): it accepted before, though no connect was seen.
    pub fn connected(&mut self) {
        self.ever_connected = true;
    }

    pub fn succeeded(&mut self, ts_ns: u64) {
        self.ever_connected = true;
        if let Some(mut o) = self.current.take() {
            o.recovered_ns = Some(ts_ns);
            self.last = Some(o);
        }
    }

    /// The run in progress, else the last one.
    pub fn latest(&self) -> Option<&Outage> {
        self.current.as_ref().or(self.last.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_ends_the_run() {
        let mut o = Outages::default();
        o.succeeded(1);
        assert!(o.latest().is_none(), "a success alone is no outage");
        o.failed(FailureCause::Refused, 10);
        o.failed(FailureCause::TimedOut, 20);
        assert_eq!(o.current.unwrap().failures, 2);
        o.succeeded(30);
        let last = o.last.unwrap();
        assert_eq!(
            (last.first_failure_ns, last.last_failure_ns, last.refused),
            (10, 20, 1)
        );
        assert_eq!(last.recovered_ns, Some(30));
        assert!(o.current.is_none());
        o.failed(FailureCause::Refused, 40);
        assert_eq!(o.latest().unwrap().first_failure_ns, 40);
    }
}
