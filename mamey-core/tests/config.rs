//! Configuration layering, typed sections and error messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mamey_core::config::{Config, ConfigLoader, ConfigSection, ConfigSource, Secret};
use serde::{Deserialize, Serialize};

/// A plug-in's section, as plug-ins are told to write them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Greeter {
    greeting: String,
    port: u16,
    #[serde(with = "mamey_core::config::duration")]
    interval: Duration,
    password: Secret<String>,
}

impl Default for Greeter {
    fn default() -> Self {
        Self {
            greeting: "hello".into(),
            port: 8080,
            interval: Duration::from_secs(5),
            password: Secret::new(String::new()),
        }
    }
}

impl ConfigSection for Greeter {
    const KEY: &'static str = "greeter";
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn file(&self, name: &str) -> String {
        self.path().join(name).display().to_string()
    }

    fn loader(&self, env: &[(&str, &str)]) -> ConfigLoader {
        Config::loader("greeter-svc")
            .dir(self.path())
            .env_vars(env.iter().copied())
    }
}

#[test]
fn later_layers_win_file_then_profile_then_env() {
    let dir = Dir::new(&[
        (
            "default.toml",
            "[greeter]\ngreeting = \"from default\"\nport = 1\ninterval = \"1s\"\n",
        ),
        ("dev.toml", "[greeter]\nport = 2\ninterval = \"2s\"\n"),
    ]);
    let config = dir
        .loader(&[("MAMEY__GREETER__INTERVAL", "3s")])
        .load()
        .unwrap();
    let greeter = config.section::<Greeter>().unwrap();
    assert_eq!(greeter.greeting, "from default");
    assert_eq!(greeter.port, 2);
    assert_eq!(greeter.interval, Duration::from_secs(3));
    assert_eq!(
        config.sources(),
        [
            ConfigSource::File(dir.path().join("default.toml")),
            ConfigSource::File(dir.path().join("dev.toml")),
            ConfigSource::Env(vec!["MAMEY__GREETER__INTERVAL".into()]),
        ]
    );
}

#[test]
fn code_defaults_fill_what_no_layer_sets() {
    let dir = Dir::new(&[]);
    let config = dir.loader(&[]).load().unwrap();
    assert_eq!(config.section::<Greeter>().unwrap(), Greeter::default());
    assert!(config.sources().is_empty());
}

#[test]
fn the_profile_selects_the_profile_file() {
    let dir = Dir::new(&[
        ("default.toml", "[greeter]\nport = 1\n"),
        ("dev.toml", "[greeter]\nport = 2\n"),
        ("prod.toml", "[greeter]\nport = 3\n"),
    ]);
    let config = dir.loader(&[("MAMEY_PROFILE", "prod")]).load().unwrap();
    assert_eq!(config.section::<Greeter>().unwrap().port, 3);
    assert_eq!(config.app().profile, "prod");

    // The builder's profile wins over the variable.
    let config = dir
        .loader(&[("MAMEY_PROFILE", "prod")])
        .profile("dev")
        .load()
        .unwrap();
    assert_eq!(config.section::<Greeter>().unwrap().port, 2);
}

#[test]
fn a_shared_directory_gives_each_service_its_own_files() {
    let dir = Dir::new(&[
        (
            "default.toml",
            "[greeter]\ngreeting = \"shared\"\nport = 1\ninterval = \"1s\"\n",
        ),
        (
            "greeter-svc.toml",
            "[greeter]\nport = 2\ninterval = \"2s\"\n",
        ),
        ("other-svc.toml", "[greeter]\nport = 99\n"),
        (
            "prod.toml",
            "[greeter]\ninterval = \"3s\"\ngreeting = \"prod\"\n",
        ),
        ("greeter-svc-prod.toml", "[greeter]\ninterval = \"4s\"\n"),
    ]);
    // The service's own file over the shared one; a profile file over both;
    // the service's own profile file over everything.
    let config = dir.loader(&[]).load().unwrap();
    let greeter = config.section::<Greeter>().unwrap();
    assert_eq!((greeter.greeting.as_str(), greeter.port), ("shared", 2));
    assert_eq!(greeter.interval, Duration::from_secs(2));

    let config = dir.loader(&[("MAMEY_PROFILE", "prod")]).load().unwrap();
    let greeter = config.section::<Greeter>().unwrap();
    assert_eq!((greeter.greeting.as_str(), greeter.port), ("prod", 2));
    assert_eq!(greeter.interval, Duration::from_secs(4));
    assert_eq!(
        config.sources(),
        [
            ConfigSource::File(dir.path().join("default.toml")),
            ConfigSource::File(dir.path().join("greeter-svc.toml")),
            ConfigSource::File(dir.path().join("prod.toml")),
            ConfigSource::File(dir.path().join("greeter-svc-prod.toml")),
        ]
    );
}

