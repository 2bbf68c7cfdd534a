//! portcullis-rego: Rego policies behind `portcullis_core::policy::Policy`, through regorus —
//! loading and compiling modules once per configuration, evaluating them against the core's
//! input document, and `portcullis policy test` (table tests and Rego `test_` rules).

mod negation;
pub mod policy_test;
mod recursion;
pub mod rego;
pub mod value;
