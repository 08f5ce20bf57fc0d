//! Times for people: a UTC date and minute, and an age ("3 h").

use std::time::Duration;

pub use idb_harness::utc_minute;

/// An age in its largest whole unit: `40 s`, `12 min`, `5 h`, `3 days`.
pub fn age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h", secs / 3600),
        _ => match secs / 86_400 {
            1 => "1 day".to_owned(),
            days => format!("{days} days"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let cases = [
            (0, "0 s"),
            (59, "59 s"),
            (60, "1 min"),
            (3599, "59 min"),
            (7200, "2 h"),
            (86_400, "1 day"),
            (3 * 86_400 + 5, "3 days"),
        ];
        for (secs, text) in cases {
            assert_eq!(age(Duration::from_secs(secs)), text);
        }
    }
}
