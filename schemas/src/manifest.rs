//! Manifests: the YAML (or JSON) files users write, decoded into typed objects with errors a person can act on.
//!
//! Every error names the file, the line and column, and the field path: a syntax error where the parser stopped, an
//! unknown field (with a suggestion when it looks like a typo), a wrong type (with the type expected), a missing
//! `kind` or `apiVersion`, and every validation rule an object breaks. Unknown fields are always rejected.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser};
use serde::Deserialize;

use crate::rbac::RBAC_API_VERSION;
use crate::{API_VERSION, AnyObject, KINDS};

/// One object of a manifest file.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// Position in the file (0-based), counting only non-empty documents' separators.
    pub index: usize,
    /// The line the document's content starts on (1-based).
    pub line: usize,
    /// The object.
    pub object: AnyObject,
}

/// A problem with a manifest: where it is and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file (or `-` for standard input).
    pub origin: String,
    /// The document in the file (0-based).
    pub document: usize,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// The column (1-based), when known.
    pub column: Option<usize>,
    /// The field's JSON path, when the problem is with one field.
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}: ", self.origin)?,
            (Some(line), None) => write!(f, "{}:{line}: ", self.origin)?,
            _ => write!(f, "{} (document {}): ", self.origin, self.document + 1)?,
        }
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Decodes every object of a manifest strictly, without defaulting or validating them.
///
/// `origin` names the source in errors (a file path, or `-`). JSON is read as JSON when `origin` ends in `.json` or
/// the text starts with `{`; everything else as a YAML stream (documents separated by `---`; empty ones skipped).
///
/// # Errors
/// The first document that cannot be decoded, with its location.
pub fn parse(source: &str, origin: &str) -> Result<Vec<Document>, ManifestError> {
    let (documents, mut errors) = parse_each(source, origin);
    if errors.is_empty() { Ok(documents) } else { Err(errors.swap_remove(0)) }
}

/// [`parse`], going on past a document that cannot be decoded: the documents that could be, and an error for each
/// that could not (a syntax error of the stream ends it: what follows cannot be told apart).
fn parse_each(source: &str, origin: &str) -> (Vec<Document>, Vec<ManifestError>) {
    let lines = LineMaps::build(source);
    if origin.ends_with(".json") || source.trim_start().starts_with('{') {
        return match parse_json(source, origin, &lines) {
            Ok(documents) => (documents, Vec::new()),
            Err(e) => (Vec::new(), vec![e]),
        };
    }
    // Pass 1: each document as a plain value, for its kind (and syntax errors, with the parser's location).
    let mut headers = Vec::new();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(source).enumerate() {
        let value = match serde_yaml_ng::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                errors.push(yaml_error(origin, index, None, &e));
                return (Vec::new(), errors);
            }
        };
        let value: serde_json::Value = match value {
            serde_yaml_ng::Value::Null => serde_json::Value::Null,
            other => match serde_json::to_value(other) {
                Ok(value) => value,
                Err(e) => {
                    errors.push(ManifestError {
                        origin: origin.to_owned(),
                        document: index,
                        line: lines.start(index),
                        column: None,
                        path: None,
                        message: format!("cannot be read as JSON-compatible data: {e}"),
                    });
                    serde_json::Value::Null
                }
            },
        };
        headers.push(value);
    }
    // Pass 2: each document decoded as its kind, so errors carry the field path and the location.
    let mut documents = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(source).enumerate() {
        let Some(header) = headers.get(index) else {
            break;
        };
        if header.is_null() {
            continue;
        }
        let (api_version, kind) = match check_header(header, origin, index, &lines) {
            Ok(header) => header,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        match AnyObject::decode(api_version, kind, document) {
            Some(Ok(object)) => documents.push(Document { index, line: lines.start(index).unwrap_or(1), object }),
            Some(Err(e)) => errors.push(yaml_error(origin, index, Some(display_path(e.path())), e.inner())),
            None => unreachable!("check_header accepts only registered kinds"),
        }
    }
    (documents, errors)
}

