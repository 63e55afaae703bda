//! Handler arguments (extractors) and ordinary tower layers on the dispatcher.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mamey_core::cqrs::{
    Command, Dispatcher, DispatcherError, FromMessageContext, FromResources, MessageKind, Query,
    Res,
};
use mamey_core::{Error, ErrorKind, Identity, MessageContext, MissingResource, Resources, Service};
use tokio::sync::Semaphore;

struct PlaceOrder {
    id: u32,
}
impl Command for PlaceOrder {}

struct CountOrders;
impl Query for CountOrders {
    type Output = usize;
}

struct WhoAsks;
impl Query for WhoAsks {
    type Output = (String, String);
}

#[derive(Clone, Default)]
struct Pool(Arc<std::sync::Mutex<Vec<u32>>>);

/// A repository built from the pool: the application's own extractor,
/// counting how often it is built.
#[derive(Clone)]
struct Orders {
    pool: Pool,
}

static ORDERS_BUILT: AtomicUsize = AtomicUsize::new(0);

impl FromResources for Orders {
    fn from_resources(resources: &Resources) -> Result<Self, MissingResource> {
        ORDERS_BUILT.fetch_add(1, Ordering::SeqCst);
        Ok(Self {
            pool: resources.get::<Pool>()?,
        })
    }
}

impl Orders {
    fn add(&self, id: u32) {
        self.pool.0.lock().unwrap().push(id);
    }
    fn count(&self) -> usize {
        self.pool.0.lock().unwrap().len()
    }
}

/// A per-call extractor: the caller, or 401 without running the handler.
struct CurrentUser(Identity);

impl FromMessageContext for CurrentUser {
    async fn from_message_context(context: &MessageContext) -> Result<Self, Error> {
        context
            .identity
            .clone()
            .map(CurrentUser)
            .ok_or_else(|| Error::unauthorized("auth.required", "sign in first"))
    }
}

async fn place_order(
    cmd: PlaceOrder,
    orders: Orders,
    CurrentUser(user): CurrentUser,
) -> Result<(), Error> {
    assert!(!user.subject.is_empty());
    orders.add(cmd.id);
    Ok(())
}

async fn count_orders(_: CountOrders, orders: Orders) -> Result<usize, Error> {
    Ok(orders.count())
}

fn resources_with_pool() -> Resources {
    let mut resources = Resources::new();
    resources.insert(Pool::default());
    resources
}

#[tokio::test]
async fn extractors_are_resolved_once_and_per_call_ones_each_call() {
    let before = ORDERS_BUILT.load(Ordering::SeqCst);
    let dispatcher = Dispatcher::builder()
        .command(place_order)
        .query(count_orders)
        .build_with(&resources_with_pool())
        .unwrap();
    // One build per handler that takes it, none per call.
    assert_eq!(ORDERS_BUILT.load(Ordering::SeqCst) - before, 2);

    let caller = MessageContext::new().with_identity(Identity::new("ada"));
    for id in 1..=3 {
        caller
            .clone()
            .scope(dispatcher.send(PlaceOrder { id }))
            .await
            .unwrap();
    }
    assert_eq!(dispatcher.query(CountOrders).await.unwrap(), 3);
    assert_eq!(ORDERS_BUILT.load(Ordering::SeqCst) - before, 2);
}

#[tokio::test]
async fn a_failing_per_call_extractor_fails_the_dispatch_without_the_handler() {
    let dispatcher = Dispatcher::builder()
        .command(place_order)
        .query(count_orders)
        .build_with(&resources_with_pool())
        .unwrap();
    let error = dispatcher.send(PlaceOrder { id: 1 }).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthorized);
    assert_eq!(error.code(), "auth.required");
    assert_eq!(dispatcher.query(CountOrders).await.unwrap(), 0);
}

#[tokio::test]
async fn the_message_context_argument_is_the_callers() {
    let dispatcher =
        Dispatcher::builder()
            .query(|_: WhoAsks, ctx: MessageContext| async move {
                Ok((ctx.correlation_id, ctx.message_id))
            })
            .build()
            .unwrap();
    let caller = MessageContext::new().with_correlation_id("corr-7");
    let message_id = caller.message_id.clone();
    let (correlation, seen_id) = caller.scope(dispatcher.query(WhoAsks)).await.unwrap();
    assert_eq!(correlation, "corr-7");
    assert_eq!(seen_id, message_id);
}

#[tokio::test]
async fn a_missing_resource_fails_the_build_naming_message_handler_and_resource() {
    let error = Dispatcher::builder()
        .query(count_orders)
        .build()
        .unwrap_err();
    let DispatcherError::MissingResource {
        kind,
        message,
        handler,
        resource,
        ..
    } = &error
    else {
        panic!("expected a missing resource, got {error:?}");
    };
    assert_eq!(*kind, MessageKind::Query);
    assert_eq!(*message, "CountOrders");
    assert_eq!(handler, "count_orders");
    assert!(resource.ends_with("::Pool"), "{resource}");
    let text = error.to_string();
    assert!(
        text.contains("`CountOrders`") && text.contains("Pool"),
        "{text}"
    );
    assert!(
        text.contains("needed to build `handlers::Orders`"),
        "{text}"
    );

    // The same through a service: its build fails with the same words.
    let error = Service::builder("orders")
        .handle_signals(false)
        .env_vars(Vec::<(String, String)>::new())
        .config_dir("/nonexistent-mamey-config")
        .handlers(|d| {
            d.command(|_: PlaceOrder, Res(_pool): Res<Pool>| async { Ok(()) });
        })
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`PlaceOrder`")
            && error.contains("PlaceOrder handler")
            && error.contains("Pool"),
        "{error}"
    );
}

