//! `testbed fake-ovh --listen 127.0.0.1:PORT [--dedicated NAME ...]`: the fake OVH API on its own,
//! with a dedicated server per `--dedicated`. Prints, as lines a shell
//! can `eval`, the OVH_* variables a client needs, then serves until killed (Ctrl+C or SIGTERM),
//! destroying the local nodes behind its instances on the way out.

use std::process::ExitCode;

use testbed::fake_ovh::{FakeOvh, OvhConfig};
use testbed::TestBed;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen = "127.0.0.1:0".to_string();
    let mut dedicated = Vec::new();
    match args.first().map(String::as_str) {
        Some("fake-ovh") => {}
        _ => {
            eprintln!("usage: testbed fake-ovh [--listen 127.0.0.1:PORT] [--dedicated NAME ...]");
            return ExitCode::from(2);
        }
    }
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match (arg.as_str(), rest.next()) {
            ("--listen", Some(addr)) => listen = addr.clone(),
            ("--dedicated", Some(name)) => dedicated.push(name.clone()),
            _ => {
                eprintln!(
                    "usage: testbed fake-ovh [--listen 127.0.0.1:PORT] [--dedicated NAME ...]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Ok(addr) = listen.parse() else {
        eprintln!("--listen {listen}: not an address:port");
        return ExitCode::from(2);
    };
    let bed = match TestBed::new() {
        Ok(bed) => bed,
        Err(e) => {
            eprintln!("fake-ovh: setting up local nodes: {e}");
            return ExitCode::from(1);
        }
    };
    let fake = match FakeOvh::start_on(addr, bed.driver().clone(), OvhConfig::default()).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("fake-ovh: listening on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    for name in &dedicated {
        if let Err(e) = fake.add_dedicated(name).await {
            eprintln!("fake-ovh: dedicated server {name}: {e}");
            return ExitCode::from(1);
        }
    }
    for (name, value) in fake.env() {
        println!("export {name}={}", nodeup::ssh::quote(&value));
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            eprintln!("fake-ovh: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(fake);
    drop(bed);
    ExitCode::SUCCESS
}
