//! The composition root: builds the delivery layer and every service once
//! per node and holds them for the HTTP and WebSocket adapters
//! (`crate::api`), the background tasks and graceful shutdown (`serve`).
//! No rule lives here.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokenim_core::Limits;
use tokenim_store::Store;

use crate::auth::{ApiKeys, Passwords, Tokens};
use crate::config::{Config, CorsOrigins};
use crate::delivery::cluster::Cluster;
use crate::delivery::dispatcher::Dispatcher;
use crate::delivery::fanout::Fanout;
use crate::delivery::hub::Hub;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::push::PushProviders;
use crate::services::accounts::Accounts;
use crate::services::commits::Commits;
use crate::services::contacts::Contacts;
use crate::services::conversations::Conversations;
use crate::services::devices::Devices;
use crate::services::marks::Marks;
use crate::services::presence::Presence;
use crate::services::rate::RateLimits;
use crate::services::sync::Sync;
use crate::services::timeline::Timeline;

pub struct AppState {
    pub cfg: Config,
    pub limits: Limits,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// This node's sockets.
    pub hub: Arc<Hub>,
    /// Notices to sockets on this node and, in cluster mode, the others.
    pub fanout: Arc<Fanout>,
    /// Committed events to sockets.
    pub dispatcher: Arc<Dispatcher>,
    /// Cluster mode (`redis_url`): Redis and this node's part in it.
    pub cluster: Option<Arc<Cluster>>,
    pub rate: Arc<RateLimits>,
    pub commits: Arc<Commits>,
    pub accounts: Arc<Accounts>,
    pub devices: Arc<Devices>,
    /// The push providers' checked credentials (for the delivery engine).
    pub push: Arc<PushProviders>,
    /// Offline pushes and after-event webhooks: jobs the store keeps.
    pub outbound: Arc<Outbound>,
    pub contacts: Arc<Contacts>,
    pub convs: Arc<Conversations>,
    pub timeline: Arc<Timeline>,
    pub marks: Arc<Marks>,
    pub sync: Arc<Sync>,
    pub presence: Arc<Presence>,
    /// The app backend's keys for `/v1/server/...` and `/v1/admin/...`.
    pub api_keys: ApiKeys,
    /// The web origins allowed to call `/v1/*` (`cors_origins`, checked).
    pub cors: CorsOrigins,
    pub shutting_down: AtomicBool,
}

impl AppState {
    /// Builds a node; `cluster` when running as a node of a cluster (whose
    /// tokens are signed with the cluster's key).
    pub fn new(
        cfg: Config,
        store: Arc<dyn Store>,
        cluster: Option<Arc<Cluster>>,
        tokens: Tokens,
    ) -> anyhow::Result<Arc<AppState>> {
        let api_keys = ApiKeys::new(&cfg.all_api_keys()?);
        let cors = CorsOrigins::new(&cfg.cors_origins)?;
        let passwords = Passwords::new(cfg.argon2_memory_kib, cfg.argon2_iterations)?;
        let limits = cfg.limits.clone();
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::default());
        let fanout = Arc::new(Fanout {
            hub: hub.clone(),
            cluster: cluster.clone(),
        });
        let dispatcher = Arc::new(Dispatcher::new(store.clone(), hub.clone(), cluster.clone()));
        let rate = Arc::new(RateLimits::new(limits.clone(), cluster.clone()));
        let commits = Arc::new(Commits::new(store.clone(), metrics.clone()));
        let accounts = Arc::new(Accounts::new(
            store.clone(),
            limits.clone(),
            tokens,
            passwords,
            fanout.clone(),
            crate::jwt::JwtAuth::from_config(&cfg)?,
        ));
        let contacts = Arc::new(Contacts::new(store.clone(), accounts.clone()));
        let convs = Arc::new(Conversations::new(
            store.clone(),
            limits.clone(),
            fanout.clone(),
            commits.clone(),
            metrics.clone(),
        ));
        let webhooks = cfg.webhooks()?;
        let webhook_client = crate::webhooks::client()?;
        let before_send = crate::webhooks::before_send::BeforeSend::new(
            &webhooks,
            webhook_client.clone(),
            limits.max_content_bytes,
        )
        .map(Arc::new);
        let timeline = Arc::new(Timeline::new(
            store.clone(),
            limits.clone(),
            rate.clone(),
            convs.clone(),
            commits.clone(),
            before_send,
        ));
        let marks = Arc::new(Marks::new(
            store.clone(),
            limits.clone(),
            convs.clone(),
            fanout.clone(),
        ));
        let push = Arc::new(PushProviders::load(&cfg.push)?);
        let node = cluster.as_ref().map_or("node", |c| c.node.as_str());
        let outbound = Outbound::new(
            store.clone(),
            push.clone(),
            &webhooks,
            webhook_client,
            fanout.clone(),
            limits.clone(),
            node,
        )?;
        let devices = Arc::new(Devices::new(
            store.clone(),
            fanout.clone(),
            marks.clone(),
            push.clone(),
        ));
        let sync = Arc::new(Sync::new(store.clone(), limits.clone(), marks.clone()));
        let presence = Arc::new(Presence::new(
            store.clone(),
            limits.clone(),
            convs.clone(),
            fanout.clone(),
        ));
        Ok(Arc::new(AppState {
            cfg,
            limits,
            store,
            metrics,
            hub,
            fanout,
            dispatcher,
            cluster,
            rate,
            commits,
            accounts,
            devices,
            push,
            outbound,
            contacts,
            convs,
            timeline,
            marks,
            sync,
            presence,
            api_keys,
            cors,
            shutting_down: AtomicBool::new(false),
        }))
    }
}
