//! The columns a kind is printed with — what `kubectl get` (through the apiserver's `meta.k8s.io/v1` Tables) and
//! `agora get` show — declared once per kind next to its type, like a CRD's `additionalPrinterColumns`.
//!
//! Every table starts with `Name`, then the kind's priority-0 columns, then `Age`, then the priority-1 columns that
//! `-o wide` adds. Cells are computed from the object's JSON, so the apiserver prints what it stores without decoding
//! it into its type, and are pre-formatted the way kubectl shows them (ages as `5m10s`).

use jiff::Timestamp;
use serde_json::{Value, json};

/// One printed column.
#[derive(Clone, Copy)]
pub struct Column {
    /// The header (kubectl upper-cases it).
    pub name: &'static str,
    /// The OpenAPI type of the cells: `string`, `integer`, `number` or `boolean`.
    pub type_: &'static str,
    /// What the column shows.
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
    /// How a cell is computed.
    pub cell: Cell,
}

/// How a cell is computed from an object (as JSON) at a moment.
#[derive(Clone, Copy)]
pub enum Cell {
    /// The value at a JSON pointer, as it is.
    Path(&'static str),
    /// The timestamp at a JSON pointer, as an age (`5m10s`).
    Age(&'static str),
    /// Anything else.
    With(fn(&Value, Timestamp) -> Value),
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column").field("name", &self.name).field("priority", &self.priority).finish_non_exhaustive()
    }
}

impl Column {
    /// A priority-0 column.
    #[must_use]
    pub const fn new(name: &'static str, type_: &'static str, description: &'static str, cell: Cell) -> Self {
        Self { name, type_, description, priority: 0, cell }
    }

    /// This column, shown only with `-o wide`.
    #[must_use]
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }

    /// The cell for `object` at `now` (`null` where the object has nothing to show).
    #[must_use]
    pub fn render(&self, object: &Value, now: Timestamp) -> Value {
        match self.cell {
            Cell::Path(pointer) => object.pointer(pointer).cloned().unwrap_or(Value::Null),
            Cell::Age(pointer) => timestamp(object, pointer).map_or(Value::Null, |t| json!(age(now, t))),
            Cell::With(cell) => cell(object, now),
        }
    }
}

/// The name column every table starts with.
pub const NAME: Column = Column::new("Name", "string", "The object's name.", Cell::Path("/metadata/name"));
/// The age column after a kind's priority-0 columns.
pub const AGE: Column =
    Column::new("Age", "string", "How long ago the object was created.", Cell::Age("/metadata/creationTimestamp"));

