//! Stage two: the production mcast_from_container attached with tcx on a
//! pod's veth, fed by a packet socket inside the pod, with the observer
//! program behind it (where Cilium's would be) and taps beyond the uplinks
//! and on the underlay of the real VXLAN devices. This is where the frames
//! BPF_PROG_RUN refuses go, and where tagged frames get the tag the kernel
//! takes out of them. Every frame is awaited by the event the model
//! predicts (handed on, dropped, sent); a positive control that must leave
//! is interleaved, so that "nothing came out" is never vacuous.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libbpf_rs::query::{LinkInfoIter, ProgInfoIter, ProgInfoQueryOptions};
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use cilium_mcast_egress::bpf_intf::mcast_test_observed;
use cilium_mcast_egress::datapath::{Plain, Program};

use crate::check::{byte_diff, egress_invariant, verify_emitted, verify_tunnel};
use crate::common::observer::Observer;
use crate::common::{sh, PodNs};
use crate::gen::{self, Case, Gen};
use crate::harness::{disable_ipv6, wait_oper_up, Fixture};
use crate::model::{self, hex, State, Via};
use crate::prog_run::{counters_diff, delta, drops_diff};
use crate::report::{At, Report};
use crate::rng::{mix, Rng};
use crate::tap::Sender;

pub const STAGE: &str = "real path";
const PROGRAM: &str = "mcast_from_container on lxc_a (tcx)";
/// A positive control after this many frames.
const CONTROL_EVERY: usize = 16;
const WAIT: Duration = Duration::from_secs(2);
/// How long to wait for the rest once something has happened.
const GRACE: Duration = Duration::from_millis(50);

/// What the kernel does with a frame the pod sends, before tcx sees it.
pub enum Rx {
    /// send(2) refuses it: shorter than the device's link-layer header.
    Refused,
    /// Dropped on receive: a VLAN ethertype with no room for the tag.
    Vanishes,
    /// Handed to tcx ingress as `frame`; `vlan` when the kernel moved an
    /// 802.1Q/802.1ad tag out of it into the skb (skb_vlan_untag()).
    Seen { frame: Vec<u8>, vlan: bool },
}

pub fn kernel_rx(frame: &[u8]) -> Rx {
    if frame.len() < 14 {
        return Rx::Refused;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x8100 | 0x88a8 if frame.len() < 20 => Rx::Vanishes,
        0x8100 | 0x88a8 => {
            let mut f = frame[..12].to_vec();
            f.extend_from_slice(&frame[16..]);
            Rx::Seen {
                frame: f,
                vlan: true,
            }
        }
        _ => Rx::Seen {
            frame: frame.to_vec(),
            vlan: false,
        },
    }
}

/// The observer's record, found through its link (the program's only map).
fn observer_map(obs: &Observer) -> MapHandle {
    let link = obs.link_id();
    let prog = LinkInfoIter::default()
        .find(|l| l.id == link)
        .expect("the observer's link")
        .prog_id;
    let info = ProgInfoIter::with_query_opts(ProgInfoQueryOptions::default().include_map_ids(true))
        .find(|p| p.id == prog)
        .expect("the observer program");
    info.map_ids
        .iter()
        .filter_map(|id| MapHandle::from_map_id(*id).ok())
        .find(|m| m.name().to_string_lossy().starts_with("mcast_test_obs"))
        .expect("the observer's map")
}

/// Pin the calling thread to one CPU: the pod's sends, the softirq that
/// runs our program and the taps' receive all queue on one backlog, in
/// order, so the positive control is a barrier for what was sent before.
pub fn pin_to_one_cpu() {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let now = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
    let cpu = (0..CpuSet::count())
        .find(|&c| now.is_set(c).unwrap_or(false))
        .expect("a CPU");
    let mut one = CpuSet::new();
    one.set(cpu).expect("cpu set");
    sched_setaffinity(Pid::from_raw(0), &one).expect("pinning the real-path thread");
}

