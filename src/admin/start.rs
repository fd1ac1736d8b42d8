//! Starting a node's config plane: the store (embedded, seeded once from `conf/apisix.yaml`, or
//! etcd), the data-plane sync that follows it, and the Admin API over it, keys resolved. Which
//! of the two run depends on `deployment.role`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use arc_swap::ArcSwap;

use super::AdminApi;
use super::auth::{Access, AdminKey, Role, generate_key};
use super::server::AdminServer;
use crate::config::node::{AdminConfig, EtcdConfig, Role as NodeRole};
use crate::config::provider::store::{StoreSync, seed_items};
use crate::config::snapshot::Snapshot;
use crate::config::store::Store;
use crate::config::store::embedded::EmbeddedStore;
use crate::config::store::etcd::EtcdStore;
use crate::config::store::last_good::LastGoodStore;
use crate::plugin::registry::PluginRegistry;
use crate::router::ip::Cidr;
use crate::upstream::Resolve;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A running config plane: stop it after the workers.
pub struct ConfigPlane {
    /// `None` on a `data_plane` node.
    pub admin: Option<AdminServer>,
    /// `None` on a `control_plane` node.
    pub sync: Option<StoreSync>,
    pub serve_on_data_port: bool,
    pub store_description: String,
}

impl ConfigPlane {
    /// The start-up line's part about config: provider (etcd endpoints) and Admin API address.
    pub fn describe(&self) -> String {
        let admin = match self.admin.as_ref().map(|a| a.addr) {
            Some(Some(a)) => format!("Admin API on http://{a}/apisix/admin"),
            Some(None) => "no Admin API listener".to_string(),
            None => "no Admin API (data_plane)".to_string(),
        };
        let data = if self.serve_on_data_port && self.admin.is_some() {
            " (and on the data port)"
        } else {
            ""
        };
        let read = if self.sync.is_some() {
            "config from"
        } else {
            "config kept in"
        };
        format!("{read} the {} store, {admin}{data}", self.store_description)
    }

    pub fn stop(self) {
        if let Some(s) = self.sync {
            s.stop();
        }
        if let Some(a) = self.admin {
            a.stop();
        }
    }
}