#[test]
fn the_config_dir_comes_from_the_environment() {
    let dir = Dir::new(&[("default.toml", "[greeter]\nport = 9\n")]);
    let config = Config::loader("svc")
        .env_vars([("MAMEY_CONFIG_DIR", dir.path().to_str().unwrap())])
        .load()
        .unwrap();
    assert_eq!(config.section::<Greeter>().unwrap().port, 9);
    assert_eq!(config.dir(), dir.path());
}

#[test]
fn app_section_defaults_and_overrides() {
    let dir = Dir::new(&[("default.toml", "[app]\nversion = \"1.2.3\"\n")]);
    let first = dir.loader(&[]).load().unwrap();
    let second = dir.loader(&[]).load().unwrap();
    assert_eq!(first.app().name, "greeter-svc");
    assert_eq!(first.app().version, "1.2.3");
    assert_eq!(first.app().profile, "dev");
    assert!(first.app().instance_id.starts_with("greeter-svc-"));
    assert_ne!(first.app().instance_id, second.app().instance_id);

    let named = dir
        .loader(&[("MAMEY__APP__INSTANCE_ID", "greeter-7")])
        .load()
        .unwrap();
    assert_eq!(named.app().instance_id, "greeter-7");
}

#[test]
fn a_file_cannot_change_the_profile() {
    let dir = Dir::new(&[("default.toml", "[app]\nprofile = \"prod\"\n")]);
    let config = dir.loader(&[]).load().unwrap();
    assert_eq!(config.app().profile, "dev");
}

#[test]
fn unknown_key_names_key_file_and_the_accepted_keys() {
    let dir = Dir::new(&[("dev.toml", "[greeter]\ngreting = \"typo\"\n")]);
    let config = dir.loader(&[]).load().unwrap();
    let error = config.section::<Greeter>().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "config key `greeter.greting` (from file \"{}\"): unknown key; expected one of \
             `greeting`, `port`, `interval`, `password`",
            dir.file("dev.toml")
        )
    );
    let problem = &error.problems()[0];
    assert_eq!(problem.key, "greeter.greting");
}

#[test]
fn wrong_type_from_env_names_the_variable_and_expected_type() {
    let dir = Dir::new(&[]);
    let config = dir
        .loader(&[("MAMEY__GREETER__PORT", "eighty")])
        .load()
        .unwrap();
    let error = config.section::<Greeter>().unwrap_err();
    assert_eq!(
        error.to_string(),
        "config key `greeter.port` (from environment variable `MAMEY__GREETER__PORT`): \
         invalid type: found string \"eighty\", expected u16"
    );
}

#[test]
fn wrong_type_in_a_file_names_the_file() {
    let dir = Dir::new(&[("default.toml", "[greeter]\ninterval = \"soon\"\n")]);
    let config = dir.loader(&[]).load().unwrap();
    let error = config.section::<Greeter>().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "config key `greeter.interval` (from file \"{}\"): invalid value: found string \
             \"soon\", expected a duration like \"30s\", \"250ms\", \"5m\" or \"1h\"",
            dir.file("default.toml")
        )
    );
}