struct RealPath<'a> {
    fx: &'a Fixture,
    observed: MapHandle,
    sender: Sender,
    counters: BTreeMap<(u32, IpAddr, u32), (u64, u64)>,
    controls: u64,
    /// Controls sent: every other one is IPv6.
    sent_controls: u64,
    /// The drops read after the last frame, if nothing ran since.
    last_drops: Option<Vec<(u64, u64)>>,
}

impl RealPath<'_> {
    fn observed(&self) -> mcast_test_observed {
        let bytes = self
            .observed
            .lookup(0u32.as_bytes(), MapFlags::ANY)
            .expect("observer map")
            .expect("element");
        mcast_test_observed::from_bytes(&bytes).expect("size")
    }

    /// Send one frame from the pod and check everything it caused.
    fn one(&mut self, st: &State, case: &Case, no: usize, report: &mut Report) {
        let fx = self.fx;
        let at = At {
            stage: STAGE,
            program: PROGRAM,
            state: st,
            frame_no: no,
            case,
        };
        let mut problems = Vec::new();
        for (tap, f) in fx.drain_taps() {
            problems.push(format!(
                "before this frame was sent, a late frame on {tap}: {}",
                hex(&f)
            ));
        }
        let obs0 = self.observed().count;
        // The last frame's reading after it is this one's before: nothing
        // else runs the program in between.
        let drops0 = self.last_drops.take().unwrap_or_else(|| fx.drops());
        let rx = kernel_rx(&case.frame);
        match (self.sender.send(&case.frame), &rx) {
            (Err(e), Rx::Refused) if e.raw_os_error() == Some(libc::EINVAL) => {
                report.note("real path: refused by the packet socket (< 14 bytes)", 1);
                return;
            }
            (Err(e), _) => {
                problems.push(format!("the pod's send failed: {e}"));
                report.violation(&at, &problems, "sent");
                return;
            }
            (Ok(()), Rx::Refused) => {
                problems.push("the kernel sent a frame shorter than 14 bytes".to_owned());
            }
            (Ok(()), _) => {}
        }
        let m = match &rx {
            Rx::Seen { frame, vlan } => model::container(st, frame, fx.env.lxc_a, *vlan),
            _ => {
                // Nothing reaches tcx: nothing may happen at all.
                let p = self.settle_nothing(obs0, &drops0);
                problems.extend(p);
                if !problems.is_empty() {
                    report.violation(&at, &problems, "the kernel drops it before tcx");
                } else {
                    report.note("real path: dropped by the kernel before tcx (short tag)", 1);
                }
                return;
            }
        };
        let input = match &rx {
            Rx::Seen { frame, .. } => frame.clone(),
            _ => unreachable!(),
        };
        let expect_obs = u32::from(m.verdict == model::NEXT);
        let emission = m.emitted.as_ref().filter(|e| fx.observable(&e.via));
        let want_tap = emission.map(|e| fx.tap_name(&e.via));
        // Wait for what the model predicts; once anything at all has
        // happened, a short grace for the rest, so that a wrong outcome
        // is reported without waiting out the whole timeout.
        let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
        let deadline = Instant::now() + WAIT;
        let mut grace: Option<Instant> = None;
        loop {
            seen.extend(fx.drain_taps());
            let obs = self.observed().count.wrapping_sub(obs0);
            // Only the slot the model expects is polled (reading every
            // slot of both families is some 80 syscalls); the full reading
            // after the wait finds any other.
            let drops_moved = m
                .drop
                .is_some_and(|d| fx.drop_at(d.slot()) != drops0[d.slot()]);
            let emitted = want_tap
                .as_ref()
                .is_none_or(|t| seen.iter().any(|(tap, _)| tap == t));
            let now = Instant::now();
            if obs >= expect_obs && emitted && (m.drop.is_none() || drops_moved) {
                break;
            }
            if obs > 0 || drops_moved || !seen.is_empty() {
                let since = *grace.get_or_insert(now);
                if now.duration_since(since) > GRACE {
                    break;
                }
            }
            if now >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        let got_emission = want_tap.as_ref().and_then(|t| {
            let i = seen.iter().position(|(tap, _)| tap == t)?;
            Some(seen.remove(i).1)
        });

        let o = self.observed();
        let obs = o.count.wrapping_sub(obs0);
        if obs != expect_obs {
            problems.push(format!(
                "handed on to the program behind ours {obs} times, expected {expect_obs}"
            ));
        } else if obs == 1 {
            let n = (o.len as usize).min(o.data.len());
            if o.len as usize != m.out.len() {
                problems.push(format!(
                    "handed on {} bytes, expected {}",
                    o.len,
                    m.out.len()
                ));
            } else if let Some(d) = byte_diff(&m.out[..n], &o.data[..n]) {
                problems.push(format!("handed on (first {n} bytes): {d}"));
            }
        }
        let mut exp_drops = vec![(0u64, 0u64); model::DROP_SLOTS];
        if let Some(d) = m.drop {
            exp_drops[d.slot()] = (1, d.bytes);
        }
        let after = fx.drops();
        let got_drops = delta(&after, &drops0);
        self.last_drops = Some(after);
        problems.extend(drops_diff(&exp_drops, &got_drops));
        for (i, (p, _)) in got_drops.iter().enumerate() {
            if *p > 0 {
                *report.drops_seen.entry(i).or_default() += p;
            }
        }
        match (emission, got_emission) {
            (Some(e), Some(g)) => {
                report.note("real path: copies and redirects checked on the taps", 1);
                if case.class != gen::Class::Control {
                    report.note("real path: ... of which not a positive control", 1);
                    if case.frame.len() > fx.max_run_len {
                        report.note("real path: ... of which too long for BPF_PROG_RUN", 1);
                    }
                    if m.verdict == model::NEXT {
                        report.note("real path: ... of which copies (the original handed on)", 1);
                    }
                }
                let tap = fx.tap_name(&e.via);
                let p = match &e.via {
                    Via::Uplink(i) => {
                        let mut p: Vec<String> = byte_diff(&e.bytes, &g).into_iter().collect();
                        let cut = &input[..e.bytes.len().min(input.len())];
                        p.extend(
                            egress_invariant(st, cut, &g, Some(*i), false)
                                .into_iter()
                                .map(|s| format!("egress invariant: {s}")),
                        );
                        p.extend(
                            verify_emitted(cut, &g, &e.bytes)
                                .into_iter()
                                .map(|s| format!("independent check: {s}")),
                        );
                        p
                    }
                    Via::Tunnel { ifindex, .. } => verify_tunnel(&g, e, fx.tunnel_ports[ifindex]),
                };
                problems.extend(p.into_iter().map(|s| format!("on {tap}: {s}")));
            }
            (Some(e), None) => problems.push(format!(
                "nothing appeared on {} ({:?})",
                fx.tap_name(&e.via),
                e.via
            )),
            _ => {}
        }
        seen.extend(fx.drain_taps());
        for (tap, f) in seen {
            problems.push(format!("unexpected frame on {tap}: {}", hex(&f)));
        }
        for c in &m.counted {
            let e = self
                .counters
                .entry((c.policy_id, c.group, c.role))
                .or_default();
            e.0 += 1;
            e.1 += c.bytes;
        }
        if problems.is_empty() {
            report.verdict(PROGRAM, m.verdict, m.path);
        } else {
            report.violation(&at, &problems, &m.summary());
        }
    }

    /// For a frame that never reaches tcx: after the send, nothing moved.
    fn settle_nothing(&self, obs0: u32, drops0: &[(u64, u64)]) -> Vec<String> {
        let mut p = Vec::new();
        if self.observed().count != obs0 {
            p.push("handed on, but the kernel drops it before tcx".to_owned());
        }
        if self.fx.drops() != drops0 {
            p.push("counted as a drop, but the kernel drops it before tcx".to_owned());
        }
        p
    }

    /// The positive control: it must leave, and the counters so far must
    /// be exactly the model's.
    fn control(&mut self, st: &State, g: &mut Gen<'_>, no: usize, report: &mut Report) {
        self.sent_controls += 1;
        let case = if self.sent_controls % 2 == 0 {
            g.control_v6()
        } else {
            g.control()
        };
        let m = model::container(st, &case.frame, self.fx.env.lxc_a, false);
        let leaves = m
            .emitted
            .as_ref()
            .is_some_and(|e| self.fx.observable(&e.via));
        assert!(
            leaves && m.drop.is_none(),
            "the real-path state has no working positive control: {}\n{}",
            m.summary(),
            st.describe()
        );
        let before = report.violations;
        report.class(STAGE, &case);
        self.one(st, &case, no, report);
        if report.violations == before {
            self.controls += 1;
        }
        let got = self.fx.counters();
        let p = counters_diff(&self.counters, &got);
        if !p.is_empty() {
            report.violation(
                &At {
                    stage: STAGE,
                    program: PROGRAM,
                    state: st,
                    frame_no: no,
                    case: &case,
                },
                &p,
                "the counters of every frame of this state so far",
            );
            self.counters = got;
        }
    }
}