/// The keys the Admin API accepts. An empty key gets a generated one, kept in
/// `conf/admin_key` under the prefix so it survives restarts; its path is printed.
pub fn resolve_keys(admin: &AdminConfig, prefix: &Path) -> Result<Vec<AdminKey>, StartError> {
    if !admin.key_required {
        // APISIX's words, which its test suites look for.
        log::warn!(
            "Admin key is bypassed! If you are deploying moongate in a production environment, please enable `admin_key_required` and set a secure admin key!"
        );
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (name, key, role) in &admin.keys {
        let role = Role::parse(role).unwrap_or(Role::Admin);
        let key = if key.is_empty() {
            let file = prefix.join("conf").join(format!("admin_key.{name}"));
            let existing = std::fs::read_to_string(&file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            match existing {
                Some(k) => k,
                None => {
                    let k = generate_key();
                    write_private(&file, &k).map_err(|e| {
                        StartError(format!(
                            "cannot store the generated admin key in {}: {e}",
                            file.display()
                        ))
                    })?;
                    let msg = format!(
                        "deployment.admin.admin_key[{name}] has no key: generated one, stored in {} (send it as X-API-KEY)",
                        file.display()
                    );
                    log::warn!("{msg}");
                    eprintln!("moongate: {msg}");
                    k
                }
            }
        } else {
            key.clone()
        };
        out.push(AdminKey {
            name: name.clone(),
            key,
            role,
        });
    }
    Ok(out)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}

/// Opens the embedded store at `data_file` (seeding it from `seed` when it is new), starts
/// the sync into `published` and the Admin API.
pub fn embedded(
    data_file: &Path,
    seed: &Path,
    admin: Option<&AdminConfig>,
    prefix: &Path,
    published: Arc<ArcSwap<Snapshot>>,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<PluginRegistry>,
) -> Result<ConfigPlane, StartError> {
    let fresh = !EmbeddedStore::file_exists(data_file);
    let store = EmbeddedStore::open("/apisix", data_file).map_err(|e| StartError(e.to_string()))?;
    if fresh && seed.is_file() {
        let text = std::fs::read_to_string(seed)
            .map_err(|e| StartError(format!("cannot read {}: {e}", seed.display())))?;
        // In one write: a file of 50,000 routes seeds as fast as one of 5.
        let n = seed_items(store.prefix(), &text)
            .and_then(|items| store.put_many(items).map_err(|e| e.to_string()))
            .map_err(|e| {
                StartError(format!(
                    "cannot seed the embedded store from {}: {e}",
                    seed.display()
                ))
            })?;
        log::info!(target: "notice", "embedded store {} created, seeded with {n} item(s) from {}", data_file.display(), seed.display());
        eprintln!(
            "moongate: embedded store {} created, seeded with {n} item(s) from {}",
            data_file.display(),
            seed.display()
        );
    }
    let store: Arc<dyn Store> = Arc::new(store);
    plane(store, admin, prefix, published, resolver, plugins, true)
}

/// Starts the sync of any `store` (embedded or etcd) into `published`, then the Admin API over
/// it. `need_first_list`: fail when the first listing fails (the embedded store is local, so
/// that is an error); otherwise the sync keeps retrying and the current snapshot serves.
pub fn plane(
    store: Arc<dyn Store>,
    admin: Option<&AdminConfig>,
    prefix: &Path,
    published: Arc<ArcSwap<Snapshot>>,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<PluginRegistry>,
    need_first_list: bool,
) -> Result<ConfigPlane, StartError> {
    let sync = start_sync(
        store.clone(),
        published,
        resolver,
        plugins.clone(),
        need_first_list,
    )?;
    let default_admin = default_admin();
    let admin = admin.unwrap_or(&default_admin);
    // The store is local: finding the revision of a delete (a listing) is cheap.
    let settle = Some((sync.applied.clone(), true));
    let server = start_admin(store.clone(), admin, prefix, plugins, settle)?;
    Ok(ConfigPlane {
        admin: Some(server),
        sync: Some(sync),
        serve_on_data_port: admin.serve_on_data_port,
        store_description: store.describe(),
    })
}

/// The etcd provider, by role: `traditional` runs the sync and the Admin API, `data_plane` the
/// sync only (it never writes to etcd), `control_plane` the Admin API only. The sync reads
/// through a [`LastGoodStore`] kept at `last_good`, so a node started while etcd is down serves
/// its last good config.
#[allow(clippy::too_many_arguments)]
pub fn etcd(
    cfg: &EtcdConfig,
    role: NodeRole,
    last_good: &Path,
    admin: Option<&AdminConfig>,
    prefix: &Path,
    published: Arc<ArcSwap<Snapshot>>,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<PluginRegistry>,
) -> Result<ConfigPlane, StartError> {
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::new(cfg).map_err(|e| StartError(format!("deployment.etcd: {e}")))?);
    let sync = if role.serves_data() {
        let saved = LastGoodStore::new(store.clone(), last_good).map_err(|e| {
            StartError(format!(
                "cannot start the writer of {}: {e}",
                last_good.display()
            ))
        })?;
        Some(start_sync(
            Arc::new(saved),
            published,
            resolver,
            plugins.clone(),
            false,
        )?)
    } else {
        None
    };
    // A data plane reads etcd but never writes it (APISIX's rule for `core.etcd` too).
    crate::config::store::shared::set(store.clone(), false);
    // A node that serves what it writes answers a write once it serves it; etcd is remote, so
    // a delete is waited for by a lower bound of its revision rather than a full listing.
    let settle = sync.as_ref().map(|s| (s.applied.clone(), false));
    let server = match (role, admin) {
        (NodeRole::DataPlane, _) | (_, None) => None,
        (_, Some(admin)) => Some(start_admin(store.clone(), admin, prefix, plugins, settle)?),
    };
    Ok(ConfigPlane {
        serve_on_data_port: server.is_some() && admin.is_some_and(|a| a.serve_on_data_port),
        admin: server,
        sync,
        store_description: store.describe(),
    })
}

/// Starts the data-plane sync of `store` into `published`; see [`plane`] for `need_first_list`.
fn start_sync(
    store: Arc<dyn Store>,
    published: Arc<ArcSwap<Snapshot>>,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<PluginRegistry>,
    need_first_list: bool,
) -> Result<StoreSync, StartError> {
    let (sync, first) = StoreSync::start(store.clone(), published, resolver, plugins)
        .map_err(|e| StartError(format!("cannot start the config sync: {e}")))?;
    if let Err(e) = first {
        if need_first_list {
            return Err(StartError(format!("cannot read {}: {e}", store.describe())));
        }
        log::warn!(
            "cannot read {} at start ({e}); serving the current config until it answers",
            store.describe()
        );
    }
    Ok(sync)
}

/// The Admin API a node gets when its config says nothing: loopback, a generated key.
fn default_admin() -> AdminConfig {
    AdminConfig {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9180)),
        keys: vec![("admin".into(), String::new(), "admin".into())],
        key_required: true,
        allow: vec!["127.0.0.0/24".into()],
        key_in_query: false,
        serve_on_data_port: false,
        cors: true,
        v2: false,
    }
}

/// Starts the Admin API over `store`. `settle`: the revision this node's sync applied, and
/// whether a delete's revision may be found by listing the store (see `settle::Tracked`).
fn start_admin(
    store: Arc<dyn Store>,
    admin: &AdminConfig,
    prefix: &Path,
    plugins: Arc<PluginRegistry>,
    settle: Option<(Arc<AtomicI64>, bool)>,
) -> Result<AdminServer, StartError> {
    let keys = resolve_keys(admin, prefix)?;
    let allow = admin
        .allow
        .iter()
        .map(|c| Cidr::parse(c).map_err(StartError))
        .collect::<Result<Vec<_>, _>>()?;
    let (store, settle): (Arc<dyn Store>, _) = match settle {
        Some((applied, exact_deletes)) => {
            let tracked = Arc::new(super::settle::Tracked::new(store, exact_deletes));
            let settle = super::settle::Settle {
                store: tracked.clone(),
                applied,
            };
            (tracked, Some(settle))
        }
        None => (store, None),
    };
    // The mirror of the store that lists and delete checks read; every write made through
    // the Admin API (or Lua's `apisix.core.etcd`, which shares this store) reaches it at once.
    let index = super::index::Index::new(store.prefix());
    let store: Arc<dyn Store> = Arc::new(super::mirrored::Mirrored::new(store, index.clone()));
    crate::config::store::shared::set(store.clone(), true);
    let api = Arc::new(AdminApi {
        store,
        settle,
        index: Some(index),
        cors: admin.cors,
        v2: admin.v2,
        plugins,
        access: Access {
            allow: Some(allow),
            keys,
            key_in_query: admin.key_in_query,
        },
    });
    AdminServer::start(Some(admin.listen), api).map_err(|e| StartError(e.to_string()))
}
