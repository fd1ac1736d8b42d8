//! A persistent hash map: cloning is O(1) and a change copies only the path to the changed key.
//!
//! Config snapshots are immutable values that workers keep reading while the next one is
//! built. With tens of thousands of routes, copying a whole map per change would put O(n)
//! work behind every Admin API write; with this map a change costs O(log n) node copies and
//! everything else is shared, by `Arc`, with the snapshot before it.
//!
//! The layout is a hash array mapped trie: 32-way branches indexed by 5 bits of the key's
//! hash, each holding a bitmap of the slots in use and only those slots. Keys whose 64-bit
//! hashes are equal share a collision list. Writes go through [`Arc::make_mut`], so a map
//! nobody else holds is changed in place (a full build allocates no more than a plain one).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

const BITS: u32 = 5;
const MASK: u64 = (1 << BITS) - 1;

/// A fixed-key hasher: every map (and every process) hashes a key the same way, which keeps
/// the layout deterministic; the keys are config ids and paths, not attacker-chosen per
/// request, and a collision costs a list scan, never correctness. FxHash: the router looks
/// up every request's path here, and SipHash was about 250 instructions of each request.
fn hash_of<Q: Hash + ?Sized>(k: &Q) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(k)
}

#[derive(Clone)]
enum Slot<K, V> {
    Leaf(u64, K, V),
    Branch(Arc<Node<K, V>>),
    /// Keys with the same full hash.
    Collision(u64, Arc<Vec<(K, V)>>),
}

#[derive(Clone)]
struct Node<K, V> {
    bitmap: u32,
    slots: Vec<Slot<K, V>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            bitmap: 0,
            slots: Vec::new(),
        }
    }
}

/// The persistent map. `K` and `V` are cloned only when a shared node has to be copied.
#[derive(Clone)]
pub struct PMap<K, V> {
    root: Arc<Node<K, V>>,
    len: usize,
}

