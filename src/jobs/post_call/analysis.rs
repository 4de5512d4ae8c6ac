//! What the language model is asked after a call, and the strict check of
//! its answer.
//!
//! The model gets the transcript and the tenant's template fields, and must
//! answer with ONE JSON object:
//!
//! ```json
//! {"summary": "2 to 4 sentences",
//!  "topics": ["auto policy", "billing"],
//!  "action_items": [{"text": "Send the renewal quote", "due": "Friday"}],
//!  "facts": {"name": "Jane Doe", "budget": 500000, "policies": ["Auto", "Home"]},
//!  "display_name": "Jane Doe",
//!  "personality": {"formality": 0.7, "verbosity": 0.4, "sentiment": 0.5,
//!                  "patience": 0.8, "decisiveness": 0.6, "style_notes": "Brief, polite."}}
//! ```
//!
//! [`parse`] accepts a reply wrapped in a Markdown code fence, and nothing
//! else that bends the schema: unknown keys, wrong types, scores out of
//! range, empty strings where text is required, a summary of more than
//! [`MAX_SUMMARY_SENTENCES`] sentences are all rejected with the field at
//! fault, which the handler feeds back to the model when it asks again.
//! `null` fact values mean "not mentioned" and are dropped.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::bio::TemplateField;
use crate::providers::roles::LlmMessage;
use crate::repo::turns::Turn;

/// The fewest sentences a summary may have (2 are asked for).
pub const MIN_SUMMARY_SENTENCES: usize = 1;
/// The most sentences a summary may have (4 are asked for; one more is
/// tolerated).
pub const MAX_SUMMARY_SENTENCES: usize = 5;
/// The longest summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 1200;
/// The most topics kept.
pub const MAX_TOPICS: usize = 10;
/// The most action items kept.
pub const MAX_ACTION_ITEMS: usize = 10;
/// The most facts one call may record.
pub const MAX_FACTS: usize = 30;
/// The longest fact value (or list item), in characters.
pub const MAX_FACT_CHARS: usize = 200;

/// The top-level keys of a reply.
const KEYS: &[&str] = &[
    "summary",
    "topics",
    "action_items",
    "facts",
    "display_name",
    "personality",
];

/// The fixed set of personality scores: every one in [0, 1] but sentiment,
/// which is in [-1, 1].
pub const SCORES: &[(&str, f32, f32)] = &[
    ("formality", 0.0, 1.0),
    ("verbosity", 0.0, 1.0),
    ("sentiment", -1.0, 1.0),
    ("patience", 0.0, 1.0),
    ("decisiveness", 0.0, 1.0),
];

/// What one call taught us, however it was produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallAnalysis {
    /// Two to four sentences.
    pub summary: String,
    /// Key topics, short phrases.
    pub topics: Vec<String>,
    /// Follow-ups promised or requested.
    pub action_items: Vec<ActionItem>,
    /// Facts by key (template keys such as `budget`, or free keys).
    pub facts: BTreeMap<String, Value>,
    /// How the caller introduced themselves, when they did.
    pub display_name: Option<String>,
    /// The caller's manner on this call; `None` when there is nothing to
    /// judge (the caller never spoke).
    pub personality: Option<Personality>,
}

/// A follow-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionItem {
    /// What to do.
    pub text: String,
    /// When, in the caller's words ("Friday", "2026-12-01"), if said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
}

/// Personality scores of one call (see [`SCORES`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Personality {
    /// 0 casual … 1 formal.
    pub formality: f32,
    /// 0 terse … 1 talkative.
    pub verbosity: f32,
    /// -1 negative … 1 positive.
    pub sentiment: f32,
    /// 0 impatient … 1 patient.
    pub patience: f32,
    /// 0 hesitant … 1 decisive.
    pub decisiveness: f32,
    /// A few words on style ("brief, polite, prefers email").
    pub style_notes: String,
}

