//! The Rust sides of channel objects, by id: how a heap object owns a Rust resource with no
//! raw pointer in it.
//!
//! A channel is a record of the heap holding an immediate integer, its id in a [`Table`];
//! the table holds the channel (an [`Arc`]), and the record's cleanup (run by the collector
//! once the record is unreachable) removes it. A goroutine that uses a channel takes a clone
//! of the `Arc`, so a channel it waits on outlives its record's cleanup if need be. A word
//! overwritten by mistake would name another entry or none: an error, never memory.
//!
//! The table is split into [`SHARDS`] shards, each a short lock over a vector of entries and
//! the free ids of that shard: a lookup locks one shard for a clone of an `Arc`, so two
//! goroutines contend only when their channels share a shard (ids are dealt round-robin over
//! the shards), never on one lock for the whole heap. Ids are reused once freed, so the table
//! stays as large as the most channels alive at once.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The number of shards (a power of two): an id's shard is its low bits.
pub const SHARDS: usize = 64;

/// A table of `Arc<T>` by small integer ids, sharded (see the module documentation).
pub struct Table<T> {
    shards: Box<[Mutex<Shard<T>>]>,
    /// The shard the next insertion goes to (round-robin).
    next: AtomicUsize,
}

struct Shard<T> {
    entries: Vec<Option<Arc<T>>>,
    /// Indexes of `entries` that are `None`.
    free: Vec<usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard { entries: Vec::new(), free: Vec::new() }))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl<T> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({} live)", self.len())
    }
}

impl<T> Table<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard<T>> {
        // A panic while a shard was locked left it consistent (each operation is one push,
        // pop or store): go on with it.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `x` and returns its id: the smallest ids are reused first within a shard.
    ///
    /// ```
    /// use safepoint_lang::chans::Table;
    /// let t = Table::new();
    /// let a = t.insert("a");
    /// assert_eq!(t.get(a).as_deref(), Some(&"a"));
    /// ```
    pub fn insert(&self, x: T) -> usize {
        // Relaxed: only spreads insertions over the shards; no memory is published by it.
        let s = self.next.fetch_add(1, Ordering::Relaxed) & (SHARDS - 1);
        let mut shard = self.shard(s);
        let i = match shard.free.pop() {
            Some(i) => {
                shard.entries[i] = Some(Arc::new(x));
                i
            }
            None => {
                shard.entries.push(Some(Arc::new(x)));
                shard.entries.len() - 1
            }
        };
        i * SHARDS + s
    }

    /// The entry `id`, if it is there.
    ///
    /// ```
    /// use safepoint_lang::chans::Table;
    /// let t: Table<u8> = Table::new();
    /// assert!(t.get(12345).is_none());
    /// ```
    #[inline]
    pub fn get(&self, id: usize) -> Option<Arc<T>> {
        self.shard(id & (SHARDS - 1)).entries.get(id / SHARDS)?.clone()
    }

    /// Removes the entry `id` and frees its id for reuse; the entry, if it was there (those
    /// holding a clone of it keep it until they drop it).
    ///
    /// ```
    /// use safepoint_lang::chans::Table;
    /// let t = Table::new();
    /// let a = t.insert(7);
    /// assert_eq!(t.remove(a).as_deref(), Some(&7));
    /// assert!(t.get(a).is_none());
    /// assert!(t.remove(a).is_none()); // once
    /// ```
    pub fn remove(&self, id: usize) -> Option<Arc<T>> {
        let mut shard = self.shard(id & (SHARDS - 1));
        let i = id / SHARDS;
        let x = shard.entries.get_mut(i)?.take()?;
        shard.free.push(i);
        Some(x)
    }

    /// The number of entries.
    ///
    /// ```
    /// use safepoint_lang::chans::Table;
    /// let t = Table::new();
    /// t.insert(());
    /// assert_eq!(t.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        (0..SHARDS)
            .map(|s| {
                let shard = self.shard(s);
                shard.entries.len() - shard.free.len()
            })
            .sum()
    }

    /// Whether the table is empty.
    ///
    /// ```
    /// use safepoint_lang::chans::Table;
    /// assert!(Table::<()>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_and_a_removed_entry_lives_while_held() {
        let t = Table::new();
        let ids: Vec<usize> = (0..3 * SHARDS).map(|i| t.insert(i)).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "distinct ids");
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(t.get(id).as_deref(), Some(&i));
        }
        let held = t.get(ids[5]).unwrap();
        assert_eq!(t.remove(ids[5]).as_deref(), Some(&5));
        assert_eq!(*held, 5, "a clone outlives the removal");
        assert!(t.get(ids[5]).is_none());
        assert_eq!(t.len(), 3 * SHARDS - 1);
        // Every id freed, then as many inserted: no id past those used before.
        for &id in &ids {
            t.remove(id);
        }
        assert!(t.is_empty());
        let again: Vec<usize> = (0..3 * SHARDS).map(|i| t.insert(i)).collect();
        let max = *ids.iter().max().unwrap();
        assert!(again.iter().all(|&id| id <= max), "ids are reused");
    }

    #[test]
    fn threads_insert_look_up_and_remove_at_once() {
        let t = Arc::new(Table::new());
        let hs: Vec<_> = (0..4)
            .map(|k| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for n in 0..2000usize {
                        let v = k * 1_000_000 + n;
                        let id = t.insert(v);
                        assert_eq!(t.get(id).as_deref(), Some(&v));
                        assert_eq!(t.remove(id).as_deref(), Some(&v));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(t.is_empty());
    }
}