fn parse_json(source: &str, origin: &str, lines: &LineMaps) -> Result<Vec<Document>, ManifestError> {
    let json_error = |path: Option<String>, e: &serde_json::Error| ManifestError {
        origin: origin.to_owned(),
        document: 0,
        line: (e.line() > 0).then_some(e.line()),
        column: (e.column() > 0).then_some(e.column()),
        path,
        message: humanize_serde_message(&e.to_string()),
    };
    let header: serde_json::Value = serde_json::from_str(source).map_err(|e| json_error(None, &e))?;
    let (api_version, kind) = check_header(&header, origin, 0, lines)?;
    let mut deserializer = serde_json::Deserializer::from_str(source);
    let object = match AnyObject::decode(api_version, kind, &mut deserializer) {
        Some(Ok(object)) => object,
        Some(Err(e)) => return Err(json_error(Some(display_path(e.path())), e.inner())),
        None => unreachable!("check_header accepts only registered kinds"),
    };
    Ok(vec![Document { index: 0, line: lines.start(0).unwrap_or(1), object }])
}

/// Checks a document is a mapping with an `apiVersion` Agora serves (`agora/v1`, or Kubernetes' RBAC) and a kind of
/// it; returns both.
fn check_header<'a>(
    value: &'a serde_json::Value,
    origin: &str,
    index: usize,
    lines: &LineMaps,
) -> Result<(&'a str, &'a str), ManifestError> {
    let error = |path: Option<&str>, message: String| {
        let (line, column) = match path {
            Some(p) => lines.locate(index, p),
            None => (lines.start(index), None),
        };
        ManifestError {
            origin: origin.to_owned(),
            document: index,
            line,
            column,
            path: path.map(str::to_owned),
            message,
        }
    };
    let Some(map) = value.as_object() else {
        return Err(error(
            None,
            format!("expected an object (a mapping with apiVersion, kind, metadata, spec), got {}", describe(value)),
        ));
    };
    let example = "every object needs both, e.g. \"apiVersion: agora/v1\" and \"kind: App\"";
    let kind = match map.get("kind") {
        None => {
            return Err(error(None, format!("the document has no \"kind\": {example}")));
        }
        Some(serde_json::Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(error(Some("kind"), format!("expected a string, got {}", describe(other))));
        }
    };
    let api_version = match map.get("apiVersion") {
        None => {
            return Err(error(None, format!("the document has no \"apiVersion\": {example}")));
        }
        Some(serde_json::Value::String(v)) if KINDS.iter().any(|k| k.api_version == v) => v.as_str(),
        Some(serde_json::Value::String(v)) => {
            return Err(error(
                Some("apiVersion"),
                format!("\"{v}\" is not served by Agora: use \"{API_VERSION}\" ({RBAC_API_VERSION} for RBAC's kinds)"),
            ));
        }
        Some(other) => {
            return Err(error(Some("apiVersion"), format!("expected a string, got {}", describe(other))));
        }
    };
    if KINDS.iter().any(|k| k.api_version == api_version && k.kind == kind) {
        Ok((api_version, kind))
    } else {
        let known: Vec<&str> = KINDS.iter().filter(|k| k.api_version == api_version).map(|k| k.kind).collect();
        let hint = suggest(kind, &known).map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default();
        Err(error(
            Some("kind"),
            format!("unknown kind \"{kind}\"{hint}; Agora serves {} in {api_version}", known.join(", ")),
        ))
    }
}

