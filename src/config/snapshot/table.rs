//! The route table of a snapshot: compiled routes by slot, the number the router answers with.
//!
//! Persistent like the router: slots live in chunks shared by `Arc`, so the table of the next
//! snapshot copies one chunk (and the list of chunk pointers) per changed route, not the table.

use std::sync::Arc;

use super::RouteEntry;

/// Slots per chunk: a change copies this many pointers.
const CHUNK: usize = 64;

type Chunk = Arc<Vec<Option<Arc<RouteEntry>>>>;

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    chunks: Arc<Vec<Chunk>>,
    len: usize,
}

impl RouteTable {
    /// The route in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Arc<RouteEntry>> {
        self.chunks
            .get(slot / CHUNK)
            .and_then(|c| c.get(slot % CHUNK))
            .and_then(Option::as_ref)
    }

    /// Puts `route` in `slot` (`None` empties it).
    pub fn set(&mut self, slot: usize, route: Option<Arc<RouteEntry>>) {
        let chunks = Arc::make_mut(&mut self.chunks);
        while chunks.len() <= slot / CHUNK {
            chunks.push(Arc::new(vec![None; CHUNK]));
        }
        let cell = &mut Arc::make_mut(&mut chunks[slot / CHUNK])[slot % CHUNK];
        match (cell.is_some(), route.is_some()) {
            (false, true) => self.len += 1,
            (true, false) => self.len -= 1,
            _ => {}
        }
        *cell = route;
    }

    /// How many slots hold a route.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The routes in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<RouteEntry>> {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }
}

impl std::ops::Index<usize> for RouteTable {
    type Output = Arc<RouteEntry>;

    fn index(&self, slot: usize) -> &Arc<RouteEntry> {
        match self.get(slot) {
            Some(r) => r,
            None => panic!("no route in slot {slot}"),
        }
    }
}
