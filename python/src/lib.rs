//! nodeup's Python extension module (`nodeup._nodeup`): the engine's deployments, runs and
//! provider calls as tasks Python waits on with the GIL released. The package's Python side
//! (`python/nodeup/`) gives them Libcloud's names, classes and exceptions.

mod callbacks;
mod calls;
mod report;
mod spec;
mod task;

use pyo3::prelude::*;

/// The module: `start_deploy`, `start_run`, `start_call`, `load_stepfile`, `check_ssh` and `Task`.
#[pymodule]
fn _nodeup(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(calls::start_deploy, m)?)?;
    m.add_function(wrap_pyfunction!(calls::start_run, m)?)?;
    m.add_function(wrap_pyfunction!(calls::start_call, m)?)?;
    m.add_function(wrap_pyfunction!(calls::load_stepfile, m)?)?;
    m.add_function(wrap_pyfunction!(calls::check_ssh, m)?)?;
    m.add_class::<task::Task>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
