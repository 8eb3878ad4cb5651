//! The test bed's fakes on their own: `testbed fake-ovh [--listen 127.0.0.1:PORT] [--dedicated
//! NAME ...]` (a dedicated server per `--dedicated`), `testbed fake-nephoscale [--listen ...]`,
//! `testbed fake-slipstream [--listen ...]`. Each prints, as lines a shell can `eval`, the
//! variables a client needs, then serves until killed (Ctrl+C or SIGTERM), destroying the local
//! nodes behind its machines on the way out.

use std::net::SocketAddr;
use std::process::ExitCode;

use testbed::fake_nephoscale::{FakeNephoScale, NephoConfig};
use testbed::fake_ovh::{FakeOvh, OvhConfig};
use testbed::fake_slipstream::{FakeSlipStream, SlipConfig};
use testbed::TestBed;

const USAGE: &str = "usage: testbed fake-ovh|fake-nephoscale|fake-slipstream \
                     [--listen 127.0.0.1:PORT] [--dedicated NAME ...]";

/// What the command line asked for.
struct Args {
    fake: String,
    listen: SocketAddr,
    dedicated: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fake = match args.first().map(String::as_str) {
        Some(f @ ("fake-ovh" | "fake-nephoscale" | "fake-slipstream")) => f.to_string(),
        _ => return Err(USAGE.into()),
    };
    let mut listen = "127.0.0.1:0".to_string();
    let mut dedicated = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next()) {
            ("--listen", Some(addr)) => listen = addr.clone(),
            ("--dedicated", Some(name)) if fake == "fake-ovh" => dedicated.push(name.clone()),
            _ => return Err(USAGE.into()),
        }
    }
    let listen = listen
        .parse()
        .map_err(|_| format!("--listen {listen}: not an address:port"))?;
    Ok(Args {
        fake,
        listen,
        dedicated,
    })
}

/// A fake being served: kept (and so serving) until the process is told to end.
type Serving = Box<dyn std::any::Any + Send>;

async fn start(args: &Args, bed: &TestBed) -> Result<(Serving, Vec<(String, String)>), String> {
    let driver = bed.driver().clone();
    let failed = |e: std::io::Error| format!("{}: listening on {}: {e}", args.fake, args.listen);
    match args.fake.as_str() {
        "fake-ovh" => {
            let fake = FakeOvh::start_on(args.listen, driver, OvhConfig::default())
                .await
                .map_err(failed)?;
            for name in &args.dedicated {
                fake.add_dedicated(name)
                    .await
                    .map_err(|e| format!("fake-ovh: dedicated server {name}: {e}"))?;
            }
            let env = fake.env();
            Ok((Box::new(fake), env))
        }
        "fake-nephoscale" => {
            let fake = FakeNephoScale::start_on(args.listen, driver, NephoConfig::default())
                .await
                .map_err(failed)?;
            let env = fake.env();
            Ok((Box::new(fake), env))
        }
        _ => {
            let fake = FakeSlipStream::start_on(args.listen, driver, SlipConfig::default())
                .await
                .map_err(failed)?;
            let env = fake.env();
            Ok((Box::new(fake), env))
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let bed = match TestBed::new() {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("{}: setting up local nodes: {e}", args.fake);
            return ExitCode::from(1);
        }
    };
    let (serving, env) = match start(&args, &bed).await {
        Ok(started) => started,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
    };
    for (name, value) in env {
        println!("export {name}={}", nodeup::ssh::quote(&value));
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("{}: {e}", args.fake);
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(serving);
    drop(bed);
    ExitCode::SUCCESS
}
