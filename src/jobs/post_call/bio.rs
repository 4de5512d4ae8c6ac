//! The caller's one-line quick bio, rendered from the tenant's industry
//! template (`quick_bio_format`, e.g. `{name} | {city} | Client since
//! {since} | {policies}`) and the caller's profile fields.
//!
//! The format is a list of segments separated by `|`. A segment is kept
//! only when every `{key}` placeholder in it has a value, so a caller whose
//! city is unknown gets `Jane Doe | Client since 2020` rather than
//! `Jane Doe |  | Client since 2020`. Segments are joined with ` | `.

use serde_json::{Map, Value};

/// One profile field of an industry template (`profile_fields`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateField {
    /// The key, as used in `{key}` placeholders, profile fields and facts.
    pub key: String,
    /// What staff see ("Client since").
    pub label: String,
    /// `text`, `year`, `money`, …: how a value is written in the bio.
    pub kind: String,
    /// Never revealed on caller ID alone (caller ID can be spoofed).
    pub sensitive: bool,
}

/// The fields of a template's `profile_fields` array; entries without a
/// key are skipped.
pub fn template_fields(profile_fields: &Value) -> Vec<TemplateField> {
    let Some(entries) = profile_fields.as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let key = entry.get("key")?.as_str()?.trim();
            if key.is_empty() {
                return None;
            }
            let text = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or_default();
            Some(TemplateField {
                key: key.to_string(),
                label: match text("label") {
                    "" => key.to_string(),
                    label => label.to_string(),
                },
                kind: match text("type") {
                    "" => "text".to_string(),
                    kind => kind.to_string(),
                },
                sensitive: entry
                    .get("sensitive")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        })
        .collect()
}

/// Renders `format` with `values` (profile fields by key). `None` when no
/// segment with a placeholder could be filled: a bio of literals alone
/// ("Client since") says nothing.
pub fn render(
    format: &str,
    values: &Map<String, Value>,
    fields: &[TemplateField],
) -> Option<String> {
    let mut kept = Vec::new();
    let mut filled_any = false;
    for segment in format.split('|') {
        let segment = segment.trim();
        if segment.is_empty() {
            continue;
        }
        match fill(segment, values, fields) {
            Some((text, placeholders)) => {
                filled_any |= placeholders > 0;
                kept.push(text);
            }
            None => continue,
        }
    }
    if !filled_any {
        return None;
    }
    Some(kept.join(" | "))
}

/// One segment with its placeholders filled, and how many there were;
/// `None` when one of them has no value (or the braces do not match).
fn fill(
    segment: &str,
    values: &Map<String, Value>,
    fields: &[TemplateField],
) -> Option<(String, usize)> {
    let mut out = String::with_capacity(segment.len());
    let mut rest = segment;
    let mut placeholders = 0;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let key = after[..close].trim();
        let kind = fields
            .iter()
            .find(|f| f.key == key)
            .map_or("text", |f| f.kind.as_str());
        let value = values.get(key).and_then(|v| value_text(v, kind))?;
        out.push_str(&value);
        placeholders += 1;
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let out = out.trim().to_string();
    if out.is_empty() {
        return None;
    }
    Some((out, placeholders))
}

/// How a field value reads in the bio, by the field's type; `None` for
/// empty values and for objects (nothing sensible to print).
pub fn value_text(value: &Value, kind: &str) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => match (kind, n.as_f64()) {
            ("money", Some(amount)) => money(amount),
            (_, Some(x)) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            _ => n.to_string(),
        },
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| value_text(item, kind))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null | Value::Object(_) => String::new(),
    };
    (!text.is_empty()).then_some(text)
}

/// `$500K`, `$1.25M`, `$950`: an amount the way people say budgets.
fn money(amount: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    let abs = amount.abs();
    let sign = if amount < 0.0 { "-" } else { "" };
    if abs >= 1_000_000.0 {
        format!("{sign}${}M", trim(abs / 1_000_000.0))
    } else if abs >= 1_000.0 {
        format!("{sign}${}K", trim(abs / 1_000.0))
    } else {
        format!("{sign}${}", trim(abs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn insurance() -> Vec<TemplateField> {
        template_fields(&json!([
            {"key": "name", "label": "Name", "type": "text", "sensitive": false},
            {"key": "city", "label": "City", "type": "text"},
            {"key": "since", "label": "Client since", "type": "year"},
            {"key": "policies", "label": "Policies", "type": "text", "sensitive": true},
            {"label": "no key"}
        ]))
    }

    fn values(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    const INSURANCE: &str = "{name} | {city} | Client since {since} | {policies}";

    #[test]
    fn template_fields_read_keys_types_and_sensitivity() {
        let fields = insurance();
        assert_eq!(fields.len(), 4);
        assert_eq!(fields[2].kind, "year");
        assert_eq!(fields[1].kind, "text");
        assert!(fields[3].sensitive && !fields[0].sensitive);
        assert!(template_fields(&json!({"not": "an array"})).is_empty());
    }

    #[test]
    fn a_full_profile_fills_every_segment() {
        let v = values(
            json!({"name": "John Smith", "city": "Orange County", "since": 2020,
                              "policies": "2 Auto + 1 Home"}),
        );
        assert_eq!(
            render(INSURANCE, &v, &insurance()).as_deref(),
            Some("John Smith | Orange County | Client since 2020 | 2 Auto + 1 Home")
        );
    }

    #[test]
    fn segments_with_a_missing_or_empty_value_are_dropped() {
        let v = values(json!({"name": "Jane Doe", "city": "  ", "since": 2019}));
        assert_eq!(
            render(INSURANCE, &v, &insurance()).as_deref(),
            Some("Jane Doe | Client since 2019")
        );
        let v = values(json!({"city": "Irvine"}));
        assert_eq!(
            render(INSURANCE, &v, &insurance()).as_deref(),
            Some("Irvine")
        );
    }

    #[test]
    fn nothing_known_renders_nothing() {
        assert_eq!(render(INSURANCE, &Map::new(), &insurance()), None);
        assert_eq!(render("Caller", &Map::new(), &insurance()), None);
        assert_eq!(render("", &Map::new(), &[]), None);
    }

    #[test]
    fn money_lists_and_booleans_read_naturally() {
        let fields = template_fields(&json!([
            {"key": "name"}, {"key": "role"}, {"key": "budget", "type": "money"},
            {"key": "financing"}
        ]));
        let v = values(
            json!({"name": "Jane Doe", "role": "Buyer", "budget": 500000,
                              "financing": "Pre-approved"}),
        );
        assert_eq!(
            render(
                "{name} | {role} | {budget} budget | {financing}",
                &v,
                &fields
            )
            .as_deref(),
            Some("Jane Doe | Buyer | $500K budget | Pre-approved")
        );
        assert_eq!(
            value_text(&json!(1_250_000), "money").as_deref(),
            Some("$1.25M")
        );
        assert_eq!(value_text(&json!(950), "money").as_deref(), Some("$950"));
        assert_eq!(
            value_text(&json!(["Auto", "Home"]), "text").as_deref(),
            Some("Auto, Home")
        );
        assert_eq!(value_text(&json!(true), "text").as_deref(), Some("yes"));
        assert_eq!(value_text(&json!({"a": 1}), "text"), None);
        assert_eq!(value_text(&json!(2.5), "text").as_deref(), Some("2.5"));
    }

    #[test]
    fn unbalanced_braces_drop_only_their_segment() {
        let v = values(json!({"name": "Jane"}));
        assert_eq!(
            render("{name} | {city", &v, &insurance()).as_deref(),
            Some("Jane")
        );
    }
}
