//! An error and its causes on one line, as the log, `/readyz` and the
//! process's last word show them.

/// `e` and its causes, joined by ": ". A cause that the message before it
/// already ends with (our errors name their source in their own message)
/// is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let msg = cause.to_string();
        if !out.ends_with(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn error_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("pinned map {path}: {source}")]
        struct Pinned {
            path: &'static str,
            source: std::io::Error,
        }
        let io = std::io::Error::from_raw_os_error(1);
        let e = anyhow::Error::new(Pinned {
            path: "/p",
            source: io,
        })
        .context("loading");
        assert_eq!(
            error_chain(e.as_ref()),
            "loading: pinned map /p: Operation not permitted (os error 1)"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(plain.as_ref()), "outer: inner");
        // A plain std error with a source, as libraries return them.
        let wrapped = std::io::Error::other(Pinned {
            path: "/q",
            source: std::io::Error::from_raw_os_error(2),
        });
        assert_eq!(
            error_chain(&wrapped),
            "pinned map /q: No such file or directory (os error 2)"
        );
    }
}
