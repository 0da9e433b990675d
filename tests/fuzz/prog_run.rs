//! Stage one: every frame through both programs with BPF_PROG_RUN, under a
//! series of map states. Verdict and bytes are checked per frame; drops
//! and counters per batch, exactly (a batch that differs is replayed one
//! frame at a time to name the frame); the copies a clone sends out are
//! taken off the taps and checked too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use cilium_mcast_egress::datapath::Program;

use crate::check::{byte_diff, compare_run, egress_invariant, verify_emitted, verify_tunnel};
use crate::gen::{self, Case, Gen};
use crate::harness::Fixture;
use crate::model::{self, Emitted, Outcome, State, Via};
use crate::report::{At, Report};
use crate::rng::{mix, Rng};

const BATCH: usize = 512;
/// Batches whose counts differ are replayed frame by frame to name the
/// frames until this many violations are known (a broken datapath would
/// otherwise replay every batch).
const REPLAY_UNTIL: u64 = 200;
pub const STAGE: &str = "BPF_PROG_RUN";
const CONTAINER: &str = "mcast_from_container";
const OVERLAY: &str = "mcast_from_overlay (test build)";

/// Frames BPF_PROG_RUN refuses, kept for the real-path stage: a bounded,
/// uniform sample per reason, the long frames (which get furthest into
/// the programs) given the largest share.
pub struct RealQueue {
    samples: BTreeMap<&'static str, (usize, u64, Vec<Case>)>,
    rng: Rng,
}

impl RealQueue {
    pub fn new(cap: usize, seed: u64) -> RealQueue {
        let mut samples = BTreeMap::new();
        for (why, share) in [
            (TOO_LONG, 50),
            (SHORT_IPV4, 30),
            (SHORT_IPV6, 10),
            (SHORT_ETHERNET, 10),
        ] {
            samples.insert(why, (cap * share / 100, 0, Vec::new()));
        }
        RealQueue {
            samples,
            rng: Rng::new(mix(seed, 0x7265_616c)),
        }
    }

    fn offer(&mut self, why: &'static str, case: &Case) {
        let Some((cap, seen, cases)) = self.samples.get_mut(why) else {
            return;
        };
        *seen += 1;
        if cases.len() < *cap {
            cases.push(case.clone());
        } else {
            let j = self.rng.below(*seen) as usize;
            if j < *cap {
                cases[j] = case.clone();
            }
        }
    }

    /// Everything kept, mixed so that every real-path state gets some of
    /// each reason.
    pub fn into_cases(mut self) -> Vec<Case> {
        let mut all: Vec<Case> = std::mem::take(&mut self.samples)
            .into_values()
            .flat_map(|(_, _, c)| c)
            .collect();
        for i in (1..all.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            all.swap(i, j);
        }
        all
    }
}

const SHORT_ETHERNET: &str = "shorter than an Ethernet header";
const TOO_LONG: &str = "longer than BPF_PROG_RUN's linear data";
const SHORT_IPV4: &str = "IPv4, shorter than an IPv4 header";
const SHORT_IPV6: &str = "IPv6, shorter than an IPv6 header";

/// Why BPF_PROG_RUN will refuse a frame, if it will.
pub fn refusal(frame: &[u8], max_len: usize) -> Option<&'static str> {
    if frame.len() < 14 {
        return Some(SHORT_ETHERNET);
    }
    if frame.len() > max_len {
        return Some(TOO_LONG);
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 if frame.len() < 34 => Some(SHORT_IPV4),
        0x86dd if frame.len() < 54 => Some(SHORT_IPV6),
        _ => None,
    }
}

/// What a batch is expected to leave behind in the maps and on the taps.
#[derive(Default)]
struct Expect {
    drops: Vec<(u64, u64)>,
    counters: BTreeMap<(u32, IpAddr, u32), (u64, u64)>,
    /// Copies that leave while the original goes on (clone), in order.
    copies: Vec<ExpectedCopy>,
}

/// A copy a clone sends out, the frame number it belongs to and the
/// datagram it was made of.
struct ExpectedCopy {
    no: usize,
    emitted: Emitted,
    input: Vec<u8>,
}

impl Expect {
    fn new() -> Expect {
        Expect {
            drops: vec![(0, 0); model::DROP_SLOTS],
            ..Expect::default()
        }
    }

