//! nodeup's integration tests: one binary, against test-bed nodes (real OpenSSH sshd).

mod cli_deploy;
mod cli_nodes;
mod deploy;
mod hardening;
mod local_nodes;
mod ovh;
mod ovh_fake;
mod reinstall;
mod relay;
mod ssh;

use std::process::Output;

/// The text of a command's stdout, with stderr shown when the assertion that uses it fails.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that a command succeeded, showing its stderr if not.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
