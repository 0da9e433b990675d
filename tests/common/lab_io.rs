//! Traffic for the lab tests: senders in pods, receivers on the upstream
//! host that report what actually arrived (source, TTL or hop limit,
//! payload), taps inside a lab namespace, and streams that must not leave.

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::{in_netns, Lab, Pod};

use super::Tap;

pub const PORT: u16 = 5001;

/// A UDP socket in `pod`, bound to the pod's address, with a multicast TTL.
pub fn pod_socket(lab: &Lab, pod: Pod, ttl: u32) -> UdpSocket {
    in_netns(&lab.pod_ns(pod), move || {
        let s = UdpSocket::bind((pod.ip(), 40000)).expect("bind in pod");
        s.set_multicast_ttl_v4(ttl).expect("IP_MULTICAST_TTL");
        s
    })
    .expect("pod namespace")
}

/// The payload of datagram `seq` of a stream: a sequence number and a
/// recognisable pattern, so that every byte can be checked on arrival.
pub fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(4));
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((4..len).map(|i| (i as u32).wrapping_mul(7).wrapping_add(seq) as u8));
    p
}

/// An IPv6 UDP socket in `pod`, bound to the pod's IPv6 address, with a
/// multicast hop limit.
pub fn pod_socket6(lab: &Lab, pod: Pod, hops: u32) -> UdpSocket {
    in_netns(&lab.pod_ns(pod), move || {
        let s = UdpSocket::bind((pod.ip6(), 40000)).expect("bind in pod");
        socket2::SockRef::from(&s)
            .set_multicast_hops_v6(hops)
            .expect("IPV6_MULTICAST_HOPS");
        s
    })
    .expect("pod namespace")
}

/// Send `count` datagrams of `len` bytes to `group`, `gap` apart.
pub fn send_stream(
    sock: &UdpSocket,
    group: impl Into<IpAddr>,
    count: u32,
    len: usize,
    gap: Duration,
) {
    let group = group.into();
    for seq in 0..count {
        sock.send_to(&payload(seq, len), (group, PORT))
            .expect("send");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
}

/// One datagram as the upstream host received it: `ttl` is the IPv4 TTL or
/// the IPv6 hop limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<A = Ipv4Addr> {
    pub source: A,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// The sequence number [`payload`] put at the head of a datagram.
pub fn seq_of<A>(d: &Datagram<A>) -> u32 {
    u32::from_be_bytes(d.payload[..4].try_into().expect("4 bytes"))
}

/// What a receiver needs to know of an address family.
pub trait Family: Copy + Debug + PartialEq + Send + 'static {
    /// Where the TTL or hop limit comes in the control messages.
    const HOPS_CMSG: (libc::c_int, libc::c_int);
    /// The source of a datagram, from the address `recvmsg` filled in.
    fn source(from: &libc::sockaddr_storage) -> Self;
}

impl Family for Ipv4Addr {
    const HOPS_CMSG: (libc::c_int, libc::c_int) = (libc::IPPROTO_IP, libc::IP_TTL);
    fn source(from: &libc::sockaddr_storage) -> Self {
        // SAFETY: the receiver's socket is AF_INET: the kernel wrote a
        // sockaddr_in, which fits in and is aligned within the storage.
        let sin = unsafe { &*(from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))
    }
}

