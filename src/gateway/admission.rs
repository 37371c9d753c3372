//! Connection caps checked in the upgrade hook, so an over-limit client gets an HTTP answer
//! (429 per address, 503 overall) instead of a dropped socket. A slot is taken when the hook
//! accepts and given back when the worker sees the connection's Close event: the engine emits
//! exactly one Open and one Close for every accepted upgrade.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Global,
    PerIp,
}

#[derive(Default)]
pub(crate) struct Admission {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Takes a slot for `ip` unless a cap is reached.
    pub(crate) fn admit(
        &self,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: Option<usize>,
    ) -> Result<(), Refused> {
        let mut counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= max_total {
            return Err(Refused::Global);
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if max_per_ip.is_some_and(|max| *mine >= max) {
            if *mine == 0 {
                counts.per_ip.remove(&ip);
            }
            return Err(Refused::PerIp);
        }
        *mine += 1;
        counts.total += 1;
        Ok(())
    }

    /// Gives back the slot of a closed connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut counts = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }

    /// Connections counted now.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let a = Admission::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        assert_eq!(a.admit(ip, 3, Some(2)), Ok(()));
        assert_eq!(a.admit(ip, 3, Some(2)), Ok(()));
        assert_eq!(a.admit(ip, 3, Some(2)), Err(Refused::PerIp));
        assert_eq!(a.admit(other, 3, Some(2)), Ok(()));
        assert_eq!(a.admit(other, 3, Some(2)), Err(Refused::Global));
        a.release(ip);
        assert_eq!(a.admit(other, 3, Some(2)), Ok(()));
        assert_eq!(a.total(), 3);
    }
}