/// Why a reply was rejected: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidAnalysis {
    /// `summary`, `facts.budget`, `personality.sentiment`, or `reply`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> InvalidAnalysis {
    InvalidAnalysis {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The instructions and the transcript, as chat messages. The transcript
/// is cut to its last `max_chars` characters (the end of a call is where
/// decisions are).
pub fn prompt(fields: &[TemplateField], turns: &[Turn], max_chars: usize) -> Vec<LlmMessage> {
    let keys = if fields.is_empty() {
        "(none)".to_string()
    } else {
        fields
            .iter()
            .map(|f| format!("- {} ({}, {})", f.key, f.label, f.kind))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let system = format!(
        "You analyse one phone call between a caller and a business's AI receptionist \
(the agent). Reply with ONE JSON object and nothing else, with exactly these keys:\n\
\"summary\": 2 to 4 sentences about what the caller wanted and what was agreed;\n\
\"topics\": a list of short topic phrases;\n\
\"action_items\": a list of objects {{\"text\": what to do, \"due\": when (a string) or null}};\n\
\"facts\": an object of facts the caller stated about themselves, using these keys when they apply:\n\
{keys}\n\
and short snake_case keys of your own for anything else worth remembering; values are \
strings, numbers, booleans or lists of strings; leave out what was not said;\n\
\"display_name\": the caller's name as they gave it, or null;\n\
\"personality\": {{\"formality\": 0..1, \"verbosity\": 0..1, \"sentiment\": -1..1, \
\"patience\": 0..1, \"decisiveness\": 0..1, \"style_notes\": a few words}} describing the caller.\n\
Only use what the transcript says. Never invent facts."
    );
    let mut transcript = String::new();
    for turn in turns {
        let who = match turn.speaker.as_str() {
            "caller" => "Caller",
            "agent" => "Agent",
            "dtmf" => "Keypad",
            _ => continue,
        };
        let cut = if turn.interrupted { " [cut off]" } else { "" };
        transcript.push_str(&format!("{who}: {}{cut}\n", turn.text.trim()));
    }
    if transcript.chars().count() > max_chars {
        let skip = transcript.chars().count() - max_chars;
        transcript = format!(
            "[earlier part of the call left out]\n{}",
            transcript.chars().skip(skip).collect::<String>()
        );
    }
    vec![
        LlmMessage::System(system),
        LlmMessage::User(format!("Transcript:\n{transcript}")),
    ]
}

/// What to tell the model after an invalid reply, before asking again.
pub fn correction(error: &InvalidAnalysis) -> String {
    format!(
        "That reply was not valid ({error}). Answer again with only the JSON object \
         described, no other text."
    )
}

/// Parses and validates a reply (see the module docs for the rules).
pub fn parse(reply: &str) -> Result<CallAnalysis, InvalidAnalysis> {
    let body = strip_fences(reply);
    let value: Value = serde_json::from_str(body)
        .map_err(|e| invalid("reply", format!("not one JSON object: {e}")))?;
    let Value::Object(root) = value else {
        return Err(invalid("reply", "not a JSON object"));
    };
    if let Some(unknown) = root.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(unknown.as_str(), "unexpected key"));
    }
    Ok(CallAnalysis {
        summary: summary(root.get("summary"))?,
        topics: topics(root.get("topics"))?,
        action_items: action_items(root.get("action_items"))?,
        facts: facts(root.get("facts"))?,
        display_name: display_name(root.get("display_name"))?,
        personality: Some(personality(root.get("personality"))?),
    })
}

/// The JSON inside a Markdown code fence (```` ```json … ``` ````), or the
/// trimmed reply itself.
pub fn strip_fences(reply: &str) -> &str {
    let trimmed = reply.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    // Drop the info string ("json") up to the end of the first line.
    let rest = match rest.find('\n') {
        Some(newline) => &rest[newline + 1..],
        None => rest.trim_start_matches(|c: char| c.is_ascii_alphabetic()),
    };
    rest.trim_end().trim_end_matches("```").trim()
}

/// The number of sentences in `text`: runs ending in `.`, `!` or `?`
/// followed by a space or the end, plus an unterminated tail.
pub fn sentence_count(text: &str) -> usize {
    let chars: Vec<char> = text.trim().chars().collect();
    let mut count = 0;
    let mut open = false;
    for (i, c) in chars.iter().enumerate() {
        if matches!(c, '.' | '!' | '?') {
            let at_end = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
            if at_end && open {
                count += 1;
                open = false;
            }
        } else if c.is_alphanumeric() {
            open = true;
        }
    }
    count + usize::from(open)
}

