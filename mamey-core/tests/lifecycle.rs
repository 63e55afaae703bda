//! Service lifecycle: order, rollback, deadlines, resources, background tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mamey_core::cqrs::Res;
use mamey_core::health::{Probe, Status};
use mamey_core::{
    BoxError, InitContext, Plugin, Requirement, Service, ServiceBuilder, ServiceError, StartContext,
};

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[derive(Clone, Copy, Default, PartialEq)]
enum Fault {
    #[default]
    None,
    Init,
    Start,
    Ready,
    StopError,
    StopHangs,
    TaskFails,
}

/// A plug-in that records each lifecycle call in a shared log.
struct Recorder {
    name: &'static str,
    log: Log,
    fault: Fault,
}

impl Recorder {
    fn new(name: &'static str, log: &Log) -> Self {
        Self::faulty(name, log, Fault::None)
    }

    fn faulty(name: &'static str, log: &Log, fault: Fault) -> Self {
        Self {
            name,
            log: Arc::clone(log),
            fault,
        }
    }

    fn record(&self, event: &str) {
        self.log
            .lock()
            .unwrap()
            .push(format!("{event} {}", self.name));
    }
}

impl Plugin for Recorder {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn init(&mut self, _ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        self.record("init");
        if self.fault == Fault::Init {
            return Err("database refused the connection".into());
        }
        Ok(())
    }

    async fn start(&mut self, ctx: &StartContext) -> Result<(), BoxError> {
        self.record("start");
        match self.fault {
            Fault::Start => return Err("port already in use".into()),
            Fault::TaskFails => ctx.spawn("consumer", async { Err("channel closed".into()) }),
            _ => {
                let token = ctx.shutdown_token();
                let log = Arc::clone(&self.log);
                let name = self.name;
                ctx.spawn("worker", async move {
                    token.cancelled().await;
                    log.lock().unwrap().push(format!("task-done {name}"));
                    Ok(())
                });
            }
        }
        Ok(())
    }

    async fn ready(&mut self, _ctx: &StartContext) -> Result<(), BoxError> {
        self.record("ready");
        match self.fault {
            Fault::Ready => Err("registry refused the registration".into()),
            _ => Ok(()),
        }
    }

