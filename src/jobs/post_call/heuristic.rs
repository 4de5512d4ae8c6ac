//! The fallback analysis when no language model is configured, or its
//! replies stayed invalid: plain rules over the transcript, stored with
//! source `heuristic` so nobody mistakes them for the model's judgement.
//!
//! - summary: how many times the caller spoke, their opening words and, on
//!   longer calls, their last words; a call where the caller said nothing
//!   gets [`SILENT_CALL_SUMMARY`];
//! - topics: keyword families ("policy", "coverage" → `insurance`);
//! - action items: a callback or something to send, when asked for;
//! - facts: "my name is …", "I live in …", "my budget is …", buyer or
//!   seller, pre-approval, an e-mail address;
//! - personality: word counts per turn (verbosity), politeness and casual
//!   words (formality), positive and negative words (sentiment), barge-ins
//!   and impatient words (patience), firm and hedging phrases
//!   (decisiveness). No personality when the caller never spoke.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::analysis::{ActionItem, CallAnalysis, Personality};
use super::bio::TemplateField;
use crate::repo::turns::Turn;

/// The summary of a call in which the caller said nothing.
pub const SILENT_CALL_SUMMARY: &str = "The caller hung up before saying anything.";

/// Topic families: a topic and the word stems that suggest it.
const TOPICS: &[(&str, &[&str])] = &[
    (
        "insurance",
        &[
            "insur",
            "policy",
            "policies",
            "coverage",
            "premium",
            "deductible",
        ],
    ),
    ("claims", &["claim", "accident", "damage"]),
    (
        "billing",
        &["bill", "invoice", "payment", "pay", "charge", "refund"],
    ),
    (
        "appointment",
        &["appointment", "schedul", "book", "meeting", "visit"],
    ),
    ("pricing", &["price", "quote", "cost", "rate"]),
    (
        "property",
        &["house", "home", "property", "apartment", "condo", "listing"],
    ),
    (
        "financing",
        &["mortgage", "loan", "financ", "pre-approv", "preapprov"],
    ),
    ("auto", &["car", "auto", "vehicle", "truck"]),
    (
        "legal matter",
        &["lawyer", "attorney", "case", "court", "legal", "lawsuit"],
    ),
    ("cancellation", &["cancel"]),
    (
        "complaint",
        &["complain", "unhappy", "problem", "issue", "wrong"],
    ),
];

const FORMAL: &[&str] = &[
    "please",
    "thank",
    "thanks",
    "sir",
    "madam",
    "ma'am",
    "would",
    "could",
    "kindly",
    "appreciate",
    "regards",
    "certainly",
];
const CASUAL: &[&str] = &[
    "yeah", "yep", "nope", "gonna", "wanna", "hey", "cool", "kinda", "ok", "okay", "dude", "gotta",
    "ya", "nah", "stuff",
];
const POSITIVE: &[&str] = &[
    "thanks",
    "thank",
    "great",
    "good",
    "happy",
    "perfect",
    "wonderful",
    "appreciate",
    "love",
    "excellent",
    "awesome",
    "glad",
    "nice",
];
const NEGATIVE: &[&str] = &[
    "angry",
    "upset",
    "terrible",
    "bad",
    "frustrated",
    "annoyed",
    "problem",
    "unhappy",
    "ridiculous",
    "wrong",
    "worst",
    "disappointed",
    "awful",
    "hate",
];
const IMPATIENT: &[&str] = &[
    "hurry", "quickly", "already", "again", "waiting", "asap", "now",
];
const DECISIVE: &[&str] = &[
    "yes",
    "definitely",
    "sure",
    "absolutely",
    "let's",
    "i'll",
    "decided",
    "deal",
];
const HEDGING: &[&str] = &[
    "maybe", "perhaps", "probably", "guess", "unsure", "think", "might",
];
/// Words after "I live in" that end a place name.
const NOT_PLACES: &[&str] = &[
    "a", "an", "the", "my", "with", "and", "but", "near", "since",
];
/// Words after "my name is" that are not a name.
const NOT_NAMES: &[&str] = &[
    "calling", "looking", "trying", "just", "not", "here", "a", "the",
];