impl Family for Ipv6Addr {
    const HOPS_CMSG: (libc::c_int, libc::c_int) = (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT);
    fn source(from: &libc::sockaddr_storage) -> Self {
        // SAFETY: the receiver's socket is AF_INET6: the kernel wrote a
        // sockaddr_in6, which fits in and is aligned within the storage.
        let sin6 =
            unsafe { &*(from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
        Ipv6Addr::from(sin6.sin6_addr.s6_addr)
    }
}

/// A socket on the upstream host joined to a group on one of its
/// interfaces: source-specific (S,G) when a source is given, else (*,G).
/// A thread reads it from the moment it joins, so nothing is lost to a
/// full socket buffer while a test is still sending.
pub struct Receiver<A = Ipv4Addr> {
    got: Arc<Mutex<Vec<Datagram<A>>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// setsockopt(2) of a plain value; panics naming `what` on failure.
fn set_opt<T>(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: &T, what: &str) {
    // SAFETY: value points at a live T of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    assert_eq!(r, 0, "{what}: {}", std::io::Error::last_os_error());
}

impl Receiver<Ipv4Addr> {
    /// `iface_addr`: the upstream host's address on the uplink to listen on.
    pub fn join(
        lab: &Lab,
        group: Ipv4Addr,
        iface_addr: Ipv4Addr,
        source: Option<Ipv4Addr>,
    ) -> Self {
        let sock = in_netns(&lab.upstream_ns(), move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
                .expect("socket");
            // Several receivers of one group (one per uplink) on one host.
            s.set_reuse_address(true).expect("SO_REUSEADDR");
            s.bind(&std::net::SocketAddr::from((group, PORT)).into())
                .expect("bind group");
            let s: UdpSocket = s.into();
            let fd = s.as_raw_fd();
            let on: libc::c_int = 1;
            set_opt(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, &on, "IP_RECVTTL");
            // Only what arrives on this uplink, not on the host's other one.
            let off: libc::c_int = 0;
            set_opt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_ALL,
                &off,
                "IP_MULTICAST_ALL",
            );
            match source {
                Some(src) => {
                    let mreq = libc::ip_mreq_source {
                        imr_multiaddr: libc::in_addr {
                            s_addr: u32::from_ne_bytes(group.octets()),
                        },
                        imr_interface: libc::in_addr {
                            s_addr: u32::from_ne_bytes(iface_addr.octets()),
                        },
                        imr_sourceaddr: libc::in_addr {
                            s_addr: u32::from_ne_bytes(src.octets()),
                        },
                    };
                    set_opt(
                        fd,
                        libc::IPPROTO_IP,
                        libc::IP_ADD_SOURCE_MEMBERSHIP,
                        &mreq,
                        "IP_ADD_SOURCE_MEMBERSHIP",
                    );
                }
                None => s.join_multicast_v4(&group, &iface_addr).expect("join"),
            }
            s
        })
        .expect("upstream namespace");
        Receiver::reading(sock)
    }
}

/// A `sockaddr_in6` in a `sockaddr_storage`, as group_source_req holds it.
fn storage6(addr: Ipv6Addr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; zeroed is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: a sockaddr_in6 fits in and is aligned within the storage.
    let sin6 =
        unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_addr.s6_addr = addr.octets();
    ss
}

impl Receiver<Ipv6Addr> {
    /// Join `group` on the upstream host's `dev` (eth0: node-b's uplink,
    /// eth1: node-c's): with a source, an MLDv2 source-specific join
    /// (`MCAST_JOIN_SOURCE_GROUP`), else an any-source one.
    pub fn join6(lab: &Lab, group: Ipv6Addr, dev: &str, source: Option<Ipv6Addr>) -> Self {
        let dev = dev.to_owned();
        let sock = in_netns(&lab.upstream_ns(), move || {
            let ifindex = super::ifindex(&dev);
            let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
                .expect("socket");
            s.set_only_v6(true).expect("IPV6_V6ONLY");
            s.set_reuse_address(true).expect("SO_REUSEADDR");
            s.bind(&std::net::SocketAddr::from((group, PORT)).into())
                .expect("bind group");
            let s: UdpSocket = s.into();
            let fd = s.as_raw_fd();
            let on: libc::c_int = 1;
            set_opt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVHOPLIMIT,
                &on,
                "IPV6_RECVHOPLIMIT",
            );
            // Only what arrives on this uplink, not on the host's other one
            // (linux/in6.h IPV6_MULTICAST_ALL).
            const IPV6_MULTICAST_ALL: libc::c_int = 29;
            let off: libc::c_int = 0;
            set_opt(
                fd,
                libc::IPPROTO_IPV6,
                IPV6_MULTICAST_ALL,
                &off,
                "IPV6_MULTICAST_ALL",
            );
            match source {
                Some(src) => {
                    let req = libc::group_source_req {
                        gsr_interface: ifindex,
                        gsr_group: storage6(group),
                        gsr_source: storage6(src),
                    };
                    set_opt(
                        fd,
                        libc::IPPROTO_IPV6,
                        libc::MCAST_JOIN_SOURCE_GROUP,
                        &req,
                        "MCAST_JOIN_SOURCE_GROUP",
                    );
                }
                None => s.join_multicast_v6(&group, ifindex).expect("join"),
            }
            s
        })
        .expect("upstream namespace");
        Receiver::reading(sock)
    }
}

