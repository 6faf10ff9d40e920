//! What a read answers in besides the object itself: a `meta.k8s.io/v1` `Table` (what `kubectl get` asks for, with
//! the columns each kind declares in [`agora_schemas::columns`]) or `PartialObjectMetadata` (what metadata-only
//! informers ask for), chosen from the `Accept` header as Kubernetes does.

use agora_schemas::columns::{Column, table_columns};
use agora_schemas::{KindInfo, StatusReason};
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};
use super::now;
use super::route::Query;

/// The meta group's version both views belong to.
const META_VERSION: &str = "meta.k8s.io/v1";

/// What a read answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    /// The objects (the default).
    Object,
    /// A Table, each row carrying the object in this form.
    Table(Include),
    /// The objects' metadata only.
    Metadata,
}

/// `includeObject`: what a Table's rows carry besides their cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Include {
    None,
    Metadata,
    Object,
}

impl View {
    /// The view the request's `Accept` header asks for: its first media range this server can answer, as
    /// Kubernetes negotiates (`application/json;as=Table;v=v1;g=meta.k8s.io, application/json` is a Table; a range
    /// this server cannot answer, such as protobuf or `v1beta1` Tables, is skipped). A header naming nothing it can
    /// answer is a 406.
    pub(super) fn negotiate(headers: &HeaderMap, query: &Query) -> ApiResult<Self> {
        let include = match query.get("includeObject").map(String::as_str) {
            None | Some("" | "Metadata") => Include::Metadata,
            Some("Object") => Include::Object,
            Some("None") => Include::None,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "includeObject must be None, Metadata or Object, not {other:?}"
                )));
            }
        };
        let accept: Vec<&str> = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
        let ranges: Vec<&str> =
            accept.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|r| !r.is_empty()).collect();
        if ranges.is_empty() {
            return Ok(Self::Object);
        }
        for range in &ranges {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(media.as_str(), "application/json" | "application/*" | "*/*" | "text/event-stream") {
                continue;
            }
            let (mut as_, mut group, mut version) = (None, None, None);
            for param in parts {
                match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                    Some(("as", v)) => as_ = Some(v),
                    Some(("g", v)) => group = Some(v),
                    Some(("v", v)) => version = Some(v),
                    _ => {} // q and others
                }
            }
            match (as_, group, version) {
                (None, ..) => return Ok(Self::Object),
                (Some("Table"), Some("meta.k8s.io"), Some("v1")) => return Ok(Self::Table(include)),
                (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io"), Some("v1")) => {
                    return Ok(Self::Metadata);
                }
                _ => {}
            }
        }
        Err(ApiError::new(
            StatusReason::NotAcceptable,
            format!(
                "none of the media types asked for can be served ({}); this server answers application/json, as \
                 Table, PartialObjectMetadata or PartialObjectMetadataList in g=meta.k8s.io, v=v1",
                ranges.join(", ")
            ),
        ))
    }

    /// The Content-Type of an answer in this view (`list`: a list or watch rather than one object).
    pub(super) fn content_type(self, list: bool) -> &'static str {
        match (self, list) {
            (Self::Object, _) => "application/json",
            (Self::Table(_), _) => "application/json;as=Table;v=v1;g=meta.k8s.io",
            (Self::Metadata, false) => "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            (Self::Metadata, true) => "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
        }
    }

    /// One object (of a get or a watch event) in this view; a watch's Tables carry the column definitions only in
    /// the first (`definitions`).
    pub(super) fn one(self, kind: &KindInfo, object: &Value, definitions: bool) -> Value {
        match self {
            Self::Object => object.clone(),
            Self::Metadata => partial(object),
            Self::Table(include) => table(kind, std::slice::from_ref(object), include, definitions, json!({})),
        }
    }

    /// A watch's BOOKMARK object in this view: its metadata under the view's type (a Table without rows).
    pub(super) fn bookmark(self, kind: &KindInfo, object: &Value) -> Value {
        match self {
            Self::Object => object.clone(),
            Self::Metadata => partial(object),
            Self::Table(include) => {
                table(kind, &[], include, false, object.get("metadata").cloned().unwrap_or_else(|| json!({})))
            }
        }
    }

    /// One object as a list item in this view: itself, its `PartialObjectMetadata`, or its Table row. A list is
    /// built item by item, so a large one holds its answer, not every object decoded.
    pub(super) fn item(self, kind: &KindInfo, object: &Value, now: jiff::Timestamp) -> Value {
        match self {
            Self::Object => object.clone(),
            Self::Metadata => partial(object),
            Self::Table(include) => row(&table_columns(kind.columns).collect::<Vec<_>>(), object, include, now),
        }
    }

    /// A list in this view around `items` (its items as JSON, comma-separated), with the list's metadata
    /// (`resourceVersion`, `continue`).
    pub(super) fn list(self, kind: &KindInfo, items: &[u8], metadata: &Value) -> Vec<u8> {
        let (head, tail) = match self {
            Self::Object => (
                format!("{{\"apiVersion\":\"{}\",\"items\":[", kind.api_version),
                format!("],\"kind\":\"{}List\",\"metadata\":{metadata}}}", kind.kind),
            ),
            Self::Metadata => (
                format!("{{\"apiVersion\":\"{META_VERSION}\",\"items\":["),
                format!("],\"kind\":\"PartialObjectMetadataList\",\"metadata\":{metadata}}}"),
            ),
            Self::Table(_) => (
                format!(
                    "{{\"apiVersion\":\"{META_VERSION}\",\"columnDefinitions\":{},\"rows\":[",
                    definitions(&table_columns(kind.columns).collect::<Vec<_>>())
                ),
                format!("],\"kind\":\"Table\",\"metadata\":{metadata}}}"),
            ),
        };
        let mut body = Vec::with_capacity(head.len() + items.len() + tail.len());
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(items);
        body.extend_from_slice(tail.as_bytes());
        body
    }
}

