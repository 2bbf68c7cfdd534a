//! Scan sources that read reports from outside: a watched directory of Trivy JSON reports and
//! Trivy Operator `VulnerabilityReport`s in the cluster. The report model and the `ScanSource`
//! seam are the core's (`portcullis_core::scan`).

pub mod operator;
pub mod trivy;