pub fn run(fx: &Fixture, seed: u64, frames: usize, queued: Vec<Case>, report: &mut Report) {
    let started = Instant::now();
    fx.dp
        .attach("lxc_a", Program::FromContainer)
        .expect("attaching mcast_from_container to lxc_a");
    let obs = Observer::attach_behind("lxc_a", fx.dp.paths());
    let observed = observer_map(&obs);

    let pod = PodNs::new();
    pod.run(disable_ipv6);
    pod.take("pod_a");
    let sender = pod.run(|| {
        sh("ip", &["link", "set", "pod_a", "up"]);
        wait_oper_up("pod_a");
        Sender::open("pod_a")
    });
    wait_oper_up("lxc_a");
    pin_to_one_cpu();

    let mut rp = RealPath {
        fx,
        observed,
        sender,
        counters: BTreeMap::new(),
        controls: 0,
        sent_controls: 0,
        last_drops: None,
    };
    let n_states = (frames / 500).clamp(2, 40);
    let per_state = frames.div_ceil(n_states);
    let mut queued = queued.into_iter();
    let mut no = 0usize;
    for si in 0..n_states {
        let mut srng = Rng::new(mix(seed, 0x2_0000_0000 + si as u64));
        let mut st = gen::state(&mut srng, &fx.env, si, true);
        st.label = format!("real path {}", st.label);
        fx.apply(&st);
        rp.counters.clear();
        rp.last_drops = None;
        let mut g = Gen::new(Rng::new(mix(seed, 0x3_0000_0000 + si as u64)), &st, &fx.env);
        rp.control(&st, &mut g, no, report);
        let mut cases: Vec<Case> = queued.by_ref().take(per_state / 2).collect();
        while cases.len() < per_state {
            cases.push(g.case(true));
        }
        for (i, case) in cases.iter_mut().enumerate() {
            // Every frame comes from the pod behind lxc_a here.
            case.ifindex = fx.env.lxc_a;
            report.class(STAGE, case);
            rp.one(&st, case, no, report);
            no += 1;
            if (i + 1) % CONTROL_EVERY == 0 {
                rp.control(&st, &mut g, no, report);
            }
        }
        rp.control(&st, &mut g, no, report);
    }
    report.note(
        "real path: positive controls that left as expected",
        rp.controls,
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {STAGE} stage: {no} frames from a pod over real veths and VXLAN, {n_states} map states, {} controls, {secs:.1} s",
        rp.controls
    );
    drop(obs);
}
