//! The metric store: namespaces of families of series, each series a few atomics.
//!
//! A namespace is what nginx-lua-prometheus calls its shared dictionary: every worker that
//! registers a family under the same namespace and name gets the same family, so all workers
//! add into one set of atomics and a scrape reads one total. Writers never take a lock once they
//! hold a series (`Arc<Series>`); finding or creating a series takes the family's read lock
//! (write lock only to insert). Deleting a series marks it removed: a writer that still holds it
//! learns so from the write's return value and looks the series up again.
//!
//! Memory is bounded per namespace, as nginx bounds the dictionary: each series is charged its
//! label bytes plus a fixed overhead against the namespace's capacity; a new series past it is
//! refused ([`MetricError::Full`]), never an old one evicted, and expired series are swept first.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Bytes charged per series on top of its label values and name (the map entry, the atomics).
pub const SERIES_OVERHEAD: usize = 96;

/// The separator of label values in a series key: control characters never reach a key
/// ([`clean_label_value`] drops them), so two different value lists never join to one key.
const KEY_SEP: char = '\u{1}';

/// What a family counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }
}

/// Why a metric operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("Metric name '{0}' is invalid")]
    InvalidName(String),
    #[error("Metric '{metric}' label name '{label}' is invalid")]
    InvalidLabel { metric: String, label: String },
    #[error("Invalid label name 'le' in histogram '{0}': 'le' is reserved for bucket bounds")]
    ReservedLe(String),
    #[error("Histogram '{0}' buckets must be increasing numbers")]
    InvalidBuckets(String),
    #[error("Metric '{0}' is already registered as another type or with other labels or buckets")]
    Conflict(String),
    #[error("Wrong number of labels for {metric}. Expected {expected}, got {got}")]
    LabelCount {
        metric: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "metric storage '{namespace}' is full ({capacity} bytes): series of {metric} not recorded; raise the size of lua_shared_dict {namespace} or lower the labels' cardinality"
    )]
    Full {
        namespace: String,
        metric: String,
        capacity: usize,
    },
}

/// A float that threads add to and set without a lock.
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn add(&self, v: f64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(cur) + v).to_bits();
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Milliseconds since the process's metric clock started, for expiry.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One labelled value of a family: a counter's or gauge's value, or a histogram's buckets.
#[derive(Debug)]
pub struct Series {
    labels: Box<[String]>,
    /// The value; a histogram's sum of observations.
    value: AtomicF64,
    /// A histogram's observations, all of them (`+Inf`).
    count: AtomicU64,
    /// A histogram's observations per bucket (not cumulative): bucket `i` holds values in
    /// `(bounds[i-1], bounds[i]]`; those above the last bound are only in `count`.
    buckets: Box<[AtomicU64]>,
    bounds: Arc<[f64]>,
    removed: AtomicBool,
    /// When the series was last written (`now_ms`), for families with an expiry.
    touched: AtomicU64,
    expires: bool,
    /// What the series is charged against its namespace.
    cost: usize,
}

impl Series {
    fn new(labels: Box<[String]>, bounds: Arc<[f64]>, expires: bool, cost: usize) -> Series {
        Series {
            labels,
            value: AtomicF64::default(),
            count: AtomicU64::new(0),
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            removed: AtomicBool::new(false),
            touched: AtomicU64::new(now_ms()),
            expires,
            cost,
        }
    }

    #[inline]
    fn live(&self) -> bool {
        if self.removed.load(Ordering::Relaxed) {
            return false;
        }
        if self.expires {
            self.touched.store(now_ms(), Ordering::Relaxed);
        }
        true
    }

    /// Adds `v` (counter `inc`, gauge `inc`). False when the series was deleted meanwhile: the
    /// value was not recorded and the caller should look the series up again.
    #[inline]
    pub fn add(&self, v: f64) -> bool {
        if !self.live() {
            return false;
        }
        self.value.add(v);
        true
    }

    /// Sets the value (gauge `set`); false as [`Series::add`].
    #[inline]
    pub fn set(&self, v: f64) -> bool {
        if !self.live() {
            return false;
        }
        self.value.set(v);
        true
    }

    /// Records one observation of a histogram; false as [`Series::add`].
    #[inline]
    pub fn observe(&self, v: f64) -> bool {
        if !self.live() {
            return false;
        }
        // Few bounds (15 by default): a linear scan beats a binary search's branches.
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.value.add(v);
        true
    }

    pub fn value(&self) -> f64 {
        self.value.get()
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// The histogram's cumulative bucket counts (one per bound), then the total count. The
    /// total is never below the last bucket, even while writers are mid-update.
    pub fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut acc = 0;
        let cum: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        (cum, self.count.load(Ordering::Relaxed).max(acc))
    }
}

