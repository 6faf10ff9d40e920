//! How objects are stored and read back: JSON with sorted keys and without `metadata.resourceVersion` (the store
//! revision of the write *is* the resource version, spliced in on every read), bounded in size.

use agora_schemas::{KindInfo, StatusReason};
use serde_json::{Map, Value, json};

use super::error::{ApiError, ApiResult};
use crate::store::{KeyValue, Revision};

/// The object stored under a key, with its resourceVersion.
pub(super) fn stored_object(kv: &KeyValue) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|_| not_json(&kv.key))?;
    set_meta(&mut object, "resourceVersion", json!(kv.mod_revision.to_string()));
    Ok(object)
}

/// Stored object bytes with `"resourceVersion":"<revision>"` in `metadata`. Objects are stored by [`encode`] with
/// sorted keys, so the first `"metadata":{` is the top-level one (only `apiVersion` and `kind`, plain validated
/// strings, come before it) and the field is spliced in without decoding — a list of 100,000 objects is then mostly
/// a copy. Bytes of any other shape are decoded and encoded again; `None` when they are not a JSON object.
pub(super) fn with_resource_version(value: &[u8], revision: Revision) -> Option<Vec<u8>> {
    const METADATA: &[u8] = b"\"metadata\":{";
    let found = value.windows(METADATA.len()).take(96).position(|w| w == METADATA);
    match found {
        Some(at) if value.starts_with(b"{\"apiVersion\":") => {
            let at = at + METADATA.len();
            let empty = value.get(at) == Some(&b'}');
            let field = format!("\"resourceVersion\":\"{revision}\"{}", if empty { "" } else { "," });
            let mut out = Vec::with_capacity(value.len() + field.len());
            out.extend_from_slice(&value[..at]);
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(&value[at..]);
            Some(out)
        }
        _ => {
            let mut object: Value = serde_json::from_slice(value).ok()?;
            object.is_object().then_some(())?;
            set_meta(&mut object, "resourceVersion", json!(revision.to_string()));
            serde_json::to_vec(&object).ok()
        }
    }
}

/// A stored value that is not a JSON object: the store holds something this server did not write.
pub(super) fn not_json(key: &str) -> ApiError {
    ApiError::new(StatusReason::InternalError, format!("the stored object {key} is not a JSON object"))
}

/// The largest object stored (as JSON), checked on what a write would store — after a merge patch, an apply or
/// each JSON patch operation, whatever the request's own size. 1.5 MB: below etcd's default request limit (1.5 MiB,
/// `--max-request-bytes`), so an object and its key fit in one etcd write, and the same on the embedded store.
pub const MAX_OBJECT_BYTES: usize = 1_500_000;

/// [`encode`], refusing an object larger than [`MAX_OBJECT_BYTES`].
pub(super) fn encode_checked(kind: &KindInfo, name: &str, object: &Value) -> ApiResult<bytes::Bytes> {
    let bytes = encode(object);
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::new(
            StatusReason::RequestEntityTooLarge,
            format!(
                "{} {name} would be {} bytes of JSON; the limit is {MAX_OBJECT_BYTES}",
                kind.kind.to_ascii_lowercase(),
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// The bytes to store: the object without its resourceVersion (the write's revision will be it).
pub(super) fn encode(object: &Value) -> bytes::Bytes {
    if object.pointer("/metadata/resourceVersion").is_none() {
        return bytes::Bytes::from(serde_json::to_vec(object).unwrap_or_default());
    }
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    bytes::Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

pub(super) fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata was just made an object")
}

pub(super) fn set_meta(object: &mut Value, field: &str, value: Value) {
    meta_mut(object).insert(field.to_owned(), value);
}

pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Stores the managed-fields list on an object, leaving the field out when no manager owns anything.
pub(super) fn set_managed_fields(object: &mut Value, managed: Value) {
    if managed.as_array().is_some_and(Vec::is_empty) {
        meta_mut(object).remove("managedFields");
    } else {
        set_meta(object, "managedFields", managed);
    }
}
