//! Version vectors: one counter per device, telling which of two versions of a file descends from
//! the other and which were made concurrently.

use std::cmp::Ordering as CmpOrdering;

/// How two versions relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Equal,
    /// The first descends from the second (it is newer).
    Newer,
    /// The second descends from the first.
    Older,
    /// Neither descends from the other: concurrent edits.
    Concurrent,
}

/// A version vector, kept sorted by device id with no zero counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Version(Vec<(u64, u64)>);

impl Version {
    /// Builds a vector from pairs in any order; zero counters are dropped, duplicates keep the max.
    pub fn from_pairs(mut pairs: Vec<(u64, u64)>) -> Version {
        pairs.retain(|p| p.1 != 0);
        pairs.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(pairs.len());
        for (d, c) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == d => last.1 = last.1.max(c),
                _ => out.push((d, c)),
            }
        }
        Version(out)
    }

    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.0
    }

    #[cfg(test)]
    pub fn get(&self, device: u64) -> u64 {
        self.0.iter().find(|p| p.0 == device).map_or(0, |p| p.1)
    }

    /// This version with `device`'s counter moved past every counter in it and to at least the
    /// time in seconds, so the result is newer than this version and than anything this device
    /// made before, even with an index that was lost and rebuilt since (its files then get
    /// versions that count from the time, past those the peers hold of them).
    pub fn bumped(&self, device: u64) -> Version {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.bumped_at(device, now)
    }

    fn bumped_at(&self, device: u64, now: u64) -> Version {
        let top = self.0.iter().map(|p| p.1).max().unwrap_or(0);
        let mut pairs = self.0.clone();
        pairs.retain(|p| p.0 != device);
        pairs.push((device, top.saturating_add(1).max(now)));
        Version::from_pairs(pairs)
    }

    /// The least version that descends from both.
    pub fn merged(&self, other: &Version) -> Version {
        let mut pairs = self.0.clone();
        pairs.extend_from_slice(&other.0);
        Version::from_pairs(pairs)
    }

    pub fn compare(&self, other: &Version) -> Order {
        let (mut ge, mut le) = (true, true);
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let ord = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => CmpOrdering::Less,
                _ => CmpOrdering::Greater,
            };
            match ord {
                CmpOrdering::Less => {
                    le = false;
                    i += 1;
                }
                CmpOrdering::Greater => {
                    ge = false;
                    j += 1;
                }
                CmpOrdering::Equal => {
                    let (x, y) = (a[i].1, b[j].1);
                    if x > y {
                        le = false;
                    }
                    if x < y {
                        ge = false;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        match (ge, le) {
            (true, true) => Order::Equal,
            (true, false) => Order::Newer,
            (false, true) => Order::Older,
            (false, false) => Order::Concurrent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[(u64, u64)]) -> Version {
        Version::from_pairs(p.to_vec())
    }

    #[test]
    fn ordering() {
        assert_eq!(v(&[]).compare(&v(&[])), Order::Equal);
        assert_eq!(v(&[(1, 1)]).compare(&v(&[])), Order::Newer);
        assert_eq!(v(&[]).compare(&v(&[(1, 1)])), Order::Older);
        assert_eq!(
            v(&[(1, 2), (2, 1)]).compare(&v(&[(1, 1), (2, 1)])),
            Order::Newer
        );
        assert_eq!(v(&[(1, 2)]).compare(&v(&[(2, 1)])), Order::Concurrent);
        assert_eq!(
            v(&[(1, 2), (3, 1)]).compare(&v(&[(1, 3)])),
            Order::Concurrent
        );
        assert_eq!(v(&[(2, 0), (1, 1)]), v(&[(1, 1)]));
    }

    #[test]
    fn bump_and_merge() {
        let a = v(&[(1, 3), (2, 5)]);
        let b = a.bumped_at(1, 0);
        assert_eq!(b.get(1), 6);
        // The counter is at least the time: a device whose index was rebuilt starts past the
        // versions it made before, and two bumps in one second still order.
        let fresh = Version::default().bumped_at(1, 1_000);
        assert_eq!(fresh.get(1), 1_000);
        assert_eq!(fresh.bumped_at(1, 1_000).get(1), 1_001);
        assert_eq!(
            Version::default().bumped(1).compare(&v(&[(1, 3)])),
            Order::Newer
        );
        assert_eq!(b.compare(&a), Order::Newer);
        let c = a.bumped(2).bumped(3);
        let m = b.merged(&c);
        assert_eq!(m.compare(&b), Order::Newer);
        assert_eq!(m.compare(&c), Order::Newer);
        assert_eq!(b.compare(&c), Order::Concurrent);
    }
}
