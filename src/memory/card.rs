//! The caller card: everything the agent should know about a caller at call
//! start, read with one SQL statement, and rendered for the LLM's system
//! prompt with the tenant's sensitive fields withheld until the caller's
//! identity is verified (caller ID alone can be spoofed).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// Most summaries a card carries, whatever the caller asks for.
pub const MAX_RECENT_CALLS: i64 = 20;
/// Most open follow-ups a card carries (newest first).
pub const MAX_FOLLOW_UPS: i64 = 20;
/// Most current facts a card carries (by key).
pub const MAX_FACTS: i64 = 100;

/// One caller of one tenant, as the agent sees them at call start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerCard {
    /// The caller's E.164 number.
    pub user_id: String,
    /// The caller's name, when known.
    pub display_name: Option<String>,
    /// Template variables (`{"name": …, "city": …}`), an object.
    pub fields: Value,
    /// The stored one-line bio (may contain sensitive values; see
    /// [`CallerCard::redacted`]).
    pub quick_bio: Option<String>,
    /// Calls recorded so far.
    pub call_count: i32,
    /// The first call.
    pub first_call_at: Option<DateTime<Utc>>,
    /// The latest call.
    pub last_call_at: Option<DateTime<Utc>>,
    /// The newest call summaries, newest first.
    pub recent_calls: Vec<CardSummary>,
    /// Open follow-ups (unresolved), newest first.
    pub follow_ups: Vec<CardFollowUp>,
    /// Current (not superseded) facts, by key.
    pub facts: Vec<CardFact>,
    /// Personality running averages, when any call was analysed.
    pub personality: Option<PersonalityAverages>,
    /// The tenant's industry template: field labels, sensitivity, bio format.
    pub template: CardTemplate,
    /// Keys of sensitive fields and facts left out of this card (empty for
    /// a full card; set by [`CallerCard::redacted`]).
    #[serde(default)]
    pub withheld: Vec<String>,
}

/// One past call's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardSummary {
    /// The call summarised.
    pub call_id: Uuid,
    /// Two to four sentences.
    pub summary: String,
    /// Key topics.
    pub topics: Vec<String>,
    /// Action items (strings or objects, as the post-call job wrote them).
    pub action_items: Value,
    /// When the summary was written.
    pub created_at: DateTime<Utc>,
}

/// An open follow-up (`caller_memories` of kind `follow_up`, unresolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardFollowUp {
    /// The memory's id.
    pub memory_id: Uuid,
    /// What to follow up on.
    pub content: String,
    /// When it was noted.
    pub created_at: DateTime<Utc>,
}

/// A current fact about the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardFact {
    /// The fact's key (`policies`, `budget`, …).
    pub key: String,
    /// Its current value.
    pub value: Value,
    /// When this value was learnt.
    pub created_at: DateTime<Utc>,
}

/// Running personality averages (each 0 to 1; sentiment -1 to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalityAverages {
    /// Calls analysed.
    pub samples: i32,
    /// Formal (1) or casual (0).
    pub formality: f64,
    /// Talkative (1) or terse (0).
    pub verbosity: f64,
    /// Positive (1) to negative (-1).
    pub sentiment: f64,
    /// Patient (1) or hurried (0).
    pub patience: f64,
    /// Decides quickly (1) or hesitates (0).
    pub decisiveness: f64,
}

/// The parts of the tenant's industry template a card needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardTemplate {
    /// Template slug (`insurance`, …).
    pub slug: String,
    /// Template version.
    pub version: i32,
    /// Bio format with `{key}` placeholders, segments separated by ` | `.
    pub quick_bio_format: String,
    /// The profile fields the tenant tracks.
    pub profile_fields: Vec<ProfileField>,
}

/// One profile field of an industry template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileField {
    /// Key in `fields` and facts.
    pub key: String,
    /// Human label.
    pub label: String,
    /// `text`, `year`, `money`, …
    #[serde(rename = "type")]
    pub field_type: String,
    /// Never revealed on caller ID alone.
    #[serde(default)]
    pub sensitive: bool,
}