    fn add(&mut self, m: &Outcome) {
        if let Some(d) = m.drop {
            let e = &mut self.drops[d.slot()];
            e.0 += 1;
            e.1 += d.bytes;
        }
        for c in &m.counted {
            let e = self
                .counters
                .entry((c.policy_id, c.group, c.role))
                .or_default();
            e.0 += 1;
            e.1 += c.bytes;
        }
    }
}

pub fn delta(after: &[(u64, u64)], before: &[(u64, u64)]) -> Vec<(u64, u64)> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| (a.0.wrapping_sub(b.0), a.1.wrapping_sub(b.1)))
        .collect()
}

pub fn drops_diff(want: &[(u64, u64)], got: &[(u64, u64)]) -> Vec<String> {
    let mut p = Vec::new();
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        if w != g {
            p.push(format!(
                "drops {}: expected {} packets {} bytes, counted {} packets {} bytes",
                model::slot_name(i),
                w.0,
                w.1,
                g.0,
                g.1
            ));
        }
    }
    p
}

pub fn counters_diff(
    want: &BTreeMap<(u32, IpAddr, u32), (u64, u64)>,
    got: &BTreeMap<(u32, IpAddr, u32), (u64, u64)>,
) -> Vec<String> {
    let mut p = Vec::new();
    for k in want.keys().chain(got.keys()) {
        let (w, g) = (
            want.get(k).copied().unwrap_or_default(),
            got.get(k).copied().unwrap_or_default(),
        );
        if w != g && !p.iter().any(|s: &String| s.contains(&format!("{k:?}"))) {
            p.push(format!(
                "counter {k:?} (policy, group, role): expected {w:?}, counted {g:?}"
            ));
        }
    }
    p
}

/// Check the copies taken off the taps against the expected ones, in order
/// per tap; problems with the frame number they belong to.
fn check_copies(
    fx: &Fixture,
    st: &State,
    expected: &[ExpectedCopy],
) -> Vec<(Option<usize>, String)> {
    let mut problems = Vec::new();
    let mut got: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (tap, f) in fx.drain_taps() {
        got.entry(tap).or_default().push(f);
    }
    let mut want: BTreeMap<String, Vec<&ExpectedCopy>> = BTreeMap::new();
    for c in expected.iter().filter(|c| fx.observable(&c.emitted.via)) {
        want.entry(fx.tap_name(&c.emitted.via)).or_default().push(c);
    }
    // The copies are sent inside the program run; late ones are waited for.
    let deadline = Instant::now() + Duration::from_secs(1);
    for (tap, ws) in &want {
        while got.get(tap).map_or(0, Vec::len) < ws.len() && Instant::now() < deadline {
            if let Some(f) = fx.recv_on(&ws[0].emitted.via, Duration::from_millis(50)) {
                got.entry(tap.clone()).or_default().push(f);
            }
        }
    }
    for (tap, ws) in &want {
        let gs = got.remove(tap).unwrap_or_default();
        for (k, c) in ws.iter().enumerate() {
            let (frame_no, e, input) = (&c.no, &c.emitted, &c.input);
            let Some(g) = gs.get(k) else {
                problems.push((
                    Some(*frame_no),
                    format!("the copy via {:?} never appeared on {tap}", e.via),
                ));
                continue;
            };
            let p = match &e.via {
                Via::Uplink(i) => {
                    let mut p: Vec<String> = byte_diff(&e.bytes, g).into_iter().collect();
                    p.extend(
                        egress_invariant(st, input, g, Some(*i), false)
                            .into_iter()
                            .map(|s| format!("egress invariant: {s}")),
                    );
                    p.extend(
                        verify_emitted(input, g, &e.bytes)
                            .into_iter()
                            .map(|s| format!("independent check: {s}")),
                    );
                    p
                }
                Via::Tunnel { ifindex, .. } => verify_tunnel(g, e, fx.tunnel_ports[ifindex]),
            };
            for s in p {
                problems.push((Some(*frame_no), format!("copy on {tap}: {s}")));
            }
        }
        for g in gs.iter().skip(ws.len()) {
            problems.push((
                None,
                format!("unexpected frame on {tap}: {}", crate::model::hex(g)),
            ));
        }
    }
    for (tap, gs) in got {
        for g in gs {
            problems.push((
                None,
                format!("unexpected frame on {tap}: {}", crate::model::hex(&g)),
            ));
        }
    }
    problems
}

