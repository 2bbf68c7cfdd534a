//! `rules`: the built-in rules' settings (on or off, mode, allowed container ports), and their
//! checks.

use serde::{Deserialize, Serialize};

use super::{Mode, Problem, yes};

/// Settings every built-in rule has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Overrides the top-level `mode` for this rule.
    #[serde(default)]
    pub mode: Option<Mode>,
}

impl RuleSettings {
    fn on() -> Self {
        Self {
            enabled: true,
            mode: None,
        }
    }
    fn off() -> Self {
        Self {
            enabled: false,
            mode: None,
        }
    }
}

/// `rules.containerPorts`: which container ports may be declared (off by default).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPortsRule {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Ports (`"8080"`) or inclusive ranges (`"8000-8999"`).
    #[serde(default)]
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rules {
    #[serde(default = "RuleSettings::on")]
    pub trusted_registry: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub no_latest_tag: RuleSettings,
    #[serde(default = "RuleSettings::off")]
    pub require_digest: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub run_as_non_root: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub privileged: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub privilege_escalation: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub host_namespaces: RuleSettings,
    #[serde(default = "RuleSettings::on")]
    pub host_ports: RuleSettings,
    #[serde(default)]
    pub container_ports: ContainerPortsRule,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            trusted_registry: RuleSettings::on(),
            no_latest_tag: RuleSettings::on(),
            require_digest: RuleSettings::off(),
            run_as_non_root: RuleSettings::on(),
            privileged: RuleSettings::on(),
            privilege_escalation: RuleSettings::on(),
            host_namespaces: RuleSettings::on(),
            host_ports: RuleSettings::on(),
            container_ports: ContainerPortsRule::default(),
        }
    }
}

impl Rules {
    /// Checks of `rules`.
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });
        let ports = &self.container_ports;
        if ports.enabled && ports.allowed.is_empty() {
            problem(
                "rules.containerPorts.allowed".into(),
                "must list ports when the rule is enabled (an empty list would deny every port)"
                    .into(),
            );
        }
        for (i, entry) in ports.allowed.iter().enumerate() {
            if let Err(message) = parse_port_range(entry) {
                problem(format!("rules.containerPorts.allowed[{i}]"), message);
            }
        }
    }
}

/// `"8080"` or `"8000-8999"` (inclusive) into a range of ports.
pub fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{text:?} is not a port (1-65535) or range (a-b)")),
            Ok(p) => Ok(p),
        }
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (port(low)?, port(high)?);
            if low > high {
                return Err(format!("{text:?}: range start is above its end"));
            }
            Ok(low..=high)
        }
        None => port(text).map(|p| p..=p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_parse() {
        assert_eq!(parse_port_range("80"), Ok(80..=80));
        assert_eq!(parse_port_range("8000-8999"), Ok(8000..=8999));
        assert!(parse_port_range("0").is_err());
        assert!(parse_port_range("70000").is_err());
    }
}