/// The card's one statement. Every subquery is bounded and index-backed:
/// summaries by `call_summaries_user_idx`, follow-ups by
/// `caller_memories_open_follow_ups_idx`, facts by `caller_facts_current_key`,
/// averages and the profile by their primary keys.
const CARD_SQL: &str = r#"
SELECT json_build_object(
    'user_id', p.user_id,
    'display_name', p.display_name,
    'fields', p.fields,
    'quick_bio', p.quick_bio,
    'call_count', p.call_count,
    'first_call_at', p.first_call_at,
    'last_call_at', p.last_call_at,
    'recent_calls', coalesce((
        SELECT json_agg(json_build_object(
                   'call_id', s.call_id, 'summary', s.summary, 'topics', s.topics,
                   'action_items', s.action_items, 'created_at', s.created_at)
               ORDER BY s.created_at DESC)
        FROM (SELECT call_id, summary, topics, action_items, created_at
              FROM call_summaries
              WHERE customer_id = p.customer_id AND user_id = p.user_id
              ORDER BY created_at DESC LIMIT $3) s), '[]'::json),
    'follow_ups', coalesce((
        SELECT json_agg(json_build_object(
                   'memory_id', m.memory_id, 'content', m.content, 'created_at', m.created_at)
               ORDER BY m.created_at DESC)
        FROM (SELECT memory_id, content, created_at
              FROM caller_memories
              WHERE customer_id = p.customer_id AND user_id = p.user_id
                AND kind = 'follow_up' AND resolved_at IS NULL
              ORDER BY created_at DESC LIMIT $4) m), '[]'::json),
    'facts', coalesce((
        SELECT json_agg(json_build_object(
                   'key', f.key, 'value', f.value, 'created_at', f.created_at)
               ORDER BY f.key)
        FROM (SELECT key, value, created_at
              FROM caller_facts
              WHERE customer_id = p.customer_id AND user_id = p.user_id
                AND superseded_at IS NULL
              ORDER BY key LIMIT $5) f), '[]'::json),
    'personality', (
        SELECT json_build_object(
                   'samples', a.samples, 'formality', a.avg_formality,
                   'verbosity', a.avg_verbosity, 'sentiment', a.avg_sentiment,
                   'patience', a.avg_patience, 'decisiveness', a.avg_decisiveness)
        FROM caller_personality a
        WHERE a.customer_id = p.customer_id AND a.user_id = p.user_id AND a.samples > 0),
    'template', json_build_object(
        'slug', t.slug, 'version', t.version,
        'quick_bio_format', t.quick_bio_format, 'profile_fields', t.profile_fields)
)
FROM caller_profiles p
JOIN customers c ON c.customer_id = p.customer_id
JOIN industry_templates t ON t.slug = c.template_slug AND t.version = c.template_version
WHERE p.customer_id = $1 AND p.user_id = $2
"#;

/// Loads the card of `user_id` for the transaction's tenant, with its
/// `recent` newest call summaries (clamped to 0..=[`MAX_RECENT_CALLS`]).
/// `None` when the tenant has no profile for this caller. One statement,
/// one round trip.
pub async fn load_card(
    tx: &mut TenantTx,
    user_id: &str,
    recent: i64,
) -> Result<Option<CallerCard>, StorageError> {
    let customer_id = tx.customer_id();
    let row: Option<sqlx::types::Json<CallerCard>> = sqlx::query_scalar(CARD_SQL)
        .bind(customer_id)
        .bind(user_id)
        .bind(recent.clamp(0, MAX_RECENT_CALLS))
        .bind(MAX_FOLLOW_UPS)
        .bind(MAX_FACTS)
        .fetch_optional(tx.conn())
        .await?;
    Ok(row.map(|sqlx::types::Json(card)| card))
}

