//! The state shared by the upgrade hook (loop threads), the workers, the admin API and the
//! signal handler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::admission::Admission;
use super::broker::Broker;
use super::config::{ClientMessages, Settings};
use super::conns::Conns;
use super::expiry::Expiry;
use super::metrics::{Counters, Snapshot};
use super::origin::OriginList;
use throng::Handle;

/// What SIGHUP can change without a restart; swapped whole, read with one `Arc` clone.
pub(crate) struct Live {
    pub(crate) jwt_secret: Option<Vec<u8>>,
    pub(crate) api_key: Option<String>,
    pub(crate) origins: OriginList,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) demo: bool,
}

impl Live {
    pub(crate) fn from_settings(s: &Settings) -> Live {
        Live {
            jwt_secret: s.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            api_key: s.api_key.clone(),
            origins: OriginList::new(&s.allowed_origins),
            max_connections: s.max_connections,
            max_connections_per_ip: s.max_connections_per_ip,
            demo: s.demo,
        }
    }
}

/// State the upgrade hook needs; it exists before the engine starts.
pub(crate) struct Front {
    pub(crate) settings: Settings,
    live: RwLock<Arc<Live>>,
    pub(crate) admission: Admission,
    pub(crate) counters: Arc<Counters>,
    /// Which worker threads died, for `/healthz`.
    pub(crate) workers: super::workers::Health,
}

impl Front {
    pub(crate) fn new(settings: Settings) -> Front {
        Front {
            live: RwLock::new(Arc::new(Live::from_settings(&settings))),
            settings,
            admission: Admission::default(),
            counters: Arc::default(),
            workers: super::workers::Health::default(),
        }
    }

    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_live(&self, live: Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }

    pub(crate) fn client_messages(&self) -> ClientMessages {
        self.settings.client_messages
    }
}

/// Everything, once the engine runs.
pub(crate) struct Ctx {
    pub(crate) front: Arc<Front>,
    pub(crate) handle: Handle,
    pub(crate) conns: Arc<Conns>,
    pub(crate) expiry: Arc<Expiry>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) draining: AtomicBool,
    /// Admin publishes between their check of `draining` and the broker taking them.
    pub(crate) publishing: AtomicUsize,
    pub(crate) started: Instant,
    pub(crate) nofile: Option<(u64, u64)>,
    pub(crate) ws_addr: std::net::SocketAddr,
    /// The listeners' certificates (reloaded on SIGHUP and `POST /v1/tls/reload`).
    pub(crate) tls: super::tls::Tls,
}

impl Ctx {
    pub(crate) fn counters(&self) -> &Counters {
        &self.front.counters
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let open = self.conns.len();
        let (topics, subscriptions) = self.handle.subscription_totals();
        Snapshot {
            engine: self.handle.stats(),
            loops: self.handle.loop_stats(),
            open,
            topics,
            subscriptions,
            broker: self.broker.state().as_str(),
            broker_stats: self.broker.stats(),
            draining: self.draining.load(Ordering::Relaxed),
            uptime_secs: self.started.elapsed().as_secs(),
            nofile: self.nofile,
            token_expiry_entries: self.expiry.len(),
            workers_dead: self.front.workers.dead().len(),
            process: super::process::Process::read(),
            tls_client: self.front.settings.tls().is_some(),
            tls_admin: self.front.settings.admin_tls().is_some(),
        }
    }
}

/// A publish in progress; see [`Ctx::begin_publish`].
pub(crate) struct Publishing<'a>(&'a AtomicUsize);

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ctx {
    /// Lets a publish in, unless the drain has begun. Counting in before reading `draining`
    /// (both SeqCst, as the drain does the opposite) means the drain either sees this publish
    /// in progress and waits for it, or this publish sees the drain and is refused: nothing
    /// slips into the broker after the drain's flush has counted what is left.
    pub(crate) fn begin_publish(&self) -> Option<Publishing<'_>> {
        self.publishing.fetch_add(1, Ordering::SeqCst);
        let publishing = Publishing(&self.publishing);
        (!self.draining.load(Ordering::SeqCst)).then_some(publishing)
    }

    /// Starts the drain: refuses new publishes and waits (until `deadline` at most) for the
    /// ones already accepted to reach the broker.
    pub(crate) fn stop_publishes(&self, deadline: Instant) {
        self.draining.store(true, Ordering::SeqCst);
        while self.publishing.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