/// Analyses a transcript by rule. `fields` are the tenant's template fields:
/// facts go under their keys where one fits (`city` or `area`, `budget`,
/// `role`, `financing`).
pub fn analyse(turns: &[Turn], fields: &[TemplateField]) -> CallAnalysis {
    let caller: Vec<&str> = turns
        .iter()
        .filter(|t| t.speaker == "caller" && !t.text.trim().is_empty())
        .map(|t| t.text.trim())
        .collect();
    if caller.is_empty() {
        return CallAnalysis {
            summary: SILENT_CALL_SUMMARY.to_string(),
            topics: Vec::new(),
            action_items: Vec::new(),
            facts: BTreeMap::new(),
            display_name: None,
            personality: None,
        };
    }
    let all = caller.join(" ");
    let words = words(&all);
    let topics = topics(&words);
    let facts = facts(&caller, fields);
    CallAnalysis {
        summary: summary(&caller, &topics),
        topics,
        action_items: action_items(&all.to_lowercase()),
        display_name: facts
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string),
        facts,
        personality: Some(personality(turns, &caller, &words)),
    }
}

/// Lowercased words, apostrophes kept ("i'll"), other punctuation dropped.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '-' || c == '@' || c == '.'))
        .map(|w| {
            w.trim_matches(|c: char| c == '.' || c == '\'' || c == '-')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn count(words: &[String], list: &[&str]) -> usize {
    words.iter().filter(|w| list.contains(&w.as_str())).count()
}

/// The first `max` characters of `text`, cut at a word, with an ellipsis
/// when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{}…", cut.trim_end_matches([',', '.', ';', ':']))
}

/// A quotation that ends the sentence it is in.
fn quoted(text: &str) -> String {
    let inner = clip(text, 140);
    let inner = inner.trim_end_matches(['.', '!', '?']);
    format!("\u{201c}{inner}.\u{201d}")
}

fn summary(caller: &[&str], topics: &[String]) -> String {
    let times = match caller.len() {
        1 => "once".to_string(),
        n => format!("{n} times"),
    };
    let mut sentences = vec![format!(
        "The caller spoke {times}, opening with {}",
        quoted(caller[0])
    )];
    if caller.len() > 1 {
        sentences.push(format!(
            "Their last words were {}",
            quoted(caller[caller.len() - 1])
        ));
    }
    if !topics.is_empty() {
        sentences.push(format!("It touched on {}.", topics.join(", ")));
    }
    sentences.join(" ")
}

fn topics(words: &[String]) -> Vec<String> {
    TOPICS
        .iter()
        .filter(|(_, stems)| {
            words
                .iter()
                .any(|w| stems.iter().any(|stem| w.starts_with(stem)))
        })
        .map(|(topic, _)| topic.to_string())
        .collect()
}

fn action_items(lower: &str) -> Vec<ActionItem> {
    let mut items = Vec::new();
    if ["call me back", "call back", "callback", "give me a call"]
        .iter()
        .any(|p| lower.contains(p))
    {
        items.push(ActionItem {
            text: "Call the caller back".to_string(),
            due: None,
        });
    }
    if ["send me", "email me", "e-mail me", "mail me"]
        .iter()
        .any(|p| lower.contains(p))
    {
        items.push(ActionItem {
            text: "Send the caller what they asked for".to_string(),
            due: None,
        });
    }
    items
}

/// Up to `n` words after the first occurrence of `phrase` in `lower`
/// (whose original casing is `text`), stopping at punctuation.
fn words_after(text: &str, lower: &str, phrase: &str, n: usize) -> Option<Vec<String>> {
    let at = lower.find(phrase)? + phrase.len();
    // Lowercasing may change byte lengths outside ASCII; give up then.
    let rest = text.get(at..)?;
    let clause = rest
        .split(['.', ',', '!', '?', ';', '\n'])
        .next()
        .unwrap_or_default();
    let taken: Vec<String> = clause
        .split_whitespace()
        .take(n)
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '$' && c != '\'')
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect();
    (!taken.is_empty()).then_some(taken)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn facts(caller: &[&str], fields: &[TemplateField]) -> BTreeMap<String, Value> {
    let has = |key: &str| fields.iter().any(|f| f.key == key);
    let mut facts = BTreeMap::new();
    for text in caller {
        let lower = text.to_lowercase();
        if !facts.contains_key("name") {
            for phrase in ["my name is ", "name's ", "this is "] {
                let Some(found) = words_after(text, &lower, phrase, 2) else {
                    continue;
                };
                // "This is …" introduces a name only when it is written
                // as one ("this is ridiculous" is not).
                let must_be_capitalised = phrase == "this is ";
                let name: Vec<String> = found
                    .iter()
                    .take_while(|w| {
                        w.chars().all(char::is_alphabetic)
                            && !NOT_NAMES.contains(&w.to_lowercase().as_str())
                            && (!must_be_capitalised
                                || w.chars().next().is_some_and(char::is_uppercase))
                    })
                    .map(|w| capitalise(w))
                    .collect();
                if !name.is_empty() {
                    facts.insert("name".to_string(), json!(name.join(" ")));
                    break;
                }
            }
        }
        for phrase in ["i live in ", "living in ", "located in ", "based in "] {
            if let Some(place) = words_after(text, &lower, phrase, 3) {
                let place: Vec<String> = place
                    .iter()
                    .take_while(|w| {
                        w.chars().all(char::is_alphabetic)
                            && !NOT_PLACES.contains(&w.to_lowercase().as_str())
                    })
                    .map(|w| capitalise(w))
                    .collect();
                let key = if has("city") || !has("area") {
                    "city"
                } else {
                    "area"
                };
                if !place.is_empty() && !facts.contains_key(key) {
                    facts.insert(key.to_string(), json!(place.join(" ")));
                }
            }
        }
        if let Some(amount) = budget(text, &lower) {
            facts.entry("budget".to_string()).or_insert(amount);
        }
        let role = if ["looking to buy", "want to buy", "buying a", "to purchase"]
            .iter()
            .any(|p| lower.contains(p))
        {
            Some("Buyer")
        } else if ["looking to sell", "want to sell", "selling my", "list my"]
            .iter()
            .any(|p| lower.contains(p))
        {
            Some("Seller")
        } else {
            None
        };
        if let (Some(role), true) = (role, has("role")) {
            facts.entry("role".to_string()).or_insert(json!(role));
        }
        if has("financing") && (lower.contains("pre-approved") || lower.contains("preapproved")) {
            facts
                .entry("financing".to_string())
                .or_insert(json!("Pre-approved"));
        }
        if let Some(email) = text
            .split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
            .find(|w| {
                w.split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'))
            })
        {
            facts.entry("email".to_string()).or_insert(json!(email));
        }
    }
    facts
}

/// "my budget is around $500k", "budget of 750,000", "1.2 million": the
/// amount as a number.
fn budget(text: &str, lower: &str) -> Option<Value> {
    let at = lower.find("budget")?;
    let rest = text.get(at..)?;
    let mut tokens = rest.split_whitespace().skip(1).take(6).peekable();
    while let Some(token) = tokens.next() {
        let cleaned: String = token
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '.' || c.is_ascii_alphabetic())
            .collect::<String>()
            .to_lowercase();
        let digits: String = cleaned
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let Ok(number) = digits.trim_end_matches('.').parse::<f64>() else {
            continue;
        };
        let suffix = &cleaned[digits.len()..];
        let next = tokens.peek().map(|t| t.to_lowercase()).unwrap_or_default();
        let scale = match suffix {
            "k" => 1e3,
            "m" | "mm" => 1e6,
            _ if next.starts_with("thousand") => 1e3,
            _ if next.starts_with("million") => 1e6,
            _ => 1.0,
        };
        let amount = (number * scale).round();
        if amount >= 1.0 {
            return Some(json!(amount as i64));
        }
    }
    None
}