impl CallerCard {
    /// The name to greet the caller by: the display name, else the `name`
    /// profile field; `None` when neither is known.
    pub fn greeting_name(&self) -> Option<&str> {
        let display = self
            .display_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        display.or_else(|| {
            self.fields
                .get("name")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|n| !n.is_empty())
        })
    }

    /// Keys the tenant's template marks sensitive.
    pub fn sensitive_keys(&self) -> Vec<String> {
        self.template
            .profile_fields
            .iter()
            .filter(|f| f.sensitive)
            .map(|f| f.key.clone())
            .collect()
    }

    /// The card without sensitive fields and facts, its quick bio rendered
    /// again from the template without them, and [`CallerCard::withheld`]
    /// naming what was left out. What a caller recognised by caller ID alone
    /// may be told about.
    pub fn redacted(&self) -> CallerCard {
        let hide = self.sensitive_keys();
        if hide.is_empty() {
            return self.clone();
        }
        let mut card = self.clone();
        if let Value::Object(map) = &mut card.fields {
            map.retain(|k, _| !hide.contains(k));
        }
        card.facts.retain(|f| !hide.contains(&f.key));
        let bio = render_quick_bio(&self.template.quick_bio_format, &self.bio_values(), &hide);
        card.quick_bio = (!bio.is_empty()).then_some(bio);
        let mut withheld = self.withheld.clone();
        for key in hide {
            if !withheld.contains(&key) {
                withheld.push(key);
            }
        }
        card.withheld = withheld;
        card
    }

    /// The values the quick bio is rendered from: current facts, overlaid
    /// by the profile's fields.
    fn bio_values(&self) -> Value {
        let mut values = Map::new();
        for fact in &self.facts {
            values.insert(fact.key.clone(), fact.value.clone());
        }
        if let Value::Object(fields) = &self.fields {
            for (k, v) in fields {
                if value_text(v).is_some() {
                    values.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(values)
    }

    fn label_of<'a>(&'a self, key: &'a str) -> &'a str {
        self.template
            .profile_fields
            .iter()
            .find(|f| f.key == key)
            .map(|f| f.label.as_str())
            .unwrap_or(key)
    }

    /// A compact text block for the LLM's system prompt. Unless
    /// `reveal_sensitive` (the caller's identity was verified), fields and
    /// facts the template marks sensitive are left out, the quick bio is
    /// rendered without them, and a note tells the agent to verify the
    /// caller before discussing them.
    pub fn prompt_context(&self, reveal_sensitive: bool) -> String {
        if reveal_sensitive {
            self.render_context()
        } else {
            self.redacted().render_context()
        }
    }

    fn render_context(&self) -> String {
        let mut out = String::new();
        if self.withheld.is_empty() {
            out.push_str("Returning caller (from this business's records).\n");
        } else {
            out.push_str(
                "Returning caller, recognised by caller ID only (which can be spoofed).\n",
            );
        }
        if let Some(name) = self.greeting_name() {
            out.push_str(&format!("Name: {name}\n"));
        }
        let bio = match &self.quick_bio {
            Some(bio) if !bio.trim().is_empty() => bio.trim().to_string(),
            _ => render_quick_bio(
                &self.template.quick_bio_format,
                &self.bio_values(),
                &self.withheld,
            ),
        };
        if !bio.is_empty() {
            out.push_str(&format!("Quick bio: {bio}\n"));
        }
        out.push_str(&format!("Previous calls: {}", self.call_count));
        match (self.first_call_at, self.last_call_at) {
            (Some(first), Some(last)) => out.push_str(&format!(
                " (first {}, last {})",
                first.format("%Y-%m-%d"),
                last.format("%Y-%m-%d")
            )),
            (None, Some(last)) => out.push_str(&format!(" (last {})", last.format("%Y-%m-%d"))),
            _ => {}
        }
        out.push('\n');
        let details = self.field_lines();
        if !details.is_empty() {
            out.push_str(&format!("Profile: {}\n", details.join("; ")));
        }
        let facts: Vec<String> = self
            .facts
            .iter()
            .filter(|f| !self.withheld.contains(&f.key))
            .filter_map(|f| value_text(&f.value).map(|v| format!("{}: {v}", self.label_of(&f.key))))
            .collect();
        if !facts.is_empty() {
            out.push_str(&format!("Known facts: {}\n", facts.join("; ")));
        }
        if !self.follow_ups.is_empty() {
            out.push_str("Open follow-ups:\n");
            for f in &self.follow_ups {
                out.push_str(&format!(
                    "- {} (noted {})\n",
                    one_line(&f.content),
                    f.created_at.format("%Y-%m-%d")
                ));
            }
        }
        if !self.recent_calls.is_empty() {
            out.push_str("Recent calls, newest first:\n");
            for s in &self.recent_calls {
                out.push_str(&format!(
                    "- {}: {}",
                    s.created_at.format("%Y-%m-%d"),
                    one_line(&s.summary)
                ));
                // Topics the summary already names are not repeated.
                let said = s.summary.to_lowercase();
                if !s.topics.is_empty()
                    && !s.topics.iter().all(|t| said.contains(&t.to_lowercase()))
                {
                    out.push_str(&format!(" Topics: {}.", s.topics.join(", ")));
                }
                if let Some(items) = value_text(&s.action_items) {
                    out.push_str(&format!(" Action items: {items}."));
                }
                out.push('\n');
            }
        }
        if let Some(p) = &self.personality {
            out.push_str(&format!(
                "Caller style (average of {} calls; 0 to 1, sentiment -1 to 1): formality {:.2}, \
                 verbosity {:.2}, sentiment {:.2}, patience {:.2}, decisiveness {:.2}\n",
                p.samples, p.formality, p.verbosity, p.sentiment, p.patience, p.decisiveness
            ));
        }
        if !self.withheld.is_empty() {
            let labels: Vec<String> = self
                .withheld
                .iter()
                .map(|k| self.label_of(k).to_lowercase())
                .collect();
            out.push_str(&format!(
                "Some details withheld: verify the caller's identity before discussing {}.\n",
                labels.join(", ")
            ));
        }
        out
    }

    /// `Label: value` for each profile field, template fields first in
    /// template order, then any others by key; withheld keys skipped.
    fn field_lines(&self) -> Vec<String> {
        let Value::Object(fields) = &self.fields else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        let known: Vec<&str> = self
            .template
            .profile_fields
            .iter()
            .map(|f| f.key.as_str())
            .collect();
        for field in &self.template.profile_fields {
            if self.withheld.contains(&field.key) {
                continue;
            }
            if let Some(v) = fields.get(&field.key).and_then(value_text) {
                lines.push(format!("{}: {v}", field.label));
            }
        }
        for (key, value) in fields {
            if known.contains(&key.as_str()) || self.withheld.contains(key) {
                continue;
            }
            if let Some(v) = value_text(value) {
                lines.push(format!("{key}: {v}"));
            }
        }
        lines
    }
}

/// Renders a template's quick bio: `format` is segments separated by
/// `" | "`, each with `{key}` placeholders filled from `fields` (an
/// object). A segment is dropped when any of its keys is in `hide` or has
/// no value, so `"{name} | Client since {since} | {policies}"` with
/// `policies` hidden gives `"Jane Doe | Client since 2020"`. Segments
/// without placeholders are kept as written; an unclosed `{` is literal.
pub fn render_quick_bio(format: &str, fields: &Value, hide: &[String]) -> String {
    let mut kept = Vec::new();
    'segments: for segment in format.split(" | ") {
        let mut rendered = String::new();
        let mut rest = segment;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            rendered.push_str(&rest[..open]);
            let key = rest[open + 1..close].trim();
            if hide.iter().any(|h| h == key) {
                continue 'segments;
            }
            match fields.get(key).and_then(value_text) {
                Some(value) => rendered.push_str(&value),
                None => continue 'segments,
            }
            rest = &rest[close + 1..];
        }
        rendered.push_str(rest);
        let rendered = rendered.trim();
        if !rendered.is_empty() {
            kept.push(rendered.to_string());
        }
    }
    kept.join(" | ")
}

