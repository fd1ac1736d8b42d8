//! The enabled plugins as the running gateway knows them, and their hot reload.
//!
//! A reload (SIGHUP, or the Admin API's `PUT /apisix/admin/plugins/reload`) loads the plugin
//! files again into a new [`Catalog`], swaps it in, and bumps a generation number. Config
//! providers rebuild their snapshot against the new catalog (registered with
//! [`PluginRegistry::on_reload`]); each worker, on its next request, sees the new generation,
//! calls the old plugins' `destroy()`, and starts a fresh Lua VM whose plugins run `init()` —
//! APISIX's reload contract. Requests already running keep the VM they started on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::Catalog;
use crate::lua::vm::VmOptions;

type Hook = Box<dyn Fn() + Send + Sync>;

pub struct PluginRegistry {
    catalog: ArcSwap<Catalog>,
    generation: AtomicU64,
    vm: VmOptions,
    enabled: Option<Vec<String>>,
    hooks: Mutex<Vec<Hook>>,
    /// One reload at a time: two overlapping reloads would race their swaps.
    reloading: Mutex<()>,
}

impl PluginRegistry {
    pub fn new(catalog: Catalog, vm: VmOptions, enabled: Option<Vec<String>>) -> PluginRegistry {
        PluginRegistry {
            catalog: ArcSwap::from_pointee(catalog),
            generation: AtomicU64::new(0),
            vm,
            enabled,
            hooks: Mutex::new(Vec::new()),
            reloading: Mutex::new(()),
        }
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Bumped by every reload; workers compare it with their VM's.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The VM settings workers make their Lua hosts with.
    pub fn vm_options(&self) -> &VmOptions {
        &self.vm
    }

    /// Called after every reload (providers rebuild their snapshot with the new catalog).
    pub fn on_reload(&self, hook: Hook) {
        if let Ok(mut h) = self.hooks.lock() {
            h.push(hook);
        }
    }

    /// Loads the plugins again. Returns the load errors of plugins that were left out (as at
    /// start, they do not stop the reload); `Err` only when the loader itself cannot run.
    pub fn reload(&self) -> std::io::Result<Vec<String>> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let (catalog, errors) = Catalog::load(&self.vm, self.enabled.as_deref())?;
        let generation = self.generation.load(Ordering::Acquire) + 1;
        self.catalog
            .store(Arc::new(catalog.with_generation(generation)));
        self.generation.store(generation, Ordering::Release);
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        for h in hooks.iter() {
            h();
        }
        log::info!(target: "notice", "plugins reloaded");
        Ok(errors)
    }
}