#[test]
fn a_section_that_is_not_a_table_is_an_error() {
    let dir = Dir::new(&[("default.toml", "greeter = 5\n")]);
    let config = dir.loader(&[]).load().unwrap();
    let message = config.section::<Greeter>().unwrap_err().to_string();
    assert!(
        message.starts_with("config key `greeter` (from file"),
        "{message}"
    );
    assert!(message.contains("expected struct Greeter"), "{message}");
}

#[test]
fn malformed_toml_fails_at_load_naming_the_file() {
    let dir = Dir::new(&[("default.toml", "[greeter\nport = 1\n")]);
    let message = dir.loader(&[]).load().unwrap_err().to_string();
    assert!(message.contains(&dir.file("default.toml")), "{message}");
}

#[test]
fn the_core_sections_are_validated_when_the_service_builds() {
    let dir = Dir::new(&[("default.toml", "[shutdown]\ntimeout = \"forever\"\n")]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(
            mamey_core::Service::builder("svc")
                .config_dir(dir.path())
                .env_vars(Vec::<(String, String)>::new())
                .build(),
        )
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("invalid configuration:\nconfig key `shutdown.timeout` (from file"),
        "{message}"
    );
}

#[test]
fn plugin_validation_errors_name_the_source() {
    let dir = Dir::new(&[("dev.toml", "[greeter]\ngreeting = \"\"\n")]);
    let config = dir.loader(&[]).load().unwrap();
    let error = config.invalid("greeter.greeting", "must not be empty");
    assert_eq!(
        error.to_string(),
        format!(
            "config key `greeter.greeting` (from file \"{}\"): must not be empty",
            dir.file("dev.toml")
        )
    );
}

#[test]
fn effective_config_shows_defaults_and_hides_secrets() {
    let dir = Dir::new(&[(
        "default.toml",
        "[greeter]\npassword = \"hunter2\"\n[database]\nurl = \"postgres://db\"\napi_key = \"k-123\"\n",
    )]);
    let config = dir.loader(&[]).load().unwrap();
    config.section::<Greeter>().unwrap();
    let text = config.effective_toml();
    let effective: toml::Table = text.parse().unwrap();
    let greeter = effective["greeter"].as_table().unwrap();
    assert_eq!(
        greeter["greeting"].as_str(),
        Some("hello"),
        "defaults shown"
    );
    assert_eq!(greeter["interval"].as_str(), Some("5s"));
    assert_eq!(greeter["password"].as_str(), Some("[redacted]"));
    let database = effective["database"].as_table().unwrap();
    assert_eq!(database["url"].as_str(), Some("postgres://db"));
    assert_eq!(database["api_key"].as_str(), Some("[redacted]"));
    assert_eq!(effective["app"]["name"].as_str(), Some("greeter-svc"));
    assert!(
        !text.contains("hunter2") && !text.contains("k-123"),
        "{text}"
    );
}

mod overlays {
    use mamey_core::config::ConfigOverlay;
    use mamey_core::config::figment::value::{Dict, Value};
    use mamey_core::{BoxError, Service, ServiceError};

    use super::{Config, Dir, Greeter};

    /// Reads its address from the configuration loaded so far, like a vault
    /// overlay would, and returns a greeter section.
    struct Store {
        fail: bool,
        port: Value,
    }

    impl ConfigOverlay for Store {
        fn name(&self) -> &str {
            "test-store"
        }

        async fn fetch(&mut self, base: &Config) -> Result<Dict, BoxError> {
            if self.fail {
                return Err("store unreachable at 127.0.0.1:1".into());
            }
            let greeting = format!("from store of {}", base.app().name);
            let mut greeter = Dict::new();
            greeter.insert("greeting".into(), Value::from(greeting));
            greeter.insert("port".into(), self.port.clone());
            Ok(Dict::from([("greeter".to_owned(), Value::from(greeter))]))
        }
    }

    async fn build(dir: &Dir, store: Store) -> Result<Service, ServiceError> {
        Service::builder("svc")
            .config_dir(dir.path())
            .env_vars([("MAMEY__GREETER__GREETING", "from env")])
            .handle_signals(false)
            .config_overlay(store)
            .build()
            .await
    }