/// A JSON value as prompt text: strings trimmed, numbers and booleans as
/// written, arrays joined with `, `, objects as compact JSON; `None` for
/// null and empty values.
fn value_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => one_line(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => items
            .iter()
            .filter_map(value_text)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(_) => value.to_string(),
    };
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// Text on one line (newlines folded into spaces), for prompt lists.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn insurance_card() -> CallerCard {
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("timestamp");
        CallerCard {
            user_id: "+15551234567".into(),
            display_name: Some("Jane Doe".into()),
            fields: json!({"name": "Jane Doe", "city": "Irvine", "since": 2020,
                           "policies": "2 Auto + 1 Home", "pet": "dog"}),
            quick_bio: Some("Jane Doe | Irvine | Client since 2020 | 2 Auto + 1 Home".into()),
            call_count: 3,
            first_call_at: Some(at("2024-01-02T10:00:00Z")),
            last_call_at: Some(at("2025-03-04T10:00:00Z")),
            recent_calls: vec![CardSummary {
                call_id: Uuid::nil(),
                summary: "Asked to add her son\nto the auto policy.".into(),
                topics: vec!["auto".into(), "family".into()],
                action_items: json!(["send forms"]),
                created_at: at("2025-03-04T10:05:00Z"),
            }],
            follow_ups: vec![CardFollowUp {
                memory_id: Uuid::nil(),
                content: "Check the son was added".into(),
                created_at: at("2025-03-04T10:05:00Z"),
            }],
            facts: vec![
                CardFact {
                    key: "household".into(),
                    value: json!("married, one son (17)"),
                    created_at: at("2025-03-04T10:05:00Z"),
                },
                CardFact {
                    key: "vehicle".into(),
                    value: json!("2019 Civic"),
                    created_at: at("2025-03-04T10:05:00Z"),
                },
            ],
            personality: Some(PersonalityAverages {
                samples: 3,
                formality: 0.7,
                verbosity: 0.3,
                sentiment: 0.4,
                patience: 0.8,
                decisiveness: 0.6,
            }),
            template: CardTemplate {
                slug: "insurance".into(),
                version: 1,
                quick_bio_format: "{name} | {city} | Client since {since} | {policies}".into(),
                profile_fields: serde_json::from_value(json!([
                    {"key":"name","label":"Name","type":"text","sensitive":false},
                    {"key":"city","label":"City","type":"text","sensitive":false},
                    {"key":"since","label":"Client since","type":"year","sensitive":false},
                    {"key":"policies","label":"Policies","type":"text","sensitive":true},
                    {"key":"household","label":"Household","type":"text","sensitive":true}
                ]))
                .expect("fields"),
            },
            withheld: Vec::new(),
        }
    }

    #[test]
    fn quick_bio_drops_hidden_and_empty_segments() {
        let fields = json!({"name": "Jane Doe", "city": "", "since": 2020, "policies": "2 Auto"});
        let format = "{name} | {city} | Client since {since} | {policies}";
        assert_eq!(
            render_quick_bio(format, &fields, &[]),
            "Jane Doe | Client since 2020 | 2 Auto"
        );
        assert_eq!(
            render_quick_bio(format, &fields, &["policies".to_string()]),
            "Jane Doe | Client since 2020"
        );
        assert_eq!(render_quick_bio(format, &json!({}), &[]), "");
        assert_eq!(
            render_quick_bio(
                "{name} | {budget} budget | Buyer",
                &json!({"name": "Jo", "budget": "$500K"}),
                &[]
            ),
            "Jo | $500K budget | Buyer"
        );
        assert_eq!(render_quick_bio("{name | x", &json!({}), &[]), "{name | x");
    }

    #[test]
    fn greeting_name_falls_back_to_the_name_field() {
        let mut card = insurance_card();
        assert_eq!(card.greeting_name(), Some("Jane Doe"));
        card.display_name = Some("  ".into());
        card.fields = json!({"name": "Jane"});
        assert_eq!(card.greeting_name(), Some("Jane"));
        card.fields = json!({});
        assert_eq!(card.greeting_name(), None);
    }

    #[test]
    fn sensitive_values_stay_out_of_the_prompt_until_verified() {
        let card = insurance_card();
        let hidden = card.prompt_context(false);
        for secret in ["2 Auto + 1 Home", "one son (17)"] {
            assert!(!hidden.contains(secret), "{secret} leaked:\n{hidden}");
        }
        assert!(hidden.contains("Quick bio: Jane Doe | Irvine | Client since 2020\n"));
        assert!(hidden.contains("2019 Civic"));
        assert!(hidden.contains("pet: dog"));
        assert!(hidden.contains("Check the son was added"));
        assert!(hidden.contains("Asked to add her son to the auto policy."));
        assert!(hidden.contains(
            "Some details withheld: verify the caller's identity before discussing policies, household."
        ));
        let shown = card.prompt_context(true);
        assert!(shown.contains("2 Auto + 1 Home"));
        assert!(shown.contains("one son (17)"));
        assert!(!shown.contains("withheld"));
        // A redacted card (what the HTTP API returns) stays redacted.
        let redacted = card.redacted();
        assert_eq!(redacted.withheld, vec!["policies", "household"]);
        assert!(!redacted.prompt_context(true).contains("2 Auto"));
        let round: CallerCard =
            serde_json::from_value(serde_json::to_value(&redacted).expect("json")).expect("card");
        assert_eq!(round, redacted);
    }
}
