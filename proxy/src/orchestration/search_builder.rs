//! Building the tool-search index off the shards.
//!
//! Indexing computes a vector per tool (thousands of word-vector sums at 10,000 tools), which
//! would stall a shard's other requests; so one thread of the process builds every index, as
//! a configuration reload is computed off the shards and handed in. A shard that takes a new
//! catalog sends it here (a channel send, never a wait); the thread skips generations already
//! superseded, builds, and sends the `Arc` of the new index to every shard's receiver. A shard
//! picks it up with `try_recv` when a search needs it, and a search that arrives before the
//! index of the current catalog is ready waits for it without blocking the shard (a timer,
//! not a blocking receive), at most [`WAIT`]; then it answers from the previous index.

use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::search::Index;
use crate::registry::Catalog;
use crate::shard::Shard;

/// Longest a search waits for the index of the catalog it sees.
const WAIT: Duration = Duration::from_secs(2);
/// How often a waiting search looks for the index.
const POLL: Duration = Duration::from_millis(2);

/// A catalog to index, with each server's tags (by server index).
struct Job {
    catalog: Arc<Catalog>,
    tags: Vec<Vec<String>>,
}

/// The process's index-building thread: where jobs go and who hears of results.
struct Builder {
    jobs: Sender<Job>,
    /// One sender per shard; locked when a shard starts and when an index is sent, never
    /// by a search.
    shards: Arc<Mutex<Vec<Sender<Arc<Index>>>>>,
}

fn builder() -> &'static Builder {
    static BUILDER: OnceLock<Builder> = OnceLock::new();
    BUILDER.get_or_init(|| {
        let (jobs, rx) = mpsc::channel::<Job>();
        let shards: Arc<Mutex<Vec<Sender<Arc<Index>>>>> = Arc::default();
        let out = shards.clone();
        let started = std::thread::Builder::new()
            .name("search-index".into())
            .spawn(move || build_loop(rx, out));
        if let Err(e) = started {
            // Without the thread every search answers from an empty index; say why once.
            log::error!("cannot start the search-index thread: {e}; tool search finds nothing");
        }
        Builder { jobs, shards }
    })
}

fn build_loop(jobs: Receiver<Job>, shards: Arc<Mutex<Vec<Sender<Arc<Index>>>>>) {
    let mut built = None::<u64>;
    while let Ok(mut job) = jobs.recv() {
        // Every shard sends each catalog: keep only the newest waiting.
        while let Ok(newer) = jobs.try_recv() {
            if newer.catalog.generation >= job.catalog.generation {
                job = newer;
            }
        }
        let generation = job.catalog.generation;
        if built.is_some_and(|b| b >= generation) {
            continue;
        }
        let started = Instant::now();
        let index = Arc::new(build(&job));
        log::debug!(
            "search index of catalog {generation}: {} tools in {:?}, {} bytes per tool",
            index.len(),
            started.elapsed(),
            index.memory_per_tool()
        );
        built = Some(generation);
        if let Ok(mut list) = shards.lock() {
            list.retain(|s| s.send(index.clone()).is_ok());
        }
    }
}

/// The index of the catalog's tools and the proxy's own (which agents find by need too).
fn build(job: &Job) -> Index {
    let catalog = &job.catalog;
    let no_tags: Vec<String> = Vec::new();
    let own = super::tools::items();
    let docs = own
        .iter()
        .chain(catalog.items(crate::protocol::cursor::ListKind::Tools))
        .filter_map(|item| {
            let mut buf = item.json.to_vec();
            let json = simd_json::to_owned_value(&mut buf).ok()?;
            let name = crate::auth::server_name(catalog, item.server);
            let tags = job.tags.get(item.server).unwrap_or(&no_tags);
            Some((item.server, name, tags.as_slice(), json))
        });
    Index::build(catalog.generation, docs)
}

/// One shard's end: where its indexes arrive, and the newest it has taken.
pub struct ShardIndex {
    arrivals: Receiver<Arc<Index>>,
    jobs: Sender<Job>,
    current: std::cell::RefCell<Arc<Index>>,
    requested: std::cell::Cell<Option<u64>>,
}

impl ShardIndex {
    /// Joins the process's index builder.
    pub fn new() -> ShardIndex {
        let b = builder();
        let (tx, arrivals) = mpsc::channel();
        if let Ok(mut list) = b.shards.lock() {
            list.push(tx);
        }
        ShardIndex {
            arrivals,
            jobs: b.jobs.clone(),
            current: std::cell::RefCell::new(Arc::new(Index::default())),
            requested: std::cell::Cell::new(None),
        }
    }

    /// Asks for the index of `catalog` (once per generation), without waiting for it.
    pub fn request(&self, shard: &Shard, catalog: &Arc<Catalog>) {
        if self
            .requested
            .get()
            .is_some_and(|r| r >= catalog.generation)
        {
            return;
        }
        self.requested.set(Some(catalog.generation));
        let registry = shard.registry();
        let tags = (0..catalog.servers.len())
            .map(|i| {
                registry
                    .entries
                    .get(i)
                    .map(|e| e.config.tags.clone())
                    .unwrap_or_default()
            })
            .collect();
        let _ = self.jobs.send(Job {
            catalog: catalog.clone(),
            tags,
        });
    }

    /// The index of `catalog`, waiting (on a timer) up to [`WAIT`] for it to be built.
    pub async fn get(&self, shard: &Rc<Shard>, catalog: &Arc<Catalog>) -> Arc<Index> {
        self.request(shard, catalog);
        let deadline = Instant::now() + WAIT;
        loop {
            while let Ok(ix) = self.arrivals.try_recv() {
                if ix.generation >= self.current.borrow().generation {
                    *self.current.borrow_mut() = ix;
                }
            }
            let current = self.current.borrow().clone();
            if current.generation >= catalog.generation || Instant::now() >= deadline {
                return current;
            }
            glommio::timer::sleep(POLL).await;
        }
    }
}

impl Default for ShardIndex {
    fn default() -> ShardIndex {
        ShardIndex::new()
    }
}
