//! Validation beyond the schema: the rules a type cannot express (`cmd` xor `args`, a port index in range, a regex
//! that compiles), reported as a list of [`FieldError`]s, each with the JSON path of the offending field.
//!
//! Validators never stop at the first problem: a user fixing a manifest should see every violation at once.

use std::fmt;

use crate::meta::ObjectMeta;

/// Why a field is wrong, with Kubernetes' cause names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// The value is not acceptable.
    Invalid,
    /// A value is needed and missing.
    Required,
    /// The value is none of the accepted ones.
    NotSupported,
    /// The field must not be set here.
    Forbidden,
    /// The value repeats one given elsewhere.
    Duplicate,
    /// The value is too long.
    TooLong,
}

impl FieldErrorKind {
    /// The `StatusCause.reason` string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "FieldValueInvalid",
            Self::Required => "FieldValueRequired",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TooLong => "FieldValueTooLong",
        }
    }
}

/// One violation: the field's JSON path and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.healthChecks[0].portIndex`.
    pub path: String,
    /// Why the field is wrong.
    pub kind: FieldErrorKind,
    /// `must be less than the number of ports (1)`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every violation found in one object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// The violations, in the order found.
    #[must_use]
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

/// `value` as people write it: `0.5`, `64`, or `1e30` and `1e-300` for magnitudes nobody writes out.
fn number(value: f64) -> String {
    if value != 0.0 && value.is_finite() && !(1e-6..1e15).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

/// The fewest cores a task may ask for.
pub const MIN_CPUS: f64 = 0.001;
/// The most cores a task (or a machine) may have.
pub const MAX_CPUS: f64 = 100_000.0;
/// The least memory a task may ask for, MiB.
pub const MIN_MEM: f64 = 1.0;
/// The most memory or disk a task (or a machine) may have, MiB (1 PiB).
pub const MAX_MIB: f64 = 1_073_741_824.0;

/// Collects field errors while walking an object; paths are built with [`Path`].
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// An empty collector.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn push(&mut self, path: &Path, kind: FieldErrorKind, message: impl Into<String>) {
        self.errors.push(FieldError { path: path.to_string(), kind, message: message.into() });
    }

    /// Records an invalid value.
    pub fn invalid(&mut self, path: &Path, message: impl Into<String>) {
        self.push(path, FieldErrorKind::Invalid, message);
    }

    /// Records a missing value.
    pub fn required(&mut self, path: &Path, message: impl Into<String>) {
        self.push(path, FieldErrorKind::Required, message);
    }

    /// Records a field that must not be set.
    pub fn forbidden(&mut self, path: &Path, message: impl Into<String>) {
        self.push(path, FieldErrorKind::Forbidden, message);
    }

    /// `value > 0`.
    pub fn positive(&mut self, path: &Path, value: f64) {
        if value <= 0.0 || !value.is_finite() {
            self.invalid(path, format!("must be greater than 0 (got {value})"));
        }
    }

    /// `value >= 0`.
    pub fn non_negative(&mut self, path: &Path, value: f64) {
        if value < 0.0 || !value.is_finite() {
            self.invalid(path, format!("must be greater than or equal to 0 (got {value})"));
        }
    }

    /// A task's `cpus`, `mem` (MiB) and `disk` (MiB) under `path`: each within what any machine could have —
    /// [`MIN_CPUS`]..=[`MAX_CPUS`] cores, [`MIN_MEM`]..=[`MAX_MIB`] MiB of memory, 0..=[`MAX_MIB`] MiB of disk.
    pub fn task_resources(&mut self, path: &Path, cpus: f64, mem: f64, disk: f64) {
        for (field, value, lo, hi) in
            [("cpus", cpus, MIN_CPUS, MAX_CPUS), ("mem", mem, MIN_MEM, MAX_MIB), ("disk", disk, 0.0, MAX_MIB)]
        {
            if !(lo..=hi).contains(&value) {
                self.invalid(&path.field(field), format!("must be between {lo} and {hi} (got {})", number(value)));
            }
        }
    }

    /// A machine's (or an offer's) resources under `path`: each from 0 to the same bounds as a task's.
    pub fn machine_resources(&mut self, path: &Path, cpus: f64, mem: f64, disk: f64) {
        for (field, value, hi) in [("cpus", cpus, MAX_CPUS), ("mem", mem, MAX_MIB), ("disk", disk, MAX_MIB)] {
            if !(0.0..=hi).contains(&value) {
                self.invalid(&path.field(field), format!("must be between 0 and {hi} (got {})", number(value)));
            }
        }
    }

    /// `lo <= value <= hi`.
    pub fn in_range(&mut self, path: &Path, value: f64, lo: f64, hi: f64) {
        if !(lo..=hi).contains(&value) {
            self.invalid(path, format!("must be between {lo} and {hi} (got {value})"));
        }
    }

    /// A DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending alphanumeric.
    pub fn dns_label(&mut self, path: &Path, value: &str) {
        if let Err(why) = check_dns_label(value) {
            self.invalid(path, why);
        }
    }

    /// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
    pub fn dns_subdomain(&mut self, path: &Path, value: &str) {
        if let Err(why) = check_dns_subdomain(value) {
            self.invalid(path, why);
        }
    }

    /// An environment variable name: non-empty, no `=` and no NUL.
    pub fn env_name(&mut self, path: &Path, value: &str) {
        if value.is_empty() || value.contains('=') || value.contains('\0') {
            self.invalid(
                path,
                format!("\"{value}\" is not a valid environment variable name (non-empty, without '=' or NUL)"),
            );
        }
    }

    /// The violations found, or `Ok` when there are none.
    ///
    /// # Errors
    /// Every recorded violation.
    pub fn finish(self) -> Result<(), FieldErrors> {
        if self.errors.is_empty() { Ok(()) } else { Err(FieldErrors(self.errors)) }
    }
}

