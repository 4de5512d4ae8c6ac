//! Phone number normalisation to E.164.

/// Normalises `text` to E.164 (`+` then 7–15 digits, no leading zero),
/// accepting common punctuation: spaces, dashes, dots and parentheses.
pub fn normalize_e164(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    let Some(rest) = trimmed.strip_prefix('+') else {
        return Err(format!(
            "`{trimmed}` is not an E.164 number: it must start with +"
        ));
    };
    let mut digits = String::with_capacity(15);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => {
                return Err(format!(
                    "`{trimmed}` is not an E.164 number: unexpected `{c}`"
                ))
            }
        }
    }
    if !(7..=15).contains(&digits.len()) || digits.starts_with('0') {
        return Err(format!(
            "`{trimmed}` is not an E.164 number: expected 7 to 15 digits after +, not starting with 0"
        ));
    }
    Ok(format!("+{digits}"))
}

/// A caller number for logs: country code and last two digits only. Safe
/// on any input (non-ASCII included).
pub fn redact(e164: &str) -> String {
    let chars: Vec<char> = e164.chars().collect();
    if chars.len() <= 5 {
        return "+***".to_string();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_rejects() {
        assert_eq!(
            normalize_e164(" +1 (800) 555-1212 ").as_deref(),
            Ok("+18005551212")
        );
        assert!(normalize_e164("18005551212").is_err());
        assert!(normalize_e164("+0123456789").is_err());
        assert!(normalize_e164("+1800abc").is_err());
        assert!(normalize_e164("+123").is_err());
        assert_eq!(redact("+18005551212"), "+1…12");
        assert_eq!(redact("ñññññññ"), "ññ…ññ");
        assert_eq!(redact("+1"), "+***");
    }
}