/// How a family is declared.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyDef {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub labels: Vec<String>,
    /// Histogram bucket upper bounds, increasing (`+Inf` is implied).
    pub buckets: Vec<f64>,
    /// Series not written for this long disappear (APISIX's `metrics.*.expire`).
    pub exptime: Option<Duration>,
}

/// A named metric with its label names and its series.
#[derive(Debug)]
pub struct Family {
    pub def: FamilyDef,
    bounds: Arc<[f64]>,
    series: RwLock<HashMap<Box<str>, Arc<Series>>>,
    budget: Arc<Budget>,
}

#[derive(Debug)]
struct Budget {
    namespace: String,
    capacity: usize,
    used: AtomicUsize,
}

fn lock_poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic while holding the lock left the map consistent (inserts and removes are single
    // calls): keep using it rather than taking the gateway down.
    e.into_inner()
}

/// Drops the characters a label value may not carry: control characters (newlines included)
/// are stripped, as nginx-lua-prometheus strips non-printable ones.
pub fn clean_label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.chars().any(char::is_control) {
        std::borrow::Cow::Owned(v.chars().filter(|c| !c.is_control()).collect())
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

impl Family {
    /// The series for `values` (one per label, in declaration order), made on first use.
    pub fn series<S: AsRef<str>>(&self, values: &[S]) -> Result<Arc<Series>, MetricError> {
        if values.len() != self.def.labels.len() {
            return Err(MetricError::LabelCount {
                metric: self.def.name.clone(),
                expected: self.def.labels.len(),
                got: values.len(),
            });
        }
        let mut key = String::with_capacity(values.iter().map(|v| v.as_ref().len() + 1).sum());
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                key.push(KEY_SEP);
            }
            key.push_str(&clean_label_value(v.as_ref()));
        }
        self.series_by_key(&key)
    }

    /// As [`Family::series`] with the key already joined (the native plugin builds it in a
    /// reused buffer, so a hit allocates nothing).
    pub fn series_by_key(&self, key: &str) -> Result<Arc<Series>, MetricError> {
        if let Some(s) = self.series.read().unwrap_or_else(lock_poisoned).get(key) {
            return Ok(s.clone());
        }
        let mut map = self.series.write().unwrap_or_else(lock_poisoned);
        if let Some(s) = map.get(key) {
            return Ok(s.clone());
        }
        let cost = key.len() + self.def.name.len() + SERIES_OVERHEAD + 8 * self.bounds.len();
        if !self.charge(cost, &mut map) {
            return Err(MetricError::Full {
                namespace: self.budget.namespace.clone(),
                metric: self.def.name.clone(),
                capacity: self.budget.capacity,
            });
        }
        let labels: Box<[String]> = if self.def.labels.is_empty() {
            Box::new([])
        } else {
            key.split(KEY_SEP).map(str::to_string).collect()
        };
        let s = Arc::new(Series::new(
            labels,
            self.bounds.clone(),
            self.def.exptime.is_some(),
            cost,
        ));
        map.insert(key.into(), s.clone());
        Ok(s)
    }

    /// Reserves `cost` bytes, sweeping this family's expired series when the namespace is full.
    fn charge(&self, cost: usize, map: &mut HashMap<Box<str>, Arc<Series>>) -> bool {
        let b = &self.budget;
        if b.used.fetch_add(cost, Ordering::Relaxed) + cost <= b.capacity {
            return true;
        }
        self.sweep_locked(map);
        if b.used.load(Ordering::Relaxed) <= b.capacity {
            return true;
        }
        b.used.fetch_sub(cost, Ordering::Relaxed);
        false
    }

    fn unlink(&self, s: &Series) {
        s.removed.store(true, Ordering::Relaxed);
        self.budget.used.fetch_sub(s.cost, Ordering::Relaxed);
    }

    /// Removes the series of `values`; true when there was one.
    pub fn del<S: AsRef<str>>(&self, values: &[S]) -> Result<bool, MetricError> {
        if values.len() != self.def.labels.len() {
            return Err(MetricError::LabelCount {
                metric: self.def.name.clone(),
                expected: self.def.labels.len(),
                got: values.len(),
            });
        }
        let key: Vec<std::borrow::Cow<'_, str>> = values
            .iter()
            .map(|v| clean_label_value(v.as_ref()))
            .collect();
        let key = key.join(&KEY_SEP.to_string());
        let removed = self
            .series
            .write()
            .unwrap_or_else(lock_poisoned)
            .remove(key.as_str());
        if let Some(s) = &removed {
            self.unlink(s);
        }
        Ok(removed.is_some())
    }

    /// Removes every series.
    pub fn reset(&self) {
        let old = std::mem::take(&mut *self.series.write().unwrap_or_else(lock_poisoned));
        for s in old.values() {
            self.unlink(s);
        }
    }

    fn sweep_locked(&self, map: &mut HashMap<Box<str>, Arc<Series>>) {
        let Some(ttl) = self.def.exptime else {
            return;
        };
        let ttl = ttl.as_millis() as u64;
        let now = now_ms();
        map.retain(|_, s| {
            let keep = now.saturating_sub(s.touched.load(Ordering::Relaxed)) < ttl;
            if !keep {
                self.unlink(s);
            }
            keep
        });
    }

    /// Drops the series not written within the family's expiry.
    pub fn sweep(&self) {
        if self.def.exptime.is_some() {
            self.sweep_locked(&mut self.series.write().unwrap_or_else(lock_poisoned));
        }
    }

    /// Every live series, sorted by label values (a stable exposition order).
    pub fn snapshot(&self) -> Vec<Arc<Series>> {
        let mut v: Vec<(Box<str>, Arc<Series>)> = self
            .series
            .read()
            .unwrap_or_else(lock_poisoned)
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, s)| s).collect()
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let ok_first = first.is_ascii_alphabetic() || first == '_' || (colon && first == ':');
    ok_first && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// The families of one namespace (one `lua_shared_dict` name in nginx-lua-prometheus' terms).