/// Run one program on one case; false when BPF_PROG_RUN refused the
/// frame. Violations of the per-frame checks are reported here.
fn run_one(
    fx: &Fixture,
    st: &State,
    program: Program,
    case: &Case,
    frame_no: usize,
    m: &Outcome,
    report: &mut Report,
) -> bool {
    let (name, ifindex) = match program {
        Program::FromContainer => (CONTAINER, case.ifindex),
        _ => (OVERLAY, fx.env.tunnels[0].0),
    };
    let at = At {
        stage: STAGE,
        program: name,
        state: st,
        frame_no,
        case,
    };
    let refused = refusal(&case.frame, fx.max_run_len);
    match (fx.run(program, ifindex, &case.frame), refused) {
        (Err(_), Some(_)) => false,
        (Ok((verdict, out)), None) => {
            report.verdict(name, verdict, m.path);
            let mut p = compare_run(m, &case.frame, verdict, &out);
            if verdict == model::REDIRECT {
                // A redirect with the frame as it came (cut of trailing
                // bytes) goes to the tunnel; a rewritten one to an uplink.
                let tunnel = case.frame.starts_with(&out);
                let inv = egress_invariant(st, &case.frame, &out, None, tunnel);
                report.note(
                    if tunnel {
                        "redirects checked against the egress invariant (tunnel)"
                    } else {
                        "redirects checked against the egress invariant (uplink)"
                    },
                    1,
                );
                p.extend(inv.into_iter().map(|s| format!("egress invariant: {s}")));
            }
            if !p.is_empty() {
                report.violation(&at, &p, &m.summary());
            }
            true
        }
        (Err(errno), None) => {
            report.violation(
                &at,
                &[format!("BPF_PROG_RUN refused the frame (errno {errno})")],
                "the program runs",
            );
            false
        }
        (Ok((verdict, _)), Some(why)) => {
            report.violation(
                &at,
                &[format!(
                    "BPF_PROG_RUN ran a frame it should refuse ({why}): verdict {verdict:#x}"
                )],
                "EINVAL",
            );
            true
        }
    }
}

pub fn run(fx: &Fixture, seed: u64, frames: u64, report: &mut Report, queue: &mut RealQueue) {
    let started = Instant::now();
    let n_states = (frames / 4000).clamp(8, 400) as usize;
    let per_state = (frames as usize).div_ceil(n_states);
    let mut done = 0usize;
    for si in 0..n_states {
        let mut srng = Rng::new(mix(seed, si as u64));
        let st = gen::state(&mut srng, &fx.env, si, false);
        fx.apply(&st);
        let mut g = Gen::new(Rng::new(mix(seed, 0x1_0000_0000 + si as u64)), &st, &fx.env);
        let want = per_state.min(frames as usize - done);
        let mut cases = g.truncation_sweep();
        cases.truncate(want);
        while cases.len() < want {
            cases.push(g.case(false));
        }
        for (bi, batch) in cases.chunks(BATCH).enumerate() {
            check_batch(fx, &st, batch, done + bi * BATCH, report, queue);
        }
        done += cases.len();
    }
    report.frames += done as u64;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {STAGE} stage: {done} frames through both programs, {n_states} map states, {secs:.1} s ({:.0} frames/s)",
        done as f64 / secs
    );
}

/// Count the rewrites that land on a checksum's zero corner, to show the
/// corners are reached.
fn corners(m: &Outcome, report: &mut Report) {
    let Some(Emitted {
        via: Via::Uplink(_),
        bytes,
    }) = &m.emitted
    else {
        return;
    };
    if crate::model6::is_v6(bytes) {
        if let Some(w) = crate::model6::walk(bytes) {
            let at = w.l4_off + 6;
            if w.proto == 17 && !w.later_fragment() && bytes[at..at + 2] == [0xff, 0xff] {
                report.note("IPv6 rewrites whose UDP checksum is 0xffff", 1);
            }
        }
        return;
    }
    if bytes[24..26] == [0, 0] {
        report.note("rewrites whose IPv4 checksum is 0x0000", 1);
    }
    let l4 = 14 + usize::from(bytes[14] & 0x0f) * 4;
    let first = u16::from_be_bytes([bytes[20], bytes[21]]) & 0x1fff == 0;
    if first && bytes[l4 + 6..l4 + 8] == [0xff, 0xff] {
        report.note("rewrites whose UDP checksum is 0xffff", 1);
    }
}

