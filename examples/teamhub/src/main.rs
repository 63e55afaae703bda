//! `teamhub`: the example system's command line.
//!
//! ```text
//! teamhub [run] [--data DIR] [--port PORT]   all six services in this process (embedded)
//! teamhub serve SERVICE                      one service of the distributed system
//! teamhub run-local [--replicas N]           the distributed system on loopback, one process each
//! teamhub loadtest [--users N] [--duration SECONDS] [--rate N] [--mix all|reads] [--target URL]
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use mamey_core::BoxError;
use teamhub::{Deployment, loadtest, local, system};

const USAGE: &str = "\
usage:
  teamhub [run] [--data DIR] [--port PORT]   all six services in this process (embedded;
                                              data in ./teamhub-data, gateway on 8080)
  teamhub serve SERVICE                      one service of the distributed system
                                              (identity, boards, automations, chat,
                                              notifications, gateway)
  teamhub run-local [--replicas N]           the distributed system on loopback: every
                                              service its own process, N (2) replicas of
                                              boards and notifications
  teamhub loadtest [--users N] [--duration SECONDS] [--rate REQUESTS_PER_S]
                   [--mix all|reads] [--target URL]
                                              all: posts, card moves and reads (default);
                                              reads: card reads only (gateway + one hop)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teamhub: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(args: &[String]) -> Result<(), BoxError> {
    let (command, rest) = match args.split_first() {
        Some((first, rest)) if !first.starts_with("--") => (first.as_str(), rest),
        _ => ("run", args),
    };
    let options = Options::parse(rest)?;
    match command {
        "run" => run_embedded(&options).await,
        "serve" => {
            let name = options.positional.first().ok_or("serve: which service?")?;
            serve(name).await
        }
        "run-local" => local::run(options.number("replicas", 2)?).await,
        "loadtest" => {
            let report = loadtest::run(loadtest::Settings {
                users: options.number("users", 20)?,
                duration: std::time::Duration::from_secs(options.number("duration", 10)?),
                target: options.value("target"),
                rate: options
                    .value("rate")
                    .map(|r| r.parse())
                    .transpose()
                    .map_err(|_| "--rate: expected requests per second")?,
                mix: match options.value("mix").as_deref() {
                    None | Some("all") => loadtest::Mix::All,
                    Some("reads") => loadtest::Mix::Reads,
                    Some(other) => {
                        return Err(
                            format!("--mix: expected `all` or `reads`, got `{other}`").into()
                        );
                    }
                },
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}").into()),
    }
}

/// All six services in this process until Ctrl-C or SIGTERM.
async fn run_embedded(options: &Options) -> Result<(), BoxError> {
    let data = options
        .value("data")
        .map_or_else(|| PathBuf::from("teamhub-data"), PathBuf::from);
    let mut deploy = Deployment::embedded(&data);
    if let Some(port) = options.value("port") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--port: expected a port number, found `{port}`"))?;
        deploy = deploy.service_env(
            teamhub::gateway::NAME,
            "MAMEY__HTTP__ADDRESS",
            format!("127.0.0.1:{port}"),
        );
    }
    let system = system::embedded(&deploy).await?;
    let running = system.group.start().await?;
    let at = system.gateway;
    println!(
        "teamhub is running: six services in this process, data in {}",
        data.display()
    );
    println!("gateway: http://{at}   (merged OpenAPI: http://{at}/api/openapi.json)");
    println!("try it:");
    println!(
        "  curl -s -XPOST http://{at}/api/identity/sign-up -H 'content-type: application/json' \\\n    \
         -d '{{\"email\":\"ada@example.com\",\"name\":\"ada\",\"password\":\"correct horse\"}}'"
    );
    println!(
        "  TOKEN=$(curl -s -XPOST http://{at}/api/identity/sign-in -H 'content-type: application/json' \\\n    \
         -d '{{\"email\":\"ada@example.com\",\"password\":\"correct horse\"}}' | sed 's/.*\"accessToken\":\"\\([^\"]*\\)\".*/\\1/')"
    );
    println!(
        "  curl -si -XPOST http://{at}/api/boards/workspaces -H \"authorization: Bearer $TOKEN\" \\\n    \
         -H 'content-type: application/json' -d '{{\"name\":\"team\"}}'"
    );
    println!("Ctrl-C stops it.");
    running.wait().await?;
    Ok(())
}

/// One service of the distributed system, until Ctrl-C or SIGTERM.
async fn serve(name: &str) -> Result<(), BoxError> {
    let deploy = Deployment::distributed();
    let builder = system::service(name, &deploy).ok_or_else(|| {
        format!(
            "unknown service `{name}`: expected one of {}",
            system::SERVICES.join(", ")
        )
    })?;
    builder.build().await?.run().await?;
    Ok(())
}

/// `--name value` options and positional arguments.
struct Options {
    named: Vec<(String, String)>,
    positional: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, BoxError> {
        let mut named = Vec::new();
        let mut positional = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let (name, value) = match name.split_once('=') {
                    Some((name, value)) => (name.to_owned(), value.to_owned()),
                    None => {
                        let value = args
                            .next()
                            .ok_or_else(|| format!("--{name} needs a value\n{USAGE}"))?;
                        (name.to_owned(), value.clone())
                    }
                };
                named.push((name, value));
            } else {
                positional.push(arg.clone());
            }
        }
        Ok(Self { named, positional })
    }

    fn value(&self, name: &str) -> Option<String> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, BoxError> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name}: expected a number, found `{text}`").into()),
        }
    }
}
