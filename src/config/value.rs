//! Typed parameter values: sizes, durations, booleans, arrays, numbers and enums.
//!
//! These follow what a person means rather than fluentd's regex-based conversion, which
//! matches unanchored prefixes: in fluentd `100ms` is 6000 s (it sees `100m`), `1h30m` is
//! 1800 s (it sees only `30m`), `1.5h` is 18000 s, `1.5m` is 5 MiB and `10x` is 10 bytes.
//! Here `100ms` is 0.1 s, `1h30m` is 5400 s, `1.5h` is 5400 s, `1.5m` is 1.5 MiB and junk is
//! an error naming the parameter. Values that mean the same in both are read the same.

use std::time::Duration;

/// An enumerated parameter: a closed set of names.
pub trait ConfigEnum: Sized + Copy + 'static {
    /// Every accepted name, in the order they are documented.
    const NAMES: &'static [&'static str];
    /// The variant a name stands for.
    fn from_name(name: &str) -> Option<Self>;
    /// The name of a variant, as written in a configuration.
    fn name(self) -> &'static str;
}

/// Declares an enum whose variants are written in configurations as the given names.
macro_rules! config_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $crate::config::value::ConfigEnum for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some(Self::$variant),)+ _ => None }
            }
            fn name(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::config::value::ConfigEnum::name(*self))
            }
        }
    };
}
pub(crate) use config_enum;

/// A byte count: `500k`, `800m`, `1g`, `2t`, plain bytes, with an optional `b`/`ib` after
/// the unit (`800MB`, `800MiB`); units are 1024-based, as in fluentd. Fractions are allowed
/// (`1.5m`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("'{text}' is not a size: use a number with an optional unit k, m, g or t (1024-based), as in 500k or 800m")),
    };
    let value = parse_non_negative(number, text, "size")?;
    let bytes = (value * (1u64 << shift) as f64).round();
    if bytes > u64::MAX as f64 {
        return Err(format!("'{text}' is too large a size"));
    }
    Ok(bytes as u64)
}

/// A duration: a number of seconds (`0.5`, `43200`), or numbers with units `ms`, `s`, `m`,
/// `h`, `d`, alone or combined (`250ms`, `10s`, `12h`, `1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let err = || {
        format!("'{text}' is not a duration: use seconds (43200, 0.5) or units ms, s, m, h, d, as in 250ms, 10s, 12h or 1h30m")
    };
    if text.is_empty() {
        return Err(err());
    }
    let mut rest = text;
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = parse_non_negative(&rest[..n], text, "duration").map_err(|_| err())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..u] {
            "" if n == text.len() => 1.0,
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(err()),
        };
        rest = &rest[u..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("'{text}' is too long a duration"))
}

fn parse_non_negative(number: &str, whole: &str, what: &str) -> Result<f64, String> {
    let valid = !number.is_empty() && number.matches('.').count() <= 1 && number != ".";
    match number.parse::<f64>() {
        Ok(v) if valid && v.is_finite() => Ok(v),
        _ => Err(format!("'{whole}' is not a {what}")),
    }
}

/// A boolean: `true`/`yes` or `false`/`no` (any case). A bare key (no value) is true.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "" => Ok(true),
        "false" | "no" => Ok(false),
        // fluentd's quirk: `key #comment` gives the value "#comment", which it reads as true.
        v if v.starts_with('#') => Ok(true),
        _ => Err(format!(
            "'{text}' is not a boolean: use true, false, yes or no"
        )),
    }
}

/// An array: JSON (`["a", "b"]`) or comma-separated (`a, b`), empty items dropped.
pub fn parse_array(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    if text.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| format!("'{text}' is not a JSON array: {e}"))?;
        return items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                serde_json::Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("array items must be strings, found {other}")),
            })
            .collect();
    }
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect())
}

/// A whole number within `min..=max`.
pub fn parse_integer(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let text = text.trim();
    let value: u64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number"))?;
    if value < min || value > max {
        return Err(format!("{value} is out of range: use {min} to {max}"));
    }
    Ok(value)
}

/// A finite decimal number.
pub fn parse_float(text: &str) -> Result<f64, String> {
    let text = text.trim();
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("'{text}' is not a number")),
    }
}

/// One of the names of `E`.
pub fn parse_enum<E: ConfigEnum>(text: &str) -> Result<E, String> {
    let text = text.trim();
    E::from_name(text).ok_or_else(|| format!("'{text}' is not one of {}", E::NAMES.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    config_enum! {
        /// For tests.
        enum Overflow {
            Block = "block",
            Drop = "drop_oldest_chunk",
        }
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            ("500k", 500 * 1024),
            ("500K", 500 * 1024),
            ("800m", 800 << 20),
            ("800MB", 800 << 20),
            ("800MiB", 800 << 20),
            ("1g", 1 << 30),
            ("2t", 2 << 40),
            ("1.5m", 3 << 19),
            ("10b", 10),
            (" 8k ", 8192),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
        for bad in [
            "", "k", "10x", "10kbx", "-1", "1.2.3k", "ten", "10 k", "1e3",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let cases: &[(&str, Duration)] = &[
            ("1s", s(1)),
            ("10s", s(10)),
            ("10m", s(600)),
            ("12h", s(43200)),
            ("1d", s(86400)),
            ("43200", s(43200)),
            ("0.5", ms(500)),
            ("250ms", ms(250)),
            ("100ms", ms(100)),
            ("1h30m", s(5400)),
            ("1.5h", s(5400)),
            ("1m30s", s(90)),
            ("0", s(0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
        for bad in ["", "s", "10x", "-1s", "1 h", "10S", "1h30", "abc", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn booleans() {
        for (text, want) in [
            ("true", true),
            ("yes", true),
            ("", true),
            ("TRUE", true),
            ("false", false),
            ("no", false),
            ("#c", true),
        ] {
            assert_eq!(parse_bool(text), Ok(want), "{text}");
        }
        for bad in ["1", "on", "tru", "falsey"] {
            assert!(parse_bool(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arrays() {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_array("a, b ,c"), Ok(v(&["a", "b", "c"])));
        assert_eq!(
            parse_array("/var/log/at/**/*.log*"),
            Ok(v(&["/var/log/at/**/*.log*"]))
        );
        assert_eq!(parse_array(r#"["a,b", "c"]"#), Ok(v(&["a,b", "c"])));
        assert_eq!(parse_array("[1, true]"), Ok(v(&["1", "true"])));
        assert_eq!(parse_array(""), Ok(v(&[])));
        assert_eq!(parse_array("a,,b,"), Ok(v(&["a", "b"])));
        assert!(parse_array("[[1]]").is_err());
        assert!(parse_array("[1").is_err());
    }

    #[test]
    fn numbers_and_enums() {
        assert_eq!(parse_integer("100", 1, 1000), Ok(100));
        assert!(parse_integer("0", 1, 1000)
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_integer("12abc", 0, 100).is_err());
        assert!(parse_integer("-1", 0, 100).is_err());
        assert_eq!(parse_float("0.95"), Ok(0.95));
        assert!(parse_float("nan").is_err());
        assert_eq!(parse_enum::<Overflow>("block"), Ok(Overflow::Block));
        assert_eq!(Overflow::Drop.to_string(), "drop_oldest_chunk");
        assert_eq!(
            parse_enum::<Overflow>("blocks").unwrap_err(),
            "'blocks' is not one of block, drop_oldest_chunk"
        );
    }
}