/// A JSON path being built while walking an object: `spec.healthChecks[0].portIndex`.
#[derive(Clone, Debug, Default)]
pub struct Path(String);

impl Path {
    /// The path of a top-level field.
    #[must_use]
    pub fn root(field: &str) -> Self {
        Self(field.to_owned())
    }

    /// `self.field`.
    #[must_use]
    pub fn field(&self, field: &str) -> Self {
        if self.0.is_empty() { Self(field.to_owned()) } else { Self(format!("{}.{field}", self.0)) }
    }

    /// `self[index]`.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// `self[key]` for map keys (`metadata.labels[app.kubernetes.io/name]`).
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Checks a DNS-1123 label.
///
/// # Errors
/// A sentence saying what is wrong with `value`.
pub fn check_dns_label(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 63 {
        return Err(format!("\"{value}\" must be no more than 63 characters (has {})", value.len()));
    }
    let ok = value.chars().all(|c| is_lower_alnum(c) || c == '-')
        && value.starts_with(is_lower_alnum)
        && value.ends_with(is_lower_alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{value}\" is not a valid DNS-1123 label: use lowercase letters, digits and '-', starting and ending \
             with a letter or digit (e.g. \"my-app\")"
        ))
    }
}

/// Checks a DNS-1123 subdomain.
///
/// # Errors
/// A sentence saying what is wrong with `value`.
pub fn check_dns_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 253 {
        return Err(format!("must be no more than 253 characters (has {})", value.len()));
    }
    let ok = value.split('.').all(|part| {
        !part.is_empty()
            && part.chars().all(|c| is_lower_alnum(c) || c == '-')
            && part.starts_with(is_lower_alnum)
            && part.ends_with(is_lower_alnum)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{value}\" is not a valid DNS-1123 subdomain: use lowercase letters, digits, '-' and '.', each \
             dot-separated part starting and ending with a letter or digit (e.g. \"node-1.rack-a\")"
        ))
    }
}