/// Decodes, defaults and validates every object of a manifest, as the apiserver would admit them.
///
/// # Errors
/// Every problem found: each document that cannot be decoded, and every validation violation of every decoded one,
/// each located by its field path (a YAML syntax error ends the stream there).
pub fn parse_and_validate(source: &str, origin: &str) -> Result<Vec<Document>, Vec<ManifestError>> {
    let (mut documents, mut errors) = parse_each(source, origin);
    let lines = LineMaps::build(source);
    for document in &mut documents {
        if let Err(violations) = document.object.validate() {
            for violation in violations.errors() {
                let (line, column) = lines.locate(document.index, &violation.path);
                errors.push(ManifestError {
                    origin: origin.to_owned(),
                    document: document.index,
                    line: line.or(Some(document.line)),
                    column,
                    path: Some(violation.path.clone()),
                    message: violation.message.clone(),
                });
            }
        }
        document.object.apply_defaults();
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        errors.sort_by_key(|e| (e.document, e.line, e.column));
        Err(errors)
    }
}

fn yaml_error(origin: &str, document: usize, path: Option<String>, e: &serde_yaml_ng::Error) -> ManifestError {
    let location = e.location();
    ManifestError {
        origin: origin.to_owned(),
        document,
        line: location.as_ref().map(serde_yaml_ng::Location::line),
        column: location.as_ref().map(serde_yaml_ng::Location::column),
        path: path.filter(|p| p != "."),
        message: humanize_serde_message(&e.to_string()),
    }
}

fn describe(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "nothing (null)".to_owned(),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(s) => format!("the string \"{s}\""),
        serde_json::Value::Array(_) => "a list".to_owned(),
        serde_json::Value::Object(_) => "a mapping".to_owned(),
    }
}

/// Renders a serde path like validation paths: `spec.healthChecks[0].portIndex`, map keys that are not plain
/// identifiers in brackets (`metadata.labels[app.kubernetes.io/name]`); `.` for the whole document.
#[must_use]
pub fn display_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty() {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                } else {
                    out.push_str(&format!("[{key}]"));
                }
            }
            Segment::Unknown => out.push_str(".?"),
        }
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

/// Rewrites serde's messages for people: Rust type names become what to write (`f64` → "a number"), backticks become
/// quotes, a likely typo of a field gets a suggestion, and the parser's trailing location is dropped (it is reported
/// separately).
#[must_use]
pub fn humanize_serde_message(message: &str) -> String {
    let message = match message.find(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    // Some deserializers (serde_yaml_ng) put their own path in front; the path is reported separately.
    let heads = [
        "unknown field `",
        "unknown variant `",
        "missing field `",
        "invalid type: ",
        "invalid value: ",
        "invalid length ",
    ];
    let message = heads.iter().filter_map(|head| message.find(head)).min().map_or(message, |at| &message[at..]);
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        return match suggest(field, &known) {
            Some(s) => format!("unknown field \"{field}\" (did you mean \"{s}\"?)"),
            None if known.is_empty() => {
                format!("unknown field \"{field}\": this object has no fields")
            }
            None => format!("unknown field \"{field}\"; known fields: {}", known.join(", ")),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = backticked(expected);
        let hint = suggest(value, &known).map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default();
        return format!("unknown value \"{value}\"{hint}; expected one of {}", known.join(", "));
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        return format!("missing required field \"{}\"", rest.trim_end_matches('`'));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((got, expected)) = rest.rsplit_once(", expected ")
        {
            if let Some(range) = out_of_range(got, expected) {
                return range;
            }
            return format!("expected {}, got {}", expected_name(expected), got.replace('`', ""));
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ")
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {}, got {got} element(s)", expected_name(expected));
    }
    message.replace('`', "\"")
}

/// "1000000000000 is out of range (at most 2147483647)" for an integer of the right sign that its type cannot hold.
fn out_of_range(got: &str, expected: &str) -> Option<String> {
    let number: i128 = got.strip_prefix("integer `")?.strip_suffix('`')?.parse().ok()?;
    let (min, max): (i128, i128) = match expected {
        "i32" => (i32::MIN.into(), i32::MAX.into()),
        "i64" => (i64::MIN.into(), i64::MAX.into()),
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" | "usize" => (0, u64::MAX.into()),
        _ => return None,
    };
    if number > max {
        Some(format!("{number} is out of range (at most {max})"))
    } else if number < min && min < 0 {
        Some(format!("{number} is out of range (at least {min})"))
    } else {
        None
    }
}

fn expected_name(rust: &str) -> String {
    match rust {
        "f64" | "f32" => "a number".to_owned(),
        "u8" | "u32" | "u64" | "usize" => "a non-negative integer".to_owned(),
        "u16" => "an integer from 0 to 65535".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a mapping".to_owned(),
        "a boolean" | "a string" => rust.to_owned(),
        "tuple struct PortRange" | "tuple struct PortRange with 2 elements" => "a port range [from, to]".to_owned(),
        other if other.starts_with("struct ") => "a mapping".to_owned(),
        other if other.starts_with("enum ") || other.starts_with("variant identifier") => {
            "one of the listed values".to_owned()
        }
        other => other.replace('`', "\""),
    }
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The known name closest to `word`, if it is close enough to be a typo.
fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let close = |k: &str, distance: usize| {
        let k = k.to_ascii_lowercase();
        let prefix = lower.len().min(k.len()) >= 3 && (k.starts_with(&lower) || lower.starts_with(&k));
        prefix || (distance <= 2.max(k.len() / 4) && distance < k.len())
    };
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| close(k, *d))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// One step of a JSON path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `spec.healthChecks[0].portIndex` or `metadata.labels[a.b/c]` into segments.
fn split_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('[') {
            let (key, after) = inner.split_once(']').unwrap_or((inner, ""));
            segments.push(key.parse().map_or_else(|_| Segment::Key(key.to_owned()), Segment::Index));
            rest = after;
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            segments.push(Segment::Key(rest_trimmed[..end].to_owned()));
            rest = &rest_trimmed[end..];
        }
    }
    segments
}

