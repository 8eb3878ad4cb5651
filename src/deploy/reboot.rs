//! The reboot step: reboot the node (a new kernel, a changed boot setting), wait until it is back
//! with a new boot, log in again, go on. The engine runs it ([`crate::engine::run_steps`]): it
//! replaces the step's connection.

use std::time::Duration;

/// How long a reboot may take unless the step says otherwise.
pub const DEFAULT_REBOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Reboots the node: through its provider when the deployment has both (`deploy`), else with the
/// node's own `reboot` (as root); then waits until SSH answers with a new
/// `/proc/sys/kernel/random/boot_id`, and logs in again as the same user.
#[derive(Debug, Clone, Default)]
pub struct RebootStep {
    /// The longest wait for the node to come back ([`DEFAULT_REBOOT_TIMEOUT`] when `None`).
    pub timeout: Option<Duration>,
}

impl RebootStep {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err("the timeout must be longer than zero".into());
        }
        Ok(())
    }

    /// The longest wait for the node to come back.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_REBOOT_TIMEOUT)
    }
}