/// An object's `PartialObjectMetadata`: its metadata, under the meta group's type.
pub(super) fn partial(object: &Value) -> Value {
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({ "apiVersion": META_VERSION, "kind": "PartialObjectMetadata", "metadata": metadata })
}

/// A Table of `objects`: the kind's columns, one row each, cells computed now.
fn table(kind: &KindInfo, objects: &[Value], include: Include, with_definitions: bool, metadata: Value) -> Value {
    let now = now();
    let columns: Vec<_> = table_columns(kind.columns).collect();
    let rows: Vec<Value> = objects.iter().map(|object| row(&columns, object, include, now)).collect();
    let mut out = json!({ "apiVersion": META_VERSION, "kind": "Table", "metadata": metadata, "rows": rows });
    if with_definitions {
        out["columnDefinitions"] = definitions(&columns);
    }
    out
}

/// An object's Table row: its cells, and the object as `include` asks.
fn row(columns: &[&Column], object: &Value, include: Include, now: jiff::Timestamp) -> Value {
    let cells: Vec<Value> = columns.iter().map(|c| c.render(object, now)).collect();
    let mut row = Map::new();
    row.insert("cells".into(), json!(cells));
    match include {
        Include::None => {}
        Include::Metadata => {
            row.insert("object".into(), partial(object));
        }
        Include::Object => {
            row.insert("object".into(), object.clone());
        }
    }
    Value::Object(row)
}

/// The `columnDefinitions` of a Table.
fn definitions(columns: &[&Column]) -> Value {
    columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({
                "name": c.name,
                "type": c.type_,
                "format": format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn view(accept: &str) -> ApiResult<View> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        View::negotiate(&headers, &Query::new())
    }

    #[test]
    fn accept_headers_are_negotiated_as_kubernetes_does() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(view(kubectl).unwrap(), View::Table(Include::Metadata));
        let beta_first = "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json";
        assert_eq!(view(beta_first).unwrap(), View::Object);
        let metadata = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(view(metadata).unwrap(), View::Metadata);
        assert_eq!(view("*/*").unwrap(), View::Object);
        assert_eq!(view("text/event-stream").unwrap(), View::Object);
        let refused = view("application/vnd.kubernetes.protobuf").unwrap_err();
        assert_eq!(refused.0.code, 406);
        assert_eq!(view("application/json;as=Table;v=v1beta1;g=meta.k8s.io").unwrap_err().0.code, 406);
        let mut query = Query::new();
        query.insert("includeObject".into(), "Sometimes".into());
        assert_eq!(View::negotiate(&HeaderMap::new(), &query).unwrap_err().0.code, 400);
    }

    #[test]
    fn a_table_has_the_kinds_columns_and_the_object_asked_for() {
        let kind = agora_schemas::kind_info("App").unwrap();
        let app = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"instances": 3}, "status": {"tasksRunning": 2}});
        let item = serde_json::to_vec(&View::Table(Include::None).item(kind, &app, now())).unwrap();
        let table: Value =
            serde_json::from_slice(&View::Table(Include::None).list(kind, &item, &json!({"resourceVersion": "7"})))
                .unwrap();
        let names: Vec<&str> =
            table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(&names[..4], ["Name", "Instances", "Running", "Healthy"]);
        let age = names.iter().position(|n| *n == "Age").unwrap();
        assert!(table["columnDefinitions"][age + 1]["priority"] == 1, "wide columns come after Age");
        assert_eq!(table["rows"][0]["cells"][0], "web");
        assert_eq!(table["rows"][0]["cells"][1], 3);
        assert!(table["rows"][0]["cells"][age].as_str().unwrap().starts_with("6y"), "{table}");
        assert!(table["rows"][0].get("object").is_none());
        assert_eq!(table["metadata"]["resourceVersion"], "7");
        let row = View::Table(Include::Metadata).one(kind, &app, false);
        assert_eq!(row["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert!(row.get("columnDefinitions").is_none(), "only a watch's first Table defines the columns");
        assert_eq!(View::Table(Include::Object).one(kind, &app, true)["rows"][0]["object"], app);
    }
}
