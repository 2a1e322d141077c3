//! Just enough of Kubernetes' quantity syntax to read sizes: the V8 heap and mongod's cache from
//! memory limits, volume sizes for a resize.

/// Bytes of a Kubernetes quantity (`10Gi`, `500M`, `1.5Ti`, `1e9`, `100m`), if it parses.
pub fn bytes(q: &str) -> Option<u128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then(|| bytes.ceil() as u128)
}

/// Bytes in a memory quantity such as `1Gi`, `512Mi`, `1G`, `1e9` or `1073741824`.
/// None for syntax this does not understand (the heap flag is then left out).
pub fn memory_bytes(quantity: &str) -> Option<u64> {
    bytes(quantity).and_then(|b| u64::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::memory_bytes;

    #[test]
    fn parses_binary_decimal_and_exponent_forms() {
        assert_eq!(memory_bytes("1Gi"), Some(1 << 30));
        assert_eq!(memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1e9"), Some(1_000_000_000));
        assert_eq!(memory_bytes("1073741824"), Some(1 << 30));
        assert_eq!(memory_bytes("1.5Gi"), Some(3 << 29));
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert_eq!(memory_bytes("lots"), None);
        assert_eq!(memory_bytes("-1Gi"), None);
        assert_eq!(memory_bytes(""), None);
    }
}
