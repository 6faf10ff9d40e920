//! # agora-client
//!
//! The typed HTTP client every Agora component and every user framework talks to the apiserver with.
//!
//! - [`Client`]: pooled connections to one apiserver, configured by [`Config`] (`--server`, `AGORA_SERVER`, a token
//!   file), with connect and request timeouts.
//! - [`Api<K>`]: the verbs on one kind of [`agora_schemas`] — get, list (selectors, pagination), create, replace,
//!   patch (merge, JSON, server-side apply), delete (propagation, preconditions), the `status` and `scale`
//!   subresources, offer `accept`, task logs — and `watch`, a stream of typed [`WatchEvent`]s.
//! - [`Error`]: says which verb on which object failed and carries the server's [`Status`] (reason, code, message,
//!   field causes).
//!
//! ```no_run
//! # async fn run() -> agora_client::Result<()> {
//! use agora_client::{Api, Client, PostParams};
//! use agora_schemas::{App, AppSpec, ObjectMeta};
//!
//! let client = Client::try_default()?; // KUBECONFIG, AGORA_SERVER, or /var/lib/agora/kubeconfig
//! let apps: Api<App> = Api::namespaced(client, "default");
//! let spec = AppSpec { cmd: Some("python3 -m http.server $PORT0".into()), ..AppSpec::default() };
//! match apps.create(&PostParams::default(), &App::new(ObjectMeta::named(None, "web"), spec)).await {
//!     Ok(app) => println!("created {}", app.metadata.display_name()),
//!     Err(e) if e.is_already_exists() => println!("web exists already"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! The controller runtime (watcher, reflector, `Controller`) lives in `agora-controllers`; this crate knows HTTP and
//! the API's paths, nothing of reconciliation.

mod api;
mod client;
mod config;
mod error;
pub mod kubeconfig;
mod params;

pub use agora_schemas::{List, Resource, Status, WatchEvent};
pub use api::Api;
pub use client::{Client, TABLE};
pub use config::{
    CA_FILE_ENV, Config, DEFAULT_KUBECONFIG, DEFAULT_SERVER, KUBECONFIG_ENV, SERVER_ENV, TOKEN_FILE_ENV, kubeconfig_in,
    read_token, tls_client_config,
};
pub use error::{Error, Operation, Result};
pub use json_patch;
pub use kubeconfig::Kubeconfig;
pub use params::{
    DeleteParams, FieldValidation, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy, WatchParams,
};