/// Where each field of each document stands in the source, from the YAML parser's event spans. JSON is YAML too, so
/// one map serves both. When the source does not parse, the maps are empty and errors fall back to document numbers.
#[derive(Debug, Default)]
struct LineMaps {
    documents: Vec<LineMap>,
}

#[derive(Debug, Default)]
struct LineMap {
    start: Option<(usize, usize)>,
    fields: HashMap<Vec<Segment>, (usize, usize)>,
}

/// A container being walked: a mapping (awaiting a key, or the value of `key`) or a sequence (at item `next`).
enum Frame {
    Map { key: Option<String>, pushed: bool },
    Seq { next: usize, pushed: bool },
}

impl LineMaps {
    fn build(source: &str) -> Self {
        let mut maps = Self::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: Vec<Segment> = Vec::new();
        for event in Parser::new_from_str(source) {
            let Ok((event, span)) = event else {
                return Self::default();
            };
            let at = (span.start.line(), span.start.col() + 1);
            match event {
                Event::DocumentStart(_) => {
                    maps.documents.push(LineMap::default());
                    stack.clear();
                    path.clear();
                }
                Event::Scalar(value, ..) => {
                    let Some(map) = maps.documents.last_mut() else {
                        continue;
                    };
                    map.start.get_or_insert(at);
                    if let Some(Frame::Map { key: key @ None, .. }) = stack.last_mut() {
                        path.push(Segment::Key(value.to_string()));
                        map.fields.entry(path.clone()).or_insert(at);
                        path.pop();
                        *key = Some(value.to_string());
                    } else {
                        if Self::enter_value(&stack, &mut path, map, at) {
                            path.pop();
                        }
                        Self::finish_value(&mut stack);
                    }
                }
                Event::Alias(_) => {
                    let Some(map) = maps.documents.last_mut() else {
                        continue;
                    };
                    if let Some(Frame::Map { key: key @ None, .. }) = stack.last_mut() {
                        *key = Some(String::new());
                    } else {
                        if Self::enter_value(&stack, &mut path, map, at) {
                            path.pop();
                        }
                        Self::finish_value(&mut stack);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let Some(map) = maps.documents.last_mut() else {
                        continue;
                    };
                    map.start.get_or_insert(at);
                    let is_key = matches!(stack.last(), Some(Frame::Map { key: None, .. }));
                    let pushed = if is_key {
                        // A complex (non-scalar) key: its contents are not fields of the object.
                        path.push(Segment::Key("?".to_owned()));
                        true
                    } else {
                        Self::enter_value(&stack, &mut path, map, at)
                    };
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { key: None, pushed },
                        _ => Frame::Seq { next: 0, pushed },
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::Map { pushed, .. } | Frame::Seq { pushed, .. }) = stack.pop()
                        && pushed
                    {
                        path.pop();
                    }
                    Self::finish_value(&mut stack);
                }
                _ => {}
            }
        }
        maps
    }

