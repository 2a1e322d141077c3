//! Just enough of Kubernetes' quantity syntax to size the V8 heap from a memory limit.

/// Bytes in a memory quantity such as `1Gi`, `512Mi`, `1G`, `1e9` or `1073741824`.
/// None for syntax this does not understand (the heap flag is then left out).
pub fn memory_bytes(quantity: &str) -> Option<u64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let quantity = quantity.trim();
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| quantity.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((quantity, 1.0));
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((value * factor) as u64)
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
