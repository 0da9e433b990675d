//! Traffic for the lab tests: senders in pods, receivers on the upstream
//! host that report what actually arrived (source, TTL, payload), and taps
//! inside a lab namespace.

use std::net::{Ipv4Addr, UdpSocket};
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

/// Send `count` datagrams of `len` bytes to `group`, `gap` apart.
pub fn send_stream(sock: &UdpSocket, group: Ipv4Addr, count: u32, len: usize, gap: Duration) {
    for seq in 0..count {
        sock.send_to(&payload(seq, len), (group, PORT))
            .expect("send");
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
}

/// One datagram as the upstream host received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub source: Ipv4Addr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

/// A socket on the upstream host joined to a group on one of its
/// interfaces: source-specific (S,G) when a source is given, else (*,G).
/// A thread reads it from the moment it joins, so nothing is lost to a
/// full socket buffer while a test is still sending.
pub struct Receiver {
    got: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
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
            // SAFETY: setsockopt with a valid int option value of its size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_RECVTTL,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            assert_eq!(r, 0, "IP_RECVTTL");
            // Only what arrives on this uplink, not on the host's other one.
            // SAFETY: setsockopt with a valid int option value of its size.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_ALL,
                    (&0 as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            assert_eq!(r, 0, "IP_MULTICAST_ALL");
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
                    // SAFETY: a valid ip_mreq_source of its size.
                    let r = unsafe {
                        libc::setsockopt(
                            fd,
                            libc::IPPROTO_IP,
                            libc::IP_ADD_SOURCE_MEMBERSHIP,
                            (&mreq as *const libc::ip_mreq_source).cast(),
                            std::mem::size_of::<libc::ip_mreq_source>() as u32,
                        )
                    };
                    assert_eq!(
                        r,
                        0,
                        "IP_ADD_SOURCE_MEMBERSHIP: {}",
                        std::io::Error::last_os_error()
                    );
                }
                None => s.join_multicast_v4(&group, &iface_addr).expect("join"),
            }
            s
        })
        .expect("upstream namespace");
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
    pub fn collect(&self, quiet: Duration, max: Duration) -> Vec<Datagram> {
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

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn recv_one(sock: &UdpSocket) -> Option<Datagram> {
    let mut buf = vec![0u8; 65536];
    let mut cmsg = [0u8; 64];
    // SAFETY: sockaddr_in is plain data; zeroed is valid.
    let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below is valid for
    // the length given, for the duration of the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
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
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TTL {
                ttl = *(libc::CMSG_DATA(c) as *const libc::c_int) as u8;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some(Datagram {
        source: Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
        ttl,
        payload: buf,
    })
}

/// An AF_PACKET tap on `dev` inside lab namespace `ns`.
pub fn tap_in(ns: &str, dev: &str) -> Tap {
    let dev = dev.to_owned();
    in_netns(ns, move || Tap::open(&dev)).expect("namespace")
}