#[tokio::test]
async fn an_optional_resource_is_none_when_missing() {
    let dispatcher =
        Dispatcher::builder()
            .query(|_: CountOrders, pool: Option<Res<Pool>>| async move {
                Ok(usize::from(pool.is_some()))
            })
            .build()
            .unwrap();
    assert_eq!(dispatcher.query(CountOrders).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn towers_timeout_layer_maps_to_unavailable() {
    let dispatcher = Dispatcher::builder()
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
        .command(|_: PlaceOrder| std::future::pending::<Result<(), Error>>())
        .query(|_: CountOrders| async { Ok(7) })
        .build()
        .unwrap();
    let error = dispatcher.send(PlaceOrder { id: 1 }).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.code(), "dispatch.timeout");
    // A handler's answer and its own errors pass through unchanged.
    assert_eq!(dispatcher.query(CountOrders).await.unwrap(), 7);
}

#[tokio::test]
async fn towers_concurrency_limit_holds_handlers_to_the_limit() {
    let gate = Arc::new(Semaphore::new(0));
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut resources = Resources::new();
    resources.insert((Arc::clone(&gate), Arc::clone(&running), Arc::clone(&most)));
    type Shared = (Arc<Semaphore>, Arc<AtomicUsize>, Arc<AtomicUsize>);
    let dispatcher = Dispatcher::builder()
        .layer(tower::limit::ConcurrencyLimitLayer::new(2))
        .command(
            |_: PlaceOrder, Res((gate, running, most)): Res<Shared>| async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            },
        )
        .build_with(&resources)
        .unwrap();

    let calls: Vec<_> = (0..10)
        .map(|id| {
            tokio::spawn({
                let dispatcher = dispatcher.clone();
                async move { dispatcher.send(PlaceOrder { id }).await }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "two handlers never started"
        );
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        running.load(Ordering::SeqCst),
        2,
        "the limit holds the rest back"
    );
    gate.add_permits(10);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn load_shedding_at_the_concurrency_limit_maps_to_overloaded() {
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let mut resources = Resources::new();
    resources.insert((Arc::clone(&gate), Arc::clone(&started)));
    type Shared = (Arc<Semaphore>, Arc<AtomicUsize>);
    let dispatcher = Dispatcher::builder()
        .layer(tower::load_shed::LoadShedLayer::new())
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .command(
            |_: PlaceOrder, Res((gate, started)): Res<Shared>| async move {
                started.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                Ok(())
            },
        )
        .build_with(&resources)
        .unwrap();
    let first = tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move { dispatcher.send(PlaceOrder { id: 1 }).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first call never started"
        );
        tokio::task::yield_now().await;
    }
    // The first call holds the only slot: a second is shed at once.
    let error = dispatcher.send(PlaceOrder { id: 2 }).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.code(), "dispatch.overloaded");
    assert_eq!(started.load(Ordering::SeqCst), 1);
    gate.add_permits(1);
    first.await.unwrap().unwrap();
}

#[derive(Clone)]
struct N(u32);

/// The most arguments a handler takes: the message and sixteen extractors.
#[allow(clippy::too_many_arguments)]
async fn sixteen(
    _: CountOrders,
    Res(N(a)): Res<N>,
    b: Option<Res<N>>,
    Res(N(c)): Res<N>,
    Res(N(d)): Res<N>,
    Res(N(e)): Res<N>,
    Res(N(f)): Res<N>,
    Res(N(g)): Res<N>,
    Res(N(h)): Res<N>,
    Res(N(i)): Res<N>,
    Res(N(j)): Res<N>,
    Res(N(k)): Res<N>,
    Res(N(l)): Res<N>,
    Res(N(m)): Res<N>,
    Res(N(n)): Res<N>,
    Res(N(o)): Res<N>,
    ctx: MessageContext,
) -> Result<usize, Error> {
    let b = b.map_or(0, |Res(N(b))| b);
    let sum = a + b + c + d + e + f + g + h + i + j + k + l + m + n + o;
    Ok(sum as usize + usize::from(!ctx.message_id.is_empty()))
}

#[tokio::test]
async fn a_handler_takes_up_to_sixteen_arguments() {
    let mut resources = Resources::new();
    resources.insert(N(1));
    let dispatcher = Dispatcher::builder()
        .query(sixteen)
        .build_with(&resources)
        .unwrap();
    assert_eq!(dispatcher.query(CountOrders).await.unwrap(), 16);
}

/// A per-call extractor that waits, as one that looks the caller up or
/// begins a transaction would.
struct Looked(String);

impl FromMessageContext for Looked {
    async fn from_message_context(context: &MessageContext) -> Result<Self, Error> {
        tokio::task::yield_now().await;
        Ok(Looked(format!("looked up {}", context.correlation_id)))
    }
}

#[tokio::test]
async fn a_per_call_extractor_may_wait() {
    let dispatcher = Dispatcher::builder()
        .query(|_: WhoAsks, Looked(found): Looked| async move { Ok((found, String::new())) })
        .build()
        .unwrap();
    let caller = MessageContext::new().with_correlation_id("corr-9");
    let (found, _) = caller.scope(dispatcher.query(WhoAsks)).await.unwrap();
    assert_eq!(found, "looked up corr-9");
}
