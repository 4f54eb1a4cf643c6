//! `--timeout` values as kubectl spells them: `90`, `90s`, `5m`, `1h`, `1m30s`.

use std::time::Duration;

use super::PluginError;

pub fn parse(text: &str) -> Result<Duration, PluginError> {
    let invalid = || PluginError::Usage(format!("invalid duration {text:?}: use e.g. 90s, 5m, 1h or 1m30s"));
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let (mut total, mut number) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(invalid()),
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        total = value.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(invalid)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubectl_spellings() {
        assert_eq!(parse("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(parse("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s").ok(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for bad in ["", "s", "5x", "1.5m", "m5", "5m3", "-1s"] {
            assert!(matches!(parse(bad), Err(PluginError::Usage(_))), "{bad:?} was accepted");
        }
    }
}
