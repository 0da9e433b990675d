//! The report `status` reads: readiness and findings, pinned as JSON.

use std::collections::BTreeSet;

use crate::datapath::Paths;
use crate::health::{Report, ReportPin};
use crate::resolve::Problem;

use super::Once;

#[derive(Default)]
pub(super) struct ReportWriter {
    /// Where `status` finds the report, and the report last written there.
    pin: Option<ReportPin>,
    last: Option<Report>,
    error: Once,
}

impl ReportWriter {
    /// Pin the report when it changed. Blocking.
    pub(super) fn reconcile(
        &mut self,
        paths: &Paths,
        not_ready: Vec<String>,
        problems: &BTreeSet<Problem>,
        endpoints_without_identity: usize,
    ) {
        let mut report = Report::new(not_ready, problems, endpoints_without_identity);
        if self.last.as_ref().is_some_and(|r| r.same_as(&report)) {
            return;
        }
        if self.pin.is_none() {
            match ReportPin::open_or_create(paths) {
                Ok(pin) => self.pin = Some(pin),
                Err(e) => {
                    if self.error.changed(Some(e.to_string())) {
                        tracing::warn!(error = %e, "pinning the report for `status`");
                    }
                    return;
                }
            }
        }
        let Some(pin) = &self.pin else {
            return;
        };
        report.since_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        match pin.write(&report) {
            Ok(()) => {
                self.error.clear();
                self.last = Some(report);
            }
            Err(e) => {
                if self.error.changed(Some(e.to_string())) {
                    tracing::warn!(error = %e, "writing the report for `status`");
                }
            }
        }
    }
}
