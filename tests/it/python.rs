//! The Python package (`python/`): its pytest suite, run from the tests' virtualenv on real sshd
//! (local nodes), after `maturin develop` has built the extension into that virtualenv (a no-op
//! when `.ci/run` built it already and nothing changed).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The fewest tests the suite holds: a suite that collected fewer (a file skipped by mistake) fails.
const MIN_PYTHON_TESTS: usize = 40;

fn package_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Builds the extension into the virtualenv, as `maturin develop` does for a developer.
fn build_extension() {
    let maturin = testbed::python::tool("maturin").expect("maturin");
    let out = Command::new(maturin)
        .args(["develop", "--quiet"])
        .current_dir(package_dir())
        .env("VIRTUAL_ENV", testbed::python::venv())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "maturin develop failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every deployment class, failures with their node and output, streaming, Ctrl+C, threads while
/// a deployment waits, asyncio, bad input, callbacks that raise, `run`, step files, the Libcloud
/// drop-in with a Libcloud driver over local nodes and with Libcloud's DummyNodeDriver, and the
/// type stubs under mypy: `python -m pytest python/tests`.
#[test]
fn the_python_package_passes_its_pytest_suite() {
    build_extension();
    let python = testbed::python::tool("python").expect("python");
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(package_dir())
        .env_remove("NODEUP_PROVIDER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: usize = stdout
        .split(" passed")
        .next()
        .and_then(|head| head.rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= MIN_PYTHON_TESTS,
        "pytest ran {passed} tests, expected at least {MIN_PYTHON_TESTS}:\n{stdout}"
    );
}