    #[tokio::test]
    async fn an_overlay_sees_the_base_config_and_wins_over_env() {
        let dir = Dir::new(&[("default.toml", "[greeter]\nport = 1\n")]);
        let store = Store {
            fail: false,
            port: Value::from(2_u16),
        };
        let service = build(&dir, store).await.unwrap();
        let greeter = service.config().section::<Greeter>().unwrap();
        assert_eq!(greeter.greeting, "from store of svc");
        assert_eq!(greeter.port, 2);
        assert_eq!(
            service.config().sources().last(),
            Some(&mamey_core::config::ConfigSource::Overlay(
                "test-store".into()
            ))
        );
    }

    #[tokio::test]
    async fn a_failing_overlay_stops_the_build_naming_it() {
        let dir = Dir::new(&[]);
        let store = Store {
            fail: true,
            port: Value::from(2_u16),
        };
        let error = build(&dir, store).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "config overlay `test-store` failed: store unreachable at 127.0.0.1:1"
        );
    }

    #[tokio::test]
    async fn a_bad_value_from_an_overlay_names_the_overlay() {
        let dir = Dir::new(&[]);
        let store = Store {
            fail: false,
            port: Value::from("http"),
        };
        let service = build(&dir, store).await.unwrap();
        let error = service.config().section::<Greeter>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "config key `greeter.port` (from overlay `test-store`): invalid value: found a \
             string, expected u16"
        );
    }

    /// A plug-in that lays its own configuration over the rest, as the
    /// secrets plug-in does, and records what it saw at init.
    struct Overlaying {
        fail: bool,
        seen: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    }

    impl mamey_core::Plugin for Overlaying {
        fn name(&self) -> &'static str {
            "overlaying"
        }

        async fn config_overlay(&mut self, base: &Config) -> Result<Option<Dict>, BoxError> {
            if self.fail {
                return Err("vault unreachable".into());
            }
            // The plug-in's own settings come from the layers below it.
            let port = base.section::<Greeter>()?.port;
            let mut greeter = Dict::new();
            greeter.insert(
                "greeting".into(),
                Value::from(format!("from plug-in, port {port}")),
            );
            Ok(Some(Dict::from([(
                "greeter".to_owned(),
                Value::from(greeter),
            )])))
        }

        async fn init(&mut self, ctx: &mut mamey_core::InitContext<'_>) -> Result<(), BoxError> {
            *self.seen.lock().unwrap() = Some(ctx.section::<Greeter>()?.greeting);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_plugin_overlay_applies_before_any_init_and_below_builder_overlays() {
        let dir = Dir::new(&[("default.toml", "[greeter]\nport = 7\n")]);
        let seen = std::sync::Arc::default();
        let service = Service::builder("svc")
            .config_dir(dir.path())
            .env_vars([("MAMEY__GREETER__GREETING", "from env")])
            .handle_signals(false)
            .plugin(Overlaying {
                fail: false,
                seen: std::sync::Arc::clone(&seen),
            })
            .build()
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().as_deref(),
            Some("from plug-in, port 7")
        );
        assert_eq!(
            service.config().sources().last(),
            Some(&mamey_core::config::ConfigSource::Overlay(
                "overlaying".into()
            ))
        );
        // An overlay added to the builder sits above the plug-ins' ones.
        let service = Service::builder("svc")
            .config_dir(dir.path())
            .handle_signals(false)
            .plugin(Overlaying {
                fail: false,
                seen: std::sync::Arc::default(),
            })
            .config_overlay(Store {
                fail: false,
                port: Value::from(9_u16),
            })
            .build()
            .await
            .unwrap();
        assert_eq!(
            service.config().section::<Greeter>().unwrap().greeting,
            "from store of svc"
        );
    }

    #[tokio::test]
    async fn a_failing_plugin_overlay_stops_the_build_naming_the_plugin() {
        let error = Service::builder("svc")
            .config_dir(Dir::new(&[]).path())
            .handle_signals(false)
            .plugin(Overlaying {
                fail: true,
                seen: std::sync::Arc::default(),
            })
            .build()
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "config overlay `overlaying` failed: vault unreachable"
        );
    }
}
