//! Process-wide limits the server needs lifted before it accepts connections.

/// Lifts this process's soft open-file limit (`RLIMIT_NOFILE`) to its hard limit.
///
/// Each connection is a file descriptor, and the soft limit is often `ulimit -n`'s 1024, far
/// below what `--max-connections` asks for (and what the load generator and the soak tests
/// open). Returns the soft limit in force afterwards, `None` when it cannot be read; a raise
/// the kernel refuses is logged and leaves the limit as it was.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads only the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(raised.rlim_cur);
        }
        log::warn!("could not raise the open-file limit; see `ulimit -n`");
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = raise_open_file_limit().expect("RLIMIT_NOFILE is readable");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct we pass.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(soft, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        // A second call finds nothing to raise and reports the same limit.
        assert_eq!(raise_open_file_limit(), Some(soft));
    }
}