/// Every column of a kind in printing order: `Name`, the kind's priority-0 columns, `Age`, then the wide ones.
pub fn table_columns(kind: &'static [Column]) -> impl Iterator<Item = &'static Column> {
    std::iter::once(&NAME)
        .chain(kind.iter().filter(|c| c.priority == 0))
        .chain(std::iter::once(&AGE))
        .chain(kind.iter().filter(|c| c.priority > 0))
}

/// The timestamp at `pointer`.
#[must_use]
pub fn timestamp(object: &Value, pointer: &str) -> Option<Timestamp> {
    object.pointer(pointer)?.as_str()?.parse().ok()
}

/// How long before `now` `then` was, as Kubernetes prints ages (`HumanDuration`: `45s`, `3m20s`, `5h10m`, `3d4h`).
#[must_use]
pub fn age(now: Timestamp, then: Timestamp) -> String {
    human_duration(now.as_second() - then.as_second())
}

/// `seconds` as Kubernetes' `HumanDuration` prints it; a small negative skew is `0s`, a larger one `<invalid>`.
#[must_use]
pub fn human_duration(seconds: i64) -> String {
    match seconds {
        ..-1 => return "<invalid>".to_owned(),
        -1..0 => return "0s".to_owned(),
        0..120 => return format!("{seconds}s"),
        _ => {}
    }
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 { format!("{big}{unit}") } else { format!("{big}{unit}{small}{small_unit}") }
    };
    if minutes < 10 {
        with(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(hours / 24, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        with(hours / 24 / 365, "y", (hours / 24) % 365, "d")
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// The status (`True`, `False`, `Unknown`) of the condition of this type, or `null`.
#[must_use]
pub fn condition(object: &Value, type_: &str) -> Value {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .map_or(Value::Null, |c| c["status"].clone())
}

/// A number without a trailing `.0` (`1`, `0.5`, `1.25`).
#[must_use]
pub fn number(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    let text = format!("{rounded:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A dominant share (`status.dominantShare`) to three decimals, or `null`.
#[must_use]
pub fn share(object: &Value) -> Value {
    object.pointer("/status/dominantShare").and_then(Value::as_f64).map_or(Value::Null, |s| json!(number(s)))
}

/// `allocated/total` of one resource (`cpus`, `mem`, `disk`) of an agent-like object.
#[must_use]
pub fn used_of(object: &Value, resource: &str) -> Value {
    let total = object.pointer(&format!("/spec/resources/{resource}")).and_then(Value::as_f64);
    let used = object.pointer(&format!("/status/allocated/{resource}")).and_then(Value::as_f64).unwrap_or(0.0);
    total.map_or(Value::Null, |total| json!(format!("{}/{}", number(used), number(total))))
}

/// A `Resources` object as `cpus=1 mem=128 disk=0 ports=31000-31009`.
#[must_use]
pub fn resources(value: Option<&Value>) -> Value {
    let Some(resources) = value.filter(|v| v.is_object()) else { return Value::Null };
    let mut parts = Vec::new();
    for name in ["cpus", "mem", "disk"] {
        if let Some(amount) = resources.get(name).and_then(Value::as_f64) {
            parts.push(format!("{name}={}", number(amount)));
        }
    }
    let ranges: Vec<String> = resources
        .get("ports")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|r| match (r["begin"].as_u64(), r["end"].as_u64()) {
                    (Some(b), Some(e)) if b == e => b.to_string(),
                    (Some(b), Some(e)) => format!("{b}-{e}"),
                    _ => r.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    if !ranges.is_empty() {
        parts.push(format!("ports={}", ranges.join(",")));
    }
    json!(parts.join(" "))
}

/// The strings of an array joined with commas, or `null` when there are none.
#[must_use]
pub fn joined(value: Option<&Value>, field: Option<&str>) -> Value {
    let items: Vec<String> = value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|item| match field {
                    Some(field) => item.get(field),
                    None => Some(item),
                })
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if items.is_empty() { Value::Null } else { json!(items.join(",")) }
}

/// How long until `pointer`'s timestamp, as `in 42s` (`now` when it has passed).
#[must_use]
pub fn until(object: &Value, pointer: &str, now: Timestamp) -> Value {
    match timestamp(object, pointer) {
        Some(t) if t > now => json!(format!("in {}", human_duration(t.as_second() - now.as_second()))),
        Some(_) => json!("now"),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (seconds, printed) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (8 * 86400, "8d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(seconds), printed, "{seconds} s");
        }
    }

    #[test]
    fn cells_are_formatted() {
        let agent = json!({"spec": {"resources": {"cpus": 8.0, "mem": 16384.0, "ports": [{"begin": 31000, "end": 31009}, {"begin": 9, "end": 9}]}}, "status": {"allocated": {"cpus": 1.5}, "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(used_of(&agent, "cpus"), json!("1.5/8"));
        assert_eq!(used_of(&agent, "mem"), json!("0/16384"));
        assert_eq!(used_of(&agent, "nothing"), Value::Null);
        assert_eq!(condition(&agent, "Ready"), json!("True"));
        assert_eq!(condition(&agent, "Gone"), Value::Null);
        assert_eq!(resources(agent.pointer("/spec/resources")), json!("cpus=8 mem=16384 ports=31000-31009,9"));
        assert_eq!(number(0.333_333), "0.333");
        assert_eq!(joined(Some(&json!(["a", "b"])), None), json!("a,b"));
        assert_eq!(joined(Some(&json!([])), None), Value::Null);
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let job = json!({"status": {"nextScheduleTime": "2026-12-01T00:00:42Z"}});
        assert_eq!(until(&job, "/status/nextScheduleTime", now), json!("in 42s"));
        const COLUMNS: &[Column] = &[
            Column::new("Wide", "string", "", Cell::Path("/a")).wide(),
            Column::new("Narrow", "string", "", Cell::Path("/b")),
        ];
        let names: Vec<&str> = table_columns(COLUMNS).map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Narrow", "Age", "Wide"]);
    }
}