fn check_batch(
    fx: &Fixture,
    st: &State,
    batch: &[Case],
    first_no: usize,
    report: &mut Report,
    queue: &mut RealQueue,
) {
    let before = fx.drops();
    let mut exp = Expect::new();
    for (i, case) in batch.iter().enumerate() {
        let no = first_no + i;
        report.class(STAGE, case);
        if let Some(why) = refusal(&case.frame, fx.max_run_len) {
            *report.refused.entry(why).or_default() += 1;
            queue.offer(why, case);
        }
        let m = model::container(st, &case.frame, case.ifindex, false);
        let mut left = m.emitted.is_some();
        corners(&m, report);
        if run_one(fx, st, Program::FromContainer, case, no, &m, report) {
            exp.add(&m);
            if let (Some(e), model::NEXT) = (&m.emitted, m.verdict) {
                exp.copies.push(ExpectedCopy {
                    no,
                    emitted: e.clone(),
                    input: m.out.clone(),
                });
            }
        }
        fx.set_tunnel_key(case.key);
        let m = model::overlay(st, &case.frame, case.key, false);
        left |= m.emitted.is_some();
        corners(&m, report);
        if run_one(fx, st, Program::FromOverlay, case, no, &m, report) {
            exp.add(&m);
        }
        report.mutations(case, left);
    }
    let got_drops = delta(&fx.drops(), &before);
    let got_counters = fx.counters();
    fx.clear_counters();
    for (i, (p, _)) in got_drops.iter().enumerate() {
        if *p > 0 {
            *report.drops_seen.entry(i).or_default() += p;
        }
    }
    let mut problems = drops_diff(&exp.drops, &got_drops);
    problems.extend(counters_diff(&exp.counters, &got_counters));
    let observable = exp
        .copies
        .iter()
        .filter(|c| fx.observable(&c.emitted.via))
        .count();
    report.note(
        "clone copies checked on the taps (BPF_PROG_RUN)",
        observable as u64,
    );
    let copy_problems = check_copies(fx, st, &exp.copies);
    for (no, p) in &copy_problems {
        let idx = no.map_or(0, |n| n - first_no);
        report.violation(
            &At {
                stage: STAGE,
                program: CONTAINER,
                state: st,
                frame_no: no.unwrap_or(first_no),
                case: &batch[idx],
            },
            std::slice::from_ref(p),
            if no.is_some() {
                "the copy as the model makes it"
            } else {
                "nothing else on the taps (frame shown: the batch's first)"
            },
        );
    }
    if problems.is_empty() {
        return;
    }
    if report.violations < REPLAY_UNTIL {
        replay(fx, st, batch, first_no, report, &problems);
    } else {
        report.violation(
            &At {
                stage: STAGE,
                program: "both",
                state: st,
                frame_no: first_no,
                case: &batch[0],
            },
            &problems,
            "the batch's drops and counters (not replayed: too many violations already)",
        );
    }
}

/// A batch whose drops or counters differ: run it again one frame at a
/// time, reading the maps around each run, to name the frames.
fn replay(
    fx: &Fixture,
    st: &State,
    batch: &[Case],
    first_no: usize,
    report: &mut Report,
    batch_problems: &[String],
) {
    let mut named = 0;
    fx.clear_counters();
    for (i, case) in batch.iter().enumerate() {
        for program in [Program::FromContainer, Program::FromOverlay] {
            let (m, name, ifindex) = match program {
                Program::FromContainer => (
                    model::container(st, &case.frame, case.ifindex, false),
                    CONTAINER,
                    case.ifindex,
                ),
                _ => {
                    fx.set_tunnel_key(case.key);
                    (
                        model::overlay(st, &case.frame, case.key, false),
                        OVERLAY,
                        fx.env.tunnels[0].0,
                    )
                }
            };
            let before = fx.drops();
            if fx.run(program, ifindex, &case.frame).is_err() {
                continue;
            }
            let mut exp = Expect::new();
            exp.add(&m);
            let mut p = drops_diff(&exp.drops, &delta(&fx.drops(), &before));
            p.extend(counters_diff(&exp.counters, &fx.counters()));
            fx.clear_counters();
            if !p.is_empty() {
                named += 1;
                report.violation(
                    &At {
                        stage: STAGE,
                        program: name,
                        state: st,
                        frame_no: first_no + i,
                        case,
                    },
                    &p,
                    &m.summary(),
                );
            }
        }
    }
    // Copies the replay's clones sent are not checked twice.
    let _ = fx.drain_taps();
    if named == 0 {
        report.violation(
            &At {
                stage: STAGE,
                program: "both",
                state: st,
                frame_no: first_no,
                case: &batch[0],
            },
            batch_problems,
            "the batch's drops and counters (no single frame differed on replay)",
        );
    }
}