    /// Pushes the path segment of a value starting at `at` (inside a mapping with a key, or a sequence) and records
    /// its position, unless its key's position is already recorded. Returns whether a segment was pushed.
    fn enter_value(stack: &[Frame], path: &mut Vec<Segment>, map: &mut LineMap, at: (usize, usize)) -> bool {
        match stack.last() {
            Some(Frame::Map { key: Some(key), .. }) => path.push(Segment::Key(key.clone())),
            Some(Frame::Seq { next, .. }) => path.push(Segment::Index(*next)),
            _ => return false,
        }
        map.fields.entry(path.clone()).or_insert(at);
        true
    }

    fn finish_value(stack: &mut [Frame]) {
        match stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { next, .. }) => *next += 1,
            None => {}
        }
    }

    fn start(&self, document: usize) -> Option<usize> {
        self.documents.get(document).and_then(|d| d.start).map(|(line, _)| line)
    }

    /// The line and column of `path` in a document, or of its nearest ancestor that is written out.
    fn locate(&self, document: usize, path: &str) -> (Option<usize>, Option<usize>) {
        let Some(map) = self.documents.get(document) else {
            return (None, None);
        };
        let mut segments = split_path(path);
        while !segments.is_empty() {
            if let Some((line, column)) = map.fields.get(&segments) {
                return (Some(*line), Some(*column));
            }
            segments.pop();
        }
        (map.start.map(|(line, _)| line), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_like_they_print() {
        assert_eq!(
            split_path("spec.healthChecks[0].portIndex"),
            [
                Segment::Key("spec".into()),
                Segment::Key("healthChecks".into()),
                Segment::Index(0),
                Segment::Key("portIndex".into())
            ]
        );
        assert_eq!(
            split_path("metadata.labels[app.kubernetes.io/name]"),
            [
                Segment::Key("metadata".into()),
                Segment::Key("labels".into()),
                Segment::Key("app.kubernetes.io/name".into())
            ]
        );
    }

    #[test]
    fn line_map_finds_nested_fields() {
        let source = "a: 1\nspec:\n  list:\n    - x: 1\n    - x: 2\n      y: [1, {z: 3}]\n---\nb: 2\n";
        let maps = LineMaps::build(source);
        assert_eq!(maps.locate(0, "spec.list[1].y"), (Some(6), Some(7)));
        assert_eq!(maps.locate(0, "spec.list[1].y[1].z"), (Some(6), Some(15)));
        assert_eq!(maps.locate(0, "spec.list[0]"), (Some(4), Some(7)));
        assert_eq!(maps.locate(0, "spec.missing"), (Some(2), Some(1)), "falls back to the nearest ancestor");
        assert_eq!(maps.locate(1, "b"), (Some(8), Some(1)));
    }

    #[test]
    fn suggestions_catch_typos_only() {
        assert_eq!(suggest("cpu", &["cpus", "mem"]), Some("cpus"));
        assert_eq!(suggest("helthChecks", &["healthChecks", "cmd"]), Some("healthChecks"));
        assert_eq!(suggest("zzz", &["cpus", "mem"]), None);
        assert_eq!(suggest("Forbidden", &["Forbid", "Allow"]), Some("Forbid"));
        assert_eq!(suggest("priority", &["roles", "weight", "user"]), None);
    }
}
