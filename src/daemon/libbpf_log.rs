//! libbpf's own messages during the daemon's loads of the datapath, held
//! until the outcome is known: a load retried with the same error must not
//! print the same (possibly long: the verifier's) log on every attempt. The
//! messages of a load that worked, or of one whose error is logged, go to
//! stderr as libbpf would print them; the others are dropped.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use libbpf_rs::PrintLevel;

/// The messages of the load under way; `None` outside one.
static HELD: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// libbpf's print callback: hold the message during a load, print it
/// otherwise. Info and warnings, as libbpf's own default.
fn print(_level: PrintLevel, msg: String) {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    match held.as_mut() {
        Some(messages) => messages.push(msg),
        None => {
            drop(held);
            let _ = std::io::stderr().write_all(msg.as_bytes());
        }
    }
}

/// libbpf's messages of one load.
#[derive(Debug, Default)]
pub struct Held(Vec<String>);

impl Held {
    /// Print them, as libbpf would have.
    pub fn print(self) {
        let mut err = std::io::stderr().lock();
        for msg in self.0 {
            let _ = err.write_all(msg.as_bytes());
        }
    }
}

/// Run `f` (a load) with libbpf's messages held; they come back with its
/// result. Blocking, like `f`.
pub fn holding<T>(f: impl FnOnce() -> T) -> (T, Held) {
    /// Stops holding also when `f` panics: later messages are printed.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HELD.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }
    libbpf_rs::set_print(Some((PrintLevel::Info, print)));
    *HELD.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
    let _release = Release;
    let out = f();
    let held = HELD
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or_default();
    (out, Held(held))
}
