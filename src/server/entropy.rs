//! Where session IDs and resume tokens come from in the server: the operating system's CSPRNG.

use crate::router::Entropy;

/// IDs and tokens come from the operating system's CSPRNG, drawn 4 KiB at a time: each CONNECT
/// needs two draws, and one system call per draw was a tenth of the cost of setting up a session.
pub struct OsEntropy {
    pool: Box<[u8; ENTROPY_POOL_BYTES]>,
    /// Bytes of `pool` before this index have been handed out.
    used: usize,
}

const ENTROPY_POOL_BYTES: usize = 4096;

impl OsEntropy {
    pub fn new() -> OsEntropy {
        OsEntropy {
            pool: Box::new([0; ENTROPY_POOL_BYTES]),
            used: ENTROPY_POOL_BYTES,
        }
    }

    fn refill(&mut self) {
        if let Err(error) = getrandom::fill(&mut self.pool[..]) {
            // Predictable IDs or tokens would let anyone take over sessions: stop instead.
            log::error!("the operating system's random number generator failed: {error}");
            std::process::abort();
        }
        self.used = 0;
    }
}

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy::new()
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            if self.used == ENTROPY_POOL_BYTES {
                self.refill();
            }
            let take = (buf.len() - filled).min(ENTROPY_POOL_BYTES - self.used);
            buf[filled..filled + take].copy_from_slice(&self.pool[self.used..self.used + take]);
            // Handed-out bytes are wiped so the pool never holds a token that is in use.
            self.pool[self.used..self.used + take].fill(0);
            self.used += take;
            filled += take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_handed_out_once_and_refilled() {
        let mut entropy = OsEntropy::new();
        let mut seen = std::collections::HashSet::new();
        // Several refills, with draws that straddle the pool's end.
        for _ in 0..(3 * ENTROPY_POOL_BYTES / 36) {
            let mut draw = [0u8; 36];
            entropy.fill(&mut draw);
            assert!(seen.insert(draw), "the same 36 random bytes twice");
        }
        let mut big = vec![0u8; ENTROPY_POOL_BYTES * 2 + 5];
        entropy.fill(&mut big);
        assert!(big.iter().filter(|&&b| b == 0).count() < big.len() / 64);
    }
}
