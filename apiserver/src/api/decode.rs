//! Request bodies to JSON values, bounded: what one request may make the server parse.
//!
//! - Nesting deeper than [`MAX_DEPTH`] is refused while parsing: JSON by serde_json's own limit, YAML by a pass of
//!   saphyr's event parser before serde_yaml_ng sees the text (serde_yaml_ng's time grows with the square of the
//!   depth: `[`×40,000 took 2.3 s; the event pass stops at the first level too deep).
//! - Duplicate keys are found with their paths ([`Decoded::duplicates`]); the caller refuses them or warns, per
//!   `fieldValidation`, as Kubernetes does. The last one wins otherwise.
//! - YAML's `.nan` and `.inf` are refused by path: JSON cannot carry them (serde's conversion silently made them
//!   `null`, which then became the field's default).
//! - Large bodies are parsed on the blocking pool under [`heavy`]'s limit, never on the async workers.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The deepest nesting of objects and arrays a body may have (Kubernetes objects need about a dozen).
pub const MAX_DEPTH: usize = 100;
/// Bodies up to this size are parsed where they arrive; larger ones on the blocking pool.
pub const INLINE_BYTES: usize = 64 * 1024;
/// How many heavy operations (large bodies, JSON patches) run at once; more wait their turn.
const HEAVY_AT_ONCE: usize = 4;
static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HEAVY_AT_ONCE);

/// A decoded body and the duplicate keys it held (paths such as `metadata.name`).
#[derive(Debug)]
pub struct Decoded {
    /// The value, the last of duplicate keys winning.
    pub value: Value,
    /// Each duplicated key's path.
    pub duplicates: Vec<String>,
}

/// Decodes JSON.
///
/// # Errors
/// Not JSON (serde_json's message: what and where), or nested deeper than serde_json's limit (128).
pub fn json(bytes: &[u8]) -> Result<Decoded, String> {
    let duplicates = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value =
        ValueSeed { at: None, duplicates: &duplicates }.deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(Decoded { value, duplicates: duplicates.into_inner() })
}

/// Decodes YAML (one document; JSON is YAML too).
///
/// # Errors
/// Not YAML, nested deeper than [`MAX_DEPTH`], or holding a number JSON cannot (`.nan`, `.inf`).
pub fn yaml(bytes: &[u8]) -> Result<Decoded, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    check_yaml_depth(text)?;
    let duplicates = RefCell::new(Vec::new());
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    let value = ValueSeed { at: None, duplicates: &duplicates }.deserialize(deserializer).map_err(|e| e.to_string())?;
    Ok(Decoded { value, duplicates: duplicates.into_inner() })
}

/// Refuses YAML nested deeper than [`MAX_DEPTH`], in one linear pass of events.
fn check_yaml_depth(text: &str) -> Result<(), String> {
    use saphyr_parser::{Event, Parser};
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            // The scanner's own limit on flow nesting can come first.
            if e.to_string().contains("recursion limit") {
                format!("nested deeper than {MAX_DEPTH} levels ({e})")
            } else {
                e.to_string()
            }
        })?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "nested deeper than {MAX_DEPTH} levels at line {} column {}",
                        span.start.line(),
                        span.start.col() + 1
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Runs `work` on the blocking pool, at most `HEAVY_AT_ONCE` at a time across the server.
///
/// # Errors
/// `work`'s own error, or a message when the pool could not run it.
pub async fn heavy<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let _permit = PERMITS.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(work).await.map_err(|e| format!("the work failed: {e}"))
}

/// Runs `work` where it cannot hold up other requests when it is `heavy` (at most `HEAVY_AT_ONCE` at a time):
/// on a multi-threaded runtime the worker hands its other tasks over first (`block_in_place`); on a single-threaded
/// one (tests) it runs inline. Light work always runs inline.
///
/// # Errors
/// `work`'s own.
pub async fn in_place<T>(heavy: bool, work: impl FnOnce() -> T) -> T {
    if !heavy {
        return work();
    }
    let _permit = PERMITS.acquire().await;
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// One step of a path (a key, or an array index), linked to its parent: a path is only spelled out when it is
/// reported.
struct Step<'a> {
    key: &'a str,
    index: bool,
    parent: Option<&'a Step<'a>>,
}

/// `spec.ports[0].port`: the path of `last` (a key) below `step`.
fn path_of(step: Option<&Step<'_>>, last: &str) -> String {
    let mut steps = vec![(last, false)];
    let mut at = step;
    while let Some(s) = at {
        steps.push((s.key, s.index));
        at = s.parent;
    }
    let mut path = String::new();
    for (key, index) in steps.into_iter().rev() {
        if index {
            path.push('[');
            path.push_str(key);
            path.push(']');
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
    }
    path
}

struct ValueSeed<'a> {
    at: Option<&'a Step<'a>>,
    duplicates: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            let at = self
                .at
                .map_or_else(|| "the body".to_owned(), |s| path_of(Some(s), "").trim_end_matches('.').to_owned());
            E::custom(format!("{at}: {v} is not a number JSON can hold (.nan and .inf are refused)"))
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        let mut index = String::new();
        loop {
            index.clear();
            index.push_str(&items.len().to_string());
            let step = Step { key: &index, index: true, parent: self.at };
            match seq.next_element_seed(ValueSeed { at: Some(&step), duplicates: self.duplicates })? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let step = Step { key: &key, index: false, parent: self.at };
            let value = map.next_value_seed(ValueSeed { at: Some(&step), duplicates: self.duplicates })?;
            if object.contains_key(&key) {
                self.duplicates.borrow_mut().push(path_of(self.at, &key));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_with_their_paths_and_the_last_wins() {
        let decoded = json(br#"{"metadata":{"name":"a","name":"b"},"spec":{"env":{"X":"1"},"env":{}}}"#).unwrap();
        assert_eq!(decoded.duplicates, ["metadata.name", "spec.env"]);
        assert_eq!(decoded.value["metadata"]["name"], "b");
        let decoded = yaml(b"metadata:\n  name: a\n  name: b\nspec:\n  ports: [{port: 1, port: 2}]\n").unwrap();
        assert_eq!(decoded.duplicates, ["metadata.name", "spec.ports[0].port"]);
        assert!(json(br#"{"a":[1,{"b":2}]}"#).unwrap().duplicates.is_empty());
    }

    #[test]
    fn yaml_numbers_json_cannot_hold_are_refused_by_path() {
        for bad in [".nan", ".inf", "-.Inf", ".NaN"] {
            let error = yaml(format!("spec:\n  mem: {bad}\n").as_bytes()).unwrap_err();
            assert!(error.contains("spec.mem") && error.contains("is not a number JSON can hold"), "{bad}: {error}");
        }
        assert_eq!(yaml(b"spec: {mem: 64.5}").unwrap().value["spec"]["mem"], 64.5);
    }

    #[test]
    fn deep_nesting_is_refused_at_once() {
        let depth = |n: usize| format!("a: {}{}", "[".repeat(n), "]".repeat(n));
        assert!(yaml(depth(MAX_DEPTH - 1).as_bytes()).is_ok());
        let started = std::time::Instant::now();
        let error = yaml(depth(1_500_000).as_bytes()).unwrap_err();
        assert!(error.contains("nested deeper than") || error.contains("recursion limit"), "{error}");
        // Ordering rather than timing: the refusal reads little of the 3 MB (serde_yaml_ng alone took minutes).
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        let error = json(depth(1000).trim_start_matches("a: ").as_bytes()).unwrap_err();
        assert!(error.contains("recursion limit"), "{error}");
    }
}