    async fn drain(&mut self) -> Result<(), BoxError> {
        self.record("drain");
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), BoxError> {
        self.record("stop");
        match self.fault {
            Fault::StopError => Err("flush failed".into()),
            Fault::StopHangs => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

fn builder(name: &str) -> ServiceBuilder {
    Service::builder(name)
        .handle_signals(false)
        .env_vars(Vec::<(String, String)>::new())
        .config_dir("/nonexistent-mamey-config")
}

/// Starts the service, then asks it to stop.
async fn run_and_stop(service: Service) -> Result<(), ServiceError> {
    service.start().await?.stop().await
}

async fn wait_until_started(health: &mamey_core::health::Health) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while health.check(Probe::Startup).await.status != Status::Healthy {
        assert!(
            tokio::time::Instant::now() < deadline,
            "service never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn starts_in_order_and_stops_in_reverse() {
    let log = Log::default();
    let service = builder("order")
        .plugin(Recorder::new("a", &log))
        .plugin(Recorder::new("b", &log))
        .plugin(Recorder::new("c", &log))
        .build()
        .await
        .unwrap();
    run_and_stop(service).await.unwrap();
    assert_eq!(
        entries(&log),
        [
            "init a",
            "init b",
            "init c",
            "start a",
            "start b",
            "start c",
            "ready a",
            "ready b",
            "ready c",
            "drain c",
            "drain b",
            "drain a",
            "stop c",
            "task-done c",
            "stop b",
            "task-done b",
            "stop a",
            "task-done a",
        ]
    );
}

#[tokio::test]
async fn a_failed_ready_drains_the_ones_announced_and_stops_everything() {
    let log = Log::default();
    let service = builder("ready-fails")
        .plugin(Recorder::new("a", &log))
        .plugin(Recorder::faulty("b", &log, Fault::Ready))
        .plugin(Recorder::new("c", &log))
        .build()
        .await
        .unwrap();
    let error = service.run().await.unwrap_err();
    assert!(
        matches!(&error, ServiceError::PluginStart { plugin: "b", .. }),
        "{error:?}"
    );
    let log = entries(&log);
    let after_start = &log[log.iter().position(|e| e == "start c").unwrap() + 1..];
    assert_eq!(
        after_start,
        [
            "ready a",
            "ready b",
            "drain a",
            "stop c",
            "task-done c",
            "stop b",
            "task-done b",
            "stop a",
            "task-done a",
        ]
    );
}

#[tokio::test]
async fn failed_init_stops_the_plugins_before_it_and_names_the_culprit() {
    let log = Log::default();
    let error = builder("rollback")
        .plugin(Recorder::new("a", &log))
        .plugin(Recorder::new("b", &log))
        .plugin(Recorder::faulty("db", &log, Fault::Init))
        .plugin(Recorder::new("d", &log))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        ServiceError::PluginInit { plugin: "db", .. }
    ));
    assert_eq!(
        error.to_string(),
        "plug-in `db` failed to initialise: database refused the connection"
    );
    assert_eq!(
        entries(&log),
        ["init a", "init b", "init db", "stop b", "stop a"]
    );
}

#[tokio::test]
async fn failed_start_stops_every_initialised_plugin() {
    let log = Log::default();
    let service = builder("start-fails")
        .plugin(Recorder::new("a", &log))
        .plugin(Recorder::faulty("http", &log, Fault::Start))
        .plugin(Recorder::new("c", &log))
        .build()
        .await
        .unwrap();
    let error = service.run().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "plug-in `http` failed to start: port already in use"
    );
    assert_eq!(
        entries(&log),
        [
            "init a",
            "init http",
            "init c",
            "start a",
            "start http",
            "stop c",
            "stop http",
            "stop a",
            "task-done a",
        ]
    );
}

#[tokio::test]
async fn a_failed_start_reports_unhealthy_and_fires_the_shutdown_handle() {
    let log = Log::default();
    let service = builder("start-health")
        .plugin(Recorder::faulty("http", &log, Fault::Start))
        .build()
        .await
        .unwrap();
    let (health, handle) = (service.health().clone(), service.shutdown_handle());
    service.run().await.unwrap_err();
    assert!(
        handle.is_shutdown(),
        "code waiting on the handle is released"
    );
    for probe in [Probe::Startup, Probe::Ready] {
        let report = health.check(probe).await;
        assert_eq!(report.status, Status::Unhealthy, "{probe}");
        assert_eq!(
            report.checks[0].result.detail.as_deref(),
            Some("failed to start"),
            "{probe}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_is_enforced_on_a_hung_plugin() {
    let log = Log::default();
    let service = builder("deadline")
        .env_vars([("MAMEY__SHUTDOWN__TIMEOUT", "200ms")])
        .plugin(Recorder::new("telemetry", &log))
        .plugin(Recorder::faulty("stuck", &log, Fault::StopHangs))
        .plugin(Recorder::new("http", &log))
        .build()
        .await
        .unwrap();
    let handle = service.shutdown_handle();
    handle.shutdown();
    // Virtual time: without the deadline this would wait the full minute.
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), service.run())
        .await
        .expect("run() hung past the shutdown deadline");
    assert!(started.elapsed() < Duration::from_secs(1));
    let ServiceError::Stop(failures) = result.unwrap_err() else {
        panic!("expected a stop error");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].plugin, "stuck");
    assert_eq!(
        failures[0].reason,
        "did not stop within its share of the shutdown deadline (193ms of 200ms)"
    );
    // The plug-in before the hung one is still asked to stop.
    let log = entries(&log);
    assert!(log.contains(&"stop telemetry".to_owned()), "{log:?}");
    assert!(log.contains(&"stop stuck".to_owned()), "{log:?}");
}

#[tokio::test]
async fn a_shutdown_requested_before_start_starts_nothing_and_stops_everything() {
    let log = Log::default();
    let service = builder("early-stop")
        .plugin(Recorder::new("a", &log))
        .plugin(Recorder::new("b", &log))
        .build()
        .await
        .unwrap();
    service.shutdown_handle().shutdown();
    service.run().await.unwrap();
    assert_eq!(entries(&log), ["init a", "init b", "stop b", "stop a"]);
}

#[tokio::test]
async fn stop_errors_are_reported_not_swallowed() {
    let log = Log::default();
    let service = builder("stop-error")
        .plugin(Recorder::faulty("exporter", &log, Fault::StopError))
        .plugin(Recorder::new("b", &log))
        .build()
        .await
        .unwrap();
    let error = run_and_stop(service).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "1 plug-in(s) did not stop cleanly: `exporter`: flush failed"
    );
    assert!(entries(&log).contains(&"stop b".to_owned()));
}

