//! A [`Store`] that tells the Admin API's mirror ([`Index`]) about every change made through
//! it, as soon as the store acknowledges it: what the Admin API and Lua's `apisix.core.etcd`
//! write is listed by the next request, without waiting for the watch.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::index::Index;
use crate::config::store::{Item, Listing, Precondition, Store, StoreError, WatchStream};

pub struct Mirrored {
    inner: Arc<dyn Store>,
    index: Arc<Index>,
}

impl Mirrored {
    pub fn new(inner: Arc<dyn Store>, index: Arc<Index>) -> Mirrored {
        Mirrored { inner, index }
    }

    /// The store underneath, which the mirror itself follows.
    pub fn inner(&self) -> Arc<dyn Store> {
        self.inner.clone()
    }
}

#[async_trait]
impl Store for Mirrored {
    fn prefix(&self) -> &str {
        self.inner.prefix()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        self.inner.list().await
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError> {
        let item = self.inner.put(key, value, pre).await?;
        self.index.wrote(&item);
        Ok(item)
    }

    async fn put_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
        ttl: Duration,
    ) -> Result<Item, StoreError> {
        let item = self.inner.put_with_ttl(key, value, pre, ttl).await?;
        self.index.wrote(&item);
        Ok(item)
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
        let gone = self.inner.delete(key, pre).await?;
        if let Some(prev) = &gone {
            self.index.deleted(prev);
        }
        Ok(gone)
    }

    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        self.inner.watch(after).await
    }
}
