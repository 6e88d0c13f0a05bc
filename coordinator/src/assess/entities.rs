//! Entity detection for single-table designs: the profile's groups of items by the patterns of
//! their key values (`USER#<n>` / `PROFILE`, `USER#<n>` / `ORDER#<n>`) become entities, each named
//! from its key (`users`, `orders`), with its count and the attributes it carries; an attribute
//! whose string values follow another entity's partition-key pattern (a `user_pk` holding
//! `USER#…`) is a foreign-key candidate.

use std::collections::BTreeMap;

use serde::Serialize;

use super::profile::{Group, Profile};

/// Share of an attribute's string values that must follow a key pattern for it to be a
/// foreign-key candidate.
const REFERENCE_SHARE: f64 = 0.9;

/// One entity of a single-table design.
#[derive(Clone, Debug, Serialize)]
pub struct Entity {
    /// A name drawn from its key patterns (`users`, `orders`).
    pub name: String,
    /// The pattern of each key attribute's values, in key order.
    pub key_patterns: Vec<String>,
    /// Items.
    pub items: u64,
    /// Share of the export's items.
    pub share: f64,
    /// Its attributes (key attributes aside) with the share of its items holding each.
    pub attributes: Vec<(String, f64)>,
    /// One item's key values.
    pub example: Vec<String>,
}

/// An attribute that holds another entity's keys.
#[derive(Clone, Debug, Serialize)]
pub struct ForeignKey {
    /// The attribute.
    pub attribute: String,
    /// The entities whose items carry it.
    pub in_entities: Vec<String>,
    /// The entity whose partition key its values follow.
    pub references: String,
    /// The pattern.
    pub pattern: String,
    /// Share of its string values following it.
    pub share: f64,
}

/// The leading word of a pattern, lower-cased (`USER#<n>` → `user`), if it has one.
fn word_of(pattern: &str) -> Option<String> {
    let word: String = pattern
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty() && !word.starts_with(|c: char| c.is_ascii_digit()))
        .then(|| word.to_ascii_lowercase())
}

/// Whether a pattern has a variable part (`<n>`, `<id>`).
fn varies(pattern: &str) -> bool {
    pattern.contains("<n>") || pattern.contains("<id>")
}

fn plural(word: &str) -> String {
    if word.ends_with('s') {
        word.to_string()
    } else if let Some(stem) = word.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{word}s")
    }
}

/// The entity's name: a varying sort key names the entity (`ORDER#<n>` → `orders`); a constant
/// one (`PROFILE`, `METADATA`) means one item per partition, named by the partition key
/// (`USER#<n>` → `users`).
fn name_of(patterns: &[String]) -> String {
    let word = match patterns {
        [pk, sk, ..] if varies(sk) => word_of(sk).or_else(|| word_of(pk)),
        [pk, ..] => word_of(pk),
        [] => None,
    };
    plural(&word.unwrap_or_else(|| "items".into()))
}

/// The entities of `profile`, largest first, with unique names.
pub fn entities(profile: &Profile) -> Vec<Entity> {
    let mut groups: Vec<(&Vec<String>, &Group)> = profile.groups.iter().collect();
    groups.sort_by(|a, b| b.1.items.cmp(&a.1.items).then_with(|| a.0.cmp(b.0)));
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    groups
        .into_iter()
        .map(|(patterns, group)| {
            let mut name = name_of(patterns);
            let seen = taken.entry(name.clone()).or_default();
            *seen += 1;
            if *seen > 1 {
                name = format!("{name}_{seen}");
            }
            let mut attributes: Vec<(String, f64)> = group
                .attributes
                .iter()
                .map(|(a, shape)| (a.clone(), shape.items as f64 / group.items.max(1) as f64))
                .collect();
            attributes.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            Entity {
                name,
                key_patterns: patterns.clone(),
                items: group.items,
                share: group.items as f64 / profile.items.max(1) as f64,
                attributes,
                example: group.example.clone(),
            }
        })
        .collect()
}

