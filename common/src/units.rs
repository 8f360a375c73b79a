//! Units a user writes in manifests, workflows and flags: byte sizes (`512M`,
//! `16G`, `1.5T`) and durations (`"04:00:00"`, `90m`, `2h`, `30s`).
//!
//! Parsed once here into plain integers so nothing else parses strings. Sizes
//! are binary (1G = 1024^3 bytes), as Slurm and Kubernetes `Gi` mean them.

use std::fmt;

/// A parse failure with a message that already says what a valid value looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(pub String);

/// Parses a byte size: a number (integer or decimal) and an optional unit
/// `B`, `K`, `M`, `G`, `T`, `P` (also `KB`, `KiB`, `Gi`, ...). A bare number is bytes.
pub fn parse_size_bytes(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let hint = || {
        UnitError(format!(
            "invalid size {text:?} (expected a number with a unit, e.g. 512M, 16G or 1.5T)"
        ))
    };
    if t.is_empty() {
        return Err(hint());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| hint())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        _ => return Err(hint()),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 / 2.0 {
        return Err(hint());
    }
    Ok(bytes.round() as u64)
}

/// Formats bytes with the largest unit that keeps the number readable (`16G`, `1.5T`, `300M`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (name, mult) in UNITS {
        if bytes >= mult {
            let v = bytes as f64 / mult as f64;
            return if (v - v.round()).abs() < 0.05 {
                format!("{}{name}", v.round() as u64)
            } else {
                format!("{v:.1}{name}")
            };
        }
    }
    format!("{bytes}B")
}

/// Parses a duration: `HH:MM:SS`, `MM:SS`, `D-HH:MM:SS` (Slurm forms) or a number
/// with a unit `ms`, `s`, `m`, `h`, `d` (`90m`, `2h`, `1.5h`). A bare number is seconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let hint = || {
        UnitError(format!(
            "invalid duration {text:?} (expected e.g. \"04:00:00\", 90m, 2h or 30s)"
        ))
    };
    if t.is_empty() {
        return Err(hint());
    }
    if t.contains(':') {
        let (days, rest) = match t.split_once('-') {
            Some((d, r)) => (d.parse::<u64>().map_err(|_| hint())?, r),
            None => (0, t),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let nums: Result<Vec<u64>, _> = parts.iter().map(|p| p.parse::<u64>()).collect();
        let nums = nums.map_err(|_| hint())?;
        let secs = match nums.as_slice() {
            [m, s] if *s < 60 => m * 60 + s,
            [h, m, s] if *m < 60 && *s < 60 => h * 3600 + m * 60 + s,
            _ => return Err(hint()),
        };
        return Ok((days * 86_400 + secs) * 1000);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| hint())?;
    let mult: f64 = match unit.trim() {
        "ms" => 1.0,
        "" | "s" | "sec" | "secs" => 1000.0,
        "m" | "min" | "mins" => 60_000.0,
        "h" | "hr" | "hrs" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return Err(hint()),
    };
    let ms = value * mult;
    if !ms.is_finite() || !(0.0..=1e15).contains(&ms) {
        return Err(hint());
    }
    Ok(ms.round() as u64)
}

/// Formats milliseconds for people: `2 mins, 6 secs`, `38 secs`, `1 hr, 2 mins`.
pub fn format_duration_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if secs == 0 {
        return format!("{:.3} secs", ms as f64 / 1000.0);
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} hr{}", if h == 1 { "" } else { "s" }));
    }
    if m > 0 {
        parts.push(format!("{m} min{}", if m == 1 { "" } else { "s" }));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s} sec{}", if s == 1 { "" } else { "s" }));
    }
    parts.join(", ")
}

/// A byte count that prints as a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size_bytes("16G").unwrap(), 16 << 30);
        assert_eq!(parse_size_bytes("16Gi").unwrap(), 16 << 30);
        assert_eq!(parse_size_bytes("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size_bytes("100").unwrap(), 100);
        assert_eq!(parse_size_bytes("2kb").unwrap(), 2048);
        for bad in ["", "G", "16X", "-1G", "1..5G", "nan"] {
            let e = parse_size_bytes(bad).unwrap_err();
            assert!(e.0.contains("e.g. 512M"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_parse_slurm_and_unit_forms() {
        assert_eq!(parse_duration_ms("04:00:00").unwrap(), 4 * 3_600_000);
        assert_eq!(parse_duration_ms("1-00:00:10").unwrap(), 86_410_000);
        assert_eq!(parse_duration_ms("05:30").unwrap(), 330_000);
        assert_eq!(parse_duration_ms("90m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("2h").unwrap(), 7_200_000);
        assert_eq!(parse_duration_ms("1.5h").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("30").unwrap(), 30_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        for bad in ["", "1:99:00", "h", "3 weeks", "1:2:3:4"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting_is_readable() {
        assert_eq!(format_size(16 << 30), "16G");
        assert_eq!(format_size(3 << 39), "1.5T");
        assert_eq!(format_size(10), "10B");
        assert_eq!(format_duration_ms(126_000), "2 mins, 6 secs");
        assert_eq!(format_duration_ms(38_000), "38 secs");
        assert_eq!(format_duration_ms(3_720_000), "1 hr, 2 mins");
    }
}
