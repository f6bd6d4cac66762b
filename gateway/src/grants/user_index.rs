//! The live table's index by user: an open-addressing hash table (linear probing, backward
//! shift on removal) of 16-byte slots, each a user name's 64-bit hash and one grant.
//!
//! Why not a `HashMap`: on a connect the index is cold, and a `HashMap` probe reads a line of
//! control bytes, then the slot, then the grant. Here the hash sits in the slot, so a probe
//! reads the slot's line (four slots to a line; at most half the slots are full, so a probe
//! rarely runs past it) and then only the grant whose hash matches, where the name is
//! compared. A user's several grants, and the grants of users whose names share a hash, are
//! simply several slots on one probe run.

use std::sync::Arc;

use super::table::LiveGrant;
use super::user_name::Key;

#[derive(Debug, Default)]
struct Slot {
    hash: u64,
    grant: Option<Arc<LiveGrant>>,
}

#[derive(Debug, Default)]
pub(crate) struct UserIndex {
    /// A power of two long (or empty), at most half full, so every probe run ends.
    slots: Vec<Slot>,
    len: usize,
}

impl UserIndex {
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, hash: u64) -> usize {
        // Truncation is the point: the low bits pick the slot.
        hash as usize & self.mask()
    }

    /// Adds a grant of the user whose name hashes to `hash`.
    pub(crate) fn insert(&mut self, hash: u64, grant: Arc<LiveGrant>) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        while self.slots[i].grant.is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            hash,
            grant: Some(grant),
        };
        self.len += 1;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, Vec::with_capacity(size));
        self.slots.resize_with(size, Slot::default);
        self.len = 0;
        for s in old {
            if let Some(g) = s.grant {
                self.insert(s.hash, g);
            }
        }
    }

    /// Removes grant `id` (of the user whose name hashes to `hash`); true if it was there.
    pub(crate) fn remove(&mut self, hash: u64, id: &str) -> bool {
        if self.len == 0 {
            return false;
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            match &self.slots[i].grant {
                None => return false,
                Some(g) if self.slots[i].hash == hash && &*g.id == id => break,
                Some(_) => i = (i + 1) & mask,
            }
        }
        self.slots[i].grant = None;
        self.len -= 1;
        // Backward shift: pull later slots of the run into the hole when their home allows,
        // so no probe run is cut short by it (no tombstones to clean up later).
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.slots[j].grant.is_some() {
            let home = self.home(self.slots[j].hash);
            // Slot j may move to the hole if the hole lies between its home and j.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots.swap(hole, j);
                hole = j;
            }
            j = (j + 1) & mask;
        }
        true
    }

    /// The grants of `user`, whose name hashes to `hash`.
    pub(crate) fn get<'a>(&'a self, hash: u64, user: &'a Key<'a>) -> UserGrants<'a> {
        UserGrants {
            user,
            hash,
            slots: &self.slots,
            at: self.home(hash),
            left: self.slots.len(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
}

/// The grants of one user: the probe run from their hash's home slot, filtered by name.
pub(crate) struct UserGrants<'a> {
    user: &'a Key<'a>,
    hash: u64,
    slots: &'a [Slot],
    at: usize,
    /// Slots not yet visited (a guard: the table is never full, so a run always ends).
    left: usize,
}

impl<'a> Iterator for UserGrants<'a> {
    type Item = &'a Arc<LiveGrant>;

    fn next(&mut self) -> Option<&'a Arc<LiveGrant>> {
        while self.left > 0 {
            let s = self.slots.get(self.at)?;
            let g = s.grant.as_ref()?;
            self.at = (self.at + 1) & (self.slots.len() - 1);
            self.left -= 1;
            if s.hash == self.hash && g.is_for(self.user) {
                return Some(g);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// Hashes chosen to collide and to wrap around the end of the slots.
    const HASHES: [u64; 4] = [0, 15, 31, u64::MAX];

    fn grant(id: &str, user: &str) -> Arc<LiveGrant> {
        Arc::new(LiveGrant::new(
            id,
            user,
            Arc::from("t"),
            Arc::from("r"),
            chrono::Utc::now(),
            Arc::default(),
        ))
    }

    proptest! {
        /// Against a model: after any sequence of inserts and removes, every user's grants
        /// are exactly the model's, whatever their hashes share.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((any::<bool>(), 0usize..8, 0usize..40), 1..300)) {
            let mut index = UserIndex::default();
            let mut model: Vec<(usize, String)> = Vec::new();
            let mut next = 0;
            for (add, user, pick) in ops {
                if add || model.is_empty() {
                    let id = format!("g{next}");
                    next += 1;
                    index.insert(HASHES[user % 4], grant(&id, &format!("u{user}")));
                    model.push((user, id));
                } else {
                    let (user, id) = model.remove(pick % model.len());
                    prop_assert!(index.remove(HASHES[user % 4], &id));
                    prop_assert!(!index.remove(HASHES[user % 4], &id));
                }
                prop_assert_eq!(index.len(), model.len());
                for u in 0..8 {
                    let name = format!("u{u}");
                    let got: BTreeSet<String> =
                        index.get(HASHES[u % 4], &Key::new(&name)).map(|g| g.id.to_string()).collect();
                    let want: BTreeSet<String> =
                        model.iter().filter(|(m, _)| *m == u).map(|(_, id)| id.clone()).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }
    }

    #[test]
    fn empty_and_long_names() {
        let mut index = UserIndex::default();
        let get = |index: &UserIndex, user: &str| -> Vec<String> {
            index
                .get(7, &Key::new(user))
                .map(|g| g.id.to_string())
                .collect()
        };
        assert!(get(&index, "u").is_empty());
        assert!(!index.remove(7, "g"));
        let long = "a-user-name-longer-than-thirty-bytes@example.com";
        index.insert(7, grant("g1", long));
        index.insert(7, grant("g2", "a-user-name-longer-than-thirty"));
        assert_eq!(get(&index, long), ["g1"]);
        assert_eq!(get(&index, "a-user-name-longer-than-thirty"), ["g2"]);
        assert!(get(&index, "a-user-name").is_empty());
    }
}