#[tokio::test]
async fn failed_background_task_shuts_the_service_down() {
    let log = Log::default();
    let service = builder("task-fails")
        .plugin(Recorder::new("a", &log))
        .plugin(Recorder::faulty("consumer", &log, Fault::TaskFails))
        .build()
        .await
        .unwrap();
    // Nobody calls shutdown: the failed task must end run() by itself.
    let error = tokio::time::timeout(Duration::from_secs(10), service.run())
        .await
        .expect("a failed task did not stop the service")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "background task `consumer` of plug-in `consumer` failed: channel closed"
    );
    let log = entries(&log);
    assert!(
        log.ends_with(&[
            "stop consumer".to_owned(),
            "stop a".to_owned(),
            "task-done a".to_owned()
        ]),
        "{log:?}"
    );
}

#[tokio::test]
async fn the_same_plugin_twice_is_rejected() {
    let log = Log::default();
    let error = builder("dup")
        .plugin(Recorder::new("cache", &log))
        .plugin(Recorder::new("cache", &log))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        ServiceError::DuplicatePlugin { plugin: "cache" }
    ));
    assert_eq!(
        error.to_string(),
        "plug-in `cache` is added twice; add each plug-in once"
    );
    assert!(entries(&log).is_empty(), "nothing may initialise");
}

#[derive(Clone, Debug, PartialEq)]
struct Pool(&'static str);

struct PoolPlugin;

impl Plugin for PoolPlugin {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        ctx.provide(Pool("primary"))?;
        Ok(())
    }
}

struct Repository {
    seen: Arc<Mutex<Option<Pool>>>,
}

impl Plugin for Repository {
    fn requires(&self) -> Vec<Requirement> {
        vec![Requirement::of::<Pool>().hint("add `PoolPlugin` before `Repository`")]
    }

    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        *self.seen.lock().unwrap() = Some(ctx.resource::<Pool>()?);
        Ok(())
    }
}

#[tokio::test]
async fn a_missing_resource_names_the_plugin_type_and_fix() {
    let seen = Arc::default();
    let error = builder("missing")
        .plugin(Repository { seen })
        .plugin(PoolPlugin)
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(
        error,
        ServiceError::MissingResource {
            plugin: "Repository",
            ..
        }
    ));
    assert!(
        message.starts_with("plug-in `Repository` requires resource `lifecycle::Pool`"),
        "{message}"
    );
    assert!(
        message.ends_with("; add `PoolPlugin` before `Repository`"),
        "{message}"
    );
}

struct ReadPool;
impl mamey_core::cqrs::Query for ReadPool {
    type Output = Pool;
}

#[tokio::test]
async fn resources_flow_to_later_plugins_and_handlers() {
    let seen = Arc::new(Mutex::new(None));
    let service = builder("resources")
        .plugin(PoolPlugin)
        .plugin(Repository {
            seen: Arc::clone(&seen),
        })
        .handlers(|d| {
            d.query(|_: ReadPool, Res(pool): Res<Pool>| async move { Ok(pool) });
        })
        .build()
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(Pool("primary")));
    assert_eq!(
        service.dispatcher().query(ReadPool).await.unwrap(),
        Pool("primary")
    );
    assert!(
        service
            .resources()
            .contains::<mamey_core::cqrs::Dispatcher>()
    );
}

#[tokio::test]
async fn providing_a_resource_twice_names_the_first_provider() {
    struct SecondPool;
    impl Plugin for SecondPool {
        async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
            ctx.provide(Pool("secondary"))?;
            Ok(())
        }
    }
    let error = builder("conflict")
        .plugin(PoolPlugin)
        .plugin(SecondPool)
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "plug-in `SecondPool` failed to initialise: resource `lifecycle::Pool` is already provided by plug-in `PoolPlugin`"
    );
}

#[tokio::test]
async fn readiness_follows_the_lifecycle() {
    let log = Log::default();
    let service = builder("ready")
        .plugin(Recorder::new("a", &log))
        .build()
        .await
        .unwrap();
    let health = service.health().clone();
    assert_eq!(health.check(Probe::Ready).await.status, Status::Unhealthy);
    assert_eq!(health.check(Probe::Startup).await.status, Status::Unhealthy);
    let handle = service.shutdown_handle();
    let running = tokio::spawn(service.run());
    wait_until_started(&health).await;
    assert_eq!(health.check(Probe::Ready).await.status, Status::Healthy);
    handle.shutdown();
    running.await.unwrap().unwrap();
    let ready = health.check(Probe::Ready).await;
    assert_eq!(ready.status, Status::Unhealthy);
    assert_eq!(ready.checks[0].result.detail.as_deref(), Some("stopping"));
}

