//! `portcullis policy test`: the table tests beside each policy and its Rego `test_` rules.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use super::CliError;

pub(super) fn policy_test(dir: &Path) -> Result<ExitCode, CliError> {
    let report = crate::policy::policy_test::run(dir)?;
    let mut out = std::io::stdout().lock();
    out.write_all(report.text.as_bytes())
        .map_err(CliError::Output)?;
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
