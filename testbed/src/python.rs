//! The Python tools the tests use (moto's server, boto3, Libcloud), from the virtualenv that
//! `.ci/run` makes from `testbed/requirements.txt`: `$NODEUP_TEST_VENV`, else `target/test-venv`
//! in the workspace.

use std::io;
use std::path::PathBuf;

/// The variable that names the virtualenv.
pub const VENV_VARIABLE: &str = "NODEUP_TEST_VENV";

/// The virtualenv's directory.
pub fn venv() -> PathBuf {
    match std::env::var_os(VENV_VARIABLE).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv"),
    }
}

/// A program of the virtualenv (`moto_server`, `python` ...).
///
/// # Errors
/// `NotFound`, saying how to make the virtualenv.
pub fn tool(name: &str) -> io::Result<PathBuf> {
    let path = venv().join("bin").join(name);
    if path.exists() {
        return Ok(path);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} is missing: the tests need the virtualenv that .ci/run makes (python3 -m venv \
             target/test-venv && target/test-venv/bin/pip install -r testbed/requirements.txt), \
             or {VENV_VARIABLE} naming one",
            path.display()
        ),
    ))
}

/// The virtualenv's Python when Libcloud and paramiko are in it (what the benchmarks compare
/// nodeup with), else `None`.
pub fn with_libcloud() -> Option<PathBuf> {
    let python = tool("python").ok()?;
    let ok = std::process::Command::new(&python)
        .args(["-c", "import libcloud, paramiko"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}
