//! `scans`: the check of where cached scan reports come from (the settings' type is
//! `crate::scan::ScanSettings`).

use super::Problem;

/// Checks of `scans`.
pub(super) fn validate_scans(scans: &crate::scan::ScanSettings, problems: &mut Vec<Problem>) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    if let Some(trivy) = scans
        .trivy_reports
        .as_ref()
        .filter(|trivy| !trivy.directory.is_dir())
    {
        problem(
            "scans.trivyReports.directory".into(),
            format!(
                "{} does not exist or is not a directory",
                trivy.directory.display()
            ),
        );
    }
}