#[tokio::test]
async fn two_services_run_side_by_side_in_one_process() {
    let (log_a, log_b) = (Log::default(), Log::default());
    let a = builder("orders")
        .plugin(Recorder::new("shared-name", &log_a))
        .build()
        .await
        .unwrap();
    let b = builder("payments")
        .plugin(Recorder::new("shared-name", &log_b))
        .build()
        .await
        .unwrap();
    assert_eq!(a.app().name, "orders");
    assert_eq!(b.app().name, "payments");
    assert_ne!(a.app().instance_id, b.app().instance_id);
    let (stop_a, health_a) = (a.shutdown_handle(), a.health().clone());
    let (stop_b, health_b) = (b.shutdown_handle(), b.health().clone());
    let run_a = tokio::spawn(a.run());
    let run_b = tokio::spawn(b.run());
    wait_until_started(&health_a).await;
    wait_until_started(&health_b).await;
    // Stopping one leaves the other running.
    stop_a.shutdown();
    run_a.await.unwrap().unwrap();
    assert_eq!(health_b.check(Probe::Ready).await.status, Status::Healthy);
    stop_b.shutdown();
    run_b.await.unwrap().unwrap();
    assert!(entries(&log_a).contains(&"stop shared-name".to_owned()));
    assert!(entries(&log_b).contains(&"stop shared-name".to_owned()));
}

mod dispatcher_as_resource {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mamey_core::cqrs::{Command, Dispatcher, Event, Res};
    use mamey_core::{BoxError, InitContext, Plugin};

    use super::builder;

    struct PlaceOrder;
    impl Command for PlaceOrder {}

    #[derive(Clone)]
    struct OrderPlaced;
    impl Event for OrderPlaced {}

    /// Registers a command handler that publishes an event through the
    /// dispatcher it took during `init`, before the dispatcher was built.
    struct Orders {
        placed: Arc<AtomicUsize>,
        early: Option<mamey_core::Error>,
    }

    impl Plugin for Orders {
        async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
            let dispatcher = ctx.resource::<Dispatcher>()?;
            self.early = dispatcher.send(PlaceOrder).await.err();
            let placed = Arc::clone(&self.placed);
            ctx.dispatcher()
                .command(
                    |_: PlaceOrder, Res(dispatcher): Res<Dispatcher>| async move {
                        dispatcher.publish(OrderPlaced).await
                    },
                )
                .event(move |_: OrderPlaced| {
                    let placed = Arc::clone(&placed);
                    async move {
                        placed.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                });
            assert_eq!(
                self.early.as_ref().map(mamey_core::Error::code),
                Some("dispatch.not_ready"),
                "dispatching before the build completes is refused"
            );
            Ok(())
        }
    }

