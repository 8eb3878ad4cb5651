//! The providers nodeup drives, one folder or file each. Every one implements `NodeDriver` and is
//! registered by name in [`registry`], one line each. `lookup` and [`kit`] are what they share:
//! finding an image, size or location by id or name; typed settings that refuse unknown keys, the
//! error of an HTTP call, and creating at most once.

pub mod dummy;
pub mod ec2;
pub mod kit;
pub mod local;
pub mod lookup;
pub mod nephoscale;
pub mod openstack;
pub mod ovh;
pub mod slipstream;

use std::sync::{Arc, OnceLock};

use crate::driver::{NodeDriver, ProviderConfig, ProviderError, Registry};

/// The registry every command uses: the built-in providers, and whatever was registered since.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Registry::default();
        registry.register("dummy", |c| {
            Ok(Arc::new(dummy::DummyDriver::from_config(c)?))
        });
        registry.register("local", |c| {
            Ok(Arc::new(local::LocalDriver::from_config(c)?))
        });
        registry.register("ovh", |c| Ok(Arc::new(ovh::OvhDriver::from_config(c)?)));
        registry.register("ec2", |c| Ok(Arc::new(ec2::Ec2Driver::from_config(c)?)));
        registry.register("nephoscale", |c| {
            Ok(Arc::new(nephoscale::NephoScaleDriver::from_config(c)?))
        });
        registry.register("openstack", |c| {
            Ok(Arc::new(openstack::OpenStackDriver::from_config(c)?))
        });
        registry.register("slipstream", |c| {
            Ok(Arc::new(slipstream::SlipStreamDriver::from_config(c)?))
        });
        registry
    })
}

/// Registers a driver under a provider name (a third party's, say), replacing any of that name.
pub fn register(name: &str, factory: crate::driver::DriverFactory) {
    registry().register(name, factory);
}

/// The names of every registered provider, in order.
pub fn names() -> Vec<String> {
    registry().names()
}

/// Builds the driver registered under `name`, with no settings.
///
/// # Errors
/// An unknown provider, or a driver that cannot be built (credentials, state directory ...).
pub fn get_driver(name: &str) -> Result<Arc<dyn NodeDriver>, ProviderError> {
    registry().get(name, &ProviderConfig::new())
}

/// Builds the driver registered under `name` with the step file's `[provider]` settings.
///
/// # Errors
/// An unknown provider or setting, or a driver that cannot be built.
pub fn get_driver_with(
    name: &str,
    config: &ProviderConfig,
) -> Result<Arc<dyn NodeDriver>, ProviderError> {
    registry().get(name, config)
}

pub use kit::{call_failure, http_client, key_blob, settings, Refusal};
