//! Parsing the durations (`7d`, `36h`) and instants (`2026-12-31`, RFC 3339) users write in the
//! configuration, with serde helpers that keep what was written for messages.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

/// A duration as written (`90d`, `12h`, `1w`), parsed with humantime.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|err| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration like 7d, 36h or 90m: {err}"
                ))
            })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// An instant as written: a date (`2026-12-31`, meaning 00:00 UTC that day) or RFC 3339.
#[derive(Clone, PartialEq, Eq)]
pub struct Instant {
    pub at: OffsetDateTime,
    pub written: String,
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Parses `2026-12-31` (00:00 UTC) or an RFC 3339 timestamp.
pub fn parse_instant(text: &str) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format)
        .map(|date| date.with_time(Time::MIDNIGHT).assume_utc())
        .map_err(|_| format!("{text:?} is not a date (2026-12-31) or an RFC 3339 timestamp"))
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // YAML may hand over a date as a string; numbers are refused by String.
        let written = String::deserialize(deserializer)?;
        let at = parse_instant(&written).map_err(serde::de::Error::custom)?;
        Ok(Instant { at, written })
    }
}

impl Serialize for Instant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.written)
    }
}

/// `3d 4h` style age for messages (rounded to hours beyond a day).
pub fn describe_age(age: time::Duration) -> String {
    let hours = age.whole_hours();
    if hours >= 48 {
        format!("{} days", hours / 24)
    } else if hours >= 1 {
        format!("{hours} hours")
    } else {
        format!("{} minutes", age.whole_minutes().max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_timestamps_parse() {
        assert_eq!(
            parse_instant("2026-12-31").map(|t| t.unix_timestamp()),
            Ok(1_798_675_200)
        );
        assert!(parse_instant("2026-12-31T10:00:00Z").is_ok());
        assert!(parse_instant("31/12/2026").is_err());
    }

    #[test]
    fn durations_parse_with_days() {
        let parsed: Result<HumanDuration, _> = serde_yaml_ng::from_str("7d");
        assert_eq!(
            parsed.ok().map(|d| d.0),
            Some(Duration::from_secs(7 * 24 * 3600))
        );
        let parsed: Result<HumanDuration, _> = serde_yaml_ng::from_str("soon");
        assert!(parsed.is_err());
    }
}

/// Configuration durations written as whole seconds (`…Seconds: 30`): every duration in the
/// configuration is a `std::time::Duration` in the schema, whichever way its key spells it
/// (`…Seconds`, `…Millis`, or a human string through [`HumanDuration`]).
pub mod whole_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

/// Configuration durations written as whole milliseconds (`…Millis: 500`); see
/// [`whole_seconds`].
pub mod whole_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}
