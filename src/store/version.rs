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

/// Most devices one version vector may name, on the wire and in the index. A device takes a
/// peer's version (or merges with it) only if the result, with itself added, still fits (see
/// [`Version::fits_with`]): a later local change adds this device, and every vector a device
/// holds or sends must be one its peers and its own index accept.
pub const MAX_DEVICES: usize = 1024;

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

    /// Whether this version, with `device` added as a change made there would add it, names
    /// at most [`MAX_DEVICES`] devices.
    pub fn fits_with(&self, device: u64) -> bool {
        let add = self.0.binary_search_by_key(&device, |p| p.0).is_err();
        self.0.len() + usize::from(add) <= MAX_DEVICES
    }

    /// `device`'s counter (0 if it is not named).
    pub fn get(&self, device: u64) -> u64 {
        self.0.iter().find(|p| p.0 == device).map_or(0, |p| p.1)
    }

    /// This version with `device`'s counter moved past every counter in it and to at least the
    /// time in microseconds, so the result is newer than this version and than anything this
    /// device made before, even with an index that lost its last changes and was rebuilt since
    /// (its files then get versions that count from the time, past those the peers hold of
    /// them). Microseconds, not seconds: a device killed right after a change, whose index had
    /// not recorded it, makes its next version of that file within the same second, and a
    /// counter in seconds gave both the same version (equal versions of different content
    /// never converge). Counters made in seconds before are far below these.
    pub fn bumped(&self, device: u64) -> Version {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
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
    fn room_for_this_device() {
        let full: Vec<(u64, u64)> = (1..=MAX_DEVICES as u64).map(|d| (d, 1)).collect();
        let v = Version::from_pairs(full.clone());
        // Full, naming this device: a change here keeps the length; not naming it: no room.
        assert!(v.fits_with(1) && v.fits_with(MAX_DEVICES as u64));
        assert!(!v.fits_with(0) && !v.fits_with(MAX_DEVICES as u64 + 1));
        let one_less = Version::from_pairs(full[1..].to_vec());
        assert!(one_less.fits_with(1) && one_less.fits_with(7_777));
        assert!(one_less.bumped(7_777).pairs().len() == MAX_DEVICES);
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
