//! AF_PACKET sockets for the fuzzer: taps that wait with poll(2) and keep
//! thousands of frames (a large receive buffer), ignoring what the device
//! itself sends; and a sender for raw frames, any length and any ethertype.

use std::io;

use crate::common::packet_socket;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Sees every frame received on one device.
pub struct RawTap {
    fd: OwnedFd,
    buf: std::cell::RefCell<Vec<u8>>,
}

impl RawTap {
    pub fn open(dev: &str) -> RawTap {
        let fd = packet_socket(dev, libc::ETH_P_ALL as u16, true)
            .unwrap_or_else(|e| panic!("AF_PACKET tap on {dev}: {e}"));
        // Room for every copy of a batch: past the default buffer the
        // kernel would drop frames unseen and the check would blame the
        // datapath. FORCE: root may exceed rmem_max.
        let size: libc::c_int = 64 << 20;
        // SAFETY: setsockopt with a valid int of the size passed.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(ret, 0, "SO_RCVBUFFORCE: {}", io::Error::last_os_error());
        RawTap {
            fd,
            buf: std::cell::RefCell::new(vec![0u8; 65536]),
        }
    }

    /// The next frame received on the device, if one is queued.
    pub fn try_recv(&self) -> Option<Vec<u8>> {
        let mut buf = self.buf.borrow_mut();
        loop {
            // SAFETY: sockaddr_ll is plain data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and from are valid writable buffers of the sizes
            // passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                return None;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let n = (n as usize).min(buf.len());
            return Some(buf[..n].to_vec());
        }
    }

    /// The next received frame, waiting up to `timeout` for it.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.try_recv() {
                return Some(f);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    }

    /// Everything queued now.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }
}

/// Sends raw frames out of one device; receives nothing (protocol 0).
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    pub fn open(dev: &str) -> Sender {
        let fd = packet_socket(dev, 0, false).unwrap_or_else(|e| panic!("AF_PACKET on {dev}: {e}"));
        Sender { fd }
    }

    /// Send `frame` as it is; the kernel's refusal is returned, not hidden.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is a valid readable buffer of the given length; the
        // socket is bound to its device.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        assert_eq!(n as usize, frame.len(), "short send");
        Ok(())
    }
}