impl<A: Family> Receiver<A> {
    fn reading(sock: UdpSocket) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (got, stop) = (got.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(d) = recv_one(&sock) {
                        got.lock().expect("lock").push(d);
                    }
                }
            })
        };
        Receiver {
            got,
            stop,
            reader: Some(reader),
        }
    }

    fn len(&self) -> usize {
        self.got.lock().expect("lock").len()
    }

    /// Everything received so far, once nothing more has arrived for
    /// `quiet` (or `max` has passed).
    pub fn collect(&self, quiet: Duration, max: Duration) -> Vec<Datagram<A>> {
        let deadline = Instant::now() + max;
        let mut seen = self.len();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let n = self.len();
            if n != seen {
                seen = n;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        self.got.lock().expect("lock").clone()
    }
}

impl<A> Drop for Receiver<A> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn recv_one<A: Family>(sock: &UdpSocket) -> Option<Datagram<A>> {
    let mut buf = vec![0u8; 65536];
    let mut cmsg = [0u8; 64];
    // SAFETY: sockaddr_storage is plain data; zeroed is valid.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below is valid for
    // the length given, for the duration of the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len();
    // SAFETY: msg points at live buffers as set up above.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    let mut ttl = 0u8;
    // SAFETY: walking the control buffer the kernel filled, with the libc
    // CMSG macros, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if ((*c).cmsg_level, (*c).cmsg_type) == A::HOPS_CMSG {
                ttl = *(libc::CMSG_DATA(c) as *const libc::c_int) as u8;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some(Datagram {
        source: A::source(&from),
        ttl,
        payload: buf,
    })
}

/// An AF_PACKET tap on `dev` inside lab namespace `ns`.
pub fn tap_in(ns: &str, dev: &str) -> Tap {
    let dev = dev.to_owned();
    in_netns(ns, move || Tap::open(&dev)).expect("namespace")
}

/// The MAC address of `dev` in namespace `ns`.
pub fn mac_in(ns: &str, dev: &str) -> [u8; 6] {
    let dev = dev.to_owned();
    in_netns(ns, move || super::mac_of(&dev)).expect("namespace")
}

/// Whether a frame is one of a stream's.
type FramePredicate = Box<dyn Fn(&[u8]) -> bool>;

/// A stream a pod sent that must not leave the cluster, watched on both
/// uplinks (all frames, whatever the upstream host joined).
pub struct HeldBack {
    what: String,
    on_uplink: FramePredicate,
    uplinks: [(&'static str, Tap); 2],
}

impl HeldBack {
    /// Watch both uplinks, then `send` from `pod`; returns once `count`
    /// frames for which `left_pod` holds have left the pod (seen on its
    /// veth, in its node): a scenario cannot pass because the pod sent
    /// nothing. `on_uplink` recognises a frame of the stream on an uplink
    /// (where it would carry the egress address).
    pub fn watch(
        lab: &Lab,
        pod: Pod,
        what: &str,
        count: u32,
        left_pod: impl Fn(&[u8]) -> bool,
        on_uplink: impl Fn(&[u8]) -> bool + 'static,
        send: impl FnOnce(),
    ) -> HeldBack {
        let veth = tap_in(&lab.node_ns(pod.node()), pod.lxc());
        let uplinks = [
            ("node-b's uplink", tap_in(&lab.upstream_ns(), "eth0")),
            ("node-c's uplink", tap_in(&lab.upstream_ns(), "eth1")),
        ];
        send();
        for n in 0..count {
            veth.recv_matching(Duration::from_secs(10), &left_pod)
                .unwrap_or_else(|| panic!("only {n} of {count} {what} left {}", pod.name()));
        }
        HeldBack {
            what: what.to_owned(),
            on_uplink: Box::new(on_uplink),
            uplinks,
        }
    }

    /// Nothing of the stream on either uplink. Called once a control sent
    /// after it has arrived, so that anything of it would have come first.
    pub fn assert_never_left(&self) {
        for (uplink, tap) in &self.uplinks {
            while let Some(f) = tap.recv(Duration::from_millis(100)) {
                assert!(
                    !(self.on_uplink)(&f),
                    "{} left on {uplink}: {f:02x?}",
                    self.what
                );
            }
        }
    }
}
