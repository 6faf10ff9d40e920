//! Applying JSON patches with the document's size bounded after every operation.
//!
//! A JSON patch is small and its operations are not: each `copy` can double the document, so 24 of them in 2.5 KB
//! once asked for gigabytes. Before each operation the growth it can cause is measured — the size of the value an
//! `add`, `replace` or `test` carries, or of the subtree a `copy` duplicates — and the patch is refused as soon as
//! the document would pass the limit. Measuring stops at the budget left, so the whole check costs at most the
//! limit's worth of serialization, however many operations there are.

use json_patch::PatchOperation;
use serde_json::Value;

/// Why a patch was not applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The document would pass `limit` bytes at operation `op`.
    TooLarge {
        /// The index of the operation.
        op: usize,
        /// The limit.
        limit: usize,
    },
    /// An operation failed (json_patch's message, naming the operation and path).
    Invalid(String),
}

/// The length of `value` as compact JSON, or `None` once it passes `limit`.
#[must_use]
pub fn encoded_len(value: &Value, limit: usize) -> Option<usize> {
    struct Counter {
        count: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.count += bytes.len();
            if self.count > self.limit { Err(std::io::ErrorKind::FileTooLarge.into()) } else { Ok(bytes.len()) }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { count: 0, limit };
    serde_json::to_writer(&mut counter, value).ok().map(|()| counter.count)
}

/// Applies `ops` to `document` in order, refusing the patch once the document could pass `limit` bytes.
///
/// # Errors
/// [`Error::TooLarge`] before the operation that could pass the limit; [`Error::Invalid`] for an operation that
/// does not apply (a missing path, a failed `test`).
pub fn apply(document: &mut Value, ops: &[PatchOperation], limit: usize) -> Result<(), Error> {
    let mut size = encoded_len(document, limit).ok_or(Error::TooLarge { op: 0, limit })?;
    for (i, op) in ops.iter().enumerate() {
        let left = limit - size;
        let growth = match op {
            PatchOperation::Add(add) => encoded_len(&add.value, left),
            PatchOperation::Replace(replace) => encoded_len(&replace.value, left),
            PatchOperation::Copy(copy) => match document.pointer(copy.from.as_str()) {
                Some(from) => encoded_len(from, left),
                None => Some(0), // json_patch reports the missing path below
            },
            PatchOperation::Remove(_) | PatchOperation::Move(_) | PatchOperation::Test(_) => Some(0),
        };
        // A key or index and its punctuation come with every added value.
        let added = growth.map(|g| g + op.path().as_str().len() + 4).filter(|g| *g <= left);
        size += added.ok_or(Error::TooLarge { op: i, limit })?;
        json_patch::patch(document, std::slice::from_ref(op))
            .map_err(|e| Error::Invalid(format!("operation {i}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(value: Value) -> Vec<PatchOperation> {
        serde_json::from_value(value).unwrap()
    }

    /// The hostile patch: a value, then `copies` operations each doubling it.
    fn copy_bomb(copies: usize) -> Value {
        let mut patch = vec![json!({"op": "add", "path": "/spec/env", "value": {"a": "x".repeat(1000)}})];
        patch
            .extend((0..copies).map(|i| json!({"op": "copy", "from": "/spec/env", "path": format!("/spec/env/k{i}")})));
        Value::Array(patch)
    }

    #[test]
    fn a_copy_bomb_is_refused_before_it_grows() {
        let mut document = json!({"spec": {}});
        let error = apply(&mut document, &ops(copy_bomb(40)), 3 << 20).unwrap_err();
        // 1 KB doubled 11 times is 2 MB; the 12th copy would pass 3 MiB.
        assert_eq!(error, Error::TooLarge { op: 12, limit: 3 << 20 });
        assert!(encoded_len(&document, usize::MAX).unwrap() <= 3 << 20);
    }

    #[test]
    fn ordinary_patches_apply_and_errors_name_the_operation() {
        let mut document = json!({"spec": {"instances": 1, "env": {}}});
        let patch = json!([{"op": "test", "path": "/spec/instances", "value": 1},
                           {"op": "replace", "path": "/spec/instances", "value": 3},
                           {"op": "add", "path": "/spec/env/A", "value": "b"},
                           {"op": "move", "from": "/spec/env/A", "path": "/spec/env/B"}]);
        apply(&mut document, &ops(patch), 1 << 20).unwrap();
        assert_eq!(document, json!({"spec": {"instances": 3, "env": {"B": "b"}}}));
        let failed = apply(&mut document, &ops(json!([{"op": "remove", "path": "/spec/nope"}])), 1 << 20);
        assert!(matches!(failed, Err(Error::Invalid(m)) if m.starts_with("operation 0")));
        assert_eq!(encoded_len(&json!({"a": [1, 2]}), 100), Some(11));
        assert_eq!(encoded_len(&json!({"a": [1, 2]}), 10), None);
    }
}