    #[tokio::test]
    async fn handlers_can_dispatch_through_the_dispatcher_taken_at_init() {
        let placed = Arc::new(AtomicUsize::new(0));
        let service = builder("orders")
            .plugin(Orders {
                placed: Arc::clone(&placed),
                early: None,
            })
            .build()
            .await
            .unwrap();
        service.dispatcher().send(PlaceOrder).await.unwrap();
        assert_eq!(placed.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn start_returns_once_running_and_stop_waits_for_the_stop() {
    let log = Log::default();
    let service = builder("embedded")
        .plugin(Recorder::new("a", &log))
        .build()
        .await
        .unwrap();
    let health = service.health().clone();
    let running = service.start().await.unwrap();
    assert_eq!(health.check(Probe::Ready).await.status, Status::Healthy);
    assert_eq!(entries(&log), ["init a", "start a", "ready a"]);
    running.stop().await.unwrap();
    assert_eq!(
        entries(&log),
        [
            "init a",
            "start a",
            "ready a",
            "drain a",
            "stop a",
            "task-done a"
        ]
    );
}

#[tokio::test]
async fn start_reports_a_failed_start() {
    let log = Log::default();
    let service = builder("embedded-fails")
        .plugin(Recorder::faulty("http", &log, Fault::Start))
        .build()
        .await
        .unwrap();
    let error = service.start().await.unwrap_err();
    assert!(matches!(
        error,
        ServiceError::PluginStart { plugin: "http", .. }
    ));
    assert_eq!(entries(&log), ["init http", "start http", "stop http"]);
}

mod group {
    use mamey_core::{ServiceError, ServiceGroup};

    use super::{Fault, Log, Recorder, builder, entries};

    async fn member(name: &'static str, log: &Log, fault: Fault) -> mamey_core::Service {
        builder(name)
            .plugin(Recorder::faulty(name, log, fault))
            .build()
            .await
            .unwrap()
    }

    /// The services a caller depends on are added first: they start first
    /// and stop last, so the caller drains while they still answer.
    #[tokio::test]
    async fn starts_in_order_and_stops_in_reverse_one_service_after_the_other() {
        let log = Log::default();
        let group = ServiceGroup::new()
            .handle_signals(false)
            .service(member("pricing", &log, Fault::None).await)
            .service(member("orders", &log, Fault::None).await);
        group.start().await.unwrap().stop().await.unwrap();
        let events: Vec<String> = entries(&log)
            .into_iter()
            .filter(|e| !e.starts_with("init"))
            .collect();
        assert_eq!(
            events,
            [
                "start pricing",
                "ready pricing",
                "start orders",
                "ready orders",
                "drain orders",
                "stop orders",
                "task-done orders",
                "drain pricing",
                "stop pricing",
                "task-done pricing",
            ]
        );
    }

    #[tokio::test]
    async fn a_member_that_fails_stops_the_whole_group_and_is_named() {
        let log = Log::default();
        let group = ServiceGroup::new()
            .handle_signals(false)
            .service(member("pricing", &log, Fault::None).await)
            .service(member("orders", &log, Fault::TaskFails).await);
        // The task may fail before the group has started or after: either
        // way the group stops and names the service.
        let error = match group.start().await {
            Ok(running) => tokio::time::timeout(std::time::Duration::from_secs(10), running.wait())
                .await
                .expect("the group stops by itself")
                .unwrap_err(),
            Err(error) => error,
        };
        let ServiceError::Services(failures) = &error else {
            panic!("{error}");
        };
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].0, "orders");
        assert!(error.to_string().contains("channel closed"), "{error}");
        assert!(entries(&log).contains(&"stop pricing".to_owned()));
    }

    #[tokio::test]
    async fn a_member_that_fails_to_start_stops_the_ones_before_it() {
        let log = Log::default();
        let group = ServiceGroup::new()
            .handle_signals(false)
            .service(member("pricing", &log, Fault::None).await)
            .service(member("orders", &log, Fault::Start).await)
            .service(member("billing", &log, Fault::None).await);
        let error = group.start().await.unwrap_err().to_string();
        assert!(
            error.contains("`orders`") && error.contains("port already in use"),
            "{error}"
        );
        let events = entries(&log);
        assert!(events.contains(&"stop pricing".to_owned()), "{events:?}");
        assert!(!events.contains(&"start billing".to_owned()), "{events:?}");
    }
}

/// A plug-in may hold `&InitContext` across an `.await` (the future must be
/// `Send`): this compiles only while the context, and so the dispatcher
/// builder in it, is `Sync`.
struct AwaitsWithContext;

impl Plugin for AwaitsWithContext {
    async fn init(&mut self, ctx: &mut InitContext<'_>) -> Result<(), BoxError> {
        let shared: &InitContext<'_> = ctx;
        tokio::task::yield_now().await;
        assert_eq!(shared.app().name, "awaits");
        Ok(())
    }
}

#[tokio::test]
async fn a_plugin_can_hold_its_init_context_across_an_await() {
    builder("awaits")
        .plugin(AwaitsWithContext)
        .handlers(|d| {
            d.command(|_: dispatcher_as_resource_probe::Probe| async { Ok(()) });
        })
        .build()
        .await
        .unwrap();
}

mod dispatcher_as_resource_probe {
    pub(crate) struct Probe;
    impl mamey_core::cqrs::Command for Probe {}
}

/// Log lines written while a test runs, through a subscriber set as the
/// thread's default (a current-thread runtime keeps every task on it).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_started_and_stopped_lines_name_the_service() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    run_and_stop(builder("named").build().await.unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    for event in ["service started", "service stopped"] {
        let line = text
            .lines()
            .find(|l| l.contains(event))
            .unwrap_or_else(|| panic!("no `{event}` in {text}"));
        assert!(line.contains("service=named"), "{line}");
    }
}
