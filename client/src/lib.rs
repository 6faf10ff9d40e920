//! # agora-client
//!
//! Will own the typed HTTP client every other component and user framework talks to the apiserver with: `Api<K>`
//! for each kind of [`agora_schemas`] (get, list, create, replace, patch, delete, status, subresources), watch
//! streams of typed events, configuration from `--server` / `AGORA_SERVER` / a token file, and errors that carry the
//! server's [`agora_schemas::Status`] and name the object and verb that failed.
//!
//! Nothing is implemented yet: this crate exists so the workspace has its final shape.