fn ratio(score: f32) -> f32 {
    (score * 100.0).round() / 100.0
}

fn personality(turns: &[Turn], caller: &[&str], words: &[String]) -> Personality {
    let average_words = words.len() as f32 / caller.len() as f32;
    let verbosity = (average_words / 30.0).clamp(0.0, 1.0);

    let formal = count(words, FORMAL) as f32;
    let casual = count(words, CASUAL) as f32;
    let formality = (formal + 1.0) / (formal + casual + 2.0);

    let positive = count(words, POSITIVE) as f32;
    let negative = count(words, NEGATIVE) as f32;
    let sentiment = (positive - negative) / (positive + negative + 2.0);

    let agent_turns = turns.iter().filter(|t| t.speaker == "agent").count();
    let barge_ins = turns
        .iter()
        .filter(|t| t.speaker == "agent" && t.interrupted)
        .count();
    let barge_in_share = if agent_turns == 0 {
        0.0
    } else {
        barge_ins as f32 / agent_turns as f32
    };
    let impatient = count(words, IMPATIENT) as f32;
    let patience = (0.8 - 0.5 * barge_in_share - 0.1 * impatient).clamp(0.0, 1.0);

    let lower = caller.join(" ").to_lowercase();
    let firm = count(words, DECISIVE)
        + ["i want", "i need", "go ahead", "sounds good", "do it"]
            .iter()
            .filter(|p| lower.contains(*p))
            .count();
    let hedges = count(words, HEDGING)
        + ["not sure", "don't know", "think about"]
            .iter()
            .filter(|p| lower.contains(*p))
            .count();
    let decisiveness = (firm as f32 + 1.0) / ((firm + hedges) as f32 + 2.0);

    let turns_text = match caller.len() {
        1 => "1 caller turn".to_string(),
        n => format!("{n} caller turns"),
    };
    Personality {
        formality: ratio(formality),
        verbosity: ratio(verbosity),
        sentiment: ratio(sentiment),
        patience: ratio(patience),
        decisiveness: ratio(decisiveness),
        style_notes: format!(
            "Estimated by rule from {turns_text} (about {} words each, {barge_ins} barge-ins).",
            average_words.round()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::analysis::{sentence_count, MAX_SUMMARY_SENTENCES};
    use super::super::bio::template_fields;
    use super::*;

    fn turn(seq: i32, speaker: &str, text: &str, interrupted: bool) -> Turn {
        Turn {
            seq,
            speaker: speaker.into(),
            text: text.into(),
            interrupted,
            start_ms: None,
            end_ms: None,
            timings: json!({}),
        }
    }

    fn real_estate() -> Vec<TemplateField> {
        template_fields(&json!([
            {"key": "name"}, {"key": "role"}, {"key": "budget", "type": "money"},
            {"key": "financing"}, {"key": "area"}
        ]))
    }

    #[test]
    fn a_silent_call_gets_the_fixed_summary_and_nothing_else() {
        let turns = vec![turn(0, "agent", "Hello, how can I help?", false)];
        let a = analyse(&turns, &real_estate());
        assert_eq!(a.summary, SILENT_CALL_SUMMARY);
        assert!(a.topics.is_empty() && a.facts.is_empty() && a.personality.is_none());
        assert!(analyse(&[], &[]).personality.is_none());
    }

    #[test]
    fn facts_topics_and_follow_ups_come_from_the_callers_words() {
        let turns = vec![
            turn(0, "agent", "Thanks for calling, how can I help?", false),
            turn(1, "caller", "Hi, my name is jane doe. I'm looking to buy a house, I live in Irvine.", false),
            turn(2, "agent", "Great, what budget do you have in mind?", true),
            turn(3, "caller", "My budget is around $500k and I'm pre-approved. Please email me at jane@example.com, thanks!", false),
        ];
        let a = analyse(&turns, &real_estate());
        assert_eq!(a.facts["name"], json!("Jane Doe"));
        assert_eq!(a.display_name.as_deref(), Some("Jane Doe"));
        assert_eq!(a.facts["role"], json!("Buyer"));
        assert_eq!(a.facts["area"], json!("Irvine"), "{:?}", a.facts);
        assert_eq!(a.facts["budget"], json!(500_000));
        assert_eq!(a.facts["financing"], json!("Pre-approved"));
        assert_eq!(a.facts["email"], json!("jane@example.com"));
        assert!(a.topics.contains(&"property".to_string()), "{:?}", a.topics);
        assert!(a.topics.contains(&"financing".to_string()));
        assert_eq!(a.action_items.len(), 1);
        let n = sentence_count(&a.summary);
        assert!(
            (2..=MAX_SUMMARY_SENTENCES).contains(&n),
            "{n}: {}",
            a.summary
        );
        assert!(a.summary.contains("spoke 2 times"), "{}", a.summary);
    }

    #[test]
    fn budgets_are_read_in_the_ways_people_say_them() {
        let read = |s: &str| budget(s, &s.to_lowercase());
        assert_eq!(read("budget of 750,000 dollars"), Some(json!(750_000)));
        assert_eq!(read("Budget is 1.2 million"), Some(json!(1_200_000)));
        assert_eq!(read("my budget is 400 thousand"), Some(json!(400_000)));
        assert_eq!(read("no budget yet"), None);
        assert_eq!(read("a small budget"), None);
    }

    #[test]
    fn names_skip_phrases_that_are_not_names() {
        let caller = ["Hi, this is calling about my policy"];
        assert!(!facts(&caller, &[]).contains_key("name"));
        let caller = ["Hello, this is Bob."];
        assert_eq!(facts(&caller, &[])["name"], json!("Bob"));
    }

    #[test]
    fn personality_scores_follow_the_words_and_stay_in_range() {
        let polite = vec![
            turn(0, "agent", "Hello.", false),
            turn(1, "caller", "Good morning. Could you please tell me about coverage? Thank you, I appreciate it, that is wonderful.", false),
        ];
        let curt = vec![
            turn(0, "agent", "Hello.", true),
            turn(1, "caller", "yeah hurry up", false),
            turn(2, "agent", "Sure.", true),
            turn(
                3,
                "caller",
                "this is ridiculous and wrong, maybe I'm not sure",
                false,
            ),
        ];
        let p = analyse(&polite, &[]).personality.expect("scores");
        let c = analyse(&curt, &[]).personality.expect("scores");
        assert!(p.formality > c.formality, "{p:?} {c:?}");
        assert!(p.sentiment > 0.0 && c.sentiment < 0.0, "{p:?} {c:?}");
        assert!(p.patience > c.patience);
        assert!(p.verbosity > c.verbosity);
        assert!(p.decisiveness > c.decisiveness);
        for s in [&p, &c] {
            for x in [s.formality, s.verbosity, s.patience, s.decisiveness] {
                assert!((0.0..=1.0).contains(&x));
            }
            assert!((-1.0..=1.0).contains(&s.sentiment));
        }
    }

    #[test]
    fn long_openings_are_clipped_at_a_word() {
        let long = "word ".repeat(100);
        let a = analyse(&[turn(0, "caller", &long, false)], &[]);
        assert!(a.summary.chars().count() < 250, "{}", a.summary);
        assert!(a.summary.contains('…'));
    }
}
