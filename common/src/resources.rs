//! Partitionable resources: what an agent offers and what a task asks for.
//!
//! An agent's capacity is one `Resources`; each running task holds its request
//! out of it (an HTCondor partitionable slot). Custom resources are named counts.

use serde::{Deserialize, Serialize};

/// A bundle of resources. `cpus` are whole cores; memory is bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    /// Named custom resources (`--resource licence=4`), sorted by name.
    pub custom: Vec<(String, u64)>,
}

impl Resources {
    pub fn cpus(cpus: u32) -> Self {
        Resources {
            cpus,
            ..Default::default()
        }
    }

    /// True if `self` (a request) fits inside `free`.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpus <= free.cpus
            && self.memory_bytes <= free.memory_bytes
            && self.gpus <= free.gpus
            && self.custom.iter().all(|(name, n)| {
                *n == 0
                    || free
                        .custom
                        .iter()
                        .any(|(fname, fnum)| fname == name && fnum >= n)
            })
    }

    /// Takes `req` out of `self`. The caller checked `req.fits_in(self)`.
    pub fn take(&mut self, req: &Resources) {
        debug_assert!(req.fits_in(self), "take of {req:?} from {self:?}");
        self.cpus -= req.cpus;
        self.memory_bytes -= req.memory_bytes;
        self.gpus -= req.gpus;
        for (name, n) in &req.custom {
            if let Some(slot) = self.custom.iter_mut().find(|(f, _)| f == name) {
                slot.1 -= n;
            }
        }
    }

    /// Gives `req` back to `self`.
    pub fn give(&mut self, req: &Resources) {
        self.cpus += req.cpus;
        self.memory_bytes += req.memory_bytes;
        self.gpus += req.gpus;
        for (name, n) in &req.custom {
            match self.custom.iter_mut().find(|(f, _)| f == name) {
                Some(slot) => slot.1 += n,
                None => self.custom.push((name.clone(), *n)),
            }
        }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cpu, {}",
            self.cpus,
            crate::units::format_size(self.memory_bytes)
        )?;
        if self.gpus > 0 {
            write!(f, ", {} gpu", self.gpus)?;
        }
        for (name, n) in &self.custom {
            write!(f, ", {name}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_give_round_trip() {
        let mut free = Resources {
            cpus: 2,
            memory_bytes: 1000,
            gpus: 0,
            custom: vec![("lic".into(), 1)],
        };
        let req = Resources {
            cpus: 1,
            memory_bytes: 600,
            gpus: 0,
            custom: vec![("lic".into(), 1)],
        };
        assert!(req.fits_in(&free));
        free.take(&req);
        assert!(!req.fits_in(&free), "memory and licence are used up");
        assert!(Resources::cpus(1).fits_in(&free));
        free.give(&req);
        assert_eq!(free.cpus, 2);
        assert_eq!(free.custom, vec![("lic".into(), 1)]);
    }
}