impl<K, V> Default for PMap<K, V> {
    fn default() -> Self {
        PMap {
            root: Arc::new(Node::default()),
            len: 0,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for PMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

fn index(hash: u64, shift: u32) -> (u32, u32) {
    let i = ((hash >> shift) & MASK) as u32;
    (i, 1u32 << i)
}

fn position(bitmap: u32, bit: u32) -> usize {
    (bitmap & (bit - 1)).count_ones() as usize
}

impl<K, V> PMap<K, V> {
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            stack: vec![self.root.slots.iter()],
            list: None,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> PMap<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = hash_of(key);
        let mut node: &Node<K, V> = &self.root;
        let mut shift = 0;
        loop {
            let (_, bit) = index(h, shift);
            if node.bitmap & bit == 0 {
                return None;
            }
            match &node.slots[position(node.bitmap, bit)] {
                Slot::Leaf(lh, k, v) => return (*lh == h && k.borrow() == key).then_some(v),
                Slot::Branch(n) => {
                    node = n;
                    shift += BITS;
                }
                Slot::Collision(ch, list) => {
                    if *ch != h {
                        return None;
                    }
                    return list.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v);
                }
            }
        }
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the value that was there.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let h = hash_of(&key);
        let old = insert_at(&mut self.root, 0, h, key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Look first: removing an absent key must not copy shared nodes.
        if !self.contains_key(key) {
            return None;
        }
        let h = hash_of(key);
        let old = remove_at(&mut self.root, 0, h, key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// A mutable reference to the value of `key`, copying the shared nodes on its path.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.contains_key(key) {
            return None;
        }
        let h = hash_of(key);
        get_mut_at(&mut self.root, 0, h, key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for PMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = PMap::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl<K, V, Q> std::ops::Index<&Q> for PMap<K, V>
where
    K: Hash + Eq + Clone + Borrow<Q>,
    V: Clone,
    Q: Hash + Eq + ?Sized,
{
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        match self.get(key) {
            Some(v) => v,
            None => panic!("PMap: no such key"),
        }
    }
}

/// A branch holding two entries whose hashes differ at or below `shift`.
fn split<K: Clone, V: Clone>(
    shift: u32,
    a: Slot<K, V>,
    ah: u64,
    b: Slot<K, V>,
    bh: u64,
) -> Node<K, V> {
    let (ia, ba) = index(ah, shift);
    let (ib, bb) = index(bh, shift);
    if ia == ib {
        Node {
            bitmap: ba,
            slots: vec![Slot::Branch(Arc::new(split(shift + BITS, a, ah, b, bh)))],
        }
    } else {
        let slots = if ia < ib { vec![a, b] } else { vec![b, a] };
        Node {
            bitmap: ba | bb,
            slots,
        }
    }
}

fn insert_at<K: Hash + Eq + Clone, V: Clone>(
    node: &mut Arc<Node<K, V>>,
    shift: u32,
    h: u64,
    key: K,
    value: V,
) -> Option<V> {
    let n = Arc::make_mut(node);
    let (_, bit) = index(h, shift);
    let pos = position(n.bitmap, bit);
    if n.bitmap & bit == 0 {
        n.bitmap |= bit;
        n.slots.insert(pos, Slot::Leaf(h, key, value));
        return None;
    }
    match &mut n.slots[pos] {
        Slot::Leaf(lh, k, v) if *lh == h && *k == key => Some(std::mem::replace(v, value)),
        Slot::Leaf(lh, ..) if *lh == h => {
            let placeholder = Slot::Branch(Arc::default());
            let Slot::Leaf(_, k, v) = std::mem::replace(&mut n.slots[pos], placeholder) else {
                unreachable!()
            };
            n.slots[pos] = Slot::Collision(h, Arc::new(vec![(k, v), (key, value)]));
            None
        }
        Slot::Leaf(lh, ..) => {
            let lh = *lh;
            let old = std::mem::replace(&mut n.slots[pos], Slot::Branch(Arc::default()));
            n.slots[pos] = Slot::Branch(Arc::new(split(
                shift + BITS,
                old,
                lh,
                Slot::Leaf(h, key, value),
                h,
            )));
            None
        }
        Slot::Branch(child) => insert_at(child, shift + BITS, h, key, value),
        Slot::Collision(ch, list) if *ch == h => {
            let list = Arc::make_mut(list);
            match list.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => Some(std::mem::replace(v, value)),
                None => {
                    list.push((key, value));
                    None
                }
            }
        }
        Slot::Collision(ch, _) => {
            let ch = *ch;
            let old = std::mem::replace(&mut n.slots[pos], Slot::Branch(Arc::default()));
            n.slots[pos] = Slot::Branch(Arc::new(split(
                shift + BITS,
                old,
                ch,
                Slot::Leaf(h, key, value),
                h,
            )));
            None
        }
    }
}

fn remove_at<K, V, Q>(node: &mut Arc<Node<K, V>>, shift: u32, h: u64, key: &Q) -> Option<V>
where
    K: Hash + Eq + Clone + Borrow<Q>,
    V: Clone,
    Q: Hash + Eq + ?Sized,
{
    let n = Arc::make_mut(node);
    let (_, bit) = index(h, shift);
    if n.bitmap & bit == 0 {
        return None;
    }
    let pos = position(n.bitmap, bit);
    let (out, now_empty, lift) = match &mut n.slots[pos] {
        Slot::Leaf(lh, k, _) => {
            if *lh != h || Borrow::<Q>::borrow(&*k) != key {
                return None;
            }
            let Slot::Leaf(_, _, v) = n.slots.remove(pos) else {
                unreachable!()
            };
            n.bitmap &= !bit;
            return Some(v);
        }
        Slot::Branch(child) => {
            let out = remove_at(child, shift + BITS, h, key);
            // A branch left with one leaf or collision list folds back into its parent.
            let lift = (child.slots.len() == 1 && !matches!(child.slots[0], Slot::Branch(_)))
                .then(|| child.slots[0].clone());
            (out, child.slots.is_empty(), lift)
        }
        Slot::Collision(ch, list) => {
            if *ch != h {
                return None;
            }
            let list = Arc::make_mut(list);
            let i = list
                .iter()
                .position(|(k, _)| Borrow::<Q>::borrow(k) == key)?;
            let (_, v) = list.remove(i);
            let lift = (list.len() == 1).then(|| {
                let (k, v) = list[0].clone();
                Slot::Leaf(h, k, v)
            });
            (Some(v), list.is_empty(), lift)
        }
    };
    if now_empty {
        n.slots.remove(pos);
        n.bitmap &= !bit;
    } else if let Some(s) = lift {
        n.slots[pos] = s;
    }
    out
}

fn get_mut_at<'a, K, V, Q>(
    node: &'a mut Arc<Node<K, V>>,
    shift: u32,
    h: u64,
    key: &Q,
) -> Option<&'a mut V>
where
    K: Hash + Eq + Clone + Borrow<Q>,
    V: Clone,
    Q: Hash + Eq + ?Sized,
{
    let n = Arc::make_mut(node);
    let (_, bit) = index(h, shift);
    if n.bitmap & bit == 0 {
        return None;
    }
    let pos = position(n.bitmap, bit);
    match &mut n.slots[pos] {
        Slot::Leaf(lh, k, v) => (*lh == h && (*k).borrow() == key).then_some(v),
        Slot::Branch(child) => get_mut_at(child, shift + BITS, h, key),
        Slot::Collision(ch, list) => {
            if *ch != h {
                return None;
            }
            Arc::make_mut(list)
                .iter_mut()
                .find(|(k, _)| (*k).borrow() == key)
                .map(|(_, v)| v)
        }
    }
}

/// Iterates in hash order (stable for a given set of keys, but not insertion order).
pub struct Iter<'a, K, V> {
    stack: Vec<std::slice::Iter<'a, Slot<K, V>>>,
    list: Option<std::slice::Iter<'a, (K, V)>>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(l) = &mut self.list {
                if let Some((k, v)) = l.next() {
                    return Some((k, v));
                }
                self.list = None;
            }
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some(Slot::Leaf(_, k, v)) => return Some((k, v)),
                Some(Slot::Branch(n)) => self.stack.push(n.slots.iter()),
                Some(Slot::Collision(_, list)) => self.list = Some(list.iter()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A key type whose hash the test chooses, to force collisions and deep splits.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct K(u64, u32);

    impl Hash for K {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.0.hash(state)
        }
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_inserts_and_removes() {
        let mut model: HashMap<u32, u32> = HashMap::new();
        let mut m: PMap<u32, u32> = PMap::new();
        let mut snapshots = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for step in 0..20_000u32 {
            let k = rng.u32(0..3_000);
            if rng.u8(0..3) == 0 {
                assert_eq!(m.remove(&k), model.remove(&k), "remove {k}");
            } else {
                assert_eq!(m.insert(k, step), model.insert(k, step), "insert {k}");
            }
            assert_eq!(m.len(), model.len());
            if step % 2_000 == 0 {
                snapshots.push((m.clone(), model.clone()));
            }
        }
        for (k, v) in &model {
            assert_eq!(m.get(k), Some(v));
        }
        assert_eq!(m.iter().count(), model.len());
        // Earlier clones were not changed by later writes.
        for (snap, want) in &snapshots {
            assert_eq!(snap.len(), want.len());
            for (k, v) in want {
                assert_eq!(snap.get(k), Some(v));
            }
        }
    }

    #[test]
    fn equal_hashes_share_a_list_and_come_apart_again() {
        let mut m: PMap<K, u32> = PMap::new();
        for i in 0..5 {
            m.insert(K(42, i), i);
        }
        m.insert(K(42 | (1 << 40), 9), 9);
        assert_eq!(m.len(), 6);
        for i in 0..5 {
            assert_eq!(m.get(&K(42, i)), Some(&i));
        }
        *m.get_mut(&K(42, 3)).unwrap() = 33;
        let before = m.clone();
        for i in 0..5 {
            m.remove(&K(42, i));
        }
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&K(42 | (1 << 40), 9)), Some(&9));
        assert_eq!(before.get(&K(42, 3)), Some(&33));
        assert_eq!(before.len(), 6);
    }

    #[test]
    fn string_keys_are_found_by_str() {
        let mut m: PMap<String, usize> = PMap::new();
        m.insert("/a".to_string(), 1);
        assert_eq!(m.get("/a"), Some(&1));
        assert!(m.remove("/b").is_none());
        assert_eq!(m.remove("/a"), Some(1));
        assert!(m.is_empty());
    }
}
