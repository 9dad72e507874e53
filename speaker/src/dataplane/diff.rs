//! Map repair as a reconcile: what the VIP map should hold against what it
//! holds, and the writes that make them equal.

use std::collections::BTreeMap;

use speaker_common::maps::{VipEntry, VipKey};

/// The writes that turn the map's content into the wanted one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MapDiff {
    /// Entries the map has and should not.
    pub remove: Vec<VipKey>,
    /// Entries missing from the map, or different in it.
    pub set: Vec<(VipKey, VipEntry)>,
}

impl MapDiff {
    pub fn between(
        want: &BTreeMap<VipKey, VipEntry>,
        have: impl IntoIterator<Item = (VipKey, VipEntry)>,
    ) -> Self {
        let have: BTreeMap<VipKey, VipEntry> = have.into_iter().collect();
        Self {
            remove: have
                .keys()
                .filter(|k| !want.contains_key(k))
                .copied()
                .collect(),
            set: want
                .iter()
                .filter(|(k, e)| have.get(k) != Some(e))
                .map(|(k, e)| (*k, *e))
                .collect(),
        }
    }

    /// Entries that differed.
    pub fn len(&self) -> usize {
        self.remove.len() + self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8) -> VipKey {
        VipKey::ipv4(2, 0, [198, 18, 0, last])
    }

    fn entry(expires_ns: u64) -> VipEntry {
        VipEntry {
            mac: [2, 0, 0, 0, 0, 1],
            _pad: [0; 2],
            expires_ns,
        }
    }

    #[test]
    fn extra_entries_go_missing_and_changed_ones_are_set() {
        let want = BTreeMap::from([(key(1), entry(10)), (key(2), entry(20))]);
        let have = [(key(1), entry(10)), (key(2), entry(5)), (key(3), entry(30))];
        let diff = MapDiff::between(&want, have);
        assert_eq!(diff.remove, vec![key(3)]);
        assert_eq!(diff.set, vec![(key(2), entry(20))]);
        assert_eq!(diff.len(), 2);
    }

    #[test]
    fn equal_maps_need_nothing() {
        let want = BTreeMap::from([(key(1), entry(10))]);
        assert!(MapDiff::between(&want, [(key(1), entry(10))]).is_empty());
        assert!(MapDiff::between(&BTreeMap::new(), []).is_empty());
    }
}
