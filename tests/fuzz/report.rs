//! What the run saw, and every violation with what is needed to replay it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::gen::Case;
use crate::model::{hex, slot_name, State};

/// Violations printed in full per stage; the rest are counted.
const PRINTED: usize = 6;

#[derive(Default)]
pub struct Report {
    pub seed: u64,
    pub frames: u64,
    /// Frames per class, per stage.
    pub classes: BTreeMap<(&'static str, &'static str), u64>,
    /// Frames BPF_PROG_RUN refused (they go to the real path), by why.
    pub refused: BTreeMap<&'static str, u64>,
    /// (stage/program, verdict) -> frames.
    pub verdicts: BTreeMap<(&'static str, &'static str), u64>,
    /// (program, the rule that decided) -> frames.
    pub paths: BTreeMap<(&'static str, &'static str), u64>,
    /// Drops read back from mcast_egw_drops and mcast_egw_drops_v6, by
    /// [`crate::model::drop_slot`] -> packets.
    pub drops_seen: BTreeMap<usize, u64>,
    /// Mutated frames that still left (redirect or clone), by mutation:
    /// the cut and the rewrite ran on them.
    pub mutations_left: BTreeMap<&'static str, (u64, u64)>,
    /// Other counts worth printing (copies checked, controls, ...).
    pub notes: BTreeMap<&'static str, u64>,
    /// The kernel stage's tallies.
    pub oracle: Oracle,
    pub violations: u64,
    /// (stage, program) -> violations.
    pub violations_by: BTreeMap<(&'static str, &'static str), u64>,
    printed: BTreeMap<&'static str, usize>,
    states_printed: BTreeSet<String>,
    pub replay: String,
}

/// What left each world in the kernel stage (tests/fuzz/kernel.rs).
#[derive(Default)]
pub struct Oracle {
    /// (class or mutation, "class"/"mutation") -> frames that left
    /// [both worlds, ours only, the kernel's only, neither].
    pub by: BTreeMap<(&'static str, &'static str), [u64; 4]>,
    /// Frames only the kernel forwarded, by the rule that kept them in.
    pub kernel_only: BTreeMap<&'static str, u64>,
    /// Frames only we forwarded (each a violation), by the rule by which
    /// the model keeps them in.
    pub ours_only: BTreeMap<&'static str, u64>,
    /// Positive controls that arrived in both worlds.
    pub controls: u64,
}

/// The columns of [`Oracle::by`].
const ORACLE_OUTCOMES: [&str; 4] = ["both", "ours only", "kernel only", "neither"];

impl Oracle {
    /// Count `case` under `outcome` (one of ORACLE_OUTCOMES), by its class
    /// and by each of its mutations.
    pub fn count(&mut self, case: &Case, outcome: &str) {
        let i = ORACLE_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .expect("an outcome of the kernel stage");
        self.by.entry((case.class.name(), "class")).or_default()[i] += 1;
        for m in &case.mutations {
            self.by.entry((m, "mutation")).or_default()[i] += 1;
        }
    }

    fn print(&self) {
        if self.by.is_empty() {
            return;
        }
        println!(
            "  kernel stage, frames that left: {:>10} {:>10} {:>11} {:>10}",
            ORACLE_OUTCOMES[0], ORACLE_OUTCOMES[1], ORACLE_OUTCOMES[2], ORACLE_OUTCOMES[3]
        );
        let mut total = [0u64; 4];
        for kind in ["class", "mutation"] {
            for ((name, k), n) in self.by.iter().filter(|((_, k), _)| *k == kind) {
                if kind == "class" {
                    for (t, x) in total.iter_mut().zip(n) {
                        *t += x;
                    }
                }
                println!(
                    "    {k:<8} {name:<28} {:>10} {:>10} {:>11} {:>10}",
                    n[0], n[1], n[2], n[3]
                );
            }
        }
        println!(
            "    {:<37} {:>10} {:>10} {:>11} {:>10}",
            "all frames", total[0], total[1], total[2], total[3]
        );
        println!("  kernel stage, only the kernel forwarded, by the rule that kept it in:");
        for (rule, n) in &self.kernel_only {
            println!("    {rule:<40} {n:>10}");
        }
        if !self.ours_only.is_empty() {
            println!("  kernel stage, ONLY WE forwarded, by the rule the model keeps it in by:");
            for (rule, n) in &self.ours_only {
                println!("    {rule:<40} {n:>10}");
            }
        }
        println!(
            "  kernel stage, positive controls that arrived in both worlds: {}",
            self.controls
        );
    }
}