#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    families: RwLock<BTreeMap<String, Arc<Family>>>,
    budget: Arc<Budget>,
}

impl Namespace {
    /// The family `def` names: the existing one when its type, labels and buckets are the same
    /// (every worker registers the same metrics), an error when they differ.
    pub fn register(&self, def: FamilyDef) -> Result<Arc<Family>, MetricError> {
        if !valid_name(&def.name, true) {
            return Err(MetricError::InvalidName(def.name));
        }
        for l in &def.labels {
            if !valid_name(l, false) {
                return Err(MetricError::InvalidLabel {
                    metric: def.name.clone(),
                    label: l.clone(),
                });
            }
            if def.kind == Kind::Histogram && l == "le" {
                return Err(MetricError::ReservedLe(def.name));
            }
        }
        if def.kind == Kind::Histogram
            && (def.buckets.iter().any(|b| b.is_nan())
                || def.buckets.windows(2).any(|w| w[0] >= w[1]))
        {
            return Err(MetricError::InvalidBuckets(def.name));
        }
        let mut families = self.families.write().unwrap_or_else(lock_poisoned);
        if let Some(f) = families.get(&def.name) {
            let same = f.def.kind == def.kind
                && f.def.labels == def.labels
                && (def.kind != Kind::Histogram || f.def.buckets == def.buckets);
            return if same {
                Ok(f.clone())
            } else {
                Err(MetricError::Conflict(def.name))
            };
        }
        let bounds: Arc<[f64]> = if def.kind == Kind::Histogram {
            def.buckets.clone().into()
        } else {
            Arc::from([])
        };
        let f = Arc::new(Family {
            def,
            bounds,
            series: RwLock::new(HashMap::new()),
            budget: self.budget.clone(),
        });
        families.insert(f.def.name.clone(), f.clone());
        Ok(f)
    }

    pub fn family(&self, name: &str) -> Option<Arc<Family>> {
        self.families
            .read()
            .unwrap_or_else(lock_poisoned)
            .get(name)
            .cloned()
    }

    /// Every family, by name.
    pub fn families(&self) -> Vec<Arc<Family>> {
        self.families
            .read()
            .unwrap_or_else(lock_poisoned)
            .values()
            .cloned()
            .collect()
    }

    /// Bytes its series are charged, and its capacity.
    pub fn usage(&self) -> (usize, usize) {
        (
            self.budget.used.load(Ordering::Relaxed),
            self.budget.capacity,
        )
    }
}

/// Every namespace of the process.
#[derive(Debug, Default)]
pub struct Registry {
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl Registry {
    /// The namespace `name`, made with `capacity` bytes on first use (later callers share it).
    pub fn namespace(&self, name: &str, capacity: usize) -> Arc<Namespace> {
        let mut map = self.namespaces.lock().unwrap_or_else(lock_poisoned);
        map.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Namespace {
                    name: name.to_string(),
                    families: RwLock::new(BTreeMap::new()),
                    budget: Arc::new(Budget {
                        namespace: name.to_string(),
                        capacity,
                        used: AtomicUsize::new(0),
                    }),
                })
            })
            .clone()
    }

    /// The namespace `name` when someone made it.
    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces
            .lock()
            .unwrap_or_else(lock_poisoned)
            .get(name)
            .cloned()
    }
}

/// The process's registry: workers are threads of one process, so one registry is what
/// nginx's shared dictionary is to its worker processes.
pub fn global() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}