fn required_text(
    value: Option<&Value>,
    field: &str,
    max: usize,
) -> Result<String, InvalidAnalysis> {
    match value {
        None => Err(invalid(field, "missing")),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Err(invalid(field, "empty"))
            } else if s.chars().count() > max {
                Err(invalid(field, format!("longer than {max} characters")))
            } else {
                Ok(s.to_string())
            }
        }
        Some(_) => Err(invalid(field, "not a string")),
    }
}

fn summary(value: Option<&Value>) -> Result<String, InvalidAnalysis> {
    let text = required_text(value, "summary", MAX_SUMMARY_CHARS)?;
    let n = sentence_count(&text);
    if !(MIN_SUMMARY_SENTENCES..=MAX_SUMMARY_SENTENCES).contains(&n) {
        return Err(invalid(
            "summary",
            format!("{n} sentences; 2 to 4 are wanted"),
        ));
    }
    Ok(text)
}

fn array<'a>(
    value: Option<&'a Value>,
    field: &str,
    max: usize,
) -> Result<&'a [Value], InvalidAnalysis> {
    match value {
        None => Err(invalid(field, "missing")),
        Some(Value::Array(items)) if items.len() <= max => Ok(items),
        Some(Value::Array(_)) => Err(invalid(field, format!("more than {max} items"))),
        Some(_) => Err(invalid(field, "not a list")),
    }
}

fn topics(value: Option<&Value>) -> Result<Vec<String>, InvalidAnalysis> {
    let mut topics: Vec<String> = Vec::new();
    for (i, item) in array(value, "topics", MAX_TOPICS)?.iter().enumerate() {
        let topic = required_text(Some(item), &format!("topics[{i}]"), 60)?;
        if !topics.iter().any(|t| t.eq_ignore_ascii_case(&topic)) {
            topics.push(topic);
        }
    }
    Ok(topics)
}

fn action_items(value: Option<&Value>) -> Result<Vec<ActionItem>, InvalidAnalysis> {
    let mut items = Vec::new();
    for (i, item) in array(value, "action_items", MAX_ACTION_ITEMS)?
        .iter()
        .enumerate()
    {
        let field = format!("action_items[{i}]");
        let Value::Object(item) = item else {
            return Err(invalid(field, "not an object"));
        };
        if let Some(unknown) = item.keys().find(|k| *k != "text" && *k != "due") {
            return Err(invalid(format!("{field}.{unknown}"), "unexpected key"));
        }
        let text = required_text(item.get("text"), &format!("{field}.text"), 300)?;
        let due = match item.get("due") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(due) => Some(required_text(Some(due), &format!("{field}.due"), 80)?),
        };
        items.push(ActionItem { text, due });
    }
    Ok(items)
}

/// Whether `key` is a fact key: `snake_case`, 1 to 40 characters.
pub fn is_fact_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= 40
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn facts(value: Option<&Value>) -> Result<BTreeMap<String, Value>, InvalidAnalysis> {
    let object: &Map<String, Value> = match value {
        None => return Err(invalid("facts", "missing")),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid("facts", "not an object")),
    };
    if object.len() > MAX_FACTS {
        return Err(invalid("facts", format!("more than {MAX_FACTS} facts")));
    }
    let mut facts = BTreeMap::new();
    for (key, value) in object {
        let field = format!("facts.{key}");
        if !is_fact_key(key) {
            return Err(invalid(field, "keys are snake_case, at most 40 characters"));
        }
        let value = match value {
            Value::Null => continue,
            Value::String(_) => Value::String(required_text(Some(value), &field, MAX_FACT_CHARS)?),
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => value.clone(),
            Value::Number(_) => return Err(invalid(field, "not a finite number")),
            Value::Bool(_) => value.clone(),
            Value::Array(items) => {
                if items.len() > 10 {
                    return Err(invalid(field, "more than 10 items"));
                }
                let mut list = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    list.push(Value::String(required_text(
                        Some(item),
                        &format!("{field}[{i}]"),
                        MAX_FACT_CHARS,
                    )?));
                }
                if list.is_empty() {
                    continue;
                }
                Value::Array(list)
            }
            Value::Object(_) => {
                return Err(invalid(field, "objects are not allowed as fact values"))
            }
        };
        facts.insert(key.clone(), value);
    }
    Ok(facts)
}