/// Attributes whose string values follow an entity's partition-key pattern. The referenced
/// entity is the one that pattern keys with a constant sort key (one item per partition: the
/// `users` of `USER#<n>` / `PROFILE`), else the largest with that pattern.
pub fn foreign_keys(profile: &Profile, entities: &[Entity], keys: &[String]) -> Vec<ForeignKey> {
    let mut out = Vec::new();
    for (name, attribute) in &profile.attributes {
        if keys.contains(name) || attribute.strings == 0 {
            continue;
        }
        let Some((pattern, count)) = attribute.patterns.iter().max_by_key(|(_, n)| **n) else {
            continue;
        };
        let share = *count as f64 / attribute.strings as f64;
        if share < REFERENCE_SHARE || !varies(pattern) {
            continue;
        }
        let holders: Vec<&Entity> = entities
            .iter()
            .filter(|e| e.key_patterns.first() == Some(pattern))
            .collect();
        let Some(referenced) = holders
            .iter()
            .find(|e| e.key_patterns.get(1).is_none_or(|sk| !varies(sk)))
            .or(holders.first())
        else {
            continue;
        };
        let in_entities = entities
            .iter()
            .filter(|e| e.attributes.iter().any(|(a, _)| a == name))
            .map(|e| e.name.clone())
            .collect();
        out.push(ForeignKey {
            attribute: name.clone(),
            in_entities,
            references: referenced.name.clone(),
            pattern: pattern.clone(),
            share,
        });
    }
    out.sort_by(|a, b| a.attribute.cmp(&b.attribute));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_varying_part_of_the_key() {
        let n = |pk: &str, sk: &str| name_of(&[pk.to_string(), sk.to_string()]);
        assert_eq!(n("USER#<n>", "PROFILE"), "users");
        assert_eq!(n("USER#<n>", "ORDER#<n>"), "orders");
        assert_eq!(n("USER#<n>", "SESSION#<id>"), "sessions");
        assert_eq!(n("PRODUCT#<n>", "METADATA"), "products");
        assert_eq!(n("PRODUCT#<n>", "REVIEW#<n>"), "reviews");
        assert_eq!(n("CATEGORY#<n>", "CATEGORY"), "categories");
        assert_eq!(n("<n>", "<n>"), "items");
        assert_eq!(name_of(&["ACCOUNT#<n>".to_string()]), "accounts");
    }

    #[test]
    fn a_reference_to_a_partition_key_is_a_foreign_key_candidate() {
        let lines = [
            r#"{"Item":{"PK":{"S":"USER#1"},"SK":{"S":"PROFILE"},"name":{"S":"a"}}}"#,
            r#"{"Item":{"PK":{"S":"USER#2"},"SK":{"S":"PROFILE"},"name":{"S":"b"}}}"#,
            r#"{"Item":{"PK":{"S":"USER#1"},"SK":{"S":"ORDER#1"},"total":{"N":"1"}}}"#,
            r#"{"Item":{"PK":{"S":"PRODUCT#9"},"SK":{"S":"REVIEW#1"},"user_pk":{"S":"USER#2"}}}"#,
            r#"{"Item":{"PK":{"S":"PRODUCT#9"},"SK":{"S":"REVIEW#2"},"user_pk":{"S":"USER#1"}}}"#,
        ];
        let keys = vec!["PK".to_string(), "SK".to_string()];
        let mut profile = Profile::default();
        for (i, line) in lines.iter().enumerate() {
            let origin = super::super::profile::Origin {
                file: 0,
                line: i as u64 + 1,
            };
            profile.add_line(line.as_bytes(), origin, String::new, &keys);
        }
        let found = entities(&profile);
        let names: Vec<(&str, u64)> = found.iter().map(|e| (e.name.as_str(), e.items)).collect();
        assert_eq!(names, vec![("reviews", 2), ("users", 2), ("orders", 1)]);
        let fks = foreign_keys(&profile, &found, &keys);
        assert_eq!(fks.len(), 1, "{fks:?}");
        assert_eq!(
            (fks[0].attribute.as_str(), fks[0].references.as_str()),
            ("user_pk", "users")
        );
        assert_eq!(fks[0].in_entities, vec!["reviews".to_string()]);
    }
}