/// The name part of a label key, or a label value: at most 63 of `[A-Za-z0-9_.-]`, starting and ending
/// alphanumeric.
fn check_qualified_part(value: &str) -> bool {
    value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Checks a label or annotation key: an optional DNS-1123 subdomain prefix and `/`, then a name.
///
/// # Errors
/// A sentence saying what is wrong with `key`.
pub fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Err(why) = check_dns_subdomain(prefix)
    {
        return Err(format!("prefix of key \"{key}\": {why}"));
    }
    if name.is_empty() || !check_qualified_part(name) {
        return Err(format!(
            "key \"{key}\" is not valid: the name part must be 1-63 characters of letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit, with an optional DNS subdomain prefix and '/' \
             (e.g. \"tier\" or \"example.com/tier\")"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
///
/// # Errors
/// A sentence saying what is wrong with `value`.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || check_qualified_part(value) {
        Ok(())
    } else {
        Err(format!(
            "value \"{value}\" is not valid: at most 63 characters of letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit"
        ))
    }
}

/// How an object's name must look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// A DNS-1123 label (names that become parts of other names: apps, cron jobs).
    Label,
    /// A DNS-1123 subdomain (may contain dots: agents named after hosts).
    Subdomain,
    /// A path segment, as Kubernetes names RBAC objects (`system:discovery`): 1 to 253 printable ASCII characters
    /// without spaces, `/` or `%`, and not `.` or `..`.
    PathSegment,
}

/// Checks a [`NameRule::PathSegment`] name.
///
/// # Errors
/// What is wrong with it.
pub fn check_path_segment(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 253 {
        return Err(format!("must be 1 to 253 characters (has {})", value.len()));
    }
    if value == "." || value == ".." {
        return Err(format!("\"{value}\" names no object"));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic() || *c == '/' || *c == '%') {
        return Err(format!("\"{value}\" holds {bad:?}: use printable ASCII without spaces, '/' or '%'"));
    }
    Ok(())
}

/// The largest total size of a object's annotations, as in Kubernetes.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Validates metadata that users write: name (or generateName), namespace, labels, annotations, finalizers.
pub fn validate_meta(v: &mut Validator, meta: &ObjectMeta, namespaced: bool, rule: NameRule) {
    let path = Path::root("metadata");
    match (&meta.name, &meta.generate_name) {
        (Some(name), _) => match rule {
            NameRule::Label => v.dns_label(&path.field("name"), name),
            NameRule::Subdomain => v.dns_subdomain(&path.field("name"), name),
            NameRule::PathSegment => {
                if let Err(why) = check_path_segment(name) {
                    v.invalid(&path.field("name"), why);
                }
            }
        },
        (None, Some(prefix)) => {
            // The server appends 5 characters; the prefix must make a valid name with them.
            let probe = format!("{prefix}x0000");
            let valid = match rule {
                NameRule::Label => check_dns_label(&probe),
                NameRule::Subdomain => check_dns_subdomain(&probe),
                NameRule::PathSegment => check_path_segment(&probe),
            };
            if let Err(why) = valid {
                v.invalid(&path.field("generateName"), format!("with a 5-character suffix: {why}"));
            }
        }
        (None, None) => v.required(&path.field("name"), "name or generateName is required"),
    }
    match (&meta.namespace, namespaced) {
        (Some(ns), true) => v.dns_label(&path.field("namespace"), ns),
        (Some(_), false) => v.forbidden(&path.field("namespace"), "must not be set: this kind is cluster-scoped"),
        (None, _) => {}
    }
    for (key, value) in &meta.labels {
        let at = path.field("labels").key(key);
        if let Err(why) = check_qualified_name(key) {
            v.invalid(&at, why);
        }
        if let Err(why) = check_label_value(value) {
            v.invalid(&at, why);
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in &meta.annotations {
        annotation_bytes += key.len() + value.len();
        if let Err(why) = check_qualified_name(key) {
            v.invalid(&path.field("annotations").key(key), why);
        }
    }
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        v.push(
            &path.field("annotations"),
            FieldErrorKind::TooLong,
            format!("may not be more than {MAX_ANNOTATIONS_BYTES} bytes in total (has {annotation_bytes})"),
        );
    }
    for (i, finalizer) in meta.finalizers.iter().enumerate() {
        if let Err(why) = check_qualified_name(finalizer) {
            v.invalid(&path.field("finalizers").index(i), why);
        }
    }
    for (i, owner) in meta.owner_references.iter().enumerate() {
        let at = path.field("ownerReferences").index(i);
        if owner.name.is_empty() {
            v.required(&at.field("name"), "the owner's name is required");
        }
        if owner.uid.is_empty() {
            v.required(&at.field("uid"), "the owner's uid is required");
        }
    }
    if meta.owner_references.iter().filter(|o| o.controller == Some(true)).count() > 1 {
        v.invalid(&path.field("ownerReferences"), "at most one owner reference may have controller: true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_rules() {
        assert!(check_dns_label("web-1").is_ok());
        assert!(check_dns_label("Web").unwrap_err().contains("not a valid DNS-1123 label"));
        assert!(check_dns_label("-web").is_err());
        assert!(check_dns_label("web-").is_err());
        assert!(check_dns_label("a.b").is_err());
        assert!(check_dns_label(&"a".repeat(64)).unwrap_err().contains("no more than 63 characters"));
        assert!(check_dns_subdomain("node-1.rack-a").is_ok());
        assert!(check_dns_subdomain("node..a").is_err());
    }

    #[test]
    fn label_rules() {
        assert!(check_qualified_name("tier").is_ok());
        assert!(check_qualified_name("example.com/tier").is_ok());
        assert!(check_qualified_name("Example.com/tier").unwrap_err().contains("prefix"));
        assert!(check_qualified_name("tier!").unwrap_err().contains("key \"tier!\" is not valid"));
        assert!(check_qualified_name("example.com/").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_x-y").is_ok());
        assert!(check_label_value("-x").unwrap_err().contains("value \"-x\" is not valid"));
        assert!(check_label_value(&"x".repeat(64)).is_err());
    }

    #[test]
    fn paths_render_like_kubernetes() {
        let p = Path::root("spec").field("healthChecks").index(0).field("portIndex");
        assert_eq!(p.to_string(), "spec.healthChecks[0].portIndex");
        assert_eq!(Path::root("metadata").field("labels").key("a/b").to_string(), "metadata.labels[a/b]");
    }
}
