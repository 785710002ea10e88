//! Kubernetes resource quantities (`500m`, `16`, `64Gi`, `1.5e3`).
//!
//! canopy only needs quantities to weigh clusters by capacity, so a quantity is
//! read into an `f64` of base units (cores, bytes, pods); the exactness of
//! Kubernetes' `resource.Quantity` is not needed to compare capacities.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A quantity as written in the fleet (a string or a number).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Quantity {
    Number(f64),
    Text(String),
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantity::Number(n) => write!(f, "{n}"),
            Quantity::Text(s) => f.write_str(s),
        }
    }
}

impl Quantity {
    /// The value in base units, or a message saying why it is not a quantity.
    pub fn value(&self) -> Result<f64, String> {
        match self {
            Quantity::Number(n) if *n >= 0.0 && n.is_finite() => Ok(*n),
            Quantity::Number(n) => Err(format!("{n} is not a non-negative quantity")),
            Quantity::Text(s) => parse_quantity(s),
        }
    }
}

/// Parses the Kubernetes quantity grammar: a signed decimal number followed by
/// a binary suffix (Ki … Ei), a decimal SI suffix (n u m k M G T P E) or a
/// decimal exponent (e3, E-2).
///
/// ```
/// use canopy::core::model::quantity::parse_quantity;
/// assert_eq!(parse_quantity("500m"), Ok(0.5));
/// assert_eq!(parse_quantity("2Ki"), Ok(2048.0));
/// assert!(parse_quantity("lots").is_err());
/// ```
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "{s:?} is not a Kubernetes quantity (examples: \"500m\", \"4\", \"64Gi\", \"1.5e3\")"
        )
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() || num.starts_with('-') {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(parse_quantity("500m").unwrap(), 0.5);
        assert_eq!(parse_quantity("4").unwrap(), 4.0);
        assert_eq!(
            parse_quantity("64Gi").unwrap(),
            64.0 * 1024.0 * 1024.0 * 1024.0
        );
        assert_eq!(parse_quantity("1.5e3").unwrap(), 1500.0);
        assert_eq!(parse_quantity("2k").unwrap(), 2000.0);
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("-1").is_err());
        assert!(parse_quantity("1Zi").is_err());
        assert_eq!(Quantity::Number(3.0).value().unwrap(), 3.0);
    }
}
