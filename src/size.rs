//! Byte sizes on the command line: `8MiB`, `2M`, `1GiB`, `1.5G`, `4096`.

pub use idb_harness::human_bytes as human;

/// [`parse_size`], refusing 0 (a limit that nothing could meet).
pub fn parse_nonzero_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(format!("{text:?} is 0 bytes; give at least 1 byte")),
        size => Ok(size),
    }
}

/// Parses a size. Binary units: `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (the
/// short forms are binary too, as in `dd` and `curl`); decimal units: `KB`, `MB`,
/// `GB`, `TB`; `B` or nothing for bytes. Case does not matter; a fraction is allowed
/// with a unit and rounded down to whole bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use B, K or KiB, M or MiB, G or GiB, T or \
                 TiB (powers of 1024), or KB, MB, GB, TB (powers of 1000)"
            ));
        }
    };
    let invalid = || format!("{text:?} is not a size; write it like 8MiB, 2M, 1GiB or 4096");
    if number.is_empty() {
        return Err(invalid());
    }
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("{text:?} is too large"));
    }
    let fraction: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = fraction * multiplier as f64;
    if multiplier == 1 || !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            ("8MiB", 8 << 20),
            ("2M", 2 << 20),
            ("1GiB", 1 << 30),
            ("4096", 4096),
            ("0", 0),
            ("12b", 12),
            ("1.5k", 1536),
            ("3 MB", 3_000_000),
            ("2tib", 2 << 40),
            (" 7 K ", 7 << 10),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes() {
        for text in ["", "MiB", "8 parsecs", "-1", "1.5", "1..2M", "99999999999T"] {
            assert!(parse_size(text).is_err(), "{text}");
        }
    }
}