/// Where a violation happened, for its report.
pub struct At<'a> {
    pub stage: &'static str,
    pub program: &'static str,
    pub state: &'a State,
    pub frame_no: usize,
    pub case: &'a Case,
}

impl Report {
    pub fn new(seed: u64, replay: String) -> Report {
        Report {
            seed,
            replay,
            ..Report::default()
        }
    }

    pub fn note(&mut self, what: &'static str, n: u64) {
        *self.notes.entry(what).or_default() += n;
    }

    pub fn class(&mut self, stage: &'static str, case: &Case) {
        *self.classes.entry((stage, case.class.name())).or_default() += 1;
    }

    pub fn mutations(&mut self, case: &Case, left: bool) {
        for m in &case.mutations {
            let e = self.mutations_left.entry(m).or_default();
            e.0 += 1;
            e.1 += u64::from(left);
        }
    }

    pub fn verdict(&mut self, program: &'static str, verdict: u32, path: &'static str) {
        *self
            .verdicts
            .entry((program, crate::model::verdict_name(verdict)))
            .or_default() += 1;
        *self.paths.entry((program, path)).or_default() += 1;
    }

    /// A frame (or a batch) that did not do what the model says.
    pub fn violation(&mut self, at: &At<'_>, problems: &[String], expected: &str) {
        self.violations += 1;
        *self
            .violations_by
            .entry((at.stage, at.program))
            .or_default() += 1;
        let printed = self.printed.entry(at.stage).or_default();
        if *printed >= PRINTED {
            return;
        }
        *printed += 1;
        let c = at.case;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n=== VIOLATION #{} ({} stage, {}, state '{}', frame {}, class '{}'{})",
            self.violations,
            at.stage,
            at.program,
            at.state.label,
            at.frame_no,
            c.class.name(),
            if c.mutations.is_empty() {
                String::new()
            } else {
                format!(", mutations {:?}", c.mutations)
            }
        );
        let _ = writeln!(s, "  replay: {}", self.replay);
        let _ = writeln!(
            s,
            "  container ifindex {}, overlay tunnel key {}",
            c.ifindex,
            match c.key {
                Some((vni, remote)) => format!("VNI {vni} from {remote}"),
                None => "none".to_owned(),
            }
        );
        let _ = writeln!(s, "  frame ({} bytes): {}", c.frame.len(), hex(&c.frame));
        let _ = writeln!(s, "  expected: {expected}");
        for p in problems {
            let _ = writeln!(s, "  DIFFERS: {p}");
        }
        if self.states_printed.insert(at.state.label.clone()) {
            s.push_str(&at.state.describe());
        } else {
            let _ = writeln!(s, "  (state '{}' printed above)", at.state.label);
        }
        eprint!("{s}");
    }

    /// Which of `paths` (program, model rule) no frame took.
    pub fn untaken(&self, paths: &[(&'static str, &'static str)]) -> Vec<String> {
        paths
            .iter()
            .filter(|k| !self.paths.contains_key(*k))
            .map(|(prog, path)| format!("{prog}: {path}"))
            .collect()
    }

    pub fn print(&self) {
        println!("fuzz: seed {:#018x}   replay: {}", self.seed, self.replay);
        let mut stage = "";
        for ((st, class), n) in &self.classes {
            if *st != stage {
                stage = st;
                println!("  frames per class, {st} stage:");
            }
            println!("    {class:<28} {n:>10}");
        }
        println!("  refused by BPF_PROG_RUN (sent on the real path instead):");
        for (why, n) in &self.refused {
            println!("    {why:<40} {n:>10}");
        }
        println!("  verdicts:");
        for ((prog, v), n) in &self.verdicts {
            println!("    {prog:<36} {v:<9} {n:>10}");
        }
        println!("  decided by (model rule):");
        for ((prog, path), n) in &self.paths {
            println!("    {prog:<36} {path:<26} {n:>10}");
        }
        println!("  drops seen in mcast_egw_drops and mcast_egw_drops_v6 (both stages):");
        for (slot, n) in &self.drops_seen {
            println!("    {:<32} {n:>10}", slot_name(*slot));
        }
        println!("  mutations: frames with it / of which left through the uplink or tunnel:");
        for (m, (n, left)) in &self.mutations_left {
            println!("    {m:<28} {n:>10} {left:>10}");
        }
        for (what, n) in &self.notes {
            println!("  {what:<52} {n:>10}");
        }
        self.oracle.print();
        for ((stage, program), n) in &self.violations_by {
            println!("  violations, {stage} stage, {program}: {n}");
        }
        println!("fuzz: violations: {}", self.violations);
    }
}