fn display_name(value: Option<&Value>) -> Result<Option<String>, InvalidAnalysis> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(name) => required_text(Some(name), "display_name", 100).map(Some),
    }
}

fn personality(value: Option<&Value>) -> Result<Personality, InvalidAnalysis> {
    let object = match value {
        None => return Err(invalid("personality", "missing")),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid("personality", "not an object")),
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| *k != "style_notes" && !SCORES.iter().any(|(name, _, _)| name == k))
    {
        return Err(invalid(format!("personality.{unknown}"), "unexpected key"));
    }
    let mut scores = [0f32; 5];
    for (slot, (name, low, high)) in scores.iter_mut().zip(SCORES) {
        let field = format!("personality.{name}");
        let score = match object.get(*name) {
            None => return Err(invalid(field, "missing")),
            Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()),
            Some(_) => None,
        }
        .ok_or_else(|| invalid(field.clone(), "not a number"))?;
        if score < f64::from(*low) || score > f64::from(*high) {
            return Err(invalid(
                field,
                format!("{score} is outside [{low}, {high}]"),
            ));
        }
        *slot = score as f32;
    }
    let style_notes = match object.get("style_notes") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.trim().is_empty() => String::new(),
        Some(notes) => required_text(Some(notes), "personality.style_notes", 300)?,
    };
    let [formality, verbosity, sentiment, patience, decisiveness] = scores;
    Ok(Personality {
        formality,
        verbosity,
        sentiment,
        patience,
        decisiveness,
        style_notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({
            "summary": "Jane called about adding her son to the auto policy. The agent said a quote would follow by email.",
            "topics": ["auto policy", "Auto Policy", "new driver"],
            "action_items": [{"text": "Email Jane the quote", "due": "Friday"}, {"text": "Call back", "due": null}],
            "facts": {"name": "Jane Doe", "budget": 500000, "policies": ["Auto", "Home"],
                      "pre_approved": true, "city": null},
            "display_name": "Jane Doe",
            "personality": {"formality": 0.7, "verbosity": 0.4, "sentiment": -0.2,
                            "patience": 1, "decisiveness": 0, "style_notes": "Brief."}
        })
    }

    fn with(path: &[&str], value: Value) -> String {
        let mut v = valid();
        let mut at = &mut v;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        let last = path[path.len() - 1];
        match value {
            Value::Null if last.starts_with('-') => {
                if let Some(o) = at.as_object_mut() {
                    o.remove(&last[1..]);
                }
            }
            value => at[last] = value,
        }
        v.to_string()
    }

    fn field_of(reply: &str) -> String {
        parse(reply).expect_err("invalid").field
    }

    #[test]
    fn a_valid_reply_parses_with_nulls_dropped_and_topics_deduplicated() {
        let a = parse(&valid().to_string()).expect("valid");
        assert_eq!(a.topics, vec!["auto policy", "new driver"]);
        assert_eq!(a.action_items[0].due.as_deref(), Some("Friday"));
        assert_eq!(a.action_items[1].due, None);
        assert_eq!(a.facts.len(), 4, "the null city is dropped: {:?}", a.facts);
        assert_eq!(a.facts["budget"], json!(500000));
        assert_eq!(a.display_name.as_deref(), Some("Jane Doe"));
        let p = a.personality.expect("scores");
        assert_eq!((p.sentiment, p.patience, p.decisiveness), (-0.2, 1.0, 0.0));
    }

    #[test]
    fn code_fences_and_surrounding_space_are_stripped() {
        let fenced = format!("```json\n{}\n```\n", valid());
        assert!(parse(&fenced).is_ok());
        let bare_fence = format!("```\n{}\n```", valid());
        assert!(parse(&bare_fence).is_ok());
        assert_eq!(strip_fences("  {\"a\":1} "), "{\"a\":1}");
        assert_eq!(strip_fences("```json{\"a\":1}```"), "{\"a\":1}");
    }

    #[test]
    fn prose_truncation_and_non_objects_are_rejected() {
        assert_eq!(field_of("Sure! Here is the JSON: {}"), "reply");
        let full = valid().to_string();
        assert_eq!(field_of(&full[..full.len() / 2]), "reply");
        assert_eq!(field_of("[1, 2]"), "reply");
        assert_eq!(field_of(""), "reply");
    }

    #[test]
    fn every_field_is_checked() {
        let cases: Vec<(String, &str)> = vec![
            (with(&["extra"], json!(1)), "extra"),
            (with(&["-summary"], Value::Null), "summary"),
            (with(&["summary"], json!("  ")), "summary"),
            (with(&["summary"], json!(42)), "summary"),
            (
                with(&["summary"], json!("One. Two. Three. Four. Five. Six.")),
                "summary",
            ),
            (with(&["topics"], json!("billing")), "topics"),
            (with(&["topics"], json!([1])), "topics[0]"),
            (
                with(&["action_items"], json!(["call back"])),
                "action_items[0]",
            ),
            (
                with(&["action_items"], json!([{"text": "x", "owner": "me"}])),
                "action_items[0].owner",
            ),
            (
                with(&["action_items"], json!([{"due": "Friday"}])),
                "action_items[0].text",
            ),
            (with(&["facts"], json!([])), "facts"),
            (with(&["facts"], json!({"Budget": 1})), "facts.Budget"),
            (with(&["facts"], json!({"home": {"beds": 3}})), "facts.home"),
            (with(&["facts"], json!({"kids": [1, 2]})), "facts.kids[0]"),
            (with(&["display_name"], json!(["Jane"])), "display_name"),
            (with(&["-personality"], Value::Null), "personality"),
            (
                with(&["personality", "formality"], json!(1.5)),
                "personality.formality",
            ),
            (
                with(&["personality", "sentiment"], json!(-1.01)),
                "personality.sentiment",
            ),
            (
                with(&["personality", "patience"], json!("high")),
                "personality.patience",
            ),
            (
                with(&["personality", "-verbosity"], Value::Null),
                "personality.verbosity",
            ),
            (
                with(&["personality", "humour"], json!(0.5)),
                "personality.humour",
            ),
            (
                with(&["personality", "style_notes"], json!(3)),
                "personality.style_notes",
            ),
        ];
        for (reply, field) in cases {
            assert_eq!(field_of(&reply), field, "{reply}");
        }
    }

    #[test]
    fn sentences_are_counted_loosely() {
        assert_eq!(sentence_count("One. Two! Three?"), 3);
        assert_eq!(sentence_count("Paid $3.50 for it. Then left"), 2);
        assert_eq!(sentence_count("Wait... what?"), 2);
        assert_eq!(sentence_count(""), 0);
        assert_eq!(sentence_count("No terminator"), 1);
    }

    #[test]
    fn fact_keys_are_snake_case() {
        assert!(is_fact_key("budget") && is_fact_key("pre_approved2"));
        assert!(!is_fact_key("Budget") && !is_fact_key("_x") && !is_fact_key("a-b"));
        assert!(!is_fact_key(&"a".repeat(41)) && !is_fact_key(""));
    }

    #[test]
    fn the_prompt_names_the_template_keys_and_the_transcript() {
        let fields = super::super::bio::template_fields(
            &json!([{"key": "budget", "label": "Budget", "type": "money"}]),
        );
        let turns = vec![
            Turn {
                seq: 0,
                speaker: "agent".into(),
                text: "Hello!".into(),
                interrupted: true,
                start_ms: None,
                end_ms: None,
                timings: json!({}),
            },
            Turn {
                seq: 1,
                speaker: "caller".into(),
                text: "My budget is 500k".into(),
                interrupted: false,
                start_ms: None,
                end_ms: None,
                timings: json!({}),
            },
            Turn {
                seq: 2,
                speaker: "system".into(),
                text: "internal".into(),
                interrupted: false,
                start_ms: None,
                end_ms: None,
                timings: json!({}),
            },
        ];
        let messages = prompt(&fields, &turns, 10_000);
        let [LlmMessage::System(system), LlmMessage::User(user)] = messages.as_slice() else {
            panic!("system then user: {messages:?}");
        };
        assert!(system.contains("- budget (Budget, money)"));
        assert!(user.contains("Agent: Hello! [cut off]\nCaller: My budget is 500k\n"));
        assert!(!user.contains("internal"));
        let short = prompt(&fields, &turns, 10);
        let [_, LlmMessage::User(user)] = short.as_slice() else {
            panic!()
        };
        assert!(
            user.contains("[earlier part of the call left out]") && user.ends_with("is 500k\n")
        );
    }
}
