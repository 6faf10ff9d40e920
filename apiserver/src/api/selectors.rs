//! `labelSelector` and `fieldSelector`, as Kubernetes parses them.
//!
//! Labels: comma-separated requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
//! Fields: `path=value`, `path==value`, `path!=value` over `metadata.name`, `metadata.namespace` and the kind's own
//! selectable fields.

use std::collections::BTreeMap;

use serde_json::Value;

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses a selector.
    ///
    /// # Errors
    /// A message naming the part that does not parse.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self(requirements))
    }

    /// Whether labels satisfy every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Whether the labels that `label` looks up satisfy every requirement (no copy of the labels needed).
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        })
    }

    /// True when it has no requirement.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let bad = |why: &str| format!("invalid label selector requirement \"{part}\": {why}");
    let key_ok = |k: &str| agora_schemas::validation::check_qualified_name(k).map_err(|e| bad(&e));
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        key_ok(key)?;
        return Ok(Requirement::NotExists(key.to_owned()));
    }
    for (op, make) in [
        ("!=", Requirement::NotEquals as fn(String, String) -> Requirement),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            key_ok(key)?;
            agora_schemas::validation::check_label_value(value).map_err(|e| bad(&e))?;
            return Ok(make(key.to_owned(), value.to_owned()));
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [key] => {
            key_ok(key)?;
            Ok(Requirement::Exists((*key).to_owned()))
        }
        [key, rest] => {
            key_ok(key)?;
            let rest = rest.trim();
            let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
                (true, list)
            } else if let Some(list) = rest.strip_prefix("in") {
                (false, list)
            } else {
                return Err(bad("expected =, ==, !=, in or notin after the key"));
            };
            let list = list.trim();
            let Some(inner) = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) else {
                return Err(bad("the values of in/notin go in parentheses: key in (a,b)"));
            };
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
            if values.is_empty() {
                return Err(bad("in/notin needs at least one value"));
            }
            for v in &values {
                agora_schemas::validation::check_label_value(v).map_err(|e| bad(&e))?;
            }
            Ok(if negated {
                Requirement::NotIn((*key).to_owned(), values)
            } else {
                Requirement::In((*key).to_owned(), values)
            })
        }
        _ => Err(bad("empty requirement")),
    }
}

/// A parsed field selector; empty matches everything. Each term is (JSON pointer to the field, equal, value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses a selector, accepting only the `allowed` field paths.
    ///
    /// # Errors
    /// A message naming an unknown field or a malformed term.
    pub fn parse(text: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector \"{term}\": expected field=value or field!=value"));
            };
            let field = field.trim();
            if !allowed.contains(&field) {
                return Err(format!("field label not supported: \"{field}\" (supported: {})", allowed.join(", ")));
            }
            terms.push((format!("/{}", field.replace('.', "/")), equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// True when it has no term.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the object's fields satisfy every term. A missing field compares as the empty string.
    #[must_use]
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(pointer, equal, value)| {
            let actual = match object.pointer(pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn label_selectors() {
        let s = LabelSelector::parse("tier in (frontend,backend),!canary, env = prod").unwrap();
        assert!(s.matches(&labels(&[("tier", "frontend"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("tier", "frontend"), ("env", "prod"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("tier", "db"), ("env", "prod")])));
        let s = LabelSelector::parse("a!=b,c notin (x),d,e==f").unwrap();
        assert!(s.matches(&labels(&[("d", ""), ("e", "f")])));
        assert!(!s.matches(&labels(&[("d", ""), ("e", "f"), ("a", "b")])));
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("tier in frontend").unwrap_err().contains("parentheses"));
        assert!(LabelSelector::parse("bad key!=x").unwrap_err().contains("invalid label selector requirement"));
        assert!(LabelSelector::parse("k in ()").unwrap_err().contains("at least one value"));
    }

    #[test]
    fn field_selectors() {
        let allowed = ["metadata.name", "spec.agent", "status.state"];
        let object =
            serde_json::json!({"metadata": {"name": "t1"}, "spec": {"agent": "n1"}, "status": {"state": "Running"}});
        assert!(FieldSelector::parse("spec.agent=n1,status.state!=Failed", &allowed).unwrap().matches(&object));
        assert!(!FieldSelector::parse("metadata.name==t2", &allowed).unwrap().matches(&object));
        assert!(
            FieldSelector::parse("spec.other=x", &allowed)
                .unwrap_err()
                .contains("field label not supported: \"spec.other\"")
        );
        assert!(FieldSelector::parse("spec.agent", &allowed).unwrap_err().contains("expected field=value"));
        let missing = serde_json::json!({"metadata": {"name": "t1"}});
        assert!(FieldSelector::parse("status.state=", &allowed).unwrap().matches(&missing));
    }
}
